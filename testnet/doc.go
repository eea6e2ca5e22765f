// Package testnet builds NAT testbeds: real Linux network namespaces with
// nftables NATs of every RFC 4787 class on a simulated TEST-NET internet
// (Testbed), and an in-process NAT model at the net.PacketConn level for
// root-free, deterministic tests (Model).
//
// A Testbed is built from a declarative Spec. Build creates namespaces,
// veth links, addresses, routes and rulesets with the ip, nft, tc and
// sysctl tools, and starts one user-space delay line per impaired access
// link (two goroutines per link, reading and writing raw frames in the
// link's "wire" namespace). Close stops the delay lines, kills every
// process left in the testbed's namespaces and deletes them; Cleanup does
// the same for the leftovers of a run that could not clean up (SIGKILL),
// by name prefix, keeping the namespaces of runs whose process (its ID is
// in the prefix) is still alive.
//
// The Model starts no goroutines; packet delivery uses timers, so it runs
// under testing/synctest. It models every class of the testbed: nested
// NATs (cgnat), a NAT that lets no UDP out (udp-blocked), and, as an
// option, sequential port allocation for port-prediction tests.
package testnet
