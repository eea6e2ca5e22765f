package endpoint

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// cmsg builds one control message as the kernel lays it out.
func cmsg(level, typ int, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = int32(level), int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestGSOSegment(t *testing.T) {
	seg := binary.NativeEndian.AppendUint16(nil, 1350)
	tests := []struct {
		name string
		oob  []byte
		want int
	}{
		{"none", nil, 0},
		{"UDP_SEGMENT", cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, seg), 1350},
		{"after a TTL", append(cmsg(unix.IPPROTO_IP, unix.IP_TTL, []byte{2, 0, 0, 0}), cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, seg)...), 1350},
		{"other messages only", cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{0}), 0},
		{"segment data cut short", cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, []byte{1}), 0},
		{"truncated header", cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, seg)[:8], 0},
		{"length past the buffer", func() []byte {
			b := cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, seg)
			(*unix.Cmsghdr)(unsafe.Pointer(&b[0])).SetLen(len(b) + 64)
			return b
		}(), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := gsoSegment(tc.oob); got != tc.want {
				t.Fatalf("gsoSegment = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestKeepLastOfBatch: of a GSO batch sent to a remembered destination
// the last packet is kept.
func TestKeepLastOfBatch(t *testing.T) {
	ep := listen(t)
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	ep.Remember(dst)
	rc := ep.routerOf()
	batch := append(bytes.Repeat([]byte{0x40}, 8), 0x41, 7, 7) // two of 4, then a last of 3
	rc.keep(net.UDPAddrFromAddrPort(dst), batch, cmsg(unix.SOL_UDP, unix.UDP_SEGMENT, binary.NativeEndian.AppendUint16(nil, 4)))
	k := (*rc.kept.Load())[dst]
	if !bytes.Equal(k.b, []byte{0x41, 7, 7}) {
		t.Fatalf("kept %x, want the batch's last packet 410707", k.b)
	}
}
