// Package service carries application traffic between peers: streams on
// the authenticated peer connection, each naming a service, offered in
// net's shapes.
//
// A node that serves a service registers it with its Mux, either as a
// net.Listener (Mux.Listen: Accept returns one net.Conn per stream a
// permitted peer opens) or as a Handler that decides per stream (the
// daemon's --expose, which dials its local TCP target first and refuses
// the stream when the target does not answer). A node that uses a
// service opens a stream with Mux.Open and gets a *Conn, a net.Conn whose
// RemoteAddr is the peer's authenticated ID and the service.
//
// On the wire, the opener sends "ANTS", a version byte, the name's length
// and the name, then its own bytes at once (no round trip is spent
// waiting); the service answers one status byte before its own bytes, or
// refuses the stream by resetting both directions with a Code: unknown
// service, peer not allowed, target unreachable, stream limit, bad header.
// The opener reads a refusal as a *StreamError (errors.Is ErrRefused).
// Streams of every service share the peer connection, multiplexed by QUIC
// with its flow control, so a slow reader holds back only its own stream.
// Half-close maps to QUIC's: CloseWrite sends FIN, and Join turns a TCP
// FIN into a stream FIN and back, a TCP reset into a stream reset and
// back.
//
// Limits: a peer may have MaxStreamsPerPeer streams open to this node's
// services at once (more are refused with CodeStreamLimit; the peer's
// other streams are not disturbed); a stream on which nothing moved for
// IdleTimeout is reset with CodeIdle.
//
// Accounting: every stream is counted under its service's name, or under
// UnknownLabel for a name this node neither serves nor was told it dials,
// so metric labels stay bounded (antnode_service_streams_total,
// antnode_service_bytes_total, antnode_service_active_streams). A
// refusal of a peer that is not allowed is a security event (audit log).
//
// Goroutines: the Mux starts none. Serve runs on the caller's goroutine
// (the node starts one per incoming stream and waits for it on close);
// Join starts one for the second direction and returns after it ended;
// each Conn holds one timer for its idle timeout, stopped when the Conn
// is closed, reset or idle.
package service
