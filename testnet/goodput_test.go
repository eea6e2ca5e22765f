package testnet

import (
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTCPTransferVerified(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			receiveTCP(c, 1<<20)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, size := range []int64{0, 1, 300_000} {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		mbps, err := transferTCP(ctx, c, size)
		c.Close()
		if err != nil || mbps < 0 {
			t.Fatalf("%d bytes: %v Mbit/s, %v", size, mbps, err)
		}
	}
	// Larger than the sink accepts: it closes without a digest.
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := transferTCP(ctx, c, 2<<20); err == nil {
		t.Fatal("a refused transfer verified")
	}
}

func TestSetCongestion(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if setCongestion("") != nil {
		t.Fatal("a Control without a congestion control")
	}
	cc := "reno"
	if os.Geteuid() == 0 {
		cc = "cubic" // root may set any available one, whatever the allowed list
	}
	c, err := (&net.Dialer{Control: setCongestion(cc)}).Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Skipf("%s not allowed here: %v", cc, err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got string
	rc.Control(func(fd uintptr) { got, err = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) })
	if err != nil || got != cc {
		t.Fatalf("congestion control %q, %v", got, err)
	}
	if _, err := (&net.Dialer{Control: setCongestion("no-such-cc")}).Dial("tcp4", ln.Addr().String()); err == nil {
		t.Fatal("an unknown congestion control accepted")
	}
}

func TestTCPTransferDetectsAWrongDigest(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		defer server.Close()
		buf := make([]byte, 8+1000)
		if _, err := io.ReadFull(server, buf); err != nil {
			return
		}
		server.Write(make([]byte, 40)) // zero digest, zero count
	}()
	if _, err := transferTCP(context.Background(), client, 1000); err == nil {
		t.Fatal("a wrong digest verified")
	}
}

func TestGoodputDefaultsAndMedian(t *testing.T) {
	if _, err := (GoodputConfig{}).withDefaults(); err == nil {
		t.Fatal("no binary accepted")
	}
	cfg, err := GoodputConfig{Bin: "antnode"}.withDefaults()
	if err != nil || len(cfg.LossPcts) != 4 || cfg.LossPcts[3] != 5 || cfg.Size != 16<<20 || cfg.Runs != 3 || cfg.Delay != 20*time.Millisecond || cfg.TCPCongestion != "cubic" {
		t.Fatalf("%+v %v", cfg, err)
	}
	for _, tt := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tt.xs); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
}
