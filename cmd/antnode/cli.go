package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is how a subcommand presents itself on the command line: its
// name ("antnode connect") and the synopsis that -h prints above the flags.
type command struct {
	name     string
	synopsis string
	// positional allows arguments before, between and after the flags.
	positional bool
}

// usageError is bad input from the user: a flag, an argument or a file
// named by one. Commands exit with exitUsage for it.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// badInput marks err as a usage error.
func badInput(err error) error { return &usageError{err: err} }

// parse parses args into fs. -h and --help print the synopsis and the
// flags to stdout (exit 0); a mistyped flag prints the error and one line
// that points to -h to stderr (exit 2). When fs has a --config flag and it
// is set, the file fills in every flag the command line did not give.
// ok is false when the command is done, with exit code code.
func (c command) parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	fs.SetOutput(io.Discard) // errors and help are printed here, once
	fs.Usage = func() {}
	var err error
	if c.positional {
		pos, err = parseWithPositional(fs, args)
	} else if err = fs.Parse(args); err == nil {
		pos = fs.Args()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.help(fs, stdout)
		return nil, exitOK, false
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\nRun '%s -h' for usage.\n", c.name, err, c.name)
		return nil, exitUsage, false
	}
	if !c.positional && len(pos) != 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\nRun '%s -h' for usage.\n", c.name, pos[0], c.name)
		return nil, exitUsage, false
	}
	if f := fs.Lookup("config"); f != nil && f.Value.String() != "" {
		if err := applyConfigFile(fs, f.Value.String()); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", c.name, err)
			return nil, exitUsage, false
		}
	}
	return pos, exitOK, true
}

// help prints the synopsis and every flag with its default.
func (c command) help(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, c.synopsis)
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// configFlag registers --config on fs.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "JSON file of settings: flag names as keys (\"timeout\": \"30s\"); flags on the command line win")
}

// nodeCommand is the node's (antnode [flags]) presentation: the whole
// usage, since it is the command that runs without a name.
func nodeCommand() command {
	var b strings.Builder
	usage(&b)
	return command{name: "antnode", synopsis: b.String()}
}

// startupFailed reports an error that stopped a node before or while it
// started. It is about the user's own configuration, so it shows the
// addresses as typed: sanitising is for what leaves the host (the log
// records, --redact, the audit trail), not for an error the user must act
// on. Bad input exits 2, anything else 1.
func startupFailed(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "antnode:", err)
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}
