package lab

import (
	"bufio"
	"context"
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

// pickUser returns the uid/gid for the deploy user: the machine's own when
// the user exists here, otherwise the first id from 1500 unused in both
// /etc/passwd and /etc/group. The account is only ever added to the
// targets' copies of those files.
func pickUser(user string) (int, int, error) {
	pw, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	used := map[int]bool{}
	for _, line := range strings.Split(string(pw), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		uid, _ := strconv.Atoi(f[2])
		gid, _ := strconv.Atoi(f[3])
		if f[0] == user {
			return uid, gid, nil
		}
		used[uid] = true
	}
	gr, err := os.ReadFile("/etc/group")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(gr), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 {
			gid, _ := strconv.Atoi(f[2])
			used[gid] = true
		}
	}
	for id := 1500; id < 60000; id++ {
		if !used[id] {
			return id, id, nil
		}
	}
	return 0, 0, fmt.Errorf("no free uid for %s", user)
}

func writeFile(path, content string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), mode)
}

// withUser returns the content of an /etc file copy with a line for the
// deploy user appended unless the machine's file already has one.
func withUser(path, user, line string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	s := string(data)
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, user+":") {
			return s, nil
		}
	}
	if !strings.HasSuffix(s, "\n") && s != "" {
		s += "\n"
	}
	return s + line + "\n", nil
}

// nixConf is a lab host's nix.conf. Like NixOS's default, only root is a
// trusted user unless trusted; keys are trusted signing keys.
func nixConf(user string, trusted bool, keys []string) string {
	users := "root"
	if trusted {
		users = "root " + user
	}
	conf := `# Written by the lab (internal/lab). Debian's nix as root: no sandbox, no
# build users, and no binary cache (the lab has no network).
sandbox = false
build-users-group =
substituters =
experimental-features = nix-command flakes
trusted-users = ` + users + "\n"
	if len(keys) > 0 {
		conf += "trusted-public-keys = " + strings.Join(keys, " ") + "\n"
	}
	return conf
}

// parseNixConf reads back what nixConf wrote.
func parseNixConf(conf, user string) (trusted bool, keys []string) {
	for _, line := range strings.Split(conf, "\n") {
		k, v, ok := strings.Cut(line, " = ")
		switch {
		case !ok:
		case k == "trusted-users":
			trusted = strings.Contains(" "+v+" ", " "+user+" ")
		case k == "trusted-public-keys":
			keys = strings.Fields(v)
		}
	}
	return trusted, keys
}

func sudoRule(user string, password bool) string {
	if password {
		return user + " ALL=(ALL) ALL\n"
	}
	return user + " ALL=(ALL) NOPASSWD: ALL\n"
}

// MaxSessions of the lab's sshd: sshd's default, which NixOS keeps; a
// deployment must live with it (sshx's newSession waits for a free
// session). A test sets fewer where it matters and restores this.
const MaxSessions = "10"

func sshdConfig(addr, user string) string {
	return `# Written by the lab (internal/lab).
ListenAddress ` + addr + `
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_rsa_key
PidFile /run/sshd.pid
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers ` + user + `
AuthorizedKeysFile .ssh/authorized_keys
LogLevel VERBOSE
MaxStartups 200:30:400
MaxSessions ` + MaxSessions + `
PrintMotd no
`
}

