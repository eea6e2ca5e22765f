package main

import (
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
)

func TestBirthdayFlags(t *testing.T) {
	def := birthdayFlags{sockets: 256, probes: 4096, rate: 2000, budget: 8 * time.Second, predict: 512}
	tests := []struct {
		name   string
		change func(*birthdayFlags)
		want   holepunch.BirthdayConfig
		err    bool
	}{
		{"defaults", func(*birthdayFlags) {}, holepunch.BirthdayConfig{Sockets: 256, Probes: 4096, Rate: 2000, Budget: 8 * time.Second, Predict: 512}, false},
		{"no prediction", func(f *birthdayFlags) { f.predict = 0 }, holepunch.BirthdayConfig{Sockets: 256, Probes: 4096, Rate: 2000, Budget: 8 * time.Second, Predict: -1}, false},
		{"smallest", func(f *birthdayFlags) {
			*f = birthdayFlags{sockets: 1, probes: 1, rate: 1, budget: 100 * time.Millisecond}
		},
			holepunch.BirthdayConfig{Sockets: 1, Probes: 1, Rate: 1, Budget: 100 * time.Millisecond, Predict: -1}, false},
		{"too many sockets", func(f *birthdayFlags) { f.sockets = 1025 }, holepunch.BirthdayConfig{}, true},
		{"no sockets", func(f *birthdayFlags) { f.sockets = 0 }, holepunch.BirthdayConfig{}, true},
		{"too many probes", func(f *birthdayFlags) { f.probes = 70000 }, holepunch.BirthdayConfig{}, true},
		{"rate too high", func(f *birthdayFlags) { f.rate = 50000 }, holepunch.BirthdayConfig{}, true},
		{"budget too long", func(f *birthdayFlags) { f.budget = 2 * time.Minute }, holepunch.BirthdayConfig{}, true},
		{"budget too short", func(f *birthdayFlags) { f.budget = time.Millisecond }, holepunch.BirthdayConfig{}, true},
		{"negative prediction", func(f *birthdayFlags) { f.predict = -1 }, holepunch.BirthdayConfig{}, true},
		{"more predicted than probes", func(f *birthdayFlags) { f.probes, f.predict = 100, 200 }, holepunch.BirthdayConfig{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := def
			tc.change(&f)
			got, err := f.config()
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("config() = %+v, %v; want %+v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
	// The flags reach the command line (and the config file) and are
	// checked there: a bad value stops the command with a usage error.
	peer, _ := identity.Generate()
	code, out, errOut := run("connect", peer.ID().String(), "--bootstrap-nodes", "127.0.0.1:1", "--timeout", "1s", "--birthday-rate", "0")
	if code == exitOK || !strings.Contains(out+errOut, "--birthday-rate 0") {
		t.Fatalf("a zero --birthday-rate: exit %d, %q %q", code, out, errOut)
	}
}
