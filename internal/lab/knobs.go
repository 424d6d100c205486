package lab

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
)

// Exec runs a command as root inside a host's namespaces (network, mount,
// UTS, PID) and returns its standard output.
func (l *Lab) Exec(ctx context.Context, host string, args ...string) (string, error) {
	return l.ExecInput(ctx, host, "", args...)
}

// ExecInput is Exec with standard input.
func (l *Lab) ExecInput(ctx context.Context, host, stdin string, args ...string) (string, error) {
	h, err := l.Host(host)
	if err != nil {
		return "", err
	}
	if !h.alive() {
		return "", fmt.Errorf("lab host %s is not running: run mage lab:up", host)
	}
	c := run.Cmd{Name: "nsenter", Args: append(l.NsenterArgs(h), args...)}
	if stdin != "" {
		c.Stdin = strings.NewReader(stdin)
	}
	return run.Output(ctx, l.runner, c)
}

// NsenterArgs are the nsenter arguments that enter h's namespaces.
func (l *Lab) NsenterArgs(h Host) []string {
	return []string{"--target", strconv.Itoa(h.PID), "--mount", "--uts", "--net", "--pid", "--wd=/", "--"}
}

func (l *Lab) ctl(ctx context.Context, host, command string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	_, err = l.Exec(ctx, host, "/bin/sh", filepath.Join(h.Dir, "ctl.sh"), command)
	return err
}

// StopSSHD stops the host's sshd (established sessions stay, as with systemd).
func (l *Lab) StopSSHD(ctx context.Context, host string) error { return l.ctl(ctx, host, "stop-sshd") }

// StartSSHD starts the host's sshd and waits until it accepts connections.
func (l *Lab) StartSSHD(ctx context.Context, host string) error {
	if err := l.ctl(ctx, host, "start-sshd"); err != nil {
		return err
	}
	h, _ := l.Host(host)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, "22"), 300*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd on %s does not answer: %w", host, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StopNixDaemon stops the host's nix-daemon.
func (l *Lab) StopNixDaemon(ctx context.Context, host string) error {
	return l.ctl(ctx, host, "stop-nix-daemon")
}

// StartNixDaemon starts the host's nix-daemon.
func (l *Lab) StartNixDaemon(ctx context.Context, host string) error {
	return l.ctl(ctx, host, "start-nix-daemon")
}

func (l *Lab) fsPath(host string, rel string) (string, error) {
	h, err := l.Host(host)
	if err != nil {
		return "", err
	}
	return filepath.Join(h.Dir, "fs", rel), nil
}

// rewrite replaces a bind-mounted file's content in place (same inode, so
// the bind mount inside the host sees it).
func rewrite(path, content string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Fingerprint returns the SHA256 fingerprint of the host's ed25519 host key,
// in OpenSSH's format.
func (l *Lab) Fingerprint(host string) (string, error) {
	p, err := l.fsPath(host, "etc/ssh/ssh_host_ed25519_key.pub")
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return "", errors.New("malformed host key")
	}
	raw, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]), nil
}

// RotateHostKey gives the host new SSH host keys (the lab's known_hosts
// keeps the old one, so clients see a changed key) and restarts its sshd.
func (l *Lab) RotateHostKey(ctx context.Context, host string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	if err := l.hostKeys(ctx, h); err != nil {
		return err
	}
	if err := l.StopSSHD(ctx, host); err != nil {
		return err
	}
	return l.StartSSHD(ctx, host)
}

// AcceptHostKeys rewrites the lab's known_hosts from the hosts' current keys.
func (l *Lab) AcceptHostKeys() error { return l.writeClientFiles() }

// RequireSudoPassword makes sudo ask the deploy user for password.
func (l *Lab) RequireSudoPassword(ctx context.Context, host, password string) error {
	if password == "" || strings.ContainsAny(password, "\n") {
		return errors.New("lab: invalid sudo password")
	}
	// The password goes to openssl on standard input, never on a command line.
	hash, err := run.Output(ctx, l.runner, run.Cmd{Name: "openssl", Args: []string{"passwd", "-6", "-stdin"}, Stdin: strings.NewReader(password + "\n")})
	if err != nil {
		return err
	}
	shadowPath, err := l.fsPath(host, "etc/shadow")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(shadowPath)
	if err != nil {
		return err
	}
	u := l.state.User
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, u+":") {
			f := strings.Split(line, ":")
			f[1] = strings.TrimSpace(hash)
			lines[i] = strings.Join(f, ":")
		}
	}
	if err := rewrite(shadowPath, strings.Join(lines, "\n")); err != nil {
		return err
	}
	if err := l.setSudoers(host, sudoRule(u, true)); err != nil {
		return err
	}
	return l.clearSudoTimestamps(host)
}

