package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

// The fault suite: each test reproduces a fault a deployment must survive
// and checks that afterwards, with no manual step, the target is on a
// working generation, unlocked, its history complete, and the next
// deployment succeeds (see healthy).

// healthy checks the state every fault must leave a target in.
func healthy(t *testing.T, f *fixture, host string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		locks := f.exec(host, "for l in /run/nixos-config.lock /run/nixos-config.activate.lock; do [ -e $l ] || continue; flock -n $l true || echo held $l; done")
		if locks == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still locked: %s", host, locks)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if cur := f.current(host); cur != "" {
		if sys := f.exec(host, "readlink -f /nix/var/nix/profiles/system || true"); f.generation(host) > 0 && sys != cur {
			t.Errorf("%s runs %s but its profile is %s", host, cur, sys)
		}
	}
	// Every history record has its end (no "activating" left behind).
	h := f.exec(host, "cat /var/lib/nixos-config/history.jsonl 2>/dev/null || true")
	for _, line := range strings.Split(h, "\n") {
		if strings.Contains(line, `"result":"activating"`) {
			id := line[strings.Index(line, `"id":"`)+6:]
			id = id[:strings.IndexByte(id, '"')]
			if strings.Count(h, `"id":"`+id+`"`) < 2 {
				t.Errorf("%s: deployment %s has no end in the history:\n%s", host, id, h)
			}
		}
	}
	if perm := f.exec(host, "stat -c %a /var/lib/nixos-config /var/lib/nixos-config/history.jsonl 2>/dev/null || true"); perm != "" && perm != "700\n600" {
		t.Errorf("%s: history permissions %q, want 700 and 600", host, perm)
	}
	// The next deployment works.
	f.setConfig(host, fmt.Sprintf(`environment.etc."after-fault-%d".text = "x";`, time.Now().UnixNano()))
	f.commit("after the fault")
	before := f.generation(host)
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	if f.generation(host) <= before || f.current(host) != f.system(host, "") {
		t.Errorf("%s: generation %d (before %d), current %s after the next deployment", host, f.generation(host), before, f.current(host))
	}
}

// blockActivations makes the double's switch-to-configuration block (its
// activation log becomes a FIFO nobody reads) until the returned function
// is called.
func blockActivations(t *testing.T, f *fixture, host string) func() {
	t.Helper()
	f.exec(host, "mkdir -p /var/lib/nixos-double; rm -f /var/lib/nixos-double/activations.log; mkfifo /var/lib/nixos-double/activations.log")
	done := false
	unblock := func() {
		if done {
			return
		}
		done = true
		// Read what the blocked switch writes, then back to a plain file.
		f.exec(host, "timeout 5 cat /var/lib/nixos-double/activations.log >/dev/null || true; rm -f /var/lib/nixos-double/activations.log")
	}
	t.Cleanup(unblock)
	return unblock
}

// deployedThenBlocked deploys host, commits a new system for it (a file
// named after tag) and blocks the target's next activation. It returns the
// system the target runs and the function that unblocks it.
func deployedThenBlocked(t *testing.T, f *fixture, host, tag string) (string, func()) {
	t.Helper()
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	good := f.current(host)
	f.setConfig(host, fmt.Sprintf(`environment.etc."%s".text = "%d";`, tag, time.Now().UnixNano()))
	f.commit(tag)
	return good, blockActivations(t, f, host)
}

// awaitSelfRollback waits (up to 40 s) until host runs good again and its
// history records that its activation unit rolled back by itself.
func awaitSelfRollback(t *testing.T, f *fixture, host, good string) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for f.current(host) != good || !strings.Contains(f.exec(host, "cat /var/lib/nixos-config/history.jsonl"), "rolled back by the target itself") {
		if time.Now().After(deadline) {
			t.Fatalf("not rolled back by the target itself: current %s\n%s", f.current(host), f.exec(host, "cat /var/lib/nixos-config/history.jsonl"))
		}
		time.Sleep(time.Second)
	}
}

