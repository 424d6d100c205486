package nix

import (
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
