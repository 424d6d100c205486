package lab

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
)

// Exec runs a command as root inside a host's namespaces (network, mount,
// UTS, PID; and IPC on a systemd host) and returns its standard output. On
// a systemd host the command runs beside the host's units, not as one.
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
	if h.isSystemd() {
		return []string{"--target", strconv.Itoa(h.PID), "--mount", "--uts", "--ipc", "--net", "--pid", "--wd=/", "--"}
	}
	return []string{"--target", strconv.Itoa(h.PID), "--mount", "--uts", "--net", "--pid", "--wd=/", "--"}
}

// netExec runs a command of this machine in a host's network namespace only
// (tc, nft: whatever the host's own root has or lacks).
func (l *Lab) netExec(ctx context.Context, host, stdin string, args ...string) (string, error) {
	h, err := l.Host(host)
	if err != nil {
		return "", err
	}
	c := run.Cmd{Name: "nsenter", Args: append([]string{"--net=" + filepath.Join("/run/netns", h.NetNS), "--"}, args...)}
	if stdin != "" {
		c.Stdin = strings.NewReader(stdin)
	}
	return run.Output(ctx, l.runner, c)
}

// ctl runs ctl.sh inside the host (systemctl on a systemd host).
func (l *Lab) ctl(ctx context.Context, host, command string) error {
	_, err := l.Exec(ctx, host, "/bin/sh", "-c", ctlScript, "ctl", command)
	return err
}

// StopSSHD stops the host's sshd (established sessions stay, as with systemd;
// on a systemd host it is `systemctl stop sshd.service`).
func (l *Lab) StopSSHD(ctx context.Context, host string) error { return l.ctl(ctx, host, "stop-sshd") }

// StartSSHD starts the host's sshd and waits until it accepts connections.
func (l *Lab) StartSSHD(ctx context.Context, host string) error {
	if err := l.ctl(ctx, host, "start-sshd"); err != nil {
		return err
	}
	h, _ := l.Host(host)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, strconv.Itoa(h.sshPort())), 300*time.Millisecond)
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

// readHostFile reads a file of host's own file system (rel is relative to
// its root) and returns its path on this machine too.
func (l *Lab) readHostFile(host, rel string) (string, []byte, error) {
	p, err := l.fsPath(host, rel)
	if err != nil {
		return "", nil, err
	}
	data, err := os.ReadFile(p)
	return p, data, err
}

// Fingerprint returns the SHA256 fingerprint of the host's ed25519 host key,
// in OpenSSH's format.
func (l *Lab) Fingerprint(host string) (string, error) {
	_, data, err := l.readHostFile(host, "etc/ssh/ssh_host_ed25519_key.pub")
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
	if err := l.setPassword(host, strings.TrimSpace(hash)); err != nil {
		return err
	}
	if err := l.setSudoers(host, sudoRule(l.state.User, true)); err != nil {
		return err
	}
	return l.clearSudoTimestamps(ctx, host)
}

// setPassword sets the deploy user's password field in the host's shadow.
func (l *Lab) setPassword(host, field string) error {
	shadowPath, data, err := l.readHostFile(host, "etc/shadow")
	if err != nil {
		return err
	}
	u := l.state.User
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, u+":") {
			f := strings.Split(line, ":")
			f[1] = field
			lines[i] = strings.Join(f, ":")
		}
	}
	return rewrite(shadowPath, strings.Join(lines, "\n"))
}

// PasswordlessSudo restores the default: sudo without a password, and no
// password for the deploy user (see shadowFor).
func (l *Lab) PasswordlessSudo(ctx context.Context, host string) error {
	if err := l.setSudoers(host, sudoRule(l.state.User, false)); err != nil {
		return err
	}
	if err := l.setPassword(host, "*"); err != nil {
		return err
	}
	return l.clearSudoTimestamps(ctx, host)
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
	return l.clearSudoTimestamps(ctx, host)
}

