package main

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/antnode/antnode/identity"
)

// TestDiagnoseRedact runs `antnode diagnose --json --redact` against a
// loopback bootstrap: the report is complete (UDP, NAT, bootstrap RTT,
// relay allocations over UDP and TCP) and holds none of the host's
// addresses.
func TestDiagnoseRedact(t *testing.T) {
	boot := startBootstrap(t)
	code, out, errOut := run("diagnose", "--bootstrap-nodes", boot, "--json", "--redact", "--timeout", "15s")
	if code != exitOK && code != exitFailure {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep diagnoseReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if !rep.Redacted || !rep.UDP.OK || rep.NAT.Class == "" || len(rep.Bootstraps) != 1 || !rep.Bootstraps[0].Registered || rep.Bootstraps[0].RTTMS <= 0 {
		t.Fatalf("report %+v", rep)
	}
	var addrs []string
	ifs, _ := net.InterfaceAddrs()
	for _, a := range ifs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			addrs = append(addrs, p.Addr().String())
		}
	}
	addrs = append(addrs, "127.0.0.1")
	for _, a := range addrs {
		if strings.Contains(out, a) {
			t.Errorf("redacted output holds %s", a)
		}
	}
	// Without --redact the addresses are there.
	_, full, _ := run("diagnose", "--bootstrap-nodes", boot, "--json", "--timeout", "15s")
	if !strings.Contains(full, "127.0.0.1") {
		t.Fatal("the unredacted report lacks the bootstrap's address")
	}
}

// TestDiagnoseNamesAWrongKey: a bootstrap configured with another peer ID
// than its own is a key mismatch, and the diagnosis says so.
func TestDiagnoseNamesAWrongKey(t *testing.T) {
	boot := startBootstrap(t)
	_, addr, _ := strings.Cut(boot, "@")
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	wrong := other.ID().String() + "@" + addr
	code, out, _ := run("diagnose", "--bootstrap-nodes", wrong, "--json", "--timeout", "15s")
	if code != exitFailure {
		t.Fatalf("exit %d, want a failure: %s", code, out)
	}
	var rep diagnoseReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) == 0 || rep.Findings[0].Cause != "key_mismatch" {
		t.Fatalf("findings %+v", rep.Findings)
	}
}
