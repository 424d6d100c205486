package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// nixOut runs nix with the toolkit's own settings (nix.GlobalArgs): the
// machine's nix.conf does not matter; offline for the test double.
func nixOut(t *testing.T, dir string, offline bool, args ...string) string {
	t.Helper()
	cmd := exec.Command("nix", append(nix.GlobalArgs(offline), args...)...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("nix %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// The flake's `targets` output (one cheap eval, nixpkgs untouched: the
// override is not given) must agree with what the Go inventory reads.
func TestFlakeTargetsOutputMatchesInventory(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	out := nixOut(t, dir, false, "eval", "--json", ".#targets")
	fromNix, err := inventory.Parse([]byte(out), "nix eval")
	if err != nil {
		t.Fatal(err)
	}
	fromGo, err := inventory.LoadRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromNix.Targets, fromGo.Targets) {
		t.Fatalf("flake and Go disagree:\nnix: %+v\ngo:  %+v", fromNix.Targets, fromGo.Targets)
	}
	if len(fromGo.Targets) != 3 {
		t.Fatalf("expected the three example targets, got %v", fromGo.Names())
	}
}

func toplevels(t *testing.T, dir string) map[string]string {
	t.Helper()
	double := filepath.Join(dir, nix.DoubleDir)
	args := []string{"build", "--no-link", "--json"}
	names := []string{"dev-workstation", "lab-server", "media-center"}
	for _, n := range names {
		args = append(args, ".#nixosConfigurations."+n+".config.system.build.toplevel")
	}
	args = append(args, (nix.Flake{Dir: dir, Nixpkgs: double}).Args()...)
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(nixOut(t, dir, true, args...)), &res); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for i, n := range names {
		m[n] = res[i].Outputs["out"]
	}
	return m
}

// The double's systems change exactly when a target's modules change, and
// do not depend on unrelated files of the repository.
func TestDoubleToplevelFollowsModuleContent(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	before := toplevels(t, dir)
	for n, p := range before {
		out, err := exec.Command(filepath.Join(p, "bin", "switch-to-configuration"), "dry-activate").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "would switch /run/current-system") {
			t.Fatalf("%s: switch-to-configuration dry-activate: %v %s", n, err, out)
		}
		if v, err := exec.Command("cat", filepath.Join(p, "nixos-version")).Output(); err != nil || len(v) == 0 {
			t.Fatalf("%s: no nixos-version", n)
		}
	}
	testutil.Edit(t, dir, "README.md", "nixos-config", "nixos-config (edited)")
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "openFirewall = true;", "openFirewall = true; # edited")
	after := toplevels(t, dir)
	if after["media-center"] == before["media-center"] {
		t.Error("editing media-center's configuration did not change its system")
	}
	for _, n := range []string{"dev-workstation", "lab-server"} {
		if after[n] != before[n] {
			t.Errorf("%s changed although only media-center and the README were edited", n)
		}
	}
	testutil.Edit(t, dir, "targets/common/base.nix", "tmux wget curl", "tmux wget curl file")
	common := toplevels(t, dir)
	for n := range before {
		if common[n] == after[n] {
			t.Errorf("%s did not change when targets/common/base.nix did", n)
		}
	}
}

