package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monibahmed/nixos-config/internal/gitx"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Deployer deploys the repository's systems to targets.
type Deployer struct {
	Root      string
	Runner    run.Runner
	Nix       nix.Nix
	Git       gitx.Git
	Connector Connector
	Report    Reporter
	Sudo      *Sudo
	// Hook is run after each target when it exists (see HookPath).
	Hook string
}

// Source is what a run deploys: the flake (work tree or commit) and the commit.
type Source struct {
	Flake  nix.Flake
	Commit string // full commit id; empty in a repository without commits
	Dirty  bool   // work tree with uncommitted changes (only with -allowdirty)
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
		return src, nil
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
	return src, nil
}

// Built is one system of Build.
type Built struct {
	Target      string
	Path        string
	ClosureSize int64
	Err         error
}

// Build builds the systems of the named targets in one nix build.
func (d *Deployer) Build(ctx context.Context, names []string, o Options) ([]Built, Source, error) {
	src, err := d.Resolve(ctx, o)
	if err != nil {
		return nil, src, err
	}
	b := d.startBuild(ctx, src.Flake, names)
	<-b.done
	out := make([]Built, len(names))
	for i, n := range names {
		r := b.results[n]
		out[i] = Built{Target: n, Path: r.path, ClosureSize: r.size}
		if r.err != nil {
			out[i].Err = r.err
		}
	}
	return out, src, nil
}

// Run deploys targets; per-target failures are in the results, the error
// is for problems that stop the whole run before any target is touched.
func (d *Deployer) Run(ctx context.Context, targets []inventory.Target, o Options) ([]Result, error) {
	if err := o.Normalize(); err != nil {
		return nil, err
	}
	for i := range targets {
		if o.User != "" {
			targets[i].User = o.User
		}
		if err := ValidateTarget(targets[i]); err != nil {
			return nil, err
		}
	}
	if len(targets) == 0 {
		return nil, errors.New("no targets selected")
	}
	src, err := d.Resolve(ctx, o)
	if err != nil {
		return nil, err
	}
	ctlDir, err := os.MkdirTemp("", "nixos-config-ssh-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(ctlDir)

	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}
	b := d.startBuild(ctx, src.Flake, names)

	results := make([]Result, len(targets))
	// Workers take targets in inventory order, at most o.Jobs at a time.
	queue := make(chan int, len(targets))
	for i := range targets {
		queue <- i
	}
	close(queue)
	var wg sync.WaitGroup
	var failed atomic.Bool
	skip := func(i int, cause string) {
		t := targets[i]
		results[i] = Result{Target: t.Name, Address: t.Address, Status: StatusSkipped,
			Err: &Failure{Target: t.Name, Stage: "start", Cause: cause, Remedy: "nothing changed on this target"}}
		d.Report.Finished(results[i])
		d.runHook(ctx, results[i], src)
	}
	workers := min(o.Jobs, len(targets))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range queue {
				switch {
				case ctx.Err() != nil:
					skip(i, "not started: interrupted")
				case o.FailFast && failed.Load():
					skip(i, "not started: another target failed and -failfast was given")
				default:
					r := d.one(ctx, targets[i], o, src, b, ctlDir)
					if r.Status != StatusOK {
						failed.Store(true)
					}
					results[i] = r
					d.Report.Finished(r)
					d.runHook(ctx, r, src)
				}
			}
		}()
	}
	wg.Wait()
	return results, nil
}

// ---- build -------------------------------------------------------------

type buildResult struct {
	path    string
	size    int64
	closure map[string]int64 // path -> NAR size
	err     *Failure
}

type buildState struct {
	done    chan struct{}
	results map[string]buildResult
}

func (b *buildState) wait(ctx context.Context, name string) (buildResult, error) {
	select {
	case <-b.done:
		return b.results[name], nil
	case <-ctx.Done():
		return buildResult{}, ctx.Err()
	}
}

