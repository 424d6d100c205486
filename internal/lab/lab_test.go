package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// One lab for the package's tests; knob tests undo what they turn.
var shared *Lab

func requireLab(t *testing.T) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	missing := Prerequisites()
	testutil.Require(t, len(missing) == 0, "the lab needs %s", strings.Join(missing, ", "))
	if shared == nil {
		t.Fatal("lab not started (see TestMain)")
	}
	return shared
}

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 && len(Prerequisites()) == 0 {
			dir, err := os.MkdirTemp("", "lab-test-")
			if err != nil {
				fmt.Println(err)
				return 1
			}
			defer os.RemoveAll(dir)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			l, err := Start(ctx, Config{Name: "lt", StateDir: filepath.Join(dir, "state"), Subnet: "10.77.10.0/24",
				Targets: []string{"alpha", "beta"}, Extras: true}, run.Exec{})
			if err != nil {
				fmt.Println("lab up:", err)
				return 1
			}
			defer func() {
				if err := l.Down(context.Background()); err != nil {
					fmt.Println("lab down:", err)
				}
			}()
			shared = l
		}
		return m.Run()
	}()
	os.Exit(code)
}

func sshArgs(l *Lab, extra ...string) []string {
	return append([]string{
		"-o", "UserKnownHostsFile=" + l.KnownHostsPath(),
		"-o", "StrictHostKeyChecking=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5",
		"-i", l.IdentityPath(),
	}, extra...)
}

// ssh runs a command on a lab host as the deploy user over real SSH.
func ssh(t *testing.T, l *Lab, host, command string) (string, error) {
	t.Helper()
	h, err := l.Host(host)
	if err != nil {
		t.Fatal(err)
	}
	return sshInput(l, h, "", command)
}

