package dist

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// built is set once a test asked for the release.
var built atomic.Bool

// build makes the release into a temporary directory, once per test run.
var buildOnce = sync.OnceValues(func() (Artifacts, error) {
	built.Store(true)
	out, err := os.MkdirTemp("", "antnode-dist-")
	if err != nil {
		return Artifacts{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return Build(ctx, Options{Root: "../..", Out: out, Version: "1.2.3", Commit: "abc123def456"})
})

// TestMain removes the built release after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if !built.Load() {
		os.Exit(code)
	}
	if a, err := buildOnce(); err == nil && a.Deb != "" {
		os.RemoveAll(filepath.Dir(a.Deb))
	}
	os.Exit(code)
}

func artifacts(t *testing.T) Artifacts {
	t.Helper()
	start := time.Now()
	a, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("make dist's build: %v", time.Since(start).Round(time.Millisecond))
	return a
}

func TestBuildOptions(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"no root", Options{Out: "x", Version: "1.0.0", Commit: "c"}},
		{"version not a Debian version", Options{Root: ".", Out: "x", Version: "v1.0.0", Commit: "c"}},
		{"no commit", Options{Root: ".", Out: "x", Version: "1.0.0"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Build(context.Background(), tc.o); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestTarball: the versioned tarball holds the binary, the README, the
// unit and the example configs in one versioned directory.
func TestTarball(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release")
	}
	a := artifacts(t)
	if want := "antnode_1.2.3_linux_" + "amd64.tar.gz"; filepath.Base(a.Tarball) != want {
		t.Fatalf("tarball %s, want %s", filepath.Base(a.Tarball), want)
	}
	f, err := os.Open(a.Tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]bool{}
	for range 100 {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = true
	}
	for _, name := range []string{"antnode", "README.md", "antnode-bootstrap.service", "antnode.json", "prometheus.yml", "alerts.yml"} {
		if !got["antnode_1.2.3_linux_amd64/"+name] {
			t.Errorf("tarball lacks %s: %v", name, got)
		}
	}
}

// TestDebInstallsOnACleanRoot installs the .deb with dpkg -i into an empty
// root (a dpkg database and the root user, nothing else; the maintainer
// scripts run with DPKG_ROOT, as dpkg's --force-script-chrootless runs
// them), checks what it put there, runs `antnode version` in it, and then
// runs the installed unit's exact ExecStart inside a network namespace with
// one address, as the unit's user, on the unit's wildcard address: the
// bootstrap must come up, serve its probes and its token-protected metrics,
// and stop cleanly on SIGTERM.
func TestDebInstallsOnACleanRoot(t *testing.T) {
	testkit.NeedRoot(t, "dpkg", "useradd", "chroot", "ip", "curl")
	if runtime.GOARCH != "amd64" {
		t.Skip("the release is amd64")
	}
	a := artifacts(t)
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{
		"var/lib/dpkg/status": "",
		"etc/passwd":          "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":           "root:x:0:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if out, err := exec.Command("dpkg", "--root="+root, "--force-script-chrootless", "-i", a.Deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	t.Logf("dpkg -i: %v", time.Since(start).Round(time.Millisecond))

	// What the package put there.
	for _, p := range []string{"usr/bin/antnode", "lib/systemd/system/antnode-bootstrap.service", "etc/antnode/antnode.json",
		"usr/share/doc/antnode/README.md", "usr/share/doc/antnode/examples/prometheus.yml"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	uid, gid := lookupUser(t, root, "antnode")
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{"var/lib/antnode", 0o700 | os.ModeDir}, {"etc/antnode/metrics-token", 0o600}} {
		fi, err := os.Stat(filepath.Join(root, c.path))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != c.mode || int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", c.path, fi.Mode(), st.Uid, st.Gid, c.mode, uid, gid)
		}
	}
	token, err := os.ReadFile(filepath.Join(root, "etc/antnode/metrics-token"))
	if err != nil || !regexp.MustCompile(`^[0-9a-f]{64}$`).Match(token) {
		t.Fatalf("metrics token %q (%v): want 64 hex digits, URL- and shell-safe", token, err)
	}

	out, err := exec.Command("chroot", root, "/usr/bin/antnode", "version").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^antnode 1\.2\.3 \(commit abc123def456, go\S+\)\n$`).Match(out) {
		t.Fatalf("antnode version: %v %q", err, out)
	}

	// The unit's ExecStart, as written, as its user, in a namespace.
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/antnode-bootstrap.service"))
	if err != nil {
		t.Fatal(err)
	}
	exec := unitValue(t, string(unit), "ExecStart")
	if unitValue(t, string(unit), "User") != "antnode" || !strings.Contains(exec, "--listen 0.0.0.0:4433") {
		t.Fatalf("unit: User %q, ExecStart %q", unitValue(t, string(unit), "User"), exec)
	}
	ns := newNamespace(t, "203.0.113.1/24")
	args := append([]string{"netns", "exec", ns, "chroot", fmt.Sprintf("--userspec=%d:%d", uid, gid), root}, strings.Fields(exec)...)
	logs := startProcess(t, "ip", args...)
	curl := func(path, token string) int {
		args := []string{"netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}"}
		if token != "" {
			args = append(args, "-H", "Authorization: Bearer "+token)
		}
		out, _ := osexec("ip", append(args, "http://127.0.0.1:9464"+path)...)
		code, _ := strconv.Atoi(strings.TrimSpace(out))
		return code
	}
	deadline := time.Now().Add(15 * time.Second)
	for curl("/readyz", "") != 200 {
		if time.Now().After(deadline) || logs.exited() {
			t.Fatalf("the unit's bootstrap did not get ready:\n%s", logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("ExecStart ready after %v", time.Since(deadline.Add(-15*time.Second)).Round(time.Millisecond))
	if c := curl("/metrics", ""); c != 401 {
		t.Errorf("/metrics without the token: %d", c)
	}
	if c := curl("/metrics", string(token)); c != 200 {
		t.Errorf("/metrics with the token: %d", c)
	}
	key, err := os.Stat(filepath.Join(root, "var/lib/antnode/bootstrap.key"))
	if err != nil || int(key.Sys().(*syscall.Stat_t).Uid) != uid {
		t.Fatalf("key: %v", err)
	}
	if !strings.Contains(logs.String(), "allocations on 203.0.113.1\n") {
		t.Errorf("the relay does not advertise the namespace's address:\n%s", logs)
	}
	if code := logs.stop(t); code != 0 {
		t.Fatalf("exit %d on SIGTERM:\n%s", code, logs)
	}

	// And it goes again.
	if out, err := osexec("dpkg", "--root="+root, "--force-script-chrootless", "--purge", "antnode"); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	for _, p := range []string{"usr/bin/antnode", "var/lib/antnode", "etc/antnode/metrics-token"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s left after purge", p)
		}
	}
}

func osexec(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// lookupUser reads a user's uid and gid from root's /etc/passwd.
func lookupUser(t *testing.T, root, name string) (int, int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 4 && f[0] == name {
			uid, _ := strconv.Atoi(f[2])
			gid, _ := strconv.Atoi(f[3])
			return uid, gid
		}
	}
	t.Fatalf("no user %s in the root's /etc/passwd:\n%s", name, b)
	return 0, 0
}

// unitValue returns a [Service] setting (continuation lines joined).
func unitValue(t *testing.T, unit, key string) string {
	t.Helper()
	unit = strings.ReplaceAll(unit, "\\\n", " ")
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("the unit has no %s=", key)
	return ""
}

// newNamespace makes a network namespace with loopback and one
// interface holding addr; it is deleted when the test ends.
func newNamespace(t *testing.T, addr string) string {
	t.Helper()
	ns := fmt.Sprintf("antdist%d", os.Getpid())
	exec.Command("ip", "netns", "del", ns).Run() // a leftover of a killed run
	steps := [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		// This kernel has no dummy interfaces: a veth pair whose other
		// end stays down and unaddressed in the namespace.
		{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"-n", ns, "addr", "add", addr, "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(s, " "), err, out)
		}
	}
	return ns
}

// process is a started command and its combined output.
type process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code (-1: killed after 10 s).
func (p *process) stop(t *testing.T) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// startProcess starts a command that the test's end kills if it still runs.
func startProcess(t *testing.T, name string, args ...string) *process {
	t.Helper()
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}
