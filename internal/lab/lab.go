// Package lab builds simulated NixOS targets on one machine: each target is a
// network namespace with its own address on a lab bridge, plus mount, UTS and
// PID namespaces with their own /nix store and nix-daemon, /etc/nix, SSH host
// keys, sudoers, /run and /var/lib, and a real OpenSSH sshd. Deployments run
// against them over real SSH into real Nix stores.
//
// Targets named in Config.Systemd are systemd hosts instead: systemd-nspawn
// boots a Debian root with systemd as PID 1 in the target's network
// namespace, and sshd and nix-daemon run as its units, so that deployments
// take the paths of real NixOS machines (systemd-run, transient units,
// systemctl is-system-running).
//
// Everything the lab creates is recorded in its state directory and removed
// by Down: namespaces and interfaces by name, processes by PID (checked
// against their start time), files by path. Nothing is killed by pattern.
package lab

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/setup"
)

//go:embed scripts/init.sh
var initScript string

//go:embed scripts/ctl.sh
var ctlScript string

// Roles of lab hosts.
const (
	RoleTarget   = "target"   // in the inventory, sshd, nix-daemon
	RoleStranger = "stranger" // sshd and nix, but not in the inventory (an unknown machine)
	RoleSilent   = "silent"   // no sshd at all
	RoleBastion  = "bastion"  // an SSH jump host (sshd, the deploy user's key; not in the inventory)
)

// Names of the extra hosts.
const (
	StrangerName = "stranger"
	SilentName   = "silent"
	BastionName  = "bastion"
)

// Config describes a lab.
type Config struct {
	// Name prefixes the lab's network namespaces and interfaces: a letter
	// followed by up to five letters or digits. Default "ncl".
	Name string
	// StateDir holds state.json, inventory.json, known_hosts, the client
	// key and one directory per host.
	StateDir string
	// Subnet of the lab bridge, an IPv4 /24 or larger. Default 10.77.0.0/24.
	Subnet string
	// Targets to create, in order (addresses .10, .11, ...).
	Targets []string
	// User is the deploy user on every target. Default monibahmed.
	User string
	// Extras adds the two hosts that are not in the inventory: "stranger"
	// (sshd) and "silent" (no sshd).
	Extras bool
	// Bastion adds "bastion" (.202), a jump host the deploy user can log
	// in to (see OnlySSHFrom for targets reachable only through it).
	Bastion bool
	// Systemd names the targets that boot with systemd as PID 1
	// (systemd-nspawn) instead of running their daemons under a shell.
	Systemd []string
	// RootCache holds the read-only Debian root the systemd hosts share
	// (built with mmdebstrap when missing). Default DefaultRootCache().
	RootCache string
	// Suite is the Debian release of that root. Default DebianSuite(), this
	// machine's own, so that the hosts run the same Nix.
	Suite string
	// Notice, when set, is told about slow steps before they start (e.g.
	// building the systemd hosts' root).
	Notice func(string) `json:"-"`
}

// Host is one simulated machine.
type Host struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Address  string `json:"address"`
	Port     int    `json:"port,omitempty"` // sshd's port when not 22
	NetNS    string `json:"netns"`
	HostVeth string `json:"hostVeth"`
	Dir      string `json:"dir"`
	// PID of the host's init (PID 1 of its PID namespace) as seen from this
	// machine, and its start time, so that a reused PID is never taken for it.
	// On a systemd host this is the container's systemd.
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	// Kind is "" for hosts whose init is the lab's shell, KindSystemd for
	// hosts that boot systemd.
	Kind string `json:"kind,omitempty"`
	// Systemd hosts: the systemd-nspawn supervisor (PID and start time),
	// the read-only root the host's overlay is based on, and the host's
	// cgroup (a path in the unified hierarchy).
	Nspawn      int    `json:"nspawnPid,omitempty"`
	NspawnStart uint64 `json:"nspawnStartTime,omitempty"`
	Root        string `json:"root,omitempty"`
	Cgroup      string `json:"cgroup,omitempty"`
}