func sshInput(l *Lab, h Host, stdin, command string) (string, error) {
	args := sshArgs(l, l.state.User+"@"+h.Address, command)
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustSSH(t *testing.T, l *Lab, host, command string) string {
	t.Helper()
	out, err := ssh(t, l, host, command)
	if err != nil {
		t.Fatalf("ssh %s %q: %v\n%s", host, command, err, out)
	}
	return out
}

func TestTargetsAnswerWithTheirOwnIdentity(t *testing.T) {
	l := requireLab(t)
	fps := map[string]bool{}
	for _, h := range l.Hosts() {
		if h.Role != RoleTarget {
			continue
		}
		if got := strings.TrimSpace(mustSSH(t, l, h.Name, "hostname")); got != h.Name {
			t.Errorf("hostname of %s = %q", h.Name, got)
		}
		mustSSH(t, l, h.Name, "sudo -n true")
		if out := mustSSH(t, l, h.Name, "id -un; test -L /run/current-system || echo no-system"); !strings.Contains(out, "monibahmed") || !strings.Contains(out, "no-system") {
			t.Errorf("%s: %q", h.Name, out)
		}
		fp, err := l.Fingerprint(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		if fps[fp] {
			t.Errorf("%s shares a host key", h.Name)
		}
		fps[fp] = true
		// The key the server presents is the one the lab recorded.
		out, err := exec.Command("ssh-keyscan", "-t", "ed25519", h.Address).Output()
		if err != nil {
			t.Fatal(err)
		}
		kf, _ := os.CreateTemp(t.TempDir(), "k")
		kf.Write(out)
		kf.Close()
		fpOut, _ := exec.Command("ssh-keygen", "-l", "-f", kf.Name()).Output()
		if !strings.Contains(string(fpOut), fp) {
			t.Errorf("%s presents %s, lab recorded %s", h.Name, fpOut, fp)
		}
	}
	// Root login is refused.
	h, _ := l.Host("alpha")
	out, err := exec.Command("ssh", sshArgs(l, "root@"+h.Address, "true")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("root login: err=%v %s", err, out)
	}
}

func TestStoresAreSeparate(t *testing.T) {
	l := requireLab(t)
	p := strings.TrimSpace(mustSSH(t, l, "alpha", "f=/tmp/lab-sep-$$; echo only-on-alpha-$$ > $f && nix-store --add $f; rm -f $f"))
	if !strings.HasPrefix(p, "/nix/store/") {
		t.Fatalf("nix-store --add printed %q", p)
	}
	mustSSH(t, l, "alpha", "test -e "+p)
	if out, err := ssh(t, l, "beta", "test -e "+p); err == nil {
		t.Errorf("path from alpha visible on beta: %s", out)
	}
	if _, err := os.Stat(p); err == nil {
		t.Errorf("path from alpha visible on this machine")
	}
	alpha, _ := l.Host("alpha")
	if _, err := os.Stat(filepath.Join(alpha.Dir, "fs", p)); err != nil {
		t.Errorf("alpha's store is not in its directory: %v", err)
	}
}

// buildDouble builds the double's toplevel of a target of the repository.
func buildDouble(t *testing.T, repo, target string) string {
	t.Helper()
	testutil.RequireTools(t, "nix")
	f := nix.Flake{Dir: repo, Nixpkgs: filepath.Join(repo, nix.DoubleDir)}
	args := append(append(nix.GlobalArgs(true), "build", "--no-link", "--json",
		repo+"#nixosConfigurations."+target+".config.system.build.toplevel"), f.Args()...)
	out, err := exec.Command("nix", args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("nix build: %v\n%s", err, stderr)
	}
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
		t.Fatalf("nix build output %s: %v", out, err)
	}
	return res[0].Outputs["out"]
}

func nixCopy(l *Lab, h Host, path string) (string, error) {
	cmd := exec.Command("nix", append(nix.GlobalArgs(false), "copy", "--no-check-sigs", "--to", "ssh-ng://"+l.state.User+"@"+h.Address, path)...)
	cmd.Env = append(os.Environ(), "NIX_SSHOPTS="+strings.Join(sshArgs(l), " "))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCopyAndSwitchOnOneTargetOnly(t *testing.T) {
	l := requireLab(t)
	p := buildDouble(t, testutil.RepoRoot(t), "lab-server")
	alpha, _ := l.Host("alpha")
	// A raw copy as the deploy user needs the user trusted (not the default).
	if err := l.TrustUser(context.Background(), "alpha", true); err != nil {
		t.Fatal(err)
	}
	if out, err := nixCopy(l, alpha, p); err != nil {
		t.Fatalf("nix copy: %v\n%s", err, out)
	}
	mustSSH(t, l, "alpha", fmt.Sprintf("sudo nix-env -p /nix/var/nix/profiles/system --set %s && sudo %s/bin/switch-to-configuration switch", p, p))
	if got := strings.TrimSpace(mustSSH(t, l, "alpha", "readlink /nix/var/nix/profiles/system")); got != "system-1-link" {
		t.Errorf("profile: %q", got)
	}
	if got := strings.TrimSpace(mustSSH(t, l, "alpha", "readlink /run/current-system")); got != p {
		t.Errorf("/run/current-system on alpha: %q", got)
	}
	if log := mustSSH(t, l, "alpha", "cat /var/lib/nixos-double/activations.log"); !strings.Contains(log, " switch "+p+" 0") {
		t.Errorf("activation log: %q", log)
	}
	// Nothing of it on beta or on this machine.
	if out := mustSSH(t, l, "beta", "readlink /run/current-system; ls /nix/var/nix/profiles/; test -e "+p+" && echo present || echo absent"); strings.Contains(out, p) || strings.Contains(out, "present") || strings.Contains(out, "system-") {
		t.Errorf("beta affected: %q", out)
	}
	if dst, err := os.Readlink("/run/current-system"); err == nil && dst == p {
		t.Errorf("this machine's /run/current-system points at the lab system")
	}
	st, err := l.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == "alpha" && (s.Generation != 1 || s.CurrentSystem != p || !s.SSHD || !s.NixDaemon) {
			t.Errorf("status of alpha: %+v", s)
		}
	}
	// Reset alpha for other tests.
	if _, err := l.Exec(context.Background(), "alpha", "sh", "-c", "rm -f /run/current-system /nix/var/nix/profiles/system*"); err != nil {
		t.Fatal(err)
	}
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "22"), 1500*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err
}

