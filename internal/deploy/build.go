package deploy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

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
	defer src.Close()
	plan := map[string]place{}
	if d.Fleet != nil {
		for _, n := range names {
			if t, err := d.Fleet.Get(n); err == nil {
				plan[n] = place{kind: inventory.BuildLocal, system: t.System}
			}
		}
	}
	b := d.startBuild(ctx, src.Flake, names, plan)
	<-b.done
	out := make([]Built, len(names))
	for i, n := range names {
		r := b.results[n]
		out[i] = Built{Target: n, Path: r.path, ClosureSize: r.size}
		if r.err != nil {
			out[i].Err = r.err
			if r.err.Section == trouble.Foreign {
				// mage build builds here only: it has no -buildon, and
				// target.json's "build" is the deployment's business.
				f := *r.err
				f.Remedy = fmt.Sprintf("mage build builds on this machine only: run it on a machine whose Nix builds that system, or deploy (mage deploy %s builds where targets/%s/target.json's \"build\" or -buildon says)", n, n)
				out[i].Err = &f
			}
		}
	}
	return out, src, nil
}

type buildResult struct {
	path    string
	size    int64
	closure map[string]int64 // path -> NAR size
	err     *Failure
	// Systems built elsewhere: evaluated here, built by the target's job.
	remote bool
	drv    string
	system string
}

type buildState struct {
	done    chan struct{}
	results map[string]buildResult
	plan    map[string]place // where each target builds
	here    *nix.Platforms   // what this machine builds (nil: unknown)
	hosts   *buildHosts      // connections to build hosts, shared by the run
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
// When a target builds elsewhere, or declares a system this machine does
// not build, evalBuild evaluates the fleet instead (one `nix eval`) and
// builds here only what belongs here.
func (d *Deployer) startBuild(ctx context.Context, f nix.Flake, names []string, plan map[string]place) *buildState {
	b := &buildState{done: make(chan struct{}), results: map[string]buildResult{}, plan: plan, hosts: newBuildHosts(d)}
	go func() {
		defer close(b.done)
		defer func() {
			if ctx.Err() != nil {
				return // interrupted, or no longer needed: nothing to report
			}
			failed, remote := 0, 0
			for _, r := range b.results {
				switch {
				case r.err != nil:
					failed++
				case r.remote:
					remote++
				}
			}
			if remote > 0 {
				d.Report.Note(SharedBuild, fmt.Sprintf("%d evaluated here, to be built on their targets or build hosts", remote))
			}
			d.Report.BuildFinished(len(b.results)-failed-remote, failed)
		}()
		// What this machine builds is asked of Nix only when a system
		// to build here is not this machine's own (one process less).
		for _, n := range names {
			if p := plan[n]; !p.remote() && p.system != "" && p.system != nativeSystem() {
				b.here = d.localPlatforms(ctx)
				break
			}
		}
		if needsEvaluation(names, plan, b.here) {
			d.evalBuild(ctx, f, b, names)
			return
		}
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
					f := interrupted("nothing changed on this target", nil)
					f.Target, f.Stage = n, StageBuild
					b.results[n] = buildResult{err: f}
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
			for n, fl := range failed {
				if _, foreign := nix.PlatformMismatch(fl.Cause); foreign && b.here == nil {
					b.here = d.localPlatforms(ctx)
				}
				if pf := platformFailure(n, fl.Cause, b.here); pf != nil {
					failed[n] = pf
				}
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
	// No derivation named, no store problem, and Nix's words for a failed
	// evaluation (a failed assertion, a missing option value): nothing
	// was built.
	if e.Drv == "" && nix.ClassifyStoreError(e.Message) == nix.StoreUnknown && evalMessageRE.MatchString(e.Message) {
		return &Failure{Section: trouble.Eval, Target: name, Stage: StageBuild, Cause: "evaluation error: " + strings.TrimSuffix(e.Message, "."),
			Remedy: "fix the configuration (mage check shows the same error)", Err: e}
	}
	f := &Failure{Section: trouble.Build, Target: name, Stage: StageBuild, Cause: "build failed: " + strings.TrimSuffix(e.Message, "."),
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

// evalMessageRE: what Nix (2.8 to 2.34) says of evaluations that failed.
var evalMessageRE = regexp.MustCompile(`(?i)failed assertions|assertion .* failed|while evaluating|undefined variable|infinite recursion|attribute '.*' (missing|already defined)|option .* (does not exist|is used but not defined|has conflicting)|called without required argument|called with unexpected argument|cannot coerce|value is (a|an|null|true|false) .* while .* was expected|evaluation aborted`)

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

// build waits for the target's system from the shared build.
func (j *job) build(ctx context.Context) *Failure {
	br, err := j.shared.wait(ctx, j.t.Name)
	if err != nil {
		return interrupted(stoppedBeforeActivation, nil)
	}
	if br.err != nil {
		return br.err
	}
	j.built = br
	j.res.System = br.path
	if br.remote {
		// A build on the target or a build host runs under the lock.
		if f := j.awaitLock(); f != nil {
			return f
		}
		return j.remoteBuild(ctx)
	}
	return nil
}
