package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// The README's flag tables are generated from --help, and its "Running"
// commands are run as written: the README cannot drift from the binary.

var updateREADME = flag.Bool("update", false, "rewrite README.md's flag tables from --help (go test ./cmd/antnode -run TestREADMEFlags -update)")

const readmePath = "../../README.md"

// readmeTables are the README's generated flag tables: the marker's name
// and the command line whose --help it shows.
var readmeTables = []struct {
	name string
	args []string
}{
	{"antnode", nil},
	{"connect", []string{"connect"}},
	{"diagnose", []string{"diagnose"}},
	{"id", []string{"id"}},
	{"forward", []string{"forward"}},
	{"pipe", []string{"pipe"}},
}

// helpFlag is one flag as --help prints it.
type helpFlag struct {
	name, arg, usage, def string
}

// parseHelp reads the flags that flag.PrintDefaults printed: "  -name
// arg" lines, each followed by its tab-indented usage lines, the usage
// ending in "(default X)" when the default is not the zero value.
func parseHelp(help string) []helpFlag {
	var out []helpFlag
	defRE := regexp.MustCompile(`^(.*?) ?\(default (.*)\)$`)
	for line := range strings.Lines(help) {
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, "  -"):
			name, arg, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
			out = append(out, helpFlag{name: name, arg: arg})
		case strings.HasPrefix(line, "    \t") && len(out) > 0:
			f := &out[len(out)-1]
			f.usage = strings.TrimSpace(f.usage + " " + strings.TrimPrefix(line, "    \t"))
		}
	}
	for i := range out {
		if m := defRE.FindStringSubmatch(out[i].usage); m != nil {
			out[i].usage, out[i].def = m[1], strings.Trim(m[2], `"`)
		}
	}
	return out
}

