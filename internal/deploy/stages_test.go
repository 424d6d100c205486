package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/target/targettest"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

const (
	oldSystem = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-lab-server-old"
	gen8      = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-lab-server-gen8"
)

type fakeNix struct {
	mu       sync.Mutex
	copyErrs []error
	copies   int
	onCopy   func()
}

func (n *fakeNix) Version(context.Context) (nix.Version, error) {
	return nix.Version{Major: 2, Minor: 26}, nil
}
func (n *fakeNix) Build(ctx context.Context, f nix.Flake, attrs []string, p *nix.LogParser) ([]string, error) {
	out := make([]string, len(attrs))
	for i := range attrs {
		out[i] = fmt.Sprintf("/nix/store/%032d-nixos-system-new", i)
	}
	return out, ctx.Err()
}
func (n *fakeNix) Closures(_ context.Context, paths []string) (map[string]map[string]int64, error) {
	m := map[string]map[string]int64{}
	for _, p := range paths {
		m[p] = map[string]int64{p: 4096}
	}
	return m, nil
}
func (n *fakeNix) Copy(ctx context.Context, paths []string, o nix.CopyOptions, p *nix.LogParser) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.copies++
	if n.onCopy != nil {
		n.onCopy()
	}
	if len(n.copyErrs) > 0 {
		err := n.copyErrs[0]
		n.copyErrs = n.copyErrs[1:]
		if err != nil {
			p.Write([]byte(`@nix {"action":"msg","level":0,"msg":"error: ` + err.Error() + `"}` + "\n"))
		}
		return err
	}
	return nil
}
func (n *fakeNix) EvalJSON(context.Context, nix.Flake, string, string) (string, error) {
	return "", errors.New("not used")
}
func (n *fakeNix) Derivations(context.Context, nix.Flake, []string, *nix.LogParser) (map[string]nix.Derivation, error) {
	return nil, errors.New("not used")
}
func (n *fakeNix) Realise(context.Context, nix.Flake, []string, *nix.LogParser) ([]string, error) {
	return nil, errors.New("not used")
}
func (n *fakeNix) Platforms(context.Context) (nix.Platforms, error) {
	return nix.Platforms{System: "x86_64-linux"}, nil
}
func (n *fakeNix) StoreClosures(context.Context, string, []string) (map[string]map[string]int64, error) {
	return nil, errors.New("not used")
}

type fakeGit struct{}

func (fakeGit) RevParse(_ context.Context, r string) (string, error) { return r, nil }
func (fakeGit) Dirty(context.Context) (bool, error)                  { return false, nil }
func (fakeGit) Head(context.Context) (string, error)                 { return "c0ffee0123456789", nil }
func (fakeGit) IsAncestor(context.Context, string) bool              { return true }

// fakeConnector hands out connections to one fake target; fail decides
// per connection attempt (numbered from 1) whether it fails.
type fakeConnector struct {
	t     *targettest.Target
	mu    sync.Mutex
	n     int
	fail  func(n int) bool
	onErr func()
}

func (c *fakeConnector) Connect(context.Context, inventory.Target) (target.Conn, error) {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	if c.fail != nil && c.fail(n) {
		if c.onErr != nil {
			c.onErr()
		}
		return nil, &sshx.Error{Kind: sshx.KindRefused, Cause: "connection refused by 10.0.0.1:22", Remedy: "check sshd"}
	}
	return c.t.Conn(), nil
}

type quiet struct{}

func (quiet) Stage(string, Stage)                  {}
func (quiet) Progress(string, int64, int64)        {}
func (quiet) BuildProgress(int, int)               {}
func (quiet) BuildFinished(int, int)               {}
func (quiet) RemoteBuild(string, string, int, int) {}
func (quiet) Note(string, string)                  {}
func (quiet) Finished(Result)                      {}
func (quiet) Pause() func()                        { return func() {} }

func prevGen1(t *targettest.Target) {
	t.Generation, t.Profile, t.Current = 1, oldSystem, oldSystem
}

