package monitor

import "math"

// Confidence: how sure a finding is, from what was observed and tested.
//
// Every finding collects observations: for it (an attempt that failed with
// its reason, a test that showed it) and against it (a test that showed
// the opposite: a bootstrap that answered over UDP contradicts "UDP
// blocked"). Each observation names its source, the thing that observed
// it (a peer's attempts, a bootstrap's registration, one probe to one
// bootstrap); repeats from one source are one observation, at the
// strength of the strongest. Confidence is then
//
//	for     = 1 - Π over sources for it     (1 - strength)
//	against = 1 - Π over sources against it (1 - strength)
//	confidence = for × (1 - against), at most 0.99, to two places
//
// so it grows with independent observations, falls with contradicting
// ones, and is zero when nothing supports the finding.

// Strengths of one observation: how directly it shows its cause.
const (
	// StrengthStated: the other party said so (a bootstrap answered
	// "unknown peer", a key that did not verify, a relay refused on
	// quota).
	StrengthStated = 0.9
	// StrengthMeasured: a test of this node's showed it (TCP to a
	// bootstrap answered where UDP to it did not; checks were sent and
	// none came back).
	StrengthMeasured = 0.75
	// StrengthInferred: consistent with the cause, but other causes look
	// the same (a timeout).
	StrengthInferred = 0.5
)

// maxConf: never certain.
const maxConf = 0.99

// Observation is one observation for or against a finding.
type Observation struct {
	// Source is what observed it; observations from one source are not
	// independent and count once.
	Source string
	// Strength is in (0, 1): one of the Strength constants.
	Strength float64
	// Against: the observation contradicts the finding.
	Against bool
}

// Confidence combines observations into a finding's confidence (see the
// comment above): independent sources for it, discounted by those
// against it.
func Confidence(obs []Observation) float64 {
	forS, againstS := map[string]float64{}, map[string]float64{}
	for _, o := range obs {
		m := forS
		if o.Against {
			m = againstS
		}
		m[o.Source] = max(m[o.Source], min(max(o.Strength, 0), 1))
	}
	c := combine(forS) * (1 - combine(againstS))
	return math.Round(min(c, maxConf)*100) / 100
}

// combine is 1 - Π(1 - w) over the sources' strengths.
func combine(m map[string]float64) float64 {
	miss := 1.0
	for _, w := range m {
		miss *= 1 - w
	}
	return 1 - miss
}
