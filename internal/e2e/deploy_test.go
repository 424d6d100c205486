package e2e

import (
	"regexp"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

func TestDeployOneTarget(t *testing.T) {
	f := newFixture(t)
	want := f.system("lab-server", "")
	r := f.mage("deploy", "lab-server", "-", "-lab")
	succeeds(t, r)
	if got := f.current("lab-server"); got != want {
		t.Fatalf("/run/current-system = %q, want %q", got, want)
	}
	if g := f.generation("lab-server"); g != 1 {
		t.Fatalf("generation %d", g)
	}
	for _, other := range []string{"dev-workstation", "media-center"} {
		if f.current(other) != "" || f.generation(other) != 0 {
			t.Errorf("%s was changed", other)
		}
	}
	// Plain output (not a terminal): timestamped stage lines, no escape codes, a summary.
	for _, want := range []string{"lab-server: preflight", "lab-server: copy", "lab-server: activate", "lab-server: verify", "TARGET", "lab-server  10.77.50.11  ok      1"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "\x1b[") {
		t.Error("escape codes in non-terminal output")
	}
	if !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ lab-server: activate$`).MatchString(r.Stdout) {
		t.Errorf("stage lines are not timestamped:\n%s", r.Stdout)
	}
}

func TestDeployAllInParallelThenNoop(t *testing.T) {
	f := newFixture(t)
	r := f.mage("deployAll", "-lab")
	succeeds(t, r)
	for _, h := range fleetNames {
		if got, want := f.current(h), f.system(h, ""); got != want {
			t.Errorf("%s: current %q, want %q", h, got, want)
		}
		if f.generation(h) != 1 {
			t.Errorf("%s: generation %d", h, f.generation(h))
		}
	}
	// All targets were under way at once: every preflight started before the first finished.
	lines := strings.Split(r.Stdout, "\n")
	firstOK, lastPreflight := len(lines), -1
	for i, l := range lines {
		if strings.HasSuffix(l, ": preflight") {
			lastPreflight = i
		}
		if strings.Contains(l, ": ok (") && i < firstOK {
			firstOK = i
		}
	}
	if lastPreflight > firstOK {
		t.Errorf("targets ran one after another:\n%s", r.Stdout)
	}
	// One evaluator for the fleet: one "systems ready" for all three.
	if !strings.Contains(r.Stdout, "build: 3 systems ready") {
		t.Errorf("no shared build:\n%s", r.Stdout)
	}

	// Unchanged redeploy: nothing copied, no new generation.
	r = f.mage("deployAll", "-lab")
	succeeds(t, r)
	for _, h := range fleetNames {
		if n := f.generations(h); n != 1 {
			t.Errorf("%s has %d generations after a no-op redeploy", h, n)
		}
		if !strings.Contains(r.Stdout, h+": ok (0 paths copied") {
			t.Errorf("%s: something was copied:\n%s", h, r.Stdout)
		}
	}
}

func TestChangedConfigurationOnlyThatTarget(t *testing.T) {
	f := newFixture(t)
	succeeds(t, f.mage("deployAll", "-lab"))
	f.setConfig("media-center", `environment.etc."marker".text = "changed";`)
	f.commit("media-center: a marker file")
	want := f.system("media-center", "")
	r := f.mage("deployAll", "-lab")
	succeeds(t, r)
	if f.generation("media-center") != 2 || f.current("media-center") != want {
		t.Errorf("media-center: generation %d, current %s", f.generation("media-center"), f.current("media-center"))
	}
	for _, h := range []string{"dev-workstation", "lab-server"} {
		if f.generations(h) != 1 {
			t.Errorf("%s got a new generation", h)
		}
	}
}

func TestDeployModes(t *testing.T) {
	f := newFixture(t)
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab"))
	first := f.current("lab-server")
	f.setConfig("lab-server", `environment.etc."marker".text = "next";`)
	f.commit("lab-server: extra database")
	next := f.system("lab-server", "")

	// dry-activate: prints what would change, changes nothing.
	r := f.mage("deploy", "lab-server", "-", "-lab", "-mode=dry-activate")
	succeeds(t, r)
	if f.current("lab-server") != first || f.generations("lab-server") != 1 {
		t.Fatal("dry-activate changed the target")
	}
	// boot: new generation and boot entry, running system unchanged.
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab", "-mode=boot"))
	if f.current("lab-server") != first || f.generation("lab-server") != 2 {
		t.Fatalf("boot: current %s generation %d", f.current("lab-server"), f.generation("lab-server"))
	}
	if entry := f.exec("lab-server", "readlink /var/lib/nixos-double/default-boot-entry"); entry != next {
		t.Fatalf("boot entry %s", entry)
	}
	// test: running system changes, no new generation.
	f.exec("lab-server", "rm /nix/var/nix/profiles/system && ln -s system-1-link /nix/var/nix/profiles/system && rm /nix/var/nix/profiles/system-2-link")
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab", "-mode=test"))
	if f.current("lab-server") != next || f.generations("lab-server") != 1 || f.generation("lab-server") != 1 {
		t.Fatalf("test: current %s, generations %d", f.current("lab-server"), f.generations("lab-server"))
	}
	if r := f.mage("deploy", "lab-server", "-", "-lab", "-mode=reboot"); r.Code == 0 || !strings.Contains(testutil.ErrorLine(r), `invalid mode "reboot"`) {
		t.Errorf("invalid mode: %s", r.Combined())
	}
}

func TestDeployOlderRevision(t *testing.T) {
	f := newFixture(t)
	f.setConfig("media-center", `environment.etc."marker".text = "older";`)
	older := f.commit("older")
	olderSystem := f.system("media-center", older)
	f.setConfig("media-center", `environment.etc."marker2".text = "newer";`)
	f.commit("newer")
	if f.system("media-center", "") == olderSystem {
		t.Fatal("the two commits build the same system")
	}
	r := f.mage("deploy", "media-center", "-", "-lab", "-rev="+older[:10])
	succeeds(t, r)
	if got := f.current("media-center"); got != olderSystem {
		t.Fatalf("deployed %s, want the older commit's %s", got, olderSystem)
	}
	if r := f.mage("deploy", "media-center", "-", "-lab", "-rev=no-such-rev"); r.Code == 0 || !strings.Contains(testutil.ErrorLine(r), `unknown git revision "no-such-rev"`) {
		t.Errorf("unknown rev: %s", r.Combined())
	}
}

func TestDirtyTreeRefused(t *testing.T) {
	f := newFixture(t)
	testutil.Edit(t, f.repo, "targets/lab-server/configuration.nix", "port = 8888;", "port = 8889;")
	r := f.mage("deploy", "lab-server", "-", "-lab")
	failsWith(t, r, "uncommitted changes", "-allowdirty")
	if f.generation("lab-server") != 0 {
		t.Fatal("a dirty tree was deployed")
	}
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab", "-allowdirty"))
	if f.current("lab-server") != f.system("lab-server", "") {
		t.Fatal("-allowdirty did not deploy the work tree")
	}
}
