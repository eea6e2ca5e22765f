package testnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNS runs fn on an OS thread that has entered network namespace ns.
// Sockets fn creates belong to ns and stay usable from any goroutine
// afterwards. The thread then goes back to its own namespace before it
// is returned to the runtime's pool, so no other goroutine ever runs in
// ns by accident; if it cannot go back, it stays locked and ends with the
// goroutine.
//
// A thread must not end for nothing: the processes the testbed starts die
// with the thread that started them (Pdeathsig), and a daemon started on a
// thread that a locked goroutine later took and ended was killed at once
// ("signal: killed", CI's tunnel scenario).
func InNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread() // not moved: any goroutine may have it
			errc <- fmt.Errorf("testnet: this thread's namespace: %w", err)
			return
		}
		defer own.Close()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("testnet: open namespace %s: %w", ns, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("testnet: enter namespace %s: %w", ns, err)
			return
		}
		err = fn()
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread() // home again: the thread may serve others
		} // else: locked, the thread ends with this goroutine
		errc <- err
	}()
	return <-errc
}

// ListenUDP opens a UDP socket in namespace ns.
func ListenUDP(ns string, addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := InNS(ns, func() error {
		var err error
		c, err = net.ListenUDP(udpNet(addr.Addr()), net.UDPAddrFromAddrPort(addr))
		return err
	})
	return c, err
}

// udpNet is "udp6" for an IPv6 address, else "udp4".
func udpNet(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "udp6"
	}
	return "udp4"
}
