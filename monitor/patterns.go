package monitor

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Pattern is a finding about many attempts at once: a spike of failures,
// a NAT pairing that keeps failing, a bootstrap that stands out.
type Pattern struct {
	Kind     string   `json:"kind"` // failure_spike, nat_pair, bootstrap_outlier
	Key      string   `json:"key"`  // the reason, NAT pair or bootstrap
	Summary  string   `json:"summary"`
	Evidence []string `json:"evidence"`
}

// PatternConfig tunes the analyzer.
type PatternConfig struct {
	// Window is the recent window compared with the ones before it.
	// Zero: 5 min.
	Window time.Duration
	// History is how many earlier windows form the baseline. Zero: 6.
	History int
}

// Patterns analyses the attempts (any order) and the bootstraps' request
// statistics at now. It is a pure function.
func Patterns(attempts []AttemptRecord, boots []BootstrapStats, now time.Time, cfg PatternConfig) []Pattern {
	if cfg.Window <= 0 {
		cfg.Window = 5 * time.Minute
	}
	if cfg.History <= 0 {
		cfg.History = 6
	}
	var out []Pattern
	recentStart := now.Add(-cfg.Window)
	baseStart := recentStart.Add(-time.Duration(cfg.History) * cfg.Window)
	recent := map[string]int{}
	base := map[string]int{}
	type pairStat struct{ total, failed int }
	pairs := map[string]*pairStat{}
	for i := range attempts {
		a := &attempts[i]
		if a.End.IsZero() || a.End.Before(baseStart) {
			continue
		}
		failed := a.Outcome != OutcomeOK
		if a.End.After(recentStart) {
			k := natPair(a.NAT, a.PeerNAT)
			ps := pairs[k]
			if ps == nil {
				ps = &pairStat{}
				pairs[k] = ps
			}
			ps.total++
			if failed {
				ps.failed++
				recent[a.Reason.String()]++
			}
		} else if failed {
			base[a.Reason.String()]++
		}
	}
	for _, reason := range sortedKeys(recent) {
		n := recent[reason]
		avg := float64(base[reason]) / float64(cfg.History)
		if n >= 3 && float64(n) > 3*avg {
			out = append(out, Pattern{Kind: "failure_spike", Key: reason,
				Summary:  fmt.Sprintf("%d failures with reason %s in the last %v, against %.1f per window before", n, reason, cfg.Window, avg),
				Evidence: []string{fmt.Sprintf("recent=%d", n), fmt.Sprintf("baseline=%.1f", avg)}})
		}
	}
	for _, k := range sortedKeys(pairs) {
		ps := pairs[k]
		if ps.total >= 3 && ps.failed*2 >= ps.total {
			out = append(out, Pattern{Kind: "nat_pair", Key: k,
				Summary:  fmt.Sprintf("%d of %d attempts between NAT classes %s failed in the last %v", ps.failed, ps.total, k, cfg.Window),
				Evidence: []string{fmt.Sprintf("failed=%d", ps.failed), fmt.Sprintf("total=%d", ps.total)}})
		}
	}
	out = append(out, bootstrapOutliers(boots)...)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// bootstrapOutliers finds a bootstrap whose response time is far above the
// others' or whose requests fail often.
func bootstrapOutliers(boots []BootstrapStats) []Pattern {
	var out []Pattern
	var rtts []time.Duration
	for _, b := range boots {
		if b.Requests > 0 && b.MeanRTT > 0 {
			rtts = append(rtts, b.MeanRTT)
		}
	}
	slices.Sort(rtts)
	for _, b := range slices.SortedFunc(slices.Values(boots), func(x, y BootstrapStats) int { return cmp.Compare(x.Label, y.Label) }) {
		if b.Requests >= 4 && b.Failures*4 >= b.Requests {
			out = append(out, Pattern{Kind: "bootstrap_outlier", Key: b.Label,
				Summary:  fmt.Sprintf("bootstrap %s failed %d of %d requests", b.Label, b.Failures, b.Requests),
				Evidence: []string{fmt.Sprintf("failures=%d", b.Failures), fmt.Sprintf("requests=%d", b.Requests)}})
			continue
		}
		if len(rtts) >= 2 && b.MeanRTT > 3*rtts[0] && b.MeanRTT > 50*time.Millisecond {
			out = append(out, Pattern{Kind: "bootstrap_outlier", Key: b.Label,
				Summary:  fmt.Sprintf("bootstrap %s answers in %v on average, the fastest in %v", b.Label, b.MeanRTT.Round(time.Millisecond), rtts[0].Round(time.Millisecond)),
				Evidence: []string{"mean_rtt=" + b.MeanRTT.String(), "fastest=" + rtts[0].String()}})
		}
	}
	return out
}

// BootstrapStats summarises one bootstrap's requests as seen by this node.
type BootstrapStats struct {
	Label    string        `json:"label"`
	Requests int           `json:"requests"`
	Failures int           `json:"failures"`
	MeanRTT  time.Duration `json:"mean_rtt_ns"` // exponentially weighted
}

// bootTable keeps BootstrapStats per label (bounded: labels are indexes).
type bootTable struct {
	mu sync.Mutex
	m  map[string]*BootstrapStats
}

const maxBootLabels = 64

func (t *bootTable) observe(ev *Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*BootstrapStats{}
	}
	s := t.m[ev.Bootstrap]
	if s == nil {
		if len(t.m) >= maxBootLabels {
			return
		}
		s = &BootstrapStats{Label: ev.Bootstrap}
		t.m[ev.Bootstrap] = s
	}
	s.Requests++
	if ev.Outcome != OutcomeOK {
		s.Failures++
		return
	}
	if ev.Duration > 0 {
		if s.MeanRTT == 0 {
			s.MeanRTT = ev.Duration
		} else {
			s.MeanRTT = (7*s.MeanRTT + ev.Duration) / 8
		}
	}
}

func (t *bootTable) snapshot() []BootstrapStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]BootstrapStats, 0, len(t.m))
	for _, s := range t.m {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(x, y BootstrapStats) int { return strings.Compare(x.Label, y.Label) })
	return out
}
