//go:build !linux

package endpoint

// v6only says the socket serves IPv6 only: dual-stack sockets are
// detected on Linux only.
func v6only(uintptr) (int, error) { return 1, nil }
