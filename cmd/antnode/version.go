package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and commit are set at build time (make build, make dist):
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234"
//
// They are the only package-level variables of the command: the linker
// writes them, nothing else does. Empty: taken from the module's build
// information (go install, go build in a checkout).
var (
	version string
	commit  string
)

// buildInfo is what `antnode version` prints.
type buildInfo struct {
	Version   string
	Commit    string
	GoVersion string
}

// currentBuild returns the linker's values, else the build information
// that the go command embeds.
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && bi.Main.Version != "" {
			b.Version = bi.Main.Version
		}
		if b.Commit == "" {
			var rev, dirty string
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					if s.Value == "true" {
						dirty = "-dirty"
					}
				}
			}
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if rev != "" {
				b.Commit = rev + dirty
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// mainVersion is `antnode version`.
func mainVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintf(stderr, "antnode version: unexpected argument %q\n", args[0])
		return exitUsage
	}
	b := currentBuild()
	fmt.Fprintf(stdout, "antnode %s (commit %s, %s)\n", b.Version, b.Commit, b.GoVersion)
	return exitOK
}