func TestKnobSSHD(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	h, _ := l.Host("beta")
	if err := l.StopSSHD(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if err := dial(h.Address); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("sshd stopped, dial: %v", err)
	}
	if err := l.StartSSHD(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	mustSSH(t, l, "beta", "true")
}

func TestKnobRotateHostKey(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	before, _ := l.Fingerprint("beta")
	if err := l.RotateHostKey(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	after, _ := l.Fingerprint("beta")
	if before == after {
		t.Fatal("fingerprint unchanged")
	}
	out, err := ssh(t, l, "beta", "true")
	if err == nil || !strings.Contains(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
		t.Errorf("changed key not detected: %v %s", err, out)
	}
	if err := l.AcceptHostKeys(); err != nil {
		t.Fatal(err)
	}
	mustSSH(t, l, "beta", "true")
}

func TestKnobSudo(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	const pw = "lab-sudo-secret"
	if err := l.RequireSudoPassword(ctx, "beta", pw); err != nil {
		t.Fatal(err)
	}
	out, err := ssh(t, l, "beta", "sudo -n true")
	if err == nil || !strings.Contains(out, "password is required") {
		t.Errorf("sudo -n with a password rule: %v %q", err, out)
	}
	h, _ := l.Host("beta")
	if out, err := sshInput(l, h, pw+"\n", "sudo -S -p '' id -u"); err != nil || strings.TrimSpace(out) != "0" {
		t.Errorf("sudo -S with the right password: %v %q", err, out)
	}
	if out, err := sshInput(l, h, "wrong\n", "sudo -k; sudo -S -p '' true"); err == nil {
		t.Errorf("wrong password accepted: %q", out)
	}
	if err := l.RemoveSudo(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if out, err := ssh(t, l, "beta", "sudo -n true"); err == nil {
		t.Errorf("sudo without rights succeeded: %q", out)
	}
	if err := l.PasswordlessSudo(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	mustSSH(t, l, "beta", "sudo -n true")
}

// A lab host's shadow holds no password: not this machine's (its hashes,
// root's included, stay here), and none a knob left behind.
func TestShadowHoldsNoPassword(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	// A password knob turned on and off again leaves none either.
	if err := l.RequireSudoPassword(ctx, "beta", "lab-shadow-secret"); err != nil {
		t.Fatal(err)
	}
	if err := l.PasswordlessSudo(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	mine, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	hashes := map[string]bool{}
	for _, line := range strings.Split(string(mine), "\n") {
		if f := strings.Split(line, ":"); len(f) > 1 && len(f[1]) > 2 {
			hashes[f[1]] = true
		}
	}
	n := 0
	for _, h := range l.Hosts() {
		if h.Role != RoleTarget {
			continue
		}
		_, data, err := l.readHostFile(h.Name, "etc/shadow")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			n++
			f := strings.Split(line, ":")
			if len(f) < 2 || (f[1] != "*" && !strings.HasPrefix(f[1], "!")) {
				t.Errorf("%s: the shadow line of %q has a password field", h.Name, f[0])
			}
			if len(f) > 1 && hashes[f[1]] {
				t.Errorf("%s: shadow line with this machine's password of %s", h.Name, f[0])
			}
		}
	}
	if n == 0 {
		t.Fatal("no shadow line read")
	}
}

func TestKnobTrustAndNixDaemon(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	h, _ := l.Host("beta")
	// Built (input-addressed) paths need a signature or trust; added
	// (content-addressed) ones would be accepted from anyone.
	p := uniqueBuilt(t)
	if err := l.TrustUser(ctx, "beta", false); err != nil {
		t.Fatal(err)
	}
	out, err := nixCopy(l, h, p)
	if err == nil || nix.ClassifyStoreError(out) != nix.StoreUntrusted {
		t.Errorf("untrusted copy: %v %s", err, out)
	}
	if err := l.TrustUser(ctx, "beta", true); err != nil {
		t.Fatal(err)
	}
	if out, err := nixCopy(l, h, p); err != nil {
		t.Fatalf("trusted copy: %v %s", err, out)
	}
	if err := l.StopNixDaemon(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if out, err := ssh(t, l, "beta", "nix-store -q --hash "+p); err == nil {
		t.Errorf("store reachable without nix-daemon: %s", out)
	}
	if err := l.StartNixDaemon(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	mustSSH(t, l, "beta", "nix-store -q --hash "+p)
}

// uniquePath adds a file of random bytes to this machine's store: a path no
// target has yet.
func uniquePath(t *testing.T, size int) string {
	t.Helper()
	blob := filepath.Join(t.TempDir(), "blob")
	if err := exec.Command("sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > %s", size, blob)).Run(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nix-store", append(nix.GlobalArgs(true), "--add", blob)...).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// uniqueBuilt builds a derivation that no target has yet.
func uniqueBuilt(t *testing.T) string {
	t.Helper()
	expr := fmt.Sprintf(`derivation { name = "lab-unique"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo %d > $out" ]; }`, time.Now().UnixNano())
	out, err := exec.Command("nix-build", append(nix.GlobalArgs(true), "--no-out-link", "-E", expr)...).Output()
	if err != nil {
		t.Fatalf("nix-build: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestKnobSmallDisk(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	h, _ := l.Host("beta")
	p := uniquePath(t, 3<<20) // 3 MiB
	if err := l.LimitDisk(ctx, "beta", 1); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.LimitDisk(ctx, "beta", 0); err != nil {
			t.Error(err)
		}
		if out, _ := l.Exec(ctx, "beta", "sh", "-c", "findmnt -n -o FSTYPE /nix | tail -n 1"); strings.TrimSpace(out) == "tmpfs" {
			t.Error("the small disk is still mounted after restoring")
		}
	}()
	if df := mustSSH(t, l, "beta", "df -Pk /nix | tail -1"); !strings.Contains(df, "1024") {
		t.Errorf("df on the small disk: %q", df)
	}
	out2, err := nixCopy(l, h, p)
	switch k := nix.ClassifyStoreError(out2); {
	case err == nil:
		t.Errorf("copied to a full disk: %s", out2)
	case k == nix.StoreDiskFull:
	case k == nix.StoreDaemonDisconnected:
		// Nix 2.34: the daemon cannot open its database and hangs up;
		// its log tells why.
		log, _ := os.ReadFile(filepath.Join(h.Dir, "fs", "var", "lib", "lab", "nix-daemon.log"))
		if nix.ClassifyStoreError(string(log)) != nix.StoreDiskFull {
			t.Errorf("the daemon disconnected, and its log does not say the disk is full:\n%s", log)
		}
	default:
		t.Errorf("copy to a full disk: %v %q %s", err, k, out2)
	}
}

func TestKnobLink(t *testing.T) {
	l := requireLab(t)
	ctx := context.Background()
	h, _ := l.Host("beta")

	// Bandwidth: 2 MB at 8 Mbit/s cannot take less than 2 s; allow slack downwards only.
	if err := l.Shape(ctx, "beta", Link{RateMbit: 8}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out, err := sshInput(l, h, strings.Repeat("x", 2_000_000), "cat > /dev/null"); err != nil {
		t.Fatalf("transfer: %v %s", err, out)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("2 MB through an 8 Mbit/s link took only %v", d)
	}
	if err := l.Shape(ctx, "beta", Link{}); err != nil {
		t.Fatal(err)
	}

	// Loss: all packets dropped, so connections time out.
	if err := l.Shape(ctx, "beta", Link{LossPct: 100}); err != nil {
		t.Fatal(err)
	}
	if err := dial(h.Address); err == nil || !isTimeout(err) {
		t.Errorf("100%% loss, dial: %v", err)
	}
	if err := l.Shape(ctx, "beta", Link{}); err != nil {
		t.Fatal(err)
	}
	if err := dial(h.Address); err != nil {
		t.Fatalf("after clearing: %v", err)
	}

	// Delay needs netem: either it works, or the lab says the kernel lacks it.
	err := l.Shape(ctx, "beta", Link{DelayMs: 50})
	if err != nil && !errors.Is(err, ErrNoNetem) {
		t.Errorf("delay: %v", err)
	}
	_ = l.Shape(ctx, "beta", Link{})

	// Unreachable: link down.
	if err := l.SetLink(ctx, "beta", false); err != nil {
		t.Fatal(err)
	}
	if err := dial(h.Address); err == nil {
		t.Error("dial succeeded with the link down")
	}
	if err := l.SetLink(ctx, "beta", true); err != nil {
		t.Fatal(err)
	}
	// Blackhole: silent drops.
	if err := l.Blackhole(ctx, "beta", true); err != nil {
		t.Fatal(err)
	}
	if err := dial(h.Address); err == nil || !isTimeout(err) {
		t.Errorf("blackhole, dial: %v", err)
	}
	if err := l.Blackhole(ctx, "beta", false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for dial(h.Address) != nil {
		if time.Now().After(deadline) {
			t.Fatal("beta unreachable after restoring its link")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestExtraHosts(t *testing.T) {
	l := requireLab(t)
	stranger, _ := l.Host(StrangerName)
	silent, _ := l.Host(SilentName)
	if err := dial(stranger.Address); err != nil {
		t.Errorf("stranger has no sshd: %v", err)
	}
	if err := dial(silent.Address); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("silent answers on 22: %v", err)
	}
	inv, err := os.ReadFile(l.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	kh, _ := os.ReadFile(l.KnownHostsPath())
	for _, h := range []Host{stranger, silent} {
		if strings.Contains(string(inv), h.Name) || strings.Contains(string(inv), h.Address+`"`) || strings.Contains(string(kh), h.Address+" ") {
			t.Errorf("%s is in the inventory or known_hosts", h.Name)
		}
	}
}
