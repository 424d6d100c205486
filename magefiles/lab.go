//go:build mage

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/magefile/mage/mg"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Lab manages simulated NixOS targets on this machine (needs root): network,
// mount, UTS and PID namespaces with their own /nix store, nix-daemon and
// OpenSSH sshd, on the bridge subnet 10.77.0.0/24; with -systemd some boot
// systemd as PID 1 (systemd-nspawn). State lives in .lab/.
type Lab mg.Namespace

func labDir(e *env) string { return filepath.Join(e.root, ".lab") }

// openLab finds the repository and the lab that is up in its .lab/.
func openLab(ctx context.Context) (*env, *lab.Lab, error) {
	e, err := newEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	l, err := lab.Open(labDir(e), run.Exec{})
	if err != nil {
		return e, nil, err
	}
	return e, l, nil
}

// Up starts the lab (idempotent): the example fleet's names first (lab-server,
// dev-workstation, media-center, then node-4, ...), plus two hosts that are not
// in the inventory ("stranger" with sshd, "silent" without). Writes
// .lab/inventory.json, .lab/known_hosts and the client key .lab/id_ed25519,
// which deploy tasks use with -lab. -systemd=N (the first N targets) or
// -systemd=name,... makes targets boot systemd as PID 1 (systemd-nspawn, a
// Debian root built once with mmdebstrap), as real NixOS machines do:
// deployments then activate in transient systemd units and check
// `systemctl is-system-running`. -systemd= (empty) turns it off again.
func (Lab) Up(ctx context.Context,
	n *int, // number of targets (default 3)
	subnet *string, // lab subnet (default 10.77.0.0/24)
	name *string, // prefix of the lab's namespaces and interfaces (default ncl), to run two labs side by side
	systemd *string, // targets that boot systemd: a number N (the first N) or names, e.g. -systemd=1 or -systemd=lab-server
) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	count := 3
	if n != nil {
		count = *n
	}
	if count < 1 {
		return fmt.Errorf("-n must be at least 1")
	}
	inv, err := inventory.LoadRepo(e.root)
	if err != nil {
		return err
	}
	cfg := lab.Config{StateDir: labDir(e), Targets: lab.DefaultTargets(inv.Names(), count), Extras: true,
		Notice: func(msg string) { e.out.Linef("lab: %s", msg) }}
	if subnet != nil {
		cfg.Subnet = *subnet
	}
	if name != nil {
		cfg.Name = *name
	}
	if systemd != nil {
		if cfg.Systemd, err = systemdHosts(*systemd, cfg.Targets); err != nil {
			return err
		}
	}
	if prev, err := lab.Open(labDir(e), run.Exec{}); err == nil {
		// Keep the running lab's name and subnet (and systemd hosts unless -systemd says).
		c := prev.Config()
		if (subnet != nil && *subnet != c.Subnet) || (name != nil && *name != c.Name) {
			return fmt.Errorf("the lab %s is up on %s: run mage lab:down before changing its name or subnet", c.Name, c.Subnet)
		}
		cfg.Name, cfg.Subnet = c.Name, c.Subnet
		if systemd == nil {
			for _, h := range c.Systemd {
				if slices.Contains(cfg.Targets, h) {
					cfg.Systemd = append(cfg.Systemd, h)
				}
			}
		}
	}
	l, err := lab.New(cfg, run.Exec{})
	if err != nil {
		return err
	}
	if len(cfg.Systemd) > 0 {
		e.out.Linef("lab: starting %d targets (%d with systemd: %s) and 2 extra hosts", count, len(cfg.Systemd), strings.Join(cfg.Systemd, ", "))
	} else {
		e.out.Linef("lab: starting %d targets and 2 extra hosts", count)
	}
	if err := l.Up(ctx); err != nil {
		return err
	}
	if err := printLabStatus(ctx, e, l); err != nil {
		return err
	}
	e.out.Linef("lab: up. These are SIMULATED targets on this machine. Deploy to them with -lab, e.g. `mage deploy lab-server - -lab`")
	return nil
}

