package testnet

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Expectation is what a pair must achieve: a level and the share of runs
// that must reach it.
type Expectation struct {
	// Level is "none" (nothing required), "connect" (connected, any
	// path), "relay" (connected through the relay) or "direct".
	Level string
	// Min is the share of runs (0..1] that must reach Level. Zero: 1.
	Min float64
}

func (e Expectation) String() string {
	if e.Min == 0 || e.Min == 1 {
		return e.Level
	}
	return fmt.Sprintf("%s>=%g", e.Level, e.Min)
}

// ParseExpectation parses "direct", "connect", "relay", "none" with an
// optional ">=FRACTION" (e.g. "direct>=0.9").
func ParseExpectation(s string) (Expectation, error) {
	level, frac, hasFrac := strings.Cut(strings.TrimSpace(s), ">=")
	e := Expectation{Level: level, Min: 1}
	switch level {
	case "none", "connect", "relay", "direct":
	default:
		return e, fmt.Errorf("testnet: expectation %q: level must be none, connect, relay or direct", s)
	}
	if hasFrac {
		f, err := strconv.ParseFloat(frac, 64)
		if err != nil || f <= 0 || f > 1 {
			return e, fmt.Errorf("testnet: expectation %q: fraction must be in (0, 1]", s)
		}
		e.Min = f
	}
	return e, nil
}

// Met reports whether a pair's results satisfy the expectation.
func (e Expectation) Met(runs, connected, direct, relay int) bool {
	if runs == 0 {
		return e.Level == "none"
	}
	min := e.Min
	if min == 0 {
		min = 1
	}
	share := func(n int) bool { return float64(n) >= min*float64(runs)-1e-9 }
	switch e.Level {
	case "none":
		return true
	case "connect":
		return share(connected)
	case "relay":
		return share(relay)
	case "direct":
		return share(direct)
	}
	return false
}

// Expectations maps a pair key ("A/B", or "A/B@same-nat") to what it must
// achieve; pairs without an entry get Default.
type Expectations struct {
	Default Expectation
	Pairs   map[string]Expectation
	// NATExempt lists classes whose NAT type antnode is not yet expected to
	// measure (the report still shows what it measured).
	NATExempt []Class
}

// For returns the expectation of a pair.
func (x Expectations) For(key string) Expectation {
	if e, ok := x.Pairs[key]; ok {
		return e
	}
	return x.Default
}

// LoadExpectations reads the JSON expectation table:
// {"default": "none", "pairs": {"eim-eif/apdm": "direct", ...}}.
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
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return Expectations{}, fmt.Errorf("testnet: expectations: %w", err)
	}
	x := Expectations{Pairs: map[string]Expectation{}, NATExempt: raw.NATExempt}
	for _, c := range raw.NATExempt {
		if !c.Valid() {
			return x, fmt.Errorf("testnet: expectations: nat_exempt: unknown class %q", c)
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
			return x, fmt.Errorf("testnet: expectations: pair %q: want CLASS/CLASS[@topology]", k)
		}
		if x.Pairs[k], err = ParseExpectation(v); err != nil {
			return x, err
		}
	}
	return x, nil
}
