package monitor

import (
	"fmt"
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

// MakeGuide writes the guide for findings and patterns on a node with
// facts. Each step is concrete; the node's own state adds context (its NAT
// class, its bootstraps).
func MakeGuide(facts NodeFacts, findings []Finding, patterns []Pattern) Guide {
	var g Guide
	seen := map[Cause]bool{}
	for _, f := range findings {
		if seen[f.Cause] {
			continue
		}
		seen[f.Cause] = true
		g.Steps = append(g.Steps, GuideStep{Cause: f.Cause, Title: f.Title + " (" + f.Scope + ")", Action: f.NextStep})
	}
	for _, p := range patterns {
		switch p.Kind {
		case "bootstrap_outlier":
			g.Steps = append(g.Steps, GuideStep{Title: "Bootstrap " + p.Key + " stands out",
				Action: p.Summary + ": check its load and network path, or take it out of --bootstrap-nodes."})
		case "nat_pair":
			g.Steps = append(g.Steps, GuideStep{Title: "NAT pairing " + p.Key + " keeps failing",
				Action: p.Summary + ": make sure a relay is available to these peers; see the findings for the cause."})
		case "failure_spike":
			g.Steps = append(g.Steps, GuideStep{Title: "Failure spike: " + p.Key,
				Action: p.Summary + ": compare with recent changes (deployments, firewall rules, bootstrap restarts)."})
		}
	}
	switch facts.NAT {
	case "apdm", "adm":
		if !seen[CauseBothSymmetric] {
			g.Steps = append(g.Steps, GuideStep{Title: "This node's NAT maps per destination",
				Action: "Direct connections work with peers behind endpoint-independent NATs (and by the birthday search with port-restricted ones); other peers are reached through the relay. A port forward for the node's UDP port makes it reachable directly."})
		}
	case "unknown":
		g.Steps = append(g.Steps, GuideStep{Title: "NAT type not measured yet",
			Action: "The node measures its NAT once registered with a bootstrap; run `antnode diagnose` for a full measurement."})
	}
	if len(g.Steps) == 0 {
		g.Steps = append(g.Steps, GuideStep{Title: "No problems found", Action: "Nothing to do."})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# antnode diagnosis\n\nRole: %s. NAT: %s.", orDash(facts.Role), orDash(facts.NAT))
	for _, bf := range facts.Bootstraps {
		state := "registered over " + bf.Transport
		if !bf.Registered {
			state = "not registered"
		}
		fmt.Fprintf(&b, " Bootstrap %s: %s.", bf.Label, state)
	}
	b.WriteString("\n\n## Findings\n\n")
	if len(findings) == 0 {
		b.WriteString("None.\n")
	}
	for _, f := range findings {
		fmt.Fprintf(&b, "- **%s** [%s, confidence %.0f%%] %s\n", f.Title, f.Severity, f.Confidence*100, f.Summary)
		for _, e := range f.Evidence {
			fmt.Fprintf(&b, "  - %s %s %s %s %s\n", e.Time.UTC().Format(time.RFC3339), e.Kind, e.Phase, e.Reason, e.Detail)
		}
	}
	if len(patterns) > 0 {
		b.WriteString("\n## Patterns\n\n")
		for _, p := range patterns {
			fmt.Fprintf(&b, "- %s (%s): %s\n", p.Kind, p.Key, p.Summary)
		}
	}
	b.WriteString("\n## What to do\n\n")
	for i, s := range g.Steps {
		fmt.Fprintf(&b, "%d. **%s**: %s\n", i+1, s.Title, s.Action)
	}
	g.Markdown = b.String()
	return g
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Diagnostics diagnoses the node from its store and facts.
func (m *Monitor) Diagnostics(facts NodeFacts, now time.Time) DiagReport {
	attempts := m.store.Attempts(AttemptFilter{Limit: 20_000})
	events := m.store.NodeEvents(0)
	findings := Diagnose(DiagInput{Attempts: attempts, NodeEvents: events, Facts: facts, Now: now})
	boots := m.boots.snapshot()
	patterns := Patterns(attempts, boots, now, PatternConfig{})
	if findings == nil {
		findings = []Finding{}
	}
	if patterns == nil {
		patterns = []Pattern{}
	}
	return DiagReport{Generated: now, Role: facts.Role, NAT: facts.NAT, Findings: findings, Patterns: patterns,
		Bootstraps: boots, Guide: MakeGuide(facts, findings, patterns)}
}
