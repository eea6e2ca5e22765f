package monitor

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSanitizer(t *testing.T) {
	s, err := NewSanitizer(AddressesSanitized)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort("198.51.100.7:4433")
	got := s.AddrPort(ap)
	if strings.Contains(got, "198.51.100") || !strings.HasSuffix(got, ":4433") || !strings.HasPrefix(got, "ip4-") {
		t.Fatalf("sanitised %q", got)
	}
	if s.AddrPort(ap) != got {
		t.Fatal("not stable within the process")
	}
	if s.AddrPort(netip.MustParseAddrPort("198.51.100.8:4433")) == got {
		t.Fatal("two addresses map to one")
	}
	other, _ := NewSanitizer(AddressesSanitized)
	if other.AddrPort(ap) == got {
		t.Fatal("the key is not per process")
	}
	full, _ := NewSanitizer(AddressesFull)
	if full.AddrPort(ap) != "198.51.100.7:4433" {
		t.Fatal("full mode changed the address")
	}
}

func TestSanitizeText(t *testing.T) {
	s, _ := NewSanitizer(AddressesSanitized)
	tests := []struct{ name, in string }{
		{"dial error", "dial udp 203.0.113.5:3478: connect: network is unreachable"},
		{"read error with colon", "read udp 10.1.2.3:40000->198.51.100.1:4433: i/o timeout"},
		{"v6 bracketed", "write to [2001:db8::7]:9000 failed"},
		{"bare v4 end of sentence", "peer at 192.0.2.44."},
		{"v6 bare", "no route to 2001:db8::1 now"},
		{"list of addresses", "tried [203.0.113.5:4433 10.1.2.3:4433]"},
		{"list of one", "[192.0.2.44:80]"},
	}
	raw := []string{"203.0.113.5", "10.1.2.3", "198.51.100.1", "2001:db8::7", "192.0.2.44", "2001:db8::1"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := s.Text(tc.in)
			for _, r := range raw {
				if strings.Contains(out, r) {
					t.Fatalf("%q still contains %s", out, r)
				}
			}
		})
	}
	if got := s.Text("version 1.2 of a dead:beef thing at 12:30"); got != "version 1.2 of a dead:beef thing at 12:30" {
		t.Fatalf("non-address text changed: %q", got)
	}
}

// seedNames are the metric names of the specification, which keep their
// non-base units by contract.
var seedNames = []string{MetricNATAttempts, MetricNATResults, MetricNATDuration, MetricBootstrapRequests,
	MetricBootstrapResponse, MetricNATTraversalByType, MetricConnectionLatency, MetricConnectionThru}

func exercise(m *Monitor) {
	a := StartAttempt(m, "p", "initiator", "public", "")
	a.Begin(PhaseDiscover)
	a.End(PhaseDiscover, OutcomeOK, ReasonNone)
	a.Record(Event{Kind: KindCandidate, Detail: "host", Addr: netip.MustParseAddrPort("192.0.2.1:1")})
	a.Record(Event{Kind: KindCheckSent, Addr: netip.MustParseAddrPort("192.0.2.1:1")})
	a.Record(Event{Kind: KindCheckAnswered, Addr: netip.MustParseAddrPort("192.0.2.1:1")})
	a.Finish(OutcomeOK, ReasonNone, PathDirect)
	m.Record(Event{Kind: KindBootstrapRequest, Bootstrap: "0", Detail: "register", Outcome: OutcomeOK, Duration: 3e6})
	m.Record(Event{Kind: KindBootstrapState, Bootstrap: "0", Outcome: OutcomeOK})
	m.Record(Event{Kind: KindLatency, Path: PathDirect, Duration: 2e6})
	m.Record(Event{Kind: KindThroughput, Path: PathDirect, Value: 900})
	m.Record(Event{Kind: KindRecovery, Detail: "retry", Outcome: OutcomeOK})
	m.Record(Event{Kind: KindSecurity, Reason: ReasonRateLimited})
	m.Record(Event{Kind: KindMigration, Reason: ReasonNetworkChanged, Outcome: OutcomeOK})
	m.Record(Event{Kind: KindFallback, Reason: ReasonBothSymmetric})
	m.Record(Event{Kind: KindRelay, Detail: "allocate", Outcome: OutcomeOK, Value: 100})
	m.Record(Event{Kind: KindRegistration, Outcome: OutcomeOK})
	m.Record(Event{Kind: KindNATType, NAT: "eim-apdf"})
	m.Record(Event{Kind: KindBreaker, Bootstrap: "0", Detail: "open"})
}

