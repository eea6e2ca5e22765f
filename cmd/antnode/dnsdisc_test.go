package main

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

func TestDNSFlags(t *testing.T) {
	if err := checkDNSServer("127.0.0.1"); err == nil {
		t.Fatal("--dns-server without a port accepted")
	}
	if err := checkDNSServer("127.0.0.1:53"); err != nil {
		t.Fatal(err)
	}
	bs, w, err := resolveBootstraps(context.Background(), "127.0.0.1:4433", "", slog.New(slog.DiscardHandler))
	if err != nil || w != nil || len(bs) != 1 {
		t.Fatalf("no dns: entry: %v %v %v", bs, w, err)
	}
	if _, err := ticketBootstraps(true, "dns:fleet.test"); err == nil {
		t.Fatal("a ticket of dns: bootstraps accepted")
	}
	// Nothing answers on this port: a bounded, one-line error.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, _, err := resolveBootstraps(ctx, "dns:fleet.test", "127.0.0.1:9", slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("an unanswered dns: name resolved")
	}
}
