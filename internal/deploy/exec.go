package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
)

// ExecOptions of Exec.
type ExecOptions struct {
	Command string // a shell command line, run by the target's /bin/sh (as root with Sudo)
	Sudo    bool   // as root through sudo (the password only ever reaches sudo's prompt)
	// Timeout bounds the command on each target (default DefaultExecTimeout).
	Timeout time.Duration
	Jobs    int // targets at once (default DefaultExecJobs)
	// Line receives each line of output as it arrives, sanitized (stream
	// is "stdout" or "stderr"); it is called from several goroutines.
	Line func(target, stream, line string)
}

// Defaults of Exec.
const (
	DefaultExecTimeout = 10 * time.Minute
	DefaultExecJobs    = 16
	// MaxExecOutput bounds what is kept and shown of each stream of each
	// target; the rest is dropped (and the result says so).
	MaxExecOutput = 1 << 20
	maxExecLine   = 4096
	maxCommand    = 64 << 10
)

// ExecResult is one target's outcome.
type ExecResult struct {
	Target  string `json:"target"`
	Address string `json:"address"`
	// ExitCode is the command's exit status; -1 when it did not run to
	// its end (Error says why).
	ExitCode int `json:"exitCode"`
	// Stdout and Stderr are the output, sanitized: control characters
	// and escape sequences made visible, lines cut at 4096 characters.
	Stdout    string  `json:"stdout"`
	Stderr    string  `json:"stderr"`
	Truncated bool    `json:"truncated,omitempty"` // more than MaxExecOutput was sent
	Error     string  `json:"error,omitempty"`     // cause and remedy
	Seconds   float64 `json:"seconds"`
	Err       error   `json:"-"`
}

// OK tells whether the command ran and exited 0.
func (r ExecResult) OK() bool { return r.Err == nil && r.ExitCode == 0 }

// Exec runs a command on targets in parallel over the connection deploys
// use (one SSH connection per target, host keys checked, ~/.ssh/config),
// streaming each line of output to eo.Line. The error is for problems
// that stop the whole run before any target is touched.
func (d *Deployer) Exec(ctx context.Context, targets []inventory.Target, eo ExecOptions, o Options) ([]ExecResult, error) {
	if err := o.Normalize(); err != nil {
		return nil, err
	}
	if strings.TrimSpace(eo.Command) == "" {
		return nil, errors.New("no command given")
	}
	if len(eo.Command) > maxCommand || strings.ContainsRune(eo.Command, 0) || !utf8.ValidString(eo.Command) {
		return nil, errors.New("the command must be valid UTF-8 text without NUL, at most 64 KiB")
	}
	if len(targets) == 0 {
		return nil, errors.New("no targets selected")
	}
	if eo.Timeout <= 0 {
		eo.Timeout = DefaultExecTimeout
	}
	if eo.Jobs <= 0 {
		eo.Jobs = DefaultExecJobs
	}
	if err := prepareTargets(targets, o); err != nil {
		return nil, err
	}
	out := make([]ExecResult, len(targets))
	parallel(len(targets), eo.Jobs, func(i int) { out[i] = d.execOne(ctx, targets[i], eo, o) })
	return out, nil
}

func (d *Deployer) execOne(ctx context.Context, t inventory.Target, eo ExecOptions, o Options) ExecResult {
	start := time.Now()
	res := ExecResult{Target: t.Name, Address: t.Address, ExitCode: -1}
	fail := func(f *Failure) ExecResult {
		f.Target, f.Stage = t.Name, "exec"
		res.Err, res.Error = f, f.Error()
		res.Seconds = time.Since(start).Seconds()
		return res
	}
	if ctx.Err() != nil {
		return fail(interrupted("the command did not start", nil))
	}
	sess, err := d.session(ctx, t, o)
	if err != nil {
		return fail(connectFailure(err))
	}
	defer sess.Close()
	so := &lineWriter{target: t.Name, stream: "stdout", emit: eo.Line}
	se := &lineWriter{target: t.Name, stream: "stderr", emit: eo.Line}
	if eo.Sudo {
		_, err = sess.RunRoot(ctx, target.Root{Name: "the command", Args: []string{"sh", "-c", eo.Command}, Stdout: so, Stderr: se, Timeout: eo.Timeout})
	} else {
		_, err = sess.Conn.Exec(ctx, sshx.Command{Line: eo.Command, Stdout: so, Stderr: se, Timeout: eo.Timeout, Name: "the command"})
	}
	so.flush()
	se.flush()
	res.Stdout, res.Stderr, res.Truncated = so.text(), se.text(), so.truncated || se.truncated
	res.Seconds = time.Since(start).Seconds()
	var ee *sshx.ExitError
	switch {
	case err == nil:
		res.ExitCode = 0
	case errors.As(err, &ee) && ee.Code >= 0:
		res.ExitCode = ee.Code
	case ctx.Err() != nil:
		return fail(interrupted("the command was stopped on the target", err))
	default:
		return fail(targetFailure(err))
	}
	return res
}

// lineWriter splits a stream into lines, sanitizes them (text from a
// target is untrusted), passes them on and keeps at most MaxExecOutput
// bytes of the stream.
type lineWriter struct {
	target, stream string
	emit           func(target, stream, line string)

	mu        sync.Mutex
	buf       []byte
	seen      int64
	kept      strings.Builder
	truncated bool
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	if room := int64(MaxExecOutput) - w.seen; int64(len(p)) > room {
		if room < 0 {
			room = 0
		}
		p = p[:room]
		if !w.truncated {
			w.truncated = true
			defer w.line(fmt.Sprintf("[more than %s of output: the rest is not shown]", HumanBytes(MaxExecOutput)))
		}
	}
	w.seen += int64(len(p))
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxExecLine {
		w.line(string(w.buf))
		w.buf = w.buf[:0]
	}
	return n, nil
}

// line passes on one line (the lock is held).
func (w *lineWriter) line(s string) {
	s = target.Clean(strings.TrimSuffix(s, "\r"), maxExecLine)
	w.kept.WriteString(s + "\n")
	if w.emit != nil {
		w.emit(w.target, w.stream, s)
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.line(string(w.buf))
		w.buf = nil
	}
}

func (w *lineWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.kept.String()
}
