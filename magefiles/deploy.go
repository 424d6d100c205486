//go:build mage

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/deploy"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// deployFlags are the flags of deploy and deployAll, by name.
type deployFlags struct {
	mode, user, rev, trust, signingkey, buildon          *string
	allowdirty, substitute, asksudo, force, lab, offline *bool
	norollback, nomagic, wait, failfast                  *bool
	jobs, port                                           *int
	timeout, cmdtimeout, deadpeer, confirmtimeout        *time.Duration
	buildsilence                                         *time.Duration
}

// options turns the flags into deploy options; a flag given with a value
// it cannot take is an error (not silently the default).
func (f deployFlags) options(fl *fleet) (deploy.Options, error) {
	o := deploy.Options{
		Mode: str(f.mode), User: str(f.user), Rev: str(f.rev), BuildOn: str(f.buildon),
		AllowDirty: on(f.allowdirty), Substitute: on(f.substitute), AskSudo: on(f.asksudo), Force: on(f.force),
		Offline:    on(f.offline) || fl.lab,
		KnownHosts: fl.knownHosts, Identities: fl.identities,
		NoRollback: on(f.norollback), NoMagic: on(f.nomagic), Wait: on(f.wait), FailFast: on(f.failfast),
	}
	if f.jobs != nil {
		if *f.jobs < 1 {
			return o, fmt.Errorf("invalid -jobs=%d: at least 1", *f.jobs)
		}
		o.Jobs = *f.jobs
	}
	if f.port != nil {
		if *f.port < 1 || *f.port > 65535 {
			return o, fmt.Errorf("invalid -port=%d: 1 to 65535", *f.port)
		}
		o.Port = *f.port
	}
	for _, d := range []struct {
		name string
		flag *time.Duration
		dst  *time.Duration
	}{{"timeout", f.timeout, &o.ConnectTimeout}, {"cmdtimeout", f.cmdtimeout, &o.CommandTimeout},
		{"deadpeer", f.deadpeer, &o.DeadPeer}, {"confirmtimeout", f.confirmtimeout, &o.ConfirmTimeout},
		{"buildsilence", f.buildsilence, &o.BuildSilence}} {
		if d.flag == nil {
			continue
		}
		if *d.flag <= 0 {
			return o, fmt.Errorf("invalid -%s=%v: must be positive", d.name, *d.flag)
		}
		*d.dst = *d.flag
	}
	o.Trust, o.SigningKey = deploy.Trust(str(f.trust)), str(f.signingkey)
	return o, nil
}

func runDeploy(ctx context.Context, e *env, fl *fleet, targets []inventory.Target, f deployFlags) error {
	o, err := f.options(fl)
	if err != nil {
		return err
	}
	if err := o.Normalize(); err != nil {
		return err
	}
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	var reporter deploy.Reporter
	var board *ui.Board
	if e.out.TTY {
		board = ui.NewBoard(os.Stdout, e.out.Color)
		reporter = deploy.NewBoardReporter(board, e.out, names)
	} else {
		reporter = &deploy.PlainReporter{P: e.out}
	}
	stopBoard := func() {
		if board != nil {
			board.Stop()
			board = nil
		}
	}
	defer stopBoard()
	ctx, abandon, stop := interrupts(ctx, e.out, "no new targets start; running activations finish")
	defer stop()
	o.Abandon = abandon
	d := newDeployer(e, fl, reporter, o)
	d.Sudo.Prompt = sudoPrompt(reporter)
	if o.AskSudo {
		if err := askSudoNow(d.Sudo, reporter); err != nil {
			return err
		}
	}
	if o.Offline {
		e.out.Linef("deploy: building with the nixpkgs test double (offline): these systems can only be activated on lab hosts")
	}
	results, err := d.Run(ctx, targets, o)
	stopBoard()
	if err != nil {
		return err
	}
	fmt.Println()
	if err := deploy.WriteSummary(os.Stdout, e.out, results); err != nil {
		return err
	}
	failed := deploy.FailedNames(results)
	switch {
	case len(failed) == 0:
		return nil
	case len(results) == 1:
		return results[0].Err
	default:
		return fmt.Errorf("%d of %d targets failed: %s (causes and remedies above)", len(failed), len(results), strings.Join(failed, ", "))
	}
}

