package traversal

import (
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// TestOwnEndpointReroutesThere: a connection on a socket of its own (the
// birthday search's) is rerouted on that socket, not the node's, and its
// endpoint and injector go with the connection.
func TestOwnEndpointReroutesThere(t *testing.T) {
	n, err := New(Config{Identity: testkit.Identity(t), Endpoint: testkit.Endpoint(t), NetworkPoll: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	pair := testkit.NewQUICPair(t, nil)
	other := testkit.NewQUICPair(t, nil)
	ep := testkit.Endpoint(t)
	n.ownEndpoint(pair.Dialer, ep)
	if got := n.endpointOf(pair.Dialer); got != ep {
		t.Fatalf("endpointOf the birthday connection = %v, want its own endpoint", got.LocalAddr())
	}
	if got := n.endpointOf(other.Dialer); got != n.cfg.Endpoint {
		t.Fatalf("endpointOf another connection = %v, want the node's", got.LocalAddr())
	}
	inj, err := n.injector(ep)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := n.injector(ep); again != inj {
		t.Fatal("a second injector for the same endpoint")
	}
	if main, _ := n.injector(n.cfg.Endpoint); main == inj {
		t.Fatal("the node's socket shares the connection's injector")
	}
	pair.Dialer.CloseWithError(0, "done")
	testkit.WaitFor(t, 5*time.Second, "the connection's endpoint and injector released", func() bool {
		n.injMu.Lock()
		defer n.injMu.Unlock()
		return n.owned[pair.Dialer] == nil && n.injs[ep] == nil
	})
	if err := inj.Inject([]byte{0x40}); err == nil {
		t.Fatal("the released injector still sends")
	}
}
