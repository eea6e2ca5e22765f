package portmap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// unhex reads hex with spaces and newlines, for golden bytes laid out as
// the RFC draws them (one 32-bit row at a time).
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var testNonce = [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

func TestPCPEncode(t *testing.T) {
	client := netip.MustParseAddr("192.168.1.10")
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{
			name: "map, no suggestion",
			got: pcpMapRequest{Lifetime: 7200, Client: client, Nonce: testNonce,
				InternalPort: 4242, SuggestedPort: 4242}.encode(),
			want: `02 01 0000  00001c20
				00000000 00000000 0000ffff c0a8010a
				01020304 05060708 090a0b0c
				11 000000  1092 1092
				00000000 00000000 0000ffff 00000000`,
		},
		{
			name: "map, suggesting the address held",
			got: pcpMapRequest{Lifetime: 3600, Client: client, Nonce: testNonce,
				InternalPort: 4242, SuggestedPort: 40000,
				SuggestedAddr: netip.MustParseAddr("203.0.113.7")}.encode(),
			want: `02 01 0000  00000e10
				00000000 00000000 0000ffff c0a8010a
				01020304 05060708 090a0b0c
				11 000000  1092 9c40
				00000000 00000000 0000ffff cb007107`,
		},
		{
			name: "delete: lifetime 0",
			got: pcpMapRequest{Client: client, Nonce: testNonce,
				InternalPort: 4242, SuggestedPort: 40000,
				SuggestedAddr: netip.MustParseAddr("203.0.113.7")}.encode(),
			want: `02 01 0000  00000000
				00000000 00000000 0000ffff c0a8010a
				01020304 05060708 090a0b0c
				11 000000  1092 9c40
				00000000 00000000 0000ffff cb007107`,
		},
		{
			name: "announce",
			got:  encodePCPAnnounce(client),
			want: `02 00 0000  00000000
				00000000 00000000 0000ffff c0a8010a`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if want := unhex(t, tt.want); !bytes.Equal(tt.got, want) {
				t.Errorf("encoded\n%x\nwant\n%x", tt.got, want)
			}
		})
	}
}

// pcpMapResponse is the golden MAP response of the tests: result,
// lifetime, epoch, and 203.0.113.7:40000 for 4242 with testNonce.
func pcpMapResponse(t testing.TB, result byte, lifetime, epoch string) []byte {
	t.Helper()
	return unhex(t, `02 81 00`+hex.EncodeToString([]byte{result})+lifetime+epoch+`
		00000000 00000000 00000000
		01020304 05060708 090a0b0c
		11 000000  1092 9c40
		00000000 00000000 0000ffff cb007107`)
}

func TestDecodePCPResponse(t *testing.T) {
	ext := netip.MustParseAddr("203.0.113.7")
	ok := pcpMapResponse(t, 0, "00001c20", "00000064")
	tests := []struct {
		name    string
		in      []byte
		want    pcpResponse
		wantErr error
	}{
		{
			name: "map granted",
			in:   ok,
			want: pcpResponse{Version: 2, Opcode: pcpOpMap, Lifetime: 7200, Epoch: 100, HasMap: true,
				Nonce: testNonce, Protocol: 17, InternalPort: 4242, ExternalPort: 40000, External: ext},
		},
		{
			name: "map granted, with an option after",
			in:   append(append([]byte(nil), ok...), 0x80, 0, 0, 0),
			want: pcpResponse{Version: 2, Opcode: pcpOpMap, Lifetime: 7200, Epoch: 100, HasMap: true,
				Nonce: testNonce, Protocol: 17, InternalPort: 4242, ExternalPort: 40000, External: ext},
		},
		{
			name: "map refused NOT_AUTHORIZED, full",
			in:   pcpMapResponse(t, 2, "00000000", "00000064"),
			want: pcpResponse{Version: 2, Opcode: pcpOpMap, Result: 2, Epoch: 100, HasMap: true,
				Nonce: testNonce, Protocol: 17, InternalPort: 4242, ExternalPort: 40000, External: ext},
		},
		{
			name: "map refused, header only",
			in:   unhex(t, `02 81 00 08  0000001e  00000005  00000000 00000000 00000000`),
			want: pcpResponse{Version: 2, Opcode: pcpOpMap, Result: 8, Lifetime: 30, Epoch: 5},
		},
		{
			name: "announce",
			in:   unhex(t, `02 80 00 00  00000000  00000007  00000000 00000000 00000000`),
			want: pcpResponse{Version: 2, Opcode: pcpOpAnnounce, Epoch: 7},
		},
		{
			name: "NAT-PMP-only server: version 0 UNSUPP_VERSION",
			in:   unhex(t, `00 81 0001 00000010`),
			want: pcpResponse{Version: 0, Opcode: pcpOpMap, Result: 1},
		},
		{name: "version 0 without an error", in: unhex(t, `00 81 0000 00000010`), wantErr: ErrMalformed},
		{name: "map granted, header only", in: ok[:24], wantErr: ErrMalformed},
		{name: "a request", in: pcpMapRequest{Client: ext, InternalPort: 1}.encode(), wantErr: ErrMalformed},
		{name: "version 1", in: append([]byte{1}, ok[1:]...), wantErr: ErrMalformed},
		{name: "not a multiple of 4", in: ok[:59], wantErr: ErrMalformed},
		{name: "too short", in: ok[:3], wantErr: ErrMalformed},
		{name: "empty", in: nil, wantErr: ErrMalformed},
		{name: "too long", in: append(append([]byte(nil), ok...), make([]byte, 1044)...), wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePCPResponse(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("decoded\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func FuzzDecodePCPResponse(f *testing.F) {
	f.Add(pcpMapResponse(f, 0, "00001c20", "00000064"))
	f.Add(unhex(f, `02 80 00 00  00000000  00000007  00000000 00000000 00000000`))
	f.Add(unhex(f, `02 81 00 08  0000001e  00000005  00000000 00000000 00000000`))
	f.Add(unhex(f, `00 81 0001 00000010`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePCPResponse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		switch {
		case r.Version != 0 && r.Version != pcpVersion:
			t.Fatalf("accepted version %d", r.Version)
		case r.Version == 0 && r.Result == 0:
			t.Fatal("accepted a version 0 success")
		case r.Version == pcpVersion && (len(b) < pcpHeaderLen || len(b)%4 != 0 || len(b) > pcpMaxLen):
			t.Fatalf("accepted %d bytes", len(b))
		case r.HasMap && len(b) < pcpHeaderLen+pcpMapLen:
			t.Fatalf("MAP fields from %d bytes", len(b))
		case r.Version == pcpVersion && r.Opcode == pcpOpMap && r.Result == 0 && !r.HasMap:
			t.Fatal("a MAP success without its fields")
		case r.HasMap && r.External.Is4In6():
			t.Fatal("external address left mapped")
		}
	})
}
