package migration

import (
	"testing"
	"time"

	"github.com/antnode/antnode/event"
)

func TestPathNotice(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want PathNotice
		err  bool
	}{
		{"full", PathNotice{event.PathDirect, event.ReasonDirectAvailable, 1234567 * time.Microsecond}.Encode(),
			PathNotice{event.PathDirect, event.ReasonDirectAvailable, 1234567 * time.Microsecond}, false},
		{"older peer: path only", []byte{byte(event.PathRelay)}, PathNotice{Path: event.PathRelay}, false},
		{"unknown reason", []byte{byte(event.PathRelay), 250, 1}, PathNotice{Path: event.PathRelay, Duration: time.Microsecond}, false},
		{"empty", nil, PathNotice{}, true},
		{"no such path", []byte{9, 1, 1}, PathNotice{}, true},
		{"truncated duration", []byte{byte(event.PathDirect), 1, 0x40}, PathNotice{}, true},
		{"duration over an hour", PathNotice{event.PathDirect, 1, 2 * time.Hour}.Encode(), PathNotice{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodePathNotice(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("decode(%x) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzPathNotice(f *testing.F) {
	f.Add(PathNotice{event.PathDirect, event.ReasonDirectAvailable, time.Second}.Encode())
	f.Add([]byte{byte(event.PathRelay)})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePathNotice(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to a notice that decodes the same.
		if q, err := DecodePathNotice(p.Encode()); err != nil || q != p {
			t.Fatalf("%x: %+v then %+v %v", b, p, q, err)
		}
	})
}
