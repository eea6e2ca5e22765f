package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/service"
	"github.com/antnode/antnode/traversal"
)

// serviceFlags are the daemon's flags for the services it exposes.
type serviceFlags struct {
	expose     exposeList
	allow      string
	maxStreams int
	streamIdle time.Duration
}

func (f *serviceFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.expose, "expose", "serve a local TCP service to peers: NAME=HOST:PORT, optionally ,allow=PEERID[+PEERID...] or ,allow=any (repeatable)")
	fs.StringVar(&f.allow, "allow", "", "peers that may use the exposed services: PEERID[,PEERID...] or any (default: nobody)")
	fs.IntVar(&f.maxStreams, "max-streams", 1024, "streams one peer may have open to this node's services at once (1-65536)")
	fs.DurationVar(&f.streamIdle, "stream-idle", 10*time.Minute, "end a service stream on which nothing moved for this long (0-168h; 0: never)")
}

// exposed is one --expose: a service name, its TCP target, its own allow
// list (nil: --allow's).
type exposed struct {
	name, target string
	allow        *service.Allow
}

// exposeList is the repeatable --expose flag.
type exposeList []exposed

func (l *exposeList) String() string {
	parts := make([]string, len(*l))
	for i, e := range *l {
		parts[i] = e.name + "=" + e.target
	}
	return strings.Join(parts, " ")
}

// Set parses NAME=HOST:PORT[,allow=LIST], LIST being "any" or peer IDs
// joined by '+'.
func (l *exposeList) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("--expose %q: want NAME=HOST:PORT", v)
	}
	if err := service.ValidName(name); err != nil {
		return fmt.Errorf("--expose %q: %w", v, err)
	}
	if name == traversal.TransferService {
		return fmt.Errorf("--expose %q: %q is the built-in transfer service", v, name)
	}
	target, opt, hasOpt := strings.Cut(rest, ",")
	if _, _, err := net.SplitHostPort(target); err != nil {
		return fmt.Errorf("--expose %q: target: %w", v, err)
	}
	e := exposed{name: name, target: target}
	if hasOpt {
		list, ok := strings.CutPrefix(opt, "allow=")
		if !ok {
			return fmt.Errorf("--expose %q: unknown option %q (want allow=...)", v, opt)
		}
		a, err := service.ParseAllow(strings.ReplaceAll(list, "+", ","))
		if err != nil {
			return fmt.Errorf("--expose %q: %w", v, err)
		}
		e.allow = &a
	}
	for _, x := range *l {
		if x.name == name {
			return fmt.Errorf("--expose %q: service %q given twice", v, name)
		}
	}
	*l = append(*l, e)
	return nil
}

func (f *serviceFlags) validate() error {
	if err := firstErr(inRange("max-streams", f.maxStreams, 1, maxServiceStreams),
		inRange("stream-idle", f.streamIdle, 0, maxStreamIdle)); err != nil {
		return err
	}
	_, err := service.ParseAllow(f.allow)
	if err != nil {
		return fmt.Errorf("--allow: %w", err)
	}
	return nil
}

// config is the node's service configuration.
func (f *serviceFlags) config(reg prometheus.Registerer, dials ...string) service.Config {
	idle := f.streamIdle
	if idle == 0 {
		idle = -1 // the flag's 0 is "never"
	}
	return service.Config{MaxStreamsPerPeer: f.maxStreams, IdleTimeout: idle, Registerer: reg, Names: dials}
}

// serve registers every --expose with the node and says, for each, who
// may use it.
func (f *serviceFlags) serve(node *traversal.Node, log *slog.Logger) error {
	global, _ := service.ParseAllow(f.allow)
	for _, e := range f.expose {
		allow := global
		if e.allow != nil {
			allow = *e.allow
		}
		if err := node.Services().Handle(e.name, allow, e.target, service.TCPTarget(e.target, log)); err != nil {
			return fmt.Errorf("--expose %s: %w", e.name, err)
		}
		if allow.Nobody() {
			log.Warn("service exposed, but no peer may use it: add --allow PEERID (or --allow any)", "service", e.name)
		} else {
			log.Info("service exposed", "service", e.name, "target", e.target, "allow", allow.String())
		}
	}
	return nil
}
