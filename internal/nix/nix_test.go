package nix

import (
	"os"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	v, err := ParseVersion("nix (Nix) 2.8.0\n")
	if err != nil || v.String() != "2.8.0" || v.AtLeast("2.18") || !v.AtLeast("2.8") {
		t.Fatalf("%v %v", v, err)
	}
	v, _ = ParseVersion("nix (Nix) 2.24.10")
	if !v.AtLeast(MinVersionForNixpkgs) {
		t.Fatalf("2.24 should satisfy %s", MinVersionForNixpkgs)
	}
	v, _ = ParseVersion("nix (Determinate Nix 3.6.2) 2.29.0")
	if v.Major != 3 {
		// The first number wins: 3.x is newer than 2.18 either way.
		t.Fatalf("got %v", v)
	}
	if _, err := ParseVersion("garbage"); err == nil {
		t.Fatal("expected error")
	}
}

func TestParseErrorOld(t *testing.T) {
	out := "warning: Git tree '/work/main' is dirty\nerror: cannot add a string to an integer\n\n       at /nix/store/wn3291ahkkp1fxc5y8dzhjkqf65fiawk-source/targets/lab-server/configuration.nix:12:19:\n\n           11|     ip = \"0.0.0.0\";\n"
	e := ParseError(out, "/work/main")
	if got := e.Error(); got != "targets/lab-server/configuration.nix:12:19: cannot add a string to an integer" {
		t.Fatalf("got %q", got)
	}
}

func TestParseErrorNewWithTrace(t *testing.T) {
	out := `error:
       … while calling the 'derivationStrict' builtin
         at /builtin/derivation.nix:9:12: (source not available)

       … while evaluating the option ` + "`system.build.toplevel'" + `:

       error: The option ` + "`services.jupyter.password'" + ` was accessed but has no value defined. Try setting the option.
       at /nix/store/0123456789abcdfghijklmnpqrsvwxyz-source/targets/lab-server/configuration.nix:5:3:
`
	e := ParseError(out, "")
	if e.File != "targets/lab-server/configuration.nix" || e.Line != 5 || e.Column != 3 {
		t.Fatalf("location: %+v", e)
	}
	if e.Message != "The option `services.jupyter.password' was accessed but has no value defined. Try setting the option." {
		t.Fatalf("message: %q", e.Message)
	}
}

func TestParseErrorLocalFile(t *testing.T) {
	e := ParseError("error: syntax error, unexpected '}'\n\n       at /repo/targets/x/configuration.nix:2:7:\n", "/repo")
	if e.Error() != "targets/x/configuration.nix:2:7: syntax error, unexpected '}'" {
		t.Fatalf("got %q", e.Error())
	}
}

func TestFlakeArgs(t *testing.T) {
	if len((Flake{Dir: "/r"}).Args()) != 0 {
		t.Fatal("no override expected")
	}
	a := (Flake{Dir: "/r", Nixpkgs: "/r/internal/nix/double"}).Args()
	if len(a) != 4 || a[2] != "path:/r/internal/nix/double" || a[3] != "--no-write-lock-file" {
		t.Fatalf("args %v", a)
	}
}

// Nix 2.8: a throw with a multi-line message, no location, the hint at column 0.
func TestParseErrorFailedAssertions28(t *testing.T) {
	out := "warning: not writing modified lock file of flake 'git+file:///r':\n" +
		"evaluating flake...\n" +
		"error: \n" +
		"       Failed assertions:\n" +
		"       - You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable.\n" +
		"(use '--show-trace' to show detailed location information)\n"
	e := ParseError(out, "/r")
	want := "Failed assertions:\n- You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable."
	if e.Message != want {
		t.Fatalf("message %q", e.Message)
	}
	if got := e.Error(); got != "Failed assertions: - You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable." {
		t.Fatalf("one line %q", got)
	}
}

// Nix 2.34 (recorded): trace frames with locations before the error, which
// has no location of its own.
func TestParseErrorFailedAssertions234(t *testing.T) {
	out := `evaluating flake...
checking NixOS configuration 'nixosConfigurations.dev-workstation'...
error:
       … while checking flake output 'nixosConfigurations'
         at /work/repo/flake.nix:30:7:
           29|
           30|       nixosConfigurations = forNames (n: nixpkgs.lib.nixosSystem {
             |       ^
           31|         modules = [

       … while checking the NixOS configuration 'nixosConfigurations.dev-workstation'
         at /work/repo/flake.nix:14:63:
           13|         (builtins.attrNames entries);

       (stack trace truncated; use '--show-trace' to show the full, detailed trace)

       error:
       Failed assertions:
       - You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable.
       - The ‘fileSystems’ option does not specify your root file system.
`
	e := ParseError(out, "/work/repo")
	if e.File != "" {
		t.Errorf("a trace frame was taken for the location: %+v", e)
	}
	lines := strings.Split(e.Message, "\n")
	if len(lines) != 3 || lines[0] != "Failed assertions:" || !strings.HasPrefix(lines[2], "- The ‘fileSystems’ option") {
		t.Fatalf("message %q", e.Message)
	}
}

