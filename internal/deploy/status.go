package deploy

import (
	"context"
	"encoding/json"

	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Generation is one system generation of a target.
type Generation struct {
	Number  int       `json:"number"`
	Path    string    `json:"path"`
	Date    time.Time `json:"date"`
	Current bool      `json:"current"`
	// From the deployment history, when this tool deployed it.
	Deploy *Entry `json:"deploy,omitempty"`
}

const generationsScript = `for l in /nix/var/nix/profiles/system-*-link; do
	[ -e "$l" ] || continue
	echo "gen $(basename "$l") $(readlink "$l") $(stat -c %Y "$l")"
done
echo "current $(readlink /nix/var/nix/profiles/system)"
`

// readGenerations lists a target's generations (no sudo needed).
func readGenerations(ctx context.Context, sh Shell) ([]Generation, error) {
	out, err := sh.Run(ctx, generationsScript, nil)
	if err != nil {
		return nil, fmt.Errorf("listing generations: %w", err)
	}
	var gens []Generation
	current := 0
	for _, line := range strings.Split(out.Stdout, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "gen":
			secs, _ := strconv.ParseInt(f[3], 10, 64)
			gens = append(gens, Generation{Number: generationOf(f[1]), Path: f[2], Date: time.Unix(secs, 0).UTC()})
		case len(f) == 2 && f[0] == "current":
			current = generationOf(f[1])
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].Number < gens[j].Number })
	for i := range gens {
		gens[i].Current = gens[i].Number == current
	}
	return gens, nil
}

// Generations lists a target's generations with what the history says of them.
func (d *Deployer) Generations(ctx context.Context, t inventory.Target, o Options) ([]Generation, error) {
	if err := o.Normalize(); err != nil {
		return nil, err
	}
	if err := ValidateTarget(t); err != nil {
		return nil, err
	}
	sh, err := d.connect(ctx, t)
	if err != nil {
		return nil, connectFailure(t, "generations", err)
	}
	defer sh.Close()
	gens, err := readGenerations(ctx, sh)
	if err != nil {
		return nil, err
	}
	h, err := readHistory(ctx, sh)
	if err != nil {
		return nil, err
	}
	for i := range gens {
		if e := LastDeploy(h, gens[i].Number); e != nil && (e.Path == "" || e.Path == gens[i].Path) {
			gens[i].Deploy = e
		}
	}
	return gens, nil
}

// Rollback switches a target to another generation (to = 0: the one before
// the current), as `nixos-rebuild switch --rollback` does, under the same
// lock as deployments, and records it.
func (d *Deployer) Rollback(ctx context.Context, t inventory.Target, to int, o Options) (Result, error) {
	start := time.Now()
	res := Result{Target: t.Name, Address: t.Address}
	if err := o.Normalize(); err != nil {
		return res, err
	}
	if err := ValidateTarget(t); err != nil {
		return res, err
	}
	sess, facts, f := d.open(ctx, t, o)
	if f != nil {
		return res, f
	}
	defer sess.sh.Close()
	lk, f := d.lock(ctx, sess, t, o, fmt.Sprintf("%s since %s (rollback)", Identity(), now()))
	if f != nil {
		return res, f
	}
	defer lk.release()
	gens, err := readGenerations(ctx, sess.sh)
	if err != nil {
		return res, err
	}
	cur := generationOf(facts.profile)
	var target *Generation
	for i := range gens {
		g := &gens[i]
		if to > 0 && g.Number == to {
			target = g
		}
		if to == 0 && g.Number < cur && (target == nil || g.Number > target.Number) {
			target = g
		}
	}
	if target == nil {
		var nums []string
		for _, g := range gens {
			nums = append(nums, strconv.Itoa(g.Number))
		}
		if to == 0 {
			return res, &Failure{Section: trouble.Rollbacks, Target: t.Name, Stage: "rollback", Cause: fmt.Sprintf("no generation before the current one (%d)", cur), Remedy: "see `mage generations`; existing: " + strings.Join(nums, ", ")}
		}
		return res, &Failure{Section: trouble.Rollbacks, Target: t.Name, Stage: "rollback", Cause: fmt.Sprintf("generation %d does not exist", to), Remedy: "pick one of " + strings.Join(nums, ", ") + " (mage generations)"}
	}
	actx := context.WithoutCancel(ctx)
	if out, err := sess.sudo(actx, "nix-env", "-p", "/nix/var/nix/profiles/system", "--switch-generation", strconv.Itoa(target.Number)); err != nil {
		return res, &Failure{Section: trouble.Rollbacks, Target: t.Name, Stage: "rollback", Cause: "switching the profile failed: " + strings.Join(lastLines(out.Stderr, 2), " | "), Remedy: "check the target", Err: err}
	}
	out, err := sess.sudo(actx, switchCommand(facts.systemd, target.Path, ModeSwitch)...)
	entry := Entry{ID: uniqueID(), Kind: KindRollback, Generation: target.Number, Path: target.Path, Deployer: Identity(), Time: now(), Mode: ModeSwitch, Result: ResultOK,
		Note: fmt.Sprintf("rollback from generation %d", cur)}
	if err != nil {
		entry.Result = ResultFailed
		_ = appendHistory(actx, sess, entry)
		return res, &Failure{Section: trouble.Rollbacks, Target: t.Name, Stage: "rollback", Cause: fmt.Sprintf("switch-to-configuration of generation %d failed", target.Number),
			Remedy: "the profile points at it, but it did not activate cleanly; see the output", Detail: lastLines(out.Stdout+"\n"+out.Stderr, 6), Err: err}
	}
	_ = appendHistory(actx, sess, entry)
	vsh, err := d.connect(actx, t)
	if err != nil {
		return res, connectFailure(t, StageVerify, err)
	}
	defer vsh.Close()
	v, _ := vsh.Run(actx, "readlink /run/current-system", nil)
	if strings.TrimSpace(v.Stdout) != target.Path {
		return res, &Failure{Section: trouble.Rollbacks, Target: t.Name, Stage: StageVerify, Cause: "/run/current-system is not generation " + strconv.Itoa(target.Number) + " after the rollback", Remedy: "check the target"}
	}
	res.Status, res.Generation, res.System, res.Duration = StatusOK, target.Number, target.Path, time.Since(start)
	d.runHook(ctx, res, Source{})
	return res, nil
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
}

