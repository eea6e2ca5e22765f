package discovery

import (
	"context"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/traversal"
)

// dnsmasq is a real DNS server on loopback serving a zone of targets.
type dnsmasq struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
}

// zoneTarget is one SRV target of the zone: name, bootstrap, and whether
// its TXT names the key.
type zoneTarget struct {
	name string
	b    traversal.Bootstrap
	txt  bool
}

func startDNSMasq(t *testing.T) *dnsmasq {
	bin := testkit.NeedTool(t, "dnsmasq")
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	d := &dnsmasq{t: t, bin: bin, port: port}
	t.Cleanup(d.stop)
	return d
}

func (d *dnsmasq) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port)) }

// serve (re)starts the server with a zone of targets under fleet.test
// and waits until it answers.
func (d *dnsmasq) serve(targets ...zoneTarget) {
	d.t.Helper()
	d.stop()
	args := []string{"--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
		"--port=" + strconv.Itoa(d.port), "--listen-address=127.0.0.1", "--bind-interfaces", "--local-ttl=1"}
	for _, tg := range targets {
		host := tg.name + ".fleet.test"
		args = append(args, "--srv-host=_antnode._udp.fleet.test,"+host+","+strconv.Itoa(int(tg.b.Addr.Port()))+",10,10",
			"--host-record="+host+","+tg.b.Addr.Addr().String())
		if tg.txt {
			args = append(args, "--txt-record="+host+","+IDKey+tg.b.ID.String())
		}
	}
	d.cmd = exec.Command(d.bin, args...)
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	r := &Resolver{Server: d.addr(), Timeout: 200 * time.Millisecond}
	testkit.WaitFor(d.t, 5*time.Second, "dnsmasq answering", func() bool {
		_, err := r.Resolve(context.Background(), "fleet.test")
		return err == nil
	})
}

func (d *dnsmasq) stop() {
	if d.cmd != nil {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		d.cmd = nil
	}
}

func startBootstrap(t *testing.T) traversal.Bootstrap {
	t.Helper()
	id := testkit.Identity(t)
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: testkit.Endpoint(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return traversal.Bootstrap{Addr: srv.Addr(), ID: id.ID()}
}

// TestDNSMasq resolves a real server's zone, registers a node with its
// bootstraps, and follows a change of the zone (a target removed, one
// added) after the TTL without a restart.
func TestDNSMasq(t *testing.T) {
	d := startDNSMasq(t)
	b1, b2, b3 := startBootstrap(t), startBootstrap(t), startBootstrap(t)
	d.serve(zoneTarget{"a", b1, true}, zoneTarget{"b", b2, false})

	r := &Resolver{Server: d.addr(), Timeout: time.Second}
	res, err := r.Resolve(t.Context(), "fleet.test")
	if err != nil {
		t.Fatal(err)
	}
	pinned := traversal.Bootstrap{Addr: b2.Addr} // no TXT: the key is pinned on first contact
	if !slices.Equal(res.Bootstraps, []traversal.Bootstrap{b1, pinned}) || res.TTL != time.Second || len(res.Problems) != 0 {
		t.Fatalf("resolved %v ttl %v problems %v", res.Bootstraps, res.TTL, res.Problems)
	}

	var resolutions atomic.Int64
	w, err := New(t.Context(), Config{Names: []string{"fleet.test"}, MinTTL: 200 * time.Millisecond, CheckEvery: 50 * time.Millisecond,
		Resolve: func(ctx context.Context, name string) (Result, error) {
			resolutions.Add(1)
			return r.Resolve(ctx, name)
		}})
	if err != nil {
		t.Fatal(err)
	}
	node, err := traversal.New(traversal.Config{Identity: testkit.Identity(t), Endpoint: testkit.Endpoint(t), Bootstraps: w.Bootstraps()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	w.Run(t.Context(), node.SetBootstraps, func() bool { return Failing(node.Bootstraps()) })
	t.Cleanup(w.Close)
	registered := func(want ...traversal.Bootstrap) func() bool {
		return func() bool {
			st := node.Bootstraps()
			return len(st) == len(want) && !slices.ContainsFunc(st, func(s traversal.BootstrapStatus) bool {
				return !s.Registered || !slices.ContainsFunc(want, func(b traversal.Bootstrap) bool { return b.Addr == s.Addr && b.ID == s.ID })
			})
		}
	}
	testkit.WaitFor(t, 10*time.Second, "registered with a and b (b's key pinned)", registered(b1, b2))
	testkit.WaitFor(t, 5*time.Second, "re-resolved after the TTL", func() bool { return resolutions.Load() >= 2 })

	d.serve(zoneTarget{"a", b1, true}, zoneTarget{"c", b3, true}) // b removed, c added
	testkit.WaitFor(t, 10*time.Second, "b dropped, c registered", registered(b1, b3))
	for _, s := range node.Bootstraps() {
		if s.Addr == b3.Addr && s.Label != "1" {
			t.Fatalf("c took label %q, want b's freed slot 1", s.Label)
		}
	}
}
