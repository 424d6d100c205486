// Package setup installs what the lab, the demo and the test suite need on
// a fresh machine: the Debian/Ubuntu packages of the commands it lacks
// (packages.txt), with apt-get, without leaving a new service running or
// enabled. On machines without apt it says what to install instead.
package setup

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/monibahmed/nixos-config/internal/run"
)

//go:embed packages.txt
var packagesTxt string

// Tool is a command and the Debian package that provides it.
type Tool struct {
	Command string // a name looked up on PATH (and /usr/sbin, /sbin), or an absolute path
	Package string
}

// Tools lists what the lab, the demo and the tests run (packages.txt).
func Tools() []Tool {
	var out []Tool
	for _, line := range strings.Split(packagesTxt, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 2 {
			out = append(out, Tool{Command: f[0], Package: f[1]})
		}
	}
	return out
}

// Packages is every package of Tools, sorted.
func Packages() []string { return packagesOf(Tools()) }

func packagesOf(tools []Tool) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range tools {
		if !seen[t.Package] {
			seen[t.Package] = true
			out = append(out, t.Package)
		}
	}
	sort.Strings(out)
	return out
}

// Missing returns the tools whose command cannot be found.
func Missing(look func(string) bool) []Tool {
	var out []Tool
	for _, t := range Tools() {
		if !look(t.Command) {
			out = append(out, t)
		}
	}
	return out
}

// Found tells whether a command exists: an absolute path, or a name on
// PATH, /usr/sbin or /sbin (root's tools, which a user's PATH may lack).
func Found(cmd string) bool {
	if filepath.IsAbs(cmd) {
		st, err := os.Stat(cmd)
		return err == nil && !st.IsDir()
	}
	if _, err := exec.LookPath(cmd); err == nil {
		return true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if st, err := os.Stat(filepath.Join(dir, cmd)); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return true
		}
	}
	return false
}

// Installer installs missing packages with apt-get.
type Installer struct {
	Runner run.Runner
	// Notice prints a line for the user.
	Notice func(format string, args ...any)
	// Root is the file system root ("" means /); tests use a directory.
	Root string
	// Look finds a command (default Found).
	Look func(string) bool
	// Euid is the effective user id (default os.Geteuid).
	Euid func() int
	// Log receives apt-get's output (nil: discarded).
	Log io.Writer
}

func (in *Installer) path(p string) string {
	if in.Root == "" {
		return p
	}
	return filepath.Join(in.Root, p)
}

// ErrManual is returned when the missing packages cannot be installed here.
type ErrManual struct {
	Missing []Tool
	Reason  string
}

func (e *ErrManual) Error() string {
	var cmds []string
	for _, t := range e.Missing {
		cmds = append(cmds, filepath.Base(t.Command))
	}
	return fmt.Sprintf("this machine lacks %s, and %s: install them, on Debian/Ubuntu with `apt-get install --no-install-recommends %s`, elsewhere with your package manager (Nix, OpenSSH server and client, sudo, iproute2, util-linux, openssl, nftables, nmap, git, fish, systemd-nspawn, mmdebstrap)",
		strings.Join(cmds, ", "), e.Reason, strings.Join(packagesOf(e.Missing), " "))
}

// Ensure installs the packages of the missing tools, if any. It returns the
// packages it installed.
func (in *Installer) Ensure(ctx context.Context) ([]string, error) {
	look, euid := in.Look, in.Euid
	if look == nil {
		look = Found
	}
	if euid == nil {
		euid = os.Geteuid
	}
	missing := Missing(look)
	if len(missing) == 0 {
		return nil, nil
	}
	if euid() != 0 {
		return nil, &ErrManual{Missing: missing, Reason: "installing packages needs root (run as root: `sudo env PATH=\"$PATH\" go run magefile.go demo`)"}
	}
	if !look("apt-get") || !look("dpkg-query") {
		return nil, &ErrManual{Missing: missing, Reason: "this is not a Debian/Ubuntu system (no apt-get)"}
	}
	pkgs := packagesOf(missing)
	var cmds []string
	for _, t := range missing {
		cmds = append(cmds, filepath.Base(t.Command))
	}
	in.Notice("installing %s with apt-get (this machine lacks %s); their services stay stopped and disabled", strings.Join(pkgs, " "), strings.Join(cmds, ", "))
	fresh, err := in.notInstalled(ctx, pkgs)
	if err != nil {
		return nil, err
	}
	before, err := in.enabledLinks()
	if err != nil {
		return nil, err
	}
	if err := in.aptInstall(ctx, pkgs); err != nil {
		return nil, err
	}
	disabled, err := in.disableNew(ctx, before, fresh)
	if err != nil {
		return nil, err
	}
	if len(disabled) > 0 {
		in.Notice("left disabled, as before the installation: %s (the lab starts its own sshd processes; to use sshd yourself: rm -f /etc/ssh/sshd_not_to_be_run; systemctl enable --now ssh)", strings.Join(disabled, ", "))
	}
	if still := Missing(look); len(still) > 0 {
		return pkgs, &ErrManual{Missing: still, Reason: "apt-get installed " + strings.Join(pkgs, " ") + " without providing them"}
	}
	return pkgs, nil
}

// notInstalled returns the packages of pkgs that dpkg does not have installed.
func (in *Installer) notInstalled(ctx context.Context, pkgs []string) (map[string]bool, error) {
	fresh := map[string]bool{}
	for _, p := range pkgs {
		fresh[p] = true
	}
	out, _ := run.Output(ctx, in.Runner, run.Cmd{Name: "dpkg-query", Args: append([]string{"-W", "-f=${Package} ${db:Status-Status}\n"}, pkgs...)})
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[1] == "installed" {
			delete(fresh, f[0])
		}
	}
	return fresh, nil
}