// Deploy deploys one target: mage deploy <name> <address>. The address may
// be "-" for the one in the inventory, or localhost/127.0.0.1 to activate on
// this machine with sudo (no SSH). Preflight (SSH with verified host key, sudo,
// nix, hostname, the target's lock), build, copy the closure over the same
// SSH connection, activate with switch-to-configuration, verify over a fresh
// connection, health checks; rolls back when any of it fails.
func Deploy(ctx context.Context, name, address string,
	mode *string, // switch (default), boot, test or dry-activate
	user *string, // SSH user instead of target.json's / ~/.ssh/config's
	port *int, // SSH port instead of target.json's / ~/.ssh/config's
	rev *string, // build this git commit/tag/branch instead of the work tree (git-based rollback)
	allowdirty *bool, // deploy a work tree with uncommitted changes
	substitute *bool, // let the target download paths from its own binary caches
	asksudo *bool, // ask for the sudo password before starting (reads standard input when it is not a terminal)
	force *bool, // deploy even when the machine's hostname is not the target's name
	lab *bool, // use the lab (.lab/: inventory, known_hosts, key) and the nixpkgs test double
	offline *bool, // build against the nixpkgs test double (only lab hosts accept such systems)
	timeout *time.Duration, // bound on the SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on each remote command and on a copy that moves nothing (default 60s)
	deadpeer *time.Duration, // a connection silent this long is dead: fail instead of hanging (default: ~/.ssh/config ServerAliveInterval x ServerAliveCountMax, else 15s)
	trust *string, // how the target accepts the copied paths: sudo (default: a root nix-daemon through sudo), signed (with -signingkey) or trusted (the deploy user is a trusted Nix user)
	signingkey *string, // secret key for -trust=signed (default ~/.config/nixos-config/signing-key.sec; see mage signingKey)
	norollback *bool, // keep a failed or unhealthy activation instead of rolling back
	nomagic *bool, // no magic rollback (the target's own rollback when it cannot be reached) for switch
	confirmtimeout *time.Duration, // how long the target waits for the deployer to reconnect before rolling back (default 60s)
	wait *bool, // wait while another deployer holds the target instead of failing
	buildon *string, // where to build: local (this machine, default), target, or a build host of the inventory; overrides target.json's "build"
	buildsilence *time.Duration, // a build on a build host or the target that prints nothing this long is stopped (default 30m)
) error {
	// -user and -port are applied by deploy.Options (for every target of the run).
	e, fl, t, err := resolveTarget(ctx, name, address, lab, nil)
	if err != nil {
		return err
	}
	if err := requireConfiguration(e, t.Name); err != nil {
		return err
	}
	return runDeploy(ctx, e, fl, []inventory.Target{t}, deployFlags{mode: mode, user: user, port: port, rev: rev, trust: trust, signingkey: signingkey,
		allowdirty: allowdirty, substitute: substitute, asksudo: asksudo, force: force, lab: lab, offline: offline,
		timeout: timeout, cmdtimeout: cmdtimeout, deadpeer: deadpeer, norollback: norollback, nomagic: nomagic,
		confirmtimeout: confirmtimeout, wait: wait, buildon: buildon, buildsilence: buildsilence})
}

