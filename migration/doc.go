// Package migration keeps connections alive while the network under them
// changes. It owns the plans (pure functions: which local addresses
// changed, when to try the next relay-to-direct upgrade, how often to send
// keepalives for a learned NAT mapping lifetime, when a silent path is
// dead, as Silence observes a connection's packet counters) and one small
// executor: the Watcher, which polls the host's addresses and reports
// changes.
//
// The traversal package acts on what these report: it re-punches, moves
// QUIC connections between paths (client side: quic-go's AddPath, Probe,
// Switch) and falls back to or upgrades from the relay.
//
// NewWatcher starts one goroutine and Watcher.Close stops it.
package migration
