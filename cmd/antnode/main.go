// Command antnode is a QUIC NAT-traversal peer-to-peer node with built-in
// monitoring. It runs as a peer (default), as a bootstrap node (--bootstrap),
// or one-shot: `antnode id` prints a key's peer ID, `antnode connect` asks a
// bootstrap for an introduction to a peer and verifies a transfer.
//
// main parses flags, builds the logger and the Prometheus registry, and
// calls a run function; everything else lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/antnode/antnode/discovery"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/ticket"
	"github.com/antnode/antnode/traversal"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	// quic-go warns through the standard logger, once, when a socket (a
	// relayed one) cannot take larger buffers; that is expected here and
	// would only clutter the output.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// realMain runs the command in args until it is done or ctx ends.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "":
		return mainNode(ctx, args, stdout, stderr)
	case "id":
		return mainID(args, stdout, stderr)
	case "connect":
		return mainConnect(ctx, args, stdout, stderr)
	case "diagnose":
		return mainDiagnose(ctx, args, stdout, stderr)
	case "forward":
		return mainForward(ctx, args, stdout, stderr)
	case "pipe":
		return mainPipe(ctx, args, os.Stdin, stdout, stderr)
	case "version":
		return mainVersion(args, stdout, stderr)
	case "help":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "antnode: unknown command %q\nRun 'antnode -h' for usage.\n", cmd)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  antnode [--bootstrap] --listen HOST:PORT [--bootstrap-nodes ADDR[,ADDR...]] --key PATH [flags]
      run a peer (default) or a bootstrap node (--bootstrap); a peer serves local
      TCP services to other peers with --expose NAME=HOST:PORT --allow PEERID
  antnode id --key PATH [--ticket --bootstrap-nodes PEERID@HOST:PORT[,...]]
      print the peer ID of a key (creating the key if missing), or its ticket
  antnode connect PEERID|TICKET --bootstrap-nodes ADDR[,ADDR...] [--send BYTES] [--timeout DUR] [--json]
      connect to a peer through a bootstrap, optionally verify a transfer
  antnode forward PEERID|TICKET SERVICE --local HOST:PORT --bootstrap-nodes ADDR[,ADDR...] --key PATH [--json]
      carry each TCP connection accepted on --local to PEERID's service SERVICE
  antnode pipe PEERID|TICKET SERVICE --bootstrap-nodes ADDR[,ADDR...] --key PATH
      join stdin and stdout to one stream to PEERID's service SERVICE (like netcat)
  antnode diagnose --bootstrap-nodes ADDR[,ADDR...] [--json] [--redact]
      measure this host's network (UDP, NAT type, bootstraps, relay) and say what is wrong
  antnode version
      print the version, the commit and the Go version it was built with
