package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/boundedfile"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/portmap"
	"github.com/antnode/antnode/relay"
	"github.com/antnode/antnode/traversal"
)

// nodeOptions are the flags of a long-running node.
type nodeOptions struct {
	bootstrap      bool
	listen         string
	alsoListen     []string // a bootstrap's socket in the other family, if any
	bootstrapNodes string
	key            string
	maxPeers       int
	stunAltPort    int
	probeAddr      string
	relayPort      int
	relayIP        string
	noRelay        bool
	relayMbps      int
	relayMaxAllocs int
	relayLifetime  time.Duration
	limits         limitFlags
	peer           peerFlags
	svc            serviceFlags
	log            logFlags
	mon            monitorFlags
	config         string
}

// peerFlags are the relay and port-mapping flags of peers (the daemon,
// connect, forward and pipe).
type peerFlags struct {
	relay            string
	warmRelay        string
	turnServer       string
	turnSecret       string
	breakerThreshold int
	breakerDelay     time.Duration
	birthday         birthdayFlags
	portmap          string
	portmapMode      portmap.Protocol // set by apply
	dnsServer        string
}

// birthdayFlags bound the birthday search (holepunch.BirthdayConfig).
type birthdayFlags struct {
	sockets, probes, rate, predict int
	budget                         time.Duration
}

func (f *birthdayFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.sockets, "birthday-sockets", 256, "birthday search: sockets the symmetric side opens (1-1024)")
	fs.IntVar(&f.probes, "birthday-probes", 4096, "birthday search: most probes the other side sends (1-65535)")
	fs.IntVar(&f.rate, "birthday-rate", 2000, "birthday search: probes per second (1-20000)")
	fs.DurationVar(&f.budget, "birthday-budget", 8*time.Second, "birthday search: time before it gives up (100ms-60s)")
	fs.IntVar(&f.predict, "birthday-predict", 512, "birthday search: predicted ports probed first when the peer's NAT allocates in sequence (0 to --birthday-probes; 0: none)")
}

// config validates the flags into a holepunch.BirthdayConfig.
func (f birthdayFlags) config() (holepunch.BirthdayConfig, error) {
	switch {
	case f.sockets < 1 || f.sockets > 1024:
		return holepunch.BirthdayConfig{}, fmt.Errorf("--birthday-sockets %d: want 1 to 1024", f.sockets)
	case f.probes < 1 || f.probes > 65535:
		return holepunch.BirthdayConfig{}, fmt.Errorf("--birthday-probes %d: want 1 to 65535", f.probes)
	case f.rate < 1 || f.rate > 20000:
		return holepunch.BirthdayConfig{}, fmt.Errorf("--birthday-rate %d: want 1 to 20000 per second", f.rate)
	case f.budget < 100*time.Millisecond || f.budget > time.Minute:
		return holepunch.BirthdayConfig{}, fmt.Errorf("--birthday-budget %v: want 100ms to 60s", f.budget)
	case f.predict < 0 || f.predict > f.probes:
		return holepunch.BirthdayConfig{}, fmt.Errorf("--birthday-predict %d: want 0 to --birthday-probes", f.predict)
	}
	predict := f.predict
	if predict == 0 {
		predict = -1 // BirthdayConfig: negative is none
	}
	return holepunch.BirthdayConfig{Sockets: f.sockets, Probes: f.probes, Rate: f.rate, Budget: f.budget, Predict: predict}, nil
}