// 1. The sudo password never lands anywhere on the target, whatever the
// sudoers policy: after two deployments per variant, no file holds it.
func TestFaultSudoPasswordNeverOnDisk(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const host = "dev-workstation"
	// Made at run time: no file holds it unless the run wrote it.
	pw := fmt.Sprintf("Pw-never-on-disk-%x", time.Now().UnixNano())
	if err := f.lab.RequireSudoPassword(ctx, host, pw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.lab.PasswordlessSudo(ctx, host) })
	start := time.Now()
	variants := []struct{ name, lines, fails string }{
		{"default", "", ""},
		{"!tty_tickets (cached credentials)", "Defaults:monibahmed !tty_tickets", ""},
		{"timestamp_timeout=0 (asks every time)", "Defaults:monibahmed timestamp_timeout=0", ""},
		{"NOPASSWD for sh", "monibahmed ALL=(ALL) NOPASSWD: /bin/sh, /usr/bin/sh", ""},
		{"use_pty", "Defaults use_pty", ""},
		{"requiretty", "Defaults requiretty", "requires a terminal (Defaults requiretty)"},
	}
	for _, v := range variants {
		if err := f.lab.SudoersExtra(ctx, host, v.lines); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		for i := 0; i < 2; i++ {
			f.setConfig(host, fmt.Sprintf(`environment.etc."variant-%d".text = "%s %d";`, time.Now().UnixNano(), strings.ReplaceAll(v.name, `"`, ""), i))
			f.commit(v.name)
			r := f.mageStdin(pw+"\n", "deploy", host, "-", "-lab", "-asksudo")
			if v.fails != "" {
				failsWith(t, r, v.fails)
			} else if r.Code != 0 {
				t.Fatalf("%s: deploy %d failed:\n%s", v.name, i, r.Combined())
			}
			if strings.Contains(r.Combined(), pw) {
				t.Fatalf("%s: the password is in the output", v.name)
			}
		}
		if hit := filesHolding(t, f.host(host).Dir, []byte(pw), start); len(hit) > 0 {
			t.Fatalf("%s: the password is in %v", v.name, hit)
		}
	}
	if hit := filesHolding(t, os.TempDir(), []byte(pw), start); len(hit) > 0 {
		t.Fatalf("the password is in %v", hit)
	}
	f.lab.SudoersExtra(ctx, host, "")
	f.lab.PasswordlessSudo(ctx, host)
	healthy(t, f, host)
}

// filesHolding lists the files under dir that contain needle among those
// whose status changed since start (ctime: nobody can set it back, unlike
// the mtime, which Nix sets to 1 in the store). The store is read too:
// its paths added since start are new files.
func filesHolding(t *testing.T, dir string, needle []byte, since time.Time) []string {
	t.Helper()
	var hit []string
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == "go-build" || strings.HasPrefix(d.Name(), "go-build")) {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && time.Unix(st.Ctim.Sec, st.Ctim.Nsec).Before(since) {
			return nil
		}
		found, err := fileContains(p, needle)
		if err == nil {
			n++
			if found {
				hit = append(hit, p)
			}
		}
		return nil
	})
	if n == 0 && strings.HasPrefix(dir, "/tmp/") {
		t.Fatalf("no file under %s was read: the scan looks nowhere", dir)
	}
	return hit
}

// fileContains reads the file in pieces (any size), overlapping them by
// len(needle)-1 bytes so that no occurrence is cut in two.
func fileContains(p string, needle []byte) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20+len(needle))
	keep := 0
	for {
		m, err := f.Read(buf[keep:])
		if bytes.Contains(buf[:keep+m], needle) {
			return true, nil
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if k := len(needle) - 1; keep+m > k {
			copy(buf, buf[keep+m-k:keep+m])
			keep = k
		} else {
			keep += m
		}
	}
}

// 2. Ctrl-C (and SIGTERM) during an activation that takes longer than
// Mage's 5 s cleanup: the deployer waits for it, verifies, checks health
// and records it; nothing is rolled back.
func TestFaultInterruptDuringLongActivation(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			f := newFixture(t)
			const host = "lab-server"
			_, unblock := deployedThenBlocked(t, f, host, "long")
			cmd, out := startMage(t, f, host+": activate", "deploy", host, "-", "-lab")
			time.Sleep(500 * time.Millisecond)
			cmd.Process.Signal(sig)
			time.Sleep(7 * time.Second) // longer than Mage's 5 s cleanup
			if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
				t.Fatalf("the deployer died during the activation:\n%s", out.String())
			}
			unblock()
			err := cmd.Wait()
			if err != nil {
				t.Fatalf("exit %v after the activation finished:\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), "running activations finish") || f.generation(host) != 2 {
				t.Fatalf("generation %d:\n%s", f.generation(host), out.String())
			}
			if h := f.exec(host, "tail -n 1 /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, `"result":"ok"`) {
				t.Errorf("history: %s", h)
			}
			healthy(t, f, host)
		})
	}
}

