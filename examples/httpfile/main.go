// Command httpfile is the plain HTTP server and client of antnode's demo:
// it serves a file of random bytes, or fetches a URL, and prints the
// SHA-256 of the body, so that a transfer through `antnode forward` can be
// checked end to end with nothing but Go installed.
//
//	httpfile serve [--listen 127.0.0.1:0] [--size 8388608]
//	    prints "serving http://ADDR/file sha256 HEX", then serves until killed
//	httpfile get URL
//	    prints "got N bytes sha256 HEX"; exits 1 unless the status is 200
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: httpfile serve [--listen ADDR] [--size BYTES] | httpfile get URL")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "get":
		err = get(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpfile:", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "TCP address to serve on")
	size := fs.Int("size", 8<<20, "size of the random file, in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body := make([]byte, *size)
	rand.Read(body)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Printf("serving http://%s/file sha256 %x\n", ln.Addr(), sha256.Sum256(body))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func get(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("get: want one URL")
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get: %s", resp.Status)
	}
	fmt.Printf("got %d bytes sha256 %x\n", n, h.Sum(nil))
	return nil
}
