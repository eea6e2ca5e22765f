package testnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrBadExpectation is wrapped by every error about a malformed
// expectation table.
var ErrBadExpectation = errors.New("malformed expectation")

// Expectation is what a pair must achieve: a level, the share of runs that
// must reach it, optionally within a time, and optionally a bound on the
// median time to connect in round trips.
type Expectation struct {
	// Level is "none" (nothing required), "connect" (connected, any
	// path), "relay" (connected through the relay) or "direct".
	Level string
	// Min is the share of runs (0..1] that must reach Level. Zero: 1.
	Min float64
	// Within, if non-zero, counts a run toward Level only when its time
	// to connect is at most Within ("direct>=0.9 within 10s": the birthday
	// pairs). Zero: a run counts whenever it connected.
	Within time.Duration
	// MaxRTTs, if non-zero, bounds the pair's median time to connect in
	// round trips between the peers: time_to_connect_ms_p50 / rtt_ms_p50
	// ("direct rtts<=3"). ForPair sets it from the table's rtt_bounds.
	// Zero: no bound.
	MaxRTTs float64
}

// String is the expectation in the syntax ParseExpectation reads.
func (e Expectation) String() string {
	s := e.Level
	if e.Min != 0 && e.Min != 1 {
		s += fmt.Sprintf(">=%g", e.Min)
	}
	if e.Within > 0 {
		s += " within " + e.Within.String()
	}
	if e.MaxRTTs > 0 {
		s += fmt.Sprintf(" rtts<=%g", e.MaxRTTs)
	}
	return s
}

// ParseExpectation parses LEVEL[>=FRACTION][ within DURATION][ rtts<=N]:
// a level ("direct", "connect", "relay" or "none"), the share of runs that
// must reach it (default 1), the time within which a run must have
// connected to count, and the bound on the median time to connect in
// round trips; e.g. "direct>=0.9 within 10s", "direct rtts<=3".
func ParseExpectation(s string) (Expectation, error) {
	bad := func(why string) error {
		return fmt.Errorf("testnet: expectation %q: %s: %w", s, why, ErrBadExpectation)
	}
	f := strings.Fields(s)
	if len(f) == 0 {
		return Expectation{}, bad("empty")
	}
	level, frac, hasFrac := strings.Cut(f[0], ">=")
	e := Expectation{Level: level, Min: 1}
	switch level {
	case "none", "connect", "relay", "direct":
	default:
		return e, bad("level must be none, connect, relay or direct")
	}
	if hasFrac {
		v, err := strconv.ParseFloat(frac, 64)
		if err != nil || v <= 0 || v > 1 {
			return e, bad("fraction must be in (0, 1]")
		}
		e.Min = v
	}
	for i := 1; i < len(f); i++ {
		switch n, isRTTs := strings.CutPrefix(f[i], "rtts<="); {
		case f[i] == "within" && i+1 < len(f):
			d, err := time.ParseDuration(f[i+1])
			if err != nil || d <= 0 {
				return e, bad("within needs a positive duration")
			}
			e.Within = d
			i++
		case isRTTs:
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || v <= 0 {
				return e, bad("rtts<= needs a positive number")
			}
			e.MaxRTTs = v
		default:
			return e, bad(fmt.Sprintf("unknown term %q (want \"within DURATION\" or \"rtts<=N\")", f[i]))
		}
	}
	if level == "none" && (e.Within > 0 || e.MaxRTTs > 0) {
		return e, bad("none takes no bounds")
	}
	return e, nil
}

// reached reports whether a run reached level: connected (and verified),
// through the path the level names.
func reached(level string, r ConnectResult) bool {
	if !r.Connected || r.Error != "" {
		return false
	}
	switch level {
	case "connect":
		return true
	case "direct", "relay":
		return r.Path == level
	}
	return false
}

// Kinds of Shortfall.
const (
	// ShortLevel: fewer runs reached the level (within the expectation's
	// time, if it has one) than the expectation requires.
	ShortLevel = "level"
	// ShortRTTs: the median time to connect exceeds the round-trip bound.
	ShortRTTs = "rtts"
	// ShortNoRTT: the round-trip bound cannot be checked: the connected
	// runs reported no round-trip time.
	ShortNoRTT = "no-rtt"
	// ShortFamily: a run connected from another address family than its
	// class's, or (behind NAT64) not through the NAT64 (familyShortfall).
	ShortFamily = "family"
)

