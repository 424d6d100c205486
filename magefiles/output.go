//go:build mage

package main

import (
	"encoding/json"
	"os"
)

// writeJSON prints v as indented JSON on standard output (the -json flags).
func writeJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
