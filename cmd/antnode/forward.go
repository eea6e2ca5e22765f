package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/antnode/antnode/service"
	"github.com/antnode/antnode/traversal"
)

// forwardReady is what `antnode forward --json` prints once it listens.
type forwardReady struct {
	Listening string  `json:"listening"`
	Peer      string  `json:"peer"`
	Service   string  `json:"service"`
	Path      string  `json:"path"`
	RTTMS     float64 `json:"rtt_ms"`
}

func mainForward(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o clientOptions
	fs := flag.NewFlagSet("antnode forward", flag.ContinueOnError)
	o.register(fs)
	local := fs.String("local", "127.0.0.1:0", "local TCP address to accept connections on")
	asJSON := fs.Bool("json", false, "print one JSON object when ready")
	cmd := command{name: "antnode forward", positional: true, synopsis: `usage: antnode forward PEERID|TICKET SERVICE --local HOST:PORT --bootstrap-nodes ADDR[,ADDR...] --key PATH [--json] [flags]
  carry each TCP connection accepted on --local as one stream to PEERID's service SERVICE (like ssh -L);
  runs until SIGINT or SIGTERM; a refusal (not_allowed, unknown_service, ...) ends it with exit 1
`}
	log, code, ok := o.parse(cmd, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if _, _, err := net.SplitHostPort(*local); err != nil {
		fmt.Fprintf(stderr, "antnode forward: --local: %v\nRun 'antnode forward -h' for usage.\n", err)
		return exitUsage
	}
	ln, err := net.Listen("tcp", *local)
	if err != nil {
		fmt.Fprintln(stderr, "antnode forward: --local:", err)
		return exitFailure
	}
	defer ln.Close()
	// Ready means: the peer is connected and its service takes this
	// node's streams (a refusal such as not_allowed ends the command).
	c, probe, err := o.open(ctx, log)
	if err != nil {
		failLine(stderr, "forward", err)
		return exitFailure
	}
	defer c.Close()
	probe.Close()
	pc, err := o.target.peerConn(ctx, c.node)
	if err != nil {
		failLine(stderr, "forward", err)
		return exitFailure
	}
	if *asJSON {
		b, _ := json.Marshal(forwardReady{Listening: ln.Addr().String(), Peer: o.peer.String(), Service: o.service,
			Path: pc.Path().String(), RTTMS: ms(pc.RTT())})
		fmt.Fprintln(stdout, string(b))
	} else {
		fmt.Fprintf(stdout, "forwarding %s -> %s/%s\n", ln.Addr(), o.peer, o.service)
	}
	kctx, stopKeep := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		keepPeer(kctx, pc, func(ctx context.Context) (*traversal.Conn, error) { return o.target.peerConn(ctx, c.node) }, log)
	}()
	defer func() { stopKeep(); <-kept }()
	f := &service.Forwarder{Listener: ln, Timeout: o.timeout, Logger: log,
		Dial: func(ctx context.Context) (*service.Conn, error) { return o.target.dialEarly(ctx, c.node, o.service) }}
	if err := f.Serve(ctx); err != nil {
		failLine(stderr, "forward", err)
		return exitFailure
	}
	return exitOK
}

// keepPeer keeps a connection to the peer while ctx lasts: when the
// current one ends it connects again at once, then with backoff (0.5 s
// doubling to 30 s, jittered) while attempts fail, so that a forwarded
// connection finds the peer connection up, or waits for it within its
// --timeout. It returns when ctx ends.
func keepPeer(ctx context.Context, c *traversal.Conn, reconnect func(context.Context) (*traversal.Conn, error), log *slog.Logger) {
	retry := retrypolicy.NewBuilder[*traversal.Conn]().
		WithMaxRetries(-1).
		WithBackoff(500*time.Millisecond, 30*time.Second).
		WithJitterFactor(0.25).
		OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[*traversal.Conn]) {
			log.Warn("forward: reconnecting to the peer", "attempt", e.Attempts(), "in", e.Delay, "err", e.LastError())
		}).Build()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.QUIC().Context().Done():
		}
		log.Warn("forward: peer connection lost; reconnecting", "err", context.Cause(c.QUIC().Context()))
		next, err := failsafe.With(retry).WithContext(ctx).Get(func() (*traversal.Conn, error) {
			return reconnect(ctx)
		})
		if err != nil {
			return // ctx ended
		}
		log.Info("forward: peer connection up", "path", next.Path().String())
		c = next
	}
}
