package deploy

import (
	"context"

	"github.com/monibahmed/nixos-config/internal/nix"
)

// evalBuild is the shared build when some systems are built elsewhere (or
// may be of a platform this machine does not build): one `nix eval` of
// every system's derivation (still one evaluator for the fleet), then one
// `nix-store --realise` here of the systems that build here. A system this
// machine cannot build fails now, before anything is copied. Systems built
// elsewhere leave with their derivation: the target's job builds them
// there (remote.go).
func (d *Deployer) evalBuild(ctx context.Context, f nix.Flake, b *buildState, names []string) {
	ders, remaining := d.evaluate(ctx, f, b, names)
	var local []string
	for _, n := range remaining {
		dv := ders[n]
		switch {
		case b.plan[n].remote():
			b.results[n] = buildResult{path: dv.Out, drv: dv.Drv, system: dv.System, remote: true}
		case b.here != nil && !b.here.CanBuild(dv.System):
			b.results[n] = buildResult{err: foreignFailure(n, dv.System, *b.here)}
		default:
			local = append(local, n)
		}
	}
	d.realiseLocal(ctx, f, b, local, ders)
}

// evaluate evaluates the derivations of names in one `nix eval`; a target
// whose configuration does not evaluate is failed (found from Nix's
// errors, or by evaluating one by one) and the others evaluated again.
func (d *Deployer) evaluate(ctx context.Context, f nix.Flake, b *buildState, names []string) (map[string]nix.Derivation, []string) {
	remaining := append([]string(nil), names...)
	for len(remaining) > 0 {
		parser := &nix.LogParser{}
		ders, err := d.Nix.Derivations(ctx, f, remaining, parser)
		if err == nil {
			return ders, remaining
		}
		if ctx.Err() != nil {
			b.interrupted(remaining)
			return nil, nil
		}
		failed := attribute(parser, remaining, d.Root, err)
		if len(failed) == 0 && len(remaining) > 1 {
			for _, n := range remaining {
				p := &nix.LogParser{}
				if _, err := d.Nix.Derivations(ctx, f, []string{n}, p); err != nil {
					failed[n] = buildFailure(n, p, d.Root, err)
				}
			}
		}
		if len(failed) == 0 {
			failed[remaining[0]] = buildFailure(remaining[0], parser, d.Root, err)
		}
		remaining = b.fail(remaining, failed)
	}
	return nil, nil
}

// realiseLocal builds the evaluated systems of names here, in one
// nix-store --realise (--keep-going), with the same failure attribution as
// the shared nix build.
func (d *Deployer) realiseLocal(ctx context.Context, f nix.Flake, b *buildState, names []string, ders map[string]nix.Derivation) {
	remaining := names
	for len(remaining) > 0 {
		parser := &nix.LogParser{OnProgress: func(p nix.Progress) { d.Report.BuildProgress(p.BuildsDone, p.BuildsExpected) }}
		drvs := make([]string, len(remaining))
		for i, n := range remaining {
			drvs[i] = ders[n].Drv
		}
		_, err := d.Nix.Realise(ctx, f, drvs, parser)
		if err == nil {
			outs := make([]string, len(remaining))
			for i, n := range remaining {
				outs[i] = ders[n].Out
			}
			closures, _ := d.Nix.Closures(ctx, outs)
			for _, n := range remaining {
				r := buildResult{path: ders[n].Out, closure: closures[ders[n].Out], drv: ders[n].Drv, system: ders[n].System}
				for _, size := range r.closure {
					r.size += size
				}
				b.results[n] = r
			}
			return
		}
		if ctx.Err() != nil {
			b.interrupted(remaining)
			return
		}
		failed := attribute(parser, remaining, d.Root, err)
		if len(failed) == 0 && len(remaining) > 1 {
			for _, n := range remaining {
				p := &nix.LogParser{}
				if _, err := d.Nix.Realise(ctx, f, []string{ders[n].Drv}, p); err != nil {
					failed[n] = buildFailure(n, p, d.Root, err)
				}
			}
		}
		if len(failed) == 0 {
			failed[remaining[0]] = buildFailure(remaining[0], parser, d.Root, err)
		}
		for n, fl := range failed {
			if pf := platformFailure(n, fl.Cause, b.here); pf != nil {
				failed[n] = pf
			}
		}
		remaining = b.fail(remaining, failed)
	}
}

// fail records the failures and returns the names that did not fail.
func (b *buildState) fail(names []string, failed map[string]*Failure) []string {
	var next []string
	for _, n := range names {
		if fl, ok := failed[n]; ok {
			b.results[n] = buildResult{err: fl}
		} else {
			next = append(next, n)
		}
	}
	return next
}

// interrupted marks names as stopped by the first interrupt.
func (b *buildState) interrupted(names []string) {
	for _, n := range names {
		f := interrupted("nothing changed on this target", nil)
		f.Target, f.Stage = n, StageBuild
		b.results[n] = buildResult{err: f}
	}
}
