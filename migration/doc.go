// Package migration keeps connections alive while the network under them
// changes. It owns the plans (pure functions: which local addresses
// changed, when to try the next relay-to-direct upgrade, how often to send
// keepalives for a learned NAT mapping lifetime, when a silent path is
// dead, as Silence observes a connection's packet counters), the path
// manager of each connection a node dialled (Path: it keeps a direct path
// alive at the learned pace, moves a dead one to the relay, tries to
// upgrade a relayed one, and lets one move run at a time), the notice a
// mover sends its peer (PathNotice), the relayed socket that can be
// released under a live QUIC transport (DetachConn), and the Watcher,
// which polls the host's addresses and reports changes.
//
// The moves themselves are the node's (traversal implements Mover): a
// check round through a bootstrap, quic-go's AddPath, Probe and Switch,
// or packets rerouted through a relay allocation behind QUIC's back for a
// dead path (quic-go sends no path probe while the dead path holds the
// congestion window).
//
// NewWatcher starts one goroutine and Watcher.Close stops it; Path.Run
// runs on its caller's goroutine until its done channel is closed.
package migration
