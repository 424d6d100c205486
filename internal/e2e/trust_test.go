package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// A target whose nix.conf trusts no user besides root receives a
// deployment and a rollback: the copy goes through a root nix-daemon that
// sudo starts (the default, -trust=sudo).
func TestTrustNoTrustedUserDeployAndRollback(t *testing.T) {
	f := newFixture(t)
	const host = "media-center"
	if conf := f.exec(host, "grep trusted-users /etc/nix/nix.conf"); conf != "trusted-users = root" {
		t.Fatalf("the lab target trusts more than root: %q", conf)
	}
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	first := f.current(host)
	f.setConfig(host, `environment.etc."second".text = "2";`)
	f.commit("second")
	r := f.mage("deploy", host, "-", "-lab")
	succeeds(t, r)
	if f.generation(host) != 2 || !strings.Contains(r.Stdout, "paths copied") {
		t.Fatalf("second deployment: generation %d\n%s", f.generation(host), r.Stdout)
	}
	succeeds(t, f.mage("rollback", host, "-", "-lab"))
	if f.current(host) != first {
		t.Fatalf("rollback: current %s, want %s", f.current(host), first)
	}
	// The old way, a copy as the (untrusted) deploy user, is refused with the remedy.
	f.setConfig(host, `environment.etc."third".text = "3";`)
	f.commit("third")
	failsWith(t, f.mage("deploy", host, "-", "-lab", "-trust=trusted"), "refuses unsigned paths from monibahmed", "-trust=sudo")
}

// Without sudo rights the copy cannot start a root daemon: the deployment
// stops in the preflight, before anything is copied, naming sudo and its
// remedy. (A sudoers rule cannot refuse the daemon alone: every root
// command, the daemon too, starts as `sh -c`, so sudo allows all or none.)
// The user has a password and gives the right one: sudo accepts it, then
// refuses the user.
func TestTrustSudoRefused(t *testing.T) {
	f := newFixture(t)
	const host = "dev-workstation"
	ctx := context.Background()
	pw := fmt.Sprintf("Pw-right-%x", time.Now().UnixNano())
	if err := f.lab.RequireSudoPassword(ctx, host, pw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.PasswordlessSudo(ctx, host) })
	if err := f.lab.RemoveSudo(ctx, host); err != nil {
		t.Fatal(err)
	}
	before := f.generation(host)
	r := f.mageStdin(pw+"\n", "deploy", host, "-", "-lab", "-asksudo")
	failsWith(t, r, "dev-workstation: preflight: monibahmed may not use sudo on dev-workstation", "add monibahmed to wheel")
	if line := testutil.ErrorLine(r); strings.Contains(line, "rejected the password") || strings.Contains(line, "refused the password") {
		t.Errorf("the right password is blamed: %s", testutil.ErrorLine(r))
	}
	if f.generation(host) != before {
		t.Fatal("deployed without sudo")
	}
}

// Signed closures: the deployer's key (mage signingKey) signs what is
// copied, the target trusts the key's public part, no sudo daemon is
// used for the copy; a key the target does not trust, a missing key and a
// key others may read are refused with the remedy.
func TestTrustSignedClosures(t *testing.T) {
	f := newFixture(t)
	const host = "lab-server"
	ctx := context.Background()
	home := t.TempDir()
	env := []string{"HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}
	r := testutil.Run(t, f.repo, env, testutil.MageBinary(t), "signingKey", "-name=tester-1")
	succeeds(t, r)
	pub, err := os.ReadFile(filepath.Join(f.repo, "targets/common/deployer-keys/tester-1.pub"))
	if err != nil || !strings.HasPrefix(string(pub), "tester-1:") {
		t.Fatalf("public key: %q %v\n%s", pub, err, r.Combined())
	}
	secret := filepath.Join(home, ".config/nixos-config/signing-key.sec")
	if info, err := os.Stat(secret); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("secret key: %v %v", info, err)
	}
	if out := testutil.Git(t, f.repo, "status", "--porcelain"); !strings.Contains(out, "A  targets/common/deployer-keys/tester-1.pub") {
		t.Errorf("the public key is not added to git:\n%s", out)
	}
	// A secret key inside the repository could be committed: refused.
	inRepo := filepath.Join(f.repo, "targets", "deployer.sec")
	failsWith(t, testutil.Run(t, f.repo, env, testutil.MageBinary(t), "signingKey", "-name=tester-2", "-key="+inRepo),
		"is inside the repository", "a secret key must never be committable")
	if _, err := os.Stat(inRepo); err == nil {
		t.Error("a refused key was written into the repository")
	}
	// A system the target has never seen, so that it is copied.
	f.setConfig(host, fmt.Sprintf(`environment.etc."signed-1".text = "%d";`, time.Now().UnixNano()))
	f.commit("a deployer key")
	// The configuration carries the key (what a first -trust=sudo deployment
	// would install); the lab target's nix.conf gets it the same way.
	succeeds(t, f.mage("check", "-offline"))
	if err := f.lab.TrustKeys(ctx, host, strings.TrimSpace(string(pub))); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.TrustKeys(ctx, host) })
	r = testutil.Run(t, f.repo, env, testutil.MageBinary(t), "deploy", host, "-", "-lab", "-trust=signed")
	succeeds(t, r)
	if f.generation(host) != 1 {
		t.Fatalf("not deployed:\n%s", r.Combined())
	}
	if sigs := f.exec(host, "nix path-info --sigs "+f.current(host)); !strings.Contains(sigs, "tester-1:") {
		t.Errorf("the system carries no signature of the key: %s", sigs)
	}
	// Another key: refused, with the remedy.
	other := t.TempDir()
	env2 := []string{"HOME=" + other, "XDG_CONFIG_HOME=" + filepath.Join(other, ".config")}
	succeeds(t, testutil.Run(t, f.repo, env2, testutil.MageBinary(t), "signingKey", "-name=stranger-1"))
	testutil.Git(t, f.repo, "rm", "-q", "--cached", "targets/common/deployer-keys/stranger-1.pub")
	os.Remove(filepath.Join(f.repo, "targets/common/deployer-keys/stranger-1.pub"))
	f.setConfig(host, `environment.etc."signed-2".text = "2";`)
	f.commit("second")
	failsWith(t, testutil.Run(t, f.repo, env2, testutil.MageBinary(t), "deploy", host, "-", "-lab", "-trust=signed"),
		"does not trust this deployer's signing key", "deployer-keys")
	// No key at all, and a key others may read.
	empty := t.TempDir()
	failsWith(t, testutil.Run(t, f.repo, []string{"HOME=" + empty, "XDG_CONFIG_HOME=" + empty}, testutil.MageBinary(t), "deploy", host, "-", "-lab", "-trust=signed"),
		"no signing key at", "mage signingKey")
	os.Chmod(secret, 0o644)
	failsWith(t, testutil.Run(t, f.repo, env, testutil.MageBinary(t), "deploy", host, "-", "-lab", "-trust=signed"), "can be read by others", "chmod 600")
	if f.generation(host) != 1 {
		t.Fatalf("a refused copy changed the target: generation %d", f.generation(host))
	}
}
