package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/scaffold"
	"github.com/monibahmed/nixos-config/internal/ui"
)

func TestHardwareWarnings(t *testing.T) {
	root := t.TempDir()
	write := func(name, content string) {
		dir := filepath.Join(root, "targets", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hardware-configuration.nix"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	placeholder := scaffold.Placeholder("")
	write("good", string(placeholder))
	evil, err := os.ReadFile("../hwconfig/testdata/malicious.nix")
	if err != nil {
		t.Fatal(err)
	}
	write("evil", string(evil))
	// A boot loader in the hardware file is lost on the next mage hardware.
	write("loader", strings.Replace(string(placeholder), "{ lib, ... }:\n{\n",
		"{ lib, ... }:\n{\n  boot.loader.systemd-boot.enable = true;\n  boot.loader.efi.canTouchEfiVariables = lib.mkDefault true;\n", 1))
	inv := &inventory.Inventory{Targets: []inventory.Target{{Name: "good"}, {Name: "evil"}, {Name: "missing"}, {Name: "loader"}}}
	w := HardwareWarnings(root, inv)
	all := strings.Join(w, "\n")
	if len(w) != 8 || strings.Contains(all, "good:") {
		t.Fatalf("%d warnings:\n%s", len(w), all)
	}
	for _, want := range []string{
		"evil: targets/evil/hardware-configuration.nix line 8: users.users.mallory.isNormalUser: creates or changes a user account",
		"line 10: security.sudo.wheelNeedsPassword: changes sudo rules",
		"evil: targets/evil/hardware-configuration.nix line 9: control character \\x1b",
		"see docs/troubleshooting.md#hardware-configuration",
		"loader: targets/loader/hardware-configuration.nix sets boot.loader.efi.canTouchEfiVariables, boot.loader.systemd-boot.enable: boot.loader.* in hardware-configuration.nix: move it to configuration.nix (mage hardware replaces this file)",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
	if !ui.IsClean(strings.ReplaceAll(all, "\n", "")) {
		t.Errorf("raw control characters in the warnings:\n%q", all)
	}
}
