package traversal

import (
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// TestConfigDefaults: each field's zero value becomes its documented
// default, and the fields whose negative value means "never" or "none"
// keep that meaning.
func TestConfigDefaults(t *testing.T) {
	base := func() Config { return Config{Identity: testkit.Identity(t), Endpoint: testkit.Endpoint(t)} }
	c := base()
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	durations := []struct {
		name string
		got  time.Duration
		want time.Duration
	}{
		{"ConnectTimeout", c.ConnectTimeout, 15 * time.Second}, {"PunchBudget", c.PunchBudget, 3 * time.Second},
		{"HandshakeTimeout", c.HandshakeTimeout, 5 * time.Second}, {"KeepAlive", c.KeepAlive, 10 * time.Second},
		{"IdleTimeout", c.IdleTimeout, 30 * time.Second}, {"RelayTTL", c.RelayTTL, time.Hour},
		{"DeadAfter", c.DeadAfter, 1500 * time.Millisecond}, {"DeadPathCheck", c.DeadPathCheck, 250 * time.Millisecond},
		{"UpgradeBase", c.UpgradeBase, time.Second}, {"UpgradeMax", c.UpgradeMax, time.Minute},
		{"RelayIdle", c.RelayIdle, 30 * time.Second}, {"ReclassifyEvery", c.ReclassifyEvery, 10 * time.Minute},
		{"BreakerDelay", c.BreakerDelay, time.Minute},
	}
	for _, d := range durations {
		if d.got != d.want {
			t.Errorf("%s = %v, want %v", d.name, d.got, d.want)
		}
	}
	counts := []struct {
		name      string
		got, want int64
	}{
		{"MaxStreamsPerPeer", int64(c.Services.MaxStreamsPerPeer), 1024}, {"MaxTransfer", c.MaxTransfer, 1 << 30},
		{"MaxRounds", int64(c.MaxRounds), 2}, {"BreakerThreshold", int64(c.BreakerThreshold), 5},
		{"MaxInflight", int64(c.MaxInflight), 64}, {"MaxPeerStates", int64(c.MaxPeerStates), 1024},
		{"PrimeTTL", int64(c.PrimeTTL), 2}, {"SpeculativeDials", int64(c.SpeculativeDials), 4},
	}
	for _, n := range counts {
		if n.got != n.want {
			t.Errorf("%s = %d, want %d", n.name, n.got, n.want)
		}
	}
	if c.Recorder == nil || c.Logger == nil || c.Listen == nil || !c.AllowLoopback {
		t.Errorf("recorder %v, logger %v, listen set %v, loopback %v", c.Recorder, c.Logger, c.Listen != nil, c.AllowLoopback)
	}

	never := base()
	never.DeadPathCheck, never.UpgradeBase, never.PrimeTTL, never.SpeculativeDials = -1, -1, -1, -1
	never.RelayTTL, never.MaxRounds = -time.Second, -3 // negative here is "the default"
	if err := never.validate(); err != nil {
		t.Fatal(err)
	}
	if never.DeadPathCheck != -1 || never.UpgradeBase != -1 || never.PrimeTTL != 0 || never.SpeculativeDials != 0 ||
		never.RelayTTL != time.Hour || never.MaxRounds != 2 {
		t.Errorf("negatives: %+v", never)
	}

	for _, bad := range []func(*Config){
		func(c *Config) { c.Identity = nil }, func(c *Config) { c.Endpoint = nil },
		func(c *Config) { c.ConnectTimeout = -1 }, func(c *Config) { c.MaxTransfer = -1 },
	} {
		c := base()
		bad(&c)
		if c.validate() == nil {
			t.Errorf("accepted %+v", c)
		}
	}
}
