package main

import (
	"errors"
	"log/slog"
	"net"
	"strconv"
	"syscall"
)

// defaultMetricsAddr is where a node serves its HTTP surface unless told
// otherwise.
const defaultMetricsAddr = "127.0.0.1:9464"

// metricsFallbackPorts is how many ports above the default a node tries
// when the default is taken (a second node on the host).
const metricsFallbackPorts = 10

// addrFlag is --metrics-addr: its value, and whether the user chose it
// (on the command line or in --config). A chosen address that cannot be
// had is fatal; the default one is not.
type addrFlag struct {
	value string
	set   bool
}

func (a *addrFlag) String() string { return a.value }

func (a *addrFlag) Set(v string) error {
	a.value, a.set = v, true
	return nil
}

// listen opens the surface's listener. When the address is the default
// and its port is taken, it takes the next free one of the
// metricsFallbackPorts above it; when all are taken, it says so and
// returns nil: the node runs without its HTTP surface.
func (a *addrFlag) listen(log *slog.Logger) (net.Listener, error) {
	ln, err := net.Listen("tcp", a.value)
	if err == nil || a.set || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	host, port, serr := net.SplitHostPort(a.value)
	p, perr := strconv.Atoi(port)
	if serr != nil || perr != nil {
		return nil, err
	}
	for i := 1; i <= metricsFallbackPorts && p+i <= 65535; i++ {
		if ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p+i))); err == nil {
			log.Warn("the default metrics port is taken (another node on this host?); serving on the next free one",
				"default_port", p, "port", p+i, "addr", ln.Addr().String())
			return ln, nil
		}
	}
	log.Warn("the default metrics port and the ones above it are taken; running without /metrics, health probes and API (set --metrics-addr)",
		"default_port", p, "tried", metricsFallbackPorts+1)
	return nil, nil
}