func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	exercise(m)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		contract := false
		for _, n := range seedNames {
			contract = contract || p.Metric == n
		}
		if !contract {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
		if n := mf.GetName(); !strings.HasPrefix(n, "antnode_") {
			found := false
			for _, s := range seedNames {
				found = found || s == n
			}
			if !found {
				t.Errorf("metric %s has neither the antnode_ prefix nor a contract name", n)
			}
		}
		for _, met := range mf.GetMetric() {
			for _, l := range met.GetLabel() {
				if strings.Contains(l.GetValue(), "192.0.2") || l.GetName() == "peer" || l.GetName() == "addr" {
					t.Errorf("metric %s carries a peer or address label %s=%s", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	for _, n := range seedNames {
		if !have[n] {
			t.Errorf("seed metric %s missing", n)
		}
	}
	if got := testutil.ToFloat64(m.metrics.attempts.get(roleKey{role: "initiator", family: "unknown"})); got != 1 {
		t.Fatalf("nat_attempts_total = %v", got)
	}
}

func TestLogsCarryAttemptAndHideAddresses(t *testing.T) {
	var buf bytes.Buffer
	m, err := New(Config{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	a := StartAttempt(m, "p", "initiator", "", "")
	a.Begin(PhasePunch)
	a.Record(Event{Kind: KindCheckSent, Addr: netip.MustParseAddrPort("198.51.100.23:5000")})
	a.Record(Event{Kind: KindPathValidated, Addr: netip.MustParseAddrPort("198.51.100.23:5000"),
		Err: errors.New("read udp 198.51.100.23:5000: refused")})
	a.Finish(OutcomeOK, ReasonNone, PathDirect)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 5 {
		t.Fatalf("%d records", len(lines))
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["attempt"] != a.ID().String() {
			t.Fatalf("record without the attempt ID: %s", l)
		}
		if strings.Contains(l, "198.51.100.23") {
			t.Fatalf("raw address in log: %s", l)
		}
	}
}

// pkcs8With is a PKCS#8 private key whose algorithm is oid (with an empty
// key): crypto/x509 names the OID in its error.
func pkcs8With(t *testing.T, oid asn1.ObjectIdentifier) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct {
		Version int
		Algo    pkix.AlgorithmIdentifier
		Key     []byte
	}{0, pkix.AlgorithmIdentifier{Algorithm: oid}, []byte{4, 0}})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestSanitizerKeepsOIDs: the sanitiser replaces addresses only; an OID in
// an error message (crypto/x509's own, a pkix name) survives, even one of
// four arcs that would parse as IPv4. Issue 21, finding 5.
func TestSanitizerKeepsOIDs(t *testing.T) {
	s, _ := NewSanitizer(AddressesSanitized)
	_, ed448 := x509.ParsePKCS8PrivateKey(pkcs8With(t, asn1.ObjectIdentifier{1, 3, 101, 113}))
	_, rsaPSS := x509.ParsePKCS8PrivateKey(pkcs8With(t, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}))
	if ed448 == nil || rsaPSS == nil {
		t.Fatal("x509 parsed a key without one")
	}
	tests := []struct {
		name string
		in   string
		keep []string // must survive
		hide []string // addresses: must not
	}{
		{"x509: a long OID", rsaPSS.Error(), []string{"1.2.840.113549.1.1.11"}, nil},
		{"x509: a four-arc OID", ed448.Error(), []string{"1.3.101.113"}, nil},
		{"the issue's message", "tls: bad certificate: signature algorithm 1.2.840.113549.1.1.11 from 203.0.113.5:4433",
			[]string{"1.2.840.113549.1.1.11"}, []string{"203.0.113.5"}},
		{"named OID", "unhandled critical extension OID 2.5.29.17 at 198.51.100.7", []string{"2.5.29.17"}, []string{"198.51.100.7"}},
		{"extension: OID", "x509: unhandled extension: 2.5.29.15", []string{"2.5.29.15"}, nil},
		{"pkix attribute", "subject 2.5.4.3=alice,2.5.4.10=acme", []string{"2.5.4.3=alice", "2.5.4.10=acme"}, nil},
		{"OID(...)", "unknown curve (1.3.132.0.35) and OID(1.3.101.112)", []string{"1.3.132.0.35", "1.3.101.112"}, nil},
		{"an address is still one", "peer 1.3.101.113 left; dial 2.5.29.17:443", nil, []string{"1.3.101.113", "2.5.29.17"}},
		{"an address after 'from'", "refused from 1.1.1.1", nil, []string{"1.1.1.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := s.Text(tc.in)
			for _, k := range tc.keep {
				if !strings.Contains(out, k) {
					t.Fatalf("%q lost %s: %q", tc.in, k, out)
				}
			}
			for _, h := range tc.hide {
				if strings.Contains(out, h) {
					t.Fatalf("%q still shows the address %s: %q", tc.in, h, out)
				}
			}
		})
	}
}

// TestFamilyLabels: attempts carry the families the node's socket serves,
// results and latency the family of the path an attempt ended on; a
// failure's is unknown, and so is any value outside the bounded set.
func TestFamilyLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ok := StartAttempt(m, "p", "initiator", "eim-apdf", "dual-stack")
	ok.SetFamily("ipv6")
	ok.Finish(OutcomeOK, ReasonNone, PathDirect)
	m.Record(Event{Kind: KindLatency, Path: PathDirect, Duration: 80 * time.Millisecond, Family: "ipv6"})
	failed := StartAttempt(m, "q", "responder", "eim-apdf", "ipv4")
	failed.Finish(OutcomeFail, ReasonPunchTimeout, PathNone)
	bogus := StartAttempt(m, "r", "initiator", "eim-apdf", "ipv5")
	bogus.SetFamily("ipv5")
	bogus.Finish(OutcomeOK, ReasonNone, PathRelay)
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"attempt from a dual-stack socket", m.metrics.attempts.get(roleKey{"initiator", "dual-stack"}), 1},
		{"attempt from an IPv4 socket", m.metrics.attempts.get(roleKey{"responder", "ipv4"}), 1},
		{"a family outside the set", m.metrics.attempts.get(roleKey{"initiator", "unknown"}), 1},
		{"success over IPv6", m.metrics.results.get(resultKey{role: "initiator", result: "success", path: PathDirect, family: "ipv6"}), 1},
		{"failure: unknown", m.metrics.results.get(resultKey{role: "responder", result: "failure", reason: ReasonPunchTimeout,
			path: PathNone, family: "unknown"}), 1},
		{"success over an unknown family", m.metrics.results.get(resultKey{role: "initiator", result: "success", path: PathRelay, family: "unknown"}), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := testutil.ToFloat64(tc.c); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	if n := testutil.CollectAndCount(reg, MetricConnectionLatency); n != 1 {
		t.Fatalf("%d latency series, want 1 (direct, ipv6)", n)
	}
}