func (f *peerFlags) register(fs *flag.FlagSet) {
	dnsServerFlag(fs, &f.dnsServer)
	fs.StringVar(&f.relay, "relay", "auto", "relay use: auto (when no direct path), force (always) or never")
	fs.StringVar(&f.warmRelay, "warm-relay", "auto", "keep a relay allocation ready and announced while this node cannot be reached directly (UDP blocked, or a NAT mapping per destination): auto or off")
	fs.StringVar(&f.turnServer, "turn-server", "", "a third-party TURN server (coturn) to relay through instead of the bootstraps' relay: HOST:PORT or turn:HOST:PORT[?transport=tcp]")
	fs.StringVar(&f.turnSecret, "turn-secret-file", "", "file holding the TURN server's shared secret (coturn static-auth-secret)")
	fs.IntVar(&f.breakerThreshold, "breaker-threshold", 5, "consecutive failures that open a bootstrap's circuit breaker (1-1000)")
	fs.DurationVar(&f.breakerDelay, "breaker-timeout", 60*time.Second, "how long an open breaker waits before a trial request (1ms-24h)")
	fs.StringVar(&f.portmap, "portmap", "auto", "ask the router to map the node's port: auto (PCP, then NAT-PMP, then UPnP IGD; nothing when every bootstrap is on loopback), pcp, natpmp, upnp or off")
	f.birthday.register(fs)
}

// validate checks the numeric flags against their bounds.
func (f *peerFlags) validate() error {
	_, err := f.birthday.config()
	return firstErr(checkDNSServer(f.dnsServer), inRange("breaker-threshold", f.breakerThreshold, 1, maxBreakerFails),
		inRange("breaker-timeout", f.breakerDelay, time.Millisecond, maxBreakerTimeout), err)
}

