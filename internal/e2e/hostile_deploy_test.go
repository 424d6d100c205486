package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// Hostile targets against deploy, deployAll, status, generations, hardware
// and the lock: output that never ends or is huge, commands that never
// return, a huge history file, a huge lock holder. Every run must end by
// itself, within bounds on its own memory, CPU and output, with one error
// line, and leave the target on a working generation.
//
// These need the transport's limits (sizes of remote output, time limits
// after the handshake, history caps): internal/sshx, internal/deploy,
// internal/target.

// Bounds of a run against a hostile target. A normal lab deploy of
// lab-server measures about 27 MiB max RSS here (the mage process and the
// children it waited for, nix included); what a hostile target sends is
// 50 to 100 MB, so keeping it in memory cannot pass.
const (
	hostileRSS  = 64 // MiB
	hostileOut  = 64 // KiB
	hostileWall = 90 * time.Second
)

// sleeper is a command that prints what it is given, then never ends (5
// minutes) and records its process id so the test can end it.
func sleeper(output string) string {
	return "#!/bin/sh\necho $$ >> /tmp/hostile-sleepers\nprintf '%s' '" + output + "'\nexec sleep 300\n"
}

// endSleepers ends the processes sleeper commands started on host, by id.
func (f *fixture) endSleepers(host string) {
	f.exec(host, `[ -f /tmp/hostile-sleepers ] && for p in $(cat /tmp/hostile-sleepers); do kill "$p" 2>/dev/null; done; rm -f /tmp/hostile-sleepers; true`)
}

// hundredMB prints a 100 MB line.
const hundredMB = "#!/bin/sh\nhead -c 104857600 /dev/zero | tr '\\0' h\necho\n"

// stillWorking: the target did not change generation.
func (f *fixture) stillOn(host string, gen int) {
	f.t.Helper()
	if g := f.generation(host); g != gen {
		f.t.Errorf("%s is on generation %d, want %d", host, g, gen)
	}
}

func (f *fixture) install(host, name, script string) {
	f.t.Helper()
	if err := f.lab.InstallCommand(context.Background(), host, name, script); err != nil {
		f.t.Fatal(err)
	}
	// Root finds it too: Debian sid's sudo puts no /usr/local/bin on
	// secure_path (NixOS sets none: root runs with the caller's PATH).
	if err := f.lab.SudoersExtra(context.Background(), host, `Defaults:monibahmed secure_path="/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"`); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		f.lab.SudoersExtra(context.Background(), host, "")
		f.lab.RemoveCommand(host, name)
		f.endSleepers(host)
	})
}

func (m measured) failsBounded(t *testing.T, wants ...string) {
	t.Helper()
	m.bounded(t, hostileWall, hostileRSS, hostileOut)
	assertNoRawControls(t, "stdout", m.Stdout)
	assertNoRawControls(t, "stderr", m.Stderr)
	if m.Killed {
		return
	}
	failsWith(t, m.Result, wants...)
}

func TestHostileDeployHugeHostname(t *testing.T) {
	f := newFixture(t)
	f.install("lab-server", "hostname", "#!/bin/sh\ntouch /tmp/hostile-hostname-ran\n"+strings.TrimPrefix(hundredMB, "#!/bin/sh\n"))
	t.Cleanup(func() { f.exec("lab-server", "rm -f /tmp/hostile-hostname-ran") })
	m := f.mageMeasured(100*time.Second, "deploy", "lab-server", "-", "-lab", "-timeout=3s")
	f.fakeRan("lab-server", "/tmp/hostile-hostname-ran")
	m.failsBounded(t, "lab-server: preflight", "sent more than 1 MiB on standard output of `preflight`", "check that the target runs a POSIX shell")
	f.stillOn("lab-server", 0)
}

func TestHostileDeployPreflightHangs(t *testing.T) {
	f := newFixture(t)
	f.install("lab-server", "hostname", sleeper(`lab-server\n`))
	m := f.mageMeasured(100*time.Second, "deploy", "lab-server", "-", "-lab", "-timeout=3s", "-cmdtimeout=5s")
	f.fakeRan("lab-server", "/tmp/hostile-sleepers")
	m.failsBounded(t, "lab-server: preflight", "did not finish `preflight` within 5s", "answers in time (-cmdtimeout gives it more)")
	f.stillOn("lab-server", 0)
}

