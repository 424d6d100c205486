package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/testutil"
)

// Local mode: the deployer runs on the target itself (here: inside the lab
// target's namespaces, so this machine is untouched) and activates with sudo,
// without SSH.
func TestDeployLocalhost(t *testing.T) {
	f := newFixture(t)
	h := f.host("lab-server")
	// Nix's caches under $HOME belong to this machine's store: give the
	// deployer inside the target its own.
	home := t.TempDir()
	script := "cd \"$1\" && HOME=\"$2\" XDG_CACHE_HOME=\"$2/cache\" exec \"$3\" deploy lab-server localhost -lab"
	args := append(append([]string{}, f.lab.NsenterArgs(h)...), "/bin/sh", "-c", script, "local-deploy", f.repo, home, testutil.MageBinary(t))
	r := testutil.Run(t, f.repo, nil, "nsenter", args...)
	succeeds(t, r)
	if !strings.Contains(r.Stdout, "lab-server  localhost  ok") {
		t.Errorf("summary:\n%s", r.Stdout)
	}
	cur := f.current("lab-server")
	if !strings.Contains(cur, "-nixos-system-lab-server-") || f.generation("lab-server") != 1 {
		t.Fatalf("target: current %q generation %d", cur, f.generation("lab-server"))
	}
	// Built and activated inside the target: this machine has neither the
	// path from that build in its profile nor a /run/current-system pointing at it.
	if dst, err := os.Readlink("/run/current-system"); err == nil && dst == cur {
		t.Error("this machine's /run/current-system was changed")
	}
	if _, err := os.Stat("/nix/var/nix/profiles/system"); err == nil {
		if dst, _ := filepath.EvalSymlinks("/nix/var/nix/profiles/system"); dst == cur {
			t.Error("this machine's system profile was changed")
		}
	}
	if !strings.Contains(r.Stdout, "lab-server: activate") || strings.Contains(r.Stdout, "lab-server: copy") {
		t.Errorf("local mode should activate without copying:\n%s", r.Stdout)
	}
}

// scanProcesses looks for needle in every process's command line and
// environment until stop is closed.
func scanProcesses(needle []byte, stop <-chan struct{}, found *atomic.Value, scans *atomic.Int64) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			for _, f := range []string{"cmdline", "environ"} {
				data, err := os.ReadFile(filepath.Join("/proc", e.Name(), f))
				if err == nil && bytes.Contains(data, needle) {
					found.Store(strconv.Itoa(pid) + " " + f + ": " + strings.ReplaceAll(string(data), "\x00", " "))
				}
			}
		}
		scans.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeployWithSudoPasswordNeverExposed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const pw = "Pw-only-on-stdin-7f3a9"
	for _, h := range []string{"lab-server", "media-center"} {
		if err := f.lab.RequireSudoPassword(ctx, h, pw); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, h := range fleetNames {
			f.lab.PasswordlessSudo(ctx, h)
		}
	})
	stop := make(chan struct{})
	var found atomic.Value
	var scans atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); scanProcesses([]byte(pw), stop, &found, &scans) }()

	// The password is fed on standard input, as from a pipe; one target
	// (dev-workstation) keeps passwordless sudo and must not receive it.
	r := f.mageStdin(pw+"\n", "deployAll", "-lab", "-asksudo")
	close(stop)
	wg.Wait()
	succeeds(t, r)
	for _, h := range fleetNames {
		if f.generation(h) != 1 {
			t.Errorf("%s: generation %d", h, f.generation(h))
		}
	}
	if v := found.Load(); v != nil {
		t.Fatalf("the sudo password appeared in a process: %v", v)
	}
	if scans.Load() < 5 {
		t.Fatalf("only %d scans of the process table during the deploy", scans.Load())
	}
	if strings.Contains(r.Stdout+r.Stderr, pw) {
		t.Fatal("the password appears in the output")
	}
	for _, h := range fleetNames {
		logs := f.exec(h, "cat /var/lib/lab/sshd.log /var/lib/nixos-double/activations.log 2>/dev/null; ls /run/sudo 2>/dev/null; true")
		if strings.Contains(logs, pw) {
			t.Fatalf("the password appears in %s's logs", h)
		}
	}
	// The run's files on this machine and on the targets: none may hold it.
	out, _ := exec.Command("grep", "-rl", "--exclude=*_test.go", "--", pw, f.repo, f.lab.Config().StateDir).Output()
	if len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("the password was written to %s", out)
	}
}

// The README's quick start: mage demo deploys the example fleet to a
// simulated lab and removes it again.
func TestDemo(t *testing.T) {
	requireLabPrereqs(t)
	requireNix(t)
	dir := testutil.CopyRepo(t)
	r := testutil.Run(t, dir, nil, testutil.MageBinary(t), "demo")
	succeeds(t, r)
	for _, want := range []string{"SIMULATED NixOS targets", "build: 3 systems ready",
		"dev-workstation  10.77.99.10  ok      1", "lab-server       10.77.99.11  ok      1", "media-center     10.77.99.12  ok      1",
		"demo: lab removed"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, r.Stdout)
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "demo-") {
			t.Errorf("demo left namespace %s", e.Name())
		}
	}
}

// On a terminal: progress bars and colours; NO_COLOR turns the colours off
// (https://no-color.org), not the bars.
func TestTerminalOutputAndNoColor(t *testing.T) {
	f := newFixture(t)
	testutil.RequireTools(t, "script")
	run := func(env ...string) string {
		cmd := exec.Command("script", "-qec", testutil.MageBinary(t)+" deployAll -lab", "/dev/null")
		cmd.Dir = f.repo
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("deployAll on a pty: %v\n%s", err, out)
		}
		return string(out)
	}
	colored := run("TERM=xterm")
	if !strings.Contains(colored, "\x1b[2K") || !strings.Contains(colored, "fleet") || !strings.Contains(colored, "\x1b[32mok\x1b[0m") {
		t.Errorf("no progress display or colours on a terminal:\n%q", colored)
	}
	if regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ lab-server: preflight`).MatchString(colored) {
		t.Error("timestamped plain lines on a terminal")
	}
	plain := run("TERM=xterm", "NO_COLOR=1")
	if regexp.MustCompile(`\x1b\[3\dm`).MatchString(plain) {
		t.Errorf("colours despite NO_COLOR:\n%q", plain)
	}
	if !strings.Contains(plain, "\x1b[2K") {
		t.Error("NO_COLOR removed the progress display")
	}
}