// systemdHosts reads -systemd: a count (the first N targets) or target names.
func systemdHosts(v string, targets []string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 || n > len(targets) {
			return nil, fmt.Errorf("-systemd=%d: the lab has %d targets (-n)", n, len(targets))
		}
		return append([]string(nil), targets[:n]...), nil
	}
	var out []string
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(targets, name) {
			return nil, fmt.Errorf("-systemd: %q is not a lab target (targets: %s)", name, strings.Join(targets, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Root builds the Debian root file system that systemd lab hosts boot from
// (mmdebstrap: about 30 s and 300 MB, from the Debian mirror) unless it is
// already in the cache ($XDG_CACHE_HOME or ~/.cache, under nixos-config/lab),
// and prints its path. lab:up does this itself; run it ahead on machines whose
// tests run without network. -suite builds another Debian release's root (the
// default is this machine's).
func (Lab) Root(ctx context.Context,
	suite *string, // Debian release of the root, e.g. trixie (default: this machine's)
) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	cache, err := lab.DefaultRootCache()
	if err != nil {
		return err
	}
	s := lab.DebianSuite()
	if suite != nil {
		s = *suite
	}
	root, err := lab.EnsureSystemdRoot(ctx, e.runner, cache, s, func(msg string) { e.out.Linef("lab: %s", msg) })
	if err != nil {
		return err
	}
	e.out.Linef("lab: the root of systemd hosts is %s", root)
	return nil
}

// Down removes everything the lab created: namespaces, interfaces, processes
// (systemd hosts' containers and their cgroups too) and state files. Harmless
// when no lab is up. The cached root of systemd hosts stays.
func (Lab) Down(ctx context.Context) error {
	e, l, err := openLab(ctx)
	if e != nil && l == nil {
		if _, statErr := os.Stat(filepath.Join(labDir(e), "state.json")); statErr != nil {
			e.out.Linef("lab: nothing to remove (no lab is up in %s)", labDir(e))
			return nil
		}
	}
	if err != nil {
		return err
	}
	if err := l.Down(ctx); err != nil {
		return err
	}
	e.out.Linef("lab: down")
	return nil
}

// Status shows every lab host: address, role (with `systemctl
// is-system-running` for systemd hosts), whether sshd and nix-daemon are up,
// and its current system generation.
func (Lab) Status(ctx context.Context) error {
	e, l, err := openLab(ctx)
	if err != nil {
		return err
	}
	return printLabStatus(ctx, e, l)
}

func printLabStatus(ctx context.Context, e *env, l *lab.Lab) error {
	st, err := l.Status(ctx)
	if err != nil {
		return err
	}
	yes := func(b bool) string {
		if b {
			return e.out.OK("up")
		}
		return e.out.Bad("down")
	}
	var rows [][]string
	for _, s := range st {
		gen := "-"
		if s.Generation > 0 {
			gen = strconv.Itoa(s.Generation)
		}
		role := s.Role
		if role == lab.RoleTarget {
			role = "target"
		} else {
			role += " (not in inventory)"
		}
		if s.Kind == lab.KindSystemd {
			role += ", systemd " + s.SystemState
		}
		init := yes(s.Running)
		rows = append(rows, []string{s.Name, s.Address, role, init, yes(s.SSHD), yes(s.NixDaemon), gen})
	}
	return ui.Table(os.Stdout, []string{"HOST", "ADDRESS", "ROLE", "RUNNING", "SSHD", "NIX-DAEMON", "GENERATION"}, rows)
}

// Fault turns a fault knob on a lab host. Knobs: sshd-stop, sshd-start,
// rotate-hostkey, accept-hostkeys, sudo-password (read from standard input), sudo-none,
// sudo-nopasswd, sudo-uninstall, sudo-reinstall, untrust, trust, nixdaemon-stop, nixdaemon-start,
// disk=<MiB> (0 restores), rate=<Mbit/s>, loss=<percent>, link-down, link-up,
// blackhole, unblackhole, clear (rate and loss off).
func (Lab) Fault(ctx context.Context, host, knob string) error {
	e, l, err := openLab(ctx)
	if err != nil {
		return err
	}
	if _, err := l.Host(host); err != nil {
		return err
	}
	key, val, _ := strings.Cut(knob, "=")
	num := func() (int, error) {
		v, err := strconv.Atoi(val)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("knob %s needs a non-negative number, e.g. %s=10", key, key)
		}
		return v, nil
	}
	switch key {
	case "sshd-stop":
		err = l.StopSSHD(ctx, host)
	case "sshd-start":
		err = l.StartSSHD(ctx, host)
	case "rotate-hostkey":
		err = l.RotateHostKey(ctx, host)
	case "accept-hostkeys":
		err = l.AcceptHostKeys()
	case "sudo-password":
		// The password comes from standard input, never from the command line.
		var pw string
		if pw, err = readSecret("lab sudo password for "+host+": ", nil); err == nil {
			err = l.RequireSudoPassword(ctx, host, pw)
		}
	case "sudo-none":
		err = l.RemoveSudo(ctx, host)
	case "sudo-nopasswd":
		err = l.PasswordlessSudo(ctx, host)
	case "sudo-uninstall":
		err = l.DisableSudoBinary(ctx, host, true)
	case "sudo-reinstall":
		err = l.DisableSudoBinary(ctx, host, false)
	case "untrust":
		err = l.TrustUser(ctx, host, false)
	case "trust":
		err = l.TrustUser(ctx, host, true)
	case "nixdaemon-stop":
		err = l.StopNixDaemon(ctx, host)
	case "nixdaemon-start":
		err = l.StartNixDaemon(ctx, host)
	case "disk":
		var v int
		if v, err = num(); err == nil {
			err = l.LimitDisk(ctx, host, v)
		}
	case "rate":
		var v int
		if v, err = num(); err == nil {
			err = l.Shape(ctx, host, lab.Link{RateMbit: v})
		}
	case "loss":
		var v int
		if v, err = num(); err == nil {
			err = l.Shape(ctx, host, lab.Link{LossPct: v})
		}
	case "clear":
		err = l.Shape(ctx, host, lab.Link{})
	case "link-down":
		err = l.SetLink(ctx, host, false)
	case "link-up":
		err = l.SetLink(ctx, host, true)
	case "blackhole":
		err = l.Blackhole(ctx, host, true)
	case "unblackhole":
		err = l.Blackhole(ctx, host, false)
	default:
		return fmt.Errorf("unknown knob %q: see mage -h lab:fault", knob)
	}
	if err != nil {
		return err
	}
	e.out.Linef("lab: %s on %s", key, host)
	return nil
}