// policyRC makes invoke-rc.d and deb-systemd-invoke refuse to start any
// service while packages are installed (Debian's policy-rc.d interface,
// exit status 101: action forbidden).
const policyRC = "#!/bin/sh\n# Written by nixos-config's installer for the duration of one apt-get run.\nexit 101\n"

func (in *Installer) aptInstall(ctx context.Context, pkgs []string) error {
	policy := in.path("/usr/sbin/policy-rc.d")
	if _, err := os.Lstat(policy); err == nil {
		// The administrator's own policy stays in force.
		policy = ""
	} else {
		if err := os.WriteFile(policy, []byte(policyRC), 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", policy, err)
		}
		defer os.Remove(policy)
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	install := run.Cmd{Name: "apt-get", Args: append([]string{"install", "--yes", "--quiet", "--no-install-recommends"}, pkgs...), Env: env, Stdout: in.Log, Stderr: in.Log}
	err := in.Runner.Run(ctx, install)
	if err == nil {
		return nil
	}
	var ee *run.ExitError
	if errors.As(err, &ee) && unknownPackage(ee.Stderr) {
		// A machine whose package lists were never fetched (e.g. a fresh
		// cloud image): fetch them once and try again.
		in.Notice("apt-get does not know the packages yet: running apt-get update")
		if uerr := in.Runner.Run(ctx, run.Cmd{Name: "apt-get", Args: []string{"update", "--quiet"}, Env: env, Stdout: in.Log, Stderr: in.Log}); uerr != nil {
			return fmt.Errorf("apt-get update: %w", uerr)
		}
		err = in.Runner.Run(ctx, install)
	}
	if err != nil {
		hint := ""
		if errors.As(err, &ee) && unknownPackage(ee.Stderr) {
			hint = " (on Ubuntu, nix-bin is in the universe component: `add-apt-repository universe`)"
		}
		return fmt.Errorf("installing %s: %w%s", strings.Join(pkgs, " "), err, hint)
	}
	return nil
}

func unknownPackage(stderr string) bool {
	return strings.Contains(stderr, "Unable to locate package") || strings.Contains(stderr, "has no installation candidate")
}

// enabledLinks lists the symbolic links that enable services: systemd's
// under /etc/systemd/system and /etc/systemd/user (wants/requires and
// aliases; sid's openssh-client enables ssh-agent.socket for every user) and
// SysV's /etc/rc?.d start links.
func (in *Installer) enabledLinks() (map[string]bool, error) {
	links := map[string]bool{}
	for _, root := range []string{in.path("/etc/systemd/system"), in.path("/etc/systemd/user")} {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil
				}
				return err
			}
			if d.Type()&os.ModeSymlink != 0 {
				links[p] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	rc, _ := filepath.Glob(in.path("/etc/rc[0-6S].d/S*"))
	for _, p := range rc {
		links[p] = true
	}
	return links, nil
}

// disableNew undoes what the installation enabled: every new systemd unit is
// disabled with deb-systemd-helper (which also keeps later upgrades from
// enabling it again), every new SysV start link with update-rc.d; links that
// remain are removed. A newly installed OpenSSH server also gets
// /etc/ssh/sshd_not_to_be_run, which its unit and init script honour.
func (in *Installer) disableNew(ctx context.Context, before map[string]bool, fresh map[string]bool) ([]string, error) {
	after, err := in.enabledLinks()
	if err != nil {
		return nil, err
	}
	units := map[string]bool{}
	scripts := map[string]bool{}
	for p := range after {
		if before[p] {
			continue
		}
		if dir := filepath.Base(filepath.Dir(p)); strings.HasPrefix(dir, "rc") && strings.HasSuffix(dir, ".d") {
			if target, err := os.Readlink(p); err == nil {
				scripts[filepath.Base(target)] = true
			}
			continue
		}
		if target, err := os.Readlink(p); err == nil {
			units[filepath.Base(target)] = true
		}
		if strings.HasSuffix(filepath.Dir(p), ".wants") || strings.HasSuffix(filepath.Dir(p), ".requires") {
			units[filepath.Base(p)] = true
		}
	}
	var names []string
	for u := range units {
		names = append(names, u)
		if Found("deb-systemd-helper") && in.Root == "" {
			_ = in.Runner.Run(ctx, run.Cmd{Name: "deb-systemd-helper", Args: []string{"disable", u}})
		}
	}
	for s := range scripts {
		names = append(names, s+" (init script)")
		if Found("update-rc.d") && in.Root == "" {
			_ = in.Runner.Run(ctx, run.Cmd{Name: "update-rc.d", Args: []string{s, "disable"}})
		}
	}
	// Whatever is still enabled (a helper missing or failing) goes by hand.
	left, err := in.enabledLinks()
	if err != nil {
		return nil, err
	}
	for p := range left {
		if !before[p] {
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("disabling %s: %w", p, err)
			}
		}
	}
	if fresh["openssh-server"] {
		if err := os.WriteFile(in.path("/etc/ssh/sshd_not_to_be_run"), []byte("Written by nixos-config's installer: this machine's sshd was not running before. Remove this file to use it.\n"), 0o644); err != nil {
			return nil, err
		}
	}
	sort.Strings(names)
	return names, nil
}
