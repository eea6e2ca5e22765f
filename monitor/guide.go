package monitor

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// GuideStep is one thing for the operator to do.
type GuideStep struct {
	Cause  Cause  `json:"cause,omitempty"`
	Title  string `json:"title"`
	Action string `json:"action"`
}

// Guide is the troubleshooting guide: the steps, and the same as Markdown.
type Guide struct {
	Steps    []GuideStep `json:"steps"`
	Markdown string      `json:"markdown"`
}

// DiagReport is the diagnosis of a node: /api/v1/diagnostics.
type DiagReport struct {
	Generated  time.Time        `json:"generated"`
	Role       string           `json:"role"`
	NAT        string           `json:"nat"`
	Findings   []Finding        `json:"findings"`
	Patterns   []Pattern        `json:"patterns"`
	Bootstraps []BootstrapStats `json:"bootstraps"`
	Guide      Guide            `json:"guide"`
}

// Failures is what failed in a window: the attempts that ended in
// failure, by reason.
type Failures struct {
	Window   time.Duration
	Count    int
	ByReason map[Reason]int
}

// FailuresIn counts the attempts that failed in the window before now
// (zero window: DefaultWindow).
func FailuresIn(attempts []AttemptRecord, now time.Time, window time.Duration) Failures {
	if window <= 0 {
		window = DefaultWindow
	}
	f := Failures{Window: window, ByReason: map[Reason]int{}}
	since := now.Add(-window)
	for i := range attempts {
		a := &attempts[i]
		if a.End.IsZero() || a.End.Before(since) || a.Outcome == OutcomeOK {
			continue
		}
		f.Count++
		f.ByReason[a.Reason]++
	}
	return f
}

// MakeGuide writes the guide for findings and patterns on a node with
// facts, and the attempts that failed. Each step is concrete; the node's
// own state adds context (its NAT class, its bootstraps). It never says
// "no problems" while attempts failed: it says what failed and what is
// unknown.
func MakeGuide(facts NodeFacts, findings []Finding, patterns []Pattern, failed Failures) Guide {
	var g Guide
	if failed.Count > 0 {
		g.Steps = append(g.Steps, failedStep(findings, failed))
	}
	seen := map[Cause]bool{}
	for _, f := range findings {
		if seen[f.Cause] {
			continue
		}
		seen[f.Cause] = true
		g.Steps = append(g.Steps, GuideStep{Cause: f.Cause, Title: f.Title + " (" + f.Scope + ")", Action: f.NextStep})
	}
	g.Steps = append(g.Steps, patternSteps(patterns)...)
	if s, ok := natStep(facts, seen); ok {
		g.Steps = append(g.Steps, s)
	}
	if len(g.Steps) == 0 {
		g.Steps = append(g.Steps, GuideStep{Title: "No problems found", Action: "Nothing to do."})
	}
	g.Markdown = guideMarkdown(facts, findings, patterns, failed, g.Steps)
	return g
}

