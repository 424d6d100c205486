package signing

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/testutil"
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

// A key that is there but not the user's own names the remedy.
func TestCheckNamesTheRemedyForAForeignKey(t *testing.T) {
	testutil.RequireRoot(t)
	p := filepath.Join(t.TempDir(), "key.sec")
	if err := os.WriteFile(p, []byte("name:secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	err := Check(p)
	if err == nil || !strings.Contains(err.Error(), "belongs to another user (uid 65534)") ||
		!strings.Contains(err.Error(), "fix its owner and mode (chmod 600), or create a new one with `mage signingKey -force`") {
		t.Fatalf("foreign key: %v", err)
	}
}

// A secret key inside the repository could be committed: refused, also
// through a symbolic link or a directory that does not exist yet.
func TestOutsideRepository(t *testing.T) {
	base := t.TempDir()
	repo := filepath.Join(base, "repo")
	if err := os.MkdirAll(filepath.Join(repo, "targets"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(repo, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	for _, inside := range []string{
		filepath.Join(repo, "key.sec"),
		filepath.Join(repo, "new", "dir", "key.sec"),
		filepath.Join(base, "link", "targets", "key.sec"),
	} {
		err := OutsideRepository(repo, inside)
		if err == nil || !strings.Contains(err.Error(), "is inside the repository") || !strings.Contains(err.Error(), "never be committable") {
			t.Errorf("%s: %v", inside, err)
		}
	}
	for _, outside := range []string{filepath.Join(base, "key.sec"), filepath.Join(base, "repo2", "key.sec"), "/nonexistent/x/key.sec"} {
		if err := OutsideRepository(repo, outside); err != nil {
			t.Errorf("%s: %v", outside, err)
		}
	}
}

// The key path is percent-encoded in the store URL, and Nix decodes it:
// a path with characters that end or change a URL parameter still signs.
func TestCacheURLWithAwkwardKeyPath(t *testing.T) {
	dir := t.TempDir()
	keyDir := filepath.Join(dir, "k y&z#%q?+=")
	key := filepath.Join(keyDir, "key.sec")
	u := CacheURL("/tmp/cache", key)
	query := strings.TrimPrefix(u, "file:///tmp/cache?")
	if strings.ContainsAny(strings.TrimPrefix(query, "compression=none&"), " &?#+") {
		t.Fatalf("unescaped characters in %s", u)
	}
	if q, err := url.ParseQuery(query); err != nil || q.Get("secret-key") != key || q.Get("compression") != "none" {
		t.Fatalf("%s decodes to %v (%v)", u, q, err)
	}

	testutil.RequireTools(t, "nix")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	nixCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("nix", append(nix.GlobalArgs(true), args...)...)
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("nix %v: %v\n%s", args, err, stderr)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.WriteFile(key, []byte(nixCmd("key", "generate-secret", "--key-name", "awkward-1")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	p := nixCmd("store", "add-file", "--store", store, "./f")
	cache := filepath.Join(dir, "cache")
	nixCmd("copy", "--store", store, "--to", CacheURL(cache, key), p)
	infos, _ := filepath.Glob(filepath.Join(cache, "*.narinfo"))
	if len(infos) != 1 {
		t.Fatalf("no narinfo in %s", cache)
	}
	data, err := os.ReadFile(infos[0])
	if err != nil || !strings.Contains(string(data), "Sig: awkward-1:") {
		t.Fatalf("not signed with the key:\n%s", data)
	}
}
