package deploy

import (
	"context"
	"errors"
	"sync"

	"github.com/monibahmed/nixos-config/internal/target"
)

// ErrNoSudoPrompt: a target needs the sudo password and nobody can type it.
var ErrNoSudoPrompt = target.ErrNoPrompt

// Sudo holds the sudo password of one run, in memory only. It is asked for
// at most once and only ever written to sudo's own prompt on a target
// (see internal/target): never in argv, the environment, logs or files.
type Sudo struct {
	// Prompt asks the user; nil when there is no terminal.
	Prompt func(ctx context.Context) (string, error)

	mu       sync.Mutex
	password string
	known    bool
	err      error
}

// Password implements target.Password: the password, prompting the first time.
func (s *Sudo) Password(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known {
		return s.password, nil
	}
	if s.err != nil {
		return "", s.err
	}
	if s.Prompt == nil {
		return "", ErrNoSudoPrompt
	}
	pw, err := s.Prompt(ctx)
	if err != nil {
		s.err = err
		return "", err
	}
	s.password, s.known = pw, true
	return pw, nil
}

// Set stores a password obtained up front (-asksudo).
func (s *Sudo) Set(pw string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.password, s.known = pw, true
}

// Rejected implements target.Password: drop a password a target refused.
func (s *Sudo) Rejected() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.password, s.known = "", false
	s.err = errors.New("the sudo password was rejected")
}