// DisableSudoBinary makes /usr/bin/sudo unusable for the deploy user on the
// host (as if sudo were not installed: `command -v sudo` finds nothing), or
// restores it.
func (l *Lab) DisableSudoBinary(ctx context.Context, host string, disabled bool) error {
	// The stub is an empty root-only file in the host's own /run.
	script := `while mountpoint -q /usr/bin/sudo; do umount /usr/bin/sudo; done
if [ "$1" = on ]; then
	: >/run/lab-sudo-disabled
	chmod 0700 /run/lab-sudo-disabled
	mount --bind /run/lab-sudo-disabled /usr/bin/sudo
fi`
	state := "off"
	if disabled {
		state = "on"
	}
	_, err := l.Exec(ctx, host, "/bin/sh", "-c", script, "disable-sudo", state)
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

func (l *Lab) clearSudoTimestamps(ctx context.Context, host string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	if h.isSystemd() {
		// The host's /run is its own.
		_, err := l.Exec(ctx, host, "rm", "-rf", "/run/sudo")
		return err
	}
	return os.RemoveAll(filepath.Join(h.Dir, "fs", "run", "sudo"))
}

// TrustUser sets whether the host's nix-daemon trusts the deploy user (and so
// accepts unsigned paths from it), and restarts the daemon.
func (l *Lab) TrustUser(ctx context.Context, host string, trusted bool) error {
	return l.editNixConf(ctx, host, func(_ *bool, t *bool, _ *[]string) { *t = trusted })
}

// TrustKeys sets the signing keys the host's nix-daemon trusts (Nix's
// trusted-public-keys; none by default) and restarts the daemon.
func (l *Lab) TrustKeys(ctx context.Context, host string, keys ...string) error {
	for _, k := range keys {
		if strings.ContainsAny(k, " \n\t") || !strings.Contains(k, ":") {
			return fmt.Errorf("invalid public key %q", k)
		}
	}
	return l.editNixConf(ctx, host, func(_ *bool, _ *bool, ks *[]string) { *ks = keys })
}

func (l *Lab) editNixConf(ctx context.Context, host string, edit func(_ *bool, trusted *bool, keys *[]string)) error {
	p, data, err := l.readHostFile(host, "etc/nix/nix.conf")
	if err != nil {
		return err
	}
	trusted, keys := parseNixConf(string(data), l.state.User)
	edit(nil, &trusted, &keys)
	conf := nixConf(l.state.User, trusted, keys)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "extra-platforms =") { // ExtraPlatforms' line stays
			conf += line + "\n"
		}
	}
	if err := rewrite(p, conf); err != nil {
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
	// findmnt lists stacked mounts bottom first. The small disk is known by
	// its source name: the bind mount is a tmpfs too where the lab's state
	// directory is on one (a tmpfs /tmp).
	script := `set -e
top() { findmnt -n -o SOURCE /nix | tail -n 1; }
while [ "$(top)" = lab-small-disk ]; do umount /nix; done
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
	_, _ = l.netExec(ctx, host, "", "tc", "qdisc", "del", "dev", "eth0", "root")
	_, _ = l.netExec(ctx, host, "", "nft", "delete", "table", "inet", "lablink")
	if link.DelayMs > 0 {
		netem := []string{"root", "netem", "delay", fmt.Sprintf("%dms", link.DelayMs)}
		if link.RateMbit > 0 {
			netem = append(netem, "rate", fmt.Sprintf("%dmbit", link.RateMbit))
		}
		if err := l.cmd(ctx, "tc", append([]string{"qdisc", "replace", "dev", h.HostVeth}, netem...)...); err != nil {
			return fmt.Errorf("%w (%v)", ErrNoNetem, err)
		}
		if _, err := l.netExec(ctx, host, "", append([]string{"tc", "qdisc", "replace", "dev", "eth0"}, netem...)...); err != nil {
			return err
		}
	} else if link.RateMbit > 0 {
		tbf := []string{"root", "tbf", "rate", fmt.Sprintf("%dmbit", link.RateMbit), "burst", burst(link.RateMbit), "latency", "50ms"}
		if err := l.cmd(ctx, "tc", append([]string{"qdisc", "replace", "dev", h.HostVeth}, tbf...)...); err != nil {
			return err
		}
		if _, err := l.netExec(ctx, host, "", append([]string{"tc", "qdisc", "replace", "dev", "eth0"}, tbf...)...); err != nil {
			return err
		}
	}
	if link.LossPct > 0 {
		rule := fmt.Sprintf("numgen random mod 100 < %d drop", link.LossPct)
		if link.LossPct >= 100 {
			rule = "drop"
		}
		rules := "table inet lablink {\n chain input {\n  type filter hook input priority 0; policy accept;\n  " + rule + "\n }\n}\n"
		if _, err := l.netExec(ctx, host, rules, "nft", "-f", "-"); err != nil {
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
	_, _ = l.netExec(ctx, host, "", "nft", "delete", "table", "inet", "labblackhole")
	if !on {
		return nil
	}
	rules := "table inet labblackhole {\n chain input {\n  type filter hook input priority -10; policy drop;\n }\n}\n"
	_, err := l.netExec(ctx, host, rules, "nft", "-f", "-")
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
	if h.isSystemd() {
		// The host's /usr/local/bin is its own.
		_, err := l.ExecInput(ctx, host, script, "/bin/sh", "-c", `mkdir -p /usr/local/bin && cat >"/usr/local/bin/$1" && chmod 0755 "/usr/local/bin/$1"`, "install-command", name)
		return err
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

func (h Host) sshPort() int {
	if h.Port == 0 {
		return 22
	}
	return h.Port
}

// SetSSHPort moves the host's sshd to port (22: the default) and restarts
// it; the lab's inventory and known_hosts follow.
func (l *Lab) SetSSHPort(ctx context.Context, host string, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("invalid port %d", port)
	}
	p, data, err := l.readHostFile(host, "var/lib/lab/sshd_config")
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "Port ") {
			lines[i] = "Port " + strconv.Itoa(port)
		}
	}
	if err := rewrite(p, strings.Join(lines, "\n")); err != nil {
		return err
	}
	for i := range l.state.Hosts {
		if l.state.Hosts[i].Name == host {
			l.state.Hosts[i].Port = port
			if port == 22 {
				l.state.Hosts[i].Port = 0
			}
		}
	}
	if err := l.save(); err != nil {
		return err
	}
	if err := l.writeClientFiles(); err != nil {
		return err
	}
	if err := l.StopSSHD(ctx, host); err != nil {
		return err
	}
	return l.StartSSHD(ctx, host)
}

// SSHDOption sets an option of the host's sshd_config (replacing the
// option's earlier line; value "" removes it) and restarts its sshd.
func (l *Lab) SSHDOption(ctx context.Context, host, key, value string) error {
	if !sshdKeyRE.MatchString(key) || strings.ContainsAny(value, "\n\r") {
		return fmt.Errorf("invalid sshd option %q %q", key, value)
	}
	p, data, err := l.readHostFile(host, "var/lib/lab/sshd_config")
	if err != nil {
		return err
	}
	var kept []string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if !strings.HasPrefix(line, key+" ") {
			kept = append(kept, line)
		}
	}
	if value != "" {
		kept = append(kept, key+" "+value)
	}
	if err := rewrite(p, strings.Join(kept, "\n")+"\n"); err != nil {
		return err
	}
	if err := l.StopSSHD(ctx, host); err != nil {
		return err
	}
	return l.StartSSHD(ctx, host)
}

var sshdKeyRE = regexp.MustCompile(`^[A-Za-z]+$`)

// OnlySSHFrom makes the host drop SSH connections from every address but
// from (e.g. the bastion's), like a target on a network only the jump host
// reaches; "" lifts the restriction.
func (l *Lab) OnlySSHFrom(ctx context.Context, host, from string) error {
	h, err := l.Host(host)
	if err != nil {
		return err
	}
	_, _ = l.Exec(ctx, host, "nft", "delete", "table", "inet", "labsshfrom")
	if from == "" {
		return nil
	}
	if _, err := netip.ParseAddr(from); err != nil {
		return fmt.Errorf("invalid address %q", from)
	}
	rules := fmt.Sprintf("table inet labsshfrom {\n chain input {\n  type filter hook input priority -5; policy accept;\n  tcp dport %d ip saddr != %s drop\n }\n}\n", h.sshPort(), from)
	_, err = l.ExecInput(ctx, host, rules, "nft", "-f", "-")
	return err
}

// SudoersExtra adds sudoers lines for the deploy user after the lab's rule
// (e.g. "Defaults:monibahmed !tty_tickets", or a NOPASSWD rule for some
// commands), checked with visudo first; "" removes them.
func (l *Lab) SudoersExtra(ctx context.Context, host, lines string) error {
	_, data, err := l.readHostFile(host, "etc/sudoers.d/lab")
	if err != nil {
		return err
	}
	rule, _, _ := strings.Cut(string(data), "# extra\n")
	if lines != "" {
		rule += "# extra\n" + strings.TrimSuffix(lines, "\n") + "\n"
		if _, err := run.Output(ctx, l.runner, run.Cmd{Name: "visudo", Args: []string{"-c", "-q", "-f", "-"}, Stdin: strings.NewReader(rule)}); err != nil {
			return fmt.Errorf("invalid sudoers lines %q: %w", lines, err)
		}
	}
	if err := l.setSudoers(host, rule); err != nil {
		return err
	}
	return l.clearSudoTimestamps(ctx, host)
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

// ExtraPlatforms sets the host's nix.conf extra-platforms (none: the line
// is removed) and restarts its nix-daemon. A host given another
// architecture (e.g. aarch64-linux) then builds that architecture's
// derivations: the double's builders are this machine's /bin/sh and
// coreutils, so it plays a machine of that system for mixed fleets.
func (l *Lab) ExtraPlatforms(ctx context.Context, host string, systems ...string) error {
	p, data, err := l.readHostFile(host, "etc/nix/nix.conf")
	if err != nil {
		return err
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if !strings.HasPrefix(line, "extra-platforms =") {
			lines = append(lines, line)
		}
	}
	if len(systems) > 0 {
		lines = append(lines, "extra-platforms = "+strings.Join(systems, " "))
	}
	if err := rewrite(p, strings.Join(lines, "\n")+"\n"); err != nil {
		return err
	}
	if err := l.StopNixDaemon(ctx, host); err != nil {
		return err
	}
	return l.StartNixDaemon(ctx, host)
}

// LinkBytes returns the bytes the host received and sent on its link
// (eth0, from its own /proc/net/dev).
func (l *Lab) LinkBytes(ctx context.Context, host string) (rx, tx int64, err error) {
	out, err := l.Exec(ctx, host, "cat", "/proc/net/dev")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != "eth0" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			break
		}
		rx, err1 := strconv.ParseInt(f[0], 10, 64)
		tx, err2 := strconv.ParseInt(f[8], 10, 64)
		if err1 != nil || err2 != nil {
			break
		}
		return rx, tx, nil
	}
	return 0, 0, fmt.Errorf("lab host %s: no eth0 in /proc/net/dev", host)
}
