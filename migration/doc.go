// Package migration keeps connections alive while the network under them
// changes: network-change detection, client-side QUIC path migration, the
// relay-to-direct upgrade (make before break), keepalives paced to the NAT
// mapping lifetime, and dead-path detection.
package migration