// The stage decisions, in process against a scripted target: rollback or
// not, the lock, retries, interrupts.
func TestStageDecisions(t *testing.T) {
	// Nix 2.34's answer to the query for missing paths on a full /nix: its
	// daemon hangs up (recorded in a lab host with a 1 MiB /nix).
	hangUp, err := os.ReadFile("../nix/testdata/2.34.8/check-validity-diskfull-1m.stderr")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		setup  func(*targettest.Target, *Options, *fakeNix, *fakeConnector, context.CancelFunc)
		health []inventory.HealthCheck
		// healthRuns: health-check commands run (0: not checked)
		healthRuns int
		status     Status
		gen        int
		verdict    string // the verdicts sent, joined
		cause      string
		not        string // text the failure must not have
		section    string
		copies     int
		history    string // a result the history must end with ("" : no record)
		// records: history lines written: start and end by the deployer,
		// one more by the unit when it rolls back (it records its own
		// rollbacks, in case the deployer is gone by then).
		records int
	}{
		{name: "healthy", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
		},
			status: StatusOK, gen: 2, verdict: "commit", copies: 1, history: `"result":"ok"`, records: 2},
		{name: "activation fails: rolled back", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.SwitchCode = 4
		}, status: StatusRolledBack, gen: 1, verdict: "rollback", cause: "exited with status 4; rolled back to generation 1", section: trouble.Rollbacks, copies: 1, history: `"result":"rolled-back"`, records: 3},
		{name: "first deployment fails: nothing to roll back", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			ft.SwitchCode = 4
		}, status: StatusFailed, gen: 1, verdict: "commit", cause: "exited with status 4", section: trouble.Activation, copies: 1, history: `"result":"failed"`, records: 2},
		{name: "-norollback keeps a failed activation", setup: func(ft *targettest.Target, o *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.SwitchCode = 4
			o.NoRollback = true
		}, status: StatusFailed, gen: 2, verdict: "commit", cause: "exited with status 4", copies: 1, history: `"result":"activated"`, records: 2},
		{name: "health check fails: rolled back", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.HealthCode = 3
		}, health: []inventory.HealthCheck{{Type: "command", Command: "systemctl is-active x", Retries: 1}},
			status: StatusRolledBack, gen: 1, verdict: "rollback", cause: "health check failed", section: trouble.Rollbacks, copies: 1, history: `"result":"rolled-back"`, records: 3},
		{name: "locked by another deployer", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.OtherHolder = make(chan struct{})
		}, status: StatusFailed, gen: 1, cause: "is being deployed by other@elsewhere", section: trouble.Locks},
		{name: "-wait: the state is read under the lock", setup: func(ft *targettest.Target, o *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.SwitchCode = 4
			o.Wait = true
			h := make(chan struct{})
			ft.OtherHolder = h
			ft.OnFree = func(ft *targettest.Target) { ft.Generation, ft.Profile, ft.Current = 8, gen8, gen8 }
			close(h)
		}, status: StatusRolledBack, gen: 8, verdict: "rollback", cause: "rolled back to generation 8", copies: 1, history: `"result":"rolled-back"`, records: 3},
		{name: "copy retried once after a transient failure", setup: func(ft *targettest.Target, _ *Options, n *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			n.copyErrs = []error{errors.New("connection reset by peer"), nil}
		}, status: StatusOK, gen: 2, verdict: "commit", copies: 2, history: `"result":"ok"`, records: 2},
		{name: "untrusted copy not retried", setup: func(ft *targettest.Target, _ *Options, n *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			n.copyErrs = []error{errors.New("cannot add path because it lacks a signature by a trusted key")}
		}, status: StatusFailed, gen: 1, cause: "refuses unsigned paths", section: trouble.TrustedUsers, copies: 1},
		{name: "full /nix: Nix 2.34's daemon hangs up on the query: the disk remedy", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.FreeKB, ft.QueryStderr = 0, string(hangUp)
		}, status: StatusFailed, gen: 1, cause: "the target's /nix is full: free space on the target (sudo nix-collect-garbage", section: trouble.DiskSpace},
		{name: "the daemon hangs up with space to spare: the daemon remedy", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.QueryStderr = string(hangUp)
		}, status: StatusFailed, gen: 1, cause: "the target's nix-daemon disconnected", section: trouble.TargetSetup},
		{name: "interrupted during the copy: nothing activated", setup: func(ft *targettest.Target, _ *Options, n *fakeNix, _ *fakeConnector, cancel context.CancelFunc) {
			prevGen1(ft)
			n.onCopy = cancel
			n.copyErrs = []error{errors.New("interrupted")}
		}, status: StatusInterrupted, gen: 1, cause: "interrupted", copies: 1},
		{name: "the switch cuts SSH: the target rolls itself back", setup: func(ft *targettest.Target, o *Options, _ *fakeNix, c *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			c.fail = func(n int) bool { return n == 2 }
			c.onErr = ft.SelfRollBack
		}, status: StatusRolledBack, gen: 1, cause: "the target rolled itself back to generation 1 (magic rollback)", section: trouble.Rollbacks, copies: 1, history: `"result":"rolled-back"`, records: 3},
		{name: "the switch cuts SSH and the target's own rollback fails", setup: func(ft *targettest.Target, o *Options, _ *fakeNix, c *fakeConnector, _ context.CancelFunc) {
			prevGen1(ft)
			ft.RollbackCode = 5
			c.fail = func(n int) bool { return n == 2 }
			c.onErr = ft.SelfRollBack
		}, status: StatusFailed, gen: 1, cause: "the new configuration cut SSH (connection refused by 10.0.0.1:22); the target's own rollback to generation 1 FAILED (switch-to-configuration exited with status 5): reach the target", not: "rolled itself back", section: trouble.Rollbacks, copies: 1, history: `"result":"failed"`, records: 3},
		{name: "first interrupt during a failing health check: the checks finish and roll back", setup: func(ft *targettest.Target, _ *Options, _ *fakeNix, _ *fakeConnector, cancel context.CancelFunc) {
			prevGen1(ft)
			ft.HealthCode = 3
			ft.OnHealth = cancel
		}, health: []inventory.HealthCheck{{Type: "command", Command: "systemctl is-active x", Retries: 2}}, healthRuns: 2,
			status: StatusRolledBack, gen: 1, verdict: "rollback", cause: "health check failed", section: trouble.Rollbacks, copies: 1, history: `"result":"rolled-back"`, records: 3},
		{name: "second interrupt during the health checks: the target keeps the system", setup: func(ft *targettest.Target, o *Options, _ *fakeNix, _ *fakeConnector, cancel context.CancelFunc) {
			prevGen1(ft)
			ft.HealthCode = 3
			abandon := make(chan struct{})
			o.Abandon = abandon
			ft.OnHealth = func() { cancel(); close(abandon) }
		}, health: []inventory.HealthCheck{{Type: "command", Command: "systemctl is-active x", Retries: 1}}, healthRuns: 1,
			status: StatusInterrupted, gen: 2, cause: "abandoned during the verification and health checks (second interrupt): the target's activation unit finishes on its own and keeps the new system once it has waited", not: "rolls back",
			section: trouble.Rollbacks, copies: 1, history: `"result":"activating"`, records: 1},
		{name: "second interrupt before the new connection: the target rolls back", setup: func(ft *targettest.Target, o *Options, _ *fakeNix, c *fakeConnector, cancel context.CancelFunc) {
			prevGen1(ft)
			abandon := make(chan struct{})
			o.Abandon = abandon
			c.fail = func(n int) bool { return n == 2 }
			c.onErr = func() { cancel(); close(abandon) }
		}, status: StatusInterrupted, gen: 2, cause: "abandoned during the activation (second interrupt): the target's activation unit finishes on its own and rolls back to generation 1 unless this deployer confirms within 30s",
			section: trouble.Rollbacks, copies: 1, history: `"result":"activating"`, records: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ft := &targettest.Target{Hostname: "lab-server", User: "monibahmed", FreeKB: 1 << 30}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			n := &fakeNix{}
			conn := &fakeConnector{t: ft}
			o := Options{Offline: true, ConfirmTimeout: 30e9}
			tc.setup(ft, &o, n, conn, cancel)
			d := &Deployer{Root: "/repo", Nix: n, Git: fakeGit{}, Connector: conn, Report: quiet{}, Sudo: &Sudo{}}
			tg := inventory.Target{Name: "lab-server", Facts: inventory.Facts{Address: "10.0.0.1", User: "monibahmed", Health: tc.health}}
			res, err := d.Run(ctx, []inventory.Target{tg}, o)
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			ft.Lock()
			defer ft.Unlock()
			if r.Status != tc.status || ft.Generation != tc.gen {
				t.Fatalf("status %q generation %d, want %q %d (err %v)\nlog %v", r.Status, ft.Generation, tc.status, tc.gen, r.Err, ft.Log)
			}
			if got := strings.Join(ft.Verdicts, ","); got != tc.verdict {
				t.Errorf("verdicts %q, want %q", got, tc.verdict)
			}
			if n.copies != tc.copies {
				t.Errorf("%d copies, want %d", n.copies, tc.copies)
			}
			var f *Failure
			if tc.cause != "" {
				if !errors.As(r.Err, &f) || !strings.Contains(f.Error(), tc.cause) || (tc.section != "" && f.Section != tc.section) {
					t.Errorf("failure %v (section %s), want %q in %s", r.Err, sectionOf(r.Err), tc.cause, tc.section)
				}
			} else if r.Err != nil {
				t.Errorf("unexpected failure %v", r.Err)
			}
			if tc.not != "" && r.Err != nil && strings.Contains(r.Err.Error(), tc.not) {
				t.Errorf("failure %v says %q", r.Err, tc.not)
			}
			last := ""
			if len(ft.History) > 0 {
				last = ft.History[len(ft.History)-1]
			}
			if tc.history == "" && len(ft.History) > 0 {
				t.Errorf("history written although nothing was activated: %v", ft.History)
			}
			if n := strings.Count(strings.Join(ft.Log, ","), "health"); tc.healthRuns != 0 && n != tc.healthRuns {
				t.Errorf("%d health checks ran, want %d", n, tc.healthRuns)
			}
			if len(ft.History) != tc.records {
				t.Errorf("%d history lines, want %d:\n%s", len(ft.History), tc.records, strings.Join(ft.History, "\n"))
			}
			if tc.records == 3 && len(ft.History) == 3 {
				// The unit's own line says why it rolled back.
				why := "rolled back by the target itself: the deployer did not confirm"
				switch {
				case ft.RollbackCode != 0:
					why = "the rollback failed"
				case strings.Contains(tc.verdict, "rollback"):
					why = "rolled back on the deployer's verdict"
				}
				if !strings.Contains(ft.History[1], why) {
					t.Errorf("the unit's history line %s, want %q", ft.History[1], why)
				}
			}
			if tc.history != "" && !strings.Contains(last, tc.history) {
				t.Errorf("history ends with %s, want %s\n%v", last, tc.history, ft.History)
			}
			if tc.history != "" && r.Generation != ft.Generation {
				t.Errorf("reported generation %d, the target's profile is at %d", r.Generation, ft.Generation)
			}
			if tc.history != "" && len(ft.Activations) != 1 {
				t.Errorf("%d activations", len(ft.Activations))
			}
			if !strings.Contains(strings.Join(ft.Log, ","), "unlock") && tc.section != trouble.Locks {
				t.Errorf("the lock was not released: %v", ft.Log)
			}
		})
	}
}

func sectionOf(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Section
	}
	return ""
}

// The decision table itself.
func TestDecide(t *testing.T) {
	for _, c := range []struct {
		failed, activated, can bool
		want                   decision
	}{
		{false, true, true, keep}, {true, true, true, rollBack}, {true, false, true, keep},
		{true, true, false, keep}, {false, false, false, keep},
	} {
		if got := decide(c.failed, c.activated, c.can); got != c.want {
			t.Errorf("decide(%v, %v, %v) = %v", c.failed, c.activated, c.can, got)
		}
	}
}

// An interrupted target is told by the failure's type, not its text.
func TestInterruptedIsTyped(t *testing.T) {
	for _, c := range []struct {
		f    *Failure
		want Status
	}{
		{interrupted(stoppedBeforeActivation, nil), StatusInterrupted},
		{&Failure{Cause: "interrupted", Remedy: "a cause that only reads so"}, StatusFailed},
	} {
		j := &job{t: inventory.Target{Name: "lab-server"}}
		j.finish(context.Background(), c.f)
		if j.res.Status != c.want {
			t.Errorf("%v: status %q, want %q", c.f, j.res.Status, c.want)
		}
	}
}
