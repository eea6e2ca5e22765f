package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// InfluxConfig configures an InfluxDB 1.x sink (the /write endpoint, line
// protocol, millisecond timestamps).
type InfluxConfig struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8086. Required.
	URL string
	// Database to write to. Required.
	Database string
	// RetentionPolicy to write to. Empty: the database's default.
	RetentionPolicy string
	// Username and Password, if the server wants them (sent as HTTP basic
	// authentication). Empty: none.
	Username, Password string
	// Tags are added to every point (for example node=<peer ID>). Nil: none.
	Tags map[string]string
	// Client makes the requests. Nil: a client without a global timeout
	// (each Send is bounded by its context).
	Client *http.Client
}

// InfluxSink writes batches to InfluxDB 1.x.
type InfluxSink struct {
	cfg   InfluxConfig
	write string
	tags  []LabelPair
}

// ErrInflux is an answer from InfluxDB other than 204 No Content.
var ErrInflux = errors.New("monitor: influxdb refused the write")

// NewInfluxSink validates a copy of cfg.
func NewInfluxSink(cfg InfluxConfig) (*InfluxSink, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("monitor: influxdb URL %q: want http(s)://host:port", cfg.URL)
	}
	if cfg.Database == "" {
		return nil, errors.New("monitor: influxdb database is required")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	q := url.Values{"db": {cfg.Database}, "precision": {"ms"}}
	if cfg.RetentionPolicy != "" {
		q.Set("rp", cfg.RetentionPolicy)
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/write"
	u.RawQuery = q.Encode()
	s := &InfluxSink{cfg: cfg, write: u.String()}
	for k, v := range cfg.Tags {
		s.tags = append(s.tags, LabelPair{k, v})
	}
	sort.Slice(s.tags, func(i, j int) bool { return s.tags[i].Name < s.tags[j].Name })
	return s, nil
}

// Send writes b in one request.
func (s *InfluxSink) Send(ctx context.Context, b Batch) error {
	if len(b.Samples) == 0 {
		return nil
	}
	body := AppendLineProtocol(nil, b, s.tags)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.write, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("monitor: influxdb: %w", err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if s.cfg.Username != "" {
		req.SetBasicAuth(s.cfg.Username, s.cfg.Password)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("monitor: influxdb write: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("%w: %s: %s", ErrInflux, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// AppendLineProtocol renders b as InfluxDB line protocol: one point per
// sample, the metric name as measurement, its labels and extra as tags
// (sorted; empty values left out, as InfluxDB refuses them), one float
// field "value", a millisecond timestamp.
func AppendLineProtocol(dst []byte, b Batch, extra []LabelPair) []byte {
	ts := strconv.FormatInt(b.At.UnixMilli(), 10)
	tags := make([]LabelPair, 0, 8)
	for _, smp := range b.Samples {
		dst = appendEscaped(dst, smp.Name, ", ")
		tags = append(tags[:0], smp.Labels...)
		tags = append(tags, extra...)
		sort.SliceStable(tags, func(i, j int) bool { return tags[i].Name < tags[j].Name })
		for _, t := range tags {
			if t.Value == "" || t.Name == "" {
				continue
			}
			dst = append(dst, ',')
			dst = appendEscaped(dst, t.Name, ",= ")
			dst = append(dst, '=')
			dst = appendEscaped(dst, t.Value, ",= ")
		}
		dst = append(dst, " value="...)
		dst = strconv.AppendFloat(dst, smp.Value, 'g', -1, 64)
		dst = append(dst, ' ')
		dst = append(dst, ts...)
		dst = append(dst, '\n')
	}
	return dst
}

// appendEscaped appends s with a backslash before each byte of special
// (and before backslashes and newlines turned into spaces: line protocol
// has no escape for a newline).
func appendEscaped(dst []byte, s, special string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\n' || c == '\r':
			c = ' '
			if strings.IndexByte(special, ' ') >= 0 {
				dst = append(dst, '\\')
			}
		case strings.IndexByte(special, c) >= 0:
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return dst
}
