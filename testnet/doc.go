// Package testnet builds NAT testbeds: real Linux network namespaces with
// nftables NATs of every RFC 4787 class on a simulated TEST-NET internet,
// and an in-process NAT model at the net.PacketConn level for root-free,
// deterministic tests.
package testnet
