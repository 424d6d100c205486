package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

func TestNewTargetPassesCheck(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	r := mage(t, dir, "new", "web-box", "-address=192.168.1.80")
	succeeds(t, r)
	for _, f := range []string{"configuration.nix", "hardware-configuration.nix", "README.md", "target.json"} {
		if _, err := os.Stat(filepath.Join(dir, "targets", "web-box", f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	if out := testutil.Git(t, dir, "status", "--porcelain", "targets/web-box"); !strings.Contains(out, "A  targets/web-box/configuration.nix") {
		t.Errorf("not added to git:\n%s", out)
	}
	// The template's example lines work once uncommented.
	for _, l := range []string{"services.nginx.enable = true;", "networking.firewall.allowedTCPPorts = [ 80 ];", "environment.systemPackages = with pkgs; [ ripgrep ];"} {
		testutil.Edit(t, dir, "targets/web-box/configuration.nix", "# "+l, l)
	}
	// Another platform: the placeholder's nixpkgs.hostPlatform agrees with
	// target.json (flake.nix sets it at the same priority).
	succeeds(t, mage(t, dir, "new", "arm-box", "-address=192.168.1.83", "-system=aarch64-linux"))
	r = check(t, dir, "-offline")
	if r.Code != 0 || !strings.Contains(r.Stdout, "5 targets: arm-box, dev-workstation, lab-server, media-center, web-box") {
		t.Fatalf("check after mage new:\n%s", r.Combined())
	}
	if r := mage(t, dir, "targets"); !strings.Contains(r.Stdout, "web-box          192.168.1.80  monibahmed  x86_64-linux") ||
		!strings.Contains(r.Stdout, "arm-box          192.168.1.83  monibahmed  aarch64-linux") {
		t.Errorf("targets:\n%s", r.Stdout)
	}

	assertFails(t, mage(t, dir, "new", "web-box", "-address=192.168.1.81"), "target web-box already exists")
	assertFails(t, mage(t, dir, "new", "Web;x", "-address=192.168.1.81"), `invalid target name "Web;x"`)
	assertFails(t, mage(t, dir, "new", "other-box"), "no address: give the machine's address with -address=")
	assertFails(t, mage(t, dir, "new", "other-box", "-address=1.2.3.999"), `invalid address "1.2.3.999"`)
	assertFails(t, mage(t, dir, "new", "common", "-address=192.168.1.82"), "reserved")
	if _, err := os.Stat(filepath.Join(dir, "targets", "other-box")); err == nil {
		t.Error("a refused target left a directory")
	}
}

func TestHardwareFromLabTarget(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A recorded `nixos-generate-config --show-hardware-config`: no boot loader.
	fakeHardware := hardwareFixture(t, "hardware-uefi.nix")
	if err := f.lab.InstallCommand(ctx, "lab-server", "nixos-generate-config", "#!/bin/sh\n[ \"$1\" = --show-hardware-config ] || exit 2\ncat <<'END'\n"+fakeHardware+"END\n"); err != nil {
		t.Fatal(err)
	}
	r := f.mage("hardware", "lab-server", "-", "-lab")
	succeeds(t, r)
	got, _ := os.ReadFile(filepath.Join(f.repo, "targets/lab-server/hardware-configuration.nix"))
	if string(got) != fakeHardware {
		t.Fatalf("written:\n%s", got)
	}
	if !strings.Contains(r.Stdout, "-# PLACEHOLDER") || !strings.Contains(r.Stdout, `+  boot.kernelModules = [ "kvm-intel" ];`) {
		t.Errorf("no diff shown:\n%s", r.Stdout)
	}
	// The boot loader is not in the generated file: the user is told what
	// configuration.nix needs for this machine's firmware.
	if !regexp.MustCompile(`hardware: the machine boots with (UEFI|BIOS): targets/lab-server/configuration.nix needs`).MatchString(r.Stdout) {
		t.Errorf("no boot loader advice:\n%s", r.Stdout)
	}
	// The result still evaluates.
	testutil.Git(t, f.repo, "add", "-A")
	if r := check(t, f.repo, "-offline"); r.Code != 0 {
		t.Fatalf("check with the generated hardware configuration:\n%s", r.Combined())
	}
	// Output that does not parse is refused and the file is left alone.
	f.lab.InstallCommand(ctx, "lab-server", "nixos-generate-config", "#!/bin/sh\necho '{ broken = ; }'\n")
	failsWith(t, f.mage("hardware", "lab-server", "-", "-lab"), "the generated hardware configuration does not parse")
	if again, _ := os.ReadFile(filepath.Join(f.repo, "targets/lab-server/hardware-configuration.nix")); string(again) != fakeHardware {
		t.Error("a broken configuration was written")
	}
}

func TestNotificationHook(t *testing.T) {
	f := newFixture(t)
	log := filepath.Join(t.TempDir(), "hook.log")
	hook := "#!/bin/sh\necho \"$NIXOS_CONFIG_TARGET|$NIXOS_CONFIG_RESULT|$NIXOS_CONFIG_GENERATION|$NIXOS_CONFIG_COMMIT|$NIXOS_CONFIG_DIRTY\" >> " + log + "\necho notified\n"
	if err := os.WriteFile(filepath.Join(f.repo, "hooks", "post-deploy"), []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	head := strings.TrimSpace(testutil.Git(t, f.repo, "rev-parse", "HEAD"))
	r := f.mage("deployAll", "-lab", "-on=lab-server,media-center")
	succeeds(t, r)
	data, _ := os.ReadFile(log)
	for _, want := range []string{"lab-server|ok|1|" + head + "|false", "media-center|ok|1|" + head + "|false"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("hook log lacks %q:\n%s", want, data)
		}
	}
	if !strings.Contains(r.Stdout, "lab-server: hook: notified") {
		t.Errorf("hook output not shown:\n%s", r.Stdout)
	}
	// The example is off by default: not named post-deploy.
	if _, err := os.Stat(filepath.Join(testutil.RepoRoot(t), "hooks", "post-deploy")); err == nil {
		t.Error("a hook is enabled in the repository")
	}
}
