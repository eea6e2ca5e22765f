package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/antnode/antnode/internal/boundedfile"
	"github.com/antnode/antnode/monitor"
)

// monitorFlags are the monitoring flags of a long-running node.
type monitorFlags struct {
	addr         addrFlag
	tokenFile    string
	auditLog     string
	samplingRate float64
	fixed        bool
	storeSize    int
	retention    time.Duration
	qlogDir      string

	allowedHosts        string
	maxStreams          int
	maxStreamsPerClient int

	exportInterval time.Duration
	influxURL      string
	influxDB       string
	influxUser     string
	influxPassFile string
	cwNamespace    string
	cwRegion       string
	cwEndpoint     string
}

func (f *monitorFlags) register(fs *flag.FlagSet) {
	f.addr = addrFlag{value: defaultMetricsAddr}
	fs.Var(&f.addr, "metrics-addr", "HTTP address of /metrics, /healthz, /readyz and the /api/v1/ JSON API (\"off\": none; when the default port is taken, the next free one of the 10 above it)")
	fs.StringVar(&f.tokenFile, "metrics-token-file", "", "file holding the bearer token required on /metrics and /api/v1/ (empty: no token, and POST /api/v1/connect is off)")
	fs.StringVar(&f.allowedHosts, "http-allowed-hosts", "", "further names the HTTP surface answers to in the Host header, comma-separated (always: its listen address and loopback names; others get 421)")
	fs.IntVar(&f.maxStreams, "http-max-streams", 8, "live dashboard streams at once (1-1024)")
	fs.IntVar(&f.maxStreamsPerClient, "http-max-streams-per-client", 2, "live dashboard streams at once from one client IP (1 to --http-max-streams)")
	fs.StringVar(&f.auditLog, "audit-log", "", "file that security events (authentication failures, rate limits, refused requests, relay allocations) are appended to as JSON (empty: the main log)")
	fs.Float64Var(&f.samplingRate, "sampling-rate", 0.01, "fraction of successful attempts whose full event detail is kept (failures: all), at the reference load (0-1, above 0)")
	fs.BoolVar(&f.fixed, "sampling-fixed", false, "keep the sampling rate fixed instead of adapting it to load")
	fs.IntVar(&f.storeSize, "store-size", 10_000, "recent attempts kept in memory for the API and diagnostics (about 1.1 KB each; 1-1000000)")
	fs.DurationVar(&f.retention, "store-retention", time.Hour, "how long attempts stay in the store (1s-720h)")
	fs.StringVar(&f.qlogDir, "qlog-dir", "", "write a qlog trace of every peer QUIC connection into this directory (addresses sanitised like the logs)")
	fs.DurationVar(&f.exportInterval, "export-interval", 30*time.Second, "how often metrics are pushed to InfluxDB or CloudWatch (1s-24h)")
	fs.StringVar(&f.influxURL, "influxdb-url", "", "push metrics to this InfluxDB 1.x server (http://host:8086; empty: off)")
	fs.StringVar(&f.influxDB, "influxdb-db", "antnode", "InfluxDB database")
	fs.StringVar(&f.influxUser, "influxdb-user", "", "InfluxDB user (empty: no authentication)")
	fs.StringVar(&f.influxPassFile, "influxdb-password-file", "", "file holding the InfluxDB user's password")
	fs.StringVar(&f.cwNamespace, "cloudwatch-namespace", "", "push metrics to CloudWatch under this namespace (empty: off; credentials from the AWS default chain)")
	fs.StringVar(&f.cwRegion, "cloudwatch-region", "", "CloudWatch region (empty: AWS_REGION or the shared config)")
	fs.StringVar(&f.cwEndpoint, "cloudwatch-endpoint", "", "CloudWatch endpoint URL override (a VPC endpoint; empty: the region's)")
}

func (f *monitorFlags) validate() error {
	if f.addr.value != "off" {
		if _, _, err := net.SplitHostPort(f.addr.value); err != nil {
			return fmt.Errorf("--metrics-addr %q: %w", f.addr.value, err)
		}
	}
	if f.samplingRate <= 0 || f.samplingRate > 1 || math.IsNaN(f.samplingRate) {
		return fmt.Errorf("--sampling-rate %v: want a fraction in (0, 1]", f.samplingRate)
	}
	if err := firstErr(inRange("store-size", f.storeSize, 1, maxStoreSize),
		inRange("store-retention", f.retention, time.Second, maxRetention),
		inRange("export-interval", f.exportInterval, time.Second, maxExportInterval),
		inRange("http-max-streams", f.maxStreams, 1, monitor.MaxStreamsLimit),
		inRange("http-max-streams-per-client", f.maxStreamsPerClient, 1, f.maxStreams)); err != nil {
		return err
	}
	for _, h := range splitHosts(f.allowedHosts) {
		if strings.ContainsAny(h, ":/ []") {
			return fmt.Errorf("--http-allowed-hosts %q: want names without a port, comma-separated", h)
		}
	}
	if f.influxURL != "" {
		if _, err := monitor.NewInfluxSink(monitor.InfluxConfig{URL: f.influxURL, Database: f.influxDB}); err != nil {
			return fmt.Errorf("--influxdb-url: %w", err)
		}
	}
	return nil
}

