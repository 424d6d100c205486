package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

func requireLabPrereqs(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	missing := lab.Prerequisites()
	testutil.Require(t, len(missing) == 0, "the lab needs %s", strings.Join(missing, ", "))
}

func mage(t *testing.T, dir string, args ...string) testutil.Result {
	t.Helper()
	return testutil.Run(t, dir, nil, testutil.MageBinary(t), args...)
}

func TestMageLabUpStatusFaultDown(t *testing.T) {
	requireLabPrereqs(t)
	dir := testutil.CopyRepo(t)
	t.Cleanup(func() { mage(t, dir, "lab:down") })

	r := mage(t, dir, "lab:up", "-n=2", "-name=e2l", "-subnet=10.77.40.0/24")
	if r.Code != 0 {
		t.Fatalf("lab:up: %s", r.Combined())
	}
	for _, want := range []string{
		"dev-workstation  10.77.40.10", "lab-server       10.77.40.11",
		"stranger", "not in inventory", "SIMULATED targets",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("lab:up output lacks %q:\n%s", want, r.Stdout)
		}
	}
	// The files deployers use.
	for _, f := range []string{"inventory.json", "known_hosts", "id_ed25519"} {
		if _, err := os.Stat(filepath.Join(dir, ".lab", f)); err != nil {
			t.Errorf("missing .lab/%s", f)
		}
	}
	if r := mage(t, dir, "targets", "-inventory=.lab/inventory.json"); r.Code != 0 || !strings.Contains(r.Stdout, "lab-server       10.77.40.11  monibahmed") {
		t.Errorf("targets of the lab inventory: %s", r.Combined())
	}
	if r := mage(t, dir, "lab:fault", "lab-server", "sshd-stop"); r.Code != 0 {
		t.Fatalf("lab:fault: %s", r.Combined())
	}
	r = mage(t, dir, "lab:status")
	if !regexp.MustCompile(`lab-server\s+10\.77\.40\.11\s+target\s+up\s+down\s+up`).MatchString(r.Stdout) {
		t.Errorf("status after sshd-stop:\n%s", r.Stdout)
	}
	// Up again restores the services of kept hosts.
	if r := mage(t, dir, "lab:up", "-n=2"); r.Code != 0 || !regexp.MustCompile(`lab-server\s+10\.77\.40\.11\s+target\s+up\s+up\s+up`).MatchString(r.Stdout) {
		t.Errorf("second lab:up:\n%s", r.Combined())
	}
	if r := mage(t, dir, "lab:fault", "lab-server", "warp-drive"); r.Code == 0 || !strings.Contains(testutil.ErrorLine(r), `unknown knob "warp-drive"`) {
		t.Errorf("unknown knob: %s", r.Combined())
	}
	if r := mage(t, dir, "lab:down"); r.Code != 0 {
		t.Fatalf("lab:down: %s", r.Combined())
	}
	if _, err := os.Stat(filepath.Join(dir, ".lab")); !os.IsNotExist(err) {
		t.Errorf(".lab left behind")
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "e2l-") {
			t.Errorf("namespace %s left", e.Name())
		}
	}
	if r := mage(t, dir, "lab:down"); r.Code != 0 || !strings.Contains(r.Stdout, "nothing to remove") {
		t.Errorf("second lab:down: %s", r.Combined())
	}
}
