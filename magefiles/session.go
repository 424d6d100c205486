//go:build mage

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/monibahmed/nixos-config/internal/deploy"
	"github.com/monibahmed/nixos-config/internal/gitx"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// fleet is the inventory and SSH settings a task works with: the
// repository's, or the lab's (-lab).
type fleet struct {
	inv        *inventory.Inventory
	knownHosts []string
	identities []string
	lab        bool
}

// openFleet finds the repository and loads its fleet (or the lab's).
func openFleet(ctx context.Context, lab *bool) (*env, *fleet, error) {
	e, err := newEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	fl, err := loadFleet(e, lab)
	if err != nil {
		return nil, nil, err
	}
	return e, fl, nil
}

func loadFleet(e *env, lab *bool) (*fleet, error) {
	if lab != nil && *lab {
		fl, err := loadLabFleet(labDir(e))
		if err != nil {
			return nil, fmt.Errorf("%w: start the lab with mage lab:up", err)
		}
		return fl, nil
	}
	inv, err := inventory.LoadRepo(e.root)
	if err != nil {
		return nil, err
	}
	return &fleet{inv: inv}, nil
}

func on(b *bool) bool { return b != nil && *b }

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func short(c string) string {
	if c == "" {
		return "-"
	}
	return target.ShortCommit(c)
}

// newDeployer wires the deploy package to this machine: nix, git, SSH
// (honouring ~/.ssh/config), output.
func newDeployer(e *env, f *fleet, reporter deploy.Reporter, o deploy.Options) *deploy.Deployer {
	return &deploy.Deployer{
		Root:      e.root,
		Runner:    e.runner,
		Nix:       nix.New(e.runner),
		Git:       gitx.Git{Runner: e.runner, Dir: e.root},
		Connector: deploy.NewSSHConnector(o, f.knownHosts, f.identities),
		Report:    reporter,
		Sudo:      &deploy.Sudo{},
		Hook:      filepath.Join(e.root, deploy.HookPath),
		Fleet:     f.inv,
	}
}

const sudoPromptText = "\nsudo password for the targets (asked once, kept in memory for this run): "

// readSecret reads a line with hidden input from the terminal (pausing the
// progress display, when there is one), or the first line of standard
// input when it is not a terminal.
func readSecret(prompt string, pause func() func()) (string, error) {
	fd := int(os.Stdin.Fd())
	if term.IsTerminal(fd) {
		if pause != nil {
			defer pause()()
		}
		fmt.Fprint(os.Stderr, prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		return string(b), err
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no terminal and nothing on standard input to read the password from")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// sudoPrompt asks for the sudo password when a target turns out to need
// it; nil when standard input is not a terminal (then -asksudo is the way).
func sudoPrompt(r deploy.Reporter) func(ctx context.Context) (string, error) {
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil
	}
	return func(ctx context.Context) (string, error) { return readSecret(sudoPromptText, r.Pause) }
}

// askSudoNow implements -asksudo: the password before anything starts.
func askSudoNow(s *deploy.Sudo, r deploy.Reporter) error {
	pw, err := readSecret(sudoPromptText, r.Pause)
	if err != nil {
		return fmt.Errorf("-asksudo: %w", err)
	}
	s.Set(pw)
	return nil
}

// interrupts takes over SIGINT and SIGTERM from Mage (whose own handling
// exits 5 seconds after the first Ctrl-C, however long an activation takes):
// the first signal cancels the returned context (what says "stop starting
// work"), the second closes abandon, a third exits at once. first is what
// the first interrupt means, for the message.
func interrupts(parent context.Context, out *ui.Printer, first string) (context.Context, <-chan struct{}, func()) {
	ctx, cancel := context.WithCancel(parent)
	abandon := make(chan struct{})
	ch := make(chan os.Signal, 4)
	take := func() {
		// Ignore first, so that no signal finds the default action (exit)
		// in between; Notify then delivers them to ch only.
		signal.Ignore(syscall.SIGINT, syscall.SIGTERM)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	}
	take()
	done := make(chan struct{})
	var once sync.Once
	go func() {
		// Mage registers its handler right after starting the target: take
		// the signals back once more after that.
		select {
		case <-done:
			return
		case <-time.After(200 * time.Millisecond):
		}
		take()
	}()
	go func() {
		n := 0
		for {
			select {
			case <-done:
				return
			case s := <-ch:
				n++
				switch n {
				case 1:
					out.Linef("%s: %s (interrupt again to abandon them)", s, first)
					cancel()
				case 2:
					out.Linef("%s: abandoning: the targets' activation units finish by themselves (magic rollback still protects switches); see mage status", s)
					close(abandon)
				default:
					out.Linef("%s: exiting now", s)
					os.Exit(130)
				}
			}
		}
	}()
	return ctx, abandon, func() {
		once.Do(func() {
			close(done)
			signal.Stop(ch)
			cancel()
		})
	}
}
