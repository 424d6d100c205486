package deploy

import (
	"context"
	"fmt"
	"time"

	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// verify reaches the target over a new SSH connection after the switch
// (which proves SSH still works and, with magic rollback, tells the
// target's unit so) and checks that the new system runs.
func (j *job) verify(ctx context.Context) *Failure {
	path := j.built.path
	vsess, err := j.d.session(ctx, j.t, j.o)
	if err != nil {
		if !j.magic {
			return &Failure{Section: trouble.Activation, Cause: "reconnecting after the switch failed: " + connectFailure(err).Cause,
				Remedy: "check the configuration's SSH and network settings (services.openssh, networking, firewall)", Err: err}
		}
		return j.cutOff(ctx, err)
	}
	j.replaceLive(vsess)
	var st target.State
	if j.magic {
		if st, err = j.act.ReachedState(ctx, vsess); err != nil {
			if rolled, w, _ := j.act.RolledBackByItself(ctx, vsess); rolled {
				return j.selfRollback(w, fmt.Sprintf("the deployer reached the target too late (after %v)", j.o.ConfirmTimeout),
					fmt.Sprintf("it rolled itself back to generation %d", j.state.Generation),
					"raise -confirmtimeout if the switch takes that long, and deploy again")
			}
			return targetFailure(err)
		}
		j.reached = true
	} else if st, err = vsess.ReadState(ctx); err != nil {
		return targetFailure(err)
	}
	if st.Current != path {
		return &Failure{Section: trouble.Activation, Cause: fmt.Sprintf("/run/current-system is %q, not the deployed %s", st.Current, path),
			Remedy: "check the activation output on the target (journalctl)"}
	}
	return nil
}

// cutOff: no new connection after a switch with magic rollback. The
// target's unit rolls back after the window; wait for it to answer again.
func (j *job) cutOff(ctx context.Context, err error) *Failure {
	cause := connectFailure(err).Cause
	j.d.Report.Note(j.t.Name, fmt.Sprintf("cannot reach the target after the switch (%s); waiting for its own rollback (up to %v)", cause, j.o.ConfirmTimeout))
	back, werr := j.waitForTarget(ctx, time.Now().Add(j.o.ConfirmTimeout+90*time.Second))
	if werr != nil {
		return &Failure{Section: trouble.Rollbacks, Cause: "the target has not answered over SSH since the switch: " + connectFailure(werr).Cause,
			Remedy: "it rolls itself back after " + j.o.ConfirmTimeout.String() + "; if it stays unreachable, use the console and select the previous generation in the boot menu"}
	}
	j.replaceLive(back)
	// Give a rollback that is running right now time to finish.
	for i := 0; i < 60; i++ {
		if rolled, w, _ := j.act.RolledBackByItself(ctx, back); rolled {
			return j.selfRollback(w, fmt.Sprintf("the new configuration cut SSH (%s)", cause),
				fmt.Sprintf("the target rolled itself back to generation %d (magic rollback)", j.state.Generation),
				"check the configuration's SSH and network settings (services.openssh, networking, firewall) and deploy again")
		}
		select {
		case <-ctx.Done():
			return &Failure{Section: trouble.Rollbacks, Cause: "abandoned while waiting for the target's own rollback"}
		case <-time.After(time.Second):
		}
	}
	return &Failure{Section: trouble.Rollbacks, Cause: "SSH failed right after the switch (" + cause + ") and the target did not roll back", Remedy: "check the target"}
}

// selfRollback records that the target's unit rolled back by itself
// (magic rollback) with outcome w, and builds the deployment's failure:
// why it rolled back, then done and remedy when the rollback worked, or
// that it failed, with the remedy of a failed rollback, when its
// switch-to-configuration did not succeed.
func (j *job) selfRollback(w target.Switched, why, done, remedy string) *Failure {
	j.selfRolledBack = &w
	if w.Code != 0 {
		return &Failure{Section: trouble.Rollbacks,
			Cause:  fmt.Sprintf("%s; the target's own rollback to generation %d FAILED (switch-to-configuration exited with status %d)", why, j.state.Generation, w.Code),
			Remedy: "reach the target (console or `mage rollback`) and select a working generation"}
	}
	return &Failure{Section: trouble.Rollbacks, Cause: why + "; " + done, Remedy: remedy}
}
