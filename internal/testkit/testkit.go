// Package testkit is the set-up that tests of several packages share:
// the rules for tests that need root or an installed tool (skip outside
// CI, fail in CI, so a missing privilege or package never hides a test),
// a bounded wait for a condition, identities, node sockets, a QUIC
// connection on loopback, an event recorder, and helper processes that
// run under a lowered file-descriptor limit. It starts no goroutines of
// its own but one that waits for a helper process at the end of its test
// (quic-go's run under the transports it makes, which t's cleanup
// closes).
package testkit

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// childEnv marks a test binary that runs as another test's helper process
// (see StartChild); its value is the file-descriptor limit to run under.
const childEnv = "ANTNODE_TEST_CHILD_NOFILE"

// IsChild reports whether this test binary runs as a helper process of
// StartChild.
func IsChild() bool { return os.Getenv(childEnv) != "" }

// Child is a helper process: this test binary running one test (which
// calls ServeChild) under a lowered file-descriptor limit, so that the
// limit never touches the test process itself.
type Child struct {
	t   testing.TB
	in  io.WriteCloser
	out *bufio.Scanner
}

// StartChild runs test (a test name of this binary) as a helper process
// whose soft RLIMIT_NOFILE is nofile. It ends with t.
func StartChild(t testing.TB, test string, nofile uint64) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.timeout=3m", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.FormatUint(nofile, 10))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close() // the child ends at the end of its input
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return &Child{t: t, in: in, out: bufio.NewScanner(out)}
}

// Ask sends a request line and returns the child's answer to it: the
// next output line that starts with the request's first word, without it.
func (c *Child) Ask(req string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.in, req+"\n"); err != nil {
		c.t.Fatalf("child: %v", err)
	}
	word, _, _ := strings.Cut(req, " ")
	return c.Expect(word)
}

// Expect returns the rest of the child's next output line that starts
// with word (other lines, such as the test framework's, are skipped).
func (c *Child) Expect(word string) string {
	c.t.Helper()
	for c.out.Scan() {
		if rest, ok := strings.CutPrefix(c.out.Text(), word+" "); ok {
			return rest
		}
	}
	c.t.Fatalf("child ended before answering %q: %v", word, c.out.Err())
	return ""
}

// ServeChild lowers this process's soft file-descriptor limit to the one
// StartChild gave, prints "hello" lines, then answers each request line
// from its input with handle's answer for the request's first word until
// the input ends. It is for a helper process only (IsChild).
func ServeChild(t testing.TB, hello []string, handle map[string]func(args string) string) {
	t.Helper()
	n, err := strconv.ParseUint(os.Getenv(childEnv), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", childEnv, err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = min(n, lim.Max)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	for _, h := range hello {
		fmt.Println(h)
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		word, args, _ := strings.Cut(in.Text(), " ")
		if f := handle[word]; f != nil {
			fmt.Println(word, f(args))
		}
	}
}

// NeedIPv6Loopback skips t on a host without an IPv6 loopback (::1);
// in CI it fails instead.
func NeedIPv6Loopback(t testing.TB) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err == nil {
		c.Close()
		return
	}
	if os.Getenv("CI") == "" {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	t.Fatalf("CI: no IPv6 loopback: %v", err)
}
