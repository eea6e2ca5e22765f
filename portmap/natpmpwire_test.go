package portmap

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestNATPMPEncode(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{name: "external address", got: encodeNATPMPAddr(), want: `00 00`},
		{name: "map UDP 4242 for 2 h", got: encodeNATPMPMap(4242, 4242, 7200), want: `00 01 0000 1092 1092 00001c20`},
		{name: "map suggesting 40000", got: encodeNATPMPMap(4242, 40000, 3600), want: `00 01 0000 1092 9c40 00000e10`},
		{name: "delete", got: encodeNATPMPMap(4242, 0, 0), want: `00 01 0000 1092 0000 00000000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if want := unhex(t, tt.want); !bytes.Equal(tt.got, want) {
				t.Errorf("encoded %x, want %x", tt.got, want)
			}
		})
	}
}

func TestDecodeNATPMPResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    natpmpResponse
		wantErr error
	}{
		{
			name: "external address",
			in:   `00 80 0000 00000064 cb007107`,
			want: natpmpResponse{Opcode: 0, Epoch: 100, External: netip.MustParseAddr("203.0.113.7")},
		},
		{
			name: "mapping",
			in:   `00 81 0000 00000065 1092 9c40 00001c20`,
			want: natpmpResponse{Opcode: 1, Epoch: 101, InternalPort: 4242, ExternalPort: 40000, Lifetime: 7200},
		},
		{
			name: "refused, full length",
			in:   `00 81 0002 00000065 1092 0000 00000000`,
			want: natpmpResponse{Opcode: 1, Result: 2, Epoch: 101},
		},
		{
			name: "unsupported version, header and epoch only",
			in:   `00 80 0001 00000001`,
			want: natpmpResponse{Opcode: 0, Result: 1, Epoch: 1},
		},
		{name: "address response too short", in: `00 80 0000 00000064 cb00`, wantErr: ErrMalformed},
		{name: "mapping response too short", in: `00 81 0000 00000065 1092 9c40`, wantErr: ErrMalformed},
		{name: "a request", in: `00 01 0000 1092 1092 00001c20`, wantErr: ErrMalformed},
		{name: "PCP", in: `02 80 0000 00000000`, wantErr: ErrMalformed},
		{name: "unknown opcode", in: `00 83 0000 00000000 00000000`, wantErr: ErrMalformed},
		{name: "short", in: `00 80 0000`, wantErr: ErrMalformed},
		{name: "empty", in: ``, wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeNATPMPResponse(unhex(t, tt.in))
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
				t.Errorf("decoded %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzDecodeNATPMPResponse(f *testing.F) {
	f.Add(unhex(f, `00 80 0000 00000064 cb007107`))
	f.Add(unhex(f, `00 81 0000 00000065 1092 9c40 00001c20`))
	f.Add(unhex(f, `00 81 0002 00000065`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeNATPMPResponse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		switch {
		case r.Result == 0 && r.Opcode == natpmpOpAddr && (len(b) < natpmpAddrLen || !r.External.Is4()):
			t.Fatalf("address success from %d bytes", len(b))
		case r.Result == 0 && r.Opcode == natpmpOpMapUDP && len(b) < natpmpMapLen:
			t.Fatalf("mapping success from %d bytes", len(b))
		case r.Result == 0 && r.Opcode > natpmpOpMapUDP:
			t.Fatalf("accepted opcode %d", r.Opcode)
		}
	})
}
