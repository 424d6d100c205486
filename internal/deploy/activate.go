package deploy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// activate starts the target's activation unit (which sets the profile and
// runs switch-to-configuration, holding the target's activation lock, and
// rolls back by itself when the deployer does not come back) and waits for
// the switch. The deployment's history record is written by the same root
// command that starts the unit: once at the start.
func (j *job) activate(ctx context.Context) *Failure {
	if f := j.awaitLock(); f != nil {
		return f
	}
	o, st, path := j.o, j.state, j.built.path
	unchanged := st.Current == path && st.Profile == path
	// Re-activating the running system cannot cut SSH: no magic rollback then.
	j.magic = o.Mode == ModeSwitch && !o.NoMagic && st.Generation > 0 && !unchanged
	token := target.NewID()
	j.entry = target.Entry{ID: token, Kind: target.KindDeploy, Path: path, Commit: j.src.Commit, Dirty: j.src.Dirty,
		Deployer: Identity(), Time: target.Now(), Mode: o.Mode, Result: target.ResultActivating,
		SameSystemAs: target.SameSystemAs(j.history, path, j.src.Commit)}
	plan := target.Plan{
		Token: token, Mode: o.Mode, Path: path, Prev: st, Systemd: j.facts.Systemd,
		SetProfile:   SetsProfile(o.Mode) && st.Profile != path,
		AutoRollback: j.canRollBack(),
		Verdict:      j.verdictWindow(),
		Start:        j.entry,
		RolledBackOK: target.Entry{ID: token, Result: target.ResultRolledBack, RolledBackTo: st.Generation,
			Note: "rolled back by the target itself: the deployer did not confirm the switch over a new SSH connection"},
		RolledBackOnVerdict: target.Entry{ID: token, Result: target.ResultRolledBack, RolledBackTo: st.Generation,
			Note: "rolled back on the deployer's verdict: the deployment failed"},
		RolledBackVanished: target.Entry{ID: token, Result: target.ResultRolledBack, RolledBackTo: st.Generation,
			Note: "rolled back by the target itself: the switch failed and the deployer disappeared"},
		RolledBackFailed: target.Entry{ID: token, Result: target.ResultFailed, Note: "the rollback failed"},
		Vanished:         target.Entry{ID: token, Result: target.ResultActivated, Note: "the deployer disappeared before verifying the switch; kept as it is"},
	}
	if j.magic {
		plan.Reach = o.ConfirmTimeout
	}
	act, err := j.sess.StartActivation(ctx, plan)
	if err != nil {
		return targetFailure(err)
	}
	j.act = act
	sw, err := j.waitSwitched(ctx)
	if err != nil {
		return targetFailure(err)
	}
	j.sw = sw
	j.entry.Generation = sw.Generation
	j.res.Generation = sw.Generation
	switch {
	case sw.Code == 90:
		return &Failure{Section: trouble.TargetSetup, Cause: path + " is not a NixOS system (no nixos-version)", Remedy: "deploy a nixosConfiguration's system.build.toplevel"}
	case sw.Code == 91:
		return &Failure{Section: trouble.TargetSetup, Cause: "setting the system profile failed", Remedy: "check the target's disk and Nix", Detail: act.Log(ctx, j.live(), 4)}
	case sw.Code != 0:
		return &Failure{Section: trouble.Activation, Cause: fmt.Sprintf("switch-to-configuration %s exited with status %d", o.Mode, sw.Code),
			Remedy: "the output is below; fix the configuration and deploy again", Detail: act.Log(ctx, j.live(), 6)}
	}
	if !Activates(o.Mode) {
		j.done = true // boot, dry-activate: nothing runs differently
	}
	return nil
}

// waitSwitched waits for the switch; when the connection drops meanwhile
// (the switch restarted the network or sshd), it reconnects and waits again.
func (j *job) waitSwitched(ctx context.Context) (target.Switched, error) {
	deadline := time.Now().Add(j.sess.Limits.Activation)
	for {
		sw, err := j.act.WaitSwitched(ctx, j.live())
		if err == nil || !connectionLost(err) || time.Now().After(deadline) {
			return sw, err
		}
		j.d.Report.Note(j.t.Name, "the connection dropped during the switch ("+errText(err)+"); reconnecting")
		s, werr := j.waitForTarget(ctx, deadline)
		if werr != nil {
			return sw, werr
		}
		j.replaceLive(s)
	}
}

