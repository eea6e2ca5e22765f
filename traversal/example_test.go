package traversal_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/service"
	"github.com/antnode/antnode/traversal"
)

// Example_httpBetweenPeers serves HTTP on one node and fetches it from
// another by peer ID, as tsnet does it: the server is net/http on the
// node's service listener, the client an http.Client whose transport
// dials peers. Everything runs on loopback: a bootstrap, and two nodes
// that it introduces.
func Example_httpBetweenPeers() {
	// A bootstrap node (in a deployment: `antnode --bootstrap`).
	bootID, _ := identity.Generate()
	bootEP, _ := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	defer bootEP.Close()
	boot, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: bootID, Endpoint: bootEP})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer boot.Close()
	bs := []traversal.Bootstrap{{Addr: boot.Addr(), ID: bootID.ID()}}

	// Two nodes, each with its key and one UDP socket.
	start := func() (*traversal.Node, error) {
		id, _ := identity.Generate()
		ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
		if err != nil {
			return nil, err
		}
		n, err := traversal.New(traversal.Config{Identity: id, Endpoint: ep, Bootstraps: bs})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return n, n.WaitReady(ctx) // registered with the bootstrap
	}
	server, err := start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer server.Close()
	client, err := start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	// The server: plain net/http on a listener for the service "web",
	// which only the client's peer ID may use.
	ln, err := server.Listen("web", service.Allow{Peers: []identity.PeerID{client.ID()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// r.RemoteAddr is the client's authenticated peer ID and the service.
		fmt.Fprintf(w, "hello, %v", r.RemoteAddr == client.ID().String()+"/web")
	}))

	// The client: an http.Client that reaches http://PEERID/ over the
	// peer connection (direct, or relayed when no direct path exists).
	hc := &http.Client{Transport: &http.Transport{DialContext: client.HTTPDialer("web")}}
	resp, err := hc.Get("http://" + server.ID().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, string(body))
	// Output: 200 OK hello, true
}
