package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Testbed is a built topology.
type Testbed struct {
	*Plan
	lines []*delayLine

	mu     sync.Mutex
	procs  []*Proc
	closed bool
	// portmaps are the port-mapping daemons of apdm-portmap routers, by
	// site; their files are under portmapDir (portmap.go).
	portmaps   map[string]*portmapd
	portmapDir string
	// nat64Dir holds the v6-nat64 routers' tayga files (nat64.go).
	nat64Dir string
	// BuildTime is how long Build took.
	BuildTime time.Duration
}

// DefaultPrefix returns the namespace prefix of this process's testbeds.
func DefaultPrefix() string { return fmt.Sprintf("antb%d-", os.Getpid()) }

// Build creates the testbed of spec. On error everything created so far is
// removed.
func Build(ctx context.Context, spec Spec) (tb *Testbed, err error) {
	start := time.Now()
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if err := RequireTools(); err != nil {
		return nil, err
	}
	if slices.ContainsFunc(spec.Sites, func(s SiteSpec) bool { return s.Class == ClassAPDMPortmap }) {
		if err := requirePortmapTools(); err != nil {
			return nil, err
		}
	}
	if slices.ContainsFunc(spec.Sites, func(s SiteSpec) bool { return s.Class == ClassV6NAT64 }) {
		if err := requireNAT64Tools(); err != nil {
			return nil, err
		}
	}
	if spec.Prefix == "" {
		spec.Prefix = DefaultPrefix()
	}
	plan, err := PlanFor(spec)
	if err != nil {
		return nil, err
	}
	tb = &Testbed{Plan: plan}
	defer func() {
		if err != nil {
			tb.Close()
			tb = nil
		}
	}()
	for _, step := range []func(context.Context) error{tb.createNamespaces, tb.configureIP, tb.loadRulesets, tb.startPortmaps, tb.startNAT64s, tb.startWires} {
		if err := step(ctx); err != nil {
			return tb, err
		}
	}
	tb.BuildTime = time.Since(start)
	return tb, nil
}

// createNamespaces adds the plan's namespaces, sets their sysctls, and
// adds the veth pairs, each created from its first namespace (after the
// sysctls: a new interface takes the namespace's defaults).
func (tb *Testbed) createNamespaces(ctx context.Context) error {
	var lines []string
	for _, n := range tb.Namespaces {
		lines = append(lines, "netns add "+n)
	}
	if err := ipBatch(ctx, lines); err != nil {
		return err
	}
	if err := tb.setSysctls(ctx); err != nil {
		return err
	}
	byNS := map[string][]string{}
	var order []string
	for _, l := range tb.Links {
		if _, ok := byNS[l.nsA]; !ok {
			order = append(order, l.nsA)
		}
		byNS[l.nsA] = append(byNS[l.nsA], fmt.Sprintf("link add %s type veth peer name %s netns %s", l.ifA, l.ifB, l.nsB))
	}
	for _, n := range order {
		if err := nsBatch(ctx, n, byNS[n]); err != nil {
			return err
		}
	}
	return nil
}

// setSysctls turns forwarding on where the plan routes, and the reverse-path
// filter off everywhere (pitfall 4: it breaks migration tests); IPv6
// duplicate address detection off for the interfaces still to come (a
// tentative link-local address holds neighbour discovery up for a second).
func (tb *Testbed) setSysctls(ctx context.Context) error {
	fwd := map[string]bool{}
	for _, n := range tb.Forward {
		fwd[n] = true
	}
	for _, n := range tb.Namespaces {
		args := []string{"sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
			"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"}
		if fwd[n] {
			args = append(args, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
		}
		if _, err := runIn(ctx, n, args...); err != nil {
			return err
		}
	}
	return nil
}

// configureIP applies each namespace's ip lines (addresses, links up,
// routes).
func (tb *Testbed) configureIP(ctx context.Context) error {
	for _, n := range tb.Namespaces {
		if err := nsBatch(ctx, n, tb.IP[n]); err != nil {
			return err
		}
	}
	return nil
}

// loadRulesets loads each router's nftables ruleset.
func (tb *Testbed) loadRulesets(ctx context.Context) error {
	for _, r := range tb.Routers {
		text, err := r.Ruleset.Render()
		if err != nil {
			return err
		}
		if err := runStdin(ctx, r.NS, text, "nft", "-f", "-"); err != nil {
			return err
		}
	}
	return nil
}

// startWires sets up each impaired link: offloads off at both ends and on
// the wire, the rate limit if any, and its delay line.
func (tb *Testbed) startWires(ctx context.Context) error {
	for _, w := range tb.Wires {
		// The delay line must see real frames: no segmentation or
		// checksum offload at either end, nor on the wire itself.
		for _, nb := range append(w.Neighbours[:], [2]string{w.NS, w.IfA}, [2]string{w.NS, w.IfB}) {
			if _, err := runIn(ctx, nb[0], "ethtool", "-K", nb[1], "tx", "off", "tso", "off", "gso", "off", "gro", "off"); err != nil {
				return err
			}
		}
		if w.Impair.RateKbit > 0 {
			for _, ifn := range []string{w.IfA, w.IfB} {
				if _, err := runIn(ctx, w.NS, "tc", "qdisc", "add", "dev", ifn, "root", "tbf", "rate",
					strconv.Itoa(w.Impair.RateKbit)+"kbit", "burst", "32kbit", "latency", "100ms"); err != nil {
					return err
				}
			}
		}
		d, err := startDelayLine(w)
		if err != nil {
			return fmt.Errorf("testnet: delay line %s: %w", w.NS, err)
		}
		tb.lines = append(tb.lines, d)
	}
	return nil
}

func nsBatch(ctx context.Context, ns string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return &CommandError{Args: []string{"ip", "-n", ns, "-batch", "-"}, Output: out.String(), Err: err}
	}
	return nil
}

