package scaffold

import (
	"strings"
	"testing"
)

func TestBootAdvice(t *testing.T) {
	if a := BootAdvice("box", "uefi\n"); !strings.Contains(a, "UEFI") || !strings.Contains(a, "targets/box/configuration.nix needs boot.loader.systemd-boot.enable = true") {
		t.Errorf("uefi: %s", a)
	}
	if a := BootAdvice("box", "bios"); !strings.Contains(a, "BIOS") || !strings.Contains(a, `boot.loader.grub.device = "/dev/disk/by-id/<disk>"`) {
		t.Errorf("bios: %s", a)
	}
	if a := BootAdvice("box", "?"); !strings.Contains(a, "could not tell") {
		t.Errorf("unknown: %s", a)
	}
}

// The boot loader is chosen in configuration.nix: the hardware placeholder,
// like nixos-generate-config's output, has none.
func TestTemplatesPlaceTheBootLoader(t *testing.T) {
	cfg, err := render("configuration.nix", Spec{Name: "box"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"boot.loader.systemd-boot.enable = true;", "boot.loader.efi.canTouchEfiVariables = true;", `# boot.loader.grub.device = "/dev/disk/by-id/`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("configuration.nix template lacks %q", want)
		}
	}
	hw := string(Placeholder(""))
	if strings.Contains(hw, "boot.loader") {
		t.Errorf("the hardware placeholder sets a boot loader:\n%s", hw)
	}
	if !strings.Contains(hw, `fileSystems."/"`) || !strings.Contains(hw, `nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";`) {
		t.Errorf("the hardware placeholder lacks the root file system or the platform:\n%s", hw)
	}
	// The platform is the target's (flake.nix sets target.json's at the same priority).
	if hw := string(Placeholder("aarch64-linux")); !strings.Contains(hw, `nixpkgs.hostPlatform = lib.mkDefault "aarch64-linux";`) {
		t.Errorf("placeholder for aarch64-linux:\n%s", hw)
	}
}