// fakeRan fails the test unless the fake command left its mark on host:
// a test whose fake was never run tests nothing.
func (f *fixture) fakeRan(host, mark string) {
	f.t.Helper()
	if f.exec(host, "[ -e "+mark+" ] && echo ran || echo no") != "ran" {
		f.t.Fatalf("the fake command on %s did not run (no %s): the test does not test anything", host, mark)
	}
}

// One target that never answers its preflight does not keep deployAll from
// finishing: the others are deployed, the run fails naming that target.
func TestHostileDeployAllOneTargetHangs(t *testing.T) {
	f := newFixture(t)
	f.install("media-center", "hostname", sleeper(`media-center\n`))
	m := f.mageMeasured(150*time.Second, "deployAll", "-lab", "-timeout=3s")
	f.fakeRan("media-center", "/tmp/hostile-sleepers")
	m.bounded(t, 2*time.Minute, 96, hostileOut) // one evaluation of three systems
	assertNoRawControls(t, "output", m.Combined())
	if m.Code == 0 || m.Killed {
		t.Fatalf("exit %d (killed: %v)", m.Code, m.Killed)
	}
	if f.generation("lab-server") != 1 || f.generation("dev-workstation") != 1 {
		t.Errorf("the other targets were not deployed:\n%s", m.Combined())
	}
	f.stillOn("media-center", 0)
	if !strings.Contains(m.Combined(), "media-center") {
		t.Errorf("the failure does not name media-center:\n%s", m.Combined())
	}
}

// hugeHistory writes a 100 MB history file on host (JSON lines with long
// fields).
func (f *fixture) hugeHistory(host string) {
	f.exec(host, `mkdir -p /var/lib/nixos-config && yes '{"id":"x","kind":"deploy","generation":1,"deployer":"`+strings.Repeat("a", 1000)+`","result":"ok"}' | head -c 104857600 > /var/lib/nixos-config/history.jsonl && chmod 644 /var/lib/nixos-config/history.jsonl`)
	f.t.Cleanup(func() { f.exec(host, "rm -rf /var/lib/nixos-config") })
}

func TestHostileGenerationsHugeHistory(t *testing.T) {
	f := newFixture(t)
	base := f.mageMeasured(100*time.Second, "deploy", "lab-server", "-", "-lab") // for comparison: a normal deploy
	succeeds(t, base.Result)
	f.hugeHistory("lab-server")
	m := f.mageMeasured(100*time.Second, "generations", "lab-server", "-", "-lab")
	m.bounded(t, hostileWall, hostileRSS, hostileOut)
	assertNoRawControls(t, "output", m.Combined())
	if m.Code == 0 && !strings.Contains(m.Stdout, "current") {
		t.Errorf("no generations listed:\n%s", m.Stdout)
	}
}

func TestHostileStatusHugeHistory(t *testing.T) {
	f := newFixture(t)
	f.hugeHistory("lab-server")
	m := f.mageMeasured(100*time.Second, "status", "-lab", "-timeout=3s")
	m.bounded(t, hostileWall, hostileRSS, hostileOut)
	assertNoRawControls(t, "output", m.Combined())
}

// A history "file" that is a FIFO: reading it never ends.
func TestHostileStatusAndGenerationsHang(t *testing.T) {
	f := newFixture(t)
	succeeds(t, f.mage("deploy", "lab-server", "-", "-lab"))
	f.exec("lab-server", "rm -f /var/lib/nixos-config/history.jsonl && mkfifo -m 644 /var/lib/nixos-config/history.jsonl")
	t.Cleanup(func() { f.exec("lab-server", "rm -rf /var/lib/nixos-config") })
	for _, args := range [][]string{{"status", "-lab", "-timeout=3s"}, {"generations", "lab-server", "-", "-lab"}} {
		m := f.mageMeasured(100*time.Second, args...)
		m.bounded(t, 60*time.Second, hostileRSS, hostileOut)
		assertNoRawControls(t, "output", m.Combined())
	}
}