// createHost builds one host (a systemd host from the base root root). On
// error the returned Host names what exists so far, for the caller's
// rollback.
func (l *Lab) createHost(ctx context.Context, spec hostSpec, root string) (Host, error) {
	h := Host{
		Name:    spec.Name,
		Role:    spec.Role,
		Kind:    spec.Kind,
		Address: spec.Address.String(),
		NetNS:   l.netnsName(spec.Name),
		Dir:     filepath.Join(l.cfg.StateDir, "hosts", spec.Name),
	}
	if h.isSystemd() {
		if root == "" {
			return Host{}, fmt.Errorf("no root file system for the systemd host %s", h.Name)
		}
		h.Root = root
	}
	if spec.Role == RoleTarget || spec.Role == RoleBastion {
		h.HostVeth = fmt.Sprintf("%sv%d", l.cfg.Name, spec.Index)
	} else {
		h.HostVeth = fmt.Sprintf("%sx%d", l.cfg.Name, spec.Index)
	}
	if netnsExists(h.NetNS) {
		return Host{}, fmt.Errorf("network namespace %s exists but this lab has no record of it (another lab with the name %q?)", h.NetNS, l.cfg.Name)
	}
	if linkExists(h.HostVeth) {
		return Host{}, fmt.Errorf("interface %s exists but this lab has no record of it", h.HostVeth)
	}
	if err := os.RemoveAll(h.Dir); err != nil {
		return Host{}, err
	}
	// From here on, h is returned so that the caller can remove it.
	if err := l.writeHostFiles(ctx, h); err != nil {
		return h, err
	}
	if err := l.cmd(ctx, "ip", "netns", "add", h.NetNS); err != nil {
		return h, err
	}
	peer := fmt.Sprintf("%sp%d", l.cfg.Name, spec.Index)
	steps := [][]string{
		{"ip", "link", "add", h.HostVeth, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", h.NetNS},
		{"ip", "-n", h.NetNS, "link", "set", peer, "name", "eth0"},
		{"ip", "-n", h.NetNS, "addr", "add", fmt.Sprintf("%s/%d", h.Address, l.prefixLen()), "dev", "eth0"},
		{"ip", "-n", h.NetNS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NetNS, "link", "set", "lo", "up"},
		{"ip", "link", "set", h.HostVeth, "master", l.state.Bridge},
		{"ip", "link", "set", h.HostVeth, "up"},
	}
	for _, s := range steps {
		if err := l.cmd(ctx, s[0], s[1:]...); err != nil {
			return h, err
		}
	}
	// A host recreated at the same address has a new MAC address: forget
	// the old one, or this machine sends to it until its ARP entry expires.
	_ = l.cmd(ctx, "ip", "neigh", "flush", "to", h.Address, "dev", l.state.Bridge)
	if h.isSystemd() {
		err := l.startSystemdHost(ctx, &h, root)
		return h, err
	}
	// PID 1 of the host's namespaces. The unshare process stays as its parent.
	unsharePID, err := l.spawn.Spawn(run.Cmd{Name: "ip", Args: []string{
		"netns", "exec", h.NetNS,
		"unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--propagation", "private",
		"/bin/sh", filepath.Join(h.Dir, "init.sh"), h.Dir, h.Name,
	}}, filepath.Join(h.Dir, "init.log"))
	if err != nil {
		return h, err
	}
	pid, err := waitChild(ctx, unsharePID, 5*time.Second)
	if err != nil {
		// The log goes with the host's directory when the start is rolled
		// back: quote it.
		return h, fmt.Errorf("starting the init process: %w; its log: %s", err, tailFile(filepath.Join(h.Dir, "init.log"), 5))
	}
	h.PID = pid
	h.StartTime = procStartTime(pid)
	l.state.Hosts = append(l.state.Hosts, h)
	if err := l.waitReady(ctx, h); err != nil {
		return h, err
	}
	return h, nil
}

func (l *Lab) writeHostFiles(ctx context.Context, h Host) error {
	fs := filepath.Join(h.Dir, "fs")
	dirs := []string{"nix", "etc/nix", "etc/ssh", "etc/sudoers.d", "var/lib/lab", "home"}
	// The accounts: a copy of this machine's, or of a systemd host's root's.
	etc := "/etc"
	if h.isSystemd() {
		etc = filepath.Join(h.Root, "etc")
	} else {
		dirs = append(dirs, "run")
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(fs, d), 0o755); err != nil {
			return err
		}
	}
	u := l.state.User
	passwd, err := withUser(filepath.Join(etc, "passwd"), u, fmt.Sprintf("%s:x:%d:%d:lab deploy user:/home/%s:/bin/bash", u, l.state.UID, l.state.GID, u))
	if err != nil {
		return err
	}
	group, err := withUser(filepath.Join(etc, "group"), u, fmt.Sprintf("%s:x:%d:", u, l.state.GID))
	if err != nil {
		return err
	}
	// Not this machine's shadow (its hashes stay here): every account
	// without a password. '*' rather than a locked '!': sshd refuses key
	// logins to locked accounts.
	shadow := shadowFor(passwd)
	files := []struct {
		path, content string
		mode          os.FileMode
	}{
		{"etc/passwd", passwd, 0o644},
		{"etc/group", group, 0o644},
		{"etc/shadow", shadow, 0o640},
		{"etc/hosts", fmt.Sprintf("127.0.0.1 localhost\n127.0.1.1 %s\n%s %s\n", h.Name, h.Address, h.Name), 0o644},
		{"etc/hostname", h.Name + "\n", 0o644},
		// No outside resolver is ever queried from a lab host.
		{"etc/resolv.conf", "nameserver 127.0.0.1\n", 0o644},
		{"etc/nix/nix.conf", nixConf(u, false, nil), 0o644},
		{"etc/sudoers.d/lab", sudoRule(u, false), 0o440},
		{"var/lib/lab/sshd_config", sshdConfig(h.Address, u), 0o644},
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(fs, f.path), f.content, f.mode); err != nil {
			return err
		}
	}
	if err := l.hostKeys(ctx, h); err != nil {
		return err
	}
	pub, err := os.ReadFile(l.IdentityPath() + ".pub")
	if err != nil {
		return err
	}
	home := filepath.Join(fs, "home", u)
	if err := writeFile(filepath.Join(home, ".ssh", "authorized_keys"), string(pub), 0o600); err != nil {
		return err
	}
	for _, p := range []string{home, filepath.Join(home, ".ssh"), filepath.Join(home, ".ssh", "authorized_keys")} {
		if err := os.Chown(p, l.state.UID, l.state.GID); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(home, ".ssh"), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(home, 0o755); err != nil {
		return err
	}
	if h.isSystemd() {
		return writeFile(filepath.Join(h.Dir, "nspawn.sh"), nspawnScript, 0o755)
	}
	if err := writeFile(filepath.Join(h.Dir, "init.sh"), initScript, 0o755); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(h.Dir, "ctl.sh"), ctlScript, 0o755); err != nil {
		return err
	}
	if h.Role != RoleSilent {
		return writeFile(filepath.Join(h.Dir, "sshd.enabled"), "", 0o644)
	}
	return nil
}

