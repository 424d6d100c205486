//go:build mage

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/monibahmed/nixos-config/internal/deploy"
	"github.com/monibahmed/nixos-config/internal/gitx"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// fleet is the inventory and SSH settings a task works with: the
// repository's, or the lab's (-lab).
type fleet struct {
	inv        *inventory.Inventory
	knownHosts []string
	identities []string
	lab        bool
}

// openFleet finds the repository and loads its fleet (or the lab's).
func openFleet(ctx context.Context, lab *bool) (*env, *fleet, error) {
	e, err := newEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	fl, err := loadFleet(e, lab)
	if err != nil {
		return nil, nil, err
	}
	return e, fl, nil
}

func loadFleet(e *env, lab *bool) (*fleet, error) {
	if lab != nil && *lab {
		fl, err := loadLabFleet(labDir(e))
		if err != nil {
			return nil, fmt.Errorf("%w: start the lab with mage lab:up", err)
		}
		return fl, nil
	}
	inv, err := inventory.LoadRepo(e.root)
	if err != nil {
		return nil, err
	}
	return &fleet{inv: inv}, nil
}

func on(b *bool) bool { return b != nil && *b }

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// deployer wires the deploy package to this machine: nix, git, SSH, output.
func newDeployer(e *env, f *fleet, reporter deploy.Reporter, timeout time.Duration) *deploy.Deployer {
	return &deploy.Deployer{
		Root:      e.root,
		Runner:    e.runner,
		Nix:       nix.Nix{Runner: e.runner},
		Git:       gitx.Git{Runner: e.runner, Dir: e.root},
		Connector: deploy.SSHConnector{KnownHosts: f.knownHosts, Identities: f.identities, Timeout: timeout},
		Report:    reporter,
		Sudo:      &deploy.Sudo{},
		Hook:      filepath.Join(e.root, deploy.HookPath),
	}
}

type deployFlags struct {
	mode, user, rev                                      *string
	allowdirty, substitute, asksudo, force, lab, offline *bool
	jobs                                                 *int
	timeout                                              *time.Duration
	norollback, nomagic, wait, failfast                  *bool
	confirmtimeout                                       *time.Duration
}

func (f deployFlags) options(fl *fleet) deploy.Options {
	o := deploy.Options{
		Mode: str(f.mode), User: str(f.user), Rev: str(f.rev),
		AllowDirty: on(f.allowdirty), Substitute: on(f.substitute), AskSudo: on(f.asksudo), Force: on(f.force),
		Offline:    on(f.offline) || fl.lab,
		KnownHosts: fl.knownHosts, Identities: fl.identities,
	}
	if f.jobs != nil {
		o.Jobs = *f.jobs
	}
	if f.timeout != nil {
		o.ConnectTimeout = *f.timeout
	}
	o.NoRollback, o.NoMagic, o.Wait, o.FailFast = on(f.norollback), on(f.nomagic), on(f.wait), on(f.failfast)
	if f.confirmtimeout != nil {
		o.ConfirmTimeout = *f.confirmtimeout
	}
	return o
}

// sudoPrompt reads the sudo password with hidden input from the terminal;
// nil when standard input is not a terminal.
func sudoPrompt(r deploy.Reporter) func(ctx context.Context) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil
	}
	return func(ctx context.Context) (string, error) {
		resume := r.Pause()
		defer resume()
		fmt.Fprint(os.Stderr, "\nsudo password for the targets (asked once, kept in memory for this run): ")
		pw, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", err
		}
		return string(pw), nil
	}
}

// askSudoNow implements -asksudo: from the terminal with hidden input, or
// the first line of standard input when it is not a terminal.
func askSudoNow(s *deploy.Sudo, r deploy.Reporter) error {
	if p := sudoPrompt(r); p != nil {
		pw, err := p(context.Background())
		if err != nil {
			return err
		}
		s.Set(pw)
		return nil
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return errors.New("-asksudo: no terminal and nothing on standard input to read the sudo password from")
	}
	s.Set(strings.TrimRight(line, "\r\n"))
	return nil
}