// startBuild builds every system in one `nix build` (one evaluator for the
// fleet). When it fails, the failing targets are found from Nix's errors and
// the others are built again (from the cache) so they can still deploy.
func (d *Deployer) startBuild(ctx context.Context, f nix.Flake, names []string) *buildState {
	b := &buildState{done: make(chan struct{}), results: map[string]buildResult{}}
	go func() {
		defer close(b.done)
		defer func() {
			failed := 0
			for _, r := range b.results {
				if r.err != nil {
					failed++
				}
			}
			d.Report.BuildFinished(len(b.results)-failed, failed)
		}()
		remaining := append([]string(nil), names...)
		for attempt := 0; len(remaining) > 0; attempt++ {
			parser := &nix.LogParser{OnProgress: func(p nix.Progress) { d.Report.BuildProgress(p.BuildsDone, p.BuildsExpected) }}
			attrs := make([]string, len(remaining))
			for i, n := range remaining {
				attrs[i] = nix.Toplevel(n)
			}
			paths, err := d.Nix.Build(ctx, f, attrs, parser)
			if err == nil {
				// One path-info for every closure (not one per target).
				closures, _ := d.Nix.Closures(ctx, paths)
				for i, n := range remaining {
					r := buildResult{path: paths[i], closure: closures[paths[i]]}
					for _, size := range r.closure {
						r.size += size
					}
					b.results[n] = r
				}
				return
			}
			if ctx.Err() != nil {
				for _, n := range remaining {
					b.results[n] = buildResult{err: &Failure{Target: n, Stage: StageBuild, Cause: "interrupted", Remedy: "nothing changed on this target"}}
				}
				return
			}
			failed := attribute(parser, remaining, d.Root, err)
			if len(failed) == 0 && len(remaining) > 1 {
				// Nothing names a target: build them one by one to find out.
				for _, n := range remaining {
					p := &nix.LogParser{}
					if _, err := d.Nix.Build(ctx, f, []string{nix.Toplevel(n)}, p); err != nil {
						failed[n] = buildFailure(n, p, d.Root, err)
					}
				}
			}
			if len(failed) == 0 {
				failed[remaining[0]] = buildFailure(remaining[0], parser, d.Root, err)
			}
			var next []string
			for _, n := range remaining {
				if fl, ok := failed[n]; ok {
					b.results[n] = buildResult{err: fl}
				} else {
					next = append(next, n)
				}
			}
			remaining = next
		}
	}()
	return b
}

// attribute maps Nix's errors to the targets they concern.
func attribute(p *nix.LogParser, names []string, root string, err error) map[string]*Failure {
	failed := map[string]*Failure{}
	for _, e := range p.Errors() {
		rel := e.Rel(root)
		var hit []string
		switch {
		case strings.HasPrefix(rel.File, "targets/"):
			dir := strings.SplitN(strings.TrimPrefix(rel.File, "targets/"), "/", 2)[0]
			if dir == inventory.CommonDir {
				hit = names
			} else {
				hit = []string{dir}
			}
		case rel.File == "flake.nix":
			hit = names
		default:
			for _, n := range names {
				if strings.Contains(e.Message, "-nixos-system-"+n+"-") || strings.Contains(e.Message, `nixosConfigurations."`+n+`"`) || strings.Contains(e.Message, "nixosConfigurations."+n+".") {
					hit = append(hit, n)
				}
			}
		}
		for _, n := range hit {
			if !contains(names, n) {
				continue
			}
			if _, ok := failed[n]; !ok {
				failed[n] = failureFromNix(n, rel, p)
			}
		}
	}
	return failed
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func failureFromNix(name string, e *nix.Error, p *nix.LogParser) *Failure {
	if e.File != "" {
		return &Failure{Section: trouble.Eval, Target: name, Stage: StageBuild, Cause: "evaluation error: " + e.Error(),
			Remedy: "fix the configuration at that location (mage check shows it too)", Err: e}
	}
	f := &Failure{Section: trouble.Build, Target: name, Stage: StageBuild, Cause: "build failed: " + e.Message,
		Remedy: "see the builder's output below; fix the package or configuration and deploy again", Err: e}
	if i := strings.Index(e.Message, "/nix/store/"); i >= 0 {
		drv := e.Message[i:]
		if j := strings.IndexAny(drv, "' "); j >= 0 {
			drv = drv[:j]
		}
		f.Detail = p.BuildLog(drv)
	}
	return f
}

func buildFailure(name string, p *nix.LogParser, root string, err error) *Failure {
	errs := p.Errors()
	if len(errs) > 0 {
		return failureFromNix(name, errs[len(errs)-1].Rel(root), p)
	}
	if errors.Is(err, nix.ErrNotInstalled) {
		return &Failure{Section: trouble.NixVersion, Target: name, Stage: StageBuild, Cause: "nix is not installed on this machine", Remedy: "install Nix", Err: err}
	}
	return &Failure{Section: trouble.Build, Target: name, Stage: StageBuild, Cause: "nix build failed: " + err.Error(), Remedy: "run the build by hand with `mage build:host " + name + "` to see the whole output", Err: err}
}

// ---- per target ----------------------------------------------------------

type targetFacts struct {
	hostname string
	sudo     string // ok, password, missing
	nix      bool
	free     int64 // bytes free on /nix
	systemd  bool
	lab      bool
	current  string
	profile  string // link name of the current generation, system-N-link
	// profilePath is the store path of the current generation.
	profilePath string
}

const preflightScript = `echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
if command -v sudo >/dev/null 2>&1; then
	sudo -n true >/dev/null 2>&1
	case $? in
	0) echo sudo=ok ;;
	126 | 127) echo sudo=missing ;; # present but not executable for this user
	*) echo sudo=password ;;
	esac
else
	echo sudo=missing
fi
if command -v nix-env >/dev/null 2>&1 && command -v nix-store >/dev/null 2>&1; then echo nix=ok; else echo nix=missing; fi
echo "free=$(df -Pk /nix/store 2>/dev/null | awk 'NR==2 {print $4}')"
if [ -d /run/systemd/system ]; then echo systemd=yes; else echo systemd=no; fi
if [ -e /var/lib/lab/sshd_config ]; then echo lab=yes; else echo lab=no; fi
echo "current=$(readlink /run/current-system 2>/dev/null)"
echo "profile=$(readlink /nix/var/nix/profiles/system 2>/dev/null)"
echo "profilepath=$(readlink -f /nix/var/nix/profiles/system 2>/dev/null)"
`

func parseFacts(out string) targetFacts {
	var f targetFacts
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "hostname":
			f.hostname = strings.TrimSpace(v)
		case "sudo":
			f.sudo = v
		case "nix":
			f.nix = v == "ok"
		case "free":
			kb, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			f.free = kb * 1024
		case "systemd":
			f.systemd = v == "yes"
		case "lab":
			f.lab = v == "yes"
		case "current":
			f.current = v
		case "profile":
			f.profile = v
		case "profilepath":
			f.profilePath = v
		}
	}
	return f
}

