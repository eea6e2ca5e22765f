package testnet

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestLastJSON(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      string // the peer decoded; "" for an error
	}{
		{"result last", "time=1 level=INFO msg=x\n{\"peer\":\"a\"}\n", "a"},
		{"a log line after the result", "{\"peer\":\"a\"}\ntime=2 level=DEBUG msg=\"Failed to read\" pion=turnc\n", "a"},
		{"the latest result wins", "{\"peer\":\"a\"}\n{\"peer\":\"b\"}\ntime=3\n", "b"},
		{"a torn result is skipped", "{\"peer\":\"a\"}\n{\"peer\":tr\ntime=4\n", "a"},
		{"no result", "time=1 level=INFO\n", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res ConnectResult
			err := lastJSON(tc.out, &res)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("decoded %+v from %q; want an error", res, tc.out)
				}
				return
			}
			if err != nil || res.Peer != tc.want {
				t.Fatalf("lastJSON = %q, %v; want peer %q", res.Peer, err, tc.want)
			}
		})
	}
}

func TestLogExcerpt(t *testing.T) {
	out := strings.Join([]string{
		`time=1 level=DEBUG msg="check sent" event=check_sent`,
		`time=2 level=INFO msg=migration event=migration detail=fallback outcome=fail`,
		`time=3 level=INFO msg="state change" event=state_change`,
		`time=4 level=WARN msg="bootstrap down"`,
		`time=5 level=INFO msg=relay event=relay detail=allocate outcome=ok`,
		`time=6 level=INFO msg="traversal: transfer from peer failed" err="deadline exceeded"`,
		`{"connected":true}`,
	}, "\n")
	tests := []struct {
		name string
		max  int
		want string
	}{
		{"all path lines", 12, `time=2 level=INFO msg=migration event=migration detail=fallback outcome=fail | time=4 level=WARN msg="bootstrap down" | time=5 level=INFO msg=relay event=relay detail=allocate outcome=ok | time=6 level=INFO msg="traversal: transfer from peer failed" err="deadline exceeded"`},
		{"the last ones", 1, `time=6 level=INFO msg="traversal: transfer from peer failed" err="deadline exceeded"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := logExcerpt(out, tc.max); got != tc.want {
				t.Errorf("logExcerpt = %q, want %q", got, tc.want)
			}
		})
	}
	if got := logExcerpt("level=DEBUG only\n", 5); got != "" {
		t.Errorf("nothing to keep: got %q", got)
	}
}

func TestConnectResultMoves(t *testing.T) {
	var none ConnectResult
	if got := none.moves(); got != "no moves" {
		t.Errorf("no migrations: %q", got)
	}
	var r ConnectResult
	if err := json.Unmarshal([]byte(`{"migrations":[{"kind":"fallback","reason":"path_blackholed","ok":false,"at_ms":1500,"duration_ms":10000,"from":"direct","to":"direct"}]}`), &r); err != nil {
		t.Fatal(err)
	}
	want := "moves: fallback (path_blackholed) ok=false at +1500 ms took 10000 ms, direct -> direct"
	if got := r.moves(); got != want {
		t.Errorf("moves = %q, want %q", got, want)
	}
}

func TestParseRelayLines(t *testing.T) {
	out := strings.Join([]string{
		`time=2026-12-06T17:41:01.101Z level=INFO msg=relay event=relay outcome=ok peer=oiuu addr=ip4-37:11671 detail=allocate`,
		`time=2026-12-06T17:41:01.101Z level=INFO msg=relay audit=true event=relay outcome=ok peer=oiuu addr=ip4-37:11671 detail=allocate`,
		`time=2026-12-06T17:41:20.374Z level=INFO msg=relay event=relay outcome=ok peer=go7f addr=ip4-28:58329 detail=allocate`,
		`time=2026-12-06T17:41:21.000Z level=INFO msg=relay event=relay outcome=fail peer=go7f detail=permission`,
		`time=2026-12-06T17:41:27.266Z level=INFO msg=relay event=relay outcome=ok peer=go7f addr=ip4-28:58329 detail=release`,
		`time=2026-12-06T17:41:28.000Z level=INFO msg="state change" event=state_change peer=go7f detail=connected-direct to=closed`,
	}, "\n")
	lines := parseRelayLines(out)
	if len(lines) != 3 {
		t.Fatalf("parsed %d lines, want 3 (the audit copy and failures left out): %+v", len(lines), lines)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name  string
		since time.Time
		match func(relayLine) bool
		want  relayLine
		ok    bool
	}{
		{"the first allocation after the start", at("2026-12-06T17:41:10Z"), func(r relayLine) bool { return r.Op == "allocate" },
			relayLine{At: at("2026-12-06T17:41:20.374Z"), Op: "allocate", Peer: "go7f", Addr: "ip4-28:58329"}, true},
		{"its release", at("2026-12-06T17:41:20.374Z"), func(r relayLine) bool { return r.Op == "release" && r.Peer == "go7f" },
			relayLine{At: at("2026-12-06T17:41:27.266Z"), Op: "release", Peer: "go7f", Addr: "ip4-28:58329"}, true},
		{"another peer's allocation never released", at("2026-12-06T17:41:00Z"), func(r relayLine) bool { return r.Op == "release" && r.Peer == "oiuu" },
			relayLine{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := firstRelayLine(lines, tc.since, tc.match)
			if ok != tc.ok || got != tc.want {
				t.Errorf("firstRelayLine = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	end, ok := closedAt(out)
	if !ok || !end.Equal(at("2026-12-06T17:41:28Z")) {
		t.Errorf("closedAt = %v, %v", end, ok)
	}
	if _, ok := closedAt("time=1 level=INFO msg=x\n"); ok {
		t.Error("closedAt found a close in a log without one")
	}
}

func TestRepairOf(t *testing.T) {
	for _, tc := range []struct {
		name      string
		nat, peer string
		want      string
	}{
		{"the initiator dialled", "eim-apdf", "eim-apdf", "rebind"},
		{"a birthday connection the peer dialled", "eim-apdf", "apdm", "peer-moved"},
		{"a birthday connection the initiator dialled", "apdm", "eim-apdf", "fallback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := repairOf(ConnectResult{NAT: tc.nat, PeerNAT: tc.peer}); got != tc.want {
				t.Errorf("repairOf = %q, want %q", got, tc.want)
			}
		})
	}
}