// State is what the lab records in state.json.
type State struct {
	Name    string `json:"name"`
	Subnet  string `json:"subnet"`
	Bridge  string `json:"bridge"`
	Gateway string `json:"gateway"`
	User    string `json:"user"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Hosts   []Host `json:"hosts"`
}

// Spawner starts detached long-lived processes.
type Spawner interface {
	Spawn(c run.Cmd, logPath string) (int, error)
}

// Lab manages one lab.
type Lab struct {
	cfg    Config
	runner run.Runner
	spawn  Spawner
	state  *State
}

var labNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)

// DefaultTargets are the lab's target names when none are given: the
// repository's example fleet first, then node-4, node-5, ...
func DefaultTargets(fleet []string, n int) []string {
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if i < len(fleet) {
			out = append(out, fleet[i])
		} else {
			out = append(out, fmt.Sprintf("node-%d", i+1))
		}
	}
	return out
}

// New validates cfg and returns a Lab using ex to run commands.
func New(cfg Config, ex run.Exec) (*Lab, error) {
	return NewWith(cfg, ex, ex)
}

// NewWith is New with separate runner and spawner (for tests of the orchestration).
func NewWith(cfg Config, r run.Runner, s Spawner) (*Lab, error) {
	if cfg.Name == "" {
		cfg.Name = "ncl"
	}
	if !labNameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("invalid lab name %q: a letter and up to five letters or digits", cfg.Name)
	}
	if cfg.Subnet == "" {
		cfg.Subnet = "10.77.0.0/24"
	}
	if cfg.User == "" {
		cfg.User = inventory.DefaultUser
	}
	if cfg.StateDir == "" {
		return nil, errors.New("lab: no state directory")
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	cfg.StateDir = abs
	p, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 || p.Masked() != p {
		return nil, fmt.Errorf("invalid lab subnet %q: an IPv4 network of /24 or larger, e.g. 10.77.0.0/24", cfg.Subnet)
	}
	if !p.Addr().IsPrivate() {
		return nil, fmt.Errorf("lab subnet %s is not a private range (10/8, 172.16/12, 192.168/16)", cfg.Subnet)
	}
	if len(cfg.Targets) > 180 {
		return nil, fmt.Errorf("lab: at most 180 targets")
	}
	seen := map[string]bool{}
	for _, t := range cfg.Targets {
		if err := inventory.ValidateName(t); err != nil {
			return nil, err
		}
		if t == StrangerName || t == SilentName || t == BastionName || seen[t] {
			return nil, fmt.Errorf("lab: target name %q is reserved or repeated", t)
		}
		seen[t] = true
	}
	sd := map[string]bool{}
	for _, t := range cfg.Systemd {
		if !seen[t] {
			return nil, fmt.Errorf("lab: systemd host %q is not one of the targets (%s)", t, strings.Join(cfg.Targets, ", "))
		}
		if sd[t] {
			return nil, fmt.Errorf("lab: systemd host %q is named twice", t)
		}
		sd[t] = true
	}
	if len(cfg.Systemd) > 0 && cfg.RootCache == "" {
		c, err := DefaultRootCache()
		if err != nil {
			return nil, err
		}
		cfg.RootCache = c
	}
	if len(cfg.Systemd) > 0 && cfg.Suite == "" {
		cfg.Suite = DebianSuite()
	}
	return &Lab{cfg: cfg, runner: r, spawn: s}, nil
}

// Paths of the files the lab writes for deployers.
func (l *Lab) InventoryPath() string  { return filepath.Join(l.cfg.StateDir, "inventory.json") }
func (l *Lab) KnownHostsPath() string { return filepath.Join(l.cfg.StateDir, "known_hosts") }
func (l *Lab) IdentityPath() string   { return filepath.Join(l.cfg.StateDir, "id_ed25519") }
func (l *Lab) statePath() string      { return filepath.Join(l.cfg.StateDir, "state.json") }

// Config returns the lab's configuration.
func (l *Lab) Config() Config { return l.cfg }

func (l *Lab) bridgeName() string { return l.cfg.Name + "br" }

func (l *Lab) netnsName(host string) string { return l.cfg.Name + "-" + host }

// address of the i-th host: .10 upwards for targets, .200/.201 for extras.
func (l *Lab) address(offset int) (netip.Addr, error) {
	p := netip.MustParsePrefix(l.cfg.Subnet)
	a := p.Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n += uint32(offset)
	out := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	if !p.Contains(out) {
		return netip.Addr{}, fmt.Errorf("lab subnet %s too small", l.cfg.Subnet)
	}
	return out, nil
}

func (l *Lab) prefixLen() int { return netip.MustParsePrefix(l.cfg.Subnet).Bits() }

// Load reads the state of a lab that is up; nil when none is.
func (l *Lab) Load() (*State, error) {
	data, err := os.ReadFile(l.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", l.statePath(), err)
	}
	return &s, nil
}

func (l *Lab) save() error {
	sort.SliceStable(l.state.Hosts, func(i, j int) bool {
		a, _ := netip.ParseAddr(l.state.Hosts[i].Address)
		b, _ := netip.ParseAddr(l.state.Hosts[j].Address)
		return a.Less(b)
	})
	data, err := json.MarshalIndent(l.state, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.statePath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, l.statePath())
}

func (l *Lab) cmd(ctx context.Context, name string, args ...string) error {
	return l.runner.Run(ctx, run.Cmd{Name: name, Args: args})
}

func (l *Lab) out(ctx context.Context, name string, args ...string) (string, error) {
	return run.Output(ctx, l.runner, run.Cmd{Name: name, Args: args})
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// Prerequisites lists what the lab needs and is missing on this machine.
func Prerequisites() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (network and mount namespaces)")
	}
	for _, bin := range []string{"ip", "unshare", "nsenter", "mount", "ssh-keygen", "/usr/sbin/sshd", "ssh", "nix", "nix-daemon", "sudo", "openssl", "tc", "nft"} {
		if strings.HasPrefix(bin, "/") {
			if _, err := os.Stat(bin); err != nil {
				missing = append(missing, bin)
			}
			continue
		}
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	return missing
}

func lookPath(bin string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH") + ":/usr/sbin:/sbin") {
		p := filepath.Join(dir, bin)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", bin)
}

// Mount points inside a host (see scripts/init.sh): the host's own copies
// are bind-mounted over them, in its mount namespace only.
var (
	mountDirs  = []string{"/nix", "/etc/nix", "/etc/ssh", "/etc/sudoers.d", "/run", "/var/lib", "/home"}
	mountFiles = []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
)

// ensureMountPoints creates the mount points a fresh machine may lack: /nix
// and /etc/nix before Nix first ran (Nix itself creates /nix on first use as
// root), a file such as /etc/shadow or /etc/hosts in a minimal root file
// system. Only what is missing is created, empty; nothing is ever mounted on
// this machine's own tree.
func ensureMountPoints() error {
	for _, d := range mountDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating the mount point %s: %w", d, err)
		}
	}
	for _, f := range mountFiles {
		if _, err := os.Lstat(f); err == nil {
			continue
		}
		mode := os.FileMode(0o644)
		if f == "/etc/shadow" {
			mode = 0o640
		}
		fh, err := os.OpenFile(f, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
		if err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating the mount point %s: %w", f, err)
		}
		if fh != nil {
			fh.Close()
		}
	}
	return nil
}

// ErrPrerequisites is returned by Up when the machine lacks something.
type ErrPrerequisites struct{ Missing []string }

func (e *ErrPrerequisites) Error() string {
	var pkgs []string
	seen := map[string]bool{}
	for _, m := range e.Missing {
		for _, t := range setup.Tools() {
			if t.Command == m && !seen[t.Package] {
				seen[t.Package] = true
				pkgs = append(pkgs, t.Package)
			}
		}
	}
	install := "run `go run magefile.go demo` once as root, which installs what is missing"
	if len(pkgs) > 0 {
		install += ", or on Debian/Ubuntu `apt-get install --no-install-recommends " + strings.Join(pkgs, " ") + "`"
	}
	return fmt.Sprintf("the lab needs %s: %s (%s)", strings.Join(e.Missing, ", "), install, trouble.See(trouble.Lab))
}

// procStartTime reads field 22 of /proc/<pid>/stat; 0 when the process is gone.
func procStartTime(pid int) uint64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); start time is field 22.
	if len(f) < 20 || f[0] == "Z" {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// alive reports whether the host's init still runs (same PID and start time).
func (h Host) alive() bool {
	return h.PID > 0 && h.StartTime != 0 && procStartTime(h.PID) == h.StartTime
}

// Hosts returns the lab's hosts (after Up or Open).
func (l *Lab) Hosts() []Host {
	if l.state == nil {
		return nil
	}
	return append([]Host(nil), l.state.Hosts...)
}

// Host returns one host by name.
func (l *Lab) Host(name string) (Host, error) {
	if l.state == nil {
		return Host{}, errors.New("lab is not up: run mage lab:up")
	}
	for _, h := range l.state.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return Host{}, fmt.Errorf("lab has no host %q", name)
}

// Open loads the state of a lab that is already up.
func (l *Lab) Open() error {
	s, err := l.Load()
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("no lab is up in %s: run mage lab:up", l.cfg.StateDir)
	}
	l.state = s
	return nil
}

// Up creates the lab, or completes it: healthy hosts are kept, dead ones are
// recreated, hosts no longer wanted are removed. When a step fails, whatever
// this call created is removed again.
func (l *Lab) Up(ctx context.Context) (err error) {
	if m := Prerequisites(); len(m) > 0 {
		return &ErrPrerequisites{Missing: m}
	}
	if err := ensureMountPoints(); err != nil {
		return err
	}
	root := ""
	if len(l.cfg.Systemd) > 0 {
		if m := SystemdPrerequisites(SystemdRootReady(l.cfg.RootCache, l.cfg.Suite)); len(m) > 0 {
			return &ErrSystemdPrerequisites{Missing: m}
		}
		if root, err = EnsureSystemdRoot(ctx, l.runner, l.cfg.RootCache, l.cfg.Suite, l.cfg.Notice); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(l.cfg.StateDir, 0o700); err != nil {
		return err
	}
	prev, err := l.Load()
	if err != nil {
		return err
	}
	if prev != nil && (prev.Name != l.cfg.Name || prev.Subnet != l.cfg.Subnet || prev.User != l.cfg.User) {
		return fmt.Errorf("a lab %q on %s is already up in %s: run mage lab:down first", prev.Name, prev.Subnet, l.cfg.StateDir)
	}
	if prev == nil {
		uid, gid, err := pickUser(l.cfg.User)
		if err != nil {
			return err
		}
		gw, _ := l.address(1)
		prev = &State{Name: l.cfg.Name, Subnet: l.cfg.Subnet, Bridge: l.bridgeName(), Gateway: gw.String(), User: l.cfg.User, UID: uid, GID: gid}
	}
	l.state = prev

	var created []Host
	createdBridge := false
	createdKey := false
	defer func() {
		if err == nil {
			return
		}
		// Roll back what this call created, newest first.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := len(created) - 1; i >= 0; i-- {
			_ = l.destroyHost(cctx, created[i])
			l.forget(created[i].Name)
		}
		if createdBridge {
			_ = l.cmd(cctx, "ip", "link", "del", l.bridgeName())
		}
		if createdKey {
			_ = os.Remove(l.IdentityPath())
			_ = os.Remove(l.IdentityPath() + ".pub")
		}
		if len(l.state.Hosts) == 0 {
			_ = os.Remove(l.statePath())
			_ = os.Remove(l.InventoryPath())
			_ = os.Remove(l.KnownHostsPath())
			_ = os.Remove(filepath.Join(l.cfg.StateDir, "hosts"))
		} else {
			_ = l.save()
			_ = l.writeClientFiles()
		}
	}()

	if _, statErr := os.Stat(l.IdentityPath()); errors.Is(statErr, os.ErrNotExist) {
		if err := l.cmd(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab-deployer", "-f", l.IdentityPath()); err != nil {
			return fmt.Errorf("creating the client key: %w", err)
		}
		createdKey = true
	}

	if !linkExists(l.bridgeName()) {
		if err := l.createBridge(ctx); err != nil {
			return err
		}
		createdBridge = true
	} else if len(l.state.Hosts) == 0 && !createdBridge {
		return fmt.Errorf("interface %s exists but this lab has no record of it (another lab with the name %q?): choose another lab name or remove it", l.bridgeName(), l.cfg.Name)
	}

	want := l.wanted()
	// Remove hosts that are no longer wanted, and dead ones.
	for _, h := range append([]Host(nil), l.state.Hosts...) {
		if spec, ok := want[h.Name]; !ok || spec.Kind != h.Kind || !h.alive() || !netnsExists(h.NetNS) {
			if err := l.destroyHost(ctx, h); err != nil {
				return err
			}
			l.forget(h.Name)
			if err := l.save(); err != nil {
				return err
			}
		}
	}
	for _, spec := range l.orderedWanted(want) {
		if h, err := l.Host(spec.Name); err == nil {
			// Kept: make sure its services run, as after a fresh start.
			if err := l.ctl(ctx, h.Name, "start-nix-daemon"); err != nil {
				return err
			}
			if h.Role != RoleSilent {
				if err := l.StartSSHD(ctx, h.Name); err != nil {
					return err
				}
			}
			continue
		}
		h, err := l.createHost(ctx, spec, root)
		if h.Name != "" {
			created = append(created, h)
		}
		if err != nil {
			return fmt.Errorf("lab host %s: %w", spec.Name, err)
		}
		if err := l.save(); err != nil {
			return err
		}
	}
	return l.writeClientFiles()
}

type hostSpec struct {
	Name    string
	Role    string
	Kind    string
	Address netip.Addr
	Index   int
}

func (l *Lab) wanted() map[string]hostSpec {
	want := map[string]hostSpec{}
	systemd := map[string]bool{}
	for _, t := range l.cfg.Systemd {
		systemd[t] = true
	}
	for i, t := range l.cfg.Targets {
		a, _ := l.address(10 + i)
		spec := hostSpec{Name: t, Role: RoleTarget, Address: a, Index: i}
		if systemd[t] {
			spec.Kind = KindSystemd
		}
		want[t] = spec
	}
	if l.cfg.Extras {
		a, _ := l.address(200)
		want[StrangerName] = hostSpec{Name: StrangerName, Role: RoleStranger, Address: a, Index: 200}
		b, _ := l.address(201)
		want[SilentName] = hostSpec{Name: SilentName, Role: RoleSilent, Address: b, Index: 201}
	}
	if l.cfg.Bastion {
		a, _ := l.address(202)
		want[BastionName] = hostSpec{Name: BastionName, Role: RoleBastion, Address: a, Index: 202}
	}
	return want
}

func (l *Lab) orderedWanted(want map[string]hostSpec) []hostSpec {
	out := make([]hostSpec, 0, len(want))
	for _, s := range want {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

func (l *Lab) forget(name string) {
	hs := l.state.Hosts[:0]
	for _, h := range l.state.Hosts {
		if h.Name != name {
			hs = append(hs, h)
		}
	}
	l.state.Hosts = hs
}

func (l *Lab) createBridge(ctx context.Context) error {
	br := l.bridgeName()
	if err := l.cmd(ctx, "ip", "link", "add", br, "type", "bridge"); err != nil {
		return fmt.Errorf("creating bridge %s: %w", br, err)
	}
	if err := l.cmd(ctx, "ip", "addr", "add", fmt.Sprintf("%s/%d", l.state.Gateway, l.prefixLen()), "dev", br); err != nil {
		_ = l.cmd(ctx, "ip", "link", "del", br)
		return fmt.Errorf("addressing bridge %s: %w", br, err)
	}
	if err := l.cmd(ctx, "ip", "link", "set", br, "up"); err != nil {
		_ = l.cmd(ctx, "ip", "link", "del", br)
		return err
	}
	return nil
}

// writeClientFiles writes inventory.json and known_hosts for deployers.
func (l *Lab) writeClientFiles() error {
	inv := &inventory.Inventory{}
	var kh strings.Builder
	for _, h := range l.state.Hosts {
		if h.Role == RoleTarget {
			inv.Targets = append(inv.Targets, inventory.Target{Name: h.Name, Facts: inventory.Facts{
				Address: h.Address, User: l.state.User, Port: h.Port, System: inventory.DefaultSystem, Tags: []string{"lab"},
			}})
		}
		if h.Role == RoleTarget || h.Role == RoleBastion {
			// Only the ed25519 key, like a user who accepted it once; the
			// server also offers RSA, which a naive client would mistake
			// for a key change.
			pub, err := os.ReadFile(filepath.Join(h.Dir, "fs", "etc", "ssh", "ssh_host_ed25519_key.pub"))
			if err != nil {
				return err
			}
			f := strings.Fields(string(pub))
			if len(f) >= 2 {
				name := h.Address
				if h.Port != 0 && h.Port != 22 {
					name = fmt.Sprintf("[%s]:%d", h.Address, h.Port)
				}
				fmt.Fprintf(&kh, "%s %s %s\n", name, f[0], f[1])
			}
		}
	}
	data, err := inv.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.InventoryPath(), append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(l.KnownHostsPath(), []byte(kh.String()), 0o644)
}

// Down removes everything the lab created. With nothing up it does nothing.
func (l *Lab) Down(ctx context.Context) error {
	s, err := l.Load()
	if err != nil {
		return err
	}
	if s == nil {
		return nil
	}
	l.state = s
	var errs []error
	for _, h := range append([]Host(nil), s.Hosts...) {
		if err := l.destroyHost(ctx, h); err != nil {
			errs = append(errs, err)
			continue
		}
		l.forget(h.Name)
		_ = l.save()
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if linkExists(s.Bridge) {
		if err := l.cmd(ctx, "ip", "link", "del", s.Bridge); err != nil {
			return err
		}
	}
	for _, f := range []string{l.InventoryPath(), l.KnownHostsPath(), l.IdentityPath(), l.IdentityPath() + ".pub", l.statePath()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	_ = os.Remove(filepath.Join(l.cfg.StateDir, "hosts"))
	_ = os.Remove(l.cfg.StateDir) // only if empty: it may hold the user's files
	l.state = nil
	releaseNetnsDir()
	return nil
}

// releaseNetnsDir undoes what `ip netns add` leaves on the machine once no
// network namespace is left: iproute2 bind-mounts /run/netns onto itself
// (shared propagation) the first time it is used. Only that bind mount (a
// mount of the directory itself, not a file system mounted there, such as
// the tmpfs of .ci/isolated) is unmounted; with any namespace left the
// directory is not empty and everything stays.
func releaseNetnsDir() {
	const dir = "/run/netns"
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		return
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	selfBind, other := false, false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// Field 4 is the mounted directory inside its file system, 5 the mount point.
		if len(f) > 4 && f[4] == dir {
			if f[3] == "/" {
				other = true
			} else if strings.HasSuffix(f[3], "/netns") {
				selfBind = true
			}
		}
	}
	if other || !selfBind {
		return
	}
	if err := syscall.Unmount(dir, 0); err == nil {
		_ = os.Remove(dir)
	}
}

// netnsPIDs lists the processes in a network namespace (by namespace identity).
func (l *Lab) netnsPIDs(ctx context.Context, ns string) []int {
	out, err := l.out(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

func (l *Lab) destroyHost(ctx context.Context, h Host) error {
	if h.isSystemd() {
		if err := l.stopSystemdHost(ctx, h); err != nil {
			return err
		}
	} else if h.alive() {
		// Killing PID 1 of the PID namespace kills every process in it.
		_ = syscall.Kill(h.PID, syscall.SIGKILL)
	}
	if netnsExists(h.NetNS) {
		// Anything else that entered the network namespace (e.g. a command
		// run with `ip netns exec`) is found by namespace identity.
		for i := 0; i < 100; i++ {
			pids := l.netnsPIDs(ctx, h.NetNS)
			if len(pids) == 0 {
				break
			}
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := l.cmd(ctx, "ip", "netns", "del", h.NetNS); err != nil {
			return fmt.Errorf("removing network namespace %s: %w", h.NetNS, err)
		}
	}
	if h.HostVeth != "" && linkExists(h.HostVeth) {
		// Deleting the namespace destroys the veth pair asynchronously: the
		// link may vanish between the check and the command.
		if err := l.cmd(ctx, "ip", "link", "del", h.HostVeth); err != nil && linkExists(h.HostVeth) {
			return err
		}
	}
	for i := 0; i < 100 && h.alive(); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if h.Dir != "" && strings.HasPrefix(h.Dir, filepath.Join(l.cfg.StateDir, "hosts")+"/") {
		if err := os.RemoveAll(h.Dir); err != nil {
			return fmt.Errorf("removing %s: %w", h.Dir, err)
		}
	}
	return nil
}

// Open returns the lab whose state is in stateDir (a lab that is up).
func Open(stateDir string, ex run.Exec) (*Lab, error) {
	probe := &Lab{cfg: Config{StateDir: stateDir}}
	s, err := probe.Load()
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("no lab is up in %s: run mage lab:up", stateDir)
	}
	var targets, systemd []string
	extras, bastion := false, false
	root := ""
	for _, h := range s.Hosts {
		switch h.Role {
		case RoleTarget:
			targets = append(targets, h.Name)
			if h.isSystemd() {
				systemd = append(systemd, h.Name)
				root = h.Root
			}
		case RoleBastion:
			bastion = true
		default:
			extras = true
		}
	}
	cfg := Config{Name: s.Name, StateDir: stateDir, Subnet: s.Subnet, User: s.User, Targets: targets, Extras: extras, Bastion: bastion, Systemd: systemd}
	if root != "" {
		// <cache>/debian-<suite>-<hash>/root: keep using the cache and the
		// release the lab was built from.
		cfg.RootCache = filepath.Dir(filepath.Dir(root))
		if f := strings.Split(filepath.Base(filepath.Dir(root)), "-"); len(f) == 3 && f[0] == "debian" && validSuite(f[1]) {
			cfg.Suite = f[1]
		}
	}
	l, err := New(cfg, ex)
	if err != nil {
		return nil, err
	}
	l.state = s
	return l, nil
}

// Start creates a lab and brings it up, removing whatever it created when
// that fails (tests and benchmarks use it for labs of their own).
func Start(ctx context.Context, cfg Config, ex run.Exec) (*Lab, error) {
	l, err := New(cfg, ex)
	if err != nil {
		return nil, err
	}
	if err := l.Up(ctx); err != nil {
		_ = l.Down(context.WithoutCancel(ctx))
		return nil, err
	}
	return l, nil
}
