package main

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/traversal"
)

// The operator files in deploy/: the alert rules pass promtool's check and
// their own unit tests, every metric the rules and the Grafana dashboard
// query is one a node exports, and the example systemd unit's command line
// starts a bootstrap node.

const deployDir = "../../deploy"

func TestAlertRules(t *testing.T) {
	promtool := testkit.NeedTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join(deployDir, "prometheus")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// exportedMetrics returns the name of every metric family a bootstrap or
// peer node can export, from the collectors' descriptions (a vector with
// no observation yet is absent from /metrics but described).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mon, err := monitor.New(monitor.Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	n, err := traversal.New(traversal.Config{Identity: id, Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	rs, err := startRelay(nodeOptions{}, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freePorts(t))), nil, mon, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	reg.MustRegister(n.Collector(), rs.Collector())
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{"up": true} // Prometheus adds up per target
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// queriedMetrics returns the metric names in a PromQL expression: the
// identifiers followed by a selector, a range or a closing parenthesis,
// less PromQL's own words, with a histogram's series suffixes removed.
func queriedMetrics(expr string) []string {
	ident := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promql := map[string]bool{"sum": true, "by": true, "rate": true, "histogram_quantile": true, "and": true, "or": true,
		"count": true, "min": true, "max": true, "avg": true, "le": true, "without": true, "irate": true, "increase": true,
		"unless": true, "on": true, "ignoring": true, "max_over_time": true, "min_over_time": true}
	var out []string
	// Drop label matchers, strings and durations first.
	clean := regexp.MustCompile(`\{[^}]*\}|"[^"]*"|\[[^\]]*\]`).ReplaceAllString(expr, " ")
	clean = regexp.MustCompile(`\b(by|without|on|ignoring)\s*\([^)]*\)`).ReplaceAllString(clean, " ")
	for _, id := range ident.FindAllString(clean, -1) {
		if promql[id] || strings.HasPrefix(id, "$") {
			continue
		}
		if _, err := strconv.ParseFloat(id, 64); err == nil {
			continue
		}
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			if s, ok := strings.CutSuffix(id, suf); ok && !strings.HasSuffix(id, "_total") {
				id = s
				break
			}
		}
		out = append(out, id)
	}
	return out
}

