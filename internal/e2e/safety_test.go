package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/deploy"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

func TestRollbackAndRollbackTo(t *testing.T) {
	f := newFixture(t)
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab"))
	first := f.current("lab-server")
	f.setConfig("lab-server", `environment.etc."marker".text = "2";`)
	f.commit("second")
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab"))
	f.setConfig("lab-server", `environment.etc."marker3".text = "3";`)
	f.commit("third")
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab"))
	third := f.current("lab-server")
	second := f.exec("lab-server", "readlink /nix/var/nix/profiles/system-2-link")

	r := f.mage("rollback", "lab-server", "-", "-lab")
	succeeds(t, r)
	if f.generation("lab-server") != 2 || f.current("lab-server") != second {
		t.Fatalf("rollback: generation %d current %s", f.generation("lab-server"), f.current("lab-server"))
	}
	succeeds(t, f.mage("rollback:to", "lab-server", "-", "1", "-lab"))
	if f.generation("lab-server") != 1 || f.current("lab-server") != first {
		t.Fatalf("rollback:to 1: generation %d current %s", f.generation("lab-server"), f.current("lab-server"))
	}
	succeeds(t, f.mage("rollback:to", "lab-server", "-", "3", "-lab"))
	if f.current("lab-server") != third {
		t.Fatal("rollback:to 3 did not return to the newest")
	}
	failsWith(t, f.mage("rollback:to", "lab-server", "-", "9", "-lab"), "generation 9 does not exist", "1, 2, 3")
	// Rollbacks are in the history.
	if h := f.exec("lab-server", "cat /var/lib/nixos-config/history.jsonl"); strings.Count(h, `"kind":"rollback"`) != 3 {
		t.Errorf("history of rollbacks:\n%s", h)
	}
}

func TestGenerationsShowCommits(t *testing.T) {
	f := newFixture(t)
	a := f.commit("A")
	succeeds(t, f.mage("deploy", "media-center", "-", "-lab"))
	f.setConfig("media-center", `environment.etc."marker".text = "B";`)
	b := f.commit("B")
	succeeds(t, f.mage("deploy", "media-center", "-", "-lab"))
	// The same system from another commit (only the README changed): no new
	// generation, and the history says it is the same system.
	testutil.Edit(t, f.repo, "README.md", "nixos-config", "nixos-config (C)")
	testutil.Git(t, f.repo, "add", "README.md")
	c := f.commit("C")
	succeeds(t, f.mage("deploy", "media-center", "-", "-lab"))
	if f.generations("media-center") != 2 {
		t.Fatalf("%d generations", f.generations("media-center"))
	}
	r := f.mage("generations", "media-center", "-", "-lab")
	succeeds(t, r)
	lines := strings.Split(r.Stdout, "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "GEN") {
		t.Fatalf("output:\n%s", r.Stdout)
	}
	g1 := regexp.MustCompile(`(?m)^1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+` + a[:12] + `\s+\S+@\S+\s+switch\s+ok$`)
	g2 := regexp.MustCompile(`(?m)^2\s+\S+ \S+\s+current\s+` + c[:12] + ` \(same system as ` + b[:12] + `\)\s+\S+@\S+\s+switch\s+ok$`)
	if !g1.MatchString(r.Stdout) || !g2.MatchString(r.Stdout) {
		t.Fatalf("generations:\n%s", r.Stdout)
	}
}

