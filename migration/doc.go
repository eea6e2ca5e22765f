// Package migration owns the path of every peer connection of a node, for
// the connection's life.
//
// A Manager (one per node) tracks each connection as a Conn: the path it
// runs on (direct or relay), its recent moves, and the peer's notices
// (nomination, path moves, keepalives), read on one goroutine per
// connection. For a connection this node dialled (only the QUIC client
// can move a connection) a Path paces the moves: it keeps a direct path's
// NAT mapping open at the learned pace, moves a dead one (Silence) to a
// direct path in the other address family (a dual-stack node's) or else to
// the relay, and tries to upgrade a relayed one (UpgradeDelay); one move runs
// at a time. The Manager also watches the host's addresses (Watcher) and
// follows the bootstraps' observations of this node's mapping (Observer):
// a change rebinds the dialled direct connections, and a mapping the NAT
// dropped teaches a bound of its lifetime, which paces every keepalive
// (KeepaliveFor).
//
// The moves (rebind, fallback, upgrade) are this package's (moves.go);
// what only the node can do, they ask of it through the Node interface: a
// check round through a bootstrap, a reroute through a relay allocation,
// giving the allocation back, and its state machine. Two mechanisms move
// a connection, and the moves are the one place that chooses between
// them: a fallback reroutes the packets of a dead direct path through the
// relay behind QUIC's back, because quic-go sends no path probe while the
// dead path holds the congestion window, so a new QUIC path could not be
// validated; an upgrade of a connection dialled over the relay's socket
// uses quic-go's AddPath, Probe and Switch (make before break), while an
// upgrade of a rerouted one just undoes the reroute, since QUIC never left
// its direct path. The notice a mover sends its peer is PathNotice; the
// relayed socket that can be released under a live QUIC transport is
// DetachConn.
//
// Goroutines: New starts the Watcher's (unless NetworkPoll is negative);
// Track starts a notice reader per connection, and a path manager for a
// dialled one; RebindAll starts one per rebind. Each ends with its
// connection or with Manager.Close, which waits for all of them.
package migration
