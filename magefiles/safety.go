//go:build mage

package main

import (
	"context"
	"encoding/json"
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
		t.User = u
	}
	return e, fl, t, nil
}

func rollbackTo(ctx context.Context, name, address string, generation int, asksudo, wait, lab *bool, user *string) error {
	e, fl, t, err := resolveTarget(ctx, name, address, lab, user)
	if err != nil {
		return err
	}
	o := deploy.Options{Wait: on(wait)}
	rep := &deploy.PlainReporter{P: e.out}
	d := newDeployer(e, fl, rep, 0)
	d.Sudo.Prompt = sudoPrompt(rep)
	if on(asksudo) {
		if err := askSudoNow(d.Sudo, rep); err != nil {
			return err
		}
	}
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
	user *string, // SSH user instead of the inventory's
) error {
	return rollbackTo(ctx, name, address, 0, asksudo, wait, lab, user)
}

// To switches a target to a given generation:
// mage rollback:to <name> <address> <generation>.
func (ROLLBACK) To(ctx context.Context, name, address string, generation int,
	asksudo *bool, // ask for the sudo password before starting
	wait *bool, // wait while a deployment holds the target
	lab *bool, // use the lab (.lab/)
	user *string, // SSH user instead of the inventory's
) error {
	if generation < 1 {
		return fmt.Errorf("invalid generation %d", generation)
	}
	return rollbackTo(ctx, name, address, generation, asksudo, wait, lab, user)
}

// Generations lists a target's system generations: number, date, current
// marker and, where this tool deployed it, the git commit (and whether the
// tree was dirty), the deployer (user@machine), the mode and the result.
func Generations(ctx context.Context, name, address string,
	lab *bool, // use the lab (.lab/)
	user *string, // SSH user instead of the inventory's
) error {
	e, fl, t, err := resolveTarget(ctx, name, address, lab, user)
	if err != nil {
		return err
	}
	d := newDeployer(e, fl, &deploy.PlainReporter{P: e.out}, 0)
	gens, err := d.Generations(ctx, t, deploy.Options{})
	if err != nil {
		return err
	}
	var rows [][]string
	for _, g := range gens {
		cur := ""
		if g.Current {
			cur = e.out.OK("current")
		}
		commit, deployer, mode, result := "-", "-", "-", "-"
		if g.Deploy != nil {
			commit = short(g.Deploy.Commit)
			if g.Deploy.Dirty {
				commit += " (dirty)"
			}
			if g.Deploy.SameSystemAs != "" {
				commit += " (same system as " + short(g.Deploy.SameSystemAs) + ")"
			}
			deployer, mode, result = g.Deploy.Deployer, g.Deploy.Mode, g.Deploy.Result
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

func short(c string) string {
	if c == "" {
		return "-"
	}
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// Status shows every inventory target at once: reachable or not, current
// generation, deployed commit and whether it matches what HEAD would deploy
// (up to date / behind / differs / unknown), last deployer and time, and
// whether a deployment is in progress.
func Status(ctx context.Context,
	json *bool, // machine-readable output
	lab *bool, // the lab's targets (with the nixpkgs test double)
	offline *bool, // evaluate HEAD with the nixpkgs test double
	timeout *time.Duration, // SSH connect timeout per target (default 5s)
) error {
	e, fl, err := openFleet(ctx, lab)
	if err != nil {
		return err
	}
	d := newDeployer(e, fl, &deploy.PlainReporter{P: e.out}, 5*time.Second)
	to := 5 * time.Second
	if timeout != nil {
		to = *timeout
		d.Connector = deploy.SSHConnector{KnownHosts: fl.knownHosts, Identities: fl.identities, Timeout: to}
	}
	names := fl.inv.Names()
	heads, herr := d.HeadSystems(ctx, names, deploy.Options{Offline: on(offline) || fl.lab})
	if herr != nil && !on(json) {
		e.out.Linef("status: cannot evaluate HEAD (%v): comparison unknown", herr)
	}
	st := d.Status(ctx, fl.inv.Targets, heads, func(c string) bool { return d.IsAncestor(ctx, c) }, to)
	if on(json) {
		enc := jsonEncoder()
		return enc.Encode(st)
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
		commit := short(s.Commit)
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
			last = s.Deployer + " " + s.DeployedAt
		}
		busy := "-"
		if s.InProgress != "" {
			busy = e.out.Warning("deploying: " + s.InProgress)
		}
		rows = append(rows, []string{s.Target, s.Address, reach, gen, commit, state, last, busy})
	}
	if err := ui.Table(os.Stdout, []string{"TARGET", "ADDRESS", "REACHABLE", "GEN", "COMMIT", "VS HEAD", "LAST DEPLOY", "IN PROGRESS"}, rows); err != nil {
		return err
	}
	for _, s := range st {
		if s.Error != "" {
			fmt.Printf("%s: %s\n", s.Target, strings.TrimSpace(s.Error))
		}
	}
	return nil
}

func jsonEncoder() *json.Encoder {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc
}