// flagTable renders a command's --help as a Markdown table.
func flagTable(t *testing.T, args []string) string {
	t.Helper()
	code, help, errOut := run(append(append([]string{}, args...), "--help")...)
	if code != exitOK {
		t.Fatalf("%v --help: exit %d %s", args, code, errOut)
	}
	flags := parseHelp(help)
	if len(flags) == 0 {
		t.Fatalf("%v --help lists no flags:\n%s", args, help)
	}
	esc := strings.NewReplacer("|", `\|`)
	var b strings.Builder
	b.WriteString("| flag | default | meaning |\n|---|---|---|\n")
	for _, f := range flags {
		name := "--" + f.name
		if f.arg != "" {
			name += " " + strings.ToUpper(f.arg)
		}
		def := ""
		if f.def != "" {
			def = "`" + f.def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", name, esc.Replace(def), esc.Replace(f.usage))
	}
	return b.String()
}

// tableBlock finds the generated block of a table in the README.
func tableBlock(readme, name string) (start, end int, ok bool) {
	begin := "<!-- flags:" + name + " (generated from --help: go test ./cmd/antnode -run TestREADMEFlags -update) -->\n"
	stop := "<!-- /flags:" + name + " -->"
	start = strings.Index(readme, begin)
	if start < 0 {
		return 0, 0, false
	}
	start += len(begin)
	end = strings.Index(readme[start:], stop)
	if end < 0 {
		return 0, 0, false
	}
	return start, start + end, true
}

// TestREADMEFlags: every flag table of the README is what --help prints,
// flag by flag: a flag added, removed or changed in the code fails this
// test until the README is regenerated (-update).
func TestREADMEFlags(t *testing.T) {
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, tc := range readmeTables {
		t.Run(tc.name, func(t *testing.T) {
			start, end, ok := tableBlock(readme, tc.name)
			if !ok {
				t.Fatalf("README.md has no generated table for %s", tc.name)
			}
			want := flagTable(t, tc.args)
			if got := readme[start:end]; got != want {
				if *updateREADME {
					readme = readme[:start] + want + readme[end:]
					return
				}
				t.Errorf("README.md's %s flags differ from --help; run: go test ./cmd/antnode -run TestREADMEFlags -update\n--- README\n%s--- --help\n%s", tc.name, got, want)
			}
		})
	}
	if *updateREADME && readme != string(b) {
		if err := os.WriteFile(readmePath, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Log("README.md updated")
	}
}

func TestParseHelp(t *testing.T) {
	help := "usage: x\n\nflags:\n  -a string\n    \tthe a (default \"x y\")\n  -b\n    \ta bool\n  -c duration\n    \tfirst line\n    \tsecond line (default 20s)\n"
	want := []helpFlag{{"a", "string", "the a", "x y"}, {"b", "", "a bool", ""}, {"c", "duration", "first line second line", "20s"}}
	got := parseHelp(help)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parseHelp = %v, want %v", got, want)
	}
}

// readmeCommands returns the first sh block of the README's "## Running"
// section, one command a line, comments removed.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Running\n")
	if !ok {
		t.Fatal("README.md has no Running section")
	}
	_, block, ok := strings.Cut(sec, "```sh\n")
	if !ok {
		t.Fatal("the Running section has no sh block")
	}
	block, _, _ = strings.Cut(block, "```")
	var cmds []string
	for l := range strings.Lines(block) {
		l, _, _ = strings.Cut(l, "#")
		if l = strings.TrimSpace(l); l != "" {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// TestREADMERunning runs the README's "Running" commands as written, in a
// network namespace whose one address is the README's bootstrap address
// (203.0.113.1): the bootstrap on 0.0.0.0:4433, a peer, and a connect with
// a verified transfer. Only the placeholders BOOTID and PEERID are filled
// in, from the `antnode id` lines before them.
func TestREADMERunning(t *testing.T) {
	testkit.NeedRoot(t, "ip", "curl")
	cmds := readmeCommands(t)
	if len(cmds) < 4 {
		t.Fatalf("Running has %d commands: %q", len(cmds), cmds)
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	ns := testNamespace(t, "203.0.113.1/24")
	ids := map[string]string{}
	var connected bool
	for i, c := range cmds {
		args := strings.Fields(c)
		if args[0] != "antnode" {
			t.Fatalf("command %d is not antnode: %q", i, c)
		}
		for j, a := range args {
			for ph, id := range ids {
				a = strings.ReplaceAll(a, ph, id)
			}
			args[j] = a
		}
		if strings.Contains(strings.Join(args, " "), "ID@") && strings.Contains(strings.Join(args, " "), "BOOTID") {
			t.Fatalf("command %d uses BOOTID before an id line prints it: %q", i, c)
		}
		full := append([]string{"netns", "exec", ns, bin}, args[1:]...)
		sub := ""
		if len(args) > 1 {
			sub = args[1]
		}
		switch sub {
		case "id":
			cmd := exec.Command("ip", full...)
			cmd.Dir = dir
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%q: %v", c, err)
			}
			ph := "PEERID"
			if _, ok := ids["BOOTID"]; !ok {
				ph = "BOOTID"
			}
			ids[ph] = strings.TrimSpace(string(out))
		case "connect":
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, "ip", full...)
			cmd.Dir = dir
			out, err := cmd.Output()
			cancel()
			var res connectResult
			if jerr := json.Unmarshal(out, &res); err != nil || jerr != nil || !res.Connected || res.BytesVerified != 4<<20 {
				t.Fatalf("%q: %v, %s", c, err, out)
			}
			t.Logf("%s: %s", c, out)
			connected = true
			// Beyond the README: the same through the relay, which the
			// bootstrap on 0.0.0.0 advertises on the namespace's address.
			ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
			cmd = exec.CommandContext(ctx, "ip", append(full, "--relay", "force")...)
			cmd.Dir = dir
			out, err = cmd.Output()
			cancel()
			res = connectResult{}
			if jerr := json.Unmarshal(out, &res); err != nil || jerr != nil || !res.Connected || res.Path != "relay" {
				t.Fatalf("%q --relay force: %v, %s", c, err, out)
			}
		default: // a node: runs until the test ends
			p := startNode(t, dir, full)
			url := p.waitLine(t, regexp.MustCompile(`metrics on (http://\S+)/metrics`), 10*time.Second)
			waitNS(t, ns, url+"/readyz", 10*time.Second)
		}
	}
	if !connected {
		t.Fatal("no connect in the Running commands")
	}
}

// buildBinary builds antnode into the test's directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "antnode")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// testNamespace makes a network namespace with loopback and one interface
// holding addr, deleted when the test ends.
func testNamespace(t *testing.T, addr string) string {
	t.Helper()
	ns := fmt.Sprintf("antreadme%d", os.Getpid())
	exec.Command("ip", "netns", "del", ns).Run() // a leftover of a killed run
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, s := range [][]string{
		{"netns", "add", ns},
		{"-n", ns, "link", "set", "lo", "up"},
		// This kernel has no dummy interfaces: a veth pair, both ends in
		// the namespace, one of them addressed.
		{"-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"-n", ns, "addr", "add", addr, "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(s, " "), err, out)
		}
	}
	return ns
}

// nodeProcess is a node started by a test, with its output.
type nodeProcess struct {
	mu   sync.Mutex
	out  []string
	cond chan struct{} // closed and replaced on every line
}

// startNode runs `ip args...` in dir until the test ends (SIGTERM, then
// SIGKILL after 10 s).
func startNode(t *testing.T, dir string, args []string) *nodeProcess {
	t.Helper()
	cmd := exec.Command("ip", args...)
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &nodeProcess{cond: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			close(p.cond)
			p.cond = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		cmd.Wait()
		if t.Failed() {
			t.Logf("%v:\n%s", args, strings.Join(p.out, "\n"))
		}
	})
	return p
}

// waitLine waits for a line of the node's output that re matches and
// returns the first submatch.
func (p *nodeProcess) waitLine(t *testing.T, re *regexp.Regexp, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		p.mu.Lock()
		for _, l := range p.out {
			if m := re.FindStringSubmatch(l); m != nil {
				p.mu.Unlock()
				return m[1]
			}
		}
		cond := p.cond
		p.mu.Unlock()
		select {
		case <-cond:
		case <-deadline:
			t.Fatalf("no line matching %s", re)
		}
	}
}

// waitNS polls url with curl inside the namespace until it answers 200.
func waitNS(t *testing.T, ns, url string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, _ := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", url).Output()
		if string(out) == "200" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after %v", url, out, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