// startExporters starts the push exporters that are configured; the
// returned func stops them.
func (f *monitorFlags) startExporters(node string, reg prometheus.Gatherer, log *slog.Logger) (func(), error) {
	var exs []*monitor.Exporter
	stop := func() {
		for _, e := range exs {
			e.Close()
		}
	}
	regr, _ := reg.(prometheus.Registerer)
	if f.influxURL != "" {
		pass := ""
		if f.influxPassFile != "" {
			b, err := boundedfile.Read(f.influxPassFile, boundedfile.MaxSecret)
			if err != nil {
				return stop, fmt.Errorf("--influxdb-password-file: %w", err)
			}
			pass = strings.TrimSpace(string(b))
		}
		sink, err := monitor.NewInfluxSink(monitor.InfluxConfig{URL: f.influxURL, Database: f.influxDB,
			Username: f.influxUser, Password: pass, Tags: map[string]string{"node": node}})
		if err != nil {
			return stop, fmt.Errorf("--influxdb-url: %w", err)
		}
		e, err := monitor.NewExporter(monitor.ExporterConfig{Name: "influxdb", Gatherer: reg, Sink: sink,
			Interval: f.exportInterval, Registerer: regr, Logger: log})
		if err != nil {
			return stop, err
		}
		exs = append(exs, e)
		log.Info("exporting metrics", "to", "influxdb", "interval", f.exportInterval)
	}
	if f.cwNamespace != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var opts []func(*awsconfig.LoadOptions) error
		if f.cwRegion != "" {
			opts = append(opts, awsconfig.WithRegion(f.cwRegion))
		}
		ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return stop, fmt.Errorf("--cloudwatch-namespace: AWS configuration: %w", err)
		}
		sink, err := monitor.NewCloudWatchSink(monitor.CloudWatchConfig{Namespace: f.cwNamespace, Region: ac.Region,
			Credentials: ac.Credentials, Endpoint: f.cwEndpoint, Dimensions: map[string]string{"node": node}})
		if err != nil {
			return stop, fmt.Errorf("--cloudwatch-namespace: %w", err)
		}
		e, err := monitor.NewExporter(monitor.ExporterConfig{Name: "cloudwatch", Gatherer: reg, Sink: sink,
			Interval: f.exportInterval, Registerer: regr, Logger: log})
		if err != nil {
			return stop, err
		}
		exs = append(exs, e)
		log.Info("exporting metrics", "to", "cloudwatch", "region", ac.Region, "interval", f.exportInterval)
	}
	return stop, nil
}

