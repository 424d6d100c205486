package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/monibahmed/nixos-config/internal/ui"
)

// DefaultLimit caps what a command may print on each of stdout and stderr
// when the output is captured: whatever a target sends is untrusted.
const DefaultLimit = 1 << 20

// Command is one remote command.
type Command struct {
	Line  string    // the shell command line, already quoted
	Stdin io.Reader // nil: none
	// Stdout and Stderr receive the output as it arrives; when nil it is
	// captured into Output (at most Limit bytes each, or the command fails).
	Stdout, Stderr io.Writer
	Limit          int64
	// Timeout bounds the whole command (0: only ctx bounds it).
	Timeout time.Duration
	// Name describes the command in errors (default: its first word).
	Name string
}

func (c Command) name() string {
	if c.Name != "" {
		return c.Name
	}
	f := strings.Fields(c.Line)
	if len(f) == 0 {
		return "command"
	}
	if len(f[0]) > 40 {
		return f[0][:40] + "…"
	}
	return f[0]
}

// Output of a remote command.
type Output struct {
	Stdout, Stderr string
	Code           int
}

// ExitError is a remote command that exited non-zero.
type ExitError struct {
	Command string
	Output
}

func (e *ExitError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = strings.TrimSpace(e.Stdout)
	}
	// The remote side's text is untrusted: bounded and made visible.
	if len(msg) > 64<<10 {
		msg = msg[len(msg)-64<<10:]
	}
	return fmt.Sprintf("remote command exited with status %d: %s", e.Code, ui.Sanitize(strings.Join(LastLines(msg, 3), " | "), 300))
}

// LastLines returns the last n non-empty lines of s.
func LastLines(s string, n int) []string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// Proc is a started command with raw streams (for protocols such as the
// nix-daemon bridge, and sudo's password exchange), remote or local.
type Proc struct {
	Stdin  io.WriteCloser
	Stdout io.Reader
	Stderr io.Reader
	wait   func() error // the raw end of the command
	kill   func()
	exit   func(error, Output) error // turns the raw end into an error
	host   string
}

// Run drives a started command like Exec: cmd's input, output capture,
// limits and timeout apply (its Line is ignored). Callers may replace
// Stdout/Stderr with filtered streams first.
func (p *Proc) Run(ctx context.Context, cmd Command) (Output, error) {
	return runProc(ctx, cmd, p, p.host)
}

// Wait waits for the command to exit (an *ExitError for a non-zero status).
func (p *Proc) Wait() error { return p.exit(p.wait(), Output{}) }

// Close stops the command (sshd ignores signals sent over the channel, so
// closing the session is the reliable way to stop remote work).
func (p *Proc) Close() error { p.kill(); return nil }

// Start starts a command with raw streams.
func (c *Client) Start(ctx context.Context, line string) (*Proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted: %w", err)
	}
	sess, err := c.newSession(ctx)
	if err != nil {
		var se *Error
		if errors.As(err, &se) {
			return nil, err
		}
		return nil, c.lostErr(fmt.Errorf("opening an SSH session to %s: %w", c.cfg.Host, err))
	}
	var ended sync.Once
	end := func() { ended.Do(func() { c.sessions.Add(-1) }) }
	p := &Proc{wait: func() error { err := sess.Wait(); end(); return err }, kill: func() { sess.Close(); end() }, host: c.cfg.Host,
		exit: func(err error, out Output) error { return c.exitErr(err, line, out) }}
	if p.Stdin, err = sess.StdinPipe(); err == nil {
		if p.Stdout, err = sess.StdoutPipe(); err == nil {
			p.Stderr, err = sess.StderrPipe()
		}
	}
	if err == nil {
		err = sess.Start(PosixLine(line))
	}
	if err != nil {
		p.kill()
		return nil, c.lostErr(fmt.Errorf("starting a command on %s: %w", c.cfg.Host, err))
	}
	return p, nil
}

// MaxSessionWait bounds how long a session refused by the server's
// MaxSessions is asked for again.
const MaxSessionWait = 10 * time.Minute

