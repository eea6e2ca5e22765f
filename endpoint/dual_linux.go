package endpoint

import "golang.org/x/sys/unix"

// v6only reads the socket's IPV6_V6ONLY option.
func v6only(fd uintptr) (int, error) {
	return unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
}
