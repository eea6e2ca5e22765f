package testnet

import (
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestPlanGolden(t *testing.T) {
	spec := Spec{Prefix: "t-", Link: Impairment{Delay: 20 * time.Millisecond, Loss: 1}, Sites: []SiteSpec{
		{Name: "pub", Class: ClassPublic},
		{Name: "eif", Class: ClassEIMEIF, Link: &Impairment{}},
		{Name: "apdf", Class: ClassEIMAPDF, Hosts: 2},
		{Name: "sym", Class: ClassAPDM, Hairpin: true},
		{Name: "cgn", Class: ClassCGNAT, Hosts: 2, Hairpin: true},
		{Name: "blk", Class: ClassUDPBlocked},
		{Name: "v6", Class: ClassV6Firewall},
		{Name: "n64", Class: ClassV6NAT64},
	}}
	p, err := PlanFor(spec)
	if err != nil {
		t.Fatal(err)
	}
	got := p.String()
	path := filepath.Join("testdata", "plan.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Fatalf("plan changed; run go test ./testnet -run PlanGolden -update and review the diff")
	}
	// Spot checks that do not depend on the golden file.
	if n := len(p.Wires); n != 7 {
		t.Fatalf("%d wires, want 7 (one per impaired site)", n)
	}
	if !strings.Contains(got, "masquerade random") || !strings.Contains(got, `meta l4proto udp counter drop comment "UDP blocked"`) {
		t.Fatal("APDM or UDP-blocked rules missing")
	}
	if !strings.Contains(got, "table ip6 fwlab") || strings.Contains(got, "t-r6 addr add 198.51") {
		t.Fatal("the IPv6-only site has no IPv6 firewall, or an IPv4 address")
	}
}

func TestSpecValidate(t *testing.T) {
	ok := SiteSpec{Name: "a", Class: ClassEIMEIF}
	tests := []struct {
		name string
		spec Spec
	}{
		{"no sites", Spec{}},
		{"bad name", Spec{Sites: []SiteSpec{{Name: "A b", Class: ClassEIMEIF}}}},
		{"duplicate", Spec{Sites: []SiteSpec{ok, ok}}},
		{"bad class", Spec{Sites: []SiteSpec{{Name: "a", Class: "cone"}}}},
		{"three hosts", Spec{Sites: []SiteSpec{{Name: "a", Class: ClassEIMEIF, Hosts: 3}}}},
		{"two public hosts", Spec{Sites: []SiteSpec{{Name: "a", Class: ClassPublic, Hosts: 2}}}},
		{"negative delay", Spec{Link: Impairment{Delay: -1}, Sites: []SiteSpec{ok}}},
		{"loss over 100", Spec{Link: Impairment{Loss: 101}, Sites: []SiteSpec{ok}}},
		{"bad prefix", Spec{Prefix: "Bad/Prefix", Sites: []SiteSpec{ok}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.spec.Validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	s, err := Spec{Sites: []SiteSpec{ok}}.Validate()
	if err != nil || s.Sites[0].Hosts != 1 || s.Sites[0].Link == nil {
		t.Fatalf("defaults not filled: %+v %v", s.Sites[0], err)
	}
}

func TestRulesetValidate(t *testing.T) {
	base := Ruleset{WAN: "wan0", WANAddr: ServerAddr(1), LANs: []string{"lan0"}, Mapping: "eim", Filtering: "apdf"}
	bad := []func(*Ruleset){
		func(r *Ruleset) { r.WAN = "" },
		func(r *Ruleset) { r.LANs = nil },
		func(r *Ruleset) { r.Mapping = "cone" },
		func(r *Ruleset) { r.Filtering = "open" },
		func(r *Ruleset) { r.Mapping, r.Filtering = "apdm", "eif" },
	}
	for i, mut := range bad {
		r := base
		mut(&r)
		if _, err := r.Render(); err == nil {
			t.Errorf("case %d accepted: %+v", i, r)
		}
	}
	if _, err := base.Render(); err != nil {
		t.Fatal(err)
	}
}

// TestExtra6: a dual-stack router's Extra rules go into its IPv4 table
// and its Extra6 rules into its IPv6 firewall; an IPv6-only router's
// Extra rules into its firewall.
func TestExtra6(t *testing.T) {
	dual := Ruleset{WAN: "wan0", LANs: []string{"lan0"}, WANAddr: netip.MustParseAddr("198.51.100.9"),
		Mapping: "eim", Filtering: "apdf", Firewall6: true, Extra: []string{"counter comment \"four\""},
		Extra6: []string{"counter comment \"six\""}}
	got, err := dual.Render()
	if err != nil {
		t.Fatal(err)
	}
	v4, v6, _ := strings.Cut(got, "table ip6 fwlab {")
	if !strings.Contains(v4, `"four"`) || strings.Contains(v4, `"six"`) || !strings.Contains(v6, `"six"`) || strings.Contains(v6, `"four"`) {
		t.Fatalf("dual-stack ruleset:\n%s", got)
	}
	only := Ruleset{WAN: "wan0", LANs: []string{"lan0"}, Firewall6: true, Extra: []string{"counter comment \"six\""}}
	if got, err := only.Render(); err != nil || !strings.Contains(got, `"six"`) {
		t.Fatalf("IPv6-only ruleset (%v):\n%s", err, got)
	}
}

func TestUntilIPv6(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		families  []string // the family each run comes up over
		err       error    // the error of the last run, if any
		wantRuns  int
		wantTries string
	}{
		{name: "first over IPv6", families: []string{"ipv6"}, wantRuns: 1},
		{name: "again after IPv4", families: []string{"ipv4", "ipv6"}, wantRuns: 2,
			wantTries: "ran again after run 1 came up over ipv4 (7 bytes verified); "},
		{name: "bounded", families: []string{"ipv4", "ipv4", "ipv4", "ipv6"}, wantRuns: ipv6Tries,
			wantTries: "ran again after run 1 came up over ipv4 (7 bytes verified), run 2 came up over ipv4 (7 bytes verified); "},
		{name: "an error ends it", families: []string{"ipv4"}, err: boom, wantRuns: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			r, tries, err := untilIPv6(func() (transferRun, error) {
				fam := tc.families[runs]
				runs++
				var err error
				if runs == len(tc.families) {
					err = tc.err
				}
				return transferRun{Res: ConnectResult{Family: fam, BytesVerified: 7}}, err
			})
			if runs != tc.wantRuns || tries != tc.wantTries || !errors.Is(err, tc.err) {
				t.Fatalf("runs %d, tries %q, err %v; want %d, %q, %v", runs, tries, err, tc.wantRuns, tc.wantTries, tc.err)
			}
			if want := tc.families[runs-1]; r.Res.Family != want {
				t.Errorf("returned the run over %s, want the last (%s)", r.Res.Family, want)
			}
		})
	}
}

func TestOnRelayAfter(t *testing.T) {
	since := time.UnixMilli(1_000_000)
	tests := []struct {
		name       string
		migrations string // the connect result's, as JSON
		want       time.Duration
		moved      bool
	}{
		{"its own fallback, from its start", `[{"kind":"fallback","ok":true,"duration_ms":400,"to":"relay","at_unix_ms":1001500}]`, 1900 * time.Millisecond, true},
		{"the target's move, on its notice", `[{"kind":"peer-moved","ok":true,"duration_ms":266,"to":"relay","at_unix_ms":1003588}]`, 3588 * time.Millisecond, true},
		{"a failed fallback, then the target's",
			`[{"kind":"fallback","ok":false,"duration_ms":9000,"to":"direct","at_unix_ms":1001000},{"kind":"peer-moved","ok":true,"duration_ms":300,"to":"relay","at_unix_ms":1011000}]`,
			11 * time.Second, true},
		{"the target moved direct", `[{"kind":"peer-moved","ok":true,"duration_ms":300,"to":"direct","at_unix_ms":1002000}]`, 0, false},
		{"no move", `[]`, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var res ConnectResult
			if err := json.Unmarshal([]byte(`{"migrations":`+tc.migrations+`}`), &res); err != nil {
				t.Fatal(err)
			}
			got, how, moved := onRelayAfter(res, since)
			if got != tc.want || moved != tc.moved || moved != (how != "") {
				t.Fatalf("onRelayAfter = %v, %q, %v; want %v, %v", got, how, moved, tc.want, tc.moved)
			}
		})
	}
}
