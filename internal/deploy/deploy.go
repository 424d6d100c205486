package deploy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Nix is what a deployment needs from the nix command.
type Nix interface {
	Version(ctx context.Context) (nix.Version, error)
	Build(ctx context.Context, f nix.Flake, attrs []string, p *nix.LogParser) ([]string, error)
	Closures(ctx context.Context, paths []string) (map[string]map[string]int64, error)
	Copy(ctx context.Context, paths []string, o nix.CopyOptions, p *nix.LogParser) error
	EvalJSON(ctx context.Context, f nix.Flake, attr, apply string) (string, error)
	// Systems built elsewhere (remote.go, evalbuild.go).
	Derivations(ctx context.Context, f nix.Flake, names []string, p *nix.LogParser) (map[string]nix.Derivation, error)
	Realise(ctx context.Context, f nix.Flake, drvs []string, p *nix.LogParser) ([]string, error)
	Platforms(ctx context.Context) (nix.Platforms, error)
	StoreClosures(ctx context.Context, store string, paths []string) (map[string]map[string]int64, error)
}

// Git is what a deployment needs from git.
type Git interface {
	RevParse(ctx context.Context, rev string) (string, error)
	Dirty(ctx context.Context) (bool, error)
	Head(ctx context.Context) (string, error)
	IsAncestor(ctx context.Context, commit string) bool
}

// Deployer deploys the repository's systems to targets.
type Deployer struct {
	Root      string
	Runner    run.Runner
	Nix       Nix
	Git       Git
	Connector Connector
	Report    Reporter
	Sudo      *Sudo
	// Hook is run after each target when it exists (see HookPath).
	Hook string
	// Fleet is the whole inventory, where build hosts are found (they
	// need not be deployed in the run).
	Fleet *inventory.Inventory
}

// Source is what a run deploys: the flake (work tree or commit) and the commit.
type Source struct {
	Flake  nix.Flake
	Commit string // full commit id; empty in a repository without commits
	Dirty  bool   // work tree with uncommitted changes (only with -allowdirty)
	remove func()
}

// Close removes what Resolve created for the source (a link to the flake).
func (s Source) Close() {
	if s.remove != nil {
		s.remove()
	}
}

// Resolve decides what to build: a given revision, or the work tree (which
// must be clean unless AllowDirty).
func (d *Deployer) Resolve(ctx context.Context, o Options) (Source, error) {
	src := Source{Flake: nix.Flake{Dir: d.Root}}
	if o.Offline {
		src.Flake.Nixpkgs = filepath.Join(d.Root, nix.DoubleDir)
	} else {
		v, err := d.Nix.Version(ctx)
		if err != nil {
			return src, err
		}
		if !v.AtLeast(nix.MinVersionForNixpkgs) {
			return src, fmt.Errorf("nix %s is too old for the pinned nixpkgs, which needs Nix >= %s (nixpkgs lib/minver.nix): upgrade Nix on this machine; to deploy test-double systems to the lab use -lab or -offline (%s)", v, nix.MinVersionForNixpkgs, trouble.See(trouble.NixVersion))
		}
	}
	if o.Rev != "" {
		c, err := d.Git.RevParse(ctx, o.Rev)
		if err != nil {
			return src, err
		}
		src.Commit = c
		src.Flake.Rev = c
		return src, d.link(&src)
	}
	dirty, err := d.Git.Dirty(ctx)
	if err != nil {
		return src, err
	}
	if dirty && !o.AllowDirty {
		return src, errors.New("the work tree has uncommitted changes, so the deployed system would not correspond to a commit: commit them (git commit -a), or deploy anyway with -allowdirty (" + trouble.See(trouble.GitState) + ")")
	}
	src.Dirty = dirty
	if c, err := d.Git.Head(ctx); err == nil {
		src.Commit = c
	}
	if !src.Flake.PathUsable() {
		// Nix reads no work tree at such a path; a clean tree is its commit.
		if dirty || src.Commit == "" {
			return src, fmt.Errorf("Nix cannot read the work tree at %q as a flake (its path has a space or another character URLs escape): commit your changes (a clean tree is used at its commit), or move the repository to a path without such characters (%s)", d.Root, trouble.See(trouble.GitState))
		}
		src.Flake.Rev = src.Commit
	}
	return src, d.link(&src)
}

// link gives a repository Nix cannot name by its path a link it can.
func (d *Deployer) link(src *Source) error {
	if src.Flake.PathUsable() {
		return nil
	}
	alias, remove, err := nix.LinkFlake(d.Root)
	if err != nil {
		return err
	}
	src.Flake.Alias, src.remove = alias, remove
	return nil
}

