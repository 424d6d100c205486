package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// The systemd lab: one target, lab-server, that boots systemd as PID 1
// (systemd-nspawn), as real NixOS machines do. Started by the first test
// that needs it, removed by TestMain; its name and subnet are its own.
var (
	systemdLabOnce sync.Once
	systemdLabInst *lab.Lab
	systemdLabDir  string
	systemdLabErr  error
)

const systemdTarget = "lab-server"

// requireSystemdPrereqs fails in CI (skips elsewhere) when this machine
// cannot boot systemd lab hosts.
func requireSystemdPrereqs(t *testing.T) {
	t.Helper()
	requireLabPrereqs(t)
	cache, err := lab.DefaultRootCache()
	if err != nil {
		t.Fatal(err)
	}
	missing := lab.SystemdPrerequisites(lab.SystemdRootReady(cache, lab.DebianSuite()))
	testutil.Require(t, len(missing) == 0, "systemd lab hosts need %s (apt-get install %s)", strings.Join(missing, ", "), strings.Join(lab.SystemdPackages, " "))
}

func systemdLab(t *testing.T) *lab.Lab {
	t.Helper()
	requireSystemdPrereqs(t)
	requireNix(t)
	systemdLabOnce.Do(func() {
		systemdLabDir, systemdLabErr = os.MkdirTemp("", "e2e-systemd-lab-")
		if systemdLabErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		systemdLabInst, systemdLabErr = lab.Start(ctx, lab.Config{Name: "e2s", StateDir: filepath.Join(systemdLabDir, "state"), Subnet: "10.77.51.0/24",
			Targets: []string{systemdTarget}, Systemd: []string{systemdTarget}}, run.Exec{})
		t.Logf("systemd lab up in %v", time.Since(start).Round(10*time.Millisecond))
	})
	if systemdLabErr != nil {
		t.Fatalf("the systemd lab did not start: %v", systemdLabErr)
	}
	return systemdLabInst
}

func stopSystemdLab() {
	if systemdLabInst != nil {
		if err := systemdLabInst.Down(context.Background()); err != nil {
			fmt.Println("systemd lab down:", err)
		}
	}
	if systemdLabDir != "" {
		os.RemoveAll(systemdLabDir)
	}
}

// newSystemdFixture is a fixture on the systemd lab, its target reset to
// "never deployed": no activation unit an earlier test left waiting, sshd
// running, no failed units.
func newSystemdFixture(t *testing.T) *fixture {
	t.Helper()
	l := systemdLab(t)
	if _, err := l.Exec(context.Background(), systemdTarget, "systemctl", "stop", "nixos-config-2*"); err != nil {
		t.Fatal(err)
	}
	f := newFixtureOn(t, l, []string{systemdTarget})
	f.exec(systemdTarget, "systemctl reset-failed; rm -rf /run/systemd/system/sshd.service.d; systemctl daemon-reload; systemctl start sshd.service; systemctl is-system-running")
	return f
}

// unitRE is an activation unit: nixos-config-<deployment id>.service.
var unitRE = regexp.MustCompile(`^nixos-config-\d{8}T\d{6}-[0-9a-f]{8}\.service$`)

func unitOf(id string) string { return "nixos-config-" + id + ".service" }

// activations are the double's activation log entries: mode, system, exit
// code and the unit the switch ran in.
type activationEntry struct{ mode, system, code, unit string }

func (f *fixture) activations(host string) []activationEntry {
	f.t.Helper()
	var out []activationEntry
	for _, line := range strings.Split(f.exec(host, "cat /var/lib/nixos-double/activations.log 2>/dev/null || true"), "\n") {
		if fs := strings.Fields(line); len(fs) == 5 {
			out = append(out, activationEntry{fs[1], fs[2], fs[3], fs[4]})
		}
	}
	return out
}

// journal is what the target's journal says about a unit.
func (f *fixture) journal(host, unit string) string {
	f.t.Helper()
	return f.exec(host, "journalctl --no-pager -o cat -u "+run.Quote(unit))
}

