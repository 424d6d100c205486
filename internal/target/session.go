// Package target is one target machine as seen over one SSH connection:
// commands with bounded output and time, privileged commands through sudo
// (the password only ever goes to sudo's own prompt), the preflight facts
// (validated before use), the cross-deployer lock, the on-target history,
// the activation unit that holds the lock while it runs and rolls back by
// itself, generations, and the bridge that carries `nix copy` over the same
// connection to a nix-daemon on the target.
//
// Everything a target sends is untrusted: every read is capped, every
// command has a time limit, and every fact is validated.
package target

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Conn is a connection to a target: an SSH connection, or this machine.
type Conn interface {
	Exec(ctx context.Context, c sshx.Command) (sshx.Output, error)
	Start(ctx context.Context, line string) (*sshx.Proc, error)
	Close() error
}

// Limits bound what a target may send and how long it may take.
type Limits struct {
	// Command bounds each short remote command after the handshake
	// (preflight, queries, history, markers). Default 60s.
	Command time.Duration
	// Output bounds the captured output of a command. Default 1 MiB.
	Output int64
	// History bounds how much of the history file is read (its tail).
	History int64
	// Activation bounds switch-to-configuration. Default 30 minutes.
	Activation time.Duration
}

// Default limits.
const (
	DefaultCommandTimeout    = 60 * time.Second
	DefaultActivationTimeout = 30 * time.Minute
	DefaultHistoryLimit      = 4 << 20
)

func (l Limits) withDefaults() Limits {
	if l.Command <= 0 {
		l.Command = DefaultCommandTimeout
	}
	if l.Output <= 0 {
		l.Output = sshx.DefaultLimit
	}
	if l.History <= 0 {
		l.History = DefaultHistoryLimit
	}
	if l.Activation <= 0 {
		l.Activation = DefaultActivationTimeout
	}
	return l
}

// Session is a target over one connection.
type Session struct {
	Name   string // target name, for messages
	User   string // the SSH user (root needs no sudo)
	Conn   Conn
	Sudo   Password
	Limits Limits
}

// New returns a session on conn.
func New(name, user string, conn Conn, sudo Password, limits Limits) *Session {
	return &Session{Name: name, User: user, Conn: conn, Sudo: sudo, Limits: limits.withDefaults()}
}

// Close closes the connection.
func (s *Session) Close() error { return s.Conn.Close() }

// Run runs a short command as the SSH user with the default limits.
func (s *Session) Run(ctx context.Context, name, line string, stdin io.Reader) (sshx.Output, error) {
	return s.Conn.Exec(ctx, sshx.Command{Line: line, Stdin: stdin, Name: name, Limit: s.Limits.Output, Timeout: s.Limits.Command})
}

// Error is a failure on the target with its cause and remedy.
type Error struct {
	Section string // of docs/troubleshooting.md
	Cause   string
	Remedy  string
	Detail  []string // sanitized output lines, e.g. of a failed activation
	Err     error
}

func (e *Error) Error() string {
	s := e.Cause
	if e.Remedy != "" {
		s += ": " + e.Remedy
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Connection failures: the cause and remedy of an *sshx.Error, with the
// guide's section.
func connError(err error) *Error {
	var se *sshx.Error
	if errors.As(err, &se) {
		return &Error{Section: SectionOf(se.Kind), Cause: se.Cause, Remedy: se.Remedy, Err: err}
	}
	return &Error{Section: trouble.Network, Cause: err.Error(), Remedy: "check the network and the target", Err: err}
}

// SectionOf maps connection failures to the troubleshooting guide.
func SectionOf(k sshx.Kind) string {
	switch k {
	case sshx.KindUnknownHost, sshx.KindChangedHost, sshx.KindKeyType:
		return trouble.HostKeys
	case sshx.KindAuth:
		return trouble.Auth
	case sshx.KindTooMuch, sshx.KindSlow:
		return trouble.TargetSetup
	}
	return trouble.Network
}

// commandError explains a failed command: connection trouble, limits, or
// the command's own exit status with its (sanitized) last lines.
func commandError(what string, err error, out sshx.Output) *Error {
	var se *sshx.Error
	if errors.As(err, &se) {
		return &Error{Section: SectionOf(se.Kind), Cause: what + ": " + se.Cause, Remedy: se.Remedy, Err: err}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Section: trouble.Network, Cause: what + ": interrupted", Err: err}
	}
	var ee *sshx.ExitError
	if errors.As(err, &ee) {
		return &Error{Section: trouble.TargetSetup, Cause: fmt.Sprintf("%s exited with status %d: %s", what, ee.Code, Clean(strings.Join(LastLines(out.Stderr+"\n"+out.Stdout, 2), " | "), 300)),
			Remedy: "check the target", Err: err}
	}
	return &Error{Section: trouble.Network, Cause: what + ": " + Clean(err.Error(), 300), Remedy: "check the network and the target", Err: err}
}

// LastLines returns the last n non-empty lines of s.
func LastLines(s string, n int) []string { return sshx.LastLines(s, n) }

// Clean makes text from a target safe to show: control characters and
// escape sequences are made visible, and it is cut to at most max runes
// (the one sanitizer, internal/ui).
func Clean(s string, max int) string { return ui.Sanitize(s, max) }