// Shortfall is one way a pair fell short of its expectation.
type Shortfall struct {
	Kind   string // ShortLevel, ShortRTTs, ShortNoRTT or ShortFamily
	Detail string // for the report
}

// Check returns how a pair's summary (from summarize) falls short of the
// expectation; none: the pair met it.
func (e Expectation) Check(pr PairReport) []Shortfall {
	if e.Level == "none" {
		return nil
	}
	var out []Shortfall
	n := 0
	switch e.Level {
	case "connect":
		n = pr.Connected
	case "direct":
		n = pr.Direct
	case "relay":
		n = pr.Relay
	}
	if e.Within > 0 {
		n = 0
		if pr.InTime != nil {
			n = *pr.InTime
		}
	}
	min := e.Min
	if min == 0 {
		min = 1
	}
	if pr.Runs == 0 || float64(n) < min*float64(pr.Runs)-1e-9 {
		d := fmt.Sprintf("expected %s, got %d/%d connected (%d direct, %d relay)", e, pr.Connected, pr.Runs, pr.Direct, pr.Relay)
		if e.Within > 0 {
			d += fmt.Sprintf(", %d/%d %s within %v", n, pr.Runs, e.Level, e.Within)
		}
		out = append(out, Shortfall{Kind: ShortLevel, Detail: d})
	}
	if e.MaxRTTs > 0 && pr.Connected > 0 {
		switch {
		case pr.RTTP50 <= 0:
			out = append(out, Shortfall{Kind: ShortNoRTT, Detail: fmt.Sprintf(
				"no rtt_ms_p50 to check time_to_connect_ms_p50 %.1f ms against the bound of %g round trips", pr.P50, e.MaxRTTs)})
		case pr.P50/pr.RTTP50 > e.MaxRTTs:
			out = append(out, Shortfall{Kind: ShortRTTs, Detail: fmt.Sprintf(
				"time_to_connect_ms_p50 %.1f ms is %.2f round trips of rtt_ms_p50 %.1f ms, over the bound of %g",
				pr.P50, pr.P50/pr.RTTP50, pr.RTTP50, e.MaxRTTs)})
		}
	}
	return out
}

// RTTBound bounds, in round trips between the peers, the median time to
// connect of every pair whose two classes are both in Classes, whose
// topology is Topology and whose expectation's level is Level.
type RTTBound struct {
	// Classes both sides of a pair must be of. Required.
	Classes []Class `json:"classes"`
	// Topology the pair must have (TopoDifferent, ...). Empty: any.
	Topology string `json:"topology"`
	// Level the pair's expectation must have ("direct"). Empty: any.
	Level string `json:"level"`
	// MaxRTTsP50 is the bound on time_to_connect_ms_p50 / rtt_ms_p50.
	// Required (positive).
	MaxRTTsP50 float64 `json:"max_rtts_p50"`
}

func (b RTTBound) matches(p PairSpec, e Expectation) bool {
	return slices.Contains(b.Classes, p.A) && slices.Contains(b.Classes, p.B) &&
		(b.Topology == "" || b.Topology == p.Topology) && (b.Level == "" || b.Level == e.Level)
}

// Expectations maps a pair key ("A/B", or "A/B@same-nat") to what it must
// achieve; pairs without an entry get Default.
type Expectations struct {
	Default Expectation
	Pairs   map[string]Expectation
	// NATExempt lists classes whose NAT type antnode is not yet expected to
	// measure (the report still shows what it measured).
	NATExempt []Class
	// RTTBounds bound the median time to connect of the pairs they match
	// (see ForPair).
	RTTBounds []RTTBound
}

// For returns the expectation of a pair by key, without the RTT bounds.
func (x Expectations) For(key string) Expectation {
	if e, ok := x.Pairs[key]; ok {
		return e
	}
	return x.Default
}

