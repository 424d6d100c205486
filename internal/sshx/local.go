package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/monibahmed/nixos-config/internal/run"
)

// Local runs commands on this machine with /bin/sh (deploying to
// localhost), with the same limits and timeouts as an SSH connection.
type Local struct {
	Runner run.Runner
}

// Exec implements the same contract as Client.Exec.
func (l Local) Exec(ctx context.Context, cmd Command) (Output, error) {
	p, err := l.Start(ctx, cmd.Line)
	if err != nil {
		return Output{Code: -1}, err
	}
	return runProc(ctx, cmd, p, "localhost")
}

// Run runs a command with captured, bounded output.
func (l Local) Run(ctx context.Context, line string, stdin io.Reader) (Output, error) {
	return l.Exec(ctx, Command{Line: line, Stdin: stdin})
}

// Start starts /bin/sh -c line with raw streams.
func (l Local) Start(ctx context.Context, line string) (*Proc, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("interrupted: %w", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := l.Runner.Run(cctx, run.Cmd{Name: "/bin/sh", Args: []string{"-c", line}, Stdin: inR, Stdout: outW, Stderr: errW})
		inR.Close()
		outW.Close()
		errW.Close()
		done <- err
	}()
	var once sync.Once
	var result error
	wait := func() error {
		once.Do(func() { result = <-done; cancel() })
		return result
	}
	return &Proc{Stdin: inW, Stdout: outR, Stderr: errR, wait: wait, kill: cancel, host: "localhost",
		exit: func(err error, out Output) error {
			var ee *run.ExitError
			if errors.As(err, &ee) {
				out.Code = ee.Code
				return &ExitError{Command: line, Output: out}
			}
			return err
		}}, nil
}

// Close implements the connection contract (nothing to close).
func (Local) Close() error { return nil }
