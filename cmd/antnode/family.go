package main

import (
	"errors"
	"fmt"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/traversal"
)

// ErrFamilyMismatch: a bootstrap is of another address family than the
// node's --listen address. A node runs in one family; its socket cannot
// reach the bootstrap, which would otherwise look like blocked UDP.
var ErrFamilyMismatch = errors.New("address family mismatch")

// checkFamilies requires every bootstrap to be of listen's family.
func checkFamilies(listen string, bs []traversal.Bootstrap) error {
	fam := family(listen)
	for _, b := range bs {
		if bf := endpoint.Family(b.Addr.Addr()); bf != fam {
			hint := "--listen [::]:0"
			if bf == "4" {
				hint = "--listen 0.0.0.0:0"
			}
			return fmt.Errorf("--bootstrap-nodes: %w: bootstrap %s is IPv%s but --listen %s is IPv%s; a node runs in one family: use %s, or a bootstrap address of the listen family",
				ErrFamilyMismatch, b.Addr, bf, listen, fam, hint)
		}
	}
	return nil
}