// session is a target's shell plus how to run privileged commands on it.
type session struct {
	sh       Shell
	password string // empty: passwordless sudo
}

func (s *session) sudo(ctx context.Context, args ...string) (sshx.Output, error) {
	return s.sudoInput(ctx, "", args...)
}

// sudoInput runs a privileged command with input. The password, when sudo
// needs one, goes first on standard input (sudo -S reads exactly one line).
func (s *session) sudoInput(ctx context.Context, input string, args ...string) (sshx.Output, error) {
	cmd, prefix := s.sudoCommand(args...)
	var stdin io.Reader
	if prefix+input != "" {
		stdin = strings.NewReader(prefix + input)
	}
	return s.sh.Run(ctx, cmd, stdin)
}

// sudoCommand returns the command line and what must precede the command's
// own input on standard input.
func (s *session) sudoCommand(args ...string) (string, string) {
	if s.password == "" {
		return "sudo -n -- " + run.ShellJoin(args...), ""
	}
	return "sudo -S -p '' -- " + run.ShellJoin(args...), s.password + "\n"
}

func (d *Deployer) connect(ctx context.Context, t inventory.Target) (Shell, error) {
	if IsLocal(t.Address) {
		return LocalShell{Runner: d.Runner}, nil
	}
	return d.Connector.Connect(ctx, t)
}

// sectionOf maps connection failures to the troubleshooting guide.
func sectionOf(k sshx.Kind) string {
	switch k {
	case sshx.KindUnknownHost, sshx.KindChangedHost:
		return trouble.HostKeys
	case sshx.KindAuth:
		return trouble.Auth
	}
	return trouble.Network
}

func connectFailure(t inventory.Target, stage string, err error) *Failure {
	var se *sshx.Error
	if errors.As(err, &se) {
		return &Failure{Target: t.Name, Stage: stage, Cause: se.Cause, Remedy: se.Remedy, Section: sectionOf(se.Kind), Err: err}
	}
	return &Failure{Section: trouble.Network, Target: t.Name, Stage: stage, Cause: err.Error(), Remedy: "check the address and that sshd runs on the target", Err: err}
}

