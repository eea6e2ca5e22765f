package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// The dashboard in a real browser: Debian's headless Chromium driven by
// its chromedriver over the W3C WebDriver protocol.

// webDriver is a minimal W3C WebDriver client.
type webDriver struct {
	t       *testing.T
	base    string // chromedriver
	session string
}

func (wd *webDriver) call(method, path string, body any) json.RawMessage {
	wd.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			wd.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, wd.base+path, rd)
	if err != nil {
		wd.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		wd.t.Fatalf("webdriver %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out struct{ Value json.RawMessage }
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode != http.StatusOK {
		wd.t.Fatalf("webdriver %s %s: %d %.500s", method, path, resp.StatusCode, raw)
	}
	return out.Value
}

// js runs a script in the page and decodes its result into v.
func (wd *webDriver) js(script string, v any) {
	wd.t.Helper()
	raw := wd.call(http.MethodPost, "/session/"+wd.session+"/execute/sync", map[string]any{"script": script, "args": []any{}})
	if err := json.Unmarshal(raw, v); err != nil {
		wd.t.Fatalf("script result %s: %v", raw, err)
	}
}

func needBinary(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (apt-get install %s)", name, pkg)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// artifactDir is where tests leave files for people to look at:
// $ANTNODE_ARTIFACTS, or artifacts/ at the top of the repository.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("ANTNODE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startChromium starts chromedriver and a headless Chromium session
// (its profile in dir, extra command-line args appended) for the rest of
// the test.
func startChromium(t *testing.T, chromium, driver, dir string, args ...string) *webDriver {
	t.Helper()
	dport := freeTCP(t)
	_, portStr, _ := strings.Cut(dport, ":")
	cd := exec.Command(driver, "--port="+portStr, "--allowed-ips=127.0.0.1")
	var cdOut lockedBuffer
	cd.Stdout, cd.Stderr = &cdOut, &cdOut
	if err := cd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cd.Process.Kill(); cd.Wait() })
	wd := &webDriver{t: t, base: "http://" + dport}
	testkit.WaitFor(t, 20*time.Second, "chromedriver", func() bool {
		resp, err := http.Get(wd.base + "/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	var sess struct{ SessionID string }
	raw := wd.call(http.MethodPost, "/session", map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{"binary": chromium, "args": append([]string{"--headless=new", "--no-sandbox",
			"--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100", "--user-data-dir=" + filepath.Join(dir, "chromium")}, args...)},
	}}})
	if err := json.Unmarshal(raw, &sess); err != nil || sess.SessionID == "" {
		t.Fatalf("session: %s (%v)\n%s", raw, err, cdOut.String())
	}
	wd.session = sess.SessionID
	t.Cleanup(func() { wd.call(http.MethodDelete, "/session/"+wd.session, nil) })
	return wd
}