// The second Ctrl-C abandons the activation; the target's unit finishes by
// itself and says so in the history (magic rollback: it rolls back).
func TestFaultSecondInterruptAbandons(t *testing.T) {
	f := newFixture(t)
	const host = "lab-server"
	good, unblock := deployedThenBlocked(t, f, host, "abandoned")
	cmd, out := startMage(t, f, host+": activate", "deploy", host, "-", "-lab", "-confirmtimeout=5s")
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("an abandoned deployment exited 0:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "abandoned during the activation") || !strings.Contains(out.String(), "rolls back to generation 1") {
		t.Errorf("no word of what the target will do:\n%s", out.String())
	}
	unblock()
	// Nobody confirms: the unit rolls back by itself.
	awaitSelfRollback(t, f, host, good)
	healthy(t, f, host)
}

// The deployer reaches the target again only after the magic-rollback
// window (new SSH connections are dropped from the switch on, for longer
// than the window): the unit has rolled back by itself, and the deployer
// says so instead of confirming a system that no longer runs.
func TestFaultConfirmationTooLate(t *testing.T) {
	f := newFixture(t)
	const host = "lab-server"
	good, unblock := deployedThenBlocked(t, f, host, "late")
	cmd, out := startMage(t, f, host+": activate", "deploy", host, "-", "-lab", "-confirmtimeout=5s")
	reachLate(t, f, host, unblock)
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("a deployment the target rolled back exited 0:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "reached the target too late (after 5s); it rolled itself back to generation 1") {
		t.Errorf("no word of the target's own rollback:\n%s", out.String())
	}
	if f.current(host) != good {
		t.Errorf("current system %s, want the previous %s", f.current(host), good)
	}
	if h := f.exec(host, "cat /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, "rolled back by the target itself") {
		t.Errorf("history:\n%s", h)
	}
	healthy(t, f, host)
}

// reachLate lets the blocked activation run while new SSH connections to
// host get through only after a 5 s magic-rollback window.
func reachLate(t *testing.T, f *fixture, host string, unblock func()) {
	t.Helper()
	// Only new connections: their first packet (SYN without ACK) is dropped.
	f.exec(host, `nft -f - <<'EOF'
table inet late {
	chain in {
		type filter hook input priority 0;
		tcp dport 22 tcp flags & (syn | ack) == syn drop
	}
}
EOF`)
	unblock()
	// TCP sends the SYN again after 1, 3 and 7 s: the one at 7 s gets
	// through, after the window (5 to 6 s).
	time.Sleep(6500 * time.Millisecond)
	f.exec(host, "nft delete table inet late")
}

