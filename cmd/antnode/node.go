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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/traversal"
)

// nodeOptions are the flags of a long-running node.
type nodeOptions struct {
	bootstrap      bool
	listen         string
	bootstrapNodes string
	key            string
	maxPeers       int
	stunAltPort    int
	probeAddr      string
	log            logFlags
}

func mainNode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o nodeOptions
	fs := flag.NewFlagSet("antnode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&o.bootstrap, "bootstrap", false, "run as a bootstrap node")
	fs.StringVar(&o.listen, "listen", "", "UDP address to listen on (default 0.0.0.0:4433 for a bootstrap, 0.0.0.0:0 for a peer)")
	fs.StringVar(&o.bootstrapNodes, "bootstrap-nodes", "", "comma-separated bootstrap nodes, HOST:PORT or PEERID@HOST:PORT")
	fs.StringVar(&o.key, "key", "", "path of the node's Ed25519 key (created with mode 0600 if missing; empty: ephemeral)")
	fs.IntVar(&o.maxPeers, "max-peers", 100_000, "bootstrap: registry size limit")
	fs.IntVar(&o.stunAltPort, "stun-alt-port", 0, "bootstrap: second UDP port answering STUN, for NAT mapping classification (0: the listen port + 1; -1: none)")
	fs.StringVar(&o.probeAddr, "probe-addr", "", "bootstrap: a further local IP, never contacted by peers, that sends the filtering probes \"from another address\"")
	o.log.register(fs, "info")
	fs.Usage = func() {
		usage(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "antnode: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	log, mode, err := o.log.build(stderr)
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
	if err := runNode(ctx, o, log, mode, reg, stdout); err != nil {
		log.Error("antnode stopped", "err", err)
		return exitFailure
	}
	return exitOK
}

func (o *nodeOptions) validate() error {
	if o.listen == "" {
		o.listen = "0.0.0.0:0"
		if o.bootstrap {
			o.listen = "0.0.0.0:4433"
		}
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return fmt.Errorf("--listen %q: %w", o.listen, err)
	}
	if o.maxPeers <= 0 {
		return errors.New("--max-peers must be positive")
	}
	if o.stunAltPort < -1 || o.stunAltPort > 65535 {
		return fmt.Errorf("--stun-alt-port %d: want -1..65535", o.stunAltPort)
	}
	if o.probeAddr != "" {
		if _, err := netip.ParseAddr(o.probeAddr); err != nil {
			return fmt.Errorf("--probe-addr: %w", err)
		}
	}
	if !o.bootstrap && o.bootstrapNodes == "" {
		return errors.New("a peer needs --bootstrap-nodes (or run with --bootstrap)")
	}
	return nil
}

// runNode runs a bootstrap node or a peer until ctx ends.
func runNode(ctx context.Context, o nodeOptions, log *slog.Logger, mode monitor.AddressMode, reg *prometheus.Registry, stdout io.Writer) error {
	id, err := loadIdentity(o.key, log)
	if err != nil {
		return err
	}
	role := "peer"
	if o.bootstrap {
		role = "bootstrap"
	}
	mon, err := monitor.New(monitor.Config{Logger: log, Registerer: reg, Addresses: mode, Role: role})
	if err != nil {
		return err
	}
	ep, err := endpoint.Listen("udp4", o.listen, endpoint.Config{Logger: log})
	if err != nil {
		return err
	}
	defer ep.Close()
	log = log.With("peer", id.ID().Short())
	if o.bootstrap {
		cfg := bootstrap.ServerConfig{Identity: id, Endpoint: ep, Recorder: mon, Logger: log, MaxPeers: o.maxPeers}
		if o.probeAddr != "" {
			cfg.ProbeAddr = netip.MustParseAddr(o.probeAddr) // validated above
		}
		if o.stunAltPort >= 0 {
			port := o.stunAltPort
			if port == 0 {
				port = int(ep.LocalAddr().Port()) + 1
			}
			alt, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ep.LocalAddr().Addr(), uint16(port))))
			if err != nil {
				return fmt.Errorf("--stun-alt-port %d: %w", port, err)
			}
			cfg.AltSTUN = alt // closed by the server
		}
		srv, err := bootstrap.NewServer(cfg)
		if err != nil {
			if cfg.AltSTUN != nil {
				cfg.AltSTUN.Close()
			}
			return err
		}
		defer srv.Close()
		log.Info("bootstrap node running", "id", id.ID().String(), "listen", mon.Sanitizer().AddrPort(ep.LocalAddr()))
		fmt.Fprintf(stdout, "bootstrap %s listening on %s\n", id.ID(), ep.LocalAddr())
		waitSignal(ctx, log)
		return nil
	}
	bs, err := parseBootstraps(o.bootstrapNodes)
	if err != nil {
		return err
	}
	node, err := traversal.New(traversal.Config{Identity: id, Endpoint: ep, Bootstraps: bs, Recorder: mon, Logger: log})
	if err != nil {
		return err
	}
	defer node.Close()
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
