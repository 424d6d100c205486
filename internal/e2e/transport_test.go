package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// sshdLogins counts the SSH logins a lab host's sshd accepted so far.
func sshdLogins(f *fixture, host string) int {
	out := f.exec(host, "grep -c 'Accepted publickey' /var/lib/lab/sshd.log || true")
	n, _ := strconv.Atoi(strings.TrimSpace(out))
	return n
}

// descendants reports whether pid descends from root.
func descendsFrom(pid, root int) bool {
	for i := 0; i < 64 && pid > 1; i++ {
		if pid == root {
			return true
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		s := string(data)
		j := strings.LastIndexByte(s, ')')
		fields := strings.Fields(s[j+1:])
		if len(fields) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(fields[1])
	}
	return pid == root
}

// runWatched runs mage and records every command name among its
// descendants while it runs; pid is the mage process's.
func runWatched(t *testing.T, f *fixture, env []string, args ...string) (r testutil.Result, seen map[string]bool, pid int) {
	t.Helper()
	cmd := exec.Command(testutil.MageBinary(t), args...)
	cmd.Dir = f.repo
	cmd.Env = append(os.Environ(), env...)
	var so, se syncBuilder
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	seen = map[string]bool{}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	for running := true; running; {
		select {
		case err = <-done:
			running = false
		case <-time.After(5 * time.Millisecond):
			entries, _ := os.ReadDir("/proc")
			for _, e := range entries {
				pid, perr := strconv.Atoi(e.Name())
				if perr != nil || pid == cmd.Process.Pid || !descendsFrom(pid, cmd.Process.Pid) {
					continue
				}
				if comm, cerr := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); cerr == nil {
					seen[strings.TrimSpace(string(comm))] = true
				}
			}
		}
	}
	r = testutil.Result{Stdout: so.String(), Stderr: se.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
	}
	return r, seen, cmd.Process.Pid
}

// bridgeDirs lists the bridge directories (run.PrivateDir: <prefix>-<pid>-<random>,
// in $TMPDIR or /tmp) of the mage process pid.
func bridgeDirs(pid int, tmpdirs ...string) []string {
	var out []string
	for _, d := range append(tmpdirs, os.TempDir(), "/tmp") {
		m, _ := filepath.Glob(filepath.Join(d, fmt.Sprintf("nixos-config-bridge-%d-*", pid)))
		for _, p := range m {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// One SSH connection per deployment (+1 to verify after the switch), no
// OpenSSH client process, nothing written under ~/.ssh, and a space in
// TMPDIR and in the repository's path change nothing.
func TestOneConnectionNoOpenSSHNothingWritten(t *testing.T) {
	f := newFixture(t)
	home := t.TempDir()
	sshDir := filepath.Join(home, ".ssh")
	if err := os.MkdirAll(sshDir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sshDir, "known_hosts"), []byte("# nothing\n"), 0o600)
	os.WriteFile(filepath.Join(sshDir, "config"), []byte("Host *\n  ServerAliveInterval 5\n"), 0o600)
	before := snapshot(t, sshDir)
	tmp := filepath.Join(t.TempDir(), "a dir with spaces")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	// The repository under a path with a space too.
	spaced := filepath.Join(t.TempDir(), "my repo")
	if err := os.Rename(f.repo, spaced); err != nil {
		t.Fatal(err)
	}
	f.repo = spaced
	f.setConfig("media-center", fmt.Sprintf(`lab.simulate.closure = { uniqueMiB = 2; seed = "%s-%d"; };`, t.Name(), time.Now().UnixNano()))
	f.commit("a closure to copy")
	logins := sshdLogins(f, "media-center")
	r, procs, pid := runWatched(t, f, []string{"HOME=" + home, "TMPDIR=" + tmp}, "deploy", "media-center", "-", "-lab")
	succeeds(t, r)
	if !strings.Contains(r.Stdout, "media-center  10.77.50.12  ok") || f.generation("media-center") != 1 {
		t.Fatalf("not deployed:\n%s", r.Stdout)
	}
	// A switch always verifies over a new connection (verify.go; only
	// boot and dry-activate end after the activation).
	if n := sshdLogins(f, "media-center") - logins; n != 2 {
		t.Errorf("%d SSH logins for one deployment (want 1, +1 for the verification)", n)
	}
	for _, c := range []string{"ssh", "scp", "sftp"} {
		if procs[c] {
			t.Errorf("an OpenSSH client process (%s) ran during the deployment: %v", c, procs)
		}
	}
	if !procs["nix"] {
		t.Errorf("no nix process seen (watching works?): %v", procs)
	}
	if after := snapshot(t, sshDir); after != before {
		t.Errorf("~/.ssh changed:\nbefore %s\nafter  %s", before, after)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) > 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
	if left := bridgeDirs(pid, tmp); len(left) > 0 {
		t.Errorf("bridge directory left: %v", left)
	}
}

// snapshot lists a directory's files with their content.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := d.Info()
		data := []byte{}
		if !d.IsDir() {
			data, _ = os.ReadFile(p)
		}
		fmt.Fprintf(&b, "%s %v %q;", strings.TrimPrefix(p, dir), info.Mode(), data)
		return nil
	})
	return b.String()
}