func runDeploy(ctx context.Context, e *env, fl *fleet, targets []inventory.Target, f deployFlags) error {
	o := f.options(fl)
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
	d := newDeployer(e, fl, reporter, o.ConnectTimeout)
	d.Sudo.Prompt = sudoPrompt(reporter)
	if o.AskSudo {
		if err := askSudoNow(d.Sudo, reporter); err != nil {
			if board != nil {
				board.Stop()
			}
			return err
		}
	}
	if o.Offline {
		e.out.Linef("deploy: building with the nixpkgs test double (offline): these systems can only be activated on lab hosts")
	}
	results, err := d.Run(ctx, targets, o)
	if board != nil {
		board.Stop()
	}
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
// nix, disk space, hostname), build, copy the closure, activate with
// switch-to-configuration, verify over a fresh connection.
func Deploy(ctx context.Context, name, address string,
	mode *string, // switch (default), boot, test or dry-activate
	user *string, // SSH user instead of the inventory's
	rev *string, // build this git commit/tag/branch instead of the work tree (git-based rollback)
	allowdirty *bool, // deploy a work tree with uncommitted changes
	substitute *bool, // let the target download paths from its own binary caches
	asksudo *bool, // ask for the sudo password before starting (reads standard input when it is not a terminal)
	force *bool, // deploy even when the machine's hostname is not the target's name
	lab *bool, // use the lab (.lab/: inventory, known_hosts, key) and the nixpkgs test double
	offline *bool, // build against the nixpkgs test double (only lab hosts accept such systems)
	timeout *time.Duration, // bound on the SSH connect and handshake (default 10s)
	norollback *bool, // keep a failed or unhealthy activation instead of rolling back
	nomagic *bool, // no magic rollback (the target's watchdog) for switch
	confirmtimeout *time.Duration, // how long the target waits for the deployer to reconnect before rolling back (default 60s)
	wait *bool, // wait while another deployer holds the target instead of failing
) error {
	// -user is applied by deploy.Options (for every target of the run).
	e, fl, t, err := resolveTarget(ctx, name, address, lab, nil)
	if err != nil {
		return err
	}
	if err := requireConfiguration(e, t.Name); err != nil {
		return err
	}
	return runDeploy(ctx, e, fl, []inventory.Target{t}, deployFlags{mode, user, rev, allowdirty, substitute, asksudo, force, lab, offline, nil, timeout, norollback, nomagic, wait, nil, confirmtimeout})
}

// DeployAll deploys every inventory target in parallel (at most -jobs at a
// time), building all systems in one nix build first. -on selects targets by
// name, glob or @tag, comma-separated: -on=lab-server,media-*,@lab.
func DeployAll(ctx context.Context,
	on *string, // targets to deploy: names, globs and @tags, comma-separated (default: all)
	jobs *int, // targets deployed at once (default 8)
	mode *string, // switch (default), boot, test or dry-activate
	user *string, // SSH user instead of the inventory's
	rev *string, // build this git commit/tag/branch instead of the work tree (git-based rollback)
	allowdirty *bool, // deploy a work tree with uncommitted changes
	substitute *bool, // let the targets download paths from their own binary caches
	asksudo *bool, // ask for the sudo password before starting
	force *bool, // deploy even when a machine's hostname is not its target's name
	lab *bool, // use the lab (.lab/) and the nixpkgs test double
	offline *bool, // build against the nixpkgs test double
	timeout *time.Duration, // bound on each SSH connect and handshake (default 10s)
	norollback *bool, // keep failed or unhealthy activations instead of rolling back
	nomagic *bool, // no magic rollback (the targets' watchdogs) for switch
	confirmtimeout *time.Duration, // how long targets wait for the deployer to reconnect before rolling back (default 60s)
	wait *bool, // wait while another deployer holds a target instead of failing it
	failfast *bool, // start no new target once one has failed
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
	return runDeploy(ctx, e, fl, targets, deployFlags{mode, user, rev, allowdirty, substitute, asksudo, force, lab, offline, jobs, timeout, norollback, nomagic, wait, failfast, confirmtimeout})
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
	d := newDeployer(e, fl, &deploy.PlainReporter{P: e.out}, 0)
	if o.Offline {
		e.out.Linef("build: against the nixpkgs test double (offline)")
	}
	built, src, err := d.Build(ctx, names, o)
	if err != nil {
		return err
	}
	commit := src.Commit
	if len(commit) > 12 {
		commit = commit[:12]
	}
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
	if err := ui.Table(os.Stdout, []string{"TARGET", "SYSTEM", "CLOSURE"}, rows); err != nil {
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
