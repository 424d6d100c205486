package deploy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Rollback switches a target to another generation (to = 0: the one before
// the current), as `nixos-rebuild switch --rollback` does: under the same
// locks as deployments, decided from facts read under the lock, run by an
// activation unit on the target, verified over a new connection, and
// recorded in the history at its start and end.
func (d *Deployer) Rollback(ctx context.Context, t inventory.Target, to int, o Options) (Result, error) {
	start := time.Now()
	res := Result{Target: t.Name, Address: t.Address}
	if err := o.Normalize(); err != nil {
		return res, err
	}
	if err := ValidateTarget(t); err != nil {
		return res, err
	}
	j := &job{d: d, t: t, o: o, res: res}
	defer j.close()
	pf := j.preflight(ctx)
	if pf == nil {
		pf = j.awaitLock()
	}
	if pf != nil {
		pf.Target, pf.Stage = t.Name, "rollback"
		return res, pf
	}
	fail := func(f *Failure) (Result, error) {
		f.Target = t.Name
		if f.Stage == "" {
			f.Stage = "rollback"
		}
		if f.Section == "" {
			f.Section = trouble.Rollbacks
		}
		return res, f
	}
	gens, err := j.sess.Generations(ctx)
	if err != nil {
		return fail(targetFailure(err))
	}
	cur := j.state.Generation
	var pick *target.Generation
	for i := range gens {
		g := &gens[i]
		if to > 0 && g.Number == to {
			pick = g
		}
		if to == 0 && g.Number < cur && (pick == nil || g.Number > pick.Number) {
			pick = g
		}
	}
	if pick == nil {
		var nums []string
		for _, g := range gens {
			nums = append(nums, strconv.Itoa(g.Number))
		}
		if to == 0 {
			return fail(&Failure{Cause: fmt.Sprintf("no generation before the current one (%d)", cur), Remedy: "see `mage generations`; existing: " + strings.Join(nums, ", ")})
		}
		return fail(&Failure{Cause: fmt.Sprintf("generation %d does not exist", to), Remedy: "pick one of " + strings.Join(nums, ", ") + " (mage generations)"})
	}
	// From here on the rollback runs to its end (first interrupt).
	actx, stop := abandonContext(ctx, o.Abandon)
	defer stop()
	token := target.NewID()
	entry := target.Entry{ID: token, Kind: target.KindRollback, Generation: pick.Number, Path: pick.Path, Deployer: Identity(), Time: target.Now(),
		Mode: ModeSwitch, Result: target.ResultActivating, Note: fmt.Sprintf("rollback from generation %d", cur)}
	if err := j.sess.AppendHistory(actx, entry); err != nil {
		return fail(targetFailure(err))
	}
	sw, log, err := j.sess.RollbackTo(actx, token, j.facts.Systemd, pick.Number, pick.Path)
	end := target.Entry{ID: token, Result: target.ResultOK}
	var f *Failure
	switch {
	case err != nil:
		f = targetFailure(err)
	case sw.Code != 0:
		f = &Failure{Cause: fmt.Sprintf("switch-to-configuration of generation %d failed (exit status %d)", pick.Number, sw.Code),
			Remedy: "the profile points at it, but it did not activate cleanly; see the output", Detail: log}
	}
	if f == nil {
		vs, verr := d.session(actx, t, o)
		if verr != nil {
			f = connectFailure(verr)
			f.Stage = StageVerify
		} else {
			j.vsess = vs
			st, serr := vs.ReadState(actx)
			if serr != nil {
				f = targetFailure(serr)
			} else if st.Current != pick.Path {
				f = &Failure{Stage: StageVerify, Cause: "/run/current-system is not generation " + strconv.Itoa(pick.Number) + " after the rollback", Remedy: "check the target"}
			}
		}
	}
	if f != nil {
		end.Result, end.Note = target.ResultFailed, f.Cause
	}
	if herr := j.live().AppendHistory(actx, end); herr != nil && f == nil {
		f = &Failure{Cause: "the rollback worked, but recording it in the target's history failed: " + errText(herr), Remedy: "check the target's /var/lib"}
	}
	if f != nil {
		return fail(f)
	}
	res.Status, res.Generation, res.System, res.Duration = StatusOK, pick.Number, pick.Path, time.Since(start)
	d.runHook(actx, res, Source{})
	return res, nil
}