// A link that goes down during the copy fails within the dead-peer bound
// (not after minutes), with the network remedy, and frees the target's
// lock at once.
func TestLinkDownMidCopyFailsFast(t *testing.T) {
	f := newFixture(t)
	slowCopy(t, f, "media-center")
	ctx := context.Background()
	deadPeer := 3 * time.Second
	cmd, out := startMage(t, f, "media-center: copy 0 B", "deploy", "media-center", "-", "-lab", "-deadpeer="+deadPeer.String())
	// The copy's socket lives in a private directory while the copy runs
	// (the 2 Mbit/s link keeps it running for seconds).
	var dirs []string
	for wait := time.Now().Add(10 * time.Second); len(dirs) == 0 && time.Now().Before(wait); time.Sleep(20 * time.Millisecond) {
		dirs = bridgeDirs(cmd.Process.Pid)
	}
	if len(dirs) != 1 {
		t.Errorf("bridge directories of mage (pid %d) during the copy: %v", cmd.Process.Pid, dirs)
	}
	for _, d := range dirs {
		if info, err := os.Stat(d); err == nil && info.Mode() != fs.ModeDir|0o700 {
			t.Errorf("bridge directory %s has mode %v, want drwx------", d, info.Mode())
		}
	}
	if err := f.lab.SetLink(ctx, "media-center", false); err != nil {
		t.Fatal(err)
	}
	defer f.lab.SetLink(ctx, "media-center", true)
	start := time.Now()
	err := cmd.Wait()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("deploy succeeded with the link down:\n%s", out.String())
	}
	// Declared dead at most one keepalive interval after the dead-peer
	// time; the rest is slack for a loaded machine.
	if bound := deadPeer + sshx.IntervalFor(deadPeer) + 8*time.Second; took > bound {
		t.Errorf("failed after %v (dead-peer time %v, bound %v)", took, deadPeer, bound)
	}
	if !strings.Contains(out.String(), "stopped answering") || !strings.Contains(out.String(), "docs/troubleshooting.md#network") {
		t.Errorf("no dead-peer cause with the network remedy:\n%s", out.String())
	}
	if left := bridgeDirs(cmd.Process.Pid); len(left) > 0 {
		t.Errorf("bridge directory left after the failed copy: %v", left)
	}
	if err := f.lab.SetLink(ctx, "media-center", true); err != nil {
		t.Fatal(err)
	}
	// The lock is free right after: sshd notices the dead session later,
	// but the holder's flock died with its session's input.
	deadline := time.Now().Add(10 * time.Second)
	for {
		free := f.exec("media-center", "flock -n /run/nixos-config.lock true && echo free || echo held")
		if free == "free" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock is still held 10s after the deployer failed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if f.generation("media-center") != 0 {
		t.Errorf("something was activated: generation %d", f.generation("media-center"))
	}
	// The next deployment works at once: the closed connection reached the
	// target with the link, its sessions ended, and the copy's nix-daemon
	// with them (the bridge's guard), releasing the half-copied paths.
	f.lab.Shape(ctx, "media-center", lab.Link{})
	healthy(t, f, "media-center")
}

// Targets reached as ~/.ssh/config says: one only through the bastion
// (ProxyJump), one on another port; both host keys checked.
func TestDeployThroughBastionAndOtherPortFromSSHConfig(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	b := f.host(lab.BastionName)
	if err := f.lab.OnlySSHFrom(ctx, "lab-server", b.Address); err != nil {
		t.Fatal(err)
	}
	defer f.lab.OnlySSHFrom(ctx, "lab-server", "")
	if err := f.lab.SetSSHPort(ctx, "dev-workstation", 2222); err != nil {
		t.Fatal(err)
	}
	defer f.lab.SetSSHPort(ctx, "dev-workstation", 22)
	// The port comes from ssh_config, not from the inventory.
	inv := map[string]map[string]any{}
	data, err := os.ReadFile(f.lab.InventoryPath())
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(data, &inv)
	delete(inv["dev-workstation"], "port")
	data, _ = json.Marshal(inv)
	if err := os.WriteFile(f.lab.InventoryPath(), data, 0o644); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	ls, dw := f.host("lab-server"), f.host("dev-workstation")
	conf := fmt.Sprintf("Host %s\n  ProxyJump %s\nHost %s\n  Port 2222\n", ls.Address, b.Address, dw.Address)
	os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(conf), 0o600)
	env := []string{"HOME=" + home}

	// Without the jump host the target cannot be reached.
	r := testutil.Run(t, f.repo, nil, testutil.MageBinary(t), "deploy", "lab-server", "-", "-lab", "-timeout=2s")
	failsWith(t, r, "lab-server: preflight")
	bastionLogins := sshdLogins(f, lab.BastionName)
	r = testutil.Run(t, f.repo, env, testutil.MageBinary(t), "deploy", "lab-server", "-", "-lab")
	succeeds(t, r)
	if f.generation("lab-server") != 1 {
		t.Fatalf("lab-server not deployed through the bastion:\n%s", r.Combined())
	}
	if n := sshdLogins(f, lab.BastionName) - bastionLogins; n < 1 {
		t.Errorf("the bastion saw no login")
	}
	r = testutil.Run(t, f.repo, env, testutil.MageBinary(t), "deploy", "dev-workstation", "-", "-lab")
	succeeds(t, r)
	if f.generation("dev-workstation") != 1 {
		t.Fatalf("dev-workstation not deployed on port 2222:\n%s", r.Combined())
	}
	// A wrong host key behind the bastion is refused.
	f.lab.OnlySSHFrom(ctx, "lab-server", "")
	if err := f.lab.RotateHostKey(ctx, "lab-server"); err != nil {
		t.Fatal(err)
	}
	defer f.lab.AcceptHostKeys()
	if err := f.lab.OnlySSHFrom(ctx, "lab-server", b.Address); err != nil {
		t.Fatal(err)
	}
	r = testutil.Run(t, f.repo, env, testutil.MageBinary(t), "deploy", "lab-server", "-", "-lab")
	failsWith(t, r, "HOST KEY OF "+ls.Address, "HAS CHANGED")
}