func TestStatusUpToDateBehind(t *testing.T) {
	f := newFixture(t)
	older := f.commit("older")
	f.setConfig("lab-server", `environment.etc."marker".text = "newer";`)
	f.commit("newer")
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab", "-rev="+older))
	succeeds(t, f.mage("deploy", "media-center", "-", "-lab"))
	r := f.mage("status", "-lab", "-json")
	succeeds(t, r)
	var st []deploy.TargetStatus
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		t.Fatalf("status -json: %v\n%s", err, r.Stdout)
	}
	got := map[string]deploy.TargetStatus{}
	for _, s := range st {
		got[s.Target] = s
	}
	if s := got["lab-server"]; s.State != deploy.StateBehind || s.Commit != older || !s.Reachable || s.Generation != 1 {
		t.Errorf("lab-server: %+v", s)
	}
	if s := got["media-center"]; s.State != deploy.StateUpToDate || s.Deployer == "" || s.DeployedAt == "" {
		t.Errorf("media-center: %+v", s)
	}
	if s := got["dev-workstation"]; s.State != deploy.StateUnknown || s.Generation != 0 {
		t.Errorf("dev-workstation: %+v", s)
	}
	// A stopped sshd: unreachable.
	ctx := context.Background()
	f.lab.StopSSHD(ctx, "dev-workstation")
	t.Cleanup(func() { f.lab.StartSSHD(ctx, "dev-workstation") })
	r = f.mage("status", "-lab")
	succeeds(t, r)
	for _, re := range []string{`lab-server\s+10\.77\.50\.11\s+yes\s+1\s+` + older[:12] + `\s+behind`, `media-center\s+10\.77\.50\.12\s+yes\s+1\s+\S+\s+up to date`, `dev-workstation\s+10\.77\.50\.10\s+no\s+-\s+-\s+unknown`} {
		if !regexp.MustCompile(re).MatchString(r.Stdout) {
			t.Errorf("status lacks %s:\n%s", re, r.Stdout)
		}
	}
}

// slowCopy makes a target's next deployment take a while: a 3 MiB closure
// through a 2 Mbit/s link.
func slowCopy(t *testing.T, f *fixture, host string) {
	t.Helper()
	ctx := context.Background()
	// A seed of its own: paths no earlier test copied to the target.
	f.setConfig(host, fmt.Sprintf(`lab.simulate.closure = { uniqueMiB = 3; seed = "%s-%d"; };`, t.Name(), time.Now().UnixNano()))
	f.commit("big " + host)
	if err := f.lab.Shape(ctx, host, lab.Link{RateMbit: 2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.Shape(ctx, host, lab.Link{}) })
}

// startMage starts a deploy and returns when its output contains marker.
func startMage(t *testing.T, f *fixture, marker string, args ...string) (*exec.Cmd, *syncBuilder) {
	t.Helper()
	cmd := exec.Command(testutil.MageBinary(t), args...)
	cmd.Dir = f.repo
	out := &syncBuilder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), marker) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("never saw %q:\n%s", marker, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cmd, out
}

func TestLockOneDeployerAtATime(t *testing.T) {
	f := newFixture(t)
	slowCopy(t, f, "media-center")
	first, out := startMage(t, f, "media-center: copy 0 B", "deploy", "media-center", "-", "-lab")
	start := time.Now()
	r := f.mage("deploy", "media-center", "-", "-lab")
	if time.Since(start) > 20*time.Second {
		t.Errorf("the second deployer waited %v instead of failing at once", time.Since(start))
	}
	failsWith(t, r, "media-center is being deployed by", "@", " since ", "(commit ", "-wait")
	if err := first.Wait(); err != nil {
		t.Fatalf("the first deployer failed: %v\n%s", err, out.String())
	}
	if f.generations("media-center") != 1 {
		t.Fatalf("%d generations: both deployers went ahead", f.generations("media-center"))
	}
	// With -wait the second one waits and then deploys.
	testutil.Edit(t, f.repo, "targets/media-center/configuration.nix", `seed = "`, `seed = "wait-`)
	f.commit("after wait")
	first, out = startMage(t, f, "media-center: copy 0 B", "deploy", "media-center", "-", "-lab")
	r = f.mage("deploy", "media-center", "-", "-lab", "-wait")
	succeeds(t, r)
	if err := first.Wait(); err != nil {
		t.Fatalf("first deployer: %v\n%s", err, out.String())
	}
	if !strings.Contains(r.Stdout, "waiting: media-center is being deployed by") {
		t.Errorf("no waiting note:\n%s", r.Stdout)
	}
}