func (d *Deployer) one(ctx context.Context, t inventory.Target, o Options, src Source, b *buildState, ctlDir string) (res Result) {
	start := time.Now()
	res = Result{Target: t.Name, Address: t.Address}
	defer func() {
		res.Duration = time.Since(start)
		if res.Status == "" {
			res.Status = StatusOK
			if res.Err != nil {
				res.Status = StatusFailed
				var f *Failure
				if errors.As(res.Err, &f) && f.Cause == "interrupted" {
					res.Status = StatusInterrupted
				}
			}
		}
	}()
	fail := func(f *Failure) Result {
		f.Target = t.Name
		res.Err = f
		return res
	}
	interrupted := func(stage string) Result {
		return fail(&Failure{Stage: stage, Cause: "interrupted", Remedy: "stopped before activation: nothing changed on this target"})
	}

	// 1. Preflight.
	d.Report.Stage(t.Name, StagePreflight)
	sess, facts, f := d.open(ctx, t, o)
	if f != nil {
		if ctx.Err() != nil {
			return interrupted(StagePreflight)
		}
		return fail(f)
	}
	defer sess.sh.Close()
	lk, f := d.lock(ctx, sess, t, o, lockInfo(src.Commit, src.Dirty))
	if f != nil {
		if ctx.Err() != nil {
			return interrupted(StagePreflight)
		}
		return fail(f)
	}
	defer lk.release()
	if o.Offline && !facts.lab {
		return fail(&Failure{Section: trouble.TargetSetup, Stage: StagePreflight,
			Cause:  "refusing to activate a test-double system (built offline) on a machine that is not a lab host",
			Remedy: "deploy real systems with Nix >= 2.18 and without -offline/-lab"})
	}

	// 2. Build (shared with the other targets of the run).
	d.Report.Stage(t.Name, StageBuild)
	br, err := b.wait(ctx, t.Name)
	if err != nil {
		return interrupted(StageBuild)
	}
	if br.err != nil {
		return fail(br.err)
	}
	res.System = br.path

	// 3. Copy what the target lacks.
	if !IsLocal(t.Address) {
		d.Report.Stage(t.Name, StageCopy)
		missing, bytes, err := d.missing(ctx, sess, facts, br)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(StageCopy)
			}
			return fail(nixRemoteFailure(StageCopy, err))
		}
		// Room for the NAR plus the database: 10% and 64 MiB of margin.
		if need := bytes + bytes/10 + 64<<20; len(missing) > 0 && facts.free > 0 && need > facts.free {
			return fail(&Failure{Section: trouble.DiskSpace, Stage: StageCopy,
				Cause:  fmt.Sprintf("not enough disk space on the target's /nix: the copy needs about %s, %s are free", HumanBytes(need), HumanBytes(facts.free)),
				Remedy: "free space on the target (sudo nix-collect-garbage --delete-older-than 30d) or enlarge its disk"})
		}
		if len(missing) > 0 {
			err := d.copy(ctx, t, o, br.path, missing, bytes, ctlDir)
			if err != nil && err.retry && ctx.Err() == nil {
				// Transient trouble (network, or paths that appeared meanwhile,
				// which confuses Nix 2.8's daemon): once more, from scratch.
				d.Report.Note(t.Name, "copy failed ("+err.Cause+"), trying once more")
				err = d.copy(ctx, t, o, br.path, missing, bytes, ctlDir)
			}
			if err != nil {
				if ctx.Err() != nil {
					return interrupted(StageCopy)
				}
				return fail(err.Failure)
			}
		}
		res.Copied, res.Bytes = len(missing), bytes
	}
	if ctx.Err() != nil {
		return interrupted(StageCopy)
	}

	// 4. Activate. Once started, an activation is not interrupted: a half
	// switched system is worse than waiting for it.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Minute)
	defer cancel()
	out := d.activateAndCheck(actx, sess, t, facts, br.path, o, src)
	res.Generation = out.generation
	if out.rolledBackTo >= 0 && out.failure != nil {
		res.Status = StatusRolledBack
	}
	if out.failure != nil {
		return fail(out.failure)
	}
	return res
}

type activation struct {
	generation   int
	rolledBackTo int // -1: no rollback happened
	failure      *Failure
}