// TestDashboardInChromium loads a running peer's dashboard in headless
// Chromium, checks that it shows what /api/v1/status says, makes a new
// connection to the peer and sees the page update without a reload, and
// saves a screenshot.
func TestDashboardInChromium(t *testing.T) {
	chromium := needBinary(t, "chromium", "chromium")
	driver := needBinary(t, "chromedriver", "chromium-driver")
	dir := t.TempDir()
	const token = "dashboard-browser-token-0123456789"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bootKey := filepath.Join(dir, "boot.key")
	_, idOut, _ := run("id", "--key", bootKey)
	bport := freePorts(t)
	boot := strings.TrimSpace(idOut) + "@127.0.0.1:" + strconv.Itoa(bport)
	daemon(t, "--bootstrap", "--listen", "127.0.0.1:"+strconv.Itoa(bport), "--key", bootKey, "--metrics-addr", "off")
	peerMetrics := freeTCP(t)
	daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", boot, "--metrics-addr", peerMetrics, "--metrics-token-file", tokenFile)
	peerURL := "http://" + peerMetrics
	testkit.WaitFor(t, 15*time.Second, "the peer to be ready", func() bool {
		code, _ := httpGet(t, peerURL+"/readyz", "")
		return code == 200
	})
	_, body := httpGet(t, peerURL+"/api/v1/status", token)
	var status struct {
		ID, NAT     string
		NATFamilies map[string]string `json:"nat_families"`
	}
	if err := json.Unmarshal([]byte(body), &status); err != nil || status.ID == "" {
		t.Fatalf("status: %v %s", err, body)
	}

	wd := startChromium(t, chromium, driver, dir)

	// Log in with the token (the page keeps it as a cookie), then wait for
	// the first frame.
	wd.call(http.MethodPost, "/session/"+wd.session+"/url", map[string]any{"url": peerURL + "/?token=" + token})
	var shown struct {
		ID, NAT, Live, Families string
		Frames                  int
		Stored                  int
	}
	read := func() {
		wd.js(`return {ID: document.getElementById("node-id").textContent, NAT: document.getElementById("nat-type").textContent,
			Families: document.getElementById("nat-families").textContent,
			Live: document.getElementById("live").dataset.state, Frames: Number(document.body.dataset.frames || 0),
			Stored: Number(document.getElementById("attempt-count").textContent) || 0}`, &shown)
	}
	testkit.WaitFor(t, 20*time.Second, "the dashboard's first frame", func() bool { read(); return shown.Frames > 0 && shown.Live == "live" })
	// The page shows what /api/v1/status says (the NAT type may still be
	// changing as the node classifies itself: the page must follow).
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body = httpGet(t, peerURL+"/api/v1/status", token)
		if err := json.Unmarshal([]byte(body), &status); err != nil {
			t.Fatal(err)
		}
		read()
		// One family here (an IPv4 socket): "ipv4 CLASS".
		if shown.ID == status.ID && shown.NAT == status.NAT && shown.Families == "ipv4 "+status.NATFamilies["ipv4"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page shows node %q NAT %q (%q); /api/v1/status says %q %q (%v)", shown.ID, shown.NAT, shown.Families,
				status.ID, status.NAT, status.NATFamilies)
		}
		time.Sleep(200 * time.Millisecond)
	}
	checkPortMapPanel(t, wd, peerURL, token)
	before := shown.Stored
	var marker int
	wd.js(`window.antnodeMarker = 42; return 42`, &marker)

	// A new connection to the peer shows up without a reload.
	if code, out, errOut := run("connect", status.ID, "--bootstrap-nodes", boot, "--send", "64KiB", "--json"); code != exitOK {
		t.Fatalf("connect: %d %s %s", code, out, errOut)
	}
	testkit.WaitFor(t, 20*time.Second, "the new attempt on the page", func() bool { read(); return shown.Stored > before })
	wd.js(`return window.antnodeMarker || 0`, &marker)
	if marker != 42 {
		t.Fatal("the page reloaded instead of updating")
	}
	_, body = httpGet(t, peerURL+"/api/v1/attempts?limit=1", token)
	var api struct {
		Attempts []struct{ ID, Outcome, Path, Family string }
	}
	if err := json.Unmarshal([]byte(body), &api); err != nil || len(api.Attempts) != 1 {
		t.Fatalf("attempts: %v %s", err, body)
	}
	var row struct{ ID, Outcome, Path, Family string }
	testkit.WaitFor(t, 10*time.Second, "the newest attempt's row", func() bool {
		wd.js(`const r = document.querySelector("#attempt-rows tr"); if (!r) return {};
			return {ID: r.dataset.attemptId, Outcome: r.children[3].textContent, Path: r.children[4].textContent,
				Family: r.children[5].textContent}`, &row)
		return row.ID == api.Attempts[0].ID
	})
	if !strings.HasPrefix(row.Outcome, api.Attempts[0].Outcome) || row.Path != api.Attempts[0].Path ||
		api.Attempts[0].Family != "ipv4" || row.Family != api.Attempts[0].Family {
		t.Fatalf("row %+v, API %+v (want family ipv4)", row, api.Attempts[0])
	}

	// The services table shows the built-in transfer service with the
	// stream the connect opened, as the API counts it.
	var svc struct{ Accepted, In string }
	testkit.WaitFor(t, 10*time.Second, "the transfer service's row", func() bool {
		wd.js(`const r = document.querySelector('#service-rows tr[data-service="transfer"]'); if (!r) return {};
			return {Accepted: r.children[4].textContent, In: r.children[8].textContent}`, &svc)
		return svc.Accepted != "" && svc.Accepted != "0"
	})
	if svc.In == "0 B" {
		t.Fatalf("services row %+v: no bytes in", svc)
	}

	// The screenshot, for people.
	var png string
	if err := json.Unmarshal(wd.call(http.MethodGet, "/session/"+wd.session+"/screenshot", nil), &png); err != nil {
		t.Fatal(err)
	}
	img, err := base64.StdEncoding.DecodeString(png)
	if err != nil || !bytes.HasPrefix(img, []byte("\x89PNG")) {
		t.Fatalf("screenshot: %v", err)
	}
	out := filepath.Join(artifactDir(t), "dashboard.png")
	if err := os.WriteFile(out, img, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(img))
}

// pmPanel is what the port-mapping panel shows.
type pmPanel struct {
	Mode, State, Class, Protocol, External, Lease, Granted, Renewed, Router string
}

// readPMPanel is the script that reads a port-mapping panel (root).
const readPMPanel = `const f = k => root.querySelector('[data-pm="' + k + '"]');
	return {Mode: f("mode").textContent, State: f("state").textContent, Class: f("state").className,
		Protocol: f("protocol").textContent, External: f("external").textContent, Lease: f("lease").textContent,
		Granted: f("granted").textContent, Renewed: f("renewed").textContent, Router: f("router").textContent}`