// Ctrl-C while waiting for another deployer's lock (-wait): the waiting
// deployer stops at once and leaves no lock process behind on the target;
// the first deployer is not disturbed.
func TestLockWaitInterruptedLeavesNothing(t *testing.T) {
	f := newFixture(t)
	const host = "media-center"
	slowCopy(t, f, host)
	first, out := startMage(t, f, host+": copy 0 B", "deploy", host, "-", "-lab")
	// The waiting lock script's processes (sudo, sh): they name the lock's
	// info file, and their last argument is 1 (-wait; the first's is 0).
	lockProcs := func() string { return f.exec(host, "pgrep -fc 'nixos-config[.]lock[.]info.* 1$' || true") }
	waiter, wout := startMage(t, f, "waiting: "+host+" is being deployed by", "deploy", host, "-", "-lab", "-wait")
	if n := lockProcs(); n == "0" {
		t.Fatalf("no waiting lock process on the target:\n%s", wout.String())
	}
	start := time.Now()
	waiter.Process.Signal(syscall.SIGINT)
	if err := waiter.Wait(); err == nil {
		t.Fatalf("an interrupted deployer exited 0:\n%s", wout.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the interrupted deployer took %v to stop", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for lockProcs() != "0" {
		if time.Now().After(deadline) {
			t.Fatalf("the interrupted deployer left %s lock processes on the target", lockProcs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("the first deployer failed: %v\n%s", err, out.String())
	}
	if f.generation(host) != 1 {
		t.Fatalf("generation %d", f.generation(host))
	}
	f.lab.Shape(context.Background(), host, lab.Link{})
	healthy(t, f, host)
}

func TestKilledDeployerReleasesLock(t *testing.T) {
	f := newFixture(t)
	slowCopy(t, f, "media-center")
	first, _ := startMage(t, f, "media-center: copy 0 B", "deploy", "media-center", "-", "-lab")
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	f.lab.Shape(context.Background(), "media-center", lab.Link{})
	// The lock goes with the killed deployer's SSH connection.
	var r testutil.Result
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = f.mage("deploy", "media-center", "-", "-lab")
		if r.Code == 0 || time.Now().After(deadline) || !strings.Contains(r.Stderr, "is being deployed by") {
			break
		}
		time.Sleep(time.Second)
	}
	succeeds(t, r)
	if f.generation("media-center") != 1 {
		t.Fatal("not deployed after the lock was released")
	}
}

func TestActivationFailureRollsBack(t *testing.T) {
	f := newFixture(t)
	succeeds(t, f.mage("deploy", "dev-workstation", "-", "-lab"))
	good := f.current("dev-workstation")
	f.setConfig("dev-workstation", `lab.simulate.activation = { exitCode = 4; message = "warning: the following units failed: broken.service"; };`)
	f.commit("broken activation")
	r := f.mage("deploy", "dev-workstation", "-", "-lab")
	failsWith(t, r, "dev-workstation: activate: switch-to-configuration switch exited with status 4; rolled back to generation 1")
	if !strings.Contains(r.Stdout, "dev-workstation  10.77.50.10  rolled back  1") {
		t.Errorf("summary:\n%s", r.Stdout)
	}
	if f.current("dev-workstation") != good || f.generation("dev-workstation") != 1 {
		t.Fatalf("target not back on generation 1: current %s generation %d", f.current("dev-workstation"), f.generation("dev-workstation"))
	}
	// The unit records the rollback it did on the deployer's verdict (in
	// case the deployer is gone before its end record), and says so.
	if h := f.exec("dev-workstation", "cat /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, `"result":"rolled-back"`) || !strings.Contains(h, `"rolledBackTo":1`) ||
		!strings.Contains(h, "rolled back on the deployer's verdict") || strings.Contains(h, "did not confirm") {
		t.Errorf("history:\n%s", h)
	}
	testutil.Edit(t, f.repo, "targets/dev-workstation/configuration.nix", `lab.simulate.activation = { exitCode = 4; message = "warning: the following units failed: broken.service"; };`, "")
	healthy(t, f, "dev-workstation")
}

func TestMagicRollbackWhenSwitchCutsSSH(t *testing.T) {
	f := newFixture(t)
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab"))
	good := f.current("lab-server")
	f.setConfig("lab-server", `lab.simulate.sshd = "stop";`)
	f.commit("a configuration that stops sshd")
	start := time.Now()
	r := f.mage("deploy", "lab-server", "-", "-lab", "-confirmtimeout=6s")
	failsWith(t, r, "the new configuration cut SSH", "the target rolled itself back to generation 1 (magic rollback)")
	if d := time.Since(start); d > 90*time.Second {
		t.Errorf("took %v", d)
	}
	if f.current("lab-server") != good || f.generation("lab-server") != 1 {
		t.Fatalf("not rolled back: current %s generation %d", f.current("lab-server"), f.generation("lab-server"))
	}
	// sshd answers again.
	succeeds(t, f.mage("generations", "lab-server", "-", "-lab"))
	if h := f.exec("lab-server", "cat /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, `"result":"rolled-back"`) || !strings.Contains(h, "rolled back by the target itself") {
		t.Errorf("history:\n%s", h)
	}
	testutil.Edit(t, f.repo, "targets/lab-server/configuration.nix", `lab.simulate.sshd = "stop";`, "")
	healthy(t, f, "lab-server")
}

// setHealth gives a target of the lab inventory health checks.
func setHealth(t *testing.T, f *fixture, host string, checks []inventory.HealthCheck) {
	t.Helper()
	editTarget(t, f, host, func(tg *inventory.Target) { tg.Health = checks })
}

func TestFailingHealthCheckRollsBack(t *testing.T) {
	f := newFixture(t)
	succeeds(t, f.mage("deploy", "media-center", "-", "-lab"))
	good := f.current("media-center")
	f.setConfig("media-center", `environment.etc."marker".text = "unhealthy";`)
	f.commit("next")
	setHealth(t, f, "media-center", []inventory.HealthCheck{
		{Type: "command", Command: "test -L /run/current-system"},
		{Type: "http", Port: 8096, Path: "/health", Timeout: "1s", Retries: 2},
	})
	r := f.mage("deploy", "media-center", "-", "-lab")
	failsWith(t, r, "media-center: health: health check failed: HTTP http://10.77.50.12:8096/health", "connection refused", "rolled back to generation 1")
	if f.current("media-center") != good || f.generation("media-center") != 1 {
		t.Fatalf("not rolled back: generation %d", f.generation("media-center"))
	}
	// -norollback keeps the new generation.
	r = f.mage("deploy", "media-center", "-", "-lab", "-norollback")
	failsWith(t, r, "health check failed", "-norollback")
	if f.generation("media-center") != 2 || f.current("media-center") == good {
		t.Fatalf("-norollback: generation %d\nwatchdogs: %s\nhistory: %s", f.generation("media-center"), f.watchdogs("media-center"),
			f.exec("media-center", "cat /var/lib/nixos-config/history.jsonl 2>/dev/null; true"))
	}
	setHealth(t, f, "media-center", nil)
	healthy(t, f, "media-center")
}

func TestFailFast(t *testing.T) {
	f := newFixture(t)
	testutil.Edit(t, f.repo, "targets/lab-server/configuration.nix", "port = 8888;", `port = 8888 + "x";`)
	f.commit("broken lab-server")
	r := f.mage("deployAll", "-lab", "-jobs=1", "-failfast", "-on=lab-server,media-center")
	failsWith(t, r, "2 of 2 targets failed")
	if !strings.Contains(r.Stdout, "not started: another target failed and -failfast was given") || f.generation("media-center") != 0 {
		t.Errorf("-failfast did not stop media-center:\n%s", r.Stdout)
	}
}