// canRollBack: there is something to return to, and rolling back is wanted.
func (j *job) canRollBack() bool {
	if j.o.NoRollback {
		return false
	}
	switch j.o.Mode {
	case ModeTest:
		return j.state.Current != ""
	case ModeSwitch, ModeBoot:
		return j.state.Generation > 0
	}
	return false
}

// verdictWindow is how long the target's unit waits for the deployer's
// verdict after the switch: verification and every health check.
func (j *job) verdictWindow() time.Duration {
	d := 2*connectBound(j.sess.Conn, j.o) + 3*j.o.CommandTimeout + 90*time.Second + 2*time.Minute
	for _, h := range j.t.Health {
		d += time.Duration(max(h.Retries, 3)) * (h.TimeoutOrDefault() + 2*time.Second)
	}
	return d
}

// decision is what happens to an activation at the end of a deployment.
type decision int

const (
	keep     decision = iota // the new system stays (healthy, or rollback not possible/wanted)
	rollBack                 // return to the previous generation
)

// decide chooses between keeping and rolling back an activation: roll
// back a failed, activated deployment when there is something to return
// to and -norollback was not given.
func decide(failed bool, activated bool, canRollBack bool) decision {
	if failed && activated && canRollBack {
		return rollBack
	}
	return keep
}

// finish ends a deployment: the verdict to the target's unit (keep or roll
// back), the history record (once, at the end), the lock, the connections.
func (j *job) finish(ctx context.Context, failed *Failure) {
	defer j.close()
	if failed != nil {
		failed.Target = j.t.Name
		j.res.Err = failed
		j.res.Status = StatusFailed
		if failed.Interrupted {
			j.res.Status = StatusInterrupted
		}
	} else {
		j.res.Status = StatusOK
	}
	if j.act == nil {
		return
	}
	// Abandoned: the second interrupt (its channel, not only the context
	// it cancels a moment later: a health check failing right then must
	// not start a rollback the run then abandons).
	if ctx.Err() != nil || closed(j.o.Abandon) {
		j.abandoned(failed)
		return
	}
	end := target.Entry{ID: j.entry.ID, Generation: j.res.Generation, Result: target.ResultOK}
	commit := false
	switch {
	case j.selfRolledBack != nil:
		// The target rolled itself back (magic rollback); it recorded it,
		// and the end record says the same (selfRollback's cause).
		end.Note = failed.Cause
		if w := j.selfRolledBack; w.Code != 0 {
			// Its rollback failed: the profile is where that left it.
			end.Result = target.ResultFailed
			if w.Generation > 0 {
				j.res.Generation = w.Generation
			}
			break
		}
		end.Result, end.RolledBackTo = target.ResultRolledBack, j.state.Generation
		j.res.Status, j.res.Generation = StatusRolledBack, j.state.Generation
	case decide(failed != nil, j.sw.Activated(), j.canRollBack()) == rollBack:
		j.d.Report.Note(j.t.Name, "rolling back to generation "+itoa(j.state.Generation))
		sw, err := j.act.RollBack(ctx, j.live())
		if err != nil || sw.Code != 0 {
			why := "its switch-to-configuration exited with status " + itoa(sw.Code)
			if err != nil {
				why = errText(err)
			}
			failed.Remedy = "ROLLBACK FAILED too (" + why + "): reach the target (console or `mage rollback`) and select a working generation"
			end.Result, end.Note = target.ResultFailed, failed.Cause+"; the rollback failed: "+why
			break
		}
		failed.Section = trouble.Rollbacks
		failed.Cause = fmt.Sprintf("%s; rolled back to generation %d", failed.Cause, j.state.Generation)
		failed.Remedy = "the previous system is active again; fix the configuration and deploy again"
		end.Result, end.RolledBackTo, end.Note = target.ResultRolledBack, j.state.Generation, failed.Cause
		j.res.Status, j.res.Generation = StatusRolledBack, j.state.Generation
	default:
		commit = true
		if failed != nil {
			end.Result, end.Note = target.ResultFailed, failed.Cause
			switch {
			case !j.sw.Activated():
				end.Result = target.ResultFailed
			case j.o.NoRollback:
				end.Result = target.ResultActivated
				failed.Remedy = "left as it is because of -norollback: fix it and deploy again, or `mage rollback " + j.t.Name + " " + j.t.Address + "`"
			default:
				failed.Remedy = "no rollback: there is no previous generation (first deployment); fix the configuration and deploy again"
			}
		}
	}
	// The verdict (commit), the end record, the unit's end: one round trip.
	verr, herr := j.act.End(ctx, j.live(), commit, end)
	if verr != nil && commit {
		j.d.Report.Note(j.t.Name, "telling the target to keep the system failed ("+errText(verr)+"); it keeps it by itself after its wait")
	}
	if herr != nil {
		j.d.Report.Note(j.t.Name, "recording the deployment in the target's history failed: "+errText(herr))
		if j.res.Err == nil {
			j.res.Err = &Failure{Target: j.t.Name, Stage: StageHealth, Section: trouble.TargetSetup,
				Cause: "the deployment worked, but recording it in the target's history failed: " + errText(herr), Remedy: "check the target's /var/lib (disk full?)"}
			j.res.Status = StatusFailed
		}
	}
}

