//go:build mage

package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/monibahmed/nixos-config/internal/signing"
)

// SigningKey creates this deployer's key for signed closures (deploy
// -trust=signed): the secret part in ~/.config/nixos-config/signing-key.sec
// (only you may read it; it never enters the repository), the public part
// in targets/common/deployer-keys/<name>.pub, added to git. Commit it and
// deploy once with -trust=sudo (the default); from then on the targets
// accept closures you sign, and you need no sudo for the copy.
func SigningKey(ctx context.Context,
	name *string, // key name (default <user>@<machine>-1)
	key *string, // where the secret key goes (default ~/.config/nixos-config/signing-key.sec)
	force *bool, // replace an existing key
) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	n := str(name)
	if n == "" {
		n = defaultKeyName()
	}
	if err := signing.ValidName(n); err != nil {
		return err
	}
	path := str(key)
	if path == "" {
		path = signing.DefaultKeyFile()
	}
	if err := signing.OutsideRepository(e.root, path); err != nil {
		return err
	}
	pubFile := filepath.Join(e.root, signing.KeysDir, n+".pub")
	if _, err := os.Stat(pubFile); err == nil && !on(force) {
		return fmt.Errorf("%s exists: choose another -name, or -force to replace it", filepath.Join(signing.KeysDir, n+".pub"))
	}
	pub, err := signing.Create(ctx, e.runner, n, path, on(force))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(pubFile), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(pubFile, []byte(pub+"\n"), 0o644); err != nil {
		return err
	}
	if err := e.git().Add(ctx, pubFile); err != nil {
		return err
	}
	e.out.Linef("signingKey: secret key in %s (yours only: keep it out of backups others read)", path)
	e.out.Linef("signingKey: public key %s in %s, added to git", pub, filepath.Join(signing.KeysDir, n+".pub"))
	e.out.Linef("signingKey: next: git commit, then mage deployAll (once with the default -trust=sudo); afterwards -trust=signed works")
	return nil
}

var keyNameUnsafe = regexp.MustCompile(`[^A-Za-z0-9._@-]+`)

func defaultKeyName() string {
	u := "deployer"
	if cur, err := user.Current(); err == nil {
		u = cur.Username
	}
	h, _ := os.Hostname()
	h, _, _ = strings.Cut(h, ".")
	return keyNameUnsafe.ReplaceAllString(u+"@"+h+"-1", "-")
}
