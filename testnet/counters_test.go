package testnet

import "testing"

func TestCheckCounters(t *testing.T) {
	tests := []struct {
		name  string
		tally Tally
		c     Counters
		agree bool
	}{
		{"all connected", Tally{10, 10, 7, 3}, Counters{10, 10, 0, 10, 7, 3, 0}, true},
		{"failures counted", Tally{10, 8, 8, 0}, Counters{10, 8, 2, 12, 8, 0, 0}, true},
		{"a responder attempt missing", Tally{10, 10, 10, 0}, Counters{9, 9, 0, 10, 9, 0, 0}, false},
		{"a success counted as failure", Tally{10, 10, 10, 0}, Counters{10, 9, 1, 10, 9, 0, 0}, false},
		{"bootstrap missed requests", Tally{10, 10, 10, 0}, Counters{10, 10, 0, 7, 10, 0, 0}, false},
		{"extra responder attempts", Tally{10, 10, 10, 0}, Counters{11, 10, 1, 10, 10, 0, 0}, false},
		// A lossy CI matrix: an initiator's first bootstrap acknowledged
		// too late, the initiator withdrew there and connected through
		// the other, and the late request's responder attempt ended as
		// canceled.
		{"a withdrawn request's attempt, canceled", Tally{10, 10, 10, 0}, Counters{11, 10, 1, 11, 10, 0, 1}, true},
		{"a withdrawn request and a real failure", Tally{10, 9, 9, 0}, Counters{11, 9, 2, 11, 9, 0, 1}, true},
		{"a relayed success counted as direct", Tally{10, 10, 7, 3}, Counters{10, 10, 0, 10, 8, 2, 0}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckCounters(tc.tally, tc.c)
			if got.Agree != tc.agree || (got.Agree == (got.Detail != "")) {
				t.Fatalf("%+v", got)
			}
		})
	}
}

func TestCountersFrom(t *testing.T) {
	text := `# HELP nat_attempts_total x
# TYPE nat_attempts_total counter
nat_attempts_total{role="initiator"} 4
nat_attempts_total{role="responder"} 7
# HELP nat_results_total x
# TYPE nat_results_total counter
nat_results_total{path="direct",reason="none",result="success",role="responder"} 5
nat_results_total{path="relay",reason="none",result="success",role="responder"} 1
nat_results_total{path="none",reason="punch_timeout",result="failure",role="responder"} 1
nat_results_total{path="none",reason="canceled",result="failure",role="responder"} 2
nat_results_total{path="direct",reason="none",result="success",role="initiator"} 4
# HELP bootstrap_requests_total x
# TYPE bootstrap_requests_total counter
bootstrap_requests_total{bootstrap="server",result="success",type="connect"} 6
bootstrap_requests_total{bootstrap="server",result="failure",type="connect"} 2
bootstrap_requests_total{bootstrap="0",result="success",type="connect"} 3
`
	c, err := CountersFrom(text)
	if err != nil {
		t.Fatal(err)
	}
	want := Counters{ResponderAttempts: 7, ResponderSuccess: 6, ResponderFailure: 3, BootstrapConnects: 8, ResponderDirect: 5, ResponderRelay: 1, ResponderCanceled: 2}
	if c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	if got, want := c.Sub(want), (Counters{}); got != want {
		t.Fatalf("c - c = %+v", got)
	}
	if _, err := CountersFrom("nat_attempts_total{role=\"x\" 1\n"); err == nil {
		t.Fatal("a malformed exposition parsed")
	}
}
