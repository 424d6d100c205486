package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// fixture: a committed copy of the repository wired to the shared lab
// (its .lab is the lab's state directory), with the lab targets reset to
// "never deployed".
type fixture struct {
	t    *testing.T
	lab  *lab.Lab
	repo string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	requireLabPrereqs(t)
	requireNix(t)
	if deployLab == nil {
		t.Fatal("the deploy lab did not start (see TestMain output)")
	}
	return newFixtureOn(t, deployLab, fleetNames)
}

func newFixtureOn(t *testing.T, l *lab.Lab, hosts []string) *fixture {
	t.Helper()
	f := &fixture{t: t, lab: l, repo: testutil.CopyRepo(t)}
	if err := os.Symlink(l.Config().StateDir, filepath.Join(f.repo, ".lab")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, h := range hosts {
		out, err := f.lab.Exec(ctx, h, "sh", "-c", resetTarget)
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(out); s != "" {
			t.Logf("%s: stopped an activation unit an earlier test left: %s", h, s)
		}
	}
	return f
}

// resetTarget makes a lab target "never deployed". Activation units an
// earlier test left running (abandoned or killed deployers: they wait for a
// verdict and may roll back by themselves) are stopped first, or one could
// roll the target back in the middle of an unrelated test (once the cause
// of TestFailingHealthCheckRollsBack's "-norollback: generation 1" under
// load, with the former watchdog).
const resetTarget = `for p in /proc/[0-9]*; do
	case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in
	"/bin/sh /run/nixos-config/"* | "flock -o -n -E 96 /run/nixos-config.activate.lock "*)
		tr '\0' ' ' < "$p/cmdline"
		kill -9 "${p#/proc/}" 2>/dev/null
		;;
	esac
done
rm -rf /run/current-system /nix/var/nix/profiles/system /nix/var/nix/profiles/system-*-link /var/lib/nixos-double /var/lib/nixos-config /run/nixos-config /run/nixos-config.lock.info /run/nixos-config.activate.info`

// watchdogs lists the activation units running on a target (each waits
// for its deployer's verdict, and rolls back when nobody confirms), for
// failure messages.
func (f *fixture) watchdogs(host string) string {
	return f.exec(host, `for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null); case "$c" in "/bin/sh /run/nixos-config/"*) echo "running: $c" ;; esac; done; true`)
}

func (f *fixture) mage(args ...string) testutil.Result {
	f.t.Helper()
	return testutil.Run(f.t, f.repo, nil, testutil.MageBinary(f.t), args...)
}

func (f *fixture) mageStdin(stdin string, args ...string) testutil.Result {
	f.t.Helper()
	return testutil.RunInput(f.t, f.repo, nil, stdin, testutil.MageBinary(f.t), args...)
}

// exec runs a command as root inside a lab target.
func (f *fixture) exec(host, script string) string {
	f.t.Helper()
	out, err := f.lab.Exec(context.Background(), host, "sh", "-c", script)
	if err != nil {
		f.t.Fatalf("%s: %s: %v", host, script, err)
	}
	return strings.TrimSpace(out)
}

// current is the target's /run/current-system ("" when none).
func (f *fixture) current(host string) string {
	return f.exec(host, "readlink /run/current-system || true")
}

// generation is the target's current system generation (0: none).
func (f *fixture) generation(host string) int {
	return lab.GenerationOf(f.exec(host, "readlink /nix/var/nix/profiles/system || true"))
}

// generations counts the target's system generations.
func (f *fixture) generations(host string) int {
	out := f.exec(host, "ls -d /nix/var/nix/profiles/system-*-link 2>/dev/null | wc -l")
	n, _ := strconv.Atoi(out)
	return n
}

func (f *fixture) commit(msg string) string {
	testutil.Git(f.t, f.repo, "add", "-A", "targets")
	testutil.Commit(f.t, f.repo, msg)
	return strings.TrimSpace(testutil.Git(f.t, f.repo, "rev-parse", "HEAD"))
}

// system is the store path the double builds for a target at a revision
// ("" for the work tree).
func (f *fixture) system(target, rev string) string {
	f.t.Helper()
	fl := nix.Flake{Dir: f.repo, Nixpkgs: filepath.Join(f.repo, nix.DoubleDir), Rev: rev}
	args := append(append(nix.GlobalArgs(true), "build", "--no-link", "--json",
		fl.Ref()+"#"+nix.Toplevel(target)), fl.Args()...)
	out, err := exec.Command("nix", args...).Output()
	if err != nil {
		f.t.Fatalf("nix build %s: %v", target, err)
	}
	var res []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 {
		f.t.Fatalf("nix build output: %s", out)
	}
	return res[0].Outputs["out"]
}

// setConfig appends Nix attributes to a target's configuration (inside its
// top-level attribute set).
func (f *fixture) setConfig(target, attrs string) {
	f.t.Helper()
	p := filepath.Join(f.repo, "targets", target, "configuration.nix")
	data, err := os.ReadFile(p)
	if err != nil {
		f.t.Fatal(err)
	}
	s := strings.TrimRight(string(data), "\n")
	if !strings.HasSuffix(s, "}") {
		f.t.Fatalf("%s does not end with }", p)
	}
	s = s[:len(s)-1] + "  " + attrs + "\n}\n"
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) host(name string) lab.Host {
	h, err := f.lab.Host(name)
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

// failsWith asserts a non-zero exit and one Error: line containing wants.
func failsWith(t *testing.T, r testutil.Result, wants ...string) {
	t.Helper()
	assertFails(t, r, wants...)
}

func succeeds(t *testing.T, r testutil.Result) {
	t.Helper()
	if r.Code != 0 {
		t.Fatalf("exit %d:\n%s", r.Code, r.Combined())
	}
}

// syncBuilder is a strings.Builder safe for a process writing while the
// test reads.
type syncBuilder struct {
	mu sync.Mutex
	strings.Builder
}

func (b *syncBuilder) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Builder.Write(p)
}

func (b *syncBuilder) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Builder.String()
}