// The target's own rollback (magic rollback, the deployer too late) fails:
// the deployer says so with the console remedy, never that it rolled
// back, and the history records the deployment as failed.
func TestFaultSelfRollbackFails(t *testing.T) {
	f := newFixture(t)
	const host = "lab-server"
	good, unblock := deployedThenBlocked(t, f, host, "late-and-broken")
	// The previous system's activation now fails: the rollback will.
	f.exec(host, "mkdir -p /var/lib/nixos-double/fail && touch /var/lib/nixos-double/fail/"+filepath.Base(good))
	t.Cleanup(func() { f.lab.Exec(context.Background(), host, "rm", "-rf", "/var/lib/nixos-double/fail") })
	cmd, out := startMage(t, f, host+": activate", "deploy", host, "-", "-lab", "-confirmtimeout=5s")
	reachLate(t, f, host, unblock)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("a deployment whose rollback failed exited 0:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "reached the target too late (after 5s); the target's own rollback to generation 1 FAILED (switch-to-configuration exited with status 5)") ||
		!strings.Contains(out.String(), "select a working generation") || strings.Contains(out.String(), "rolled itself back") {
		t.Errorf("the failed rollback is not reported as failed:\n%s", out.String())
	}
	if h := f.exec(host, "tail -n 1 /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, `"result":"failed"`) || !strings.Contains(h, "FAILED") {
		t.Errorf("history: %s", h)
	}
	// Recovery as the remedy says: `mage rollback` to the good generation.
	f.exec(host, "rm -rf /var/lib/nixos-double/fail")
	succeeds(t, f.mage("rollback:to", host, "-", "1", "-lab"))
	if f.current(host) != good {
		t.Fatalf("rollback:to 1: current %s", f.current(host))
	}
	healthy(t, f, host)
}

// 3. A deployer waiting with -wait decides from what it finds once it has
// the lock: its failed activation returns to the other deployer's
// generation, not to the one it saw before waiting.
func TestFaultWaitDoesNotUndoOtherDeployer(t *testing.T) {
	f := newFixture(t)
	const host = "media-center"
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	slowCopy(t, f, host)
	first, out := startMage(t, f, host+": copy 0 B", "deploy", host, "-", "-lab")
	f.setConfig(host, `lab.simulate.activation = { exitCode = 4; message = "broken"; };`)
	f.commit("broken")
	r := f.mage("deploy", host, "-", "-lab", "-wait")
	if err := first.Wait(); err != nil {
		t.Fatalf("first deployer: %v\n%s", err, out.String())
	}
	failsWith(t, r, "rolled back to generation 2")
	// It really waited for the first one (else this proves nothing).
	if !strings.Contains(r.Combined(), "waiting: "+host+" is being deployed by ") {
		t.Errorf("the second deployer did not wait for the first:\n%s", r.Combined())
	}
	if f.generation(host) != 2 {
		t.Fatalf("generation %d: the waiting deployer undid the first one's work", f.generation(host))
	}
	testutil.Edit(t, f.repo, "targets/"+host+"/configuration.nix", `lab.simulate.activation = { exitCode = 4; message = "broken"; };`, "")
	healthy(t, f, host)
}

// A copy during which nothing crosses the connection (the target's
// nix-daemon hangs, the connection stays up) is stopped after
// max(-cmdtimeout, 30 s) and tried once more.
func TestFaultCopyStallStopped(t *testing.T) {
	f := newFixture(t)
	const host = "media-center"
	slowCopy(t, f, host)
	cmd, out := startMage(t, f, host+": copy 0 B", "deploy", host, "-", "-lab", "-cmdtimeout=5s")
	t.Cleanup(func() { cmd.Process.Kill() })
	// Once the copy's own `nix-daemon --stdio` runs (sudo has started it:
	// stopping sudo before that tests sudo, not a hung daemon), every
	// nix-daemon on the target stops: the daemon, its workers and the
	// copy's. sudo, seeing its command stopped, stops itself; both are
	// continued at the end.
	const (
		daemons = "'^([^ ]*/)?nix-daemon( |$)'"
		stop    = "pgrep -f '^([^ ]*/)?nix-daemon --stdio' >/dev/null && pkill -STOP -f " + daemons + " && echo stopped || true"
		resume  = "pkill -CONT -f " + daemons + "; pkill -CONT -x sudo; true"
	)
	deadline := time.Now().Add(20 * time.Second)
	for f.exec(host, stop) != "stopped" {
		if time.Now().After(deadline) {
			t.Fatalf("no nix-daemon --stdio on the target during the copy:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { f.lab.Exec(context.Background(), host, "sh", "-c", resume) })
	const note = "copy failed (the copy stalled: nothing crossed the connection for 30s), trying once more"
	deadline = time.Now().Add(90 * time.Second)
	for !strings.Contains(out.String(), note) {
		if time.Now().After(deadline) {
			t.Fatalf("the stalled copy was not stopped:\n%s", out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.exec(host, resume)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the second try failed: %v\n%s", err, out.String())
	}
	if f.generation(host) != 1 {
		t.Fatalf("generation %d after the second try", f.generation(host))
	}
	f.lab.Shape(context.Background(), host, lab.Link{})
	healthy(t, f, host)
}

// 4. A deployer killed during the copy leaves no process behind (nix copy
// dies with it), and the next run needs no manual clean-up.
func TestFaultKilledDuringCopyLeavesNothing(t *testing.T) {
	f := newFixture(t)
	const host = "media-center"
	slowCopy(t, f, host)
	cmd, _ := startMage(t, f, host+": copy 0 B", "deploy", host, "-", "-lab")
	pid := cmd.Process.Pid
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	marker := fmt.Sprintf("nixos-config-bridge-%d-", pid)
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesMentioning(marker)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left by the killed deployer: %v", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.lab.Shape(context.Background(), host, lab.Link{})
	healthy(t, f, host)
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), marker+"*")); len(left) > 0 {
		t.Errorf("the killed deployer's directory was not reaped: %v", left)
	}
}

// processesMentioning lists the command lines that contain s.
func processesMentioning(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(data, []byte(s)) {
			out = append(out, string(bytes.ReplaceAll(data, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// 5. The lock covers the activation: with the deployer killed mid-switch,
// another deployment and a rollback are refused until the target's unit
// is done; the unit then rolls back by itself (nobody confirmed) and
// records it.
func TestFaultKilledDuringActivationKeepsTargetLocked(t *testing.T) {
	f := newFixture(t)
	const host = "lab-server"
	good, unblock := deployedThenBlocked(t, f, host, "killed")
	cmd, _ := startMage(t, f, host+": activate", "deploy", host, "-", "-lab", "-confirmtimeout=5s")
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	r := f.mage("rollback", host, "-", "-lab")
	failsWith(t, r, "is still activating a deployment")
	r = f.mage("deploy", host, "-", "-lab")
	failsWith(t, r, "is still activating a deployment")
	unblock()
	awaitSelfRollback(t, f, host, good)
	healthy(t, f, host)
}

// 6. Health checks are validated before anything happens, and a command
// check that outlives its timeout is killed on the target.
func TestFaultHealthChecks(t *testing.T) {
	f := newFixture(t)
	const host = "dev-workstation"
	setHealth(t, f, host, []inventory.HealthCheck{{Type: "bogus"}})
	failsWith(t, f.mage("deploy", host, "-", "-lab"), `health check 1: unknown type "bogus"`)
	setHealth(t, f, host, []inventory.HealthCheck{{Type: "tcp", Port: 22, Timeout: "-5s"}})
	failsWith(t, f.mage("deploy", host, "-", "-lab"), `timeout "-5s"`)
	if f.generation(host) != 0 {
		t.Fatal("an invalid health check let the deployment start")
	}
	setHealth(t, f, host, nil)
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	f.setConfig(host, `environment.etc."hang".text = "1";`)
	f.commit("hanging check")
	setHealth(t, f, host, []inventory.HealthCheck{{Type: "command", Command: "sleep 77; true", Timeout: "2s", Retries: 1}})
	failsWith(t, f.mage("deploy", host, "-", "-lab"), "timed out", "rolled back to generation 1")
	time.Sleep(time.Second)
	if ps := f.exec(host, "pgrep -f '^sleep 77$' || true"); ps != "" {
		t.Errorf("the health check still runs on the target: %s", ps)
	}
	setHealth(t, f, host, nil)
	healthy(t, f, host)
}

// 7. A rollback that fails is reported as failed (with the console remedy)
// and recorded so, not as a success.
func TestFaultFailingRollbackReported(t *testing.T) {
	f := newFixture(t)
	const host = "dev-workstation"
	succeeds(t, f.mage("deploy", host, "-", "-lab"))
	good := f.current(host)
	// The previous system's activation now fails: the rollback will.
	f.exec(host, "mkdir -p /var/lib/nixos-double/fail && touch /var/lib/nixos-double/fail/"+filepath.Base(good))
	f.setConfig(host, `lab.simulate.activation = { exitCode = 4; message = "broken"; };`)
	f.commit("broken, and the rollback fails too")
	r := f.mage("deploy", host, "-", "-lab")
	failsWith(t, r, "ROLLBACK FAILED too")
	if h := f.exec(host, "tail -n 1 /var/lib/nixos-config/history.jsonl"); !strings.Contains(h, `"result":"failed"`) || !strings.Contains(h, "the rollback failed") {
		t.Errorf("history: %s", h)
	}
	f.exec(host, "rm -rf /var/lib/nixos-double/fail")
	testutil.Edit(t, f.repo, "targets/"+host+"/configuration.nix", `lab.simulate.activation = { exitCode = 4; message = "broken"; };`, "")
	// Recovery by hand: mage rollback to the good generation.
	succeeds(t, f.mage("rollback:to", host, "-", "1", "-lab"))
	if f.current(host) != good {
		t.Fatalf("rollback:to 1: current %s", f.current(host))
	}
	healthy(t, f, host)
}

// 9. Small inputs answered with a clear error instead of a silent default.
func TestFaultSmallInputs(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"deployAll", "-lab", "-jobs=0"}, "invalid -jobs=0"},
		{[]string{"deploy", "lab-server", "-", "-lab", "-confirmtimeout=0s"}, "invalid -confirmtimeout=0s"},
		{[]string{"deploy", "lab-server", "-", "-lab", "-cmdtimeout=-1s"}, "invalid -cmdtimeout=-1s"},
		{[]string{"deploy", "lab-server", "-", "-lab", "-timeout=500ms"}, "invalid -timeout=500ms: at least 1s"},
		{[]string{"deploy", "lab-server", "-", "-lab", "-deadpeer=500ms"}, "invalid -deadpeer=500ms: at least 1s"},
		{[]string{"new", "evil", "-address=10.0.0.9", `-system=x"; abort "`}, "invalid system"},
	} {
		failsWith(t, f.mage(c.args...), c.want)
	}
	if out := testutil.Git(t, f.repo, "status", "--porcelain"); strings.Contains(out, "evil") {
		t.Errorf("mage new scaffolded an invalid system: %s", out)
	}
	// target.json with text after the object, as Nix rejects it.
	p := filepath.Join(f.repo, "targets", "media-center", "target.json")
	data, _ := os.ReadFile(p)
	os.WriteFile(p, append(data, []byte(`{"address":"10.0.0.66"}`)...), 0o644)
	failsWith(t, f.mage("check", "-offline"), "unexpected content after the JSON object")
	os.WriteFile(p, data, 0o644)
	// The same DNS name twice, differing in case and a trailing dot.
	for name, addr := range map[string]string{"media-center": "Media.Lab.", "dev-workstation": "media.lab"} {
		q := filepath.Join(f.repo, "targets", name, "target.json")
		d, _ := os.ReadFile(q)
		i := bytes.Index(d, []byte(`"address": "`))
		j := bytes.IndexByte(d[i+12:], '"')
		d = append(append(append([]byte{}, d[:i+12]...), addr...), d[i+12+j:]...)
		os.WriteFile(q, d, 0o644)
	}
	failsWith(t, f.mage("check", "-offline"), "duplicate address")
	testutil.Git(t, f.repo, "checkout", "--", "targets")
	// A symlinked target directory is named, not dropped.
	os.Symlink(filepath.Join(f.repo, "targets", "media-center"), filepath.Join(f.repo, "targets", "linked"))
	failsWith(t, f.mage("targets"), "targets/linked is a symbolic link")
	os.Remove(filepath.Join(f.repo, "targets", "linked"))
}

// The scanner finds a needle cut by its pieces' boundary and at the very
// end of a file larger than a piece, and nothing where there is none.
func TestFileContainsAcrossPieces(t *testing.T) {
	needle := []byte("Pw-needle-0123456789")
	for _, at := range []int{0, 1<<20 - 7, 2<<20 + 3, 3<<20 - len(needle)} {
		data := bytes.Repeat([]byte{'x'}, 3<<20)
		copy(data[at:], needle)
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if found, err := fileContains(p, needle); !found || err != nil {
			t.Errorf("needle at %d not found (%v)", at, err)
		}
	}
	p := filepath.Join(t.TempDir(), "none")
	os.WriteFile(p, bytes.Repeat([]byte("Pw-needle-012345678x"), 200000), 0o600)
	if found, _ := fileContains(p, needle); found {
		t.Error("found a needle that is not there")
	}
}
