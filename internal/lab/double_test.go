package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// addTarget adds a target to a repository copy whose configuration is the
// given Nix attribute set body (on top of the hardware placeholder).
func addTarget(t *testing.T, repo, name, body string) {
	t.Helper()
	dir := filepath.Join(repo, "targets", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hw, err := os.ReadFile(filepath.Join(repo, "targets", "media-center", "hardware-configuration.nix"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"configuration.nix":          "{ ... }:\n{\n  imports = [ ./hardware-configuration.nix ];\n  boot.loader.systemd-boot.enable = true;\n" + body + "\n}\n",
		"hardware-configuration.nix": string(hw),
		"README.md":                  "# " + name + "\n",
		"target.json":                `{"address": "10.99.99.` + name[len(name)-1:] + `"}`,
	}
	for f, c := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Git(t, repo, "add", "targets/"+name)
}

func activate(t *testing.T, l *Lab, host, p, mode string) (string, error) {
	t.Helper()
	h, _ := l.Host(host)
	if out, err := nixCopy(l, h, p); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	return ssh(t, l, host, "sudo "+p+"/bin/switch-to-configuration "+mode)
}

func TestDoubleSwitchModes(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	repo := testutil.CopyRepo(t)
	addTarget(t, repo, "fail1", "  lab.simulate.activation = { exitCode = 4; message = \"warning: the following units failed: broken.service\"; };")
	addTarget(t, repo, "cut2", "  lab.simulate.sshd = \"stop\";")
	good := buildDouble(t, repo, "media-center")
	failing := buildDouble(t, repo, "fail1")
	cutting := buildDouble(t, repo, "cut2")
	defer l.Exec(ctx, "beta", "sh", "-c", "rm -rf /run/current-system /var/lib/nixos-double")
	// The raw copies below (ssh-ng://, as the deploy user) need the user
	// trusted; lab targets trust only root unless told.
	if err := l.TrustUser(ctx, "beta", true); err != nil {
		t.Fatal(err)
	}

	// dry-activate: prints, changes nothing.
	out, err := activate(t, l, "beta", good, "dry-activate")
	if err != nil || !strings.Contains(out, "would switch /run/current-system from none to "+good) {
		t.Fatalf("dry-activate: %v %q", err, out)
	}
	if o, _ := ssh(t, l, "beta", "readlink /run/current-system; cat /var/lib/nixos-double/activations.log"); strings.Contains(o, good) {
		t.Fatalf("dry-activate changed something: %q", o)
	}
	// boot: records the boot entry only.
	if out, err := activate(t, l, "beta", good, "boot"); err != nil {
		t.Fatalf("boot: %v %s", err, out)
	}
	o := mustSSH(t, l, "beta", "readlink /run/current-system || echo none; readlink /var/lib/nixos-double/default-boot-entry; cat /var/lib/nixos-double/activations.log")
	if !strings.HasPrefix(o, "none\n"+good+"\n") || !strings.Contains(o, " boot "+good+" 0") {
		t.Fatalf("boot: %q", o)
	}
	// test: activates without a boot entry change.
	if out, err := activate(t, l, "beta", good, "test"); err != nil {
		t.Fatalf("test: %v %s", err, out)
	}
	if o := strings.TrimSpace(mustSSH(t, l, "beta", "readlink /run/current-system")); o != good {
		t.Fatalf("test mode: current-system %q", o)
	}
	// A configuration that asks to fail: non-zero exit, message on stderr.
	out, err = activate(t, l, "beta", failing, "switch")
	if err == nil || !strings.Contains(out, "the following units failed: broken.service") {
		t.Fatalf("failing activation: %v %q", err, out)
	}
	if o := mustSSH(t, l, "beta", "tail -1 /var/lib/nixos-double/activations.log"); !strings.Contains(o, " switch "+failing+" 4") {
		t.Fatalf("log of the failed activation: %q", o)
	}
	// A configuration that stops sshd: new connections are refused afterwards.
	h, _ := l.Host("beta")
	// Whatever happens below, the tests after this one find sshd up.
	defer l.Exec(ctx, "beta", good+"/bin/switch-to-configuration", "switch")
	out, _ = activate(t, l, "beta", cutting, "switch")
	if !strings.Contains(out, "stopping the following units: sshd.service") {
		t.Fatalf("cutting activation: %q", out)
	}
	if err := dial(h.Address); err == nil {
		t.Fatal("sshd still answers after a configuration that stops it")
	}
	// Switching back to a normal system (from the console) brings sshd back.
	if o, err := l.Exec(ctx, "beta", good+"/bin/switch-to-configuration", "switch"); err != nil || !strings.Contains(o, "starting the following units: sshd.service") {
		t.Fatalf("switch back: %v %q", err, o)
	}
	if err := dial(h.Address); err != nil {
		t.Fatalf("sshd not back: %v", err)
	}
}

// Closures with a shared and a per-target part, sized by the configuration.
func TestDoubleRealisticClosure(t *testing.T) {
	testutil.RequireTools(t, "nix", "nix-store")
	repo := testutil.CopyRepo(t)
	addTarget(t, repo, "big1", "  lab.simulate.closure = { sharedMiB = 2; uniqueMiB = 1; };")
	addTarget(t, repo, "big2", "  lab.simulate.closure = { sharedMiB = 2; uniqueMiB = 1; };")
	a := buildDouble(t, repo, "big1")
	b := buildDouble(t, repo, "big2")
	req := func(p string) []string {
		out, err := exec.Command("nix-store", append(nix.GlobalArgs(true), "-qR", p)...).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(out))
	}
	ra, rb := req(a), req(b)
	shared := ""
	for _, p := range ra {
		if strings.Contains(p, "double-shared-2M") {
			shared = p
		}
	}
	if shared == "" || !contains(rb, shared) {
		t.Fatalf("no shared dependency: %v / %v", ra, rb)
	}
	for _, p := range ra {
		if strings.Contains(p, "double-big1-1M") && contains(rb, p) {
			t.Fatal("unique dependency shared")
		}
	}
	out, err := exec.Command("nix", append(nix.GlobalArgs(true), "path-info", "-S", a)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 || len(f[1]) < 7 { // at least 3 MiB = 3145728 bytes: 7 digits
		t.Fatalf("closure size of %s: %q", a, out)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
