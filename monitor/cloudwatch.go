package monitor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
)

// CloudWatchConfig configures a CloudWatch sink (PutMetricData).
type CloudWatchConfig struct {
	// Namespace of the metrics, e.g. "antnode". Required.
	Namespace string
	// Region, e.g. "eu-west-1". Required.
	Region string
	// Credentials sign the requests. Required (cmd/antnode takes them
	// from the AWS default chain: environment, shared files, instance role).
	Credentials aws.CredentialsProvider
	// Endpoint overrides AWS's endpoint (a VPC endpoint, a test server).
	// Empty: the region's.
	Endpoint string
	// Dimensions are added to every datum (for example node=<peer ID>).
	Dimensions map[string]string
	// HTTPClient makes the requests. Nil: the SDK's.
	HTTPClient *http.Client
}

// CloudWatch's limits: dimensions per datum, data per request.
const (
	cwMaxDimensions = 30
	cwMaxData       = 1000
)

// CloudWatchSink puts batches to CloudWatch. Counters go as the increase
// since the previous batch (unit Count), everything else as its value.
type CloudWatchSink struct {
	client *cloudwatch.Client
	ns     string
	dims   []types.Dimension

	mu   sync.Mutex
	last map[string]float64 // counter totals of the previous batch, by series
}

// NewCloudWatchSink validates a copy of cfg.
func NewCloudWatchSink(cfg CloudWatchConfig) (*CloudWatchSink, error) {
	switch {
	case cfg.Namespace == "" || strings.HasPrefix(cfg.Namespace, "AWS/"):
		return nil, errors.New("monitor: cloudwatch namespace is required and must not start with AWS/")
	case cfg.Region == "":
		return nil, errors.New("monitor: cloudwatch region is required")
	case cfg.Credentials == nil:
		return nil, errors.New("monitor: cloudwatch credentials are required")
	}
	opts := cloudwatch.Options{Region: cfg.Region, Credentials: cfg.Credentials}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	}
	s := &CloudWatchSink{client: cloudwatch.New(opts), ns: cfg.Namespace, last: map[string]float64{}}
	for k, v := range cfg.Dimensions {
		if k != "" && v != "" {
			s.dims = append(s.dims, types.Dimension{Name: aws.String(k), Value: aws.String(v)})
		}
	}
	sort.Slice(s.dims, func(i, j int) bool { return *s.dims[i].Name < *s.dims[j].Name })
	return s, nil
}

// Send puts b, in requests of at most 1 000 data.
func (s *CloudWatchSink) Send(ctx context.Context, b Batch) error {
	data := s.data(b)
	for len(data) > 0 {
		n := min(len(data), cwMaxData)
		if _, err := s.client.PutMetricData(ctx, &cloudwatch.PutMetricDataInput{Namespace: aws.String(s.ns), MetricData: data[:n]}); err != nil {
			return fmt.Errorf("monitor: cloudwatch PutMetricData: %w", err)
		}
		data = data[n:]
	}
	return nil
}

// data turns a batch into CloudWatch data. A counter's first sighting
// only sets its baseline; a counter that went down (a restart) starts
// over from its new total.
func (s *CloudWatchSink) data(b Batch) []types.MetricDatum {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]types.MetricDatum, 0, len(b.Samples))
	for _, smp := range b.Samples {
		d := types.MetricDatum{MetricName: aws.String(smp.Name), Timestamp: aws.Time(b.At), Value: aws.Float64(smp.Value),
			Unit: types.StandardUnitNone}
		for _, l := range smp.Labels {
			if l.Value != "" && len(d.Dimensions) < cwMaxDimensions-len(s.dims) {
				d.Dimensions = append(d.Dimensions, types.Dimension{Name: aws.String(l.Name), Value: aws.String(l.Value)})
			}
		}
		d.Dimensions = append(d.Dimensions, s.dims...)
		if smp.Counter {
			key := seriesKey(smp)
			prev, seen := s.last[key]
			s.last[key] = smp.Value
			if !seen {
				continue
			}
			delta := smp.Value - prev
			if delta < 0 {
				delta = smp.Value
			}
			d.Value, d.Unit = aws.Float64(delta), types.StandardUnitCount
		}
		out = append(out, d)
	}
	return out
}

func seriesKey(s Sample) string {
	var b strings.Builder
	b.WriteString(s.Name)
	for _, l := range s.Labels {
		b.WriteByte(0)
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(l.Value)
	}
	return b.String()
}
