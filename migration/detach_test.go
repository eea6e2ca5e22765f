package migration

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestDetachedReadEnds: a read on a detached socket returns once a read
// deadline has passed, whichever came first, the deadline or the detach
// (quic-go's Transport.Close sets the deadline and waits for its reader;
// a read that never returned hung the node's Close).
func TestDetachedReadEnds(t *testing.T) {
	tests := []struct {
		name string
		run  func(d *DetachConn)
	}{
		{"deadline after the detach", func(d *DetachConn) {
			d.Detach()
			d.SetReadDeadline(time.Now())
		}},
		{"deadline before the detach", func(d *DetachConn) {
			d.SetReadDeadline(time.Now())
			time.Sleep(20 * time.Millisecond) // the inner read fails on the deadline first
			d.Detach()
		}},
		{"future deadline before the detach", func(d *DetachConn) {
			d.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			d.Detach()
		}},
		{"close", func(d *DetachConn) {
			d.Detach()
			d.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			d := NewDetachConn(pc)
			defer d.Close()
			done := make(chan error, 1)
			go func() {
				_, _, err := d.ReadFrom(make([]byte, 1500))
				done <- err
			}()
			time.Sleep(10 * time.Millisecond) // the reader is blocked
			tt.run(d)
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("read returned %v, want a deadline error", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the read on the detached socket never returned")
			}
		})
	}
}
