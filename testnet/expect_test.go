package testnet

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseExpectation(t *testing.T) {
	good := []struct {
		in   string
		want Expectation
	}{
		{"direct", Expectation{Level: "direct", Min: 1}},
		{"relay", Expectation{Level: "relay", Min: 1}},
		{"none", Expectation{Level: "none", Min: 1}},
		{"direct>=0.9", Expectation{Level: "direct", Min: 0.9}},
		{"direct>=0.9 within 10s", Expectation{Level: "direct", Min: 0.9, Within: 10 * time.Second}},
		{"direct rtts<=3", Expectation{Level: "direct", Min: 1, MaxRTTs: 3}},
		{"connect>=0.5 within 1.5s rtts<=4.5", Expectation{Level: "connect", Min: 0.5, Within: 1500 * time.Millisecond, MaxRTTs: 4.5}},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			e, err := ParseExpectation(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if e != tc.want {
				t.Fatalf("parsed %+v, want %+v", e, tc.want)
			}
			if e.String() != tc.in {
				t.Fatalf("String() = %q, want %q", e.String(), tc.in)
			}
		})
	}
	for _, in := range []string{"", "fast", "direct>=2", "direct>=0", "direct within", "direct within -1s",
		"direct within soon", "direct rtts<=0", "direct rtts<=x", "direct sometimes", "none within 10s", "none rtts<=3"} {
		t.Run("bad "+in, func(t *testing.T) {
			if _, err := ParseExpectation(in); !errors.Is(err, ErrBadExpectation) {
				t.Fatalf("ParseExpectation(%q) = %v, want ErrBadExpectation", in, err)
			}
		})
	}
}