// Run deploys targets; per-target failures are in the results, the error
// is for problems that stop the whole run before any target is touched.
//
// ctx ending (the first Ctrl-C) stops starting work: targets not yet
// activating stop and are reported as interrupted, while activations,
// their verification, health checks, rollback and history run to their
// end. o.Abandon (the second Ctrl-C) abandons those too; the targets'
// activation units then finish (or roll back) by themselves.
func (d *Deployer) Run(ctx context.Context, targets []inventory.Target, o Options) ([]Result, error) {
	if err := o.Normalize(); err != nil {
		return nil, err
	}
	if err := prepareTargets(targets, o); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, errors.New("no targets selected")
	}
	plan, err := d.plan(targets, o)
	if err != nil {
		return nil, err
	}
	src, err := d.Resolve(ctx, o)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	// The shared build serves the jobs only. Once they are over, a build
	// still running (every target failed before it needed its system) is
	// stopped and awaited: Nix then removes its temporary copy of the
	// flake instead of being killed with this process.
	bctx, stopBuild := context.WithCancel(ctx)
	b := d.startBuild(bctx, src.Flake, names, plan)
	defer func() { stopBuild(); <-b.done }()
	defer b.hosts.close()
	abandon, stop := abandonContext(ctx, o.Abandon)
	defer stop()

	results := make([]Result, len(targets))
	// Workers take targets in inventory order, at most o.Jobs at a time.
	queue := make(chan int, len(targets))
	for i := range targets {
		queue <- i
	}
	close(queue)
	var wg sync.WaitGroup
	var failed atomic.Bool
	workers := min(o.Jobs, len(targets))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range queue {
				var r Result
				switch {
				case ctx.Err() != nil:
					r = skipped(targets[i], "not started: interrupted")
				case o.FailFast && failed.Load():
					r = skipped(targets[i], "not started: another target failed and -failfast was given")
				default:
					r = d.deployOne(ctx, abandon, targets[i], o, src, b)
					if r.Status != StatusOK {
						failed.Store(true)
					}
				}
				results[i] = r
				d.Report.Finished(r)
				d.runHook(abandon, r, src)
			}
		}()
	}
	wg.Wait()
	return results, nil
}

func skipped(t inventory.Target, cause string) Result {
	return Result{Target: t.Name, Address: t.Address, Status: StatusSkipped,
		Err: &Failure{Target: t.Name, Stage: "start", Cause: cause, Remedy: "nothing changed on this target"}}
}

// abandonContext is not cancelled by ctx, only by abandon closing (or
// the returned cancel function).
func abandonContext(ctx context.Context, abandon <-chan struct{}) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	if abandon != nil {
		go func() {
			select {
			case <-abandon:
				cancel()
			case <-c.Done():
			}
		}()
	}
	return c, cancel
}

// ---- one target: the stage sequence ----------------------------------------

// stage is one step of a target's deployment. Steps before the activation
// stop at the first interrupt; from the activation on they run to their
// end (mustFinish) unless the run is abandoned.
type stage struct {
	name       Stage
	run        func(*job, context.Context) *Failure
	mustFinish bool
	// skip tells when the stage does not apply (e.g. no copy to localhost).
	skip func(*job) bool
}

// pipeline is the order of a deployment. finish (history, verdict,
// rollback, lock) always runs after it.
var pipeline = []stage{
	{StagePreflight, (*job).preflight, false, nil},
	{StageBuild, (*job).build, false, nil},
	{StageCopy, (*job).copy, false, (*job).skipCopy},
	{StageActivate, (*job).activate, true, nil},
	{StageVerify, (*job).verify, true, nil},
	{StageHealth, (*job).health, true, nil},
}

// job is one target's deployment in progress.
type job struct {
	d      *Deployer
	t      inventory.Target
	o      Options
	src    Source
	shared *buildState

	sess  *target.Session // the one connection of the deployment
	vsess *target.Session // verification connection (after the switch)
	facts target.Facts
	lock  *target.Lock
	// locking delivers the outcome of taking the lock (and reading the
	// state and history under it), which runs beside the build and copy;
	// lockTaken is closed once the lock is held; stopLocking gives up
	// waiting for a busy lock.
	locking     chan *Failure
	lockTaken   chan struct{}
	stopLocking context.CancelFunc
	lockFailed  *Failure
	state       target.State // read under the lock
	free        int64        // bytes free on the target's store before the copy (-1: unknown)
	history     []target.Entry
	built       buildResult
	act         *target.Activation
	sw          target.Switched
	entry       target.Entry // this deployment's history record
	magic       bool
	// reached: the deployer reached the target over a new connection and
	// so ended the unit's magic-rollback window (it no longer rolls back
	// by itself when the switch worked).
	reached bool
	// selfRolledBack: the target's unit rolled back by itself (magic rollback).
	selfRolledBack *target.Switched
	done           bool // nothing more to do after this stage (boot, dry-activate)
	res            Result
	// dropRoot removes the garbage collector root of a system built on a
	// build host or the target (nil: none).
	dropRoot func()
}

func (d *Deployer) deployOne(ctx, abandon context.Context, t inventory.Target, o Options, src Source, b *buildState) Result {
	start := time.Now()
	j := &job{d: d, t: t, o: o, src: src, shared: b, free: -1, res: Result{Target: t.Name, Address: t.Address, BuiltOn: b.plan[t.Name].String()}}
	var failed *Failure
	for _, st := range pipeline {
		if st.skip != nil && st.skip(j) {
			continue
		}
		c := ctx
		if st.mustFinish {
			c = abandon
		}
		if c.Err() != nil {
			failed = interrupted(stoppedBeforeActivation, nil)
			failed.Stage = st.name
			break
		}
		d.Report.Stage(t.Name, st.name)
		if f := st.run(j, c); f != nil {
			if f.Stage == "" {
				f.Stage = st.name
			}
			if c.Err() != nil && !st.mustFinish {
				f = interrupted(stoppedBeforeActivation, nil)
				f.Stage = st.name
			}
			failed = f
			break
		}
		if j.done {
			break
		}
	}
	j.finish(abandon, failed)
	j.res.Duration = time.Since(start)
	return j.res
}
