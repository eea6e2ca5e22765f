package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// TestFailureLogsHideAddresses: the records a failure writes (an error
// that names the bootstrap it could not reach, the event's address) show
// no raw address by default, in either format, and show it with
// --log-addresses=full (so the check can fail).
func TestFailureLogsHideAddresses(t *testing.T) {
	peer, _ := identity.Generate()
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	const raw = "127.0.0.1"
	for _, format := range []string{"text", "json"} {
		for _, tc := range []struct {
			name string
			mode string
			raw  bool
		}{{"default", "", false}, {"full", "full", true}} {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				args := []string{"connect", peer.ID().String(), "--json", "--bootstrap-nodes", deadAddr,
					"--timeout", "500ms", "--log-level", "debug", "--log-format", format}
				if tc.mode != "" {
					args = append(args, "--log-addresses", tc.mode)
				}
				code, _, logs := run(args...)
				if code == exitOK {
					t.Fatal("connect to a dead bootstrap exited 0")
				}
				records := 0
				for line := range strings.Lines(logs) {
					if !strings.HasPrefix(line, "time=") && !strings.HasPrefix(line, "{") {
						continue // the command's own summary, not a log record
					}
					records++
					if !tc.raw && strings.Contains(line, raw) {
						t.Errorf("raw address in a record: %s", line)
					}
				}
				if records == 0 {
					t.Fatalf("no log records in %q", logs)
				}
				if tc.raw && !strings.Contains(logs, raw) {
					t.Fatalf("--log-addresses=full hid the address: %s", logs)
				}
			})
		}
	}
}

// TestDaemonLogsHideAddresses: a daemon whose bootstrap answers with
// another key logs the error that names the bootstrap's address (the
// node's own record, outside the monitor) without that address.
func TestDaemonLogsHideAddresses(t *testing.T) {
	boot := startBootstrap(t) // "ID@127.0.0.1:port"
	other, _ := identity.Generate()
	wrong := other.ID().String() + boot[strings.Index(boot, "@"):]
	for _, tc := range []struct {
		name string
		args []string
		raw  bool
	}{{"default", nil, false}, {"full", []string{"--log-addresses", "full"}, true}} {
		t.Run(tc.name, func(t *testing.T) {
			_, logs := daemon(t, append([]string{"--listen", "127.0.0.1:0", "--bootstrap-nodes", wrong,
				"--metrics-addr", "127.0.0.1:0", "--log-level", "debug"}, tc.args...)...)
			testkit.WaitFor(t, 10*time.Second, "the key mismatch record", func() bool {
				return strings.Contains(logs.String(), "giving up this round")
			})
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, "giving up this round") && strings.Contains(line, "127.0.0.1") != tc.raw {
					t.Fatalf("raw address shown = %v, want %v: %s", !tc.raw, tc.raw, line)
				}
			}
		})
	}
}
