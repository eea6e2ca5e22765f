// Package testkit is the set-up that tests of several packages share:
// the rules for tests that need root or an installed tool (skip outside
// CI, fail in CI, so a missing privilege or package never hides a test),
// a bounded wait for a condition, identities, node sockets, a QUIC
// connection on loopback and an event recorder. It starts no goroutines
// of its own (quic-go's run under the transports it makes, which t's
// cleanup closes).
package testkit

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NeedRoot skips t unless it runs as root with tools on PATH; in CI (CI
// set, where .ci/run installs them and runs as root) it fails instead.
func NeedRoot(t testing.TB, tools ...string) {
	t.Helper()
	missing := ""
	if os.Geteuid() != 0 {
		missing = "root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil && missing == "" {
			missing = tool
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("needs %s (CI runs it)", missing)
	}
	t.Fatalf("CI: needs %s (.ci/run installs it and runs as root)", missing)
}

// NeedTool returns the path of a tool t cannot do without; outside CI a
// missing tool skips t, in CI it fails t.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: %s is not installed (.ci/run installs it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// WaitFor polls cond every 10 ms for at most d, and fails t naming what
// it waited for when d runs out.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RSS is the process's resident set size in bytes (Linux's VmRSS), or 0
// where it cannot be read.
func RSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
