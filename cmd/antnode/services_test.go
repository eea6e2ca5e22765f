package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// TestServicesBar is the bar on loopback: a bootstrap; daemon B
// exposing a plain HTTP server to A only; `forward` with A's key fetched
// with curl (SHA-256 equal); `pipe` with A's key carrying a raw HTTP
// request; the same with a third key failing with a one-line not_allowed
// and B's audit log showing the refusal; and the other refusals' reasons.
func TestServicesBar(t *testing.T) {
	curl := testkit.NeedTool(t, "curl")
	boot := startBootstrap(t)
	dir := t.TempDir()
	keyA, keyB, keyC := filepath.Join(dir, "a.key"), filepath.Join(dir, "b.key"), filepath.Join(dir, "c.key")
	idOf := func(key string) string {
		code, out, errs := run("id", "--key", key)
		if code != 0 {
			t.Fatalf("id: %s", errs)
		}
		return strings.TrimSpace(out)
	}
	a, b := idOf(keyA), idOf(keyB)
	idOf(keyC)

	body := make([]byte, 4<<20)
	rand.Read(body)
	want := sha256.Sum256(body)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer web.Close()
	dead := freeTCP(t) // nothing listens there
	audit := filepath.Join(dir, "audit.log")
	maddr := freeTCP(t)
	daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", boot, "--key", keyB, "--metrics-addr", maddr,
		"--expose", "web="+strings.TrimPrefix(web.URL, "http://"), "--expose", "dead="+dead+",allow=any",
		"--allow", a, "--audit-log", audit)
	testkit.WaitFor(t, 10*time.Second, "B ready", func() bool {
		code, _ := httpGet(t, "http://"+maddr+"/readyz", "")
		return code == http.StatusOK
	})
	common := []string{"--bootstrap-nodes", boot, "--timeout", "10s"}

	// forward with A's key: ready as JSON, then curl through it.
	fout, _, stopForward := stoppableDaemon(t, append([]string{"forward", b, "web", "--local", "127.0.0.1:0", "--key", keyA, "--json"}, common...)...)
	var ready forwardReady
	testkit.WaitFor(t, 15*time.Second, "forward ready", func() bool { return json.Unmarshal([]byte(fout.String()), &ready) == nil })
	if ready.Path != "direct" || ready.Peer != b || ready.Service != "web" {
		t.Fatalf("forward ready: %+v", ready)
	}
	got, err := exec.Command(curl, "-sS", "--max-time", "20", "http://"+ready.Listening+"/file").Output()
	if err != nil || sha256.Sum256(got) != want {
		t.Fatalf("curl through forward: %d bytes, %v", len(got), err)
	}
	// One key, one process: the pipes below use A's key too, and two
	// processes registering as one peer replace each other's registration.
	stopForward()

	// pipe with A's key: a raw HTTP request on stdin, the response on stdout.
	var out, errb bytes.Buffer
	code := mainPipe(t.Context(), append([]string{b, "web", "--key", keyA}, common...),
		strings.NewReader("GET /file HTTP/1.0\r\n\r\n"), &out, &errb)
	resp, err := http.ReadResponse(bufio.NewReader(&out), nil)
	if code != 0 || err != nil {
		t.Fatalf("pipe: exit %d, %v, stderr %q", code, err, errb.String())
	}
	defer resp.Body.Close()
	var pb bytes.Buffer
	pb.ReadFrom(resp.Body)
	if sha256.Sum256(pb.Bytes()) != want {
		t.Fatalf("pipe: body of %d bytes differs", pb.Len())
	}

	// Refusals: a one-line reason and a non-zero exit.
	refusals := []struct {
		name, cmd, key, service, reason string
	}{
		{"forward, third key", "forward", keyC, "web", "not_allowed"},
		{"pipe, third key", "pipe", keyC, "web", "not_allowed"},
		{"pipe, dead target", "pipe", keyA, "dead", "target_unreachable"},
		{"pipe, unknown service", "pipe", keyA, "nope", "unknown_service"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{b, tc.service, "--key", tc.key}, common...)
			var out, errb bytes.Buffer
			var code int
			if tc.cmd == "pipe" {
				code = mainPipe(t.Context(), args, strings.NewReader("x"), &out, &errb)
			} else {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				code = realMain(ctx, append([]string{"forward", "--local", "127.0.0.1:0"}, args...), &out, &errb)
				cancel()
			}
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			if code == 0 || len(lines) != 1 || !strings.Contains(lines[0], tc.reason) {
				t.Fatalf("exit %d, stderr %q: want non-zero and one line naming %s", code, errb.String(), tc.reason)
			}
		})
	}

	// B's audit log names the refused peer; its API counts the streams
	// and its diagnosis names the refusals.
	logged, _ := os.ReadFile(audit)
	if !bytes.Contains(logged, []byte(`"reason":"not_allowed"`)) || !bytes.Contains(logged, []byte(idOf(keyC))) {
		t.Fatalf("audit log has no not_allowed refusal of the third key:\n%s", logged)
	}
	_, svc := httpGet(t, "http://"+maddr+"/api/v1/services", "")
	var services struct {
		Services []struct {
			Service  string            `json:"service"`
			Served   bool              `json:"served"`
			Accepted uint64            `json:"accepted"`
			Refused  map[string]uint64 `json:"refused"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(svc), &services); err != nil {
		t.Fatalf("/api/v1/services: %v: %s", err, svc)
	}
	counts := map[string]string{}
	for _, s := range services.Services {
		counts[s.Service] = strings.TrimSpace(strings.Join([]string{
			map[bool]string{true: "served", false: "-"}[s.Served], itoa(s.Accepted), itoa(s.Refused["not_allowed"]),
			itoa(s.Refused["target_unreachable"]), itoa(s.Refused["unknown_service"])}, " "))
	}
	// web: probe + curl + pipe accepted, two not_allowed; dead: one
	// target_unreachable; unknown: one unknown_service.
	wantCounts := map[string]string{"web": "served 3 2 0 0", "dead": "served 0 0 1 0", "unknown": "- 0 0 0 1"}
	for name, w := range wantCounts {
		if counts[name] != w {
			t.Fatalf("/api/v1/services %s: %q, want %q (all: %v)", name, counts[name], w, counts)
		}
	}
	_, diag := httpGet(t, "http://"+maddr+"/api/v1/diagnostics", "")
	for _, cause := range []string{`"cause":"not_allowed"`, `"cause":"target_unreachable"`, `"cause":"unknown_service"`} {
		if !strings.Contains(strings.ReplaceAll(diag, " ", ""), cause) {
			t.Fatalf("diagnostics lack %s:\n%s", cause, diag)
		}
	}
	_, metrics := httpGet(t, "http://"+maddr+"/metrics", "")
	if !strings.Contains(metrics, `antnode_service_streams_total{outcome="not_allowed",service="web"} 2`) {
		t.Fatalf("metrics lack the refusals:\n%s", grepLines(metrics, "antnode_service"))
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
