package testnet

import "testing"

func TestLastJSON(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      string // the peer decoded; "" for an error
	}{
		{"result last", "time=1 level=INFO msg=x\n{\"peer\":\"a\"}\n", "a"},
		{"a log line after the result", "{\"peer\":\"a\"}\ntime=2 level=DEBUG msg=\"Failed to read\" pion=turnc\n", "a"},
		{"the latest result wins", "{\"peer\":\"a\"}\n{\"peer\":\"b\"}\ntime=3\n", "b"},
		{"a torn result is skipped", "{\"peer\":\"a\"}\n{\"peer\":tr\ntime=4\n", "a"},
		{"no result", "time=1 level=INFO\n", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res ConnectResult
			err := lastJSON(tc.out, &res)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("decoded %+v from %q; want an error", res, tc.out)
				}
				return
			}
			if err != nil || res.Peer != tc.want {
				t.Fatalf("lastJSON = %q, %v; want peer %q", res.Peer, err, tc.want)
			}
		})
	}
}