// HostsOf returns the hosts of a site.
func (tb *Testbed) HostsOf(site string) []Host {
	var out []Host
	for _, h := range tb.Hosts {
		if h.Site == site {
			out = append(out, h)
		}
	}
	return out
}

// Server returns the server namespace.
func (tb *Testbed) Server() string { return tb.Prefix + "srv" }

// RouterOf returns the outer router of a site (nil for a public site).
func (tb *Testbed) RouterOf(site string) *Router {
	for i := range tb.Routers {
		if tb.Routers[i].Site == site && tb.Routers[i].Outer {
			return &tb.Routers[i]
		}
	}
	return nil
}

// Proc is a process started in a namespace of the testbed.
type Proc struct {
	Cmd  *exec.Cmd
	NS   string
	out  *lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 8<<20 { // bound what a chatty process can hold
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Output returns what the process wrote so far (stdout and stderr).
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the exit error after Done.
func (p *Proc) Err() error { return p.err }

// Stop sends SIGTERM, then SIGKILL after grace, and waits.
func (p *Proc) Stop(grace time.Duration) {
	if p.Cmd.Process == nil {
		return
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Start runs a command in namespace ns. It is stopped by Close at the
// latest.
func (tb *Testbed) Start(ns string, args ...string) (*Proc, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil, errors.New("testnet: testbed closed")
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testnet: start %v in %s: %w", args, ns, err)
	}
	p := &Proc{Cmd: cmd, NS: ns, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.procs = append(tb.procs, p)
	return p, nil
}

// Run runs a command in ns to completion and returns its stdout.
//
// When ctx ends first the command gets SIGQUIT (a Go program prints every
// goroutine's stack to stderr and exits; "ip netns exec" execs the command
// in its place), and SIGKILL 3 s later.
func (tb *Testbed) Run(ctx context.Context, ns string, args ...string) (string, error) {
	out, _, err := tb.RunBoth(ctx, ns, args...)
	return out, err
}

// RunBoth is Run that also returns stderr on success.
func (tb *Testbed) RunBoth(ctx context.Context, ns string, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 3 * time.Second
	err := cmd.Run()
	if err != nil {
		return out.String(), errb.String(), &CommandError{Args: args, Output: errb.String(), Err: err}
	}
	return out.String(), errb.String(), nil
}

// Close stops every process, the delay lines, and deletes the namespaces.
// It is idempotent and returns the teardown time.
func (tb *Testbed) Close() time.Duration {
	start := time.Now()
	tb.mu.Lock()
	if tb.closed {
		tb.mu.Unlock()
		return 0
	}
	tb.closed = true
	procs := tb.procs
	tb.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Stop(2 * time.Second)
		}()
	}
	wg.Wait()
	tb.closePortmaps()
	if tb.nat64Dir != "" {
		os.RemoveAll(tb.nat64Dir)
	}
	for _, d := range tb.lines {
		d.close()
	}
	removeNamespaces(tb.Namespaces)
	return time.Since(start)
}

// removeNamespaces kills whatever still runs in the namespaces and deletes
// them. Errors are ignored: this is best effort on the way out.
func removeNamespaces(names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range names {
		if out, err := run(ctx, "ip", "netns", "pids", n); err == nil {
			for _, f := range strings.Fields(out) {
				if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	var lines []string
	for _, n := range names {
		lines = append(lines, "netns del "+n)
	}
	// -force: continue past namespaces that are already gone.
	cmd := exec.CommandContext(ctx, "ip", "-force", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	cmd.Run()
}

// Conntrack flushes the conntrack table of ns (NAT rebinding).
func (tb *Testbed) Conntrack(ctx context.Context, ns string) error {
	_, err := runIn(ctx, ns, "conntrack", "-F")
	var ce *CommandError
	if errors.As(err, &ce) && strings.Contains(ce.Output, "flow entries have been deleted") {
		return nil
	}
	return err
}
