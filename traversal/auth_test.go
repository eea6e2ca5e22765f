package traversal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// TestWrongKeyAtPeerAddressIsRejected: the bootstrap introduces A to B (a
// real registration with B's key), but what answers QUIC at B's addresses
// is a node holding another key. A's handshake must fail with a key
// mismatch, without a connection on either side and without falling back
// to the relay, and A tells B's introduction that it gave up.
func TestWrongKeyAtPeerAddressIsRejected(t *testing.T) {
	tests := []struct {
		name string
		// sameSocket: the impostor owns B's socket, so it answers at B's
		// observed address; otherwise B announces the impostor's address
		// as a host candidate and B's own socket answers nothing.
		sameSocket bool
	}{
		{"impostor on the peer's socket", true},
		{"impostor at an announced candidate", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bs := startBootstrap(t)
			recA := &recorder{}
			a := startNode(t, recA, bs)

			impostorID := testkit.Identity(t)
			impostorEP := testkit.Endpoint(t)
			impostor, err := New(Config{Identity: impostorID, Endpoint: impostorEP})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { impostor.Close() })

			bID := testkit.Identity(t)
			bEP := impostorEP
			var announce []wire.Candidate
			if !tc.sameSocket {
				bEP = testkit.Endpoint(t)
				announce = []wire.Candidate{{Kind: wire.KindHost, Priority: 0x7effffff, Addr: impostorEP.LocalAddr()}}
			}
			sessions := make(chan *bootstrap.Session, 1)
			b, err := bootstrap.NewClient(bootstrap.ClientConfig{Identity: bID, Endpoint: bEP, Addr: bs.Addr, ID: bs.ID,
				OnOffer: func(o *bootstrap.Offer) {
					if s, err := o.Accept(bootstrap.Intro{Candidates: announce}); err == nil {
						sessions <- s
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := b.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}

			c, err := a.Connect(ctx, bID.ID())
			if err == nil {
				c.Close()
				t.Fatalf("connected to %s although the node that answered holds %s's key", bID.ID().Short(), impostorID.ID().Short())
			}
			var ce *ConnectError
			if !errors.As(err, &ce) || ce.Reason != event.ReasonKeyMismatch || ce.Phase != event.PhaseHandshake {
				t.Fatalf("got %v, want a key mismatch in the handshake", err)
			}
			var km *identity.KeyMismatchError
			if !errors.Is(err, identity.ErrKeyMismatch) || !errors.As(err, &km) || km.Want != bID.ID() || km.Got != impostorID.ID() {
				t.Fatalf("got %v, want a key mismatch wanting %s, got %s", err, bID.ID().Short(), impostorID.ID().Short())
			}
			if n := len(a.Conns()); n != 0 {
				t.Fatalf("A keeps %d connections", n)
			}
			if n := len(impostor.Conns()); n != 0 {
				t.Fatalf("the impostor accepted %d connections", n)
			}
			for _, p := range a.Peers() {
				if p.ID == bID.ID() && p.State != StateFailed {
					t.Fatalf("B's state %s, want failed", p.State)
				}
			}
			hs := false
			for _, ev := range recA.Kind(event.KindPhaseEnd) {
				if ev.Phase == event.PhaseHandshake {
					hs = ev.Outcome == event.OutcomeFail && ev.Reason == event.ReasonKeyMismatch
				}
			}
			if !hs {
				t.Fatalf("handshake phase events %+v, want a key mismatch failure", recA.Kind(event.KindPhaseEnd))
			}
			if ends := recA.Kind(event.KindAttemptEnd); len(ends) != 1 || ends[0].Reason != event.ReasonKeyMismatch {
				t.Fatalf("attempt ends %+v, want one with key mismatch", ends)
			}
			if fb := recA.Kind(event.KindFallback); len(fb) != 0 {
				t.Fatalf("fell back after a key mismatch: %+v", fb)
			}
			select {
			case s := <-sessions:
				select {
				case <-s.Done():
					if !errors.Is(s.Err(), bootstrap.ErrPeerCanceled) {
						t.Fatalf("B's introduction ended with %v, want ErrPeerCanceled", s.Err())
					}
				case <-time.After(3 * time.Second):
					t.Fatal("B's introduction did not hear that A gave up")
				}
			case <-time.After(3 * time.Second):
				t.Fatal("B was never offered the introduction")
			}
		})
	}
}