func TestQueriedMetrics(t *testing.T) {
	tests := []struct {
		name, expr string
		want       []string
	}{
		{"ratio with matchers", `sum(rate(nat_results_total{result="success"}[5m])) / sum(rate(nat_results_total[5m]))`, []string{"nat_results_total", "nat_results_total"}},
		{"histogram", `histogram_quantile(0.95, sum by (le, phase) (rate(antnode_phase_duration_seconds_bucket{instance=~"$instance"}[5m])))`, []string{"antnode_phase_duration_seconds"}},
		{"comparison", `up{job="antnode-bootstrap"} == 0`, []string{"up"}},
		{"or", `antnode_relay_allocations > 500 or x_total > 1/60`, []string{"antnode_relay_allocations", "x_total"}},
		{"and on, unless on", "a <= 0.1 * max_over_time(a[1h]) and on (job, instance) b_total > 0 unless on (instance) c", []string{"a", "a", "b_total", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := queriedMetrics(tt.expr)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("%q: got %v, want %v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestDeployQueriesExportedMetrics(t *testing.T) {
	names := exportedMetrics(t)
	var exprs []string
	b, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// The expressions are the "expr:" blocks (a line or a literal block).
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		v, ok := strings.CutPrefix(l, "expr:")
		if !ok {
			continue
		}
		if v = strings.TrimSpace(v); v != "|" {
			exprs = append(exprs, v)
			continue
		}
		// The block is the following lines indented deeper than "expr:".
		indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
		var block []string
		for i+1 < len(lines) && len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > indent {
			i++
			block = append(block, lines[i])
		}
		exprs = append(exprs, strings.Join(block, "\n"))
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct{ Query any }
		}
	}
	b, err = os.ReadFile(filepath.Join(deployDir, "grafana", "antnode.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana dashboard: %v", err)
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("found only %d expressions", len(exprs))
	}
	for _, e := range exprs {
		ms := queriedMetrics(e)
		if len(ms) == 0 {
			t.Errorf("no metric in %q", e)
		}
		for _, m := range ms {
			if !names[m] {
				t.Errorf("%q queries %s, which no node exports", e, m)
			}
		}
	}
}

// The systemd unit's exact ExecStart is run, installed from the .deb, on
// its wildcard address in a namespace as its user, by
// deploy/dist's TestDebInstallsOnACleanRoot.

// TestScrapeConfig: the shipped scrape configuration passes promtool,
// scrapes with a bearer token from a file, and provides every job the
// alert rules select on.
func TestScrapeConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	jobs := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*- job_name:\s*(\S+)`).FindAllStringSubmatch(string(b), -1) {
		jobs[m[1]] = true
	}
	if len(jobs) == 0 {
		t.Fatal("no jobs")
	}
	if n := strings.Count(string(b), "credentials_file:"); n != len(jobs) || !strings.Contains(string(b), "type: Bearer") {
		t.Fatalf("%d jobs, %d with a bearer token file", len(jobs), n)
	}
	// The fleet is found through the metrics SRV name, never the peers'
	// _antnode._udp one (Prometheus would scrape the QUIC UDP port), and
	// its instance label is the SRV target's name.
	if !jobs["antnode-fleet"] {
		t.Errorf("no antnode-fleet job (jobs: %v)", jobs)
	}
	for _, want := range []string{"dns_sd_configs:", "type: SRV", "'_antnode-metrics._tcp.", "[__meta_dns_srv_record_target]", "target_label: instance"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("prometheus.yml lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*- names:.*_antnode\._udp`).Match(b) {
		t.Error("prometheus.yml scrapes _antnode._udp: the QUIC port, not the metrics one")
	}
	rules, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`job\s*=~?\s*"([^"]+)"`).FindAllStringSubmatch(string(rules), -1) {
		if !jobs[m[1]] {
			t.Errorf("alerts.yml selects job %q, which prometheus.yml does not scrape (jobs: %v)", m[1], jobs)
		}
	}
	promtool := testkit.NeedTool(t, "promtool")
	// promtool checks that the token file exists: point it at one.
	dir := t.TempDir()
	token := filepath.Join(dir, "antnode-token")
	os.WriteFile(token, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	cfg := strings.ReplaceAll(string(b), "/etc/prometheus/antnode-token", token)
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600)
	alerts, _ := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yml"))
	os.WriteFile(filepath.Join(dir, "alerts.yml"), alerts, 0o600)
	if out, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}

// TestDashboardInstanceVariable: the Grafana dashboard's instance variable
// lists every scraped node of the chosen jobs (bootstraps too, which
// export no nat_attempts_total), several at once or All, and every
// selector of every panel filters by it.
func TestDashboardInstanceVariable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "antnode.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name, Query       string
				Multi, IncludeAll bool
				AllValue          string
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	vars := map[string]int{}
	for i, v := range dash.Templating.List {
		vars[v.Name] = i
	}
	for _, name := range []string{"job", "instance"} {
		i, ok := vars[name]
		if !ok {
			t.Fatalf("no %s variable", name)
		}
		v := dash.Templating.List[i]
		if !v.Multi || !v.IncludeAll || !strings.HasPrefix(v.Query, "label_values(up{") {
			t.Errorf("variable %s: multi %v, All %v, query %q", name, v.Multi, v.IncludeAll, v.Query)
		}
	}
	if vars["job"] > vars["instance"] || !strings.Contains(dash.Templating.List[vars["instance"]].Query, `job=~"$job"`) {
		t.Error("the instance variable does not follow the job variable")
	}
	sel := regexp.MustCompile(`\{[^}]*\}`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			ss := sel.FindAllString(tg.Expr, -1)
			if len(ss) != len(queriedMetrics(tg.Expr)) {
				t.Errorf("panel %q: a metric without a selector in %q", p.Title, tg.Expr)
			}
			for _, s := range ss {
				if !strings.Contains(s, `instance=~"$instance"`) || !strings.Contains(s, `job=~"$job"`) {
					t.Errorf("panel %q: %s does not filter by $job and $instance", p.Title, s)
				}
			}
		}
	}
}
