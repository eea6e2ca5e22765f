package testnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrCleanupPrefix is returned by Cleanup for an empty prefix, which would
// select every namespace on the machine.
var ErrCleanupPrefix = errors.New("testnet: cleanup needs a namespace prefix")

// CleanupConfig selects the namespaces Cleanup removes.
type CleanupConfig struct {
	// Prefix selects namespaces by name ("antb": every testbed's).
	// Required.
	Prefix string
	// Unowned also removes namespaces whose name carries no owner process
	// ID (a run started with a custom prefix such as "mybed-"). Zero:
	// they are kept, since their owner may still be running.
	Unowned bool
}

// CleanupResult is what Cleanup did.
type CleanupResult struct {
	Removed []string
	Kept    []KeptNamespace
}

// KeptNamespace is a namespace Cleanup left in place, and why.
type KeptNamespace struct {
	Name string
	Why  string
}

// Cleanup removes the testbed namespaces named cfg.Prefix... that no live
// run owns, and whatever runs in them: the leftovers of runs that could
// not clean up (SIGKILL). The owner of a namespace is the process whose ID
// its name embeds (see nsOwnerPID); the namespaces of a run whose process
// is still alive are kept, so a cleanup never breaks a concurrent run.
func Cleanup(cfg CleanupConfig) (CleanupResult, error) {
	var res CleanupResult
	if cfg.Prefix == "" {
		return res, ErrCleanupPrefix
	}
	out, err := run(context.Background(), "ip", "netns", "list")
	if err != nil {
		return res, fmt.Errorf("testnet: cleanup: %w", err)
	}
	bootTime, _ := readBootTime()
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], cfg.Prefix) {
			continue
		}
		name := f[0]
		st := ownerState{}
		if pid, ok := nsOwnerPID(name); ok {
			st.PID = pid
			st.Exists, st.Started = procStart(pid, bootTime)
			if fi, err := os.Stat("/var/run/netns/" + name); err == nil {
				st.Created = fi.ModTime()
			}
		}
		if remove, why := cleanupVerdict(st, cfg.Unowned); remove {
			res.Removed = append(res.Removed, name)
		} else {
			res.Kept = append(res.Kept, KeptNamespace{Name: name, Why: why})
		}
	}
	if len(res.Removed) > 0 {
		removeNamespaces(res.Removed)
	}
	return res, nil
}

// nsOwnerPID returns the process ID a testbed namespace name embeds: the
// name is "antb", an optional tag of lower-case letters, then the decimal
// ID of the process that built it (DefaultPrefix makes "antb<pid>-", the
// tests "antbt<pid><tag>-"). ok is false for names without one.
func nsOwnerPID(name string) (pid int, ok bool) {
	rest, found := strings.CutPrefix(name, "antb")
	if !found {
		return 0, false
	}
	rest = strings.TrimLeft(rest, "abcdefghijklmnopqrstuvwxyz")
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	if end == 0 || end > 7 {
		return 0, false
	}
	pid, err := strconv.Atoi(rest[:end])
	if err != nil || pid <= 0 || pid > maxPID {
		return 0, false
	}
	return pid, true
}

// maxPID is Linux's largest process ID (PID_MAX_LIMIT on 64-bit systems).
const maxPID = 1 << 22

// ownerState is what Cleanup knows of a namespace's owner.
type ownerState struct {
	PID     int       // the owner's process ID; 0: the name has none
	Exists  bool      // a (non-zombie) process with that ID exists
	Started time.Time // when that process started; zero: unknown
	Created time.Time // when the namespace was created; zero: unknown
}

// startSlack is how much later than a namespace its owner may seem to
// have started: process start times are known to a boot time in whole
// seconds plus clock ticks.
const startSlack = 2 * time.Second

// cleanupVerdict decides whether Cleanup removes a namespace, and why (for
// one it keeps). A process with the owner's ID that started after the
// namespace was created is not the owner but a reuse of its ID: the owner
// is gone.
func cleanupVerdict(s ownerState, unowned bool) (remove bool, why string) {
	switch {
	case s.PID == 0 && unowned:
		return true, ""
	case s.PID == 0:
		return false, "no owner process ID in the name (remove with --cleanup --prefix)"
	case !s.Exists:
		return true, ""
	case !s.Started.IsZero() && !s.Created.IsZero() && s.Started.After(s.Created.Add(startSlack)):
		return true, ""
	}
	return false, fmt.Sprintf("owner process %d is alive", s.PID)
}

// clockTick is the unit of the start time in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// procStart reports whether process pid exists (zombies do not count) and
// when it started (zero if unknown).
func procStart(pid int, bootTime time.Time) (bool, time.Time) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false, time.Time{}
	}
	state, ticks, err := parseProcStat(string(b))
	if err != nil {
		return true, time.Time{}
	}
	if state == 'Z' || state == 'X' {
		return false, time.Time{}
	}
	if bootTime.IsZero() {
		return true, time.Time{}
	}
	return true, bootTime.Add(time.Duration(ticks) * clockTick)
}

// errProcStat reports a /proc/PID/stat line that does not parse.
var errProcStat = errors.New("testnet: malformed /proc/PID/stat")

// parseProcStat returns the state (field 3) and the start time in clock
// ticks since boot (field 22) of a /proc/PID/stat line. The command name
// (field 2) is in parentheses and may itself hold spaces and parentheses.
func parseProcStat(line string) (state byte, startTicks uint64, err error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, 0, errProcStat
	}
	f := strings.Fields(line[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, errProcStat
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: start time: %w", errProcStat, err)
	}
	return f[0][0], t, nil
}

// readBootTime returns the boot time from /proc/stat ("btime").
func readBootTime() (time.Time, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("testnet: boot time: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("testnet: boot time: %w", err)
			}
			return time.Unix(s, 0), nil
		}
	}
	return time.Time{}, errors.New("testnet: boot time: no btime in /proc/stat")
}