// ForPair returns the expectation of a pair: its entry (or the default)
// with the tightest of the matching RTT bounds, unless the entry sets its
// own rtts<= bound.
func (x Expectations) ForPair(p PairSpec) Expectation {
	e := x.For(p.Key())
	if e.MaxRTTs > 0 {
		return e
	}
	for _, b := range x.RTTBounds {
		if b.matches(p, e) && (e.MaxRTTs == 0 || b.MaxRTTsP50 < e.MaxRTTs) {
			e.MaxRTTs = b.MaxRTTsP50
		}
	}
	return e
}

// WithoutRTTBounds returns the table with no round-trip bound at all:
// neither the table-wide rtt_bounds nor a pair's own rtts<=N (a lossy
// pass, where a retransmitted handshake packet is a loss timeout, not a
// round trip). The levels and shares stay.
func (x Expectations) WithoutRTTBounds() Expectations {
	out := x
	out.RTTBounds = nil
	out.Default.MaxRTTs = 0
	out.Pairs = make(map[string]Expectation, len(x.Pairs))
	for k, e := range x.Pairs {
		e.MaxRTTs = 0
		out.Pairs[k] = e
	}
	return out
}

// LoadExpectations reads the JSON expectation table:
// {"default": "none", "pairs": {"eim-eif/apdm": "direct", ...},
// "rtt_bounds": [{"classes": [...], "topology": "different-nat",
// "level": "direct", "max_rtts_p50": 3}], "nat_exempt": [...]}.
func LoadExpectations(path string) (Expectations, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Expectations{}, fmt.Errorf("testnet: expectations: %w", err)
	}
	return ParseExpectations(b)
}

// ParseExpectations parses the JSON expectation table.
func ParseExpectations(b []byte) (Expectations, error) {
	var raw struct {
		Default   string            `json:"default"`
		Pairs     map[string]string `json:"pairs"`
		NATExempt []Class           `json:"nat_exempt"`
		RTTBounds []RTTBound        `json:"rtt_bounds"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return Expectations{}, fmt.Errorf("testnet: expectations: %w: %w", ErrBadExpectation, err)
	}
	x := Expectations{Pairs: map[string]Expectation{}, NATExempt: raw.NATExempt, RTTBounds: raw.RTTBounds}
	for _, c := range raw.NATExempt {
		if !c.Valid() {
			return x, fmt.Errorf("testnet: expectations: nat_exempt: unknown class %q: %w", c, ErrBadExpectation)
		}
	}
	for i, rb := range raw.RTTBounds {
		bad := func(why string) error {
			return fmt.Errorf("testnet: expectations: rtt_bounds[%d]: %s: %w", i, why, ErrBadExpectation)
		}
		if len(rb.Classes) == 0 {
			return x, bad("no classes")
		}
		for _, c := range rb.Classes {
			if !c.Valid() {
				return x, bad(fmt.Sprintf("unknown class %q", c))
			}
		}
		switch rb.Topology {
		case "", TopoDifferent, TopoSameNAT, TopoSameCarrier, TopoSamePublic:
		default:
			return x, bad(fmt.Sprintf("unknown topology %q", rb.Topology))
		}
		switch rb.Level {
		case "", "connect", "relay", "direct":
		default:
			return x, bad(fmt.Sprintf("level %q must be connect, relay or direct", rb.Level))
		}
		if rb.MaxRTTsP50 <= 0 {
			return x, bad("max_rtts_p50 must be positive")
		}
	}
	var err error
	if raw.Default == "" {
		raw.Default = "none"
	}
	if x.Default, err = ParseExpectation(raw.Default); err != nil {
		return x, err
	}
	for k, v := range raw.Pairs {
		a, b, ok := strings.Cut(strings.Split(k, "@")[0], "/")
		if !ok || !Class(a).Valid() || !Class(b).Valid() {
			return x, fmt.Errorf("testnet: expectations: pair %q: want CLASS/CLASS[@topology]: %w", k, ErrBadExpectation)
		}
		if x.Pairs[k], err = ParseExpectation(v); err != nil {
			return x, err
		}
	}
	return x, nil
}
