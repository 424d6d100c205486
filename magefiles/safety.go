//go:build mage

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/deploy"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// resolveTarget finds the repository, the fleet (-lab or not) and the
// target <name> at <address> ("-": the inventory's), with -user applied.
func resolveTarget(ctx context.Context, name, address string, lab *bool, user *string) (*env, *fleet, inventory.Target, error) {
	var t inventory.Target
	e, fl, err := openFleet(ctx, lab)
	if err != nil {
		return nil, nil, t, err
	}
	if t, err = fl.inv.Get(name); err != nil {
		return nil, nil, t, err
	}
	if address != "-" {
		if err := inventory.ValidateAddress(address); err != nil {
			return nil, nil, t, fmt.Errorf("%w: give an IP address or host name, or - for the inventory's (%s)", err, t.Address)
		}
		t.Address = address
	}
	if u := str(user); u != "" {
		t.User, t.UserSet = u, true
	}
	return e, fl, t, nil
}

// remoteFlags are the connection flags of rollback, generations and status.
type remoteFlags struct {
	asksudo, wait, lab  *bool
	user                *string
	port                *int
	timeout, cmdtimeout *time.Duration
}

func (f remoteFlags) options(fl *fleet) (deploy.Options, error) {
	return deployFlags{asksudo: f.asksudo, wait: f.wait, lab: f.lab, user: f.user, port: f.port, timeout: f.timeout, cmdtimeout: f.cmdtimeout}.options(fl)
}

// remoteDeployer is a deployer for one-off tasks, with the sudo password
// asked on a terminal (or read up front with -asksudo).
func remoteDeployer(e *env, fl *fleet, f remoteFlags) (*deploy.Deployer, deploy.Options, error) {
	o, err := f.options(fl)
	if err != nil {
		return nil, o, err
	}
	if err := o.Normalize(); err != nil {
		return nil, o, err
	}
	rep := &deploy.PlainReporter{P: e.out}
	d := newDeployer(e, fl, rep, o)
	d.Sudo.Prompt = sudoPrompt(rep)
	if on(f.asksudo) {
		if err := askSudoNow(d.Sudo, rep); err != nil {
			return nil, o, err
		}
	}
	return d, o, nil
}

// quickCommand is the default bound on each remote command of the tasks
// that only read a target (status, generations): no target holds them up
// for long.
const quickCommand = 20 * time.Second

func quick(cmdtimeout *time.Duration) *time.Duration {
	if cmdtimeout != nil {
		return cmdtimeout
	}
	d := quickCommand
	return &d
}

func rollbackTo(ctx context.Context, name, address string, generation int, f remoteFlags) error {
	e, fl, t, err := resolveTarget(ctx, name, address, f.lab, f.user)
	if err != nil {
		return err
	}
	d, o, err := remoteDeployer(e, fl, f)
	if err != nil {
		return err
	}
	ctx, abandon, stop := interrupts(ctx, e.out, "the rollback stops unless it is activating")
	defer stop()
	o.Abandon = abandon
	e.out.Linef("%s: rolling back", t.Name)
	r, err := d.Rollback(ctx, t, generation, o)
	if err != nil {
		return err
	}
	e.out.Linef("%s: %s: now on generation %d (%s)", t.Name, e.out.OK("rolled back"), r.Generation, r.System)
	return nil
}

// Rollback switches a target to its previous generation (profile rollback
// plus switch-to-configuration switch, as NixOS does), under the deploy lock,
// and records it in the target's history: mage rollback <name> <address>
// ("-" for the inventory's address).
func Rollback(ctx context.Context, name, address string,
	asksudo *bool, // ask for the sudo password before starting
	wait *bool, // wait while a deployment holds the target
	lab *bool, // use the lab (.lab/)
	user *string, // SSH user instead of target.json's / ~/.ssh/config's
	port *int, // SSH port instead of target.json's / ~/.ssh/config's
	timeout *time.Duration, // bound on the SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on each remote command (default 60s)
) error {
	return rollbackTo(ctx, name, address, 0, remoteFlags{asksudo: asksudo, wait: wait, lab: lab, user: user, port: port, timeout: timeout, cmdtimeout: cmdtimeout})
}

// To switches a target to a given generation:
// mage rollback:to <name> <address> <generation>.
func (ROLLBACK) To(ctx context.Context, name, address string, generation int,
	asksudo *bool, // ask for the sudo password before starting
	wait *bool, // wait while a deployment holds the target
	lab *bool, // use the lab (.lab/)
	user *string, // SSH user instead of target.json's / ~/.ssh/config's
	port *int, // SSH port instead of target.json's / ~/.ssh/config's
	timeout *time.Duration, // bound on the SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on each remote command (default 60s)
) error {
	if generation < 1 {
		return fmt.Errorf("invalid generation %d", generation)
	}
	return rollbackTo(ctx, name, address, generation, remoteFlags{asksudo: asksudo, wait: wait, lab: lab, user: user, port: port, timeout: timeout, cmdtimeout: cmdtimeout})
}

