package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/service"
	"github.com/antnode/antnode/traversal"
)

// clientOptions are the flags of the commands that use one peer's service
// for a while (forward, pipe): a node of their own, its bootstraps, and
// how long to wait for the peer.
type clientOptions struct {
	peer           identity.PeerID
	target         peerArg // peer, by ID or ticket
	service        string
	bootstrapNodes string
	key            string
	listen         string
	timeout        time.Duration
	relay          peerFlags
	log            logFlags
	san            *monitor.Sanitizer // built with the logger
}

func (o *clientOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.bootstrapNodes, "bootstrap-nodes", "", "comma-separated bootstrap nodes, HOST:PORT, PEERID@HOST:PORT or dns:NAME (SRV _antnode._udp.NAME)")
	fs.StringVar(&o.key, "key", "", "path of this node's key (empty: an ephemeral identity, which no --allow list names)")
	fs.StringVar(&o.listen, "listen", "", "UDP address of this node's socket; 0.0.0.0:P,[::]:P for one dual-stack socket (empty: 0.0.0.0:0,[::]:0 where the host has IPv4 and global IPv6, else 0.0.0.0:0)")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Second, "how long to wait for the peer connection (at start, and for each stream; at most 24h)")
	o.relay.register(fs)
	o.log.register(fs, "warn")
	configFlag(fs)
}

// parse parses args with cmd's manners (-h, a mistyped flag, --config),
// then the positional PEERID|TICKET SERVICE and the flags, and builds the
// logger. ok is false when the command is done, with exit code code.
func (o *clientOptions) parse(cmd command, fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (log *slog.Logger, code int, ok bool) {
	pos, code, ok := cmd.parse(fs, args, stdout, stderr)
	if !ok {
		return nil, code, false
	}
	log, err := o.check(pos, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' for usage.\n", cmd.name, err, cmd.name)
		return nil, exitUsage, false
	}
	return log, exitOK, true
}

// check checks the positional arguments and the flags, and builds the
// logger.
func (o *clientOptions) check(pos []string, stderr io.Writer) (*slog.Logger, error) {
	var err error
	if len(pos) != 2 {
		return nil, errors.New("want PEERID|TICKET SERVICE")
	}
	if o.target, err = parsePeerArg(pos[0]); err != nil {
		return nil, err
	}
	o.peer, o.bootstrapNodes = o.target.id, o.target.bootstrapNodes(o.bootstrapNodes)
	o.service = pos[1]
	if err := service.ValidName(o.service); err != nil {
		return nil, err
	}
	if o.bootstrapNodes == "" {
		return nil, errors.New("--bootstrap-nodes is required (or a ticket that names bootstraps)")
	}
	if err := firstErr(inRange("timeout", o.timeout, time.Millisecond, maxCmdTimeout), o.relay.validate()); err != nil {
		return nil, err
	}
	log, san, err := o.log.build(stderr)
	o.san = san
	return log, err
}

// open starts the node and opens one stream to the peer's service,
// waiting (within the timeout) until the service has taken it: a refusal
// such as not_allowed is its error.
func (o *clientOptions) open(ctx context.Context, log *slog.Logger) (*clientNode, *service.Conn, error) {
	c, err := startClient(ctx, *o, log, o.san)
	if err != nil {
		return nil, nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	s, err := o.target.dial(dctx, c.node, o.service)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, s, nil
}

// clientNode is the node of a forward or pipe, registered with its
// bootstraps.
type clientNode struct {
	node *traversal.Node
	ep   *endpoint.Endpoint
	pm   *portMapping
	// stopDNS stops following the dns: bootstraps (see followDNS).
	stopDNS func()
}

func (c *clientNode) Close() {
	c.stopDNS()
	c.pm.Close()
	c.node.Close()
	c.ep.Close()
}

// startClient starts the node, waits (within the timeout) until a
// bootstrap has registered it, and measures its NAT: the strategy of every
// connection depends on this side's type (a node whose UDP is blocked
// must reach the relay over TCP; a symmetric one needs the birthday
// search), so a forward or pipe must know it as connect does. The node's
// events go to a monitor that logs them (at the log level; addresses
// sanitised).
func startClient(ctx context.Context, o clientOptions, log *slog.Logger, san *monitor.Sanitizer) (*clientNode, error) {
	rec, err := monitor.New(monitor.Config{Logger: log, Sanitizer: san, Registerer: prometheus.NewRegistry()})
	if err != nil {
		return nil, err
	}
	bs, dnsw, err := resolveBootstraps(ctx, o.bootstrapNodes, o.relay.dnsServer, log)
	if err != nil {
		return nil, err
	}
	if o.listen == "" {
		o.listen = defaultListenHere()
	}
	id, err := loadIdentity(o.key, log)
	if err != nil {
		return nil, err
	}
	ep, err := listenPeer(o.listen, endpoint.Config{Logger: log, StatelessResetKey: resetKey(id)})
	if err != nil {
		return nil, err
	}
	prefix, err := nat64For(ctx, o.listen, bs, o.relay.dnsServer, log)
	if err != nil {
		ep.Close()
		return nil, badInput(err)
	}
	bs = traversal.MapBootstraps(prefix, bs)
	ncfg := traversal.Config{Identity: id, Endpoint: ep, Bootstraps: bs, Recorder: rec, Logger: log,
		ConnectTimeout: o.timeout, Services: service.Config{Names: []string{o.service}}, NAT64: prefix}
	if err := o.relay.apply(&ncfg); err != nil {
		ep.Close()
		return nil, err
	}
	pm, err := newPortMapping(o.relay.portmapMode, ep, bs, prometheus.NewRegistry(), log, san, &ncfg)
	if err != nil {
		ep.Close()
		return nil, err
	}
	node, err := traversal.New(ncfg)
	if err != nil {
		ep.Close()
		return nil, err
	}
	c := &clientNode{node: node, ep: ep, pm: pm, stopDNS: followDNS(ctx, dnsw, node)}
	if err := pm.start(ctx, node); err != nil {
		c.Close()
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := node.WaitReady(rctx); err != nil {
		c.Close()
		return nil, &traversal.ConnectError{Phase: monitor.PhaseRegister, Reason: monitor.ReasonBootstrapUnreachable, Err: err}
	}
	// Bounded, like connect's: an unknown type is tried as the easy kind.
	cctx, cancel := context.WithTimeout(rctx, 3*time.Second)
	defer cancel()
	if nat, err := node.Classify(cctx); err != nil {
		log.Warn("NAT type unknown; trying as if endpoint-independent", "err", err)
	} else {
		log.Info("NAT type", "nat", nat.Class())
	}
	pm.wait(rctx)
	return c, nil
}

// failLine prints a failure as one line: what failed, the reason from the
// closed set, and the error.
func failLine(w io.Writer, cmd string, err error) {
	fmt.Fprintf(w, "antnode %s: %s: %s\n", cmd, traversal.Reason(err), oneLine(err))
}
