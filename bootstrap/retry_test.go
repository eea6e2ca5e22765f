package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/failsafe-go/failsafe-go"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
)

func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name     string
		min, max time.Duration
		n        int
		r        float64
		want     time.Duration
	}{
		{"first retry, least jitter", 100 * ms, 1600 * ms, 1, 0, 100 * ms}, // 75 ms cut to the minimum
		{"first retry, middle", 100 * ms, 1600 * ms, 1, 0.5, 112500 * time.Microsecond},
		{"first retry, most jitter", 100 * ms, 1600 * ms, 1, 1, 125 * ms},
		{"third retry, least", 100 * ms, 1600 * ms, 3, 0, 300 * ms},
		{"third retry, middle", 100 * ms, 1600 * ms, 3, 0.5, 400 * ms},
		{"third retry, most", 100 * ms, 1600 * ms, 3, 1, 500 * ms},
		{"at the maximum, least", 100 * ms, 1600 * ms, 5, 0, 1200 * ms},
		{"at the maximum, most", 100 * ms, 1600 * ms, 5, 1, 1600 * ms}, // 2000 ms cut to the maximum
		{"past the maximum", 100 * ms, 1600 * ms, 9, 0.5, 1400 * ms},
		{"far past the maximum", 100 * ms, 1600 * ms, 1000, 0.5, 1400 * ms},
		{"bounds equal: no jitter", 200 * ms, 200 * ms, 4, 0.9, 200 * ms},
		{"defaults, first retry", 250 * ms, 30 * time.Second, 1, 0, 250 * ms},
		{"defaults, eighth retry", 250 * ms, 30 * time.Second, 8, 0.5, 30 * time.Second * 7 / 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := backoff(tc.min, tc.max, tc.n, tc.r); got != tc.want {
				t.Fatalf("backoff(%v, %v, %d, %v) = %v, want %v", tc.min, tc.max, tc.n, tc.r, got, tc.want)
			}
		})
	}
}

// TestRegistrationRetry runs the registration's retry policy (the one
// Client.run uses) against a registration that fails 16 times, in a
// bubble whose clock moves only when everything waits: each scheduled
// delay is the time that actually passes before the next attempt, stays
// within [MinBackoff, MaxBackoff] and within the jitter range of the
// exponential delay, grows while below the maximum, and the delays vary.
func TestRegistrationRetry(t *testing.T) {
	const minD, maxD, failures = 100 * time.Millisecond, 1600 * time.Millisecond, 16
	synctest.Test(t, func(t *testing.T) {
		var delays []time.Duration
		policy := registrationRetry(minD, maxD, maxD, func() bool { return false },
			func(e failsafe.ExecutionScheduledEvent[int]) { delays = append(delays, e.Delay) })
		var at []time.Time // when each attempt ran
		got, err := failsafe.With(policy).Get(func() (int, error) {
			at = append(at, time.Now())
			if len(at) <= failures {
				return 0, fmt.Errorf("register: %w", ErrUnavailable)
			}
			return len(at), nil
		})
		if err != nil || got != failures+1 {
			t.Fatalf("got attempt %d, %v; want success at attempt %d", got, err, failures+1)
		}
		if len(delays) != failures {
			t.Fatalf("%d retries scheduled, want %d", len(delays), failures)
		}
		distinct := map[time.Duration]bool{}
		for i, d := range delays {
			n := i + 1
			if waited := at[i+1].Sub(at[i]); waited != d {
				t.Fatalf("retry %d: scheduled %v, waited %v", n, d, waited)
			}
			if d < minD || d > maxD {
				t.Fatalf("retry %d: delay %v outside [%v, %v]", n, d, minD, maxD)
			}
			base := min(maxD, minD<<(min(n, 10)-1))
			if lo, hi := base*3/4, base*5/4; d < lo || d > hi {
				t.Fatalf("retry %d: delay %v outside the jitter range [%v, %v] of %v", n, d, lo, hi, base)
			}
			if i > 0 && base < maxD && d <= delays[i-1] {
				t.Fatalf("retry %d: delay %v does not grow from %v", n, d, delays[i-1])
			}
			distinct[d] = true
		}
		// 16 delays drawn from continuous ranges: identical ones mean no
		// jitter (as would 12 delays pinned at the maximum).
		if len(distinct) < failures/2 {
			t.Fatalf("only %d distinct delays of %d: %v", len(distinct), failures, delays)
		}
	})
}

// TestRegistrationRetryStops: a key mismatch is not retried, and neither
// is anything once the client is stopped.
func TestRegistrationRetryStops(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		stopped bool
	}{
		{"key mismatch", fmt.Errorf("register: %w", &identity.KeyMismatchError{}), false},
		{"client stopped", fmt.Errorf("register: %w", ErrUnavailable), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				scheduled := 0
				policy := registrationRetry(time.Second, time.Minute, time.Minute, func() bool { return tc.stopped },
					func(failsafe.ExecutionScheduledEvent[int]) { scheduled++ })
				attempts := 0
				_, err := failsafe.With(policy).Get(func() (int, error) {
					attempts++
					return 0, tc.err
				})
				if !errors.Is(err, tc.err) || attempts != 1 || scheduled != 0 {
					t.Fatalf("%d attempts, %d retries scheduled, err %v; want one attempt returning %v", attempts, scheduled, err, tc.err)
				}
			})
		})
	}
}

// slowConn hands what it reads over delay late, once armed: a control
// connection over which the bootstrap's answers come late.
type slowConn struct {
	net.Conn
	delay *atomic.Int64 // nanoseconds
}

func (c slowConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	time.Sleep(time.Duration(c.delay.Load()))
	return n, err
}

// TestLateAckWithdrawsRequest: an initiator whose bootstrap acknowledges
// its connect request too late gives up on that bootstrap and says so
// (ConnectCancel): the request that reached the bootstrap all the same
// ends the target's introduction as canceled, at once, instead of leaving
// the target to check an initiator that went elsewhere (a lossy CI matrix
// counted such a responder attempt failed after 15 s).
func TestLateAckWithdrawsRequest(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	ended := make(chan error, 4)
	offered := make(chan struct{}, 4)
	target := startClient(t, srv, ClientConfig{OnOffer: func(o *Offer) {
		offered <- struct{}{}
		s, err := o.Accept(Intro{})
		if err != nil {
			ended <- err
			return
		}
		select {
		case <-s.Done():
			ended <- s.Err()
		case <-time.After(10 * time.Second):
			ended <- errors.New("the introduction still stands after 10 s")
		}
	}})
	ready(t, target)
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: blockedConn{raw}}) // control over TCP, where reads can be slowed
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	delay := new(atomic.Int64)
	init := startClient(t, srv, ClientConfig{Endpoint: ep, TCPFallback: true, TCPDelay: 50 * time.Millisecond, MinAckWait: 50 * time.Millisecond,
		DialTCP: func(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a.String())
			if err != nil {
				return nil, err
			}
			return slowConn{Conn: c, delay: delay}, nil
		}})
	ready(t, init)
	// Far beyond the acknowledgement's wait (4 round trips, at least
	// MinAckWait), whatever the round trip measured under load.
	delay.Store(int64(1500 * time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := init.Connect(ctx, target.cfg.Identity.ID(), Intro{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("connect with a late acknowledgement: %v, want ErrUnavailable", err)
	}
	select {
	case <-offered:
	case <-time.After(5 * time.Second):
		t.Fatal("the target was never offered the request")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, ErrPeerCanceled) {
			t.Fatalf("the target's introduction ended with %v, want ErrPeerCanceled", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the target's introduction still stands 3 s after the initiator gave up on it")
	}
}