// checkPortMapPanel checks the port-mapping panel: live, it shows the
// state /api/v1/status gives (a peer whose bootstraps are all on loopback
// maps nothing: off); and the page's own renderer, given the states a
// node can be in, shows each in a copy of the panel (the live one is
// redrawn by every frame).
func checkPortMapPanel(t *testing.T, wd *webDriver, peerURL, token string) {
	t.Helper()
	_, body := httpGet(t, peerURL+"/api/v1/status", token)
	var status struct{ PortMap *portMapJSON }
	if err := json.Unmarshal([]byte(body), &status); err != nil || status.PortMap == nil {
		t.Fatalf("status without its portmap: %v %s", err, body)
	}
	var live pmPanel
	testkit.WaitFor(t, 10*time.Second, "the port-mapping panel", func() bool {
		wd.js("const root = document.getElementById('portmap');\n"+readPMPanel, &live)
		return live.Mode == status.PortMap.Mode
	})
	if status.PortMap.Mode != "off" || live.State != "off" || live.External != "-" || live.Router != "-" {
		t.Fatalf("status %+v; the panel shows %+v", status.PortMap, live)
	}
	const granted, renewed = "2026-12-06T10:00:00Z", "2026-12-06T11:00:00Z"
	tests := []struct {
		name   string
		status string // the status object's JSON
		want   pmPanel
	}{
		{"active, renewed", `{"role":"peer","portmap":{"mode":"auto","active":true,"protocol":"pcp","external":"198.51.100.9:40000","lease_s":7200,
			"granted_at":"` + granted + `","renewed_at":"` + renewed + `","probes":[{"protocol":"pcp","result":"ok"}]}}`,
			pmPanel{Mode: "auto", State: "active", Class: "ok", Protocol: "pcp", External: "198.51.100.9:40000", Lease: "2 h", Router: "pcp ok"}},
		{"active, not renewed yet", `{"role":"peer","portmap":{"mode":"upnp","active":true,"protocol":"upnp","external":"198.51.100.9:4242","lease_s":3600,
			"granted_at":"` + granted + `","probes":[{"protocol":"upnp","result":"ok"}]}}`,
			pmPanel{Mode: "upnp", State: "active", Class: "ok", Protocol: "upnp", External: "198.51.100.9:4242", Lease: "1 h", Renewed: "not yet", Router: "upnp ok"}},
		{"refused", `{"role":"peer","portmap":{"mode":"auto","active":false,"last_error":"portmap: pcp: refused with 2 (NOT_AUTHORIZED)\nportmap: no answer",
			"probes":[{"protocol":"pcp","result":"refused","code":2},{"protocol":"natpmp","result":"no-answer"}]}}`,
			pmPanel{Mode: "auto", State: "none: the router refused (pcp code 2)", Class: "fail", Protocol: "-", External: "-", Lease: "-", Granted: "-", Renewed: "-",
				Router: "pcp refused (code 2), natpmp no-answer"}},
		{"no answer", `{"role":"peer","portmap":{"mode":"natpmp","active":false,"last_error":"portmap: no answer from 192.168.1.1:5351 (natpmp) in 4s",
			"probes":[{"protocol":"natpmp","result":"no-answer"}]}}`,
			pmPanel{Mode: "natpmp", State: "none: portmap: no answer from 192.168.1.1:5351 (natpmp) in 4s", Class: "warn", Protocol: "-", External: "-",
				Lease: "-", Granted: "-", Renewed: "-", Router: "natpmp no-answer"}},
		{"asking", `{"role":"peer","portmap":{"mode":"auto","active":false}}`,
			pmPanel{Mode: "auto", State: "none yet: asking the router", Class: "muted", Protocol: "-", External: "-", Lease: "-", Granted: "-", Renewed: "-", Router: "-"}},
		{"off", `{"role":"peer","portmap":{"mode":"off","active":false}}`,
			pmPanel{Mode: "off", State: "off", Class: "muted", Protocol: "-", External: "-", Lease: "-", Granted: "-", Renewed: "-", Router: "-"}},
		{"a bootstrap", `{"role":"bootstrap"}`,
			pmPanel{Mode: "-", State: "not used (a bootstrap maps nothing)", Protocol: "-", External: "-", Lease: "-", Granted: "-", Renewed: "-", Router: "-"}},
	}
	for _, tc := range tests {
		t.Run("portmap panel/"+tc.name, func(t *testing.T) {
			wd := &webDriver{t: t, base: wd.base, session: wd.session} // fails this subtest
			var got pmPanel
			wd.js("const root = document.getElementById('portmap').cloneNode(true);\nrenderPortMap({status: "+tc.status+"}, root);\n"+readPMPanel, &got)
			want := tc.want
			// Times are shown in the browser's zone: compare with its own.
			if want.Granted == "" || want.Renewed == "" {
				var local struct{ Granted, Renewed string }
				wd.js(`return {Granted: new Date("`+granted+`").toLocaleTimeString(), Renewed: new Date("`+renewed+`").toLocaleTimeString()}`, &local)
				if want.Granted == "" {
					want.Granted = local.Granted
				}
				if want.Renewed == "" {
					want.Renewed = local.Renewed
				}
			}
			if got != want {
				t.Errorf("the panel shows\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}
