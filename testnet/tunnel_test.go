package testnet

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPayload(t *testing.T) {
	tests := []struct {
		name string
		p    Payload
	}{
		{"empty", Payload{Seed: 1, Size: 0}},
		{"one byte", Payload{Seed: 1, Size: 1}},
		{"odd size", Payload{Seed: 7, Size: 100003}},
		{"MiB", Payload{Seed: 42, Size: 1 << 20}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := io.ReadAll(tc.p.Reader())
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != tc.p.Size {
				t.Fatalf("got %d bytes, want %d", len(b), tc.p.Size)
			}
			sum := sha256.Sum256(b)
			if got, want := tc.p.SHA256(), hex.EncodeToString(sum[:]); got != want {
				t.Fatalf("SHA256 %s, want %s", got, want)
			}
			again, _ := io.ReadAll(tc.p.Reader())
			if string(again) != string(b) {
				t.Fatal("the same payload read twice differs")
			}
		})
	}
	a, b := Payload{Seed: 1, Size: 4096}, Payload{Seed: 2, Size: 4096}
	if a.SHA256() == b.SHA256() {
		t.Fatal("two seeds gave the same body")
	}
}

func TestParseForwardReady(t *testing.T) {
	ready := ForwardReady{Listening: "127.0.0.1:18080", Peer: "abc", Service: "web", Path: "relay", RTTMS: 83.5}
	tests := []struct {
		name string
		out  string
		want ForwardReady
		ok   bool
	}{
		{"alone", `{"listening":"127.0.0.1:18080","peer":"abc","service":"web","path":"relay","rtt_ms":83.5}` + "\n", ready, true},
		{"between log lines", "time=x level=DEBUG msg=\"Channel binding successful\" pion=turnc\n" +
			`{"listening":"127.0.0.1:18080","peer":"abc","service":"web","path":"relay","rtt_ms":83.5}` + "\ntime=y level=DEBUG msg=z\n", ready, true},
		{"nothing yet", "time=x level=DEBUG msg=y\n", ForwardReady{}, false},
		{"partial line", `{"listening":"127.0.0.1:18`, ForwardReady{}, false},
		{"other JSON", `{"level":"INFO","msg":"x"}` + "\n", ForwardReady{}, false},
		{"failure", "antnode forward: not_allowed: service \"web\" refused by peer: not_allowed\n", ForwardReady{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseForwardReady(tc.out)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("got %+v %v, want %+v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestForwardFailure(t *testing.T) {
	tests := []struct {
		name, out, want string
	}{
		{"last line", "time=x level=DEBUG msg=y\nantnode forward: relay_unavailable: no relay\n", "antnode forward: relay_unavailable: no relay"},
		{"followed by logs", "antnode forward: timeout: x\ntime=x level=DEBUG msg=\"Exiting loop\"\n", "antnode forward: timeout: x"},
		{"none", "panic: boom\n", "panic: boom\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := forwardFailure(tc.out); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMbitPerS(t *testing.T) {
	tests := []struct {
		bytes int64
		d     time.Duration
		want  float64
	}{
		{64 << 20, 3140 * time.Millisecond, 171.0},
		{1e6, time.Second, 8},
		{1, 0, 0},
		{0, time.Second, 0},
	}
	for _, tc := range tests {
		if got := mbitPerS(tc.bytes, tc.d); got != tc.want {
			t.Errorf("mbitPerS(%d, %v) = %v, want %v", tc.bytes, tc.d, got, tc.want)
		}
	}
}

const tunnelMetrics = `# HELP antnode_connections Open peer connections, by path type and the address family their packets travel in (ipv4, ipv6).
# TYPE antnode_connections gauge
antnode_connections{family="ipv4",path="direct"} %d
antnode_connections{family="ipv4",path="none"} 0
antnode_connections{family="ipv4",path="relay"} %d
# HELP antnode_peers Peers this node knows, by the state of their connection state machine.
# TYPE antnode_peers gauge
antnode_peers{state="closed"} 2
antnode_peers{state="connected-direct"} 0
antnode_peers{state="connected-relay"} 1
# HELP antnode_migrations_total Connection migrations and path upgrades, by reason and outcome.
# TYPE antnode_migrations_total counter
antnode_migrations_total{outcome="ok",reason="direct_available"} %d
antnode_migrations_total{outcome="ok",reason="network_changed"} %d
antnode_migrations_total{outcome="fail",reason="network_changed"} 0
`

func metricsText(direct, relay, upgrades, rebinds int) string {
	return fmt.Sprintf(tunnelMetrics, direct, relay, upgrades, rebinds)
}

func TestConnPaths(t *testing.T) {
	tests := []struct {
		name          string
		direct, relay int
		want          string
	}{
		{"none", 0, 0, "none"},
		{"direct", 1, 0, "direct"},
		{"relay", 0, 1, "relay"},
		{"both", 2, 1, "direct+relay"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := connPaths(metricsText(tc.direct, tc.relay, 0, 0))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := connPaths("not { metrics"); err == nil {
		t.Fatal("garbage parsed")
	}
	if got, err := connPaths(""); err != nil || got != "none" {
		t.Fatalf("empty exposition: %q %v", got, err)
	}
	if got, err := peerStates(metricsText(1, 0, 0, 0)); err != nil || got != "closed+connected-relay" {
		t.Fatalf("peer states: %q %v", got, err)
	}
}

func TestMigrationCountsAndRise(t *testing.T) {
	before, err := migrationCounts(metricsText(0, 1, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	after, err := migrationCounts(metricsText(1, 0, 2, 3))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		before, after map[string]float64
		want          map[string]float64
	}{
		{"rose", before, after, map[string]float64{"direct_available/ok": 2, "network_changed/ok": 2}},
		{"unchanged", after, after, nil},
		{"from nothing", map[string]float64{}, map[string]float64{"x/ok": 1}, map[string]float64{"x/ok": 1}},
		{"restarted (fell)", after, before, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := counterRise(tc.before, tc.after); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func samples(step time.Duration, bytes ...int64) []progress {
	out := make([]progress, len(bytes))
	for i, b := range bytes {
		out[i] = progress{at: time.Duration(i) * step, bytes: b}
	}
	return out
}

func TestLongestStall(t *testing.T) {
	const s = 200 * time.Millisecond
	tests := []struct {
		name    string
		samples []progress
		want    time.Duration
	}{
		{"none", nil, 0},
		{"one", samples(s, 5), 0},
		{"steady", samples(s, 1, 2, 3, 4), 0},
		{"slow start", samples(s, 0, 0, 0, 4, 5), 2 * s},
		{"two stalls, the longer later", samples(s, 1, 1, 2, 3, 3, 3, 3, 9), 3 * s},
		{"stalled at the end", samples(s, 1, 2, 2, 2), 2 * s},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := longestStall(tc.samples); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResumedAfter(t *testing.T) {
	const s = 200 * time.Millisecond
	ss := samples(s, 0, 10, 20, 20, 20, 20, 30, 40)
	tests := []struct {
		name  string
		at    time.Duration
		bytes int64
		want  time.Duration
		ok    bool
	}{
		{"at once", 1 * s, 10, 1 * s, true},
		{"after a stall", 2 * s, 20, 4 * s, true},
		{"between samples", 3*s + s/2, 20, 2*s + s/2, true},
		{"never", 7 * s, 40, 0, false},
		{"after the end", 9 * s, 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := resumedAfter(ss, tc.at, tc.bytes)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("got %v %v, want %v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestPerSecond(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		samples []progress
		want    []float64
	}{
		{"none", nil, nil},
		{"under a second", samples(200*time.Millisecond, 0, mib, 2*mib), nil},
		{"every 400 ms", samples(400*time.Millisecond, 0, mib, 2*mib, 3*mib, 4*mib, 5*mib), []float64{2, 5}},
		{"fraction", []progress{{0, 0}, {time.Second, mib / 2}, {1500 * time.Millisecond, mib}}, []float64{0.5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := perSecond(tc.samples); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTunnelRunOK(t *testing.T) {
	good := TunnelRun{WantBytes: 10, Bytes: 10, SHAOK: true}
	tests := []struct {
		name string
		mod  func(*TunnelRun)
		want bool
	}{
		{"whole", func(*TunnelRun) {}, true},
		{"short", func(r *TunnelRun) { r.Bytes = 9 }, false},
		{"sha", func(r *TunnelRun) { r.SHAOK = false }, false},
		{"curl failed", func(r *TunnelRun) { r.CurlExit = 56 }, false},
		{"error", func(r *TunnelRun) { r.Error = "forward exited" }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.mod(&r)
			if got := r.OK(); got != tc.want {
				t.Fatalf("OK() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestJudgeTunnelMigration(t *testing.T) {
	const size = 100
	fault := func(name string, bytes int64, resumed float64) FaultMark {
		return FaultMark{Name: name, AtS: 1, Bytes: bytes, ResumedAfterS: resumed}
	}
	good := TunnelRun{Kind: "migration", Path: "relay", WantBytes: size, Bytes: size, SHAOK: true,
		Faults: []FaultMark{fault("direct-opened", 3, 0.1), fault("address-changed", 30, 2.4), fault("conntrack-flushed", 60, 8)}}
	tests := []struct {
		name     string
		mod      func(*TunnelRun)
		upgraded bool
		want     bool
		says     string
	}{
		{"all landed", func(*TunnelRun) {}, true, true, "conntrack-flushed at +1.00 s (60% through, bytes again 8.0 s later)"},
		{"not upgraded", func(*TunnelRun) {}, false, false, "NOT upgraded"},
		{"a fault missing", func(r *TunnelRun) { r.Faults = r.Faults[:2] }, true, false, "faults (2 of 3)"},
		{"after the end", func(r *TunnelRun) { r.Faults = append(r.Faults[:2:2], fault("conntrack-flushed", size, -1)) }, true, false, "NOT mid-transfer"},
		{"never resumed", func(r *TunnelRun) { r.Faults = append(r.Faults[:2:2], fault("conntrack-flushed", 60, -1)) }, true, false, "NOT mid-transfer"},
		{"reset", func(r *TunnelRun) { r.CurlExit, r.Bytes = 56, 61 }, true, false, "61/100 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			r.Faults = append([]FaultMark(nil), good.Faults...)
			tc.mod(&r)
			ok, detail := judgeTunnelMigration(r, tc.upgraded)
			if ok != tc.want || !strings.Contains(detail, tc.says) {
				t.Fatalf("got %v %q, want %v and %q", ok, detail, tc.want, tc.says)
			}
		})
	}
}

// TestFileServer serves a payload the way the scenarios do, on a loopback
// listener of this process's own namespace (no root): the body and its
// length arrive as served, an unknown name is not found.
func TestFileServer(t *testing.T) {
	p := Payload{Seed: 3, Size: 300001}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := serveOn(ln, map[string]Payload{"body": p})
	defer fs.Close()
	resp, err := http.Get("http://" + fs.Addr.String() + "/body")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != p.Size || resp.ContentLength != p.Size {
		t.Fatalf("got %d bytes (Content-Length %d), %v; want %d", n, resp.ContentLength, err, p.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.SHA256() {
		t.Fatal("the body's SHA-256 differs")
	}
	// The handler counts a write once it returned, which may be after the
	// client has read it: wait for the count (bounded).
	for deadline := time.Now().Add(5 * time.Second); fs.served.Load() != p.Size && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if fs.served.Load() != p.Size {
		t.Fatalf("served %d bytes, want %d", fs.served.Load(), p.Size)
	}
	resp, err = http.Get("http://" + fs.Addr.String() + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown name: status %d", resp.StatusCode)
	}
}

func TestTunnelSizes(t *testing.T) {
	tests := []struct {
		loss              float64
		tunnel, migration int64
	}{
		{0, 64 << 20, 256 << 20},
		{0.5, 1 << 20, 2 << 20},
		{1, 1 << 20, 2 << 20},
		{5, 1 << 20, 2 << 20},
	}
	for _, tc := range tests {
		tu, mi := tunnelSizes(tc.loss)
		if tu != tc.tunnel || mi != tc.migration {
			t.Errorf("tunnelSizes(%v) = %d, %d; want %d, %d", tc.loss, tu, mi, tc.tunnel, tc.migration)
		}
	}
}