// NixOS's option errors: the value printed over several lines, the
// definition's file in the store copy of the flake.
func TestParseErrorOptionDoesNotExist(t *testing.T) {
	out := "error:\n" +
		"       … while evaluating the attribute 'config'\n" +
		"         at /nix/store/ab5jixq1gqlq8mcq4q9c9z0n6cbqb8zr-source/lib/modules.nix:361:9:\n\n" +
		"       (stack trace truncated; use '--show-trace' to show the full, detailed trace)\n\n" +
		"       error: The option `services.jellyfinn' does not exist. Definition values:\n" +
		"       - In `/nix/store/0123456789abcdfghijklmnpqrsvwxyz-source/targets/media-center/configuration.nix':\n" +
		"           {\n" +
		"             enable = true;\n" +
		"           }\n"
	e := ParseError(out, "/repo")
	if e.File != "targets/media-center/configuration.nix" || e.Line != 0 {
		t.Errorf("location %+v", e)
	}
	want := "The option `services.jellyfinn' does not exist. Definition values:\n- In `targets/media-center/configuration.nix':\n    {\n      enable = true;\n    }"
	if e.Message != want {
		t.Fatalf("message:\n%s\nwant:\n%s", e.Message, want)
	}
	if got := e.Error(); got != "targets/media-center/configuration.nix: The option `services.jellyfinn' does not exist. Definition values: - In `targets/media-center/configuration.nix': { enable = true; }" {
		t.Fatalf("one line %q", got)
	}
}

// The test double names file:line:column of the definition.
func TestParseErrorDefinitionLine(t *testing.T) {
	out := "error: A definition for option `services.jellyfin.enable' is not of type `boolean'. Definition values:\n" +
		"       - In `/nix/store/0123456789abcdfghijklmnpqrsvwxyz-source/targets/media-center/configuration.nix:7:5': \"yes\"\n" +
		"(use '--show-trace' to show detailed location information)\n"
	e := ParseError(out, "")
	if e.Error() != "targets/media-center/configuration.nix:7:5: A definition for option `services.jellyfin.enable' is not of type `boolean'. Definition values: - In `targets/media-center/configuration.nix:7:5': \"yes\"" {
		t.Fatalf("got %q", e.Error())
	}
}

// Newer Nix: a location with a code excerpt, then a suggestion.
func TestParseErrorDidYouMean(t *testing.T) {
	out := "error:\n       … while evaluating x\n\n       error: attribute 'jellyfinn' missing\n" +
		"       at /repo/targets/m/configuration.nix:3:5:\n            2| {\n            3|   x = pkgs.jellyfinn;\n             |     ^\n" +
		"       Did you mean jellyfin?\n"
	e := ParseError(out, "/repo")
	if e.Error() != "targets/m/configuration.nix:3:5: attribute 'jellyfinn' missing Did you mean jellyfin?" {
		t.Fatalf("got %q", e.Error())
	}
}

// Colours (a terminal) do not change the result.
func TestParseErrorANSI(t *testing.T) {
	e := ParseError("\x1b[31;1merror:\x1b[0m cannot add a \x1b[35;1mstring\x1b[0m to an integer\n\n       at \x1b[35;1m/r/a.nix:1:2\x1b[0m:\n", "/r")
	if e.Error() != "a.nix:1:2: cannot add a string to an integer" {
		t.Fatalf("got %q", e.Error())
	}
}

// Recorded from Nix 2.34.8 (Debian sid) checking the repository against the
// double with a misspelt option: trace frames name flake.nix, the message
// names the definition.
func TestParseErrorRecorded234(t *testing.T) {
	data, err := os.ReadFile("testdata/nix-2.34-undeclared-option.txt")
	if err != nil {
		t.Fatal(err)
	}
	e := ParseError(string(data), "/work/repo")
	if e.File != "targets/media-center/configuration.nix" || e.Line != 13 || e.Column != 3 {
		t.Errorf("location %+v", e)
	}
	want := "targets/media-center/configuration.nix:13:3: The option `services.jellyfinn' does not exist. Definition values: - In `targets/media-center/configuration.nix:13:3': { enable = true; openFirewall = true; }"
	if e.Error() != want {
		t.Fatalf("got  %q\nwant %q", e.Error(), want)
	}
}