// The lock holder's information is 50 MB starting with escapes (the lock
// script reads its first 512 bytes); its lock is held.
func TestHostileLockHolder(t *testing.T) {
	f := newFixture(t)
	pid := f.exec("lab-server", `printf '\033]0;pwned\007\033[2J\r' > /run/nixos-config.lock.info; head -c 52428800 /dev/zero | tr '\0' x >> /run/nixos-config.lock.info; setsid flock /run/nixos-config.lock sleep 300 >/dev/null 2>&1 </dev/null & echo $!`)
	// The process group: flock and its sleep, which holds the lock.
	t.Cleanup(func() { f.exec("lab-server", "kill -- -"+pid+"; rm -f /run/nixos-config.lock.info") })
	m := f.mageMeasured(100*time.Second, "deploy", "lab-server", "-", "-lab", "-timeout=3s")
	m.failsBounded(t, "lab-server is being deployed by "+`\x1b]0;pwned\a\x1b[2J\rxxx`)
	s := f.mageMeasured(100*time.Second, "status", "-lab", "-timeout=3s")
	s.bounded(t, hostileWall, hostileRSS, hostileOut)
	assertNoRawControls(t, "status", s.Combined())
}

// A flock on the target (first on root's PATH, see below) that answers
// with 50 MB before "locked": taking the lock must not rescan it all on
// every write (quadratic CPU).
func TestHostileLockOutput(t *testing.T) {
	f := newFixture(t)
	f.install("lab-server", "flock", "#!/bin/sh\ntouch /tmp/hostile-flock-ran\nhead -c 52428800 /dev/zero | tr '\\0' x\necho\necho locked\nexec cat >/dev/null\n")
	t.Cleanup(func() { f.exec("lab-server", "rm -f /tmp/hostile-flock-ran") })
	m := f.mageMeasured(100*time.Second, "deploy", "lab-server", "-", "-lab", "-timeout=3s")
	if f.exec("lab-server", "[ -e /tmp/hostile-flock-ran ] && echo ran || echo no") != "ran" {
		t.Fatal("the fake flock was not used: the test does not test anything")
	}
	m.bounded(t, hostileWall, hostileRSS, hostileOut)
	assertNoRawControls(t, "output", m.Combined())
	if m.CPU > 20*time.Second {
		t.Errorf("CPU time %v: the lock output is rescanned", m.CPU)
	}
}

// A flock on the target that never takes the lock and prints a line (with
// escapes) every second: those lines do not keep the deployer waiting.
// Without -wait the lock has one deadline, -cmdtimeout.
func TestHostileLockChatters(t *testing.T) {
	f := newFixture(t)
	f.install("lab-server", "flock", "#!/bin/sh\necho $$ >> /tmp/hostile-sleepers\nwhile :; do printf '\\033[2Jstill here\\n' || exit; sleep 1; done\n")
	m := f.mageMeasured(100*time.Second, "deploy", "lab-server", "-", "-lab", "-cmdtimeout=5s")
	f.fakeRan("lab-server", "/tmp/hostile-sleepers")
	m.failsBounded(t, "taking the deploy lock on lab-server did not finish within 5s", `\x1b[2Jstill here`, "raise -cmdtimeout")
	if m.Killed {
		t.Fatalf("the deploy did not end by itself:\n%s", m.Combined())
	}
	f.stillOn("lab-server", 0)
}

func TestHostileHardwareHugeOrHanging(t *testing.T) {
	f := newFixture(t)
	ran := func() {
		t.Helper()
		if f.exec("lab-server", "[ -e /tmp/hostile-ngc-ran ] && echo ran; rm -f /tmp/hostile-ngc-ran") != "ran" {
			t.Fatal("the fake nixos-generate-config was not used: the test does not test anything")
		}
	}
	f.install("lab-server", "nixos-generate-config", "#!/bin/sh\ntouch /tmp/hostile-ngc-ran\n"+strings.TrimPrefix(hundredMB, "#!/bin/sh\n"))
	m := f.mageMeasured(100*time.Second, "hardware", "lab-server", "-", "-lab")
	m.failsBounded(t)
	ran()
	f.install("lab-server", "nixos-generate-config", "#!/bin/sh\ntouch /tmp/hostile-ngc-ran\n"+strings.TrimPrefix(sleeper(`{ }\n`), "#!/bin/sh\n"))
	m = f.mageMeasured(100*time.Second, "hardware", "lab-server", "-", "-lab")
	m.failsBounded(t)
	ran()
	if st := testutil.Git(t, f.repo, "status", "--porcelain", "targets"); st != "" {
		t.Errorf("the repository changed:\n%s", st)
	}
}