// apply validates the flags and sets them on a node configuration.
func (f *peerFlags) apply(cfg *traversal.Config) error {
	mode, err := traversal.ParseRelayMode(f.relay)
	if err != nil {
		return fmt.Errorf("--relay: %w", err)
	}
	cfg.Relay = mode
	if cfg.WarmRelay, err = traversal.ParseWarmRelayMode(f.warmRelay); err != nil {
		return badInput(fmt.Errorf("--warm-relay: %w", err))
	}
	if err := f.validate(); err != nil {
		return badInput(err)
	}
	cfg.BreakerThreshold, cfg.BreakerDelay = f.breakerThreshold, f.breakerDelay
	if f.portmapMode, err = portmap.ParseProtocol(f.portmap); err != nil {
		return badInput(fmt.Errorf("--portmap: %w", err))
	}
	if cfg.Birthday, err = f.birthday.config(); err != nil {
		return err
	}
	if f.turnServer == "" {
		if f.turnSecret != "" {
			return errors.New("--turn-secret-file needs --turn-server")
		}
		return nil
	}
	addr, tcp, err := parseTURNURL(f.turnServer)
	if err != nil {
		return fmt.Errorf("--turn-server: %w", err)
	}
	if f.turnSecret == "" {
		return errors.New("--turn-server needs --turn-secret-file")
	}
	b, err := boundedfile.Read(f.turnSecret, boundedfile.MaxSecret)
	if err != nil {
		return fmt.Errorf("--turn-secret-file: %w", err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return errors.New("--turn-secret-file: the file is empty")
	}
	cfg.TURN = &traversal.TURNServer{Addr: addr, TCP: tcp, Secret: []byte(secret)}
	return nil
}

// parseTURNURL parses HOST:PORT or turn:HOST:PORT[?transport=udp|tcp].
func parseTURNURL(s string) (netip.AddrPort, bool, error) {
	s = strings.TrimPrefix(s, "turn:")
	hostport, query, _ := strings.Cut(s, "?")
	tcp := false
	switch query {
	case "", "transport=udp":
	case "transport=tcp":
		tcp = true
	default:
		return netip.AddrPort{}, false, fmt.Errorf("%q: only ?transport=udp or ?transport=tcp", query)
	}
	b, err := traversal.ParseBootstrap(hostport)
	if err != nil {
		return netip.AddrPort{}, false, err
	}
	return b.Addr, tcp, nil
}

func mainNode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o nodeOptions
	fs := flag.NewFlagSet("antnode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.bootstrap, "bootstrap", false, "run as a bootstrap node")
	fs.StringVar(&o.listen, "listen", "", "UDP address to listen on; a bootstrap takes one per family, comma-separated, and a peer given 0.0.0.0:P,[::]:P runs one dual-stack socket (default 0.0.0.0:4433 for a bootstrap; for a peer 0.0.0.0:0,[::]:0 where the host has IPv4 and global IPv6, else 0.0.0.0:0)")
	fs.StringVar(&o.bootstrapNodes, "bootstrap-nodes", "", "comma-separated bootstrap nodes, HOST:PORT, PEERID@HOST:PORT or dns:NAME (SRV _antnode._udp.NAME)")
	fs.StringVar(&o.key, "key", "", "path of the node's Ed25519 key (created with mode 0600 if missing; empty: ephemeral)")
	fs.IntVar(&o.maxPeers, "max-peers", 100_000, "bootstrap: registry size limit (1-10000000)")
	fs.IntVar(&o.stunAltPort, "stun-alt-port", 0, "bootstrap: second UDP port answering STUN, for NAT mapping classification (0: the listen port + 1; -1: none; at most 65535)")
	fs.StringVar(&o.probeAddr, "probe-addr", "", "bootstrap: a further local IP, never contacted by peers, that sends the filtering probes \"from another address\" (one per --listen family, comma-separated)")
	fs.IntVar(&o.relayPort, "relay-port", 0, "bootstrap: TURN relay port, UDP and TCP (0: the listen port + 2; at most 65535)")
	fs.StringVar(&o.relayIP, "relay-ip", "", "bootstrap: address relay allocations are made on (default: the listen address; on a wildcard, the host's one global address)")
	fs.BoolVar(&o.noRelay, "no-relay", false, "bootstrap: run no TURN relay")
	fs.IntVar(&o.relayMbps, "relay-bandwidth-mbps", 100, "bootstrap: bandwidth per relay allocation, each direction, in Mbit/s (1-10000)")
	fs.IntVar(&o.relayMaxAllocs, "relay-max-allocations", 4, "bootstrap: relay allocations per peer (1-64)")
	fs.DurationVar(&o.relayLifetime, "relay-lifetime", 0, "bootstrap: lifetime of relay credentials and most lifetime of an allocation (0: credentials 10m, allocations 1h; else 2s-24h)")
	o.limits.register(fs)
	o.peer.register(fs)
	o.svc.register(fs)
	o.log.register(fs, "info")
	o.mon.register(fs)
	fs.StringVar(&o.config, "config", "", "JSON file of settings: flag names as keys (\"sampling-rate\": 0.05); flags on the command line win")
	if _, code, ok := nodeCommand().parse(fs, args, stdout, stderr); !ok {
		return code
	}
	log, san, err := o.log.build(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "antnode:", err)
		return exitUsage
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(stderr, "antnode:", err)
		return exitUsage
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := runNode(ctx, o, log, san, reg, stdout); err != nil {
		return startupFailed(stderr, err)
	}
	return exitOK
}

func (o *nodeOptions) validate() error {
	if o.listen == "" {
		o.listen = defaultListenHere()
		if o.bootstrap {
			o.listen = "0.0.0.0:4433"
		}
	}
	listens, err := splitListen(o.listen)
	if err != nil {
		return err
	}
	if o.bootstrap {
		o.listen, o.alsoListen = listens[0], listens[1:]
	} else if len(listens) > 1 {
		if _, err := dualPort(listens); err != nil {
			return err
		}
		o.listen = strings.Join(listens, ",") // one dual-stack socket (listenPeer)
	}
	if err := firstErr(inRange("max-peers", o.maxPeers, 1, maxMaxPeers),
		inRange("relay-bandwidth-mbps", o.relayMbps, 1, maxRelayMbps),
		inRange("relay-max-allocations", o.relayMaxAllocs, 1, maxRelayAllocs),
		relayLifetimeInRange(o.relayLifetime),
		o.derivedPorts()); err != nil {
		return err
	}
	if err := o.limits.validate(o.maxPeers); err != nil {
		return err
	}
	if o.stunAltPort < -1 || o.stunAltPort > 65535 {
		return fmt.Errorf("--stun-alt-port %d: want -1..65535", o.stunAltPort)
	}
	if err := o.checkProbeAddr(); err != nil {
		return err
	}
	if o.relayPort < 0 || o.relayPort > 65535 {
		return fmt.Errorf("--relay-port %d: want 0..65535", o.relayPort)
	}
	if o.relayIP != "" {
		if _, err := netip.ParseAddr(o.relayIP); err != nil {
			return fmt.Errorf("--relay-ip: %w", err)
		}
	}
	if !o.bootstrap && o.bootstrapNodes == "" {
		return errors.New("a peer needs --bootstrap-nodes (or run with --bootstrap)")
	}
	if !o.bootstrap {
		bs, err := parseBootstraps(o.bootstrapNodes)
		if err != nil {
			return err
		}
		if err := checkFamilies(o.listen, bs); err != nil {
			return err
		}
	}
	if o.bootstrap && len(o.svc.expose) > 0 {
		return errors.New("--expose is for peers, not for a bootstrap node")
	}
	if err := firstErr(o.svc.validate(), o.peer.validate()); err != nil {
		return err
	}
	return o.mon.validate()
}

// derivedPorts checks, when the listen port is given, that the bootstrap's
// ports derived from it (STUN listen+1, relay listen+2) exist.
func (o *nodeOptions) derivedPorts() error {
	for _, l := range append([]string{o.listen}, o.alsoListen...) {
		if err := o.derivedPortsOf(l); err != nil {
			return err
		}
	}
	return nil
}

// derivedPortsOf is derivedPorts for one listen address.
func (o *nodeOptions) derivedPortsOf(listen string) error {
	_, ps, err := net.SplitHostPort(listen)
	if err != nil || !o.bootstrap {
		return nil // the listen address is checked on its own
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return nil // a name or an ephemeral port: checked once bound
	}
	if o.stunAltPort == 0 {
		if _, err := derivePort(uint16(p), 1, "second STUN", "--stun-alt-port"); err != nil {
			return fmt.Errorf("--listen %s: %w", listen, err)
		}
	}
	if o.relayPort == 0 && !o.noRelay {
		if _, err := derivePort(uint16(p), 2, "relay", "--relay-port"); err != nil {
			return fmt.Errorf("--listen %s: %w", listen, err)
		}
	}
	return nil
}

// runNode runs a bootstrap node or a peer until ctx ends.
func runNode(ctx context.Context, o nodeOptions, log *slog.Logger, san *monitor.Sanitizer, reg *prometheus.Registry, stdout io.Writer) error {
	id, err := loadIdentity(o.key, log)
	if err != nil {
		return badInput(fmt.Errorf("--key: %w", err))
	}
	role := "peer"
	if o.bootstrap {
		role = "bootstrap"
	}
	mn, err := o.mon.build(log, san, reg, role)
	if err != nil {
		return err
	}
	defer mn.close()
	mon := mn.mon
	ep, err := listenPeer(o.listen, endpoint.Config{Logger: log, StatelessResetKey: resetKey(id)})
	if err != nil {
		return err
	}
	defer ep.Close()
	log = log.With("peer", id.ID().Short())
	started := time.Now()
	if o.bootstrap {
		return runBootstrap(ctx, o, id, ep, mn, reg, log, stdout)
	}
	bs, dnsw, err := resolveBootstraps(ctx, o.bootstrapNodes, o.peer.dnsServer, log)
	if err != nil {
		return err
	}
	prefix, err := nat64For(ctx, o.listen, bs, o.peer.dnsServer, log)
	if err != nil {
		return badInput(err)
	}
	bs = traversal.MapBootstraps(prefix, bs)
	ncfg := traversal.Config{Identity: id, Endpoint: ep, Bootstraps: bs, Recorder: mon, Logger: log,
		Services: o.svc.config(reg), NAT64: prefix}
	if err := o.peer.apply(&ncfg); err != nil {
		return err
	}
	pm, err := newPortMapping(o.peer.portmapMode, ep, bs, reg, log, mon.Sanitizer(), &ncfg)
	if err != nil {
		return err
	}
	if o.mon.qlogDir != "" {
		if ncfg.Tracer, err = monitor.QLogTracer(o.mon.qlogDir, mon.Sanitizer(), func(err error) { log.Warn("qlog", "err", err) }); err != nil {
			return fmt.Errorf("--qlog-dir: %w", err)
		}
	}
	node, err := traversal.New(ncfg)
	if err != nil {
		return err
	}
	defer node.Close()
	defer followDNS(ctx, dnsw, node)() // stopped before the node closes
	if err := pm.start(ctx, node); err != nil {
		return err
	}
	defer pm.Close() // before the node's: the mapping is given back first
	if err := reg.Register(node.Collector()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := o.svc.serve(node, log); err != nil {
		return err
	}
	surface, err := o.mon.startSurface(mn, reg, peerAPI(node, pm, mon, started), log, stdout)
	if err != nil {
		return err
	}
	defer surface.Close()
	log.Info("peer running", "id", id.ID().String(), "listen", mon.Sanitizer().AddrPort(ep.LocalAddr()), "bootstraps", len(bs))
	fmt.Fprintf(stdout, "peer %s listening on %s\n", id.ID(), ep.LocalAddr())
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := node.WaitReady(readyCtx); err != nil && ctx.Err() == nil {
		// Not fatal: the clients keep retrying with backoff.
		log.Warn("no bootstrap reachable yet; retrying in the background", "err", err)
	}
	cancel()
	waitSignal(ctx, log)
	return nil
}

// resetKey is the QUIC stateless reset key: derived from the node's key,
// so that after a restart the node's peers learn at once, from a stateless
// reset, that their old connections are gone.
func resetKey(id *identity.Identity) *quic.StatelessResetKey {
	k := quic.StatelessResetKey(id.DeriveKey("quic stateless reset"))
	return &k
}

// runBootstrap runs a bootstrap node (with its STUN, TCP control and TURN
// relay sockets) until ctx ends.
func runBootstrap(ctx context.Context, o nodeOptions, id *identity.Identity, ep *endpoint.Endpoint, mn *monitoring, reg *prometheus.Registry, log *slog.Logger, stdout io.Writer) error {
	mon := mn.mon
	started := time.Now()
	local := ep.LocalAddr()
	cfg := bootstrap.ServerConfig{Identity: id, Endpoint: ep, Recorder: mon, Logger: log, MaxPeers: o.maxPeers, RelayTTL: o.relayLifetime}
	o.limits.bootstrap(&cfg)
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	cfg.ProbeAddr = o.probeAddrFor(local)
	alt, err := o.altSTUN(local)
	if err != nil {
		return err
	}
	if alt != nil {
		cfg.AltSTUN = alt
		closers = append(closers, alt)
	}
	also, more, err := o.alsoSockets(id, endpoint.Config{Logger: log, StatelessResetKey: resetKey(id)})
	closers = append(closers, more...)
	if err != nil {
		return err
	}
	cfg.Also = also
	tcp, err := net.Listen(tcpNetwork(local.String()), local.String())
	if err != nil {
		return fmt.Errorf("control over TCP on %s: %w", local, err)
	}
	cfg.TCP = tcp
	closers = append(closers, tcp)
	relayLine := ""
	if !o.noRelay {
		rs, err := startRelay(o, local, cfg.Also, mon, log)
		if err != nil {
			return err
		}
		closers = append(closers, rs)
		cfg.Relay = rs
		defer func() { log.Info("relay stopped", "allocations", rs.Allocations(), "bytes", rs.BytesRelayed()) }()
		srv, err := bootstrap.NewServer(cfg)
		if err != nil {
			return err
		}
		rs.SetPolicy(srv.RelayAllowed)
		closers = append([]io.Closer{srv}, closers...)
		if err := reg.Register(rs.Collector()); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		surface, err := o.mon.startSurface(mn, reg, bootstrapAPI(id, srv, rs, started), log, stdout)
		if err != nil {
			return err
		}
		closers = append([]io.Closer{surface}, closers...)
		log.Info("bootstrap node running", "id", id.ID().String(), "listen", mon.Sanitizer().AddrPort(local),
			"relay", mon.Sanitizer().AddrPort(rs.UDPAddr()))
		relayLine = fmt.Sprintf("relay on UDP and TCP port %d, allocations on %s\n", rs.UDPAddr().Port(), rs.RelayIP())
	} else {
		srv, err := bootstrap.NewServer(cfg)
		if err != nil {
			return err
		}
		closers = append([]io.Closer{srv}, closers...)
		surface, err := o.mon.startSurface(mn, reg, bootstrapAPI(id, srv, nil, started), log, stdout)
		if err != nil {
			return err
		}
		closers = append([]io.Closer{surface}, closers...)
		log.Info("bootstrap node running", "id", id.ID().String(), "listen", mon.Sanitizer().AddrPort(local), "relay", "off")
	}
	fmt.Fprintf(stdout, "bootstrap %s listening on %s\n", id.ID(), listening(local, cfg.Also))
	fmt.Fprint(stdout, relayLine)
	waitSignal(ctx, log)
	return nil
}

// startRelay opens the TURN relay's UDP and TCP sockets and starts it.
func startRelay(o nodeOptions, local netip.AddrPort, also []bootstrap.Sockets, mon *monitor.Monitor, log *slog.Logger) (*relay.Server, error) {
	ip := local.Addr()
	if o.relayIP != "" {
		ip = netip.MustParseAddr(o.relayIP) // validated
	}
	if ip.IsUnspecified() {
		host, err := hostAddrs()
		if err != nil {
			return nil, fmt.Errorf("relay address: %w", err)
		}
		if ip, err = chooseRelayIP(ip, host); err != nil {
			return nil, badInput(err)
		}
		log.Info("relay advertises the host's address; set --relay-ip if peers reach this host at another one", "relay_ip", ip.String())
	}
	udp, tcp, err := o.relaySockets(local)
	if err != nil {
		return nil, err
	}
	var more []relay.Listeners
	closeAll := func() {
		udp.Close()
		tcp.Close()
		for _, l := range more {
			l.UDP.Close()
			l.TCP.Close()
		}
	}
	for _, f := range also {
		u, t, err := o.relaySockets(f.Endpoint.LocalAddr())
		if err != nil {
			closeAll()
			return nil, err
		}
		more = append(more, relay.Listeners{UDP: u, TCP: t})
	}
	rcfg := relay.ServerConfig{UDP: udp, TCP: tcp, Also: more, RelayIP: ip, Recorder: mon, Logger: log,
		MaxAllocationsPerPeer: o.relayMaxAllocs, BytesPerSecond: o.relayMbps * 125_000, MaxLifetime: o.relayLifetime}
	o.limits.relay(&rcfg)
	rs, err := relay.NewServer(rcfg)
	if err != nil {
		closeAll()
		return nil, err
	}
	return rs, nil
}

// relaySockets opens the relay's UDP and TCP sockets next to a bootstrap
// socket at local: on --relay-port, or the port two after local's.
func (o nodeOptions) relaySockets(local netip.AddrPort) (*net.UDPConn, net.Listener, error) {
	port := uint16(o.relayPort) // validated: 0..65535
	if o.relayPort == 0 {
		var err error
		if port, err = derivePort(local.Port(), 2, "relay", "--relay-port"); err != nil {
			return nil, nil, badInput(err)
		}
	}
	addr := netip.AddrPortFrom(local.Addr(), port)
	udp, err := net.ListenUDP(udpNetwork(addr.String()), net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, nil, fmt.Errorf("relay UDP %s: %w", addr, err)
	}
	tcp, err := net.Listen(tcpNetwork(addr.String()), addr.String())
	if err != nil {
		udp.Close()
		return nil, nil, fmt.Errorf("relay TCP %s: %w", addr, err)
	}
	return udp, tcp, nil
}
