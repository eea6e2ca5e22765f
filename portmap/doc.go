// Package portmap owns the node's port mapping: it asks the LAN's
// gateway to forward one external UDP port to the node's own QUIC
// socket, keeps that mapping alive, and gives it back on shutdown.
//
// A Mapper speaks three protocols, in this order unless Config.Protocol
// forces one: PCP (RFC 6887, the MAP opcode; its small codec is this
// package's own, pcpwire.go), NAT-PMP (RFC 6886, natpmpwire.go) and UPnP
// IGD through github.com/huin/goupnp (WANIPConnection:2 first, then
// WANIPConnection:1 and WANPPPConnection:1). It maps Config.Port on
// Config.LocalAddr and nothing else, asks for a bounded lease (at most
// MaxLease), renews it at half the lease granted, and checks the router
// between renewals (Config.Check): a PCP or NAT-PMP epoch that went back
// (the router restarted and lost its mappings), a UPnP mapping that is
// gone, a changed external address, a failed renewal, or an unsolicited
// PCP ANNOUNCE or NAT-PMP address notice (multicast to port 5350) makes
// it map again. A mapping that cannot be had is tried again with
// failsafe-go's bounded, jittered backoff. Only answers from the
// gateway's address and port (5351 for PCP and NAT-PMP, the gateway's own
// host for UPnP) are accepted; others, and malformed answers, are counted
// and ignored.
//
// The node learns of the mapping through Status and Config.OnChange; the
// outcome of each protocol's last probe (answered, refused with its
// result code, no answer, not tried) is in Status.Probes for diagnosis.
// With Config.Protocol Off the Mapper sends nothing and starts nothing.
//
// Goroutines: Start starts one, the Mapper's loop, which itself runs a
// listener for the gateway's announcements (port 5350) while it lives. Both
// end when Close is called or Start's context is done; the loop then
// deletes the mapping (bounded by DeleteTimeout). Close waits for both.
// OnChange is called on the loop's goroutine.
package portmap
