package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	checkpkg "github.com/monibahmed/nixos-config/internal/check"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

var targetNames = []string{"dev-workstation", "lab-server", "media-center"}

// hardwareFixture returns a recorded `nixos-generate-config --show-hardware-config`.
func hardwareFixture(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "internal/e2e/testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func writeFile(t *testing.T, dir, file, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// evalDouble evaluates an attribute of the flake against the test double.
func evalDouble(t *testing.T, dir, attr, apply string) string {
	t.Helper()
	args := []string{"eval", "--json", ".#" + attr}
	if apply != "" {
		args = append(args, "--apply", apply)
	}
	args = append(args, (nix.Flake{Dir: dir, Nixpkgs: filepath.Join(dir, nix.DoubleDir)}).Args()...)
	return strings.TrimSpace(nixOut(t, dir, true, args...))
}

// After `mage hardware` every target has nixos-generate-config's output,
// which never contains a boot loader: the configurations must still
// evaluate, and without their boot loader lines they must fail as NixOS does.
func TestCheckWithGeneratedHardwareConfiguration(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	uefi := hardwareFixture(t, "hardware-uefi.nix")
	for _, bad := range []string{"boot.loader", "systemd-boot", "grub"} {
		if strings.Contains(uefi, bad) {
			t.Fatalf("the fixture must not contain %q: nixos-generate-config never writes a boot loader there", bad)
		}
	}
	for _, n := range targetNames {
		writeFile(t, dir, "targets/"+n+"/hardware-configuration.nix", uefi)
	}
	r := check(t, dir, "-offline")
	if r.Code != 0 || !strings.Contains(r.Stdout, "check passed: 3 targets") {
		t.Fatalf("check with generated hardware configurations:\n%s", r.Combined())
	}

	// Without the boot loader choice GRUB is on with no device.
	cfg := filepath.Join(dir, "targets/media-center/configuration.nix")
	data, _ := os.ReadFile(cfg)
	var kept []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "boot.loader.") {
			kept = append(kept, l)
		}
	}
	writeFile(t, dir, "targets/media-center/configuration.nix", strings.Join(kept, "\n"))
	r = check(t, dir, "-offline")
	assertFails(t, r, "stage 3/4 (nix flake check)", "Failed assertions: - You must set the option ‘boot.loader.grub.devices’",
		"to make the system bootable")

	// BIOS: GRUB with a device, on an encrypted machine's generated file.
	writeFile(t, dir, "targets/media-center/hardware-configuration.nix", hardwareFixture(t, "hardware-bios-luks.nix"))
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "services.jellyfin = {",
		"boot.loader.grub.device = \"/dev/disk/by-id/ata-EXAMPLE_SERIAL\";\n  services.jellyfin = {")
	if r := check(t, dir, "-offline"); r.Code != 0 {
		t.Fatalf("BIOS with a GRUB device:\n%s", r.Combined())
	}
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "/dev/disk/by-id/ata-EXAMPLE_SERIAL", "sda")
	assertFails(t, check(t, dir, "-offline"), "GRUB devices must be absolute paths, not sda in /boot")
}

// A new target from `mage new` gets a boot loader in its configuration.nix,
// so the machine's generated hardware configuration drops in.
func TestNewTargetWithGeneratedHardwareConfiguration(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	succeeds(t, mage(t, dir, "new", "web-box", "-address=192.168.1.80"))
	writeFile(t, dir, "targets/web-box/hardware-configuration.nix", hardwareFixture(t, "hardware-uefi.nix"))
	if r := check(t, dir, "-offline"); r.Code != 0 {
		t.Fatalf("new target with a generated hardware configuration:\n%s", r.Combined())
	}
}

