package hwconfig

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// The analysis must read a file the way Nix does: for every file it
// accepts, Nix parses it too and defines exactly the option paths the
// analysis saw. Nix evaluates the module here with stand-in arguments;
// that is safe only because the analysis accepted it (plain values only).
const walkExpr = `file: let
  m = import file;
  args = {
    lib.mkDefault = x: { __mkDefault = x; };
    config = { hardware.enableRedistributableFirmware = true; boot.kernelPackages.broadcom_sta = "pkg"; };
    pkgs = { };
    modulesPath = "/modules";
  };
  res = if builtins.isFunction m then m args else m;
  walk = prefix: v:
    if builtins.isAttrs v && !(v ? __mkDefault)
    then builtins.concatLists (map (n: walk (prefix ++ [ n ]) v.${n}) (builtins.attrNames v))
    else [ (builtins.concatStringsSep "\u001f" prefix) ];
in walk [ ] (builtins.removeAttrs res [ "imports" ])`

func nixPaths(t *testing.T, src []byte) ([]string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hw.nix")
	if err := os.WriteFile(f, src, 0o644); err != nil {
		t.Fatal(err)
	}
	expr := strings.ReplaceAll(walkExpr, `\u001f`, "\x1f")
	cmd := exec.Command("nix-instantiate", "--eval", "--strict", "--json", "--expr", "("+expr+") "+f)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &exec.ExitError{Stderr: stderr.Bytes()}
	}
	var paths []string
	if err := json.Unmarshal(out, &paths); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	sort.Strings(paths)
	return paths, nil
}

func ourPaths(src []byte) ([]string, bool) {
	a := analyze(src)
	p := append([]string(nil), a.paths...)
	sort.Strings(p)
	return p, a.r.OK()
}

func agree(t *testing.T, name string, src []byte) bool {
	t.Helper()
	ours, ok := ourPaths(src)
	if !ok {
		return false
	}
	theirs, err := nixPaths(t, src)
	if err != nil {
		t.Errorf("%s: accepted, but Nix does not read it: %s\n%s", name, err.(*exec.ExitError).Stderr, src)
		return true
	}
	if strings.Join(ours, "|") != strings.Join(theirs, "|") {
		t.Errorf("%s: the analysis saw %q, Nix defines %q\n%s", name, ours, theirs, src)
	}
	return true
}

func TestAgreesWithNix(t *testing.T) {
	testutil.RequireTools(t, "nix-instantiate")
	for _, f := range []string{"testdata/generated.nix", "testdata/generated-old.nix", "../scaffold/templates/hardware-configuration.nix"} {
		if !agree(t, f, read(t, f)) {
			t.Errorf("%s not accepted", f)
		}
	}
	// Edges of the lexer: escapes, comments that look like code, code that
	// looks like comments, no spaces.
	for i, body := range []string{
		`fileSystems."/".device = "a\"b\\"; boot.kernelModules = [ "x" ];`,
		`boot.kernelModules = [ "x" /* ] ; users.users.x.isNormalUser = true; */ "y" ];`,
		`fileSystems."/#not-a-comment".device = "x"; # "users.users.x.isNormalUser = true;`,
		`boot.kernelModules=["a""b"];networking.useDHCP=true;`,
		`fileSystems."/*".device = "x"; networking.useDHCP = true; # */`,
		"boot.kernelModules = [ \"a\" # \" ];\n \"b\" ]; # ]",
		`networking.interfaces."en-p1@x".useDHCP = true;`,
		`networking = { useDHCP = true; interfaces.eth0.useDHCP = false; };`,
		`"boot"."kernelModules" = [ ];`,
		`fileSystems."/a\#b".device = "x";`,
		`hardware.cpu.intel.updateMicrocode = lib.mkDefault(config.hardware.enableRedistributableFirmware);`,
		`fileSystems."/".device="/dev/sda1";fileSystems."/".fsType="ext4";`,
	} {
		src := []byte(head + "  " + body + "\n}\n")
		if !agree(t, "edge "+string(rune('a'+i)), src) {
			t.Errorf("not accepted: %s\n%s", body, Analyze(src).Summary(3))
		}
	}
}

// Random changes to a generated file: whatever the analysis still accepts,
// Nix must read the same way.
func TestAgreesWithNixFuzz(t *testing.T) {
	testutil.RequireTools(t, "nix-instantiate")
	base := read(t, "testdata/generated.nix")
	pieces := []string{`"`, `\`, `#`, `/*`, `*/`, `/`, `.`, `;`, `=`, "\n", ` `, `{`, `}`, `[`, `]`, `(`, `)`, `+`, `a`, `or`, `:`, `''`, `$`, `${`, `-`, `x.y`, `"z"`, `~`, `<a>`, `@`, `?`}
	rng := rand.New(rand.NewSource(17))
	accepted := 0
	for i := 0; i < 3000 && accepted < 40; i++ {
		src := append([]byte(nil), base...)
		for n := rng.Intn(3) + 1; n > 0; n-- {
			pos := rng.Intn(len(src))
			src = append(src[:pos], append([]byte(pieces[rng.Intn(len(pieces))]), src[pos:]...)...)
		}
		if agree(t, "mutation", src) {
			accepted++
		}
	}
	t.Logf("%d mutations accepted and checked against Nix", accepted)
}
