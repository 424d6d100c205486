package target

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startGuarded runs daemon (a shell script standing in for a `nix-daemon
// --stdio`) under the bridge's guard, the way sshd runs a session's
// command: stdin, stdout and stderr are pipes. It returns the daemon's
// PID (the script's first line of output) and the pipes. The guard's
// temporary directory is made in tmp.
func startGuarded(t *testing.T, tmp, daemon string) (int, *exec.Cmd, io.WriteCloser, *bufio.Reader, io.ReadCloser) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "daemon")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho $$\n"+daemon), 0o755); err != nil {
		t.Fatal(err)
	}
	args := append(sessionBound(), bin)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	out := bufio.NewReader(outPipe)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("no PID from the daemon: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("PID line %q: %v", line, err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	return pid, cmd, in, out, errPipe
}

// waitExit waits up to 10 seconds (a bound, not a timing claim) for cmd.
func waitExit(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the guard did not end")
		return nil
	}
}

// A daemon that stopped reading its input (Nix 2.26's, waiting for its own
// daemon's answer after its client vanished mid-copy, holding a path's
// lock through its worker) dies when the session's input ends: the path
// is free for the next copy.
func TestStdioGuardKillsDaemonWhenInputEnds(t *testing.T) {
	tmp := t.TempDir()
	pid, cmd, in, _, stderr := startGuarded(t, tmp, "read -r first\nexec sleep 600\n")
	go io.Copy(io.Discard, stderr)
	if _, err := io.WriteString(in, "handshake\nmore data the daemon never reads\n"); err != nil {
		t.Fatal(err)
	}
	// The daemon runs on, not reading, while the session is open.
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the daemon ended while the session was open: %v", err)
	}
	in.Close()
	if err := waitExit(t, cmd); err != nil {
		t.Errorf("the guard's exit after a closed session: %v", err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("daemon %d still runs after its session's input ended", pid)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the guard left %s in its temporary directory", left[0].Name())
	}
}

// A daemon that ends by itself (its own daemon hung up) ends the session's
// output at once, though the session's input is still open: the client
// sees the end instead of waiting for the copy's stall limit.
func TestStdioGuardDaemonEndClosesOutput(t *testing.T) {
	_, cmd, in, out, stderr := startGuarded(t, t.TempDir(), "read -r first\necho bye\nexit 3\n")
	defer in.Close()
	if _, err := io.WriteString(in, "handshake\n"); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, stderr)
	rest := make(chan string, 1)
	go func() { b, _ := io.ReadAll(out); rest <- string(b) }()
	select {
	case got := <-rest:
		if got != "bye\n" {
			t.Errorf("output after the PID: %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the session's output stayed open after the daemon ended")
	}
	// The session ends once its input does, with the daemon's status.
	in.Close()
	var ee *exec.ExitError
	if err := waitExit(t, cmd); err == nil || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("the guard's exit: %v (want the daemon's status 3)", err)
	}
}

// When this side closes the whole session, sshd closes the command's
// output pipes and its input alike: the guard, with no one left to read
// what it says, still kills the daemon and removes its fifo's directory.
func TestStdioGuardSessionClosedWhole(t *testing.T) {
	tmp := t.TempDir()
	pid, cmd, in, _, stderr := startGuarded(t, tmp, "read -r first\nexec sleep 600\n")
	if _, err := io.WriteString(in, "handshake\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	stderr.Close()
	in.Close()
	waitExit(t, cmd)
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("daemon %d still runs after its session was closed", pid)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the guard left %s in its temporary directory", left[0].Name())
	}
}
