package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/testutil"
	"github.com/monibahmed/nixos-config/internal/testutil/hostile"
)

// Hostile peers on the lab subnet: SSH servers of the test's own inside the
// "silent" lab host's network namespace (on addresses of their own), and lab
// targets whose commands answer with crafted output. What the toolkit reads
// from them must stay bounded in memory, time and output, and no control
// sequence from them may reach its output.

// hostileAt starts a hostile SSH server on port 22 of addr, an address
// added to the silent lab host for the test.
func (f *fixture) hostileAt(addr string, b hostile.Behaviour) *hostile.Server {
	f.t.Helper()
	silent := f.host(lab.SilentName)
	bits := strings.Split(f.lab.Config().Subnet, "/")[1]
	if out, err := exec.Command("ip", "-n", silent.NetNS, "addr", "add", addr+"/"+bits, "dev", "eth0").CombinedOutput(); err != nil {
		f.t.Fatalf("adding %s to %s: %v %s", addr, silent.NetNS, err, out)
	}
	f.t.Cleanup(func() { exec.Command("ip", "-n", silent.NetNS, "addr", "del", addr+"/"+bits, "dev", "eth0").Run() })
	s, err := hostile.ListenIn("/run/netns/"+silent.NetNS, addr+":22", b)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(s.Close)
	return s
}

// labAddr is the lab subnet's address with the last octet n.
func (f *fixture) labAddr(n int) string {
	p := strings.Split(strings.Split(f.lab.Config().Subnet, "/")[0], ".")
	return fmt.Sprintf("%s.%s.%s.%d", p[0], p[1], p[2], n)
}

func TestHostileDiscover(t *testing.T) {
	f := newFixture(t)
	escapes := "evil\x1b]0;pwned\a\x1b[2J\x1b]8;;http://x/\x1b\\link\x1b]8;;\x1b\\\rlab-server"
	for i, c := range []struct {
		name  string
		b     hostile.Behaviour
		wants []string // in stdout
	}{
		{"endless probe output", hostile.Behaviour{Answer: hostile.Endless("A")},
			[]string{"answered the probe with more than 4096 bytes: the rest was not read", "sent no complete hostname line"}},
		{"100 MB hostname", hostile.Behaviour{Answer: hostile.Reply(strings.Repeat("h", 100<<20) + "\nnixos=yes\n")},
			[]string{"answered the probe with more than 4096 bytes"}},
		{"escapes in the probe", hostile.Behaviour{Answer: hostile.Reply(escapes + "\nnixos=yes\nversion=26.11\x1b[8m\nprofile=system--3-link\n")},
			[]string{`reports an invalid hostname, ignored: evil\x1b]0;pwned\a\x1b[2J\x1b]8;;http://x/\x1b\link`, `invalid NixOS version, ignored: 26.11\x1b[8m`, "invalid system profile link, ignored: system--3-link"}},
		{"escapes in the banner", hostile.Behaviour{Banner: "SSH-2.0-evil\x1b]0;pwned\a\x1b[2J\r\x9b"},
			[]string{`SSH-2.0-evil\x1b]0;pwned\a\x1b[2J`}},
		{"probe that never answers", hostile.Behaviour{},
			[]string{"logged in, but the probe did not answer within 5s"}},
		{"endless banner", hostile.Behaviour{RawLine: "\x1b[2J" + strings.Repeat("x", 1000)},
			[]string{"not an SSH server (no SSH identification line)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := f.labAddr(210 + i) // above the lab's own extra hosts (.200-.202)
			s := f.hostileAt(addr, c.b)
			m := f.mageMeasured(2*time.Minute, "discover:subnet", addr+"/32", "-lab")
			t.Logf("the server sent %d bytes", s.Sent.Load())
			if m.Code != 0 {
				t.Fatalf("exit %d:\n%s", m.Code, m.Combined())
			}
			// One handshake and one probe of 5 s each at most, and compiling.
			m.bounded(t, 20*time.Second, 64, 16)
			assertNoRawControls(t, "stdout", m.Stdout)
			assertNoRawControls(t, "stderr", m.Stderr)
			for _, w := range append(c.wants, addr) {
				if !strings.Contains(m.Stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, m.Stdout)
				}
			}
			j := f.mageMeasured(2*time.Minute, "discover:subnet", addr+"/32", "-lab", "-json")
			j.bounded(t, 20*time.Second, 64, 16)
			var res struct{ Hosts []map[string]any }
			if err := json.Unmarshal([]byte(j.Stdout), &res); err != nil || len(res.Hosts) != 1 {
				t.Errorf("-json: %v\n%s", err, j.Stdout)
			}
			assertNoRawControls(t, "-json", j.Stdout)
		})
	}
}

