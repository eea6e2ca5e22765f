package monitor

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/fxamacker/cbor/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeCloudWatch stands in for the CloudWatch API (which cannot run
// here): it checks each request for real, the SigV4 signature recomputed
// with the request's own signed headers and the secret key, the protocol
// headers and the CBOR body, and keeps the decoded data.
type fakeCloudWatch struct {
	t      *testing.T
	creds  aws.Credentials
	region string

	mu    sync.Mutex
	puts  []map[string]any // the decoded PutMetricData inputs
	fails []string
}

func (f *fakeCloudWatch) fail(w http.ResponseWriter, format string, a ...any) {
	f.mu.Lock()
	f.fails = append(f.fails, fmt.Sprintf(format, a...))
	f.mu.Unlock()
	http.Error(w, "refused", http.StatusForbidden)
}

func (f *fakeCloudWatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.fail(w, "body: %v", err)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/service/GraniteServiceVersion20100801/operation/PutMetricData" {
		f.fail(w, "%s %s", r.Method, r.URL.Path)
		return
	}
	if r.Header.Get("Smithy-Protocol") != "rpc-v2-cbor" || r.Header.Get("Content-Type") != "application/cbor" {
		f.fail(w, "protocol headers %v", r.Header)
		return
	}
	// SigV4: sign a copy carrying only the headers the client signed, at
	// the client's time, and compare.
	auth := r.Header.Get("Authorization")
	_, signedPart, ok := strings.Cut(auth, "SignedHeaders=")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+f.creds.AccessKeyID+"/") || !ok {
		f.fail(w, "authorization %q", auth)
		return
	}
	signed, _, _ := strings.Cut(signedPart, ",")
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		f.fail(w, "X-Amz-Date: %v", err)
		return
	}
	cp, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	for _, h := range strings.Split(signed, ";") {
		switch h {
		case "host":
		case "content-length":
			cp.ContentLength = r.ContentLength
		default:
			cp.Header.Set(h, r.Header.Get(h))
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), f.creds, cp, hex.EncodeToString(sum[:]), "monitoring", f.region, at); err != nil {
		f.fail(w, "re-sign: %v", err)
		return
	}
	if cp.Header.Get("Authorization") != auth {
		f.fail(w, "signature mismatch:\n got  %s\n want %s", auth, cp.Header.Get("Authorization"))
		return
	}
	payload := body
	if r.Header.Get("Content-Encoding") == "gzip" { // the SDK compresses PutMetricData
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			f.fail(w, "gzip: %v", err)
			return
		}
		if payload, err = io.ReadAll(zr); err != nil {
			f.fail(w, "gzip: %v", err)
			return
		}
	}
	var m map[string]any
	if err := cbor.Unmarshal(payload, &m); err != nil {
		f.fail(w, "CBOR body: %v", err)
		return
	}
	f.mu.Lock()
	f.puts = append(f.puts, m)
	f.mu.Unlock()
	w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
	w.Header().Set("Content-Type", "application/cbor")
	out, _ := cbor.Marshal(map[string]any{})
	w.Write(out)
}

// datum finds a metric datum by name in the decoded inputs; it returns
// its value, unit and dimensions.
func (f *fakeCloudWatch) datum(name string) (value float64, unit string, dims map[string]string, found bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.puts {
		data, _ := p["MetricData"].([]any)
		for _, d := range data {
			dm, _ := d.(map[any]any)
			if n, _ := dm["MetricName"].(string); n != name {
				continue
			}
			switch v := dm["Value"].(type) {
			case float64:
				value = v
			case float32:
				value = float64(v)
			case uint64:
				value = float64(v)
			}
			unit, _ = dm["Unit"].(string)
			dims = map[string]string{}
			list, _ := dm["Dimensions"].([]any)
			for _, x := range list {
				xm, _ := x.(map[any]any)
				k, _ := xm["Name"].(string)
				val, _ := xm["Value"].(string)
				dims[k] = val
			}
			found = true
		}
	}
	return value, unit, dims, found
}

func TestCloudWatchExport(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
	fake := &fakeCloudWatch{t: t, creds: creds, region: "eu-west-1"}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	sink, err := NewCloudWatchSink(CloudWatchConfig{Namespace: "antnode", Region: "eu-west-1", Endpoint: srv.URL,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }),
		Dimensions:  map[string]string{"node": "abc"}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nat_attempts_total", Help: "h"}, []string{"role"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "antnode_relay_allocations", Help: "h"})
	reg.MustRegister(c, g)
	c.WithLabelValues("initiator").Add(5)
	g.Set(3)
	ctx := context.Background()
	for i, add := range []float64{0, 4} {
		c.WithLabelValues("initiator").Add(add)
		b, err := Snapshot(reg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := sink.Send(ctx, b); err != nil {
			t.Fatalf("send %d: %v (server: %v)", i, err, fake.fails)
		}
	}
	if len(fake.fails) > 0 {
		t.Fatalf("the endpoint refused: %v", fake.fails)
	}
	if ns, _ := fake.puts[0]["Namespace"].(string); ns != "antnode" {
		t.Fatalf("namespace %q", ns)
	}
	v, unit, dims, ok := fake.datum("antnode_relay_allocations")
	if !ok || v != 3 || unit != "None" || dims["node"] != "abc" {
		t.Fatalf("gauge: %v %q %v (found %v)", v, unit, dims, ok)
	}
	// The counter's first batch sets its baseline; the second carries the
	// increase.
	v, unit, dims, ok = fake.datum("nat_attempts_total")
	if !ok || v != 4 || unit != "Count" || dims["role"] != "initiator" || dims["node"] != "abc" {
		t.Fatalf("counter: %v %q %v (found %v)", v, unit, dims, ok)
	}

	// A wrong secret: the endpoint refuses, and the sink says so.
	bad, err := NewCloudWatchSink(CloudWatchConfig{Namespace: "antnode", Region: "eu-west-1", Endpoint: srv.URL,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: "wrong"}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Snapshot(reg, time.Now())
	if err := bad.Send(ctx, b); err == nil {
		t.Fatal("a request signed with the wrong secret was accepted")
	}
	if len(fake.fails) == 0 || !strings.Contains(fake.fails[len(fake.fails)-1], "signature mismatch") {
		t.Fatalf("the endpoint did not catch the bad signature: %v", fake.fails)
	}
}
