// Package run executes local processes for the rest of the toolkit: every
// external command (nix, git, ssh, ip, ...) goes through a Runner so that
// cancellation, process groups and output capture behave the same everywhere.
package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Cmd describes one process to start.
type Cmd struct {
	Name   string
	Args   []string
	Dir    string
	Env    []string // extra variables appended to the inherited environment
	Stdin  io.Reader
	Stdout io.Writer // in addition to capture by Output; may be nil
	Stderr io.Writer // in addition to the captured tail; may be nil
}

// String renders the command for messages (arguments quoted when needed).
func (c Cmd) String() string {
	parts := make([]string, 0, len(c.Args)+1)
	parts = append(parts, Quote(c.Name))
	for _, a := range c.Args {
		parts = append(parts, Quote(a))
	}
	return strings.Join(parts, " ")
}

// Runner starts processes. Implementations must honour ctx cancellation.
type Runner interface {
	Run(ctx context.Context, c Cmd) error
}

// ExitError is returned when a process ran and exited unsuccessfully.
type ExitError struct {
	Cmd      string
	Code     int    // -1 when killed by a signal
	Stderr   string // last lines of standard error
	Canceled bool   // the context ended the process
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s: exit status %d", e.Cmd, e.Code)
	if e.Canceled {
		msg = fmt.Sprintf("%s: interrupted", e.Cmd)
	}
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// Exec runs processes with os/exec. Each process gets its own process group;
// on cancellation the whole group receives SIGTERM, and SIGKILL after WaitDelay.
type Exec struct {
	// WaitDelay bounds how long to wait for a cancelled process group to
	// exit and for its output pipes to close. Zero means 5 seconds.
	WaitDelay time.Duration
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

// Run implements Runner.
func (x Exec) Run(ctx context.Context, c Cmd) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(cmd.Environ(), c.Env...)
	}
	cmd.Stdin = c.Stdin
	tail := &tailBuffer{max: 8 << 10}
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	}
	if c.Stderr != nil {
		cmd.Stderr = io.MultiWriter(c.Stderr, tail)
	} else {
		cmd.Stderr = tail
	}
	// Own process group (cancellation signals the whole group), and the
	// child is killed if this process dies without cancelling it (e.g.
	// SIGKILL): SIGKILL, because Nix takes SIGTERM as an interrupt it may
	// wait on forever, so that no nix copy outlives its deployer.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		// Negative pid: the whole process group.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	delay := x.WaitDelay
	if delay == 0 {
		delay = 5 * time.Second
	}
	cmd.WaitDelay = delay
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if cmd.Process != nil {
			// Make sure nothing of the group survives a cancelled run.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		return &ExitError{Cmd: c.String(), Code: code, Stderr: string(tail.buf), Canceled: ctx.Err() != nil}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", c.String(), ctx.Err())
	}
	return fmt.Errorf("%s: %w", c.String(), err)
}

// Output runs c and returns its standard output.
func Output(ctx context.Context, r Runner, c Cmd) (string, error) {
	var out bytes.Buffer
	if c.Stdout != nil {
		c.Stdout = io.MultiWriter(c.Stdout, &out)
	} else {
		c.Stdout = &out
	}
	err := r.Run(ctx, c)
	return out.String(), err
}

// Quote returns s quoted for a POSIX shell when it contains anything but
// safe characters. Remote commands are always built with Quote.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// ShellJoin quotes every argument and joins them with spaces.
func ShellJoin(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

// Spawn starts a long-lived process detached from the caller (own session,
// standard streams to logPath) and returns its PID without waiting for it.
// Used only for the lab's per-target init processes.
func (x Exec) Spawn(c Cmd, logPath string) (int, error) {
	cmd := exec.Command(c.Name, c.Args...)
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(cmd.Environ(), c.Env...)
	}
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%s: %w", c.String(), err)
	}
	pid := cmd.Process.Pid
	// Reap it when it exits, for as long as this process lives.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}
