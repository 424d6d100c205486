package lab

import (
	"os"
	"path/filepath"
	"testing"
)

// Errors about a host quote the end of its log on one line.
func TestTailFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "init.log")
	if got := tailFile(p, 3); got != "no log" {
		t.Errorf("missing: %q", got)
	}
	os.WriteFile(p, []byte("one\n\ntwo\n  three  \nfour\n\n"), 0o644)
	if got := tailFile(p, 3); got != "two | three | four" {
		t.Errorf("tail: %q", got)
	}
	os.WriteFile(p, []byte("\n\n"), 0o644)
	if got := tailFile(p, 3); got != "empty log "+p {
		t.Errorf("empty: %q", got)
	}
}