// activateAndCheck activates, verifies over a fresh connection, runs the
// health checks, records the deployment in the target's history and rolls
// back when any of it fails.
func (d *Deployer) activateAndCheck(ctx context.Context, sess *session, t inventory.Target, facts targetFacts, path string, o Options, src Source) activation {
	res := activation{rolledBackTo: -1}
	prev := previousOf(facts)
	token := uniqueID()
	history, _ := readHistory(ctx, sess.sh)
	entry := Entry{ID: token, Kind: KindDeploy, Path: path, Commit: src.Commit, Dirty: src.Dirty,
		Deployer: Identity(), Time: now(), Mode: o.Mode, Result: ResultActivated, SameSystemAs: sameSystemAs(history, path, src.Commit)}
	canRollBack := !o.NoRollback && (o.Mode == ModeTest && prev.current != "" || SetsProfile(o.Mode) && prev.generation > 0)

	d.Report.Stage(t.Name, StageActivate)
	// Re-activating the running system cannot cut SSH: no watchdog then.
	unchanged := prev.current == path && prev.path == path
	magic := o.Mode == ModeSwitch && !o.NoMagic && prev.generation > 0 && !unchanged
	if magic {
		if err := armWatchdog(ctx, sess, facts.systemd, token, o.ConfirmTimeout, prev); err != nil {
			res.failure = &Failure{Section: trouble.Rollbacks, Stage: StageActivate, Cause: "arming the rollback watchdog failed: " + err.Error(), Remedy: "check the target's /run, or deploy with -nomagic", Err: err}
			return res
		}
	}
	// rollback undoes the activation and records it; cause is why.
	rollback := func(s *session, stage, cause string, detail []string) activation {
		if magic {
			_ = confirm(ctx, s, token) // the deployer handles it; stop the watchdog
		}
		f := &Failure{Stage: stage, Cause: cause, Detail: detail, Section: trouble.Activation}
		if stage == StageHealth {
			f.Section = trouble.Health
		}
		if !canRollBack {
			f.Remedy = "no rollback: there is no previous generation (first deployment) or -norollback was given; fix the configuration and deploy again, or `mage rollback`"
			if o.NoRollback {
				f.Remedy = "left as it is because of -norollback: fix it and deploy again, or `mage rollback " + t.Name + " " + t.Address + "`"
			}
			entry.Result = ResultFailed
			if o.NoRollback {
				entry.Result = ResultActivated
				entry.Note = cause
			}
			_ = appendHistory(ctx, s, entry)
			res.failure = f
			return res
		}
		gen, err := restore(ctx, s, facts.systemd, o.Mode, prev)
		if err != nil {
			f.Remedy = "ROLLBACK FAILED too (" + err.Error() + "): reach the target (console or `mage rollback`) and select a working generation"
			entry.Result = ResultFailed
			_ = appendHistory(ctx, s, entry)
			res.failure = f
			return res
		}
		res.rolledBackTo = gen
		f.Section = trouble.Rollbacks
		f.Cause = fmt.Sprintf("%s; rolled back to generation %d", cause, gen)
		f.Remedy = "the previous system is active again; fix the configuration and deploy again"
		entry.Result, entry.RolledBackTo = ResultRolledBack, gen
		_ = appendHistory(ctx, s, entry,
			Entry{ID: token + "-rollback", Kind: KindRollback, Generation: gen, Path: prev.path, Deployer: Identity(), Time: now(), Mode: o.Mode, Result: ResultOK, Note: "automatic rollback: " + cause})
		res.generation = gen
		res.failure = f
		return res
	}

	gen, f := d.activate(ctx, sess, facts, path, o.Mode)
	entry.Generation = gen
	if f != nil {
		if f.Section == trouble.TargetSetup {
			// Nothing was activated.
			f.Target = t.Name
			res.failure = f
			if magic {
				_ = confirm(ctx, sess, token)
			}
			return res
		}
		return rollback(sess, StageActivate, f.Cause, f.Detail)
	}
	res.generation = entry.Generation
	if o.Mode == ModeDryActivate || o.Mode == ModeBoot {
		// Nothing runs differently: nothing to verify or check.
		if o.Mode == ModeBoot {
			entry.Result = ResultOK
			_ = appendHistory(ctx, sess, entry)
		}
		return res
	}
	_ = appendHistory(ctx, sess, entry)

	// 5. Verify over a fresh connection: this also proves that SSH still works.
	d.Report.Stage(t.Name, StageVerify)
	vsh, err := d.connect(ctx, t)
	if err != nil && magic {
		d.Report.Note(t.Name, fmt.Sprintf("cannot reach the target after the switch (%v); waiting for its own rollback (up to %v)", err, o.ConfirmTimeout))
		back, werr := d.waitForTarget(ctx, func(c context.Context) (Shell, error) { return d.connect(c, t) }, time.Now().Add(o.ConfirmTimeout+90*time.Second))
		if werr != nil {
			res.failure = &Failure{Section: trouble.Rollbacks, Stage: StageVerify, Cause: "the target has not answered over SSH since the switch: " + werr.Error(),
				Remedy: "its watchdog rolls it back after " + o.ConfirmTimeout.String() + "; if it stays unreachable, use the console and select the previous generation in the boot menu"}
			return res
		}
		defer back.Close()
		// Give a watchdog that is rolling back right now time to finish.
		for i := 0; i < 30 && !watchdogRolledBack(ctx, back, token); i++ {
			time.Sleep(time.Second)
		}
		if watchdogRolledBack(ctx, back, token) {
			res.rolledBackTo = prev.generation
			res.generation = prev.generation
			res.failure = &Failure{Section: trouble.Rollbacks, Stage: StageVerify,
				Cause:  fmt.Sprintf("the new configuration cut SSH (%s); the target rolled itself back to generation %d (magic rollback)", shortErr(err), prev.generation),
				Remedy: "check the configuration's SSH and network settings (services.openssh, networking, firewall) and deploy again"}
			return res
		}
		res.failure = &Failure{Section: trouble.Rollbacks, Stage: StageVerify, Cause: "SSH failed right after the switch (" + shortErr(err) + ") and the target did not roll back", Remedy: "check the target"}
		return res
	}
	if err != nil {
		return rollback(sess, StageVerify, "reconnecting after the switch failed: "+shortErr(err), nil)
	}
	defer vsh.Close()
	vsess := &session{sh: vsh, password: sess.password}
	if magic {
		if err := confirm(ctx, vsess, token); err != nil {
			return rollback(sess, StageVerify, "confirming the switch failed: "+err.Error(), nil)
		}
	}
	cur, _ := vsh.Run(ctx, "readlink /run/current-system", nil)
	if got := strings.TrimSpace(cur.Stdout); got != path {
		return rollback(vsess, StageVerify, fmt.Sprintf("/run/current-system is %q, not the deployed %s", got, path), nil)
	}

	// 6. Health checks.
	d.Report.Stage(t.Name, StageHealth)
	if err := d.healthChecks(ctx, vsh, t, facts.systemd); err != nil {
		return rollback(vsess, StageHealth, err.Error(), nil)
	}
	_ = appendHistory(ctx, vsess, Entry{ID: token, Result: ResultOK})
	return res
}

