package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
)

// TestHelpExitsZero: -h and --help print the synopsis and the flags to
// stdout and exit 0, for every command.
func TestHelpExitsZero(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // a flag the help must list
	}{
		{"node -h", []string{"-h"}, "-bootstrap-nodes"},
		{"node --help", []string{"--help"}, "-metrics-addr"},
		{"connect --help", []string{"connect", "--help"}, "-send"},
		{"connect -h after a peer", []string{"connect", strings.Repeat("a", 52), "-h"}, "-timeout"},
		{"diagnose --help", []string{"diagnose", "--help"}, "-redact"},
		{"id --help", []string{"id", "--help"}, "-key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(tc.args...)
			if code != exitOK || !strings.Contains(out, tc.want) || !strings.Contains(out, "usage:") || errOut != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
		})
	}
}

// TestMistypedFlag: the error and one line that points to -h, exit 2; not
// the whole usage.
func TestMistypedFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
		hint string
	}{
		{"node", []string{"--bootstrapp"}, "Run 'antnode -h' for usage."},
		{"connect", []string{"connect", "--sned", "1"}, "Run 'antnode connect -h' for usage."},
		{"diagnose", []string{"diagnose", "--bootstrap-node", "x"}, "Run 'antnode diagnose -h' for usage."},
		{"id", []string{"id", "--kye", "x"}, "Run 'antnode id -h' for usage."},
		{"unknown command", []string{"frobnicate"}, "Run 'antnode -h' for usage."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(tc.args...)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if code != exitUsage || out != "" || len(lines) != 2 || lines[1] != tc.hint {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
			}
		})
	}
}

// TestVersionCommand: version, commit and Go version; from the linker when
// set (make build), else from the build information.
func TestVersionCommand(t *testing.T) {
	code, out, _ := run("version")
	re := regexp.MustCompile(`^antnode (\S+) \(commit (\S+), (go\S+)\)\n$`)
	m := re.FindStringSubmatch(out)
	if code != exitOK || m == nil || m[3] != runtime.Version() {
		t.Fatalf("exit %d, %q", code, out)
	}
	if code, _, _ := run("version", "extra"); code != exitUsage {
		t.Fatalf("version with an argument: exit %d", code)
	}
}

// TestKeyPathRules: --key never creates directories. A missing file in an
// existing directory is created; a missing directory is a usage error that
// names it, and nothing is created.
func TestKeyPathRules(t *testing.T) {
	dir := t.TempDir()
	boot := startBootstrap(t)
	peer, _ := identity.Generate()
	tests := []struct {
		name string
		args func(key string) []string
		key  string
		code int
	}{
		{"id: file in existing directory", func(k string) []string { return []string{"id", "--key", k} }, "node.key", exitOK},
		{"id: missing directory", func(k string) []string { return []string{"id", "--key", k} }, "typo/node.key", exitUsage},
		{"connect: missing directory", func(k string) []string {
			return []string{"connect", peer.ID().String(), "--bootstrap-nodes", boot, "--key", k, "--timeout", "2s"}
		}, "typo2/node.key", exitUsage},
		{"node: missing directory", func(k string) []string {
			return []string{"--bootstrap", "--listen", "127.0.0.1:0", "--metrics-addr", "off", "--key", k}
		}, "typo3/node.key", exitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := filepath.Join(dir, tc.key)
			code, out, errOut := run(tc.args(key)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %q %q", code, tc.code, out, errOut)
			}
			_, statErr := os.Stat(key)
			if tc.code == exitOK && statErr != nil {
				t.Fatalf("key not created: %v", statErr)
			}
			if tc.code != exitOK {
				if _, err := os.Stat(filepath.Dir(key)); err == nil {
					t.Fatalf("%s was created", filepath.Dir(key))
				}
				if !strings.Contains(errOut, filepath.Dir(key)) {
					t.Fatalf("the error does not name the directory: %q", errOut)
				}
			}
		})
	}
}

// TestConnectKeyMismatchIsFast: a wrong bootstrap ID in PEERID@HOST:PORT
// fails the connect at once as key_mismatch, with the next step.
func TestConnectKeyMismatchIsFast(t *testing.T) {
	boot := startBootstrap(t)
	_, addr, _ := strings.Cut(boot, "@")
	wrong, _ := identity.Generate()
	peer, _ := identity.Generate()
	start := time.Now()
	code, out, errOut := run("connect", peer.ID().String(), "--bootstrap-nodes", wrong.ID().String()+"@"+addr, "--json", "--timeout", "20s")
	took := time.Since(start)
	r := decode(t, out)
	if code != exitFailure || r.Reason != "key_mismatch" || r.Phase != "register" || r.NextStep == "" {
		t.Fatalf("exit %d, result %+v, stderr %q", code, r, errOut)
	}
	if took > 5*time.Second {
		t.Fatalf("took %v of the 20s timeout", took)
	}
	t.Logf("key_mismatch after %v", took)
	code, out, _ = run("connect", peer.ID().String(), "--bootstrap-nodes", wrong.ID().String()+"@"+addr, "--timeout", "20s")
	if code != exitFailure || !strings.Contains(out, "FAILED (register, key_mismatch)") || !strings.Contains(out, "next step: ") {
		t.Fatalf("human output: exit %d, %q", code, out)
	}
}

// TestConfigForEveryCommand: --config works for every command with flags.
func TestConfigForEveryCommand(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	boot := startBootstrap(t)
	peer := startPeer(t, boot)
	key := filepath.Join(dir, "id.key")
	tests := []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"id", []string{"id", "--config", write("id.json", map[string]any{"key": key})}, exitOK, ""},
		{"connect", []string{"connect", peer.String(), "--config",
			write("connect.json", map[string]any{"bootstrap-nodes": boot, "send": "64KiB", "json": true, "timeout": "10s"})}, exitOK, `"bytes_verified":65536`},
		{"connect unknown setting", []string{"connect", peer.String(), "--config", write("bad.json", map[string]any{"sned": 1})}, exitUsage, ""},
		{"diagnose bad value", []string{"diagnose", "--config", write("diag.json", map[string]any{"timeout": "soon"})}, exitUsage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.out) {
				t.Fatalf("exit %d (want %d), %q %q", code, tc.code, out, errOut)
			}
		})
	}
}

// TestBadInputIsAUsageError: input a user typed wrong is a usage error
// (exit 2, reason "usage"), never "internal".
func TestBadInputIsAUsageError(t *testing.T) {
	peer, _ := identity.Generate()
	tests := []struct {
		name string
		args []string
	}{
		{"bootstrap without port", []string{"--bootstrap-nodes", "203.0.113.9"}},
		{"bad relay mode", []string{"--bootstrap-nodes", "127.0.0.1:1", "--relay", "sometimes"}},
		{"bad listen", []string{"--bootstrap-nodes", "127.0.0.1:1", "--listen", "127.0.0.1:99999"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(append([]string{"connect", peer.ID().String(), "--json", "--timeout", "2s"}, tc.args...)...)
			r := decode(t, out)
			if code != exitUsage || r.Reason != reasonUsage || strings.Contains(errOut+out, "internal") {
				t.Fatalf("exit %d, %+v, stderr %q", code, r, errOut)
			}
		})
	}
}
