package deploy

import (
	"context"
	"errors"
	"sync"
)

// ErrNoSudoPrompt: a target needs the sudo password and nobody can type it.
var ErrNoSudoPrompt = errors.New("no terminal to ask for the sudo password")

// Sudo holds the sudo password of one run, in memory only. It is asked for
// at most once and sent only to targets whose `sudo -n true` fails, on
// standard input of `sudo -S -p ”`: never in argv, the environment, logs or files.
type Sudo struct {
	// Prompt asks the user; nil when there is no terminal.
	Prompt func(ctx context.Context) (string, error)

	mu       sync.Mutex
	password string
	known    bool
	err      error
}

// Password returns the password, prompting the first time.
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

// Forget drops a password the targets rejected.
func (s *Sudo) Forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.password, s.known = "", false
	s.err = errors.New("the sudo password was rejected")
}