// DeployAll deploys every inventory target in parallel (at most -jobs at a
// time), building all systems in one nix build first. -on selects targets by
// name, glob or @tag, comma-separated: -on=lab-server,media-*,@lab.
func DeployAll(ctx context.Context,
	on *string, // targets to deploy: names, globs and @tags, comma-separated (default: all)
	jobs *int, // targets deployed at once (default 8)
	mode *string, // switch (default), boot, test or dry-activate
	user *string, // SSH user instead of target.json's / ~/.ssh/config's
	port *int, // SSH port instead of target.json's / ~/.ssh/config's
	rev *string, // build this git commit/tag/branch instead of the work tree (git-based rollback)
	allowdirty *bool, // deploy a work tree with uncommitted changes
	substitute *bool, // let the targets download paths from their own binary caches
	asksudo *bool, // ask for the sudo password before starting
	force *bool, // deploy even when a machine's hostname is not its target's name
	lab *bool, // use the lab (.lab/) and the nixpkgs test double
	offline *bool, // build against the nixpkgs test double
	timeout *time.Duration, // bound on each SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on each remote command and on a copy that moves nothing (default 60s)
	deadpeer *time.Duration, // a connection silent this long is dead: fail instead of hanging (default: ~/.ssh/config ServerAliveInterval x ServerAliveCountMax, else 15s)
	trust *string, // how the targets accept the copied paths: sudo (default), signed or trusted
	signingkey *string, // secret key for -trust=signed (default ~/.config/nixos-config/signing-key.sec; see mage signingKey)
	norollback *bool, // keep failed or unhealthy activations instead of rolling back
	nomagic *bool, // no magic rollback (the targets' own rollback when they cannot be reached) for switch
	confirmtimeout *time.Duration, // how long targets wait for the deployer to reconnect before rolling back (default 60s)
	wait *bool, // wait while another deployer holds a target instead of failing it
	failfast *bool, // start no new target once one has failed
	buildon *string, // where to build: local (this machine, default), target (each target itself), or a build host of the inventory; overrides target.json's "build"
	buildsilence *time.Duration, // a build on a build host or a target that prints nothing this long is stopped (default 30m)
) error {
	e, fl, err := openFleet(ctx, lab)
	if err != nil {
		return err
	}
	targets, err := deploy.Select(fl.inv, str(on))
	if err != nil {
		return err
	}
	for _, t := range targets {
		if err := requireConfiguration(e, t.Name); err != nil {
			return err
		}
	}
	return runDeploy(ctx, e, fl, targets, deployFlags{mode: mode, user: user, port: port, rev: rev, trust: trust, signingkey: signingkey,
		allowdirty: allowdirty, substitute: substitute, asksudo: asksudo, force: force, lab: lab, offline: offline,
		jobs: jobs, timeout: timeout, cmdtimeout: cmdtimeout, deadpeer: deadpeer, norollback: norollback, nomagic: nomagic,
		confirmtimeout: confirmtimeout, wait: wait, failfast: failfast, buildon: buildon, buildsilence: buildsilence})
}

// requireConfiguration checks that targets/<name>/ exists, so that an
// inventory entry without a configuration fails before anything starts.
func requireConfiguration(e *env, name string) error {
	if _, err := os.Stat(filepath.Join(e.root, "targets", name, "configuration.nix")); err != nil {
		return fmt.Errorf("target %s has no configuration (targets/%s/configuration.nix): create it with mage new %s", name, name, name)
	}
	return nil
}

// Build builds every target's system in one nix build (one evaluator for
// the whole fleet) and prints each store path and closure size.
func Build(ctx context.Context,
	rev *string, // build this git commit instead of the work tree
	offline *bool, // build against the nixpkgs test double
	lab *bool, // build the lab's targets (with the test double)
) error {
	return buildTargets(ctx, nil, rev, offline, lab)
}

// Host builds one target's system: mage build:host <name>.
func (BUILD) Host(ctx context.Context, name string,
	rev *string, // build this git commit instead of the work tree
	offline *bool, // build against the nixpkgs test double
	lab *bool, // take the name from the lab's inventory (with the test double)
) error {
	return buildTargets(ctx, []string{name}, rev, offline, lab)
}

func buildTargets(ctx context.Context, only []string, rev *string, offline, lab *bool) error {
	e, fl, err := openFleet(ctx, lab)
	if err != nil {
		return err
	}
	names := fl.inv.Names()
	if only != nil {
		for _, n := range only {
			if _, err := fl.inv.Get(n); err != nil {
				return err
			}
		}
		names = only
	}
	for _, n := range names {
		if err := requireConfiguration(e, n); err != nil {
			return err
		}
	}
	o := deploy.Options{Rev: str(rev), Offline: on(offline) || fl.lab, AllowDirty: true}
	d := newDeployer(e, fl, &deploy.PlainReporter{P: e.out}, o)
	if o.Offline {
		e.out.Linef("build: against the nixpkgs test double (offline)")
	}
	built, src, err := d.Build(ctx, names, o)
	if err != nil {
		return err
	}
	commit := short(src.Commit)
	if src.Dirty {
		commit += " (dirty)"
	}
	var rows [][]string
	var errs []string
	for _, b := range built {
		if b.Err != nil {
			rows = append(rows, []string{b.Target, e.out.Bad("failed"), "-"})
			errs = append(errs, b.Err.Error())
			continue
		}
		rows = append(rows, []string{b.Target, b.Path, deploy.HumanBytes(b.ClosureSize)})
	}
	e.out.Linef("build: commit %s", commit)
	if err := ui.TableMax(os.Stdout, []string{"TARGET", "SYSTEM", "CLOSURE"}, rows, 200); err != nil { // store paths in full
		return err
	}
	if len(errs) > 0 {
		for _, m := range errs {
			fmt.Println(e.out.Bad("✗"), m)
		}
		return errors.New(errs[0])
	}
	return nil
}
