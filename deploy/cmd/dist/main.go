// Command dist builds antnode's release artifacts (make dist): a static
// binary stamped with the version and commit, the tarball
// antnode_VERSION_linux_ARCH.tar.gz and the .deb (nfpm).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/antnode/antnode/deploy/dist"
)

func main() {
	var o dist.Options
	flag.StringVar(&o.Root, "root", ".", "the repository's root")
	flag.StringVar(&o.Out, "out", "dist", "output directory")
	flag.StringVar(&o.Version, "version", "", "version (starts with a digit)")
	flag.StringVar(&o.Commit, "commit", "", "commit")
	flag.StringVar(&o.Arch, "arch", "amd64", "GOARCH of the binary and the package")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	a, err := dist.Build(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
	dist.Summary(os.Stdout, a)
}
