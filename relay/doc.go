// Package relay owns the relay path: a TURN server (pion/turn) that runs
// inside a bootstrap node with ephemeral credentials and quotas, and the TURN
// client that allocates on its own socket and carries QUIC over the relayed
// connection when no direct path validates.
package relay
