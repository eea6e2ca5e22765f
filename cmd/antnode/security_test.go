package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// servePages serves pages (path → HTML) on a loopback port of its own,
// another origin than the node's, until the test ends; it returns the
// port.
func servePages(t *testing.T, pages map[string]string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for path, html := range pages {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, html)
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// TestWebPageCannotDriveAPI: a real browser, logged in to a peer's
// dashboard (the token in its cookie), visits pages of other origins.
// Their auto-submitted form and their script's POST to /api/v1/connect
// are refused and connect nothing; a rebound name cannot read the API;
// the dashboard's own origin still can POST with JSON. Issue 21, finding 2.
func TestWebPageCannotDriveAPI(t *testing.T) {
	chromium := needBinary(t, "chromium", "chromium")
	driver := needBinary(t, "chromedriver", "chromium-driver")
	dir := t.TempDir()
	const token = "web-page-token-0123456789abcdef"
	boot := startBootstrap(t)
	target := startPeer(t, boot)
	metrics := freeTCP(t)
	_, port, _ := net.SplitHostPort(metrics)
	daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", boot, "--metrics-addr", metrics, "--metrics-token-file", writeToken(t, token))
	peerURL := "http://" + metrics
	testkit.WaitFor(t, 15*time.Second, "the peer to be ready", func() bool {
		code, _ := httpGet(t, peerURL+"/readyz", "")
		return code == 200
	})
	connectURL := peerURL + "/api/v1/connect?peer=" + target.String() + "&send=1MiB"
	form := func(enctype string) string {
		return `<form method="POST" enctype="` + enctype + `" action="` + connectURL + `"><input name="a" value="b"></form>` +
			`<script>document.forms[0].submit()</script>`
	}
	evil := servePages(t, map[string]string{
		"/form":      form("application/x-www-form-urlencoded"),
		"/plainform": form("text/plain"),
		"/fetch": `<script>fetch("` + connectURL + `", {method: "POST", mode: "no-cors", credentials: "include",
			headers: {"Content-Type": "text/plain"}, body: "{}"}).finally(() => { document.title = "sent"; })</script>`,
	})
	// Chromium resolves every *.example name to loopback: a DNS rebinding.
	wd := startChromium(t, chromium, driver, dir, "--host-resolver-rules=MAP *.example 127.0.0.1")
	wd.call(http.MethodPost, "/session/"+wd.session+"/url", map[string]any{"url": peerURL + "/?token=" + token})
	attempts := func() int {
		_, body := httpGet(t, peerURL+"/api/v1/attempts", token)
		var list struct{ Attempts []json.RawMessage }
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			t.Fatalf("attempts: %v %s", err, body)
		}
		return len(list.Attempts)
	}
	var page struct{ URL, Title, Text string }
	read := func() {
		wd.js(`return {URL: location.href, Title: document.title, Text: document.body ? document.body.innerText : ""}`, &page)
	}
	tests := []struct {
		name string
		url  string
		done func() bool // the browser has its answer
		want string      // in the page it shows
	}{
		{"form from another port of the same site", "http://127.0.0.1:" + evil + "/form",
			func() bool { return strings.HasPrefix(page.URL, peerURL) }, "cross-origin request refused"},
		{"text/plain form from another port", "http://127.0.0.1:" + evil + "/plainform",
			func() bool { return strings.HasPrefix(page.URL, peerURL) }, "cross-origin request refused"},
		{"form from another site", "http://localhost:" + evil + "/form",
			func() bool { return strings.HasPrefix(page.URL, peerURL) }, "bearer token is required"},
		{"no-cors script from another port", "http://127.0.0.1:" + evil + "/fetch",
			func() bool { return page.Title == "sent" }, ""},
		{"a rebound name reads the status", "http://rebound.example:" + port + "/api/v1/status",
			func() bool { return strings.Contains(page.Text, "error") }, "does not name this node"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wd.call(http.MethodPost, "/session/"+wd.session+"/url", map[string]any{"url": tc.url})
			testkit.WaitFor(t, 15*time.Second, "the browser's answer", func() bool { read(); return tc.done() })
			if !strings.Contains(page.Text, tc.want) {
				t.Fatalf("the page at %s shows %q, want %q", page.URL, page.Text, tc.want)
			}
			if n := attempts(); n != 0 {
				t.Fatalf("the node made %d connection attempts", n)
			}
		})
	}
	// The dashboard's own origin, with the cookie and JSON, may.
	wd.call(http.MethodPost, "/session/"+wd.session+"/url", map[string]any{"url": peerURL + "/"})
	var code int
	wd.js(`return fetch("/api/v1/connect?peer=`+target.String()+`&send=64KiB", {method: "POST",
		headers: {"Content-Type": "application/json"}, body: "{}"}).then(r => r.status)`, &code)
	if code != http.StatusOK || attempts() != 1 {
		t.Fatalf("a POST from the dashboard's origin: %d, %d attempts; want 200 and 1", code, attempts())
	}
}
