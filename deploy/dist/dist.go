// Package dist builds antnode's release: a static binary stamped with its
// version and commit, a versioned tarball, and a Debian package made with
// nfpm (deploy/nfpm.yaml). `make dist` runs it through deploy/cmd/dist; the
// package's install test runs it too.
package dist

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
)

// Options say what to build.
type Options struct {
	// Root is the repository's root directory. Required.
	Root string
	// Out is where the artifacts go (created if missing). Required.
	Out string
	// Version is the release's version (a Debian version: starts with a
	// digit). Commit is the commit it was built from. Required.
	Version string
	Commit  string
	// Arch is the Go architecture (amd64, arm64). Empty: amd64.
	Arch string
	// Go is the go command. Empty: "go".
	Go string
}

// Artifacts are what Build made.
type Artifacts struct {
	Binary  string
	Tarball string
	Deb     string
}

// ErrOptions is returned for unusable Options.
var ErrOptions = errors.New("dist: bad options")

// Build builds the binary, the tarball and the .deb.
func Build(ctx context.Context, o Options) (Artifacts, error) {
	switch {
	case o.Root == "" || o.Out == "":
		return Artifacts{}, fmt.Errorf("%w: Root and Out are required", ErrOptions)
	case o.Version == "" || o.Version[0] < '0' || o.Version[0] > '9':
		return Artifacts{}, fmt.Errorf("%w: version %q must start with a digit", ErrOptions, o.Version)
	case o.Commit == "":
		return Artifacts{}, fmt.Errorf("%w: Commit is required", ErrOptions)
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return Artifacts{}, err
	}
	var a Artifacts
	stage := filepath.Join(o.Out, fmt.Sprintf("antnode_%s_linux_%s", o.Version, o.Arch))
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return Artifacts{}, err
	}
	a.Binary = filepath.Join(stage, "antnode")
	if err := buildBinary(ctx, o, a.Binary); err != nil {
		return Artifacts{}, err
	}
	var err error
	if a.Tarball, err = tarball(o, stage); err != nil {
		return Artifacts{}, err
	}
	if a.Deb, err = deb(o, a.Binary); err != nil {
		return Artifacts{}, err
	}
	return a, nil
}

// buildBinary builds a static binary (it runs on any Linux root) with the
// version and commit stamped in.
func buildBinary(ctx context.Context, o Options, out string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X main.commit=%s", o.Version, o.Commit)
	cmd := exec.CommandContext(ctx, o.Go, "build", "-ldflags", ldflags, "-o", abs, "./cmd/antnode")
	cmd.Dir = o.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dist: go build: %w\n%s", err, b)
	}
	return nil
}

// tarballFiles are the tarball's files besides the binary: repository
// path and name in the tarball.
var tarballFiles = [][2]string{
	{"README.md", "README.md"},
	{"deploy/systemd/antnode-bootstrap.service", "antnode-bootstrap.service"},
	{"deploy/antnode.json", "antnode.json"},
	{"deploy/prometheus/prometheus.yml", "prometheus.yml"},
	{"deploy/prometheus/alerts.yml", "alerts.yml"},
}

// tarball writes antnode_VERSION_linux_ARCH.tar.gz: one directory of that
// name holding the binary, the README, the unit and the example configs.
func tarball(o Options, stage string) (string, error) {
	name := filepath.Base(stage)
	path := stage + ".tar.gz"
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	mtime := time.Now().UTC().Truncate(time.Second)
	add := func(src, dst string, mode int64) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: name + "/" + dst, Mode: mode, Size: int64(len(b)), ModTime: mtime, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	}
	if err := add(filepath.Join(stage, "antnode"), "antnode", 0o755); err != nil {
		return "", err
	}
	for _, p := range tarballFiles {
		if err := add(filepath.Join(o.Root, p[0]), p[1], 0o644); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return path, f.Close()
}

// deb packages the binary with nfpm from deploy/nfpm.yaml.
func deb(o Options, bin string) (string, error) {
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return "", err
	}
	absBin, err := filepath.Abs(bin)
	if err != nil {
		return "", err
	}
	vars := map[string]string{"VERSION": o.Version, "ARCH": o.Arch, "BIN": absBin, "ROOT": root}
	cfg, err := nfpm.ParseFileWithEnvMapping(filepath.Join(root, "deploy", "nfpm.yaml"), func(k string) string { return vars[k] })
	if err != nil {
		return "", fmt.Errorf("dist: deploy/nfpm.yaml: %w", err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", fmt.Errorf("dist: deploy/nfpm.yaml: %w", err)
	}
	info = nfpm.WithDefaults(info)
	for _, p := range []*string{&info.Scripts.PostInstall, &info.Scripts.PreRemove, &info.Scripts.PostRemove} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(root, *p)
		}
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	path := filepath.Join(o.Out, pkg.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	info.Target = path
	if err := pkg.Package(info, f); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("dist: deb: %w", err)
	}
	return path, f.Close()
}

// Summary is a line per artifact with its size, for the make target.
func Summary(w io.Writer, a Artifacts) {
	for _, p := range []string{a.Tarball, a.Deb} {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(w, "%s\t%d bytes\n", p, fi.Size())
		}
	}
}
