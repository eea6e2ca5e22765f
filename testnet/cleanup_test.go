package testnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestNSOwnerPID(t *testing.T) {
	tests := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"antb1234-srv", 1234, true},        // DefaultPrefix
		{"antb1234-w3", 1234, true},         //
		{"antbt1234c0-inet", 1234, true},    // the tests' uniquePrefix
		{"antbe4242-h0a", 4242, true},       // a tag of one letter
		{"antbkx-a", 0, false},              // a custom prefix: no owner
		{"antb-srv", 0, false},              //
		{"antb0-srv", 0, false},             // no process 0
		{"mybed1234-srv", 0, false},         // not a testbed name
		{"antbt", 0, false},                 //
		{"antb12345678901-x", 0, false},     // more digits than a process ID has: not one
		{"antb4194304-inet", 4194304, true}, // the largest pid_max
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pid, ok := nsOwnerPID(tc.name)
			if pid != tc.pid || ok != tc.ok {
				t.Fatalf("nsOwnerPID = %d, %v; want %d, %v", pid, ok, tc.pid, tc.ok)
			}
		})
	}
}

func TestCleanupVerdict(t *testing.T) {
	created := time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		s       ownerState
		unowned bool
		remove  bool
	}{
		{"no owner in the name: kept", ownerState{}, false, false},
		{"no owner in the name, Unowned: removed", ownerState{}, true, true},
		{"owner gone: removed", ownerState{PID: 77, Created: created}, false, true},
		{"owner alive: kept", ownerState{PID: 77, Exists: true, Started: created.Add(-time.Hour), Created: created}, false, false},
		{"owner alive, Unowned: kept", ownerState{PID: 77, Exists: true, Started: created.Add(-time.Hour), Created: created}, true, false},
		{"owner alive, start time unknown: kept", ownerState{PID: 77, Exists: true, Created: created}, false, false},
		{"owner alive, creation time unknown: kept", ownerState{PID: 77, Exists: true, Started: created}, false, false},
		{"start within the slack of the creation: kept", ownerState{PID: 77, Exists: true, Started: created.Add(startSlack), Created: created}, false, false},
		{"ID reused by a later process: removed", ownerState{PID: 77, Exists: true, Started: created.Add(startSlack + time.Second), Created: created}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			remove, why := cleanupVerdict(tc.s, tc.unowned)
			if remove != tc.remove {
				t.Fatalf("remove %v (%q), want %v", remove, why, tc.remove)
			}
			if !remove && why == "" {
				t.Fatal("a kept namespace needs a reason")
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	rest := func(state string, start string) string {
		f := []string{state}
		for i := 4; i <= 52; i++ {
			f = append(f, fmt.Sprint(i))
		}
		f[19] = start
		return strings.Join(f, " ")
	}
	tests := []struct {
		name  string
		line  string
		state byte
		ticks uint64
		err   bool
	}{
		{"plain", "1234 (antnode) " + rest("S", "98765"), 'S', 98765, false},
		{"spaces and parentheses in the name", "1234 (a (b) c) " + rest("Z", "5"), 'Z', 5, false},
		{"no name", "1234 antnode S 1 2 3", 0, 0, true},
		{"too short", "1234 (x) S 1 2 3", 0, 0, true},
		{"bad start time", "1234 (x) " + rest("S", "soon"), 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state, ticks, err := parseProcStat(tc.line)
			if (err != nil) != tc.err || state != tc.state || ticks != tc.ticks {
				t.Fatalf("parseProcStat = %c, %d, %v; want %c, %d, error %v", state, ticks, err, tc.state, tc.ticks, tc.err)
			}
			if err != nil && !errors.Is(err, errProcStat) {
				t.Fatalf("error %v is not errProcStat", err)
			}
		})
	}
	// This process: alive, started after boot and before now.
	boot, err := readBootTime()
	if err != nil {
		t.Fatal(err)
	}
	exists, started := procStart(os.Getpid(), boot)
	if !exists || started.Before(boot) || started.After(time.Now().Add(time.Second)) {
		t.Fatalf("this process: exists %v, started %v (boot %v)", exists, started, boot)
	}
	if exists, _ := procStart(deadPID(t), boot); exists {
		t.Fatal("an exited, reaped process exists")
	}
}

// deadPID returns the ID of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	for range 5 {
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.ProcessState.Pid()
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return pid
		}
	}
	t.Fatal("no free process ID after 5 tries")
	return 0
}

// TestCleanupKeepsLiveRuns creates real namespaces named as a live run's
// (this process's ID), a dead run's (with a process left inside, as a
// killed run leaves its daemons) and an unowned run's, and checks that
// Cleanup removes only the dead run's, kills what ran there, and removes
// the unowned ones only when asked to.
func TestCleanupKeepsLiveRuns(t *testing.T) {
	needRoot(t)
	live := fmt.Sprintf("antbk%d-", os.Getpid())
	gone := fmt.Sprintf("antbk%d-", deadPID(t))
	unowned := "antbkx-"
	all := []string{live + "a", live + "b", gone + "a", gone + "b", unowned + "a"}
	t.Cleanup(func() { removeNamespaces(all) })
	var lines []string
	for _, n := range all {
		lines = append(lines, "netns add "+n)
	}
	if err := ipBatch(t.Context(), lines); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("ip", "netns", "exec", gone+"a", "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	t.Cleanup(func() { sleeper.Process.Kill() })

	start := time.Now()
	res, err := Cleanup(CleanupConfig{Prefix: "antbk"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cleanup of 5 namespaces (2 removed) took %v", time.Since(start))
	var kept []string
	for _, k := range res.Kept {
		kept = append(kept, k.Name)
	}
	slices.Sort(res.Removed)
	slices.Sort(kept)
	wantKept := []string{live + "a", live + "b", unowned + "a"}
	slices.Sort(wantKept)
	if want := []string{gone + "a", gone + "b"}; !slices.Equal(res.Removed, want) {
		t.Fatalf("removed %v, want %v", res.Removed, want)
	}
	if !slices.Equal(kept, wantKept) {
		t.Fatalf("kept %v, want %v", res.Kept, wantKept)
	}
	left := leftovers(t, "antbk")
	slices.Sort(left)
	if !slices.Equal(left, wantKept) {
		t.Fatalf("namespaces left %v, want %v", left, wantKept)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("the process in the dead run's namespace ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the process in the dead run's namespace still runs 10 s after the cleanup")
	}

	// Named explicitly, unowned namespaces go; a live run's never do.
	res, err = Cleanup(CleanupConfig{Prefix: "antbk", Unowned: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{unowned + "a"}; !slices.Equal(res.Removed, want) || len(res.Kept) != 2 {
		t.Fatalf("with Unowned: removed %v, kept %v; want %v removed and the live run's two kept", res.Removed, res.Kept, want)
	}
	left = leftovers(t, "antbk")
	slices.Sort(left)
	if want := []string{live + "a", live + "b"}; !slices.Equal(left, want) {
		t.Fatalf("namespaces left %v, want %v", left, want)
	}
	if _, err := Cleanup(CleanupConfig{}); !errors.Is(err, ErrCleanupPrefix) {
		t.Fatalf("empty prefix: %v, want ErrCleanupPrefix", err)
	}
}
