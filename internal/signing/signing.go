// Package signing manages a deployer's key for signed closures: each person
// who deploys has a secret key outside the repository (owner-only) and
// commits its public part under targets/common/deployer-keys/, which every
// target trusts (nix.settings.extra-trusted-public-keys). A deployment with
// -trust=signed signs what it copies in a temporary binary cache on this
// machine, so that neither root nor a trusted Nix user is needed here, and
// the target's nix-daemon checks the signatures.
package signing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/monibahmed/nixos-config/internal/run"
)

// KeysDir is where the public keys live in the repository.
const KeysDir = "targets/common/deployer-keys"

// DefaultKeyFile is the secret key's default place:
// $XDG_CONFIG_HOME/nixos-config/signing-key.sec (~/.config/...).
func DefaultKeyFile() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "nixos-config", "signing-key.sec")
}

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$`)

// ValidName checks a key name (it becomes a file name and part of the key).
func ValidName(name string) error {
	if !keyNameRE.MatchString(name) {
		return fmt.Errorf("invalid key name %q: letters, digits, '.', '_', '@' and '-'", name)
	}
	return nil
}

// Check makes sure a secret key file can be used: it exists, is a regular
// file of this user, and nobody else may read it.
func Check(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no signing key at %s: create one with `mage signingKey` (then commit the public key it writes under %s and deploy it once with -trust=sudo)", path, KeysDir)
	}
	if err != nil {
		return fmt.Errorf("signing key %s: %w: %s", path, err, fixRemedy)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("signing key %s is not a regular file: point -signingkey at the key file itself, or create one with `mage signingKey`", path)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("signing key %s belongs to another user (uid %d): it must be yours alone: %s", path, st.Uid, fixRemedy)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("signing key %s can be read by others (mode %o): run `chmod 600 %s`, and if others could have copied it, make a new one with `mage signingKey -force`", path, info.Mode().Perm(), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("signing key %s cannot be read (%w): %s", path, errors.Unwrap(err), fixRemedy)
	}
	f.Close()
	return nil
}

// fixRemedy ends the errors of a key file that is there but unusable.
const fixRemedy = "fix its owner and mode (chmod 600), or create a new one with `mage signingKey -force`"

// CacheURL is the store URL of a local binary cache in dir whose paths are
// signed with the secret key at key. Nix percent-decodes store URL
// parameters (2.8: splitUriAndParams/decodeQuery in libstore and libutil;
// 2.2x and later: decodeQuery in src/libutil/url.cc), so the key path is
// percent-encoded: a '&', '?', '#', '%', '+' or space in it would
// otherwise end or change the parameter.
func CacheURL(dir, key string) string {
	return "file://" + dir + "?compression=none&secret-key=" + escapeParam(key)
}

// escapeParam percent-encodes all but the unreserved characters of RFC
// 3986 and '/' (a space becomes %20, never '+').
func escapeParam(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// OutsideRepository refuses a secret key path inside the repository at
// root, where `git add -A` would commit it.
func OutsideRepository(root, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	// Compare real directories: the key file may not exist yet.
	dir, err := realDir(filepath.Dir(abs))
	if err != nil {
		return err
	}
	repo, err := filepath.EvalSymlinks(root)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(repo, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil
	}
	return fmt.Errorf("-key=%s is inside the repository (%s): a secret key must never be committable; keep it outside, e.g. in the default %s", path, root, DefaultKeyFile())
}

// realDir resolves symbolic links in dir, or in its nearest existing
// parent when dir does not exist yet.
func realDir(dir string) (string, error) {
	var rest []string
	for {
		real, err := filepath.EvalSymlinks(dir)
		if err == nil {
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", err
		}
		rest = append([]string{filepath.Base(dir)}, rest...)
		dir = parent
	}
}

// Create makes a new secret key named name at path (refusing to replace
// one unless force) and returns its public key. The secret goes from nix
// to the file through a pipe, never through a command line.
func Create(ctx context.Context, r run.Runner, name, path string, force bool) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if _, err := os.Lstat(path); err == nil && !force {
		return "", fmt.Errorf("%s exists: use it, or replace it with -force (deployments signed with the old key are then refused once its public key is removed)", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	var secret strings.Builder
	if err := r.Run(ctx, run.Cmd{Name: "nix", Args: []string{"--extra-experimental-features", "nix-command", "key", "generate-secret", "--key-name", name}, Stdout: &secret}); err != nil {
		return "", fmt.Errorf("generating the key: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.TrimSpace(secret.String())), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return Public(ctx, r, path)
}

// Public derives the public key of a secret key file.
func Public(ctx context.Context, r run.Runner, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var pub strings.Builder
	if err := r.Run(ctx, run.Cmd{Name: "nix", Args: []string{"--extra-experimental-features", "nix-command", "key", "convert-secret-to-public"}, Stdin: f, Stdout: &pub}); err != nil {
		return "", fmt.Errorf("deriving the public key of %s: %w", path, err)
	}
	return strings.TrimSpace(pub.String()), nil
}