// deployIDs are the ids of the deployments in the target's history (each
// one's activation unit is nixos-config-<id>.service).
func (f *fixture) deployIDs(host string) []string {
	f.t.Helper()
	return f.historyIDs(host, "deploy")
}

// historyIDs are the ids of the target's history records of a kind
// ("deploy", "rollback"), oldest first.
func (f *fixture) historyIDs(host, kind string) []string {
	f.t.Helper()
	var ids []string
	for _, line := range strings.Split(f.exec(host, "cat /var/lib/nixos-config/history.jsonl"), "\n") {
		var e struct{ ID, Kind string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Kind == kind {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

func TestSystemdDeployActivatesInTransientUnits(t *testing.T) {
	f := newSystemdFixture(t)
	start := time.Now()
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	t.Logf("first deploy to the systemd host: %v", time.Since(start))
	first := f.current(systemdTarget)
	if f.generation(systemdTarget) != 1 || first != f.system(systemdTarget, "") {
		t.Fatalf("generation %d, current %s", f.generation(systemdTarget), first)
	}
	acts := f.activations(systemdTarget)
	if ids := f.deployIDs(systemdTarget); len(acts) != 1 || len(ids) != 1 || acts[0].mode != "switch" || acts[0].system != first || acts[0].code != "0" || acts[0].unit != unitOf(ids[0]) {
		t.Fatalf("activation not in its transient unit: %+v (deployments %v)", acts, ids)
	}
	// systemd ran it: the journal has the unit.
	if j := f.journal(systemdTarget, acts[0].unit); !strings.Contains(j, "Started") {
		t.Errorf("journal of %s: %q", acts[0].unit, j)
	}

	// The second deployment has magic rollback: its unit waits for the
	// deployer's new connection; confirmed, it ends without rolling back.
	f.setConfig(systemdTarget, `environment.etc."marker".text = "2";`)
	f.commit("second")
	start = time.Now()
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	t.Logf("second deploy to the systemd host: %v", time.Since(start))
	if f.generation(systemdTarget) != 2 || f.current(systemdTarget) == first {
		t.Fatalf("second deploy: generation %d", f.generation(systemdTarget))
	}
	ids := f.deployIDs(systemdTarget)
	if len(ids) != 2 {
		t.Fatalf("deployments in the history: %v", ids)
	}
	if j := f.journal(systemdTarget, unitOf(ids[1])); !strings.Contains(j, "Started") {
		t.Errorf("the unit of %s did not run: %q", ids[1], j)
	}
	if acts := f.activations(systemdTarget); len(acts) != 2 || acts[1].unit != unitOf(ids[1]) {
		t.Errorf("activations: %+v", acts)
	}
	if st := f.exec(systemdTarget, "systemctl is-system-running; grep -c rolled-back /var/lib/nixos-config/history.jsonl || true"); st != "running\n0" {
		t.Errorf("after the deploy: %q", st)
	}
	// status sees it up to date over SSH like any target.
	r := f.mage("status", "-lab")
	succeeds(t, r)
	if !regexp.MustCompile(`lab-server\s+10\.77\.51\.10\s+yes\s+2\s+\S+\s+up to date`).MatchString(r.Stdout) {
		t.Errorf("status:\n%s", r.Stdout)
	}
}

// `mage rollback` on a systemd host: the previous generation is switched
// to in a transient unit of its own (nixos-config-<rollback id>.service).
func TestSystemdManualRollback(t *testing.T) {
	f := newSystemdFixture(t)
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	first := f.current(systemdTarget)
	f.setConfig(systemdTarget, `environment.etc."marker".text = "2";`)
	f.commit("second")
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	if f.generation(systemdTarget) != 2 || f.current(systemdTarget) == first {
		t.Fatalf("second deploy: generation %d, current %s", f.generation(systemdTarget), f.current(systemdTarget))
	}

	succeeds(t, f.mage("rollback", systemdTarget, "-", "-lab"))
	if f.generation(systemdTarget) != 1 || f.current(systemdTarget) != first {
		t.Fatalf("rollback: generation %d, current %s, want 1, %s", f.generation(systemdTarget), f.current(systemdTarget), first)
	}
	ids := f.historyIDs(systemdTarget, "rollback")
	if len(ids) != 1 {
		t.Fatalf("rollbacks in the history: %v", ids)
	}
	acts := f.activations(systemdTarget)
	if len(acts) != 3 || acts[2].mode != "switch" || acts[2].system != first || acts[2].code != "0" || acts[2].unit != unitOf(ids[0]) || !unitRE.MatchString(acts[2].unit) {
		t.Fatalf("the rollback's switch not in its transient unit %s: %+v", unitOf(ids[0]), acts)
	}
	if j := f.journal(systemdTarget, unitOf(ids[0])); !strings.Contains(j, "Started") {
		t.Errorf("the rollback's unit did not run under systemd: %q", j)
	}
	if h := f.exec(systemdTarget, "tail -n 1 /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, `"id":"`+ids[0]+`"`) || !strings.Contains(h, `"result":"ok"`) {
		t.Errorf("the rollback's end record: %s", h)
	}
	if st := f.exec(systemdTarget, "systemctl is-system-running || true"); st != "running" {
		t.Errorf("after the rollback the system is %s", st)
	}
}

func TestSystemdActivationFailureRollsBack(t *testing.T) {
	f := newSystemdFixture(t)
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	good := f.current(systemdTarget)
	f.setConfig(systemdTarget, `lab.simulate.activation = { exitCode = 4; message = "warning: the following units failed: broken.service"; };`)
	f.commit("broken activation")
	r := f.mage("deploy", systemdTarget, "-", "-lab")
	failsWith(t, r, "lab-server: activate: switch-to-configuration switch exited with status 4; rolled back to generation 1")
	if !strings.Contains(r.Combined(), "the following units failed: broken.service") {
		t.Errorf("the unit's output did not reach the deployer:\n%s", r.Combined())
	}
	if f.current(systemdTarget) != good || f.generation(systemdTarget) != 1 {
		t.Fatalf("not back on generation 1: current %s generation %d", f.current(systemdTarget), f.generation(systemdTarget))
	}
	// The failed switch and the rollback's switch both ran in the
	// deployment's activation unit (which holds the target's lock).
	acts := f.activations(systemdTarget)
	if len(acts) != 3 || acts[1].code != "4" || acts[2].system != good || acts[2].code != "0" {
		t.Fatalf("activations: %+v", acts)
	}
	ids := f.deployIDs(systemdTarget)
	for _, a := range acts[1:] {
		if len(ids) != 2 || a.unit != unitOf(ids[1]) {
			t.Errorf("not in the deployment's unit (%v): %+v", ids, a)
		}
	}
	if h := f.exec(systemdTarget, "cat /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, `"result":"rolled-back"`) {
		t.Errorf("history:\n%s", h)
	}
}

func TestSystemdMagicRollbackWhenSwitchStopsSSHD(t *testing.T) {
	f := newSystemdFixture(t)
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	good := f.current(systemdTarget)
	f.setConfig(systemdTarget, `lab.simulate.sshd = "stop";`)
	f.commit("a configuration that stops sshd")
	start := time.Now()
	r := f.mage("deploy", systemdTarget, "-", "-lab", "-confirmtimeout=6s")
	t.Logf("magic rollback on the systemd host: %v", time.Since(start))
	failsWith(t, r, "the new configuration cut SSH", "the target rolled itself back to generation 1 (magic rollback)")
	if f.current(systemdTarget) != good || f.generation(systemdTarget) != 1 {
		t.Fatalf("not rolled back: current %s generation %d", f.current(systemdTarget), f.generation(systemdTarget))
	}
	if st := f.exec(systemdTarget, "systemctl is-active sshd.service"); st != "active" {
		t.Errorf("sshd.service after the rollback: %s", st)
	}
	if h := f.exec(systemdTarget, "cat /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, "rolled back by the target itself") {
		t.Errorf("history: %s", h)
	}
	// The cutting switch and the target's own rollback ran in the
	// deployment's activation unit.
	acts := f.activations(systemdTarget)
	ids := f.deployIDs(systemdTarget)
	if len(acts) != 3 || len(ids) != 2 || acts[1].unit != unitOf(ids[1]) || acts[2].system != good || acts[2].unit != unitOf(ids[1]) {
		t.Fatalf("activations %+v, deployments %v", acts, ids)
	}
	succeeds(t, f.mage("generations", systemdTarget, "-", "-lab"))
}

func TestSystemdDegradedSystemRollsBack(t *testing.T) {
	f := newSystemdFixture(t)
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	good := f.current(systemdTarget)
	// A service that fails right after the switch: the switch succeeds,
	// `systemctl is-system-running` says degraded.
	f.setConfig(systemdTarget, `lab.simulate.failingUnit = "media-indexer";`)
	f.commit("a service that crashes")
	r := f.mage("deploy", systemdTarget, "-", "-lab")
	failsWith(t, r, "lab-server: health: the system is degraded: failed units: media-indexer.service", "rolled back to generation 1")
	if f.current(systemdTarget) != good || f.generation(systemdTarget) != 1 {
		t.Fatalf("not rolled back: current %s generation %d", f.current(systemdTarget), f.generation(systemdTarget))
	}
	acts := f.activations(systemdTarget)
	if len(acts) != 3 || acts[1].code != "0" || !unitRE.MatchString(acts[2].unit) || acts[2].system != good {
		t.Fatalf("activations: %+v", acts)
	}
	// The previous system's switch forgot the failed unit.
	if st := f.exec(systemdTarget, "systemctl is-system-running || true"); st != "running" {
		t.Errorf("after the rollback the system is %s", st)
	}
}

func TestSystemdFailingHealthCheckRollsBack(t *testing.T) {
	f := newSystemdFixture(t)
	succeeds(t, f.mage("deploy", systemdTarget, "-", "-lab"))
	good := f.current(systemdTarget)
	f.setConfig(systemdTarget, `environment.etc."marker".text = "unhealthy";`)
	f.commit("next")
	setHealth(t, f, systemdTarget, []inventory.HealthCheck{
		{Type: "command", Command: "systemctl is-active --quiet nix-daemon.service"},
		{Type: "command", Command: "systemctl is-active --quiet jellyfin.service", Timeout: "2s", Retries: 1},
	})
	r := f.mage("deploy", systemdTarget, "-", "-lab")
	failsWith(t, r, `lab-server: health: health check failed: command "systemctl is-active --quiet jellyfin.service" on lab-server`, "rolled back to generation 1")
	if f.current(systemdTarget) != good || f.generation(systemdTarget) != 1 {
		t.Fatalf("not rolled back: current %s generation %d", f.current(systemdTarget), f.generation(systemdTarget))
	}
	if acts := f.activations(systemdTarget); len(acts) != 3 || !unitRE.MatchString(acts[2].unit) || acts[2].system != good {
		t.Fatalf("activations: %+v", acts)
	}
}

func TestMageLabUpSystemd(t *testing.T) {
	requireSystemdPrereqs(t)
	dir := testutil.CopyRepo(t)
	t.Cleanup(func() { mage(t, dir, "lab:down") })
	if r := mage(t, dir, "lab:up", "-n=2", "-systemd=3"); r.Code == 0 || !strings.Contains(testutil.ErrorLine(r), "-systemd=3: the lab has 2 targets") {
		t.Errorf("-systemd=3 of 2: %s", r.Combined())
	}
	if r := mage(t, dir, "lab:up", "-n=2", "-systemd=media-center"); r.Code == 0 || !strings.Contains(testutil.ErrorLine(r), `-systemd: "media-center" is not a lab target`) {
		t.Errorf("-systemd with another name: %s", r.Combined())
	}
	r := mage(t, dir, "lab:up", "-n=2", "-name=e2m", "-subnet=10.77.41.0/24", "-systemd=lab-server")
	if r.Code != 0 {
		t.Fatalf("lab:up -systemd: %s", r.Combined())
	}
	sd := regexp.MustCompile(`lab-server\s+10\.77\.41\.11\s+target, systemd running\s+up\s+up\s+up`)
	plain := regexp.MustCompile(`dev-workstation\s+10\.77\.41\.10\s+target\s+up\s+up\s+up`)
	if !strings.Contains(r.Stdout, "2 targets (1 with systemd: lab-server)") || !sd.MatchString(r.Stdout) || !plain.MatchString(r.Stdout) {
		t.Errorf("lab:up -systemd output:\n%s", r.Stdout)
	}
	// A knob: sshd.service stopped, through systemctl.
	if r := mage(t, dir, "lab:fault", "lab-server", "sshd-stop"); r.Code != 0 {
		t.Fatalf("lab:fault: %s", r.Combined())
	}
	r = mage(t, dir, "lab:status")
	if !regexp.MustCompile(`lab-server\s+10\.77\.41\.11\s+target, systemd running\s+up\s+down\s+up`).MatchString(r.Stdout) {
		t.Errorf("status after sshd-stop:\n%s", r.Stdout)
	}
	// Up again without -systemd keeps the systemd host and restarts sshd.service.
	if r := mage(t, dir, "lab:up", "-n=2"); r.Code != 0 || !sd.MatchString(r.Stdout) {
		t.Errorf("second lab:up:\n%s", r.Combined())
	}
	// -systemd= turns it back into a plain host.
	if r := mage(t, dir, "lab:up", "-n=2", "-systemd="); r.Code != 0 || !regexp.MustCompile(`lab-server\s+10\.77\.41\.11\s+target\s+up\s+up\s+up`).MatchString(r.Stdout) {
		t.Errorf("lab:up -systemd=:\n%s", r.Combined())
	}
	if r := mage(t, dir, "lab:down"); r.Code != 0 {
		t.Fatalf("lab:down: %s", r.Combined())
	}
}

// With a sudo password (given to sudo's prompt only), the activation unit
// still starts, its output reaches the deployer and it rolls back.
func TestSystemdDeployWithSudoPassword(t *testing.T) {
	f := newSystemdFixture(t)
	ctx := context.Background()
	const pw = "Pw-systemd-host-51c2"
	if err := f.lab.RequireSudoPassword(ctx, systemdTarget, pw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.PasswordlessSudo(ctx, systemdTarget) })
	succeeds(t, f.mageStdin(pw+"\n", "deploy", systemdTarget, "-", "-lab", "-asksudo"))
	good := f.current(systemdTarget)
	f.setConfig(systemdTarget, `lab.simulate.activation = { exitCode = 4; message = "warning: the following units failed: broken.service"; };`)
	f.commit("broken activation")
	r := f.mageStdin(pw+"\n", "deploy", systemdTarget, "-", "-lab", "-asksudo")
	failsWith(t, r, "switch-to-configuration switch exited with status 4; rolled back to generation 1")
	if !strings.Contains(r.Combined(), "the following units failed: broken.service") {
		t.Errorf("the unit's output did not reach the deployer:\n%s", r.Combined())
	}
	if f.current(systemdTarget) != good {
		t.Fatalf("not rolled back: %s", f.current(systemdTarget))
	}
	acts := f.activations(systemdTarget)
	if len(acts) != 3 {
		t.Fatalf("activations: %+v", acts)
	}
	for _, a := range acts {
		if !unitRE.MatchString(a.unit) {
			t.Errorf("not in a transient unit: %+v", a)
		}
	}
	ids := f.deployIDs(systemdTarget)
	if len(ids) != 2 {
		t.Fatalf("deployments: %v", ids)
	}
	if j := f.journal(systemdTarget, unitOf(ids[1])); !strings.Contains(j, "Started") {
		t.Errorf("the activation did not run as a unit: %q", j)
	}
}
