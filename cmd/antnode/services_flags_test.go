package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/antnode/antnode/identity"
)

func TestExposeFlag(t *testing.T) {
	id1, _ := identity.Generate()
	id2, _ := identity.Generate()
	tests := []struct {
		name    string
		values  []string
		want    string // name=target allow, space separated; "" when an error is wanted
		wantErr string
	}{
		{"plain", []string{"web=127.0.0.1:8080"}, "web=127.0.0.1:8080 -", ""},
		{"own allow list", []string{"web=127.0.0.1:8080,allow=" + id1.ID().String() + "+" + id2.ID().String()}, "web=127.0.0.1:8080 2 peers", ""},
		{"allow any", []string{"ssh=[::1]:22,allow=any"}, "ssh=[::1]:22 any", ""},
		{"two services", []string{"a=127.0.0.1:1", "b=localhost:2"}, "a=127.0.0.1:1 - b=localhost:2 -", ""},
		{"no name", []string{"=127.0.0.1:1"}, "", "bad service name"},
		{"no target", []string{"web"}, "", "want NAME=HOST:PORT"},
		{"target without port", []string{"web=127.0.0.1"}, "", "target"},
		{"bad name", []string{"w b=127.0.0.1:1"}, "", "bad service name"},
		{"the built-in transfer", []string{"transfer=127.0.0.1:1"}, "", "built-in"},
		{"twice", []string{"web=127.0.0.1:1", "web=127.0.0.1:2"}, "", "given twice"},
		{"unknown option", []string{"web=127.0.0.1:1,deny=any"}, "", "unknown option"},
		{"bad peer in allow", []string{"web=127.0.0.1:1,allow=nope"}, "", "allow list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l exposeList
			var err error
			for _, v := range tc.values {
				if err = l.Set(v); err != nil {
					break
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, e := range l {
				allow := "-"
				if e.allow != nil {
					allow = e.allow.String()
				}
				parts = append(parts, e.name+"="+e.target+" "+allow)
			}
			if got := strings.Join(parts, " "); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestExposeFromConfigFile: the config file's "expose" array and "allow"
// reach the flags as if given on the command line.
func TestExposeFromConfigFile(t *testing.T) {
	id1, _ := identity.Generate()
	dir := t.TempDir()
	path := writeFile(t, dir, `{"expose": ["web=127.0.0.1:8080", "ssh=127.0.0.1:22,allow=any"], "allow": "`+id1.ID().String()+`", "max-streams": 8}`)
	var f serviceFlags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f.register(fs)
	if err := applyConfigFile(fs, path); err != nil {
		t.Fatal(err)
	}
	if err := f.validate(); err != nil {
		t.Fatal(err)
	}
	if len(f.expose) != 2 || f.expose[0].name != "web" || f.expose[1].allow == nil || !f.expose[1].allow.Any ||
		f.allow != id1.ID().String() || f.maxStreams != 8 {
		t.Fatalf("from the file: %+v", f)
	}
}