// newSession opens a session channel. sshd refuses more than MaxSessions
// at once on one connection (10 by default, on NixOS too; OpenSSH answers
// "open failed"), and a run may use one connection for more: a build host
// serves the builds, bridges and copies of several targets. A refused
// session is asked for again as the others end (backing off to a second),
// for up to MaxSessionWait; with none of ours open (for two seconds),
// nothing will end, and the refusal is final.
func (c *Client) newSession(ctx context.Context) (*ssh.Session, error) {
	deadline := time.Now().Add(MaxSessionWait)
	wait := 20 * time.Millisecond
	var alone time.Time
	for {
		sess, err := c.client.NewSession()
		if err == nil {
			c.sessions.Add(1)
			return sess, nil
		}
		var oe *ssh.OpenChannelError
		if !errors.As(err, &oe) || (oe.Reason != ssh.ConnectionFailed && oe.Reason != ssh.Prohibited) {
			return nil, err
		}
		// None of ours open (for longer than sshd takes to see the last
		// one closed): nothing will free up.
		switch {
		case c.sessions.Load() > 0:
			alone = time.Time{}
		case alone.IsZero():
			alone = time.Now()
		case time.Since(alone) > 2*time.Second:
			return nil, &Error{Kind: KindOther, Address: c.cfg.Host, Err: err,
				Cause:  fmt.Sprintf("%s refused to open an SSH session (%s)", c.cfg.Host, ui.Sanitize(oe.Message, 100)),
				Remedy: "check sshd there (its log says why: MaxSessions, a resource limit)"}
		}
		if time.Now().After(deadline) {
			return nil, &Error{Kind: KindSlow, Address: c.cfg.Host, Err: err,
				Cause:  fmt.Sprintf("%s refused another SSH session on this connection for %v (%s)", c.cfg.Host, MaxSessionWait, ui.Sanitize(oe.Message, 100)),
				Remedy: "raise sshd's MaxSessions there (services.openssh.settings.MaxSessions on NixOS; 10 by default) or deploy fewer targets at once (-jobs)"}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("interrupted: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// Run runs a command with captured, bounded output (the common case).
func (c *Client) Run(ctx context.Context, line string, stdin io.Reader) (Output, error) {
	return c.Exec(ctx, Command{Line: line, Stdin: stdin})
}

// Exec runs a command: its input is written, its output streamed or
// captured (bounded), and it is stopped when ctx ends, its timeout
// expires or it prints more than allowed.
func (c *Client) Exec(ctx context.Context, cmd Command) (Output, error) {
	p, err := c.Start(ctx, cmd.Line)
	if err != nil {
		return Output{Code: -1}, err
	}
	return runProc(ctx, cmd, p, c.cfg.Host)
}

// runProc drives a started command: shared by SSH sessions and local
// processes, so that limits and timeouts behave the same everywhere.
func runProc(ctx context.Context, cmd Command, p *Proc, host string) (Output, error) {
	stdin, stdout, stderr, wait, kill, exitErr := p.Stdin, p.Stdout, p.Stderr, p.wait, p.kill, p.exit
	limit := cmd.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	over := make(chan string, 2)
	so := &capture{w: cmd.Stdout, limit: limit, over: over, stream: "standard output"}
	se := &capture{w: cmd.Stderr, limit: limit, over: over, stream: "standard error"}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); so.drain(stdout) }()
	go func() { defer wg.Done(); se.drain(stderr) }()
	go func() {
		if cmd.Stdin != nil {
			_, _ = io.Copy(stdin, cmd.Stdin)
		}
		stdin.Close()
	}()
	done := make(chan error, 1)
	go func() {
		wg.Wait() // all output read before the exit status is taken
		done <- wait()
	}()
	var timeout <-chan time.Time
	if cmd.Timeout > 0 {
		t := time.NewTimer(cmd.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case err = <-done:
		out := Output{Stdout: so.String(), Stderr: se.String()}
		if err == nil {
			return out, nil
		}
		return out, exitErr(err, out)
	case stream := <-over:
		err = &Error{Kind: KindTooMuch, Address: host,
			Cause:  fmt.Sprintf("%s sent more than %s on %s of `%s`", host, humanBytes(limit), stream, cmd.name()),
			Remedy: "the target's output is not what a NixOS machine sends: check the target (its shell startup files, the command's output)"}
	case <-timeout:
		err = &Error{Kind: KindSlow, Address: host,
			Cause:  fmt.Sprintf("%s did not finish `%s` within %v", host, cmd.name(), cmd.Timeout),
			Remedy: "the target is overloaded or the command hangs; check it, or give more time with -cmdtimeout"}
	case <-ctx.Done():
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	kill()
	// A peer that keeps the channel open (sshd waits for the command's
	// process before it closes a channel) must not hold us: wait a
	// little, then go on. The captures stop delivering to the caller's
	// writers now, so nothing reaches them after we return.
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	so.stop()
	se.stop()
	return Output{Stdout: so.String(), Stderr: se.String(), Code: -1}, err
}

// capture forwards a stream to w, or keeps at most limit bytes of it.
type capture struct {
	w      io.Writer
	limit  int64
	over   chan<- string
	stream string

	mu      sync.Mutex
	buf     strings.Builder
	n       int64
	stopped bool
}

// stop makes the capture drop whatever still arrives.
func (c *capture) stop() {
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
}

func (c *capture) drain(r io.Reader) {
	b := make([]byte, 32<<10)
	for {
		n, err := r.Read(b)
		if n > 0 {
			if c.w != nil {
				c.mu.Lock()
				var werr error
				if !c.stopped {
					_, werr = c.w.Write(b[:n])
				}
				c.mu.Unlock()
				if werr != nil {
					// The consumer gave up: keep the channel flowing.
					_, _ = io.Copy(io.Discard, r)
					return
				}
			} else {
				c.mu.Lock()
				if c.stopped {
					c.mu.Unlock()
					_, _ = io.Copy(io.Discard, r)
					return
				}
				if c.n+int64(n) > c.limit {
					c.mu.Unlock()
					c.over <- c.stream
					_, _ = io.Copy(io.Discard, r)
					return
				}
				c.buf.Write(b[:n])
				c.n += int64(n)
				c.mu.Unlock()
			}
		}
		if err != nil {
			return
		}
	}
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// exitErr turns a session's end into an error.
func (c *Client) exitErr(err error, line string, out Output) error {
	if err == nil {
		return nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		out.Code = ee.ExitStatus()
		return &ExitError{Command: line, Output: out}
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		return c.lostErr(fmt.Errorf("the SSH connection to %s was lost while running a command", c.cfg.Host))
	}
	return c.lostErr(fmt.Errorf("running a command on %s: %w", c.cfg.Host, err))
}

// lostErr prefers the keepalive's diagnosis when the connection died.
func (c *Client) lostErr(err error) error {
	if d := c.Dead(); d != nil {
		return d
	}
	return &Error{Kind: KindLost, Address: c.cfg.Host, Err: err, Cause: err.Error(),
		Remedy: "check the network and that the target is up, then run again"}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// NewProc wraps streams and functions into a Proc, for connections other
// than SSH (tests' fake targets): wait returns the command's end (an
// *ExitError for a non-zero status), kill stops it.
func NewProc(host string, stdin io.WriteCloser, stdout, stderr io.Reader, wait func() error, kill func()) *Proc {
	return &Proc{Stdin: stdin, Stdout: stdout, Stderr: stderr, wait: wait, kill: kill, host: host,
		exit: func(err error, out Output) error {
			var ee *ExitError
			if errors.As(err, &ee) {
				ee.Output.Stdout, ee.Output.Stderr = out.Stdout, out.Stderr
				return ee
			}
			return err
		}}
}

// PosixLine wraps a command line (POSIX sh) for the target's login shell,
// which sshd runs every command with ($SHELL -c <line>). That shell may be
// no POSIX shell: users.users.<name>.shell = pkgs.fish is a common NixOS
// setting. `exec /bin/sh -c '<line>'` means the same to sh, dash, bash,
// zsh, ksh and fish: the line goes in single quotes, with every ' and \
// outside them (fish reads \\ and \' inside single quotes as escapes; sh
// does not). (/bin/sh exists on NixOS: environment.binsh.)
func PosixLine(line string) string {
	var b strings.Builder
	b.Grow(len(line) + 24)
	b.WriteString("exec /bin/sh -c '")
	for i := 0; i < len(line); i++ { // bytes: the line need not be UTF-8
		switch c := line[i]; c {
		case '\'':
			b.WriteString(`'\''`)
		case '\\':
			b.WriteString(`'\\'`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteString("'")
	return b.String()
}
