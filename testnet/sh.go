package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// CommandError is a failed external command with its output.
type CommandError struct {
	Args   []string
	Output string
	Err    error
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("testnet: %s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Output))
}

func (e *CommandError) Unwrap() error { return e.Err }

// run executes a command with a bounded time and returns its output.
func run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), &CommandError{Args: args, Output: out.String(), Err: err}
	}
	return out.String(), nil
}

// runIn executes a command inside namespace ns.
func runIn(ctx context.Context, ns string, args ...string) (string, error) {
	return run(ctx, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// runStdin executes a command inside ns with input on stdin.
func runStdin(ctx context.Context, ns, stdin string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	full := append([]string{"ip", "netns", "exec", ns}, args...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return &CommandError{Args: full, Output: out.String(), Err: err}
	}
	return nil
}

// batch runs many "ip" commands in one process (ip -batch), which is far
// faster than one process each.
func ipBatch(ctx context.Context, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return &CommandError{Args: []string{"ip", "-batch", "-"}, Output: out.String(), Err: err}
	}
	return nil
}

// ErrNotRoot is returned when the testbed is built without the privileges
// it needs.
var ErrNotRoot = errors.New("testnet: building a testbed needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)")

// RequireTools checks that the tools a testbed uses are installed.
func RequireTools() error {
	var missing []string
	for _, t := range []string{"ip", "nft", "tc", "conntrack", "ethtool"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("testnet: missing tools: %s (apt-get install iproute2 nftables conntrack ethtool)", strings.Join(missing, ", "))
	}
	return nil
}