// The double rejects what NixOS rejects, in NixOS's words, at the line.
func TestCheckOfflineRejectsUndeclaredOption(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "services.jellyfin = {", "services.jellyfinn = {")
	r := check(t, dir, "-offline")
	assertFails(t, r, "stage 3/4 (nix flake check)",
		"The option `services.jellyfinn' does not exist. Definition values:",
		"In `targets/media-center/configuration.nix:13:3'",
		checkpkg.OfflineSchemaNote)
	if !strings.Contains(testutil.ErrorLine(r), "targets/media-center/configuration.nix:13:3: The option") {
		t.Errorf("the location does not lead the error line: %q", testutil.ErrorLine(r))
	}
	// A misspelt option inside a submodule (a user) is caught too.
	dir = testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/common/users.nix", "isNormalUser = true;", "isNormalUser = true;\n    extraGroup = [ \"docker\" ];")
	assertFails(t, check(t, dir, "-offline"), "The option `users.users.monibahmed.extraGroup' does not exist", "targets/common/users.nix:8:5")
}

func TestCheckOfflineRejectsWrongType(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/media-center/configuration.nix", "    enable = true;\n    # Opens", "    enable = \"yes\";\n    # Opens")
	assertFails(t, check(t, dir, "-offline"), "stage 3/4 (nix flake check)",
		"A definition for option `services.jellyfin.enable' is not of type `boolean'. Definition values:",
		"In `targets/media-center/configuration.nix:14:5': \"yes\"", checkpkg.OfflineSchemaNote)
	// A port out of range, and an enum value NixOS does not know.
	dir = testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/lab-server/configuration.nix", "port = 8888;", "port = 88888;")
	assertFails(t, check(t, dir, "-offline"),
		"A definition for option `services.jupyter.port' is not of type `16 bit unsigned integer; between 0 and 65535 (both inclusive)'")
	dir = testutil.CopyRepo(t)
	testutil.Edit(t, dir, "targets/common/base.nix", `PermitRootLogin = "no";`, `PermitRootLogin = "never";`)
	assertFails(t, check(t, dir, "-offline"),
		"A definition for option `services.openssh.settings.PermitRootLogin' is not of type `null or one of \"yes\", \"without-password\", \"prohibit-password\", \"forced-commands-only\", \"no\"'")
}