ADDR is HOST:PORT or PEERID@HOST:PORT (the bootstrap's key is then checked).
TICKET (antnode1...) names a peer and its bootstraps; see "antnode id --ticket".
Every command takes --config FILE (a JSON object, flag names as keys).
Run "antnode [command] -h" for the flags of a command.
`)
}

// logFlags are the logging flags every command has.
type logFlags struct {
	level     string
	format    string
	addresses string
}

func (l *logFlags) register(fs *flag.FlagSet, defLevel string) {
	fs.StringVar(&l.level, "log-level", defLevel, "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.StringVar(&l.addresses, "log-addresses", "sanitized", "addresses in logs: sanitized (keyed hash) or full")
}

// build returns the logger and the address sanitiser that every record of
// it (and the monitor's, and the audit log's) goes through.
func (l *logFlags) build(w io.Writer) (*slog.Logger, *monitor.Sanitizer, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	mode, err := monitor.ParseAddressMode(l.addresses)
	if err != nil {
		return nil, nil, fmt.Errorf("--log-addresses: %w", err)
	}
	san, err := monitor.NewSanitizer(mode)
	if err != nil {
		return nil, nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch l.format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, nil, fmt.Errorf("--log-format %q: want text or json", l.format)
	}
	return slog.New(monitor.SanitizingHandler(h, san)), san, nil
}

// parseWithPositional parses fs over args, allowing positional arguments
// before, between or after the flags.
func parseWithPositional(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// loadIdentity loads (or creates) the key at path, or returns an ephemeral
// identity when path is empty.
func loadIdentity(path string, log *slog.Logger) (*identity.Identity, error) {
	if path == "" {
		return identity.Generate()
	}
	id, created, err := identity.LoadOrCreate(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created a new key", "path", path, "peer", id.ID().String())
	} else if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("key file is readable by others; chmod 600 it", "path", path, "mode", fi.Mode().Perm().String())
	}
	return id, nil
}

func mainID(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("antnode id", flag.ContinueOnError)
	key := fs.String("key", "", "path of the node's Ed25519 key (created with mode 0600 if missing; its directory must exist)")
	asTicket := fs.Bool("ticket", false, "print the node's ticket (its ID and its --bootstrap-nodes) instead of its ID")
	boots := fs.String("bootstrap-nodes", "", "with --ticket: the node's bootstraps, PEERID@HOST:PORT[,...] (each with its key)")
	configFlag(fs)
	cmd := command{name: "antnode id", synopsis: `usage: antnode id --key PATH [--ticket --bootstrap-nodes PEERID@HOST:PORT[,...]]
  print the peer ID of a key (creating the key if missing), or its ticket: the ID and the
  bootstraps the node registers with, which connect, forward and pipe take in place of a PEERID
  (a running peer's ticket is also in its /api/v1/status)
`}
	if _, code, ok := cmd.parse(fs, args, stdout, stderr); !ok {
		return code
	}
	if *key == "" {
		fmt.Fprintln(stderr, "antnode id: --key PATH is required")
		return exitUsage
	}
	bs, err := ticketBootstraps(*asTicket, *boots)
	if err != nil {
		fmt.Fprintf(stderr, "antnode id: %v\nRun 'antnode id -h' for usage.\n", err)
		return exitUsage
	}
	id, _, err := identity.LoadOrCreate(*key)
	if err != nil {
		fmt.Fprintln(stderr, "antnode id:", err)
		if errors.Is(err, identity.ErrNoKeyDir) {
			return exitUsage
		}
		return exitFailure
	}
	if !*asTicket {
		fmt.Fprintln(stdout, id.ID())
		return exitOK
	}
	t, err := ticket.New(id.ID(), bs)
	if err != nil {
		fmt.Fprintln(stderr, "antnode id:", err)
		return exitUsage
	}
	fmt.Fprintln(stdout, t)
	return exitOK
}

// ticketBootstraps checks id's --bootstrap-nodes: only with --ticket,
// then required, each with its key (a ticket's reader checks it).
func ticketBootstraps(asTicket bool, flag string) ([]ticket.Bootstrap, error) {
	switch {
	case !asTicket && flag != "":
		return nil, errors.New("--bootstrap-nodes is only for --ticket")
	case !asTicket:
		return nil, nil
	case flag == "":
		return nil, errors.New("--ticket needs --bootstrap-nodes PEERID@HOST:PORT[,...]: the bootstraps the node registers with")
	}
	if names, _ := discovery.Split(flag); len(names) > 0 {
		return nil, errors.New("--bootstrap-nodes: a ticket names each bootstrap as PEERID@HOST:PORT, not dns:NAME")
	}
	parsed, err := parseBootstraps(flag)
	if err != nil {
		return nil, err
	}
	var bs []ticket.Bootstrap
	for _, b := range parsed {
		if b.ID.IsZero() {
			return nil, fmt.Errorf("--bootstrap-nodes: %s has no key: a ticket names each bootstrap as PEERID@HOST:PORT", b.Addr)
		}
		bs = append(bs, ticket.Bootstrap{ID: b.ID, Addr: b.Addr})
	}
	return bs, nil
}

// parseSize parses a byte count: a plain number or one with a unit (B, KB,
// MB, GB, KiB, MiB, GiB), the same syntax as the API's send=.
func parseSize(s string) (int64, error) { return monitor.ParseSize(s) }

// waitSignal blocks until ctx ends (SIGINT/SIGTERM).
func waitSignal(ctx context.Context, log *slog.Logger) {
	<-ctx.Done()
	log.Info("shutting down")
}

// parseBootstraps parses the [PEERID@]HOST:PORT entries of a
// --bootstrap-nodes list; its dns:NAME entries are resolveBootstraps'.
func parseBootstraps(s string) ([]traversal.Bootstrap, error) {
	_, rest := discovery.Split(s)
	bs, err := traversal.ParseBootstraps(rest)
	if err != nil {
		return nil, fmt.Errorf("--bootstrap-nodes: %w", err)
	}
	return bs, nil
}

// udpNetwork and tcpNetwork name the socket family of a HOST:PORT: IPv6
// for an IPv6 literal host ("[::]:4433", "[2001:db8::1]:4433"), else IPv4.
// A node's sockets are all of its --listen address's family.
func udpNetwork(hostport string) string { return "udp" + family(hostport) }

func tcpNetwork(hostport string) string { return "tcp" + family(hostport) }

func family(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return "4"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "4"
	}
	return endpoint.Family(a)
}
