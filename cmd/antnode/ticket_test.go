package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/ticket"
)

// startTicketPeer starts a peer registered with boot and returns its
// ticket.
func startTicketPeer(t *testing.T, boot string) ticket.Ticket {
	t.Helper()
	n := startPeerNode(t, boot)
	tk, err := n.Ticket()
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestConnectTicket: connect takes a ticket, registering on demand with
// the peer's bootstrap when it shares none, or using the ticket's
// bootstraps as its own without --bootstrap-nodes.
func TestConnectTicket(t *testing.T) {
	b1, b2 := startBootstrap(t), startBootstrap(t)
	tk := startTicketPeer(t, b2)
	for name, extra := range map[string][]string{"disjoint bootstraps": {"--bootstrap-nodes", b1}, "the ticket's bootstraps": nil} {
		t.Run(name, func(t *testing.T) {
			args := append([]string{"connect", tk.String(), "--send", "64KiB", "--json", "--timeout", "10s"}, extra...)
			code, out, errOut := run(args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s %s", code, out, errOut)
			}
			r := decode(t, out)
			if !r.Connected || r.Path != "direct" || r.BytesVerified != 64<<10 || r.Peer != tk.Peer.String() {
				t.Fatalf("result %+v", r)
			}
			// On demand only when it shares no bootstrap with the peer.
			onDemand := slices.ContainsFunc(r.Bootstraps, func(b bootstrapState) bool { return b.Label == "t0" })
			if onDemand != (extra != nil) {
				t.Fatalf("bootstraps %+v: on-demand registration %v, want %v", r.Bootstraps, onDemand, extra != nil)
			}
		})
	}
}

// TestMalformedTicketIsAUsageError: a cut, altered or foreign ticket is
// one line on stderr and exit 2, for every command that takes a peer.
func TestMalformedTicketIsAUsageError(t *testing.T) {
	good := startTicketPeerless(t)
	altered := []byte(good)
	altered[30] = map[bool]byte{true: 'b', false: 'a'}[altered[30] == 'a']
	for name, bad := range map[string]string{"cut": good[:len(good)-3], "altered": string(altered),
		"other version": "antnode9" + good[8:], "garbage": "antnode1!!"} {
		for _, cmd := range [][]string{{"connect", bad}, {"forward", bad, "web"}, {"pipe", bad, "web"}} {
			t.Run(name+"/"+cmd[0], func(t *testing.T) {
				code, out, errOut := run(append(cmd, "--bootstrap-nodes", "127.0.0.1:1")...)
				first, _, _ := strings.Cut(strings.TrimSpace(errOut), "\nRun '")
				if code != exitUsage || !strings.Contains(first, "ticket") || strings.Contains(first, "\n") || out != "" {
					t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
				}
			})
		}
	}
}

// startTicketPeerless returns a valid ticket of a peer nobody runs.
func startTicketPeerless(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "k.key")
	boot, _ := identity.Generate()
	code, out, errOut := run("id", "--key", path, "--ticket", "--bootstrap-nodes", boot.ID().String()+"@127.0.0.1:1")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	return strings.TrimSpace(out)
}

// TestIDTicket: id --ticket prints a ticket naming the key's ID and the
// given bootstraps; a bootstrap without its key is a usage error.
func TestIDTicket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	boot := startBootstrap(t)
	code, out, errOut := run("id", "--key", path, "--ticket", "--bootstrap-nodes", boot)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	tk, err := ticket.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	_, idOut, _ := run("id", "--key", path)
	if tk.Peer.String() != strings.TrimSpace(idOut) || len(tk.Bootstraps) != 1 || tk.Bootstraps[0].String() != boot {
		t.Fatalf("ticket %+v, want %s with %s", tk, strings.TrimSpace(idOut), boot)
	}
	_, addr, _ := strings.Cut(boot, "@")
	for name, args := range map[string][]string{
		"bootstrap without key":       {"--ticket", "--bootstrap-nodes", addr},
		"no bootstraps":               {"--ticket"},
		"bootstraps without --ticket": {"--bootstrap-nodes", boot},
	} {
		t.Run(name, func(t *testing.T) {
			if code, _, errOut := run(append([]string{"id", "--key", path}, args...)...); code != exitUsage {
				t.Fatalf("exit %d: %s", code, errOut)
			}
		})
	}
}

// TestStatusTicket: a running peer's /api/v1/status shows its ticket,
// which connect takes from a node registered with another bootstrap.
func TestStatusTicket(t *testing.T) {
	const token = "status-ticket-token-0123456789ab"
	b1, b2 := startBootstrap(t), startBootstrap(t)
	metrics := freeTCP(t)
	daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", b2, "--metrics-addr", metrics, "--metrics-token-file", writeToken(t, token))
	peerURL := "http://" + metrics
	testkit.WaitFor(t, 15*time.Second, "the peer to be ready", func() bool {
		code, _ := httpGet(t, peerURL+"/readyz", "")
		return code == 200
	})
	_, body := httpGet(t, peerURL+"/api/v1/status", token)
	var st struct{ ID, Ticket string }
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status: %v %s", err, body)
	}
	tk, err := ticket.Parse(st.Ticket)
	if err != nil {
		t.Fatalf("status ticket %q: %v", st.Ticket, err)
	}
	if tk.Peer.String() != st.ID || len(tk.Bootstraps) != 1 || tk.Bootstraps[0].String() != b2 {
		t.Fatalf("ticket %+v, want %s with %s", tk, st.ID, b2)
	}
	code, out, errOut := run("connect", st.Ticket, "--bootstrap-nodes", b1, "--send", "64KiB", "--json", "--timeout", "10s")
	if r := decode(t, out); code != exitOK || !r.Connected || r.BytesVerified != 64<<10 {
		t.Fatalf("exit %d, %+v, %s", code, r, errOut)
	}
}
