package traversal

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/internal/testkit"
)

// TestSetBootstraps: a removed bootstrap's registration ends, a new one
// takes its slot (label), a kept one stays, and none starts after Close.
func TestSetBootstraps(t *testing.T) {
	b1, b2, b3 := startBootstrap(t), startBootstrap(t), startBootstrap(t)
	n := startNode(t, nil, b1, b2)
	kept := n.bootstrapClients()[0]
	if err := n.SetBootstraps([]Bootstrap{b1, b3, b3}); err != nil {
		t.Fatal(err)
	}
	st := n.Bootstraps()
	if len(st) != 2 || st[0].Addr != b1.Addr || st[1].Addr != b3.Addr || st[1].Label != "1" || n.bootstrapClients()[0] != kept {
		t.Fatalf("after the change: %+v", st)
	}
	testkit.WaitFor(t, 5*time.Second, "registered with the new bootstrap", func() bool { return n.Bootstraps()[1].Registered })

	// Another key for a kept address replaces its client.
	other := Bootstrap{Addr: b1.Addr, ID: b2.ID}
	if err := n.SetBootstraps([]Bootstrap{other, b3}); err != nil {
		t.Fatal(err)
	}
	if n.bootstrapClients()[0] == kept {
		t.Fatal("a bootstrap named with another key kept its client")
	}
	many := make([]Bootstrap, maxBootstrapSlots+1)
	for i := range many {
		many[i] = Bootstrap{Addr: netip.AddrPortFrom(b1.Addr.Addr(), uint16(20000+i))}
	}
	if err := n.SetBootstraps(many); !errors.Is(err, ErrBootstrapSlotsFull) || len(n.Bootstraps()) != maxBootstrapSlots {
		t.Fatalf("beyond the slots: %v, %d bootstraps", err, len(n.Bootstraps()))
	}
	n.Close()
	if err := n.SetBootstraps([]Bootstrap{b1}); !errors.Is(err, bootstrap.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
