package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLineProtocol(t *testing.T) {
	at := time.UnixMilli(1_800_000_000_123)
	tests := []struct {
		name  string
		smp   Sample
		extra []LabelPair
		want  string
	}{
		{"counter with labels, sorted", Sample{Name: "nat_results_total", Labels: []LabelPair{{"result", "success"}, {"path", "direct"}}, Value: 7},
			nil, "nat_results_total,path=direct,result=success value=7 1800000000123\n"},
		{"extra tags merged", Sample{Name: "antnode_peers", Labels: []LabelPair{{"state", "failed"}}, Value: 2},
			[]LabelPair{{"node", "abc"}}, "antnode_peers,node=abc,state=failed value=2 1800000000123\n"},
		{"escapes", Sample{Name: "odd name,x", Labels: []LabelPair{{"k=1", "a b,c\nd"}}, Value: 0.5},
			nil, `odd\ name\,x,k\=1=a\ b\,c\ d value=0.5 1800000000123` + "\n"},
		{"empty tag values left out", Sample{Name: "m", Labels: []LabelPair{{"reason", ""}}, Value: 1e-9},
			nil, "m value=1e-09 1800000000123\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(AppendLineProtocol(nil, Batch{At: at, Samples: []Sample{tt.smp}}, tt.extra))
			if got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "h"}, []string{"k"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Help: "h"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "h"})
	reg.MustRegister(c, h, g)
	c.WithLabelValues("v").Add(3)
	h.Observe(0.5)
	h.Observe(1.5)
	g.Set(-2)
	b, err := Snapshot(reg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, s := range b.Samples {
		got[s.Name] = s.Value
	}
	want := map[string]float64{"c_total": 3, "h_seconds_sum": 2, "h_seconds_count": 2, "g": -2}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

// startInfluxDB runs Debian's influxd on loopback ports in a temporary
// directory and returns its base URL.
func startInfluxDB(t *testing.T) string {
	t.Helper()
	influxd, err := exec.LookPath("influxd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("influxd is not installed (apt-get install influxdb)")
		}
		t.Skip("influxd is not installed")
	}
	dir := t.TempDir()
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	httpPort, rpcPort := port(), port()
	conf := fmt.Sprintf(`reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:%d"
  log-enabled = false
[logging]
  level = "warn"
`, rpcPort, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpPort)
	cfgPath := filepath.Join(dir, "influxdb.conf")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(influxd, "-config", cfgPath)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("influxd did not answer /ping in 30 s: %s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// influxQuery runs an InfluxQL query and returns the first value of the
// first series (nil if none).
func influxQuery(t *testing.T, base, db, q string) any {
	t.Helper()
	resp, err := http.PostForm(base+"/query", url.Values{"db": {db}, "q": {q}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Results []struct {
			Error  string
			Series []struct{ Values [][]any }
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if len(r.Results) == 0 {
		return nil
	}
	if r.Results[0].Error != "" {
		t.Fatalf("%s: %s", q, r.Results[0].Error)
	}
	if len(r.Results[0].Series) == 0 || len(r.Results[0].Series[0].Values) == 0 {
		return nil
	}
	return r.Results[0].Series[0].Values[0][1]
}

// TestInfluxDBExport exports a registry to a real InfluxDB and queries
// the points back.
func TestInfluxDBExport(t *testing.T) {
	base := startInfluxDB(t)
	influxQuery(t, base, "", "CREATE DATABASE antnode")
	reg := prometheus.NewRegistry()
	m, err := New(Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		m.Record(Event{Kind: KindAttemptStart, Attempt: 1, Detail: "initiator"})
	}
	sink, err := NewInfluxSink(InfluxConfig{URL: base, Database: "antnode", Tags: map[string]string{"node": "test node"}})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExporter(ExporterConfig{Name: "influxdb", Gatherer: reg, Sink: sink, Interval: 100 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := influxQuery(t, base, "antnode", `SELECT last("value") FROM "nat_attempts_total" WHERE "role"='initiator' AND "node"='test node'`)
		if f, ok := v.(float64); ok {
			if f != 7 {
				t.Fatalf("InfluxDB holds %v for nat_attempts_total{role=initiator}, want 7", f)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no point in InfluxDB after 20 s (sent %v batches, queue %d)", ex.Sent(), ex.Queued())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The exporter's own metrics go along: the batches it delivered.
	deadline = time.Now().Add(20 * time.Second)
	for {
		v := influxQuery(t, base, "antnode", `SELECT last("value") FROM "antnode_export_batches_total" WHERE "exporter"='influxdb' AND "result"='ok'`)
		if f, ok := v.(float64); ok && f >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the exporter's own counter never reached InfluxDB: %v", v)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A database that does not exist: a refusal, with InfluxDB's reason.
	bad, err := NewInfluxSink(InfluxConfig{URL: base, Database: "missing"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Snapshot(reg, time.Now())
	if err := bad.Send(context.Background(), b); err == nil || !strings.Contains(err.Error(), "database not found") {
		t.Fatalf("write to a missing database: %v", err)
	}
}

// TestExporterDeadBackend: a backend that never answers costs the node
// nothing: snapshots go on at their interval, the queue stays bounded
// (drops are counted), the breaker opens, and Close returns at once.
func TestExporterDeadBackend(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	defer srv.Close()
	defer close(hang)
	reg := prometheus.NewRegistry()
	var gathers atomic.Int64
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gathers", Help: "h"},
		func() float64 { return float64(gathers.Add(1)) }))
	sink, err := NewInfluxSink(InfluxConfig{URL: srv.URL, Database: "antnode"})
	if err != nil {
		t.Fatal(err)
	}
	ex, err := NewExporter(ExporterConfig{Name: "influxdb", Gatherer: reg, Sink: sink, Interval: 20 * time.Millisecond,
		Queue: 3, Timeout: 30 * time.Millisecond, BreakerFailures: 2, BreakerDelay: time.Hour, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !(ex.BreakerOpen() && ex.Dropped() > 0 && gathers.Load() >= 20) {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: breaker open %v, dropped %v, snapshots %d", ex.BreakerOpen(), ex.Dropped(), gathers.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if q := ex.Queued(); q > 3 {
		t.Fatalf("queue %d, bound 3", q)
	}
	closed := make(chan struct{})
	go func() { ex.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with the backend hanging")
	}
	ex.Close() // idempotent
	if ex.Sent() != 0 {
		t.Fatalf("%v batches sent to a backend that never answered", ex.Sent())
	}
}