func shortErr(err error) string {
	var se *sshx.Error
	if errors.As(err, &se) {
		return se.Cause
	}
	return err.Error()
}

func uniqueID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

// open connects to a target and runs the preflight checks: who it is,
// whether sudo works (asking for the password when needed) and Nix is there.
func (d *Deployer) open(ctx context.Context, t inventory.Target, o Options) (*session, targetFacts, *Failure) {
	var facts targetFacts
	sh, err := d.connect(ctx, t)
	if err != nil {
		return nil, facts, connectFailure(t, StagePreflight, err)
	}
	out, err := sh.Run(ctx, preflightScript, nil)
	if err != nil {
		sh.Close()
		return nil, facts, &Failure{Section: trouble.TargetSetup, Stage: StagePreflight, Cause: "probing the target failed: " + err.Error(), Remedy: "check that the target runs a POSIX shell for " + t.User, Err: err}
	}
	facts = parseFacts(out.Stdout)
	fail := func(f *Failure) (*session, targetFacts, *Failure) {
		sh.Close()
		f.Target = t.Name
		return nil, facts, f
	}
	if facts.hostname != t.Name && facts.hostname != "nixos" && !o.Force {
		return fail(&Failure{Section: trouble.WrongMachine, Stage: StagePreflight,
			Cause:  fmt.Sprintf("%s answers as %q, not %q", t.Address, facts.hostname, t.Name),
			Remedy: "wrong address? check target.json or the address you gave; -force deploys anyway"})
	}
	if !facts.nix {
		return fail(&Failure{Section: trouble.TargetSetup, Stage: StagePreflight, Cause: "nix is not installed on the target (no nix-env/nix-store in PATH for " + t.User + ")",
			Remedy: "install NixOS on the target first (see the README, adding a target)"})
	}
	sess := &session{sh: sh}
	switch facts.sudo {
	case "missing":
		return fail(&Failure{Section: trouble.Sudo, Stage: StagePreflight, Cause: "sudo is not available to " + t.User + " on the target",
			Remedy: "enable it (security.sudo.enable = true) and put " + t.User + " in wheel"})
	case "password":
		pw, err := d.Sudo.Password(ctx)
		if err != nil {
			if errors.Is(err, ErrNoSudoPrompt) {
				return fail(&Failure{Section: trouble.Sudo, Stage: StagePreflight, Cause: "sudo on the target needs a password and there is no terminal to ask for it",
					Remedy: "run from a terminal with -asksudo (or pipe the password on standard input with -asksudo), or give " + t.User + " passwordless sudo (security.sudo.wheelNeedsPassword = false)"})
			}
			return fail(&Failure{Section: trouble.Sudo, Stage: StagePreflight, Cause: "no sudo password: " + err.Error(), Remedy: "run again and type the password"})
		}
		sess.password = pw
		if out, err := sess.sudo(ctx, "true"); err != nil {
			msg := strings.ToLower(out.Stderr + out.Stdout)
			switch {
			case strings.Contains(msg, "not in the sudoers") || strings.Contains(msg, "not allowed") || strings.Contains(msg, "may not run sudo"):
				return fail(&Failure{Section: trouble.Sudo, Stage: StagePreflight, Cause: t.User + " may not use sudo on the target",
					Remedy: "add " + t.User + " to wheel (users.users." + t.User + ".extraGroups) or a rule in security.sudo.extraRules"})
			default:
				d.Sudo.Forget()
				return fail(&Failure{Section: trouble.Sudo, Stage: StagePreflight, Cause: "sudo rejected the password",
					Remedy: "run again and type " + t.User + "'s password on the target"})
			}
		}
	}
	return sess, facts, nil
}

