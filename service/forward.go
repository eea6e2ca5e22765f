package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Forwarder carries every connection accepted on a local listener as one
// stream to a peer's service, like `ssh -L`. It is the engine of
// `antnode forward`; the stream comes from Dial (a Node's DialEarly, so a
// connection's first bytes leave with the stream's header).
type Forwarder struct {
	// Listener accepts the local connections. Required; Serve closes it.
	Listener net.Listener
	// Dial opens the stream for one local connection. Required.
	Dial func(ctx context.Context) (*Conn, error)
	// Timeout bounds Dial (which may wait for the peer connection to be
	// re-established). Zero: 20 s.
	Timeout time.Duration
	// Grace is how long Serve waits, when ctx ends, for open connections
	// to finish before it closes them. Zero: 2 s.
	Grace time.Duration
	// Logger receives a record per failed connection. Nil: discarded.
	Logger *slog.Logger
}

// Serve accepts local connections until ctx ends or the listener fails,
// and carries each on a stream of its own (Join). When ctx ends it stops
// accepting, gives open connections Grace to finish, closes the rest
// cleanly, and returns after every goroutine it started has ended. It
// returns nil when ctx ended, else the listener's error.
func (f *Forwarder) Serve(ctx context.Context) error {
	if f.Listener == nil || f.Dial == nil {
		return errors.New("service: Forwarder needs a Listener and a Dial")
	}
	timeout, grace, log := f.Timeout, f.Grace, f.Logger
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	if grace <= 0 {
		grace = 2 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		active = map[net.Conn]struct{}{}
	)
	stop := context.AfterFunc(ctx, func() { f.Listener.Close() })
	defer stop()
	var err error
	for {
		local, aerr := f.Listener.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("service: forward: accept: %w", aerr)
			}
			break
		}
		mu.Lock()
		active[local] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(active, local)
				mu.Unlock()
			}()
			f.carry(ctx, local, timeout, log)
		}()
	}
	f.Listener.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		mu.Lock()
		for c := range active {
			c.Close() // Join then closes the stream: FIN for what was sent
		}
		mu.Unlock()
		<-done
	}
	return err
}

// carry opens a stream for local and joins the two.
func (f *Forwarder) carry(ctx context.Context, local net.Conn, timeout time.Duration, log *slog.Logger) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	s, err := f.Dial(dctx)
	cancel()
	if err != nil {
		log.Warn("forward: no stream for a local connection", "err", err)
		if tc, ok := local.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		local.Close()
		return
	}
	_, _, err = Join(local, s)
	switch {
	case errors.Is(err, ErrRefused):
		log.Warn("forward: the peer refused a connection", "err", err)
	case err != nil:
		log.Debug("forward: connection ended with an error", "err", err)
	}
}