// The optional LAN binary cache module: off by default, wired when enabled.
func TestBinaryCacheModule(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	double := filepath.Join(dir, nix.DoubleDir)
	eval := func(attr string) string {
		return strings.TrimSpace(nixOut(t, dir, true, append([]string{"eval", "--json", ".#nixosConfigurations." + attr}, (nix.Flake{Dir: dir, Nixpkgs: double}).Args()...)...))
	}
	testutil.Edit(t, dir, "targets/lab-server/configuration.nix", "imports = [ ./hardware-configuration.nix ];", "imports = [ ./hardware-configuration.nix ];\n  homelab.binaryCache.server = { enable = true; bindAddress = \"192.168.1.50\"; };")
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "imports = [ ./hardware-configuration.nix ];", "imports = [ ./hardware-configuration.nix ];\n  homelab.binaryCache = { url = \"http://192.168.1.50:5000\"; publicKey = \"lab-cache-1:AAAA\"; };")
	if got := eval("lab-server.config.services.nix-serve"); got != `{"bindAddress":"192.168.1.50","enable":true,"extraParams":"","openFirewall":true,"port":5000,"secretKeyFile":"/var/lib/nix-serve/cache-priv-key.pem"}` {
		t.Errorf("server: %s", got)
	}
	if got := eval("media-center.config.nix.settings.extra-substituters"); got != `["http://192.168.1.50:5000"]` {
		t.Errorf("client: %s", got)
	}
	if got := eval("media-center.config.nix.settings.extra-trusted-public-keys"); got != `["lab-cache-1:AAAA"]` {
		t.Errorf("client key: %s", got)
	}
	// The server's address is a deliberate choice: without it, no system.
	testutil.Edit(t, dir, "targets/lab-server/configuration.nix", ` bindAddress = "192.168.1.50";`, "")
	assertFails(t, check(t, dir, "-offline"), "stage 3/4",
		"The option `homelab.binaryCache.server.bindAddress' was accessed but has no value defined. Try setting the option.")
}

// The public keys committed under targets/common/deployer-keys reach every
// target's nix.settings.extra-trusted-public-keys (issue 15); other files
// there are ignored.
func TestDeployerKeysAreTrusted(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	keys := map[string]string{
		"alice@laptop-1.pub": "alice@laptop-1:5bM4yQDjwzqH3A0zYl1v1aRrNqEhhwzKv2cC1G0VbZM=",
		"bob@desk-1.pub":     "bob@desk-1:Qm9iJ3Mga2V5IGZvciB0aGUgdGVzdCBvbmx5IDAwMDA=",
	}
	for name, key := range keys {
		writeFile(t, dir, filepath.Join("targets/common/deployer-keys", name), key+"\n")
	}
	writeFile(t, dir, "targets/common/deployer-keys/notes.txt", "not a key\n")
	testutil.Git(t, dir, "add", "targets/common/deployer-keys")
	for _, target := range []string{"media-center", "lab-server"} {
		got := evalDouble(t, dir, "nixosConfigurations."+target+".config.nix.settings.extra-trusted-public-keys", "")
		want := `["` + keys["alice@laptop-1.pub"] + `","` + keys["bob@desk-1.pub"] + `"]`
		if got != want {
			t.Errorf("%s trusts %s, want %s", target, got, want)
		}
	}
}

// `nix fmt` runs nixfmt-tree, which formats the tree without arguments
// (Nix >= 2.25 passes none; bare nixfmt would then read stdin and hang).
func TestFormatterIsNixfmtTree(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	for _, s := range []string{"x86_64-linux", "aarch64-linux"} {
		if got := evalDouble(t, dir, "formatter."+s+".pname", ""); got != `"nixfmt-tree"` {
			t.Errorf("formatter.%s is %s, want nixfmt-tree", s, got)
		}
	}
}

// Every target's sshd frees a half-open session (a deployer whose link
// died) after ClientAliveInterval x ClientAliveCountMax, and with it the
// deploy lock that session holds (targets/common/base.nix).
func TestSSHDClientAliveOnEveryTarget(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	inv, err := inventory.LoadRepo(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := evalDouble(t, dir, "nixosConfigurations",
		`cs: builtins.mapAttrs (n: c: { inherit (c.config.services.openssh.settings) ClientAliveInterval ClientAliveCountMax; }) cs`)
	var got map[string]struct{ ClientAliveInterval, ClientAliveCountMax int }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(got) != len(inv.Targets) {
		t.Errorf("%d configurations for %d targets: %s", len(got), len(inv.Targets), out)
	}
	for _, n := range inv.Names() {
		if s := got[n]; s.ClientAliveInterval != 15 || s.ClientAliveCountMax != 4 {
			t.Errorf("%s: ClientAliveInterval %d, ClientAliveCountMax %d; want 15 and 4", n, s.ClientAliveInterval, s.ClientAliveCountMax)
		}
	}
}