// hostKeys (re)generates the host's SSH host keys.
func (l *Lab) hostKeys(ctx context.Context, h Host) error {
	dir := filepath.Join(h.Dir, "fs", "etc", "ssh")
	for _, k := range []struct{ typ, bits string }{{"ed25519", ""}, {"rsa", "2048"}} {
		path := filepath.Join(dir, "ssh_host_"+k.typ+"_key")
		_ = os.Remove(path)
		_ = os.Remove(path + ".pub")
		args := []string{"-q", "-t", k.typ, "-N", "", "-C", "root@" + h.Name, "-f", path}
		if k.bits != "" {
			args = append(args, "-b", k.bits)
		}
		if err := l.cmd(ctx, "ssh-keygen", args...); err != nil {
			return fmt.Errorf("host key: %w", err)
		}
	}
	return nil
}

// waitChild waits until the process pid has a child and returns its PID.
func waitChild(ctx context.Context, pid int, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	path := fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(path)
		if err == nil {
			if f := strings.Fields(string(data)); len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		} else if procStartTime(pid) == 0 {
			return 0, fmt.Errorf("unshare (pid %d) exited", pid)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("no init process after %v", timeout)
}

func (l *Lab) waitReady(ctx context.Context, h Host) error {
	deadline := time.Now().Add(20 * time.Second)
	ready := filepath.Join(h.Dir, "fs", "run", "lab-ready")
	for {
		_, err := os.Stat(ready)
		if err == nil {
			break
		}
		if !h.alive() {
			return fmt.Errorf("init exited: %s", tailFile(filepath.Join(h.Dir, "init.log"), 5))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 20s: %s", tailFile(filepath.Join(h.Dir, "init.log"), 5))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if h.Role == RoleSilent {
		return nil
	}
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, "22"), 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd does not answer on %s:22: %v (%s)", h.Address, err, tailFile(filepath.Join(h.Dir, "fs", "var", "lib", "lab", "sshd.log"), 5))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tailFile returns the last n non-empty lines of a file on one line.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "no log"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			lines = append(lines, s)
			if len(lines) > n {
				lines = lines[1:]
			}
		}
	}
	if len(lines) == 0 {
		return "empty log " + path
	}
	return strings.Join(lines, " | ")
}

// shadowFor is a shadow file for the accounts of passwd, none with a
// password.
func shadowFor(passwd string) string {
	var b strings.Builder
	for _, line := range strings.Split(passwd, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && name != "" {
			fmt.Fprintf(&b, "%s:*:20000:0:99999:7:::\n", name)
		}
	}
	return b.String()
}