// abandoned: the second interrupt came while the target activates. Its
// unit goes on by itself (activate.sh); say what it will do.
func (j *job) abandoned(failed *Failure) {
	stage, during := StageActivate, "the activation"
	what := "keeps the new system"
	switch {
	case j.reached:
		// The unit's magic-rollback window ended (the switch worked and
		// this deployer reached the target again): it waits for a verdict
		// that will not come, then keeps the system and records it as
		// "activated", although verification and health checks did not
		// finish.
		stage, during = StageHealth, "the verification and health checks"
		what = fmt.Sprintf("keeps the new system once it has waited %v for a verdict, recording it as activated although its checks did not finish: check it, and `mage rollback` if it is not well", j.verdictWindow().Round(time.Second))
	case j.magic:
		what = fmt.Sprintf("rolls back to generation %d unless this deployer confirms within %v, which it no longer will", j.state.Generation, j.o.ConfirmTimeout)
	case j.canRollBack():
		what = "keeps the new system if its switch succeeded, and rolls back by itself if it failed"
	}
	f := &Failure{Target: j.t.Name, Stage: stage, Section: trouble.Rollbacks, Cause: "abandoned during " + during + " (second interrupt)",
		Remedy: "the target's activation unit finishes on its own and " + what + "; see `mage status` and `mage generations` afterwards"}
	if failed != nil && failed.Cause != "" {
		f.Detail = []string{"before it was abandoned: " + failed.Cause}
	}
	j.res.Err, j.res.Status = f, StatusInterrupted
}

// live is the session to use now: the verification connection once there
// is one, else the deployment's.
func (j *job) live() *target.Session {
	if j.vsess != nil {
		return j.vsess
	}
	return j.sess
}

func (j *job) replaceLive(s *target.Session) {
	if j.vsess != nil {
		j.vsess.Close()
	}
	j.vsess = s
}

// close releases the lock and the connections.
func (j *job) close() {
	if j.locking != nil {
		// Still taking the lock (an earlier stage failed): give up.
		j.stopLocking()
		j.awaitLock()
	}
	if j.dropRoot != nil {
		j.dropRoot()
	}
	if j.lock != nil {
		j.lock.Release()
	}
	if j.vsess != nil {
		j.vsess.Close()
	}
	if j.sess != nil {
		j.sess.Close()
	}
}

// connectionLost tells errors of a dropped connection.
func connectionLost(err error) bool {
	var se *sshx.Error
	if errors.As(err, &se) {
		return se.Kind == sshx.KindDeadPeer || se.Kind == sshx.KindLost
	}
	return false
}

// waitForTarget reconnects until the target answers or the deadline passes.
func (j *job) waitForTarget(ctx context.Context, deadline time.Time) (*target.Session, error) {
	var last error
	for time.Now().Before(deadline) {
		s, err := j.d.session(ctx, j.t, j.o)
		if err == nil {
			return s, nil
		}
		last = err
		var se *sshx.Error
		if errors.As(err, &se) && (se.Kind == sshx.KindChangedHost || se.Kind == sshx.KindUnknownHost || se.Kind == sshx.KindKeyType) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	if last == nil {
		last = errors.New("no attempt left before the deadline")
	}
	return nil, last
}

func itoa(n int) string { return fmt.Sprint(n) }

// closed tells whether ch is closed (nil: never).
func closed(ch <-chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
