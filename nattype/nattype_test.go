package nattype

import "testing"

func TestClass(t *testing.T) {
	tests := []struct {
		name string
		t    Type
		want string
	}{
		{"public", Type{MappingNone, FilteringNone}, "public"},
		{"public, filtering unknown", Type{MappingNone, FilteringUnknown}, "public"},
		{"firewalled public", Type{MappingNone, FilteringAPDF}, "eim-apdf"},
		{"full cone", Type{MappingEIM, FilteringEIF}, "eim-eif"},
		{"restricted", Type{MappingEIM, FilteringADF}, "eim-adf"},
		{"port restricted", Type{MappingEIM, FilteringAPDF}, "eim-apdf"},
		{"symmetric", Type{MappingAPDM, FilteringAPDF}, "apdm"},
		{"address dependent", Type{MappingADM, FilteringAPDF}, "adm"},
		{"blocked", Type{MappingUnknown, FilteringBlocked}, "udp-blocked"},
		{"unknown", Type{}, "unknown"},
		{"EIM, filtering unknown", Type{MappingEIM, FilteringUnknown}, "unknown"},
	}
	known := map[string]bool{}
	for _, c := range Classes() {
		known[c] = true
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.Class(); got != tc.want {
				t.Fatalf("Class() = %q, want %q", got, tc.want)
			}
			if !known[tc.want] {
				t.Fatalf("%q is not in Classes()", tc.want)
			}
		})
	}
}

func TestDirectPossible(t *testing.T) {
	eim := Type{MappingEIM, FilteringAPDF}
	sym := Type{MappingAPDM, FilteringAPDF}
	blocked := Type{Filtering: FilteringBlocked}
	tests := []struct {
		name string
		a, b Type
		want bool
	}{
		{"eim x eim", eim, eim, true},
		{"sym x eim", sym, eim, true},
		{"sym x sym", sym, sym, false},
		{"blocked", blocked, eim, false},
		{"unknown", Type{}, sym, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if DirectPossible(tc.a, tc.b) != tc.want || DirectPossible(tc.b, tc.a) != tc.want {
				t.Fatalf("DirectPossible = %v, want %v (both orders)", !tc.want, tc.want)
			}
		})
	}
}

func TestDrops(t *testing.T) {
	tests := []struct {
		name             string
		t                Type
		addressContacted bool
		want             bool
	}{
		{"no filter", Type{MappingNone, FilteringNone}, false, false},
		{"full cone", Type{MappingEIM, FilteringEIF}, false, false},
		{"restricted, address never contacted", Type{MappingEIM, FilteringADF}, false, true},
		{"restricted, address contacted on another port", Type{MappingEIM, FilteringADF}, true, false},
		{"port restricted, address never contacted", Type{MappingEIM, FilteringAPDF}, false, true},
		{"port restricted, another port of a contacted address", Type{MappingEIM, FilteringAPDF}, true, true},
		{"symmetric", Type{MappingAPDM, FilteringAPDF}, true, true},
		{"blocked", Type{Filtering: FilteringBlocked}, true, true},
		{"unknown filtering: nothing known to drop", Type{MappingEIM, FilteringUnknown}, false, false},
		{"public, filtering unknown", Type{MappingNone, FilteringUnknown}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.Drops(tc.addressContacted); got != tc.want {
				t.Fatalf("%v.Drops(%v) = %v, want %v", tc.t, tc.addressContacted, got, tc.want)
			}
		})
	}
}

func TestSettled(t *testing.T) {
	tests := []struct {
		name string
		t    Type
		want bool
	}{
		{"both measured", Type{MappingEIM, FilteringAPDF}, true},
		{"blocked, mapping unknown", Type{MappingUnknown, FilteringBlocked}, true},
		{"nothing measured", Type{}, false},
		{"mapping only", Type{MappingEIM, FilteringUnknown}, false},
		{"filtering only", Type{MappingUnknown, FilteringAPDF}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.t.Settled(); got != tc.want {
				t.Fatalf("Settled() = %v, want %v", got, tc.want)
			}
		})
	}
}