// Generations lists a target's system generations: number, date, current
// marker and, where this tool deployed it, the git commit (and whether the
// tree was dirty), the deployer (user@machine), the mode and the result.
func Generations(ctx context.Context, name, address string,
	asksudo *bool, // ask for the sudo password before starting (the history is root-only)
	lab *bool, // use the lab (.lab/)
	user *string, // SSH user instead of target.json's / ~/.ssh/config's
	port *int, // SSH port instead of target.json's / ~/.ssh/config's
	timeout *time.Duration, // bound on the SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on each remote command (default 20s)
) error {
	e, fl, t, err := resolveTarget(ctx, name, address, lab, user)
	if err != nil {
		return err
	}
	d, o, err := remoteDeployer(e, fl, remoteFlags{asksudo: asksudo, lab: lab, user: user, port: port, timeout: timeout, cmdtimeout: quick(cmdtimeout)})
	if err != nil {
		return err
	}
	gens, err := d.Generations(ctx, t, o)
	if err != nil && gens == nil {
		return err
	}
	if err != nil {
		e.out.Linef("%s: %v: generations shown without their history", t.Name, err)
	}
	var rows [][]string
	for _, g := range gens {
		cur := ""
		if g.Current {
			cur = e.out.OK("current")
		}
		commit, deployer, mode, result := "-", "-", "-", "-"
		if g.Deploy != nil {
			commit = ui.Sanitize(short(g.Deploy.Commit), 0)
			if g.Deploy.Dirty {
				commit += " (dirty)"
			}
			if g.Deploy.SameSystemAs != "" {
				commit += " (same system as " + ui.Sanitize(short(g.Deploy.SameSystemAs), 0) + ")"
			}
			deployer, mode, result = ui.Sanitize(g.Deploy.Deployer, 0), ui.Sanitize(g.Deploy.Mode, 0), ui.Sanitize(g.Deploy.Result, 0)
			if g.Deploy.RolledBackTo > 0 {
				result += " to " + strconv.Itoa(g.Deploy.RolledBackTo)
			}
		}
		rows = append(rows, []string{strconv.Itoa(g.Number), g.Date.Local().Format("2006-01-02 15:04:05"), cur, commit, deployer, mode, result})
	}
	if len(rows) == 0 {
		e.out.Linef("%s has no system generations yet", t.Name)
		return nil
	}
	return ui.Table(os.Stdout, []string{"GEN", "DATE", "", "COMMIT", "DEPLOYER", "MODE", "RESULT"}, rows)
}

// Status shows every inventory target at once: reachable or not, current
// generation, deployed commit and whether it matches what HEAD would deploy
// (up to date / behind / differs / unknown), last deployer and time, and
// whether a deployment is in progress.
func Status(ctx context.Context,
	JSON *bool, // machine-readable output (-json)
	asksudo *bool, // ask for the sudo password before starting (the history is root-only)
	lab *bool, // the lab's targets (with the nixpkgs test double)
	offline *bool, // evaluate HEAD with the nixpkgs test double
	timeout *time.Duration, // bound on each SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on each remote command (default 20s)
) error {
	e, fl, err := openFleet(ctx, lab)
	if err != nil {
		return err
	}
	d, o, err := remoteDeployer(e, fl, remoteFlags{asksudo: asksudo, lab: lab, timeout: timeout, cmdtimeout: quick(cmdtimeout)})
	if err != nil {
		return err
	}
	names := fl.inv.Names()
	heads, herr := d.HeadSystems(ctx, names, deploy.Options{Offline: on(offline) || fl.lab})
	if herr != nil && !on(JSON) {
		e.out.Linef("status: cannot evaluate HEAD (%v): comparison unknown", herr)
	}
	st := d.Status(ctx, fl.inv.Targets, heads, func(c string) bool { return d.IsAncestor(ctx, c) }, o)
	if on(JSON) {
		return writeJSON(st)
	}
	var rows [][]string
	for _, s := range st {
		reach := e.out.OK("yes")
		if !s.Reachable {
			reach = e.out.Bad("no")
		}
		gen := "-"
		if s.Generation > 0 {
			gen = strconv.Itoa(s.Generation)
		}
		commit := ui.Sanitize(short(s.Commit), 0)
		if s.Dirty {
			commit += "-dirty"
		}
		state := s.State
		switch state {
		case deploy.StateUpToDate:
			state = e.out.OK(state)
		case deploy.StateBehind, deploy.StateDiffers:
			state = e.out.Warning(state)
		}
		last := "-"
		if s.Deployer != "" {
			last = ui.Sanitize(s.Deployer+" "+s.DeployedAt, 0)
		}
		busy := "-"
		if s.InProgress != "" {
			busy = e.out.Warning("deploying: " + ui.Sanitize(s.InProgress, 0))
		}
		rows = append(rows, []string{s.Target, s.Address, reach, gen, commit, state, last, busy})
	}
	if err := ui.Table(os.Stdout, []string{"TARGET", "ADDRESS", "REACHABLE", "GEN", "COMMIT", "VS HEAD", "LAST DEPLOY", "IN PROGRESS"}, rows); err != nil {
		return err
	}
	for _, s := range st {
		if s.Error != "" {
			fmt.Printf("%s: %s\n", s.Target, ui.Sanitize(strings.TrimSpace(s.Error), 0))
		}
		if s.Note != "" {
			fmt.Printf("%s: %s\n", s.Target, s.Note)
		}
	}
	return nil
}
