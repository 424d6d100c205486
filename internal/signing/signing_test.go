package signing

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckRefusesUnsafeKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.sec")
	if err := Check(p); err == nil || !strings.Contains(err.Error(), "mage signingKey") {
		t.Fatalf("missing key: %v", err)
	}
	os.WriteFile(p, []byte("name:secret"), 0o644)
	if err := Check(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("readable by others: %v", err)
	}
	os.Chmod(p, 0o600)
	if err := Check(p); err != nil {
		t.Fatalf("a private key: %v", err)
	}
	os.Remove(p)
	os.Symlink("/etc/hostname", p)
	if err := Check(p); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("a link: %v", err)
	}
	for _, bad := range []string{"", "a b", "../x", "x;y", strings.Repeat("a", 70)} {
		if ValidName(bad) == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}
