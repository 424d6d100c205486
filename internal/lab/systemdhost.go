package lab

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
)

//go:embed scripts/nspawn.sh
var nspawnScript string

// KindSystemd is the kind of lab hosts that boot a Debian root with systemd
// as PID 1 (systemd-nspawn) instead of running their daemons under a shell.
const KindSystemd = "systemd"

// Files a systemd host binds from its fs/ directory, in addition to the
// directories below.
var systemdBoundFiles = []string{"etc/passwd", "etc/group", "etc/shadow", "etc/hosts", "etc/hostname", "etc/resolv.conf"}

// Directories a systemd host binds from its fs/ directory: its own store,
// Nix configuration, host keys, sudoers, lab files and home directories.
// /run, /var and the rest are the host's own (its root overlay).
var systemdBoundDirs = []string{"nix", "etc/nix", "etc/ssh", "etc/sudoers.d", "var/lib/lab", "home"}

func (l *Lab) systemdBinds(h Host) ([]string, error) {
	fs := filepath.Join(h.Dir, "fs")
	if strings.ContainsAny(fs, ":,\n") {
		return nil, fmt.Errorf("the lab's state directory %s contains ':' or ',', which systemd-nspawn --bind cannot take", l.cfg.StateDir)
	}
	var binds []string
	for _, p := range append(append([]string(nil), systemdBoundDirs...), systemdBoundFiles...) {
		binds = append(binds, "--bind="+filepath.Join(fs, p)+":/"+p)
	}
	return binds, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startSystemdHost boots h (its files written, its network namespace set
// up) from the base root and waits until systemd reports the system
// running and sshd answers. h.PID is the container's systemd, h.Nspawn its
// supervisor; both are recorded as soon as they exist.
func (l *Lab) startSystemdHost(ctx context.Context, h *Host, root string) error {
	binds, err := l.systemdBinds(*h)
	if err != nil {
		return err
	}
	cg := "nixos-config-lab-" + l.cfg.Name + "-" + h.Name + "-" + randomHex(4)
	args := append([]string{"--mount", "--propagation", "private", "/bin/sh", filepath.Join(h.Dir, "nspawn.sh"),
		h.Dir, h.Name, root, filepath.Join("/run/netns", h.NetNS), cg}, binds...)
	logPath := filepath.Join(h.Dir, "init.log")
	pid, err := l.spawn.Spawn(run.Cmd{Name: "unshare", Args: args}, logPath)
	if err != nil {
		return err
	}
	h.Nspawn, h.NspawnStart = pid, procStartTime(pid)
	init, err := waitContainerInit(ctx, pid, 20*time.Second)
	if err != nil {
		return fmt.Errorf("starting systemd-nspawn: %w: %s", err, tailFile(logPath, 4))
	}
	h.PID, h.StartTime = init, procStartTime(init)
	if data, err := os.ReadFile(filepath.Join(h.Dir, "cgroup")); err == nil {
		h.Cgroup = strings.TrimSpace(string(data))
	}
	l.state.Hosts = append(l.state.Hosts, *h)
	return l.waitBooted(ctx, *h)
}

// waitContainerInit waits until the systemd-nspawn process pid has a child
// that is PID 1 of a PID namespace of its own (the container's systemd).
func waitContainerInit(ctx context.Context, pid int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil && procStartTime(pid) == 0 {
			return 0, fmt.Errorf("systemd-nspawn (pid %d) exited", pid)
		}
		for _, f := range strings.Fields(string(data)) {
			child, _ := strconv.Atoi(f)
			if child > 0 && isNamespaceInit(child) {
				return child, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("no container init after %v", timeout)
}

// isNamespaceInit reports whether pid is PID 1 of a nested PID namespace
// (its NSpid line ends in 1).
func isNamespaceInit(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			return len(f) >= 2 && f[len(f)-1] == "1"
		}
	}
	return false
}

// waitBooted waits for `systemctl is-system-running` to say running (a
// degraded boot is an error naming the failed units), then for sshd.
func (l *Lab) waitBooted(ctx context.Context, h Host) error {
	deadline := time.Now().Add(90 * time.Second)
	logPath := filepath.Join(h.Dir, "init.log")
	state := ""
	for {
		if !h.alive() {
			return fmt.Errorf("the container's systemd exited: %s", tailFile(logPath, 4))
		}
		out, _ := l.Exec(ctx, h.Name, "systemctl", "is-system-running")
		state = strings.TrimSpace(out)
		if state == "running" {
			break
		}
		if state == "degraded" {
			failed, _ := l.Exec(ctx, h.Name, "systemctl", "--failed", "--no-legend", "--plain")
			var units []string
			for _, line := range strings.Split(failed, "\n") {
				if f := strings.Fields(line); len(f) > 0 {
					units = append(units, f[0])
				}
			}
			return fmt.Errorf("booted degraded: failed units: %s (see `journalctl` on the host via mage lab:status)", strings.Join(units, ", "))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("systemd did not finish booting in 90s (is-system-running: %q): %s", state, tailFile(logPath, 4))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, "22"), 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd does not answer on %s:22: %v (%s)", h.Address, err, tailFile(filepath.Join(h.Dir, "fs", "var", "lib", "lab", "sshd.log"), 3))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopSystemdHost ends a systemd host: its systemd (and with it every
// process of its PID namespace), then the supervisor, whose private mount
// namespace takes the root overlay along; then it removes the host's cgroup.
func (l *Lab) stopSystemdHost(ctx context.Context, h Host) error {
	if h.alive() {
		_ = syscall.Kill(h.PID, syscall.SIGKILL)
	}
	sup := Host{PID: h.Nspawn, StartTime: h.NspawnStart}
	for i := 0; i < 200 && sup.alive(); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if sup.alive() {
		_ = syscall.Kill(sup.PID, syscall.SIGKILL)
		for i := 0; i < 100 && sup.alive(); i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	cg := h.Cgroup
	if cg == "" && h.Dir != "" {
		// Written by nspawn.sh before the state recorded it.
		if data, err := os.ReadFile(filepath.Join(h.Dir, "cgroup")); err == nil {
			cg = strings.TrimSpace(string(data))
		}
	}
	if cg == "" {
		return nil
	}
	return l.removeCgroup(ctx, h, cg)
}

// removeCgroup removes a host's cgroup and what its systemd created below
// it, once the last process has left (cgroups go by rmdir, deepest first).
// The unified hierarchy is mounted in a private mount namespace for that.
func (l *Lab) removeCgroup(ctx context.Context, h Host, cg string) error {
	if !strings.HasPrefix(cg, "/") || strings.Contains(cg, "..") || !strings.Contains(filepath.Base(cg), "nixos-config-lab-") {
		return fmt.Errorf("refusing to remove the unexpected cgroup %q of lab host %s", cg, h.Name)
	}
	mnt := filepath.Join(h.Dir, "cgroup.mnt")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return err
	}
	script := `mount -t cgroup2 lab-cgroup "$1" || exit 1
cd "$1" || exit 1
i=0
while [ -d ".$2" ]; do
	find ".$2" -depth -type d -exec rmdir {} + 2>/dev/null
	i=$((i + 1))
	if [ $i -gt 100 ]; then
		echo "cgroup $2 is still in use" >&2
		exit 1
	fi
	[ -d ".$2" ] && sleep 0.1
done
exit 0`
	err := l.cmd(ctx, "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "remove-cgroup", mnt, cg)
	if err != nil {
		return fmt.Errorf("removing the cgroup %s of lab host %s: %w", cg, h.Name, err)
	}
	return nil
}

// isSystemd reports whether h boots systemd.
func (h Host) isSystemd() bool { return h.Kind == KindSystemd }
