// Package e2e runs the Mage targets as users do, on copies of the repository.
package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

func requireNix(t *testing.T) {
	t.Helper()
	testutil.RequireTools(t, "nix", "nix-instantiate", "git")
}

func check(t *testing.T, dir string, args ...string) testutil.Result {
	t.Helper()
	return testutil.Run(t, dir, nil, testutil.MageBinary(t), append([]string{"check"}, args...)...)
}

// assertFails checks a non-zero exit and one "Error:" line containing every want.
func assertFails(t *testing.T, r testutil.Result, wants ...string) {
	t.Helper()
	if r.Code == 0 {
		t.Fatalf("expected failure, got exit 0:\n%s", r.Combined())
	}
	line := testutil.ErrorLine(r)
	if strings.Count(r.Stderr, "Error: ") != 1 {
		t.Errorf("want exactly one Error: line, got:\n%s", r.Stderr)
	}
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("error line %q does not contain %q\nfull output:\n%s", line, w, r.Combined())
		}
	}
}

func TestCheckOfflinePassesOnRepository(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	r := check(t, dir, "-offline")
	if r.Code != 0 {
		t.Fatalf("mage check -offline failed:\n%s", r.Combined())
	}
	for _, want := range []string{
		"check 1/4 parse: ok",
		"check 2/4 inventory: ok (3 targets: dev-workstation, lab-server, media-center)",
		"offline: against the nixpkgs test double",
		"check 4/4 security:",
		"warning: lab-server: services.jupyter.password is still the placeholder",
		"check passed: 3 targets (offline, test double)",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.Stdout)
		}
	}
	// No target trusts a Nix user besides root (issue 15).
	if strings.Contains(r.Stdout, "trusted-users") {
		t.Errorf("the repository's targets trust a Nix user:\n%s", r.Stdout)
	}
	// The real lock file is never rewritten by the override.
	if out := testutil.Git(t, dir, "status", "--porcelain", "flake.lock"); out != "" {
		t.Fatalf("flake.lock modified: %s", out)
	}
}

// A target that trusts @wheel (root-equivalent users) gets the security
// stage's warning; the check still passes.
func TestCheckWarnsAboutTrustedUsers(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "imports = [ ./hardware-configuration.nix ];",
		"imports = [ ./hardware-configuration.nix ];\n  nix.settings.trusted-users = [ \"root\" \"@wheel\" ];")
	r := check(t, dir, "-offline")
	if r.Code != 0 {
		t.Fatalf("mage check -offline failed:\n%s", r.Combined())
	}
	want := "warning: media-center: nix.settings.trusted-users trusts @wheel: a trusted Nix user is root-equivalent"
	if !strings.Contains(r.Stdout, want) || strings.Count(r.Stdout, "trusted-users trusts") != 1 {
		t.Fatalf("output lacks %q (once):\n%s", want, r.Stdout)
	}
}

func TestCheckSyntaxErrorNamesFileAndLine(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "openFirewall = true;", "openFirewall = true")
	r := check(t, dir, "-offline")
	assertFails(t, r, "stage 1/4 (parse)", "targets/media-center/configuration.nix:", "syntax error")
	// file:line:column of the token after the missing semicolon.
	if !strings.Contains(testutil.ErrorLine(r), "configuration.nix:17:3: syntax error, unexpected '}'") {
		t.Errorf("expected the location 17:3 in %q", testutil.ErrorLine(r))
	}
}

func TestCheckDuplicateAddress(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/media-center/target.json", "192.168.1.75", "192.168.1.50")
	assertFails(t, check(t, dir, "-offline"), "stage 2/4 (inventory)", "targets/media-center: duplicate address 192.168.1.50 (also used by lab-server)")
}

func TestCheckInvalidTargetName(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	if err := exec.Command("cp", "-r", filepath.Join(dir, "targets/media-center"), filepath.Join(dir, "targets/lab;rm")).Run(); err != nil {
		t.Fatal(err)
	}
	testutil.Edit(t, dir, "targets/lab;rm/target.json", "192.168.1.75", "192.168.1.99")
	testutil.Git(t, dir, "add", "-A")
	assertFails(t, check(t, dir, "-offline"), "stage 2/4 (inventory)", `targets/lab;rm: invalid target name "lab;rm"`, "rename the directory")
}

func TestCheckMissingConfiguration(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	testutil.Git(t, dir, "rm", "-q", "targets/media-center/configuration.nix")
	assertFails(t, check(t, dir, "-offline"), "stage 2/4 (inventory)", "targets/media-center: missing configuration.nix")
}

func TestCheckUntrackedTargetDirectory(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	if err := exec.Command("cp", "-r", filepath.Join(dir, "targets/media-center"), filepath.Join(dir, "targets/new-box")).Run(); err != nil {
		t.Fatal(err)
	}
	testutil.Edit(t, dir, "targets/new-box/target.json", "192.168.1.75", "192.168.1.76")
	assertFails(t, check(t, dir, "-offline"), "stage 2/4 (inventory)",
		"targets/new-box/ is not tracked by git, and flakes ignore untracked files", "git add targets/new-box")
	// Once added, the same tree passes.
	testutil.Git(t, dir, "add", "targets/new-box")
	if r := check(t, dir, "-offline"); r.Code != 0 {
		t.Fatalf("after git add:\n%s", r.Combined())
	}
}

func TestCheckEvaluationErrorNamesLocation(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/lab-server/configuration.nix", "port = 8888;", `port = 8888 + "x";`)
	assertFails(t, check(t, dir, "-offline"), "stage 3/4 (nix flake check)",
		"targets/lab-server/configuration.nix:51:", "cannot add a string to an integer")
}

// With a Nix older than the pinned nixpkgs needs. Where the machine's Nix is
// new enough, a shim reports 2.8.0 (Debian bookworm's) and runs the real
// one otherwise: the real one must not fetch nixpkgs from the network.
func TestCheckRealNixpkgsNeedsNewNix(t *testing.T) {
	requireNix(t)
	out, err := exec.Command("nix", "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	v, err := nix.ParseVersion(string(out))
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	if v.AtLeast(nix.MinVersionForNixpkgs) {
		real, err := exec.LookPath("nix")
		if err != nil {
			t.Fatal(err)
		}
		bin := t.TempDir()
		shim := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'nix (Nix) 2.8.0'; exit 0; fi\nexec " + real + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(bin, "nix"), []byte(shim), 0o755); err != nil {
			t.Fatal(err)
		}
		env = []string{"PATH=" + bin + ":" + os.Getenv("PATH")}
	}
	dir := testutil.CopyRepo(t)
	mage := testutil.MageBinary(t)
	assertFails(t, testutil.Run(t, dir, env, mage, "check", "-offline=false"), "stage 3/4", "needs Nix >= 2.18", "mage check -offline")
	// Without the flag it falls back to the double and says so.
	r := testutil.Run(t, dir, env, mage, "check")
	if r.Code != 0 || !strings.Contains(r.Stdout, "evaluating against the test double instead") {
		t.Fatalf("fallback not announced:\n%s", r.Combined())
	}
}
