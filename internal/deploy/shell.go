package deploy

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
)

// Shell runs shell commands on a target (over SSH, or locally).
type Shell interface {
	Run(ctx context.Context, command string, stdin io.Reader) (sshx.Output, error)
	// RunStream is Run with the caller's streams, for long-running commands.
	RunStream(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) error
	Close() error
}

// Connector opens shells to targets.
type Connector interface {
	Connect(ctx context.Context, t inventory.Target) (Shell, error)
}

// SSHConnector connects with golang.org/x/crypto/ssh.
type SSHConnector struct {
	KnownHosts []string
	Identities []string
	Timeout    time.Duration
}

// Connect implements Connector.
func (c SSHConnector) Connect(ctx context.Context, t inventory.Target) (Shell, error) {
	return sshx.Dial(ctx, sshx.Config{
		Address: t.Address, User: t.User, KnownHosts: c.KnownHosts,
		Identities: c.Identities, Timeout: c.Timeout,
	})
}

// LocalShell runs commands on this machine (deploying to localhost).
type LocalShell struct {
	Runner run.Runner
}

// Run implements Shell.
func (l LocalShell) Run(ctx context.Context, command string, stdin io.Reader) (sshx.Output, error) {
	var so, se strings.Builder
	err := l.Runner.Run(ctx, run.Cmd{Name: "/bin/sh", Args: []string{"-c", command}, Stdin: stdin, Stdout: &so, Stderr: &se})
	out := sshx.Output{Stdout: so.String(), Stderr: se.String()}
	var ee *run.ExitError
	if errors.As(err, &ee) {
		out.Code = ee.Code
		return out, &sshx.ExitError{Command: command, Output: out}
	}
	return out, err
}

// RunStream implements Shell.
func (l LocalShell) RunStream(ctx context.Context, command string, stdin io.Reader, stdout, stderr io.Writer) error {
	err := l.Runner.Run(ctx, run.Cmd{Name: "/bin/sh", Args: []string{"-c", command}, Stdin: stdin, Stdout: stdout, Stderr: stderr})
	var ee *run.ExitError
	if errors.As(err, &ee) {
		return &sshx.ExitError{Command: command, Output: sshx.Output{Code: ee.Code}}
	}
	return err
}

// Close implements Shell.
func (LocalShell) Close() error { return nil }
