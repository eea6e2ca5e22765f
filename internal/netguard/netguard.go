// Package netguard keeps a TCP listener accepting under resource
// exhaustion and bounds the connections it holds.
//
// A Listener wraps a net.Listener. Its Accept never returns a temporary
// error (EMFILE, ENFILE, ECONNABORTED, ENOBUFS, ENOMEM): like net/http's
// Server.Serve it waits, 5 ms doubling to 1 s, and tries again, so a
// server whose accept loop returns on any error (pion's TURN server, for
// one) survives a flood that runs the process out of file descriptors.
// While it waits, Err reports it as not accepting (for /readyz), until a
// retry accepts a connection or finds none waiting. It closes
// at once the connections past its caps in total and per source IP, and
// remembers the ones it holds so that CloseConns can end them. It starts
// no goroutines.
package netguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Backoff bounds of Accept's retries after a temporary error (net/http's).
const (
	MinBackoff = 5 * time.Millisecond
	MaxBackoff = time.Second
)

// Config configures a Listener.
type Config struct {
	// MaxConns bounds the connections held at once; one more is closed as
	// soon as it is accepted. Zero: 4096.
	MaxConns int
	// MaxConnsPerIP bounds the connections held at once from one source
	// IP address. Zero: 32.
	MaxConnsPerIP int
	// OnRefused hears each connection closed at once for a cap (perIP:
	// the per-IP cap, else the total). It must not block. Nil: ignored.
	OnRefused func(src netip.AddrPort, perIP bool)
	// Logger hears the start and end of a spell of accept errors. Nil:
	// discarded.
	Logger *slog.Logger
	// Name names the listener in logs and errors ("bootstrap TCP").
	// Empty: "TCP".
	Name string
}

// ErrNotAccepting is the error of Err while the listener is not accepting.
var ErrNotAccepting = errors.New("listener not accepting")

// Listener is a net.Listener that retries temporary accept errors and
// caps the connections it holds.
type Listener struct {
	net.Listener
	cfg  Config
	done chan struct{}
	once sync.Once

	mu    sync.Mutex
	err   error // the last accept error; nil while accepting
	conns map[*Conn]struct{}
	perIP map[netip.Addr]int
}

// New wraps ln.
func New(ln net.Listener, cfg Config) *Listener {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = "TCP"
	}
	return &Listener{Listener: ln, cfg: cfg, done: make(chan struct{}),
		conns: map[*Conn]struct{}{}, perIP: map[netip.Addr]int{}}
}

// Temporary reports whether an accept error passes: the process or the
// system is out of descriptors or memory, or a client gave up before its
// connection was accepted.
func Temporary(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Accept returns the next connection within the caps. It returns an error
// only when the listener has failed for good (it was closed).
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if delay > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				// The retry after a temporary error found no connection
				// waiting, and no error: it accepts again.
				l.probe(time.Time{})
				delay = 0
				l.setErr(nil)
				continue
			}
			if !Temporary(err) {
				l.setErr(fmt.Errorf("stopped: %w", err))
				return nil, err
			}
			delay = min(max(2*delay, MinBackoff), MaxBackoff)
			l.setErr(err)
			if !l.wait(delay) {
				return nil, net.ErrClosed
			}
			l.probe(time.Now().Add(probeWindow))
			continue
		}
		if delay > 0 {
			l.probe(time.Time{})
			delay = 0
		}
		l.setErr(nil)
		if gc := l.admit(c); gc != nil {
			return gc, nil
		}
	}
}

// probeWindow is how long the retry after a temporary error waits for a
// connection before it counts the listener as accepting again: the accept
// error (EMFILE) comes at once when it persists, even with no connection
// waiting, so a retry that waits has a descriptor for the next one.
const probeWindow = 20 * time.Millisecond

// probe sets the deadline of the listener's next Accept (zero: none),
// where the listener has deadlines. Without one, the listener counts as
// not accepting after a temporary error until its next connection.
func (l *Listener) probe(t time.Time) {
	if d, ok := l.Listener.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(t)
	}
}

// wait waits d, or until the listener is closed (false).
func (l *Listener) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

// setErr records the accept state, logging its changes.
func (l *Listener) setErr(err error) {
	l.mu.Lock()
	was := l.err
	l.err = err
	l.mu.Unlock()
	switch {
	case was == nil && err != nil:
		l.cfg.Logger.Warn("listener not accepting; retrying", "listener", l.cfg.Name, "err", err)
	case was != nil && err == nil:
		l.cfg.Logger.Info("listener accepting again", "listener", l.cfg.Name)
	}
}

// admit wraps c, or closes it if a cap is reached (and returns nil).
func (l *Listener) admit(c net.Conn) *Conn {
	src := addrPort(c.RemoteAddr())
	ip := src.Addr()
	l.mu.Lock()
	total, perIP := len(l.conns) >= l.cfg.MaxConns, l.perIP[ip] >= l.cfg.MaxConnsPerIP
	if total || perIP {
		l.mu.Unlock()
		c.Close()
		if l.cfg.OnRefused != nil {
			l.cfg.OnRefused(src, perIP)
		}
		return nil
	}
	gc := &Conn{Conn: c, l: l, ip: ip}
	l.conns[gc] = struct{}{}
	l.perIP[ip]++
	l.mu.Unlock()
	return gc
}

// Err is nil while the listener accepts, and an error that matches
// ErrNotAccepting (and the accept error) while it does not: it is backing
// off after a temporary error, or it stopped.
func (l *Listener) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		return nil
	}
	return fmt.Errorf("%s %w: %w", l.cfg.Name, ErrNotAccepting, l.err)
}

// Conns returns the number of connections held.
func (l *Listener) Conns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Close closes the listener (a waiting Accept returns); it leaves the
// connections open (see CloseConns).
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// CloseConns closes every connection the listener holds.
func (l *Listener) CloseConns() {
	l.mu.Lock()
	cs := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	l.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// Conn is a connection a Listener holds; closing it frees its place.
type Conn struct {
	net.Conn
	l    *Listener
	ip   netip.Addr
	once sync.Once
}

// NetConn returns the connection it wraps (as tls.Conn.NetConn does): the
// kernel's socket, for TCP_INFO.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Close closes the connection and frees its place under the caps.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		if c.l.perIP[c.ip]--; c.l.perIP[c.ip] <= 0 {
			delete(c.l.perIP, c.ip)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