// Every option the configurations can set is declared in the double with the
// nixpkgs file it was read from (or as the double's own test option).
func TestDoubleOptionsNameTheirSource(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	const walk = `opts: let
      walk = path: t: builtins.concatLists (map (n: let v = t.${n}; in
        if (v._type or null) == "option" then [ { name = path + n; from = v.declaredIn or null; files = v.declarations; } ]
        else walk (path + n + ".") v) (builtins.attrNames t));
    in walk "" opts`
	var opts []struct {
		Name  string   `json:"name"`
		From  *string  `json:"from"`
		Files []string `json:"files"`
	}
	if err := json.Unmarshal([]byte(evalDouble(t, dir, "nixosConfigurations.lab-server.options", walk)), &opts); err != nil {
		t.Fatal(err)
	}
	var missing []string
	sources := map[string]bool{}
	for _, o := range opts {
		repo := len(o.Files) > 0 && strings.Contains(o.Files[0], "/targets/")
		switch {
		case repo:
		case o.From == nil:
			missing = append(missing, o.Name)
		case !strings.HasPrefix(*o.From, "nixos/modules/") && !strings.HasPrefix(*o.From, "test double"):
			missing = append(missing, o.Name+" ("+*o.From+")")
		default:
			sources[*o.From] = true
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("options without their nixpkgs source: %v", missing)
	}
	if len(opts) < 100 || len(sources) < 20 {
		t.Fatalf("only %d options from %d files declared", len(opts), len(sources))
	}
}

// lab-server's kernels run interpreters whose environments hold the
// libraries, and the notebooks reach the lab database by peer
// authentication without a password.
func TestLabServerKernelsAndDatabase(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	const apply = `c: {
      kernels = builtins.mapAttrs (n: k: { inherit (k) argv language; }) c.services.jupyter.kernels;
      envs = map (p: { path = p.outPath; names = p.packageNames or [ ]; }) c.environment.systemPackages;
      jupyter = { inherit (c.services.jupyter) ip extraEnvironmentVariables notebookConfig; };
      shell = c.users.users.jupyter.shell.shellPath;
      pg = { inherit (c.services.postgresql) authentication identMap ensureDatabases; owners = map (u: u.name) (builtins.filter (u: u.ensureDBOwnership) c.services.postgresql.ensureUsers); };
      firewall = c.networking.firewall.allowedTCPPorts;
    }`
	var got struct {
		Kernels map[string]struct {
			Argv     []string `json:"argv"`
			Language string   `json:"language"`
		} `json:"kernels"`
		Envs []struct {
			Path  string   `json:"path"`
			Names []string `json:"names"`
		} `json:"envs"`
		Jupyter struct {
			IP             string            `json:"ip"`
			Env            map[string]string `json:"extraEnvironmentVariables"`
			NotebookConfig string            `json:"notebookConfig"`
		} `json:"jupyter"`
		Shell string `json:"shell"`
		PG    struct {
			Authentication string   `json:"authentication"`
			IdentMap       string   `json:"identMap"`
			Databases      []string `json:"ensureDatabases"`
			Owners         []string `json:"owners"`
		} `json:"pg"`
		Firewall []int `json:"firewall"`
	}
	if err := json.Unmarshal([]byte(evalDouble(t, dir, "nixosConfigurations.lab-server.config", apply)), &got); err != nil {
		t.Fatal(err)
	}
	envOf := func(argv0 string) []string {
		for _, e := range got.Envs {
			if strings.HasPrefix(argv0, e.Path+"/") {
				return e.Names
			}
		}
		t.Fatalf("%s is not in an environment of environment.systemPackages", argv0)
		return nil
	}
	for kernel, libs := range map[string][]string{
		"python3": {"ipykernel", "numpy", "pandas", "matplotlib", "scipy", "psycopg"},
		"ir":      {"IRkernel", "DBI", "RPostgres"},
		"julia":   {"IJulia", "LibPQ"},
	} {
		k, ok := got.Kernels[kernel]
		if !ok {
			t.Fatalf("no %s kernel in %v", kernel, got.Kernels)
		}
		have := strings.Join(envOf(k.Argv[0]), " ")
		for _, l := range libs {
			if !strings.Contains(" "+have+" ", " "+l+" ") {
				t.Errorf("%s kernel's environment lacks %s: %s", kernel, l, have)
			}
		}
		if !strings.Contains(strings.Join(k.Argv, " "), "{connection_file}") {
			t.Errorf("%s kernel does not receive the connection file: %v", kernel, k.Argv)
		}
	}
	if got.Jupyter.IP != "127.0.0.1" || contains(got.Firewall, 8888) {
		t.Errorf("Jupyter must listen on localhost only and keep 8888 closed: ip %q, open ports %v", got.Jupyter.IP, got.Firewall)
	}
	if !strings.HasSuffix(got.Shell, "nologin") || !strings.Contains(got.Jupyter.NotebookConfig, "terminals_enabled = False") {
		t.Errorf("the jupyter account must have no login shell and no browser terminals: %q, %q", got.Shell, got.Jupyter.NotebookConfig)
	}
	if got.Jupyter.Env["PGUSER"] != "lab" || got.Jupyter.Env["PGDATABASE"] != "lab" || got.Jupyter.Env["PGHOST"] != "/run/postgresql" {
		t.Errorf("notebooks do not default to the lab database: %v", got.Jupyter.Env)
	}
	// pg_hba.conf: the first matching line wins, so the lab line must come
	// before the module's catch-all peer line.
	auth := got.PG.Authentication
	labLine := regexp.MustCompile(`(?m)^local\s+lab\s+lab\s+peer\s+map=lab$`).FindStringIndex(auth)
	catchAll := regexp.MustCompile(`(?m)^local\s+all\s+all\s+peer$`).FindStringIndex(auth)
	if labLine == nil || catchAll == nil || labLine[0] > catchAll[0] {
		t.Errorf("pg_hba.conf does not map the lab role first:\n%s", auth)
	}
	for _, u := range []string{"monibahmed", "jupyter"} {
		if !regexp.MustCompile(`(?m)^lab\s+` + u + `\s+lab$`).MatchString(got.PG.IdentMap) {
			t.Errorf("ident map lacks %s -> lab:\n%s", u, got.PG.IdentMap)
		}
	}
	if strings.Contains(auth+got.PG.IdentMap, "password") || !contains2(got.PG.Databases, "lab") || !contains2(got.PG.Owners, "lab") {
		t.Errorf("database: %+v", got.PG)
	}
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func contains2(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Without services.postgresql.package the double picks the major version
// from system.stateVersion as nixpkgs' postgresql.nix does, so removing the
// pin evaluates offline as it does on NixOS.
func TestPostgresqlPackageFollowsStateVersion(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	const conf = "targets/lab-server/configuration.nix"
	testutil.Edit(t, dir, conf, "    package = pkgs.postgresql_17;\n", "")
	testutil.Edit(t, dir, conf, "  services.postgresql = {\n", "  system.stateVersion = \"STATE\";\n  services.postgresql = {\n")
	orig, err := os.ReadFile(filepath.Join(dir, conf))
	if err != nil {
		t.Fatal(err)
	}
	for state, want := range map[string]string{"26.05": "postgresql_17", "24.11": "postgresql_16", "23.05": "postgresql_14"} {
		writeFile(t, dir, conf, strings.Replace(string(orig), "STATE", state, 1))
		if got := evalDouble(t, dir, "nixosConfigurations.lab-server.config.services.postgresql.package.name", ""); got != `"`+want+`"` {
			t.Errorf("stateVersion %s: package %s, want %s", state, got, want)
		}
	}
	// Removed majors fail evaluation as on NixOS.
	writeFile(t, dir, conf, strings.Replace(string(orig), "STATE", "19.09", 1))
	args := append([]string{"eval", "--json", ".#nixosConfigurations.lab-server.config.services.postgresql.package.name"},
		(nix.Flake{Dir: dir, Nixpkgs: filepath.Join(dir, nix.DoubleDir)}).Args()...)
	cmd := exec.Command("nix", append(nix.GlobalArgs(true), args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "postgresql_9_6 was removed, please upgrade your postgresql version") {
		t.Fatalf("stateVersion 19.09: err %v, output:\n%s", err, out)
	}
}

// The options the docs suggest (a desktop in targets/dev-workstation/README.md,
// emulated builds in docs/troubleshooting.md) are declared in the double with
// their NixOS effects; a system the module cannot emulate is refused.
func TestDocumentedOptionsEvaluate(t *testing.T) {
	requireNix(t)
	dir := testutil.CopyRepo(t)
	const conf = "targets/dev-workstation/configuration.nix"
	testutil.Edit(t, dir, conf, "  programs.git.enable = true;\n", `  programs.git.enable = true;
  services.desktopManager.plasma6.enable = true;
  services.displayManager.sddm.enable = true;
  boot.binfmt.emulatedSystems = [ "aarch64-linux" ];
`)
	if r := check(t, dir, "-offline"); r.Code != 0 {
		t.Fatalf("check with the documented options:\n%s", r.Combined())
	}
	var got struct {
		Platforms []string `json:"platforms"`
		Wayland   bool     `json:"wayland"`
	}
	out := evalDouble(t, dir, "nixosConfigurations.dev-workstation.config",
		`c: { platforms = c.nix.settings.extra-platforms; wayland = c.services.displayManager.sddm.wayland.enable; }`)
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Platforms, " ") != "aarch64-linux i686-linux" || !got.Wayland {
		t.Fatalf("got %+v", got)
	}
	// A misspelt system fails like NixOS (the option's enum).
	testutil.Edit(t, dir, conf, `[ "aarch64-linux" ]`, `[ "arm64-linux" ]`)
	r := check(t, dir, "-offline")
	assertFails(t, r, "boot.binfmt.emulatedSystems", "arm64-linux")
}