func TestParseExpectationsRejects(t *testing.T) {
	tests := []struct{ name, json string }{
		{"unknown class in a pair", `{"pairs": {"x/y": "direct"}}`},
		{"bad level", `{"pairs": {"apdm/apdm": "fast"}}`},
		{"bad fraction", `{"pairs": {"apdm/apdm": "direct>=2"}}`},
		{"bad default", `{"default": "soon"}`},
		{"not json", `not json`},
		{"unknown exempt class", `{"nat_exempt": ["x"]}`},
		{"bound without classes", `{"rtt_bounds": [{"max_rtts_p50": 3}]}`},
		{"bound with an unknown class", `{"rtt_bounds": [{"classes": ["x"], "max_rtts_p50": 3}]}`},
		{"bound with an unknown topology", `{"rtt_bounds": [{"classes": ["public"], "topology": "far", "max_rtts_p50": 3}]}`},
		{"bound with a bad level", `{"rtt_bounds": [{"classes": ["public"], "level": "none", "max_rtts_p50": 3}]}`},
		{"bound without a bound", `{"rtt_bounds": [{"classes": ["public"]}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseExpectations([]byte(tc.json)); !errors.Is(err, ErrBadExpectation) {
				t.Fatalf("accepted or wrong error: %v", err)
			}
		})
	}
}

func loadRepoExpectations(t *testing.T) Expectations {
	t.Helper()
	x, err := LoadExpectations("expectations.json")
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// eimClasses are the classes with endpoint-independent mapping (issue 4:
// their pairs connect in at most 3 round trips at the median).
var eimClasses = []Class{ClassPublic, ClassEIMEIF, ClassEIMADF, ClassEIMAPDF, ClassCGNAT}

// relayOnly says whether only a relay can connect a and b (UDP blocked on
// either side, or both symmetric without a port mapping).
func relayOnly(a, b Class) bool {
	return a == ClassUDPBlocked || b == ClassUDPBlocked || (a == ClassAPDM && b == ClassAPDM)
}

// TestRepoExpectations checks the table in the repository against the
// acceptance of issues 4, 17, 19 and 22: every EIM pair on different NATs
// must be direct within 1.8 round trips at the median; every birthday
// pair direct within 10 s in 90% of its runs; every relay-only pair
// through the relay within 2.5 round trips, relay to relay included;
// IPv6 through two firewalls direct within 3; other same-NAT pairs and
// pairs with a non-EIM side carry no round-trip bound; pairs without an
// address family in common connect through the relay.
func TestRepoExpectations(t *testing.T) {
	x := loadRepoExpectations(t)
	for _, a := range Classes() {
		for _, b := range Classes() {
			p := PairSpec{A: a, B: b, Topology: TopoDifferent}
			e := x.ForPair(p)
			eim := slices.Contains(eimClasses, a) && slices.Contains(eimClasses, b)
			switch {
			case !SharesFamily(a, b):
				// Issue 19: IPv6-only to IPv4-only only through the
				// relay, relay to relay (3.2 to 4.1 measured).
				if e.Level != "relay" || e.Min != 1 || e.MaxRTTs <= 0 || e.MaxRTTs > 5 {
					t.Errorf("%s: %v, want relay rtts<=5 or less", p.Key(), e)
				}
			case a == ClassV6Firewall && b == ClassV6Firewall,
				// dual-stack: over IPv6 with itself and v6-firewall.
				a == ClassDualStack && (b == ClassDualStack || b == ClassV6Firewall),
				b == ClassDualStack && a == ClassV6Firewall:
				if e.Level != "direct" || e.Min != 1 || e.MaxRTTs <= 0 || e.MaxRTTs > 3 {
					t.Errorf("%s: %v, want direct rtts<=3 or less", p.Key(), e)
				}
			case p.NeedsBirthday():
				if e.Level != "direct" || e.Min != 0.9 || e.Within != 10*time.Second || e.MaxRTTs != 0 {
					t.Errorf("%s: %v, want direct>=0.9 within 10s", p.Key(), e)
				}
			case eim:
				// Issue 22's early introduction: 1.8 (3 before it).
				if e.Level != "direct" || e.Min != 1 || e.Within != 0 || e.MaxRTTs != 1.8 {
					t.Errorf("%s: %v, want direct rtts<=1.8", p.Key(), e)
				}
			case relayOnly(a, b):
				// Issue 17's warm relay: at most 2.5 round trips (4.2 to
				// 5.7 before it), relay to relay included (3 until
				// allocations permitted the relay's own address).
				if e.Level != "relay" || e.MaxRTTs <= 0 || e.MaxRTTs > 2.5 {
					t.Errorf("%s: %v, want relay rtts<=2.5 or less", p.Key(), e)
				}
			case e.MaxRTTs != 0:
				t.Errorf("%s: %v, want no round-trip bound", p.Key(), e)
			}
		}
	}
	for _, p := range []PairSpec{{A: ClassEIMAPDF, B: ClassEIMAPDF, Topology: TopoSameNAT}, {A: ClassCGNAT, B: ClassCGNAT, Topology: TopoSameCarrier}} {
		if e := x.ForPair(p); e.String() != "direct" {
			t.Errorf("%s: %v, want direct (no bound: the peers' RTT is a LAN's)", p.Key(), e)
		}
	}
}

func TestForPairBounds(t *testing.T) {
	x, err := ParseExpectations([]byte(`{"default": "direct", "pairs": {"public/eim-eif": "direct rtts<=5", "eim-eif/public": "relay"},
		"rtt_bounds": [{"classes": ["public", "eim-eif"], "max_rtts_p50": 4}, {"classes": ["public"], "level": "direct", "max_rtts_p50": 2}]}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		a, b Class
		want string
	}{
		{ClassPublic, ClassPublic, "direct rtts<=2"}, // the tighter of two bounds
		{ClassEIMEIF, ClassEIMEIF, "direct rtts<=4"}, // one bound
		{ClassPublic, ClassEIMEIF, "direct rtts<=5"}, // the pair's own bound wins
		{ClassEIMEIF, ClassPublic, "relay rtts<=4"},  // a bound without a level applies to relays too
		{ClassEIMEIF, ClassEIMADF, "direct"},         // one side outside the classes
	}
	for _, tc := range tests {
		p := PairSpec{A: tc.a, B: tc.b, Topology: TopoDifferent}
		if got := x.ForPair(p).String(); got != tc.want {
			t.Errorf("%s: %s, want %s", p.Key(), got, tc.want)
		}
	}
}

// direct and relayed are connects from an IPv4 class's host.
func direct(ttc, rtt float64) ConnectResult {
	return ConnectResult{Connected: true, Path: "direct", TimeToConnect: ttc, RTT: rtt, BytesVerified: 1 << 20, Family: "ipv4"}
}

func relayed(ttc, rtt float64) ConnectResult {
	return ConnectResult{Connected: true, Path: "relay", TimeToConnect: ttc, RTT: rtt, BytesVerified: 1 << 20, Family: "ipv4"}
}

func failed(reason, err string) ConnectResult {
	return ConnectResult{Path: "none", Reason: reason, Error: err}
}

func repeat(n int, r ConnectResult) []ConnectResult {
	out := make([]ConnectResult, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// TestJudge checks pairs' runs against the repository's table: the
// round-trip bound of the EIM pairs and the 10 s window of the birthday
// pairs, met and unmet.
func TestJudge(t *testing.T) {
	x := loadRepoExpectations(t)
	pair := func(a, b Class) PairSpec { return PairSpec{A: a, B: b, Topology: TopoDifferent} }
	tests := []struct {
		name  string
		p     PairSpec
		rs    []ConnectResult
		short []string // kinds of shortfall; none: met
	}{
		{"eim pair at 1.6 round trips", pair(ClassEIMEIF, ClassEIMAPDF), repeat(3, direct(133, 83)), nil},
		{"eim pair at exactly 1.8 round trips", pair(ClassCGNAT, ClassCGNAT), repeat(3, direct(144, 80)), nil},
		{"eim pair at 2 round trips (before the early introduction)", pair(ClassPublic, ClassEIMADF), repeat(3, direct(170, 83)), []string{ShortRTTs}},
		{"eim pair whose median run is slow", pair(ClassEIMADF, ClassCGNAT),
			[]ConnectResult{direct(130, 80), direct(400, 80), direct(410, 80)}, []string{ShortRTTs}},
		{"eim pair whose p95 only is slow", pair(ClassEIMADF, ClassCGNAT),
			[]ConnectResult{direct(130, 80), direct(135, 80), direct(900, 80)}, nil},
		{"eim pair without an rtt", pair(ClassEIMEIF, ClassEIMEIF), repeat(3, direct(170, 0)), []string{ShortNoRTT}},
		{"eim pair with a relayed run, slow", pair(ClassEIMEIF, ClassEIMEIF),
			[]ConnectResult{direct(300, 80), direct(300, 80), relayed(400, 80)}, []string{ShortLevel, ShortRTTs}},
		{"eim pair that never connects", pair(ClassEIMEIF, ClassEIMEIF), repeat(3, failed("timeout", "no answer")), []string{ShortLevel}},
		{"same-carrier pair at LAN round trips", PairSpec{A: ClassCGNAT, B: ClassCGNAT, Topology: TopoSameCarrier}, repeat(3, direct(95, 2)), nil},
		{"apdm with a full cone: no bound", pair(ClassAPDM, ClassEIMEIF), repeat(3, direct(400, 80)), nil},
		{"udp-blocked over the warm relay within 2.5 round trips", pair(ClassUDPBlocked, ClassPublic), repeat(3, relayed(172, 84)), nil},
		{"udp-blocked over the warm relay at 2.56 round trips", pair(ClassUDPBlocked, ClassPublic), repeat(3, relayed(215, 84)), []string{ShortRTTs}},
		{"udp-blocked to udp-blocked, relay to relay, at 2.56 round trips", pair(ClassUDPBlocked, ClassUDPBlocked), repeat(3, relayed(215, 84)), []string{ShortRTTs}},
		{"udp-blocked to udp-blocked, relay to relay, at 1.51 round trips", pair(ClassUDPBlocked, ClassUDPBlocked), repeat(3, relayed(127, 84)), nil},
		{"udp-blocked over the relay at 5 round trips (before the warm relay)", pair(ClassUDPBlocked, ClassPublic), repeat(3, relayed(420, 84)), []string{ShortRTTs}},
		{"birthday: 10 of 10 within 10 s", pair(ClassAPDM, ClassEIMAPDF), repeat(10, direct(900, 80)), nil},
		{"birthday: 9 within 10 s, 1 at 12 s", pair(ClassEIMAPDF, ClassAPDM),
			append(repeat(9, direct(900, 80)), direct(12000, 80)), nil},
		{"birthday: a run at exactly 10 s counts", pair(ClassCGNAT, ClassAPDM),
			append(repeat(8, direct(900, 80)), direct(10000, 80), failed("timeout", "")), nil},
		{"birthday: all direct, 2 after 10 s", pair(ClassAPDM, ClassCGNAT),
			append(repeat(8, direct(900, 80)), direct(10001, 80), direct(14000, 80)), []string{ShortLevel}},
		{"birthday: 9 direct and 1 relayed, fast", pair(ClassAPDM, ClassEIMAPDF),
			append(repeat(9, direct(900, 80)), relayed(700, 80)), nil},
		{"birthday: 8 direct, 2 failed", pair(ClassAPDM, ClassEIMAPDF),
			append(repeat(8, direct(900, 80)), failed("timeout", ""), failed("timeout", "")), []string{ShortLevel}},
		{"birthday: a slow median is no failure", pair(ClassAPDM, ClassEIMAPDF), repeat(10, direct(5000, 80)), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := x.ForPair(tc.p)
			pr := summarize(tc.p, tc.rs, e)
			var kinds []string
			for _, s := range e.Check(pr) {
				kinds = append(kinds, s.Kind)
			}
			if !slices.Equal(kinds, tc.short) {
				t.Fatalf("%s with %v: shortfalls %v, want %v (%+v)", tc.p.Key(), e, e.Check(pr), tc.short, pr)
			}
			var rep Report
			got := rep.AddPair(tc.p, tc.rs, e)
			wantUnmet := 0
			if tc.short != nil {
				wantUnmet = 1 // one line per pair, whatever the shortfalls
			}
			if got.Met != (tc.short == nil) || len(rep.Unmet) != wantUnmet {
				t.Fatalf("met %v, unmet %q; want met %v", got.Met, rep.Unmet, tc.short == nil)
			}
			if !got.Met && !strings.HasPrefix(rep.Unmet[0], tc.p.Key()+": ") {
				t.Fatalf("unmet line %q does not name the pair", rep.Unmet[0])
			}
			if got.Expect != e.String() {
				t.Fatalf("report says expect %q, want %q", got.Expect, e)
			}
			if e.Within > 0 && got.InTime == nil {
				t.Fatal("a pair with a time window reports no reached_in_time")
			}
		})
	}
}

// TestSummarizeFailures checks the report's failure path: failures are
// counted by reason (a run that connected but did not verify its bytes is
// a failure too), one sample error is kept per reason, only verified runs
// count toward paths, bytes and times, and the pair is unmet.
func TestSummarizeFailures(t *testing.T) {
	p := PairSpec{A: ClassEIMEIF, B: ClassEIMAPDF, Topology: TopoDifferent}
	rs := []ConnectResult{
		failed("timeout", "punch: no answer"),
		failed("timeout", "punch: no answer again"),
		failed("", "exit status 2"),
		failed("crash", "no JSON result"),
		{Connected: true, Path: "direct", TimeToConnect: 150, RTT: 80, BytesVerified: 4096, Reason: "verify", Error: "short read"},
		direct(170, 80),
	}
	x := loadRepoExpectations(t)
	var rep Report
	pr := rep.AddPair(p, rs, x.ForPair(p))
	wantFailures := map[string]int{"timeout": 2, "unknown": 1, "crash": 1, "verify": 1}
	if !maps.Equal(pr.Failures, wantFailures) {
		t.Fatalf("failures %v, want %v", pr.Failures, wantFailures)
	}
	wantErrors := []string{"timeout: punch: no answer", "unknown: exit status 2", "crash: no JSON result", "verify: short read"}
	if !slices.Equal(pr.Errors, wantErrors) {
		t.Fatalf("sample errors %q, want %q", pr.Errors, wantErrors)
	}
	if pr.Runs != 6 || pr.Connected != 1 || pr.Direct != 1 || pr.Relay != 0 || pr.BytesVerified != 1<<20 {
		t.Fatalf("runs %d connected %d direct %d relay %d bytes %d; want 6 1 1 0 %d", pr.Runs, pr.Connected, pr.Direct, pr.Relay, pr.BytesVerified, 1<<20)
	}
	if pr.P50 != 170 || pr.P95 != 170 || pr.RTTP50 != 80 || pr.RTTsP50 != 2.13 {
		t.Fatalf("p50 %v p95 %v rtt %v rtts %v; want 170 170 80 2.13 (verified runs only)", pr.P50, pr.P95, pr.RTTP50, pr.RTTsP50)
	}
	if pr.Met || len(rep.Unmet) != 1 {
		t.Fatalf("met %v, unmet %q; want unmet", pr.Met, rep.Unmet)
	}
	table := rep.Table()
	if !strings.Contains(table, "crash:1 timeout:2 unknown:1 verify:1 UNMET") {
		t.Fatalf("the table does not show the failures and UNMET:\n%s", table)
	}

	// No runs at all (the run was interrupted): unmet unless nothing was
	// expected.
	for _, tc := range []struct {
		e    string
		want bool
	}{{"direct", false}, {"relay", false}, {"none", true}} {
		e, err := ParseExpectation(tc.e)
		if err != nil {
			t.Fatal(err)
		}
		if pr, _ := judge(p, nil, e); pr.Met != tc.want || pr.Runs != 0 {
			t.Errorf("no runs, expect %s: met %v, want %v", tc.e, pr.Met, tc.want)
		}
	}
}

// TestWithoutRTTBounds: the lossy pass drops every round-trip bound, the
// table-wide ones and a pair's own rtts<=N (CI failed on udp-blocked x
// udp-blocked's own bound of 3 under 2 % loss: 3.32), and keeps the levels.
func TestWithoutRTTBounds(t *testing.T) {
	x := loadRepoExpectations(t)
	y := x.WithoutRTTBounds()
	for _, a := range Classes() {
		for _, b := range Classes() {
			p := PairSpec{A: a, B: b, Topology: TopoDifferent}
			e, f := x.ForPair(p), y.ForPair(p)
			if f.MaxRTTs != 0 {
				t.Errorf("%s: %v without bounds, want no rtts<=", p.Key(), f)
			}
			if e.Level != f.Level || e.Min != f.Min || e.Within != f.Within {
				t.Errorf("%s: %v without bounds, want the level of %v", p.Key(), f, e)
			}
		}
	}
	// A pair's own bound goes too (the table's pairs carry none now:
	// one of its own).
	y = Expectations{Pairs: map[string]Expectation{"udp-blocked/udp-blocked": {Level: "relay", Min: 1, MaxRTTs: 3}}}.WithoutRTTBounds()
	if e := y.For("udp-blocked/udp-blocked"); e.MaxRTTs != 0 || e.Level != "relay" {
		t.Errorf("a pair's own rtts<=3 without bounds: %v, want relay", e)
	}
}

func TestFamilyShortfall(t *testing.T) {
	ok4 := ConnectResult{Connected: true, Family: "ipv4"}
	ok6 := ConnectResult{Connected: true, Family: "ipv6"}
	via64 := ConnectResult{Connected: true, Family: "ipv6", NAT64: NAT64Prefix}
	failed := ConnectResult{Connected: false}
	tests := []struct {
		name  string
		a     Class
		rs    []ConnectResult
		short bool
		b     Class // empty: public
	}{
		{"IPv4 class over IPv4", ClassEIMEIF, []ConnectResult{ok4, failed}, false, ""},
		{"IPv4 class over IPv6", ClassEIMEIF, []ConnectResult{ok6}, true, ""},
		{"IPv6-only class over IPv6", ClassV6Firewall, []ConnectResult{ok6}, false, ""},
		{"IPv6-only class with a NAT64 it has not", ClassV6Firewall, []ConnectResult{via64}, true, ""},
		{"behind NAT64, through it", ClassV6NAT64, []ConnectResult{via64, via64}, false, ""},
		{"behind NAT64, without the prefix", ClassV6NAT64, []ConnectResult{via64, ok6}, true, ""},
		{"a connect that reported no family", ClassEIMEIF, []ConnectResult{{Connected: true}}, true, ""},
		{"failed runs say nothing", ClassV6NAT64, []ConnectResult{failed}, false, ""},
		{"dual-stack to v6-firewall: IPv6 only", ClassDualStack, []ConnectResult{ok6, ok4}, true, ClassV6Firewall},
		{"dual-stack to dual-stack: IPv6 won all", ClassDualStack, []ConnectResult{ok6, ok6, ok6}, false, ClassDualStack},
		{"dual-stack to dual-stack: IPv4 won one of three", ClassDualStack, []ConnectResult{ok6, ok4, ok6}, false, ClassDualStack},
		{"dual-stack to dual-stack: IPv4 won two of three", ClassDualStack, []ConnectResult{ok4, ok4, ok6}, true, ClassDualStack},
		{"dual-stack to dual-stack: no family", ClassDualStack, []ConnectResult{ok6, {Connected: true}}, true, ClassDualStack},
		{"dual-stack to v6-nat64: either", ClassDualStack, []ConnectResult{ok4, ok6}, false, ClassV6NAT64},
		{"dual-stack to an IPv4 class: IPv4", ClassDualStack, []ConnectResult{ok6}, true, ClassEIMEIF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.b
			if b == "" {
				b = ClassPublic
			}
			got := familyShortfall(PairSpec{A: tc.a, B: b}, tc.rs)
			if (got != "") != tc.short {
				t.Fatalf("familyShortfall = %q, want a shortfall: %v", got, tc.short)
			}
		})
	}
}

// TestSummarizeFamilies: the report counts the verified runs by the
// family their connection ran in (a failed run does not count).
func TestSummarizeFamilies(t *testing.T) {
	p := PairSpec{A: ClassDualStack, B: ClassDualStack, Topology: TopoDifferent}
	v6, v4, bad := direct(130, 83), direct(180, 83), failed("timeout", "")
	v6.Family, v4.Family, bad.Family = "ipv6", "ipv4", "ipv6"
	pr := summarize(p, []ConnectResult{v6, v4, v6, bad}, loadRepoExpectations(t).ForPair(p))
	if want := map[string]int{"ipv6": 2, "ipv4": 1}; !maps.Equal(pr.Families, want) {
		t.Fatalf("families %v, want %v", pr.Families, want)
	}
}