// A lab target (a real sshd, a known key) whose hostname command answers
// with escape sequences.
func TestHostileHostnameOnTarget(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.lab.InstallCommand(ctx, "media-center", "hostname", "#!/bin/sh\nprintf 'evil\\033]0;pwned\\007\\033[2J\\rmedia-center\\n'\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.RemoveCommand("media-center", "hostname") })
	addr := f.host("media-center").Address
	m := f.mageMeasured(2*time.Minute, "discover:subnet", addr+"/32", "-lab")
	if m.Code != 0 {
		t.Fatalf("exit %d:\n%s", m.Code, m.Combined())
	}
	assertNoRawControls(t, "stdout", m.Stdout)
	assertNoRawControls(t, "stderr", m.Stderr)
	for _, w := range []string{"media-center (by address)", "known", `reports an invalid hostname, ignored: evil\x1b]0;pwned\a\x1b[2J\rmedia-center`} {
		if !strings.Contains(m.Stdout, w) {
			t.Errorf("output lacks %q:\n%s", w, m.Stdout)
		}
	}
}

// History and lock information on a target carry escape sequences:
// generations and status show them escaped.
func TestHostileHistoryAndLockInfo(t *testing.T) {
	f := newFixture(t)
	evil := `evil\u001b]0;pwned\u0007\u001b[2J\rmallory@x\u009b31m\u202e`
	// A system in the target's store (paths outside it are refused as facts).
	const sys3 = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-sys3"
	entry := `{"id":"x1","kind":"deploy","generation":3,"path":"` + sys3 + `","commit":"\u001b[2J0123456789abcdef","deployer":"` + evil +
		`","time":"2026-11-26T10:00:00Z\u001b[8m","mode":"switch\u001b]8;;http://x/\u001b\\","result":"ok\r\u001b[2K"}`
	f.exec("lab-server", "mkdir -p "+sys3+" /var/lib/nixos-config && echo 26.11 > "+sys3+"/nixos-version && ln -sfn "+sys3+" /nix/var/nix/profiles/system-3-link && ln -sfn system-3-link /nix/var/nix/profiles/system && ln -sfn "+sys3+" /run/current-system && cat > /var/lib/nixos-config/history.jsonl <<'END'\n"+entry+"\nEND\nchmod 600 /var/lib/nixos-config/history.jsonl")
	t.Cleanup(func() {
		f.exec("lab-server", "rm -rf /var/lib/nixos-config /run/current-system /nix/var/nix/profiles/system /nix/var/nix/profiles/system-3-link "+sys3)
	})

	g := f.mageMeasured(2*time.Minute, "generations", "lab-server", "-", "-lab")
	if g.Code != 0 {
		t.Fatalf("generations: exit %d:\n%s", g.Code, g.Combined())
	}
	assertNoRawControls(t, "generations stdout", g.Stdout)
	assertNoRawControls(t, "generations stderr", g.Stderr)
	if !strings.Contains(g.Stdout, `evil\x1b]0;pwned\a\x1b[2J\rmallory@x`) || !strings.Contains(g.Stdout, `switch\x1b]8;;http://x/\x1b\`) {
		t.Errorf("generations does not show the fields escaped:\n%s", g.Stdout)
	}

	// A deployment in progress whose lock information is hostile.
	pid := f.exec("lab-server", `printf 'evil\033]0;pwned\007\033[2J\rsomeone' > /run/nixos-config.lock.info; setsid flock /run/nixos-config.lock sleep 300 >/dev/null 2>&1 </dev/null & echo $!`)
	// The process group: flock and its sleep, which holds the lock.
	t.Cleanup(func() { f.exec("lab-server", "kill -- -"+pid+"; rm -f /run/nixos-config.lock.info") })
	s := f.mageMeasured(3*time.Minute, "status", "-lab")
	if s.Code != 0 {
		t.Fatalf("status: exit %d:\n%s", s.Code, s.Combined())
	}
	assertNoRawControls(t, "status stdout", s.Stdout)
	assertNoRawControls(t, "status stderr", s.Stderr)
	for _, w := range []string{`evil\x1b]0;pwned\a\x1b[2J\rmallory@x`, `deploying: evil\x1b]0;pwned\a\x1b[2J\rsomeone`} {
		if !strings.Contains(s.Stdout, w) {
			t.Errorf("status lacks %q:\n%s", w, s.Stdout)
		}
	}
}

// The machine of issue 17: its nixos-generate-config answers a valid module
// that adds a user with wheel and an SSH key and passwordless sudo, each
// line followed by escape sequences that make a terminal show something
// harmless instead.
const maliciousHardware = "# Do not modify this file!  It was generated by 'nixos-generate-config'\n" +
	"{ config, lib, pkgs, modulesPath, ... }:\n\n{\n" +
	"  imports = [ (modulesPath + \"/installer/scan/not-detected.nix\") ];\n" +
	"  boot.initrd.availableKernelModules = [ \"xhci_pci\" \"ahci\" \"nvme\" ];\n" +
	"  users.users.mallory = { isNormalUser = true; extraGroups = [ \"wheel\" ]; };#\x1b[2K\x1b[1G+  boot.kernelModules = [ \"kvm-intel\" ];\n" +
	"  users.users.mallory.openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMalloryMalloryMalloryMalloryMalloryMallory mallory\" ];#\x1b[2K\x1b[1G+  # (detected hardware)\n" +
	"  security.sudo.wheelNeedsPassword = lib.mkForce false;#\x1b[2K\x1b[1G+  networking.useDHCP = lib.mkDefault true;\n" +
	"  fileSystems.\"/\" = { device = \"/dev/disk/by-uuid/0f6f1a2b-lab\"; fsType = \"ext4\"; };\n" +
	"  boot.loader.systemd-boot.enable = true;\n" +
	"  nixpkgs.hostPlatform = lib.mkDefault \"x86_64-linux\";\n}\n"

func TestHostileHardwareIsRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.lab.InstallCommand(ctx, "lab-server", "nixos-generate-config", "#!/bin/sh\ncat <<'END'\n"+maliciousHardware+"END\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.RemoveCommand("lab-server", "nixos-generate-config") })
	hw := filepath.Join(f.repo, "targets/lab-server/hardware-configuration.nix")
	before, _ := os.ReadFile(hw)
	status := testutil.Git(t, f.repo, "status", "--porcelain")

	r := f.mageMeasured(2*time.Minute, "hardware", "lab-server", "-", "-lab")
	failsWith(t, r.Result, "the hardware configuration from "+f.host("lab-server").Address+" sets what nixos-generate-config never writes, so nothing was written",
		"rerun with -allowextra", "see docs/troubleshooting.md#hardware-configuration")
	assertNoRawControls(t, "stdout", r.Stdout)
	assertNoRawControls(t, "stderr", r.Stderr)
	for _, w := range []string{
		"refused: line 7: users.users.mallory.isNormalUser: creates or changes a user account",
		"refused: line 7: users.users.mallory.extraGroups",
		"refused: line 8: users.users.mallory.openssh.authorizedKeys.keys",
		"refused: line 9: security.sudo.wheelNeedsPassword: changes sudo rules: nixos-generate-config never writes it; set with lib.mkForce",
		`refused: line 7: control character \x1b: it can hide or rewrite text on a terminal`,
	} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("output lacks %q:\n%s", w, r.Stdout)
		}
	}
	if after, _ := os.ReadFile(hw); string(after) != string(before) {
		t.Errorf("the refused file was written:\n%s", after)
	}
	if st := testutil.Git(t, f.repo, "status", "--porcelain"); st != status {
		t.Errorf("the repository changed:\n%s", st)
	}

	// -allowextra writes it, lists every extra first, and shows the diff
	// with the escapes visible; mage check then warns.
	r = f.mageMeasured(2*time.Minute, "hardware", "lab-server", "-", "-lab", "-allowextra")
	if r.Code != 0 {
		t.Fatalf("-allowextra: exit %d\n%s", r.Code, r.Combined())
	}
	assertNoRawControls(t, "stdout", r.Stdout)
	for _, w := range []string{"EXTRA, review before you commit: line 7: users.users.mallory.isNormalUser",
		`+  security.sudo.wheelNeedsPassword = lib.mkForce false;#\x1b[2K\x1b[1G+  networking.useDHCP = lib.mkDefault true;`,
		"with -allowextra: it sets 7 things nixos-generate-config never writes"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("-allowextra output lacks %q:\n%s", w, r.Stdout)
		}
	}
	if after, _ := os.ReadFile(hw); string(after) != maliciousHardware {
		t.Errorf("-allowextra did not write the file")
	}
	testutil.Git(t, f.repo, "add", "-A")
	c := check(t, f.repo, "-offline")
	assertNoRawControls(t, "check", c.Combined())
	for _, w := range []string{"warning: lab-server: targets/lab-server/hardware-configuration.nix line 7: users.users.mallory.isNormalUser: creates or changes a user account",
		"line 9: security.sudo.wheelNeedsPassword: changes sudo rules"} {
		if !strings.Contains(c.Stdout, w) {
			t.Errorf("mage check does not warn %q:\n%s", w, c.Combined())
		}
	}
}