// Status states.
const (
	StateUpToDate = "up to date"
	StateBehind   = "behind"
	StateDiffers  = "differs"
	StateUnknown  = "unknown"
)

const statusScript = `echo "current=$(readlink /run/current-system)"
echo "profile=$(readlink /nix/var/nix/profiles/system)"
if [ -e ` + lockFile + ` ] && ! flock -n ` + lockFile + ` true 2>/dev/null; then
	echo "locked=$(cat ` + lockInfoFile + ` 2>/dev/null)"
fi
`

// Status inspects targets in parallel. heads maps target names to the
// system HEAD would deploy (missing: unknown); isAncestor tells whether a
// commit is in HEAD's history.
func (d *Deployer) Status(ctx context.Context, targets []inventory.Target, heads map[string]string, isAncestor func(string) bool, timeout time.Duration) []TargetStatus {
	out := make([]TargetStatus, len(targets))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = d.statusOf(ctx, t, heads[t.Name], isAncestor, timeout)
		}()
	}
	wg.Wait()
	return out
}

func (d *Deployer) statusOf(ctx context.Context, t inventory.Target, head string, isAncestor func(string) bool, timeout time.Duration) TargetStatus {
	st := TargetStatus{Target: t.Name, Address: t.Address, State: StateUnknown}
	if err := ValidateTarget(t); err != nil {
		st.Error = err.Error()
		return st
	}
	cctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	sh, err := d.connect(cctx, t)
	if err != nil {
		st.Error = shortErr(err)
		return st
	}
	defer sh.Close()
	st.Reachable = true
	res, err := sh.Run(cctx, statusScript, nil)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	f := parseFacts(res.Stdout)
	st.System, st.Generation = f.current, generationOf(f.profile)
	for _, line := range strings.Split(res.Stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "locked="); ok {
			st.InProgress = v
			if v == "" {
				st.InProgress = "yes"
			}
		}
	}
	h, _ := readHistory(cctx, sh)
	if e := LatestDeploy(h); e != nil {
		st.Deployer, st.DeployedAt = e.Deployer, e.Time
	}
	// The commit of the running system: its latest deploy entry.
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Kind == KindDeploy && h[i].Path == st.System && h[i].Commit != "" {
			st.Commit, st.Dirty = h[i].Commit, h[i].Dirty
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
	if commit == "" {
		return false
	}
	err := d.Runner.Run(ctx, run.Cmd{Name: "git", Args: []string{"-C", d.Root, "merge-base", "--is-ancestor", commit, "HEAD"}})
	return err == nil
}