// lock takes the target's deploy lock, or says who holds it.
func (d *Deployer) lock(ctx context.Context, s *session, t inventory.Target, o Options, info string) (*lock, *Failure) {
	lk, err := acquireLock(ctx, s, t.Name, info, o.Wait, func(holder string) {
		d.Report.Note(t.Name, "waiting: "+t.Name+" is being deployed by "+holder)
	})
	if err != nil {
		var le *LockedError
		if errors.As(err, &le) {
			return nil, &Failure{Section: trouble.Locks, Stage: StagePreflight, Cause: le.Error(), Remedy: "wait for it to finish, or run again with -wait", Err: err}
		}
		return nil, &Failure{Section: trouble.Locks, Stage: StagePreflight, Cause: err.Error(), Remedy: "check that flock (util-linux) and sudo work on the target", Err: err}
	}
	return lk, nil
}

// missing asks the target which paths of the closure it lacks. A valid
// path implies a valid closure in Nix, so a system the target already runs
// or has as its profile needs nothing.
func (d *Deployer) missing(ctx context.Context, s *session, facts targetFacts, br buildResult) (map[string]int64, int64, error) {
	path := br.path
	if facts.current == path || facts.profilePath == path {
		return nil, 0, nil
	}
	size := br.closure
	if size == nil {
		size = map[string]int64{}
		closure, err := d.Nix.Closure(ctx, path)
		if err != nil {
			return nil, 0, err
		}
		for _, p := range closure {
			size[p.Path] = p.NarSize
		}
	}
	var list strings.Builder
	for p := range size {
		list.WriteString(p + "\n")
	}
	out, err := s.sh.Run(ctx, "xargs nix-store --check-validity --print-invalid", strings.NewReader(list.String()))
	if err != nil {
		return nil, 0, err
	}
	missing := map[string]int64{}
	var bytes int64
	for _, p := range strings.Fields(out.Stdout) {
		if n, ok := size[p]; ok {
			missing[p] = n
			bytes += n
		}
	}
	return missing, bytes, nil
}

func nixRemoteFailure(stage string, err error) *Failure {
	msg := err.Error()
	var ee *sshx.ExitError
	if errors.As(err, &ee) {
		msg = strings.TrimSpace(ee.Stderr + "\n" + ee.Stdout)
	}
	switch {
	case strings.Contains(msg, "cannot connect to socket") || strings.Contains(msg, "daemon-socket"):
		return &Failure{Section: trouble.TargetSetup, Stage: stage, Cause: "the target's nix-daemon is not running", Remedy: "start it on the target (systemctl start nix-daemon.socket)", Err: err}
	}
	return &Failure{Section: trouble.TargetSetup, Stage: stage, Cause: "querying the target's Nix store failed: " + strings.Join(lastLines(msg, 2), " | "), Remedy: "check Nix on the target", Err: err}
}

// sshOpts are the OpenSSH options for `nix copy` (NIX_SSHOPTS): the same
// host key checking as the deployer's own connections, and one shared
// connection per target.
func sshOpts(o Options, ctlDir string) string {
	opts := []string{
		"-o", "ControlMaster=auto", "-o", "ControlPath=" + ctlDir + "/%C", "-o", "ControlPersist=60",
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", fmt.Sprintf("ConnectTimeout=%d", int(o.ConnectTimeout.Seconds())),
	}
	if len(o.KnownHosts) > 0 {
		opts = append(opts, "-o", "UserKnownHostsFile="+o.KnownHosts[0])
	}
	for _, id := range o.Identities {
		opts = append(opts, "-i", id)
	}
	if len(o.Identities) > 0 {
		opts = append(opts, "-o", "IdentitiesOnly=yes")
	}
	return strings.Join(opts, " ")
}

// copyError is a failed copy, and whether trying again may help.
type copyError struct {
	*Failure
	retry bool
}

