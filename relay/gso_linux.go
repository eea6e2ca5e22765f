package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoSupported says whether the kernel offers UDP_SEGMENT on c. A send
// can still fail where the device lacks checksum offload (isGSOError).
func gsoSupported(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return false
	}
	return serr == nil
}

// gsoControl appends to b the control message that cuts one send into
// datagrams of size bytes.
func gsoControl(b []byte, size int) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[start+unix.CmsgLen(0):], uint16(size))
	return b
}

// isGSOError says whether a GSO send failed because the device cannot
// segment (EIO: no transmit checksum offload).
func isGSOError(err error) bool {
	var serr *os.SyscallError
	return errors.As(err, &serr) && errors.Is(serr.Err, unix.EIO)
}
