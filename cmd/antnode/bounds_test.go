package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// runFor is run with a deadline: a command that should have refused its
// input but started instead ends when d runs out (exit 0).
func runFor(d time.Duration, args ...string) (int, string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out, errb bytes.Buffer
	code := realMain(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestBoundedLocalInput: config, key and token files are read through a
// size limit, and a listen port whose derived ports pass 65535 is an
// error, not a wrap-around. Issue 21, finding 5.
func TestBoundedLocalInput(t *testing.T) {
	dir := t.TempDir()
	big := func(name string, n int, fill byte) string {
		p := filepath.Join(dir, name)
		b := bytes.Repeat([]byte{fill}, n)
		if fill == ' ' { // a valid JSON object, padded
			copy(b, "{}")
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	before := testkit.RSS()
	peer := []string{"--listen", "127.0.0.1:0", "--bootstrap-nodes", "127.0.0.1:9", "--metrics-addr", "off"}
	tests := []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"config of /dev/zero", append([]string{"--config", "/dev/zero"}, peer...), []string{"config", "too large"}},
		{"config just over 1 MiB", append([]string{"--config", big("config.json", 1<<20+1, ' ')}, peer...), []string{"config", "too large"}},
		{"key of /dev/zero", append([]string{"--key", "/dev/zero"}, peer...), []string{"--key", "too large"}},
		{"key of 17 KiB", append([]string{"--key", big("key", 17<<10, 'A')}, peer...), []string{"--key", "too large"}},
		{"token of /dev/zero", append([]string{"--metrics-token-file", "/dev/zero"}, peer...), []string{"--metrics-token-file", "too large"}},
		{"connect's config of /dev/zero", []string{"connect", "--config", "/dev/zero"}, []string{"config", "too large"}},
		{"listen on 65535: relay port 65537", []string{"--bootstrap", "--listen", "127.0.0.1:65535", "--metrics-addr", "off"},
			[]string{"--listen", "65535", "--stun-alt-port"}},
		{"listen on 65534: relay port 65536", []string{"--bootstrap", "--listen", "127.0.0.1:65534", "--stun-alt-port", "-1", "--metrics-addr", "off"},
			[]string{"--listen", "65534", "relay", "--relay-port"}},
		{"listen on 65535 without the STUN port", []string{"--bootstrap", "--listen", "127.0.0.1:65535", "--stun-alt-port", "-1", "--metrics-addr", "off"},
			[]string{"relay", "--relay-port"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runFor(5*time.Second, tc.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitUsage, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Fatalf("stderr %q does not say %q", errOut, w)
				}
			}
		})
	}
	if after := testkit.RSS(); after > before+256<<20 {
		t.Fatalf("RSS grew from %d to %d MB reading the files", before>>20, after>>20)
	}
}

// numericFlags returns the int, float and duration flags of a command's
// -h, each with its help text.
func numericFlags(t *testing.T, cmd []string) map[string]string {
	t.Helper()
	code, out, errOut := run(append(cmd, "-h")...)
	if code != exitOK {
		t.Fatalf("%v -h: %d %s", cmd, code, errOut)
	}
	re := regexp.MustCompile(`^  -(\S+) (int|float|duration)\b`)
	flags := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	name := ""
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			name = m[1]
			flags[name] = ""
			continue
		}
		if strings.HasPrefix(sc.Text(), "  -") {
			name = ""
		} else if name != "" {
			flags[name] += strings.TrimSpace(sc.Text()) + " "
		}
	}
	return flags
}

// TestNumericFlagBounds: every numeric flag of every command documents
// its upper bound in its help and refuses a value past it, naming the
// flag, before the command starts anything. Issue 21, finding 5
// (--store-size 2000000000, --relay-max-allocations 1000000000).
func TestNumericFlagBounds(t *testing.T) {
	peerID, _ := identity.Generate()
	id := peerID.ID().String()
	commands := []struct {
		name string
		base []string // valid arguments but the flag under test
	}{
		{"node", []string{"--listen", "127.0.0.1:0", "--bootstrap-nodes", "127.0.0.1:9", "--metrics-addr", "off"}},
		{"connect", []string{"connect", id, "--bootstrap-nodes", "127.0.0.1:9"}},
		{"forward", []string{"forward", id, "web", "--bootstrap-nodes", "127.0.0.1:9"}},
		{"pipe", []string{"pipe", id, "web", "--bootstrap-nodes", "127.0.0.1:9"}},
		{"diagnose", []string{"diagnose", "--bootstrap-nodes", "127.0.0.1:9"}},
		{"id", []string{"id"}},
	}
	huge := map[bool]string{false: "2000000000", true: "100000h"}
	documented := regexp.MustCompile(`\d[\w.]*-\d|\d to |at most \d`)
	total := 0
	for _, c := range commands {
		cmd := c.base[:0:0]
		if c.name != "node" {
			cmd = c.base[:1:1]
		}
		for name, help := range numericFlags(t, cmd) {
			total++
			t.Run(c.name+" --"+name, func(t *testing.T) {
				if !documented.MatchString(help) {
					t.Errorf("the help of --%s documents no upper bound: %q", name, help)
				}
				_, probe, _ := run(append(cmd, "-h")...)
				isDuration := strings.Contains(probe, "-"+name+" duration")
				code, _, errOut := runFor(5*time.Second, append(append([]string{}, c.base...), "--"+name, huge[isDuration])...)
				if code != exitUsage || !strings.Contains(errOut, "--"+name) {
					t.Fatalf("--%s %s: exit %d, stderr %q; want %d naming the flag", name, huge[isDuration], code, errOut, exitUsage)
				}
			})
		}
	}
	if total < 25 {
		t.Fatalf("found only %d numeric flags: the -h parsing is broken", total)
	}
}