// copy sends the missing paths (with their sizes, for progress).
func (d *Deployer) copy(ctx context.Context, t inventory.Target, o Options, path string, sizes map[string]int64, total int64, ctlDir string) *copyError {
	d.Report.Progress(t.Name, 0, total)
	parser := &nix.LogParser{OnProgress: func(p nix.Progress) {
		var done int64
		for _, c := range p.CopiedPaths {
			done += sizes[c]
		}
		d.Report.Progress(t.Name, done, total)
	}}
	opts := sshOpts(o, ctlDir)
	err := d.Nix.Copy(ctx, path, nix.CopyOptions{To: "ssh-ng://" + t.User + "@" + t.Address, Substitute: o.Substitute, SSHOpts: opts}, parser)
	// Close the shared connection now rather than after ControlPersist.
	_ = d.Runner.Run(context.WithoutCancel(ctx), run.Cmd{Name: "ssh", Args: append(strings.Fields(opts), "-O", "exit", t.User+"@"+t.Address)})
	if err == nil {
		d.Report.Progress(t.Name, total, total)
		return nil
	}
	var text []string
	for _, e := range parser.Errors() {
		text = append(text, e.Message)
	}
	text = append(text, parser.Plain()...)
	all := strings.Join(text, "\n")
	switch {
	case strings.Contains(all, "lacks a valid signature"):
		return &copyError{Failure: &Failure{Section: trouble.TrustedUsers, Stage: StageCopy, Cause: "the target's Nix refuses unsigned paths from " + t.User,
			Remedy: "make " + t.User + " a trusted user on the target: nix.settings.trusted-users = [ \"root\" \"@wheel\" ] (targets/common/base.nix), deployed once by hand with nixos-rebuild", Err: err}}
	case strings.Contains(strings.ToLower(all), "no space left on device"):
		return &copyError{Failure: &Failure{Section: trouble.DiskSpace, Stage: StageCopy, Cause: "the target ran out of disk space during the copy",
			Remedy: "free space on the target (sudo nix-collect-garbage --delete-older-than 30d) or enlarge its disk", Err: err}}
	case strings.Contains(all, "Host key verification failed"):
		return &copyError{Failure: &Failure{Section: trouble.HostKeys, Stage: StageCopy, Cause: "OpenSSH (used by nix copy) does not accept the target's host key",
			Remedy: "make sure the key is in the known_hosts file OpenSSH reads (~/.ssh/known_hosts)", Err: err}}
	}
	detail := lastLines(all, 3)
	return &copyError{Failure: &Failure{Section: trouble.Network, Stage: StageCopy, Cause: "nix copy failed: " + strings.Join(detail, " | "), Remedy: "check the network and the target's disk and Nix", Err: err}, retry: true}
}

func uniqueUnit() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "nixos-config-switch-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b)
}

// activate follows nixos-rebuild: check the system, set the profile, run
// switch-to-configuration (under systemd-run where there is systemd, so that
// it survives the SSH connection dropping).
// activateScript runs on the target as root, in one round trip: check that
// the path is a NixOS system, set the profile (switch/boot), run
// switch-to-configuration (its command line follows the four arguments),
// and print the resulting profile generation. Distinct exit statuses tell
// the steps apart.
const activateScript = `p=$1 setprofile=$2
shift 2
if [ ! -f "$p/nixos-version" ]; then
	echo "$p has no nixos-version" >&2
	exit 90
fi
if [ "$setprofile" = 1 ]; then
	nix-env -p /nix/var/nix/profiles/system --set "$p" || exit 91
fi
"$@"
rc=$?
echo "nixos-config-profile=$(readlink /nix/var/nix/profiles/system)"
exit $rc
`

// activate follows nixos-rebuild: check the system, set the profile, run
// switch-to-configuration (under systemd-run where there is systemd, so that
// it survives the SSH connection dropping). It returns the profile
// generation afterwards.
func (d *Deployer) activate(ctx context.Context, s *session, facts targetFacts, path, mode string) (int, *Failure) {
	// When the system already is the current generation, --set adds nothing.
	setProfile := "0"
	if SetsProfile(mode) && facts.profilePath != path {
		setProfile = "1"
	}
	args := append([]string{"sh", "-c", activateScript, "activate", path, setProfile}, switchCommand(facts.systemd, path, mode)...)
	out, err := s.sudo(ctx, args...)
	gen := 0
	var lines []string
	for _, l := range strings.Split(out.Stdout, "\n") {
		if v, ok := strings.CutPrefix(l, "nixos-config-profile="); ok {
			gen = generationOf(v)
			continue
		}
		lines = append(lines, l)
	}
	if err == nil {
		return gen, nil
	}
	var ee *sshx.ExitError
	code := -1
	if errors.As(err, &ee) {
		code = ee.Code
	}
	switch code {
	case 90:
		return gen, &Failure{Section: trouble.TargetSetup, Stage: StageActivate, Cause: path + " is not a NixOS system (no nixos-version)", Remedy: "deploy a nixosConfiguration's system.build.toplevel", Err: err}
	case 91:
		return gen, &Failure{Section: trouble.TargetSetup, Stage: StageActivate, Cause: "setting the system profile failed: " + strings.Join(lastLines(out.Stderr, 2), " | "), Remedy: "check the target's disk and Nix", Err: err}
	}
	return gen, &Failure{Section: trouble.Activation, Stage: StageActivate,
		Cause:  fmt.Sprintf("switch-to-configuration %s exited with status %d", mode, code),
		Remedy: "the output is below; fix the configuration and deploy again",
		Detail: lastLines(strings.Join(lines, "\n")+"\n"+out.Stderr, 6), Err: err}
}

func generationOf(link string) int { return nix.GenerationOf(link) }