// PasswordlessSudo restores the default: sudo without a password.
func (l *Lab) PasswordlessSudo(ctx context.Context, host string) error {
	if err := l.setSudoers(host, sudoRule(l.state.User, false)); err != nil {
		return err
	}
	return l.clearSudoTimestamps(host)
}

// RemoveSudo takes the deploy user's sudo rights away.
func (l *Lab) RemoveSudo(ctx context.Context, host string) error {
	p, err := l.fsPath(host, "etc/sudoers.d/lab")
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return l.clearSudoTimestamps(host)
}

// DisableSudoBinary makes /usr/bin/sudo unusable for the deploy user on the
// host (as if sudo were not installed: `command -v sudo` finds nothing), or
// restores it.
func (l *Lab) DisableSudoBinary(ctx context.Context, host string, disabled bool) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	stub := filepath.Join(h.Dir, "sudo-disabled")
	if err := os.WriteFile(stub, nil, 0o700); err != nil {
		return err
	}
	script := `while mountpoint -q /usr/bin/sudo; do umount /usr/bin/sudo; done
if [ "$1" = on ]; then mount --bind "$2" /usr/bin/sudo; fi`
	state := "off"
	if disabled {
		state = "on"
	}
	_, err = l.Exec(ctx, host, "/bin/sh", "-c", script, "disable-sudo", state, stub)
	return err
}

func (l *Lab) setSudoers(host, rule string) error {
	p, err := l.fsPath(host, "etc/sudoers.d/lab")
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(rule), 0o440); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func (l *Lab) clearSudoTimestamps(host string) error {
	p, err := l.fsPath(host, "run/sudo")
	if err != nil {
		return err
	}
	return os.RemoveAll(p)
}

// TrustUser sets whether the host's nix-daemon trusts the deploy user (and so
// accepts unsigned paths from it), and restarts the daemon.
func (l *Lab) TrustUser(ctx context.Context, host string, trusted bool) error {
	p, err := l.fsPath(host, "etc/nix/nix.conf")
	if err != nil {
		return err
	}
	if err := rewrite(p, nixConf(l.state.User, trusted)); err != nil {
		return err
	}
	if err := l.StopNixDaemon(ctx, host); err != nil {
		return err
	}
	return l.StartNixDaemon(ctx, host)
}

// LimitDisk replaces the host's /nix with an empty tmpfs of sizeMiB (0
// restores the original store), restarting the nix-daemon.
func (l *Lab) LimitDisk(ctx context.Context, host string, sizeMiB int) error {
	if err := l.StopNixDaemon(ctx, host); err != nil {
		return err
	}
	// /nix is the host's bind mount, with the small disk stacked on top;
	// findmnt lists stacked mounts bottom first.
	script := `set -e
top() { findmnt -n -o FSTYPE /nix | tail -n 1; }
while [ "$(top)" = tmpfs ]; do umount /nix; done
if [ "$1" -gt 0 ]; then
	mount -t tmpfs -o "size=$1m,mode=0755" lab-small-disk /nix
	mkdir -p /nix/store /nix/var/nix/profiles /nix/var/nix/daemon-socket
	chmod 1775 /nix/store
fi`
	if _, err := l.Exec(ctx, host, "/bin/sh", "-c", script, "limit-disk", strconv.Itoa(sizeMiB)); err != nil {
		return err
	}
	return l.StartNixDaemon(ctx, host)
}

// Link describes shaping of a host's link. Zero values mean "not limited".
type Link struct {
	RateMbit int // bandwidth in both directions (tbf)
	LossPct  int // random loss of incoming packets, in percent (nftables)
	DelayMs  int // added latency (needs sch_netem in the kernel)
}

// ErrNoNetem is returned when delay is asked for and the kernel has no netem.
var ErrNoNetem = errors.New("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): link delay cannot be simulated here; bandwidth (tbf) and loss (nftables) still work")