// failedStep says what failed (attempts by reason) and what the evidence
// does not establish about it.
func failedStep(findings []Finding, failed Failures) GuideStep {
	reasons := make([]Reason, 0, len(failed.ByReason))
	for r := range failed.ByReason {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	var what []string
	for _, r := range reasons {
		name := r.String()
		if r == ReasonNone {
			name = "no reason recorded"
		}
		what = append(what, fmt.Sprintf("%s ×%d", name, failed.ByReason[r]))
	}
	var unknown []string
	for _, f := range findings {
		if len(f.Attempts) > 0 && f.Unknown != "" && !slices.Contains(unknown, f.Unknown) {
			unknown = append(unknown, f.Title+": "+f.Unknown)
		}
	}
	action := "Failed: " + strings.Join(what, ", ") + ". Each finding names the cause its evidence supports."
	if len(unknown) > 0 {
		action += " Unknown: " + strings.Join(unknown, " ")
	}
	return GuideStep{Title: fmt.Sprintf("%s failed in the last %s", plural(failed.Count, "attempt"), window(failed.Window)), Action: action}
}

func patternSteps(patterns []Pattern) []GuideStep {
	var out []GuideStep
	for _, p := range patterns {
		switch p.Kind {
		case "bootstrap_outlier":
			out = append(out, GuideStep{Title: "Bootstrap " + p.Key + " stands out",
				Action: p.Summary + ": check its load and network path, or take it out of --bootstrap-nodes."})
		case "nat_pair":
			out = append(out, GuideStep{Title: "NAT pairing " + p.Key + " keeps failing",
				Action: p.Summary + ": make sure a relay is available to these peers; see the findings for the cause."})
		case "failure_spike":
			out = append(out, GuideStep{Title: "Failure spike: " + p.Key,
				Action: p.Summary + ": compare with recent changes (deployments, firewall rules, bootstrap restarts)."})
		}
	}
	return out
}

// natStep is the step the node's own NAT class calls for, if any. A
// bootstrap does not measure its own NAT: its class is unknown, and that
// is no step.
func natStep(facts NodeFacts, seen map[Cause]bool) (GuideStep, bool) {
	switch facts.NAT {
	case "apdm", "adm":
		if !seen[CauseBothSymmetric] {
			return GuideStep{Title: "This node's NAT maps per destination",
				Action: "Direct connections work with peers behind endpoint-independent NATs (and by the birthday search with port-restricted ones); other peers are reached through the relay. A port forward for the node's UDP port makes it reachable directly."}, true
		}
	case "unknown":
		if facts.Role != "bootstrap" {
			return GuideStep{Title: "NAT type not measured yet",
				Action: "The node measures its NAT once registered with a bootstrap; run `antnode diagnose` for a full measurement."}, true
		}
	}
	return GuideStep{}, false
}

func guideMarkdown(facts NodeFacts, findings []Finding, patterns []Pattern, failed Failures, steps []GuideStep) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# antnode diagnosis\n\nRole: %s. NAT: %s.", orDash(facts.Role), orDash(facts.NAT))
	for _, bf := range facts.Bootstraps {
		state := "registered over " + bf.Transport
		if !bf.Registered {
			state = "not registered"
		}
		fmt.Fprintf(&b, " Bootstrap %s: %s.", bf.Label, state)
	}
	if failed.Count > 0 {
		fmt.Fprintf(&b, " Failed attempts in the last %s: %d.", window(failed.Window), failed.Count)
	}
	b.WriteString("\n\n## Findings\n\n")
	if len(findings) == 0 {
		b.WriteString("None.\n")
	}
	for _, f := range findings {
		fmt.Fprintf(&b, "- **%s** [%s, confidence %.0f%% from %s] %s\n", f.Title, f.Severity, f.Confidence*100,
			plural(f.Sources, "independent source"), f.Summary)
		for _, e := range f.Evidence {
			fmt.Fprintf(&b, "  - %s\n", evidenceLine(e))
		}
		for _, e := range f.Against {
			fmt.Fprintf(&b, "  - against: %s\n", evidenceLine(e))
		}
		if f.Unknown != "" {
			fmt.Fprintf(&b, "  - unknown: %s\n", f.Unknown)
		}
	}
	if len(patterns) > 0 {
		b.WriteString("\n## Patterns\n\n")
		for _, p := range patterns {
			fmt.Fprintf(&b, "- %s (%s): %s\n", p.Kind, p.Key, p.Summary)
		}
	}
	b.WriteString("\n## What to do\n\n")
	for i, s := range steps {
		fmt.Fprintf(&b, "%d. **%s**: %s\n", i+1, s.Title, s.Action)
	}
	return b.String()
}

// evidenceLine is one evidence item, its empty fields left out.
func evidenceLine(e Evidence) string {
	parts := []string{e.Time.UTC().Format(time.RFC3339), e.Kind}
	for _, s := range []string{e.Phase, e.Reason, e.Detail} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, " ")
}

// plural is "1 word" or "n words".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// window renders a window: "1h", "30m", else Go's form.
func window(d time.Duration) string {
	switch {
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Diagnostics diagnoses the node from its store and facts.
func (m *Monitor) Diagnostics(facts NodeFacts, now time.Time) DiagReport {
	return m.DiagnosticsWith(facts, now, nil)
}

// DiagnosticsWith diagnoses the node from its store, facts and the
// results of tests made for this diagnosis.
func (m *Monitor) DiagnosticsWith(facts NodeFacts, now time.Time, probes []Probe) DiagReport {
	attempts := m.store.Attempts(AttemptFilter{Limit: 20_000})
	events := m.store.NodeEvents(0)
	findings := Diagnose(DiagInput{Attempts: attempts, NodeEvents: events, Facts: facts, Probes: probes, Now: now})
	failed := FailuresIn(attempts, now, DefaultWindow)
	boots := m.boots.snapshot()
	patterns := Patterns(attempts, boots, now, PatternConfig{})
	if findings == nil {
		findings = []Finding{}
	}
	if patterns == nil {
		patterns = []Pattern{}
	}
	return DiagReport{Generated: now, Role: facts.Role, NAT: facts.NAT, Findings: findings, Patterns: patterns,
		Bootstraps: boots, Guide: MakeGuide(facts, findings, patterns, failed)}
}
