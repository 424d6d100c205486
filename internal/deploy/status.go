package deploy

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/target"
)

// Generation is one system generation of a target.
type Generation = target.Generation

// Generations lists a target's generations with what the history says of
// them (the history is root-only: it needs sudo).
func (d *Deployer) Generations(ctx context.Context, t inventory.Target, o Options) ([]Generation, error) {
	if err := o.Normalize(); err != nil {
		return nil, err
	}
	if err := ValidateTarget(t); err != nil {
		return nil, err
	}
	sess, err := d.session(ctx, t, o)
	if err != nil {
		f := connectFailure(err)
		f.Target, f.Stage = t.Name, "generations"
		return nil, f
	}
	defer sess.Close()
	gens, err := sess.Generations(ctx)
	if err != nil {
		return nil, targetFailure(err)
	}
	h, err := sess.ReadHistory(ctx)
	if err != nil {
		return gens, targetFailure(err)
	}
	for i := range gens {
		if e := target.LastDeploy(h, gens[i].Number); e != nil && (e.Path == "" || e.Path == gens[i].Path) {
			gens[i].Deploy = e
		}
	}
	return gens, nil
}

// TargetStatus is one line of `mage status`.
type TargetStatus struct {
	Target     string `json:"target"`
	Address    string `json:"address"`
	Reachable  bool   `json:"reachable"`
	Error      string `json:"error,omitempty"`
	Generation int    `json:"generation,omitempty"`
	System     string `json:"system,omitempty"`
	Commit     string `json:"commit,omitempty"`
	Dirty      bool   `json:"dirty,omitempty"`
	// State against what HEAD would deploy: up to date, behind, differs, unknown.
	State      string `json:"state"`
	Deployer   string `json:"lastDeployer,omitempty"`
	DeployedAt string `json:"lastDeployedAt,omitempty"`
	InProgress string `json:"deployInProgress,omitempty"` // holder, when a deploy runs
	// Note: why some of it is unknown (e.g. the history needs sudo).
	Note string `json:"note,omitempty"`
}

// Status states.
const (
	StateUpToDate = "up to date"
	StateBehind   = "behind"
	StateDiffers  = "differs"
	StateUnknown  = "unknown"
)

const busyScript = `for f in ` + target.LockFile + `:` + target.LockInfoFile + ` ` + target.ActivationLockFile + `:` + target.ActivationLockInfoFile + `; do
	lock=${f%%:*} info=${f#*:}
	if [ -e "$lock" ] && ! flock -n "$lock" true 2>/dev/null; then
		echo "busy=$(head -c 300 "$info" 2>/dev/null | head -n 1)"
	fi
done
`

// Status inspects targets in parallel. heads maps target names to the
// system HEAD would deploy (missing: unknown); isAncestor tells whether a
// commit is in HEAD's history.
func (d *Deployer) Status(ctx context.Context, targets []inventory.Target, heads map[string]string, isAncestor func(string) bool, o Options) []TargetStatus {
	out := make([]TargetStatus, len(targets))
	if err := o.Normalize(); err != nil {
		for i, t := range targets {
			out[i] = TargetStatus{Target: t.Name, Address: t.Address, State: StateUnknown, Error: err.Error()}
		}
		return out
	}
	parallel(len(targets), 16, func(i int) { out[i] = d.statusOf(ctx, targets[i], heads[targets[i].Name], isAncestor, o) })
	return out
}

func (d *Deployer) statusOf(ctx context.Context, t inventory.Target, head string, isAncestor func(string) bool, o Options) TargetStatus {
	st := TargetStatus{Target: t.Name, Address: t.Address, State: StateUnknown}
	if err := ValidateTarget(t); err != nil {
		st.Error = err.Error()
		return st
	}
	// One target never holds up the others for long: the connection is
	// bounded by its resolved connect timeouts, the commands by this.
	sess, err := d.session(ctx, t, o)
	if err != nil {
		st.Error = connectFailure(err).Cause
		return st
	}
	defer sess.Close()
	cctx, cancel := context.WithTimeout(ctx, 3*o.CommandTimeout)
	defer cancel()
	st.Reachable = true
	state, err := sess.ReadState(cctx)
	if err != nil {
		st.Error = errText(err)
		return st
	}
	st.System, st.Generation = state.Current, state.Generation
	if busy, err := sess.Run(cctx, "lock status", busyScript, nil); err == nil {
		for _, line := range strings.Split(busy.Stdout, "\n") {
			if v, ok := strings.CutPrefix(line, "busy="); ok {
				v = target.Clean(v, 200)
				if v == "" {
					v = "yes"
				}
				st.InProgress = v
			}
		}
	}
	h, err := sess.ReadHistory(cctx)
	if err != nil {
		st.Note = "history unavailable: " + errText(err)
	}
	if e := target.LatestDeploy(h); e != nil {
		st.Deployer, st.DeployedAt = target.Clean(e.Deployer, 80), target.Clean(e.Time, 40)
	}
	// The commit of the running system: its latest deploy entry.
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Kind == target.KindDeploy && h[i].Path == st.System && h[i].Commit != "" {
			st.Commit, st.Dirty = target.Clean(h[i].Commit, 64), h[i].Dirty
			break
		}
	}
	switch {
	case head != "" && head == st.System:
		st.State = StateUpToDate
	case head == "" || st.Commit == "":
		st.State = StateUnknown
	case isAncestor != nil && isAncestor(st.Commit):
		st.State = StateBehind
	default:
		st.State = StateDiffers
	}
	return st
}

// HeadSystems evaluates (without building) the system each target would get
// from the flake: one evaluation for all of them.
func (d *Deployer) HeadSystems(ctx context.Context, names []string, o Options) (map[string]string, error) {
	src, err := d.Resolve(ctx, Options{Offline: o.Offline, AllowDirty: true, Rev: o.Rev})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	for _, n := range names {
		if err := inventory.ValidateName(n); err != nil {
			return nil, err
		}
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	apply := "cs: builtins.listToAttrs (map (n: { name = n; value = if cs ? ${n} then cs.${n}.config.system.build.toplevel.outPath else null; }) [ " + strings.Join(quoted, " ") + " ])"
	out, err := d.Nix.EvalJSON(ctx, src.Flake, "nixosConfigurations", apply)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// IsAncestor reports whether commit is in HEAD's history.
func (d *Deployer) IsAncestor(ctx context.Context, commit string) bool {
	return d.Git.IsAncestor(ctx, commit)
}