// Shape applies link to the host's link (replacing earlier shaping).
func (l *Lab) Shape(ctx context.Context, host string, link Link) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	// Clear earlier shaping.
	_ = l.cmd(ctx, "tc", "qdisc", "del", "dev", h.HostVeth, "root")
	_, _ = l.Exec(ctx, host, "tc", "qdisc", "del", "dev", "eth0", "root")
	_, _ = l.Exec(ctx, host, "nft", "delete", "table", "inet", "lablink")
	if link.DelayMs > 0 {
		netem := []string{"root", "netem", "delay", fmt.Sprintf("%dms", link.DelayMs)}
		if link.RateMbit > 0 {
			netem = append(netem, "rate", fmt.Sprintf("%dmbit", link.RateMbit))
		}
		if err := l.cmd(ctx, "tc", append([]string{"qdisc", "replace", "dev", h.HostVeth}, netem...)...); err != nil {
			return fmt.Errorf("%w (%v)", ErrNoNetem, err)
		}
		if _, err := l.Exec(ctx, host, append([]string{"tc", "qdisc", "replace", "dev", "eth0"}, netem...)...); err != nil {
			return err
		}
	} else if link.RateMbit > 0 {
		tbf := []string{"root", "tbf", "rate", fmt.Sprintf("%dmbit", link.RateMbit), "burst", burst(link.RateMbit), "latency", "50ms"}
		if err := l.cmd(ctx, "tc", append([]string{"qdisc", "replace", "dev", h.HostVeth}, tbf...)...); err != nil {
			return err
		}
		if _, err := l.Exec(ctx, host, append([]string{"tc", "qdisc", "replace", "dev", "eth0"}, tbf...)...); err != nil {
			return err
		}
	}
	if link.LossPct > 0 {
		rule := fmt.Sprintf("numgen random mod 100 < %d drop", link.LossPct)
		if link.LossPct >= 100 {
			rule = "drop"
		}
		rules := "table inet lablink {\n chain input {\n  type filter hook input priority 0; policy accept;\n  " + rule + "\n }\n}\n"
		if _, err := l.ExecInput(ctx, host, rules, "nft", "-f", "-"); err != nil {
			return err
		}
	}
	return nil
}

// burst for tbf: at least one 64 KiB segment, or 10 ms worth of traffic.
func burst(mbit int) string {
	b := mbit * 1000 * 1000 / 8 / 100
	if b < 64*1024 {
		b = 64 * 1024
	}
	return strconv.Itoa(b)
}

// ShapeUplink limits the deployer's side of the lab bridge (traffic from this
// machine into the lab) to rateMbit; 0 removes the limit.
func (l *Lab) ShapeUplink(ctx context.Context, rateMbit int) error {
	_ = l.cmd(ctx, "tc", "qdisc", "del", "dev", l.state.Bridge, "root")
	if rateMbit <= 0 {
		return nil
	}
	return l.cmd(ctx, "tc", "qdisc", "replace", "dev", l.state.Bridge, "root", "tbf",
		"rate", fmt.Sprintf("%dmbit", rateMbit), "burst", burst(rateMbit), "latency", "50ms")
}

// SetLink brings the host's link up or down (down: "no route to host").
func (l *Lab) SetLink(ctx context.Context, host string, up bool) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	state := "down"
	if up {
		state = "up"
	}
	return l.cmd(ctx, "ip", "link", "set", h.HostVeth, state)
}

// Blackhole makes the host drop every incoming packet (connections time out)
// or restores it.
func (l *Lab) Blackhole(ctx context.Context, host string, on bool) error {
	_, _ = l.Exec(ctx, host, "nft", "delete", "table", "inet", "labblackhole")
	if !on {
		return nil
	}
	rules := "table inet labblackhole {\n chain input {\n  type filter hook input priority -10; policy drop;\n }\n}\n"
	_, err := l.ExecInput(ctx, host, rules, "nft", "-f", "-")
	return err
}

// InstallCommand puts an executable script named name into /usr/local/bin of
// the host (a directory of the host's own, bind-mounted over it inside its
// namespaces), e.g. a stand-in for nixos-generate-config.
func (l *Lab) InstallCommand(ctx context.Context, host, name, script string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	if strings.ContainsAny(name, "/ ") || name == "" {
		return fmt.Errorf("invalid command name %q", name)
	}
	dir := filepath.Join(h.Dir, "fs", "usr-local-bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		return err
	}
	_, err = l.Exec(ctx, host, "/bin/sh", "-c", `mountpoint -q /usr/local/bin && [ "$(stat -c %i /usr/local/bin)" = "$(stat -c %i "$1")" ] || mount --bind "$1" /usr/local/bin`, "install-command", dir)
	return err
}

// RemoveCommand removes a script InstallCommand put into the host's
// /usr/local/bin (nothing happens when there is none).
func (l *Lab) RemoveCommand(host, name string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	if strings.ContainsAny(name, "/ ") || name == "" {
		return fmt.Errorf("invalid command name %q", name)
	}
	err = os.Remove(filepath.Join(h.Dir, "fs", "usr-local-bin", name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