// readToken reads the bearer token file: one line, at least 16 bytes.
func readToken(path string, log *slog.Logger) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := boundedfile.Read(path, boundedfile.MaxSecret)
	if err != nil {
		return "", fmt.Errorf("--metrics-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", fmt.Errorf("--metrics-token-file %s: the file is empty", path)
	case len(tok) < 16:
		return "", fmt.Errorf("--metrics-token-file %s: the token has %d characters; use at least 16", path, len(tok))
	case strings.ContainsAny(tok, " \t\r\n"):
		return "", fmt.Errorf("--metrics-token-file %s: the token must be one word", path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("token file is readable by others; chmod 600 it", "path", path, "mode", fi.Mode().Perm().String())
	}
	return tok, nil
}

// monitoring is what buildMonitor made; close releases it.
type monitoring struct {
	mon   *monitor.Monitor
	token string
	close func()
}

// buildMonitor builds the sampler, store, audit log and monitor.
func (f *monitorFlags) build(log *slog.Logger, san *monitor.Sanitizer, reg prometheus.Registerer, role string) (*monitoring, error) {
	token, err := readToken(f.tokenFile, log)
	if err != nil {
		return nil, badInput(err)
	}
	sm, err := monitor.NewSampler(monitor.SamplerConfig{BaseRate: f.samplingRate, Fixed: f.fixed})
	if err != nil {
		return nil, err
	}
	st, err := monitor.NewStore(monitor.StoreConfig{MaxAttempts: f.storeSize, MaxAge: f.retention, Sampler: sm})
	if err != nil {
		return nil, err
	}
	m := &monitoring{token: token, close: func() {}}
	var audit *slog.Logger
	if f.auditLog != "" {
		af, err := os.OpenFile(f.auditLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("--audit-log: %w", err)
		}
		audit = slog.New(monitor.SanitizingHandler(slog.NewJSONHandler(af, nil), san)).With("audit", true, "role", role)
		m.close = func() { af.Close() }
	} else {
		audit = log.With("audit", true)
	}
	m.mon, err = monitor.New(monitor.Config{Logger: log, Registerer: reg, Sanitizer: san, Role: role, Store: st, Audit: audit})
	if err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// surfaceAPI is what a node exposes on its HTTP surface.
type surfaceAPI struct {
	node     string // the node's peer ID
	status   func() any
	peers    func() any
	services func() any
	ready    func() error
	facts    func() monitor.NodeFacts
	connect  func(ctx context.Context, peer string, send int64) (any, error)
}

// startSurface starts the HTTP surface unless it is off, and tells
// stdout where it serves.
func (f *monitorFlags) startSurface(m *monitoring, reg prometheus.Gatherer, api surfaceAPI, log *slog.Logger, stdout io.Writer) (io.Closer, error) {
	stopExport, err := f.startExporters(api.node, reg, log)
	if err != nil {
		stopExport()
		return nil, err
	}
	san := m.mon.Sanitizer()
	if f.addr.value == "off" {
		return closerFunc(stopExport), nil
	}
	ln, err := f.addr.listen(log)
	if err != nil {
		stopExport()
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	if ln == nil {
		return closerFunc(stopExport), nil
	}
	srv, err := monitor.NewServer(monitor.ServerConfig{Listener: ln, Gatherer: reg, Monitor: m.mon, Token: m.token,
		Status: api.status, Peers: api.peers, Services: api.services, Ready: api.ready, Facts: api.facts, Connect: api.connect, Logger: log,
		AllowedHosts: splitHosts(f.allowedHosts), HostsHint: hostsHint, TokenHint: tokenHint,
		MaxStreams: f.maxStreams, MaxStreamsPerClient: f.maxStreamsPerClient})
	if err != nil {
		stopExport()
		ln.Close()
		return nil, err
	}
	auth, post := "none", "off (no --metrics-token-file)"
	if m.token != "" {
		auth, post = "bearer token", "on"
	}
	log.Info("monitoring surface", "addr", san.Text(ln.Addr().String()), "auth", auth, "post", post)
	fmt.Fprintf(stdout, "metrics on http://%s/metrics\n", ln.Addr())
	if m.token == "" && !isLoopback(ln.Addr()) {
		log.Warn("the monitoring surface is reachable from the network without a token; set --metrics-token-file")
	}
	return closerFunc(func() { srv.Close(); stopExport() }), nil
}

// The ends of the HTTP surface's refusals that tell the operator which
// flag changes them.
const (
	hostsHint = ", or list the name with --http-allowed-hosts"
	tokenHint = "; to turn them on, start the node with --metrics-token-file FILE (a token of 16 or more characters," +
		" see README.md, Security) and send Authorization: Bearer TOKEN"
)

// splitHosts parses --http-allowed-hosts: names, comma-separated, in
// lower case without a trailing dot.
func splitHosts(v string) []string {
	var out []string
	for _, h := range strings.Split(v, ",") {
		if h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), "."); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// closerFunc is an io.Closer that runs a func.
type closerFunc func()

func (c closerFunc) Close() error {
	c()
	return nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// ErrConfig is returned for a configuration file that cannot be used.
var ErrConfig = errors.New("config file")

// applyConfigFile sets every flag named in the JSON object in path that
// was not given on the command line: the command line wins. Values are
// strings, numbers or booleans, written as on the command line ("1h",
// 0.05, true); each goes through its flag's own parsing and validation.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	b, err := boundedfile.Read(path, boundedfile.MaxConfig)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var settings map[string]json.RawMessage
	if err := json.Unmarshal(b, &settings); err != nil {
		return fmt.Errorf("%w %s: %w", ErrConfig, path, err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "config" || fs.Lookup(name) == nil {
			return fmt.Errorf("%w %s: unknown setting %q (settings are the flag names, without dashes in front)", ErrConfig, path, name)
		}
		vals, err := flagValues(settings[name])
		if err != nil {
			return fmt.Errorf("%w %s: %q: %w", ErrConfig, path, name, err)
		}
		if given[name] {
			continue
		}
		for _, v := range vals {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%w %s: %q: %w", ErrConfig, path, name, err)
			}
		}
	}
	return nil
}

// flagValues renders a setting as flag texts: a scalar is one, an array
// (of a repeatable flag, such as "expose") one per element.
func flagValues(raw json.RawMessage) ([]string, error) {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		v, err := scalar(raw)
		return []string{v}, err
	}
	out := make([]string, 0, len(list))
	for _, r := range list {
		v, err := scalar(r)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// scalar renders a JSON string, number or boolean as flag text.
func scalar(raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case bool, float64:
		return strings.TrimSpace(string(raw)), nil
	}
	return "", errors.New("want a string, a number or a boolean")
}
