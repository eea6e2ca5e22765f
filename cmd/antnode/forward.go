package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/antnode/antnode/service"
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
	fs.SetOutput(stderr)
	o.register(fs)
	local := fs.String("local", "127.0.0.1:0", "local TCP address to accept connections on")
	asJSON := fs.Bool("json", false, "print one JSON object when ready")
	if err := o.parse(fs, args); err != nil {
		fmt.Fprintln(stderr, "antnode forward:", err)
		return exitUsage
	}
	if _, _, err := net.SplitHostPort(*local); err != nil {
		fmt.Fprintln(stderr, "antnode forward: --local:", err)
		return exitUsage
	}
	log, _, err := o.log.build(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "antnode forward:", err)
		return exitUsage
	}
	ln, err := net.Listen("tcp", *local)
	if err != nil {
		fmt.Fprintln(stderr, "antnode forward: --local:", err)
		return exitFailure
	}
	defer ln.Close()
	c, err := startClient(ctx, o, log, nil)
	if err != nil {
		failLine(stderr, "forward", err)
		return exitFailure
	}
	defer c.Close()
	// Ready means: the peer is connected and its service takes this
	// node's streams (a refusal such as not_allowed ends the command).
	pctx, cancel := context.WithTimeout(ctx, o.timeout)
	probe, err := c.node.Dial(pctx, o.peer, o.service)
	cancel()
	if err != nil {
		failLine(stderr, "forward", err)
		return exitFailure
	}
	probe.Close()
	pc, err := c.node.PeerConn(ctx, o.peer)
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
	f := &service.Forwarder{Listener: ln, Timeout: o.timeout, Logger: log,
		Dial: func(ctx context.Context) (*service.Conn, error) { return c.node.DialEarly(ctx, o.peer, o.service) }}
	if err := f.Serve(ctx); err != nil {
		failLine(stderr, "forward", err)
		return exitFailure
	}
	return exitOK
}
