package target

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Password supplies the sudo password of a run, asked at most once and
// kept in memory only.
type Password interface {
	// Password returns the password, asking the user the first time.
	Password(ctx context.Context) (string, error)
	// Rejected tells that a target refused it.
	Rejected()
}

// ErrNoPrompt: a target needs the sudo password and nobody can type it.
var ErrNoPrompt = errors.New("no terminal to ask for the sudo password")

// Root is a command to run as root.
type Root struct {
	Name  string   // for messages
	Args  []string // the command and its arguments (quoted here)
	Stdin io.Reader
	// Stdout, Stderr stream the command's output; nil: captured (bounded).
	Stdout, Stderr io.Writer
	Timeout        time.Duration // 0: the session's command limit
	Limit          int64
}

// sudo exchange: `sudo -S -p <prompt marker>` prints the marker on stderr
// when (and only when) it wants the password; the command then announces
// itself with the start marker before it reads anything. The password is
// written only after the prompt marker, and the command's own input only
// after the start marker, so the password can never become input of the
// command, whatever the sudoers policy (cached credentials, !tty_tickets,
// NOPASSWD rules for some commands).
const maxPreamble = 64 << 10

func marker() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RunRoot runs a command as root: directly when the SSH user is root,
// otherwise through sudo.
func (s *Session) RunRoot(ctx context.Context, r Root) (sshx.Output, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = s.Limits.Command
	}
	limit := r.Limit
	if limit <= 0 {
		limit = s.Limits.Output
	}
	cmd := sshx.Command{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Limit: limit, Timeout: timeout, Name: r.Name}
	p, out, err := s.StartRoot(ctx, r.Name, r.Args...)
	if err != nil {
		return out, err
	}
	return p.Run(ctx, cmd)
}

// StartRoot starts a command as root and returns it once it runs (after
// sudo's password exchange), with raw streams.
func (s *Session) StartRoot(ctx context.Context, name string, args ...string) (*sshx.Proc, sshx.Output, error) {
	if s.User == "root" {
		p, err := s.Conn.Start(ctx, run.ShellJoin(args...))
		return p, sshx.Output{Code: -1}, err
	}
	prompt, start := "[nixos-config-sudo-"+marker()+"]", "nixos-config-root-"+marker()
	line := "sudo -S -p " + run.Quote(prompt) + " -- sh -c " + run.Quote(`printf '%s\n' "$0" >&2; exec "$@"`) + " " + start + " " + run.ShellJoin(args...)
	p, err := s.Conn.Start(ctx, line)
	if err != nil {
		return nil, sshx.Output{Code: -1}, err
	}
	pre := newPreamble(p.Stderr, prompt, start)
	p.Stderr = pre.rest
	// sudo itself gets the short command limit (not counting the time the
	// user takes to type the password); the command then gets its own.
	deadline := time.NewTimer(s.Limits.Command)
	defer deadline.Stop()
	prompts := 0
	for {
		select {
		case ev := <-pre.events:
			switch ev {
			case evPrompt:
				prompts++
				if prompts > 1 || s.Sudo == nil {
					p.Close()
					_ = p.Wait()
					if prompts > 1 && s.Sudo != nil {
						s.Sudo.Rejected()
						return nil, sshx.Output{Code: -1}, &Error{Section: trouble.Sudo, Cause: "sudo on " + s.Name + " rejected the password",
							Remedy: "run again and type " + s.User + "'s password on the target"}
					}
					return nil, sshx.Output{Code: -1}, needPassword(s)
				}
				deadline.Stop()
				pw, err := s.Sudo.Password(ctx)
				if err != nil {
					p.Close()
					_ = p.Wait()
					if errors.Is(err, ErrNoPrompt) {
						return nil, sshx.Output{Code: -1}, needPassword(s)
					}
					return nil, sshx.Output{Code: -1}, &Error{Section: trouble.Sudo, Cause: "no sudo password: " + err.Error(), Remedy: "run again and type the password", Err: err}
				}
				deadline.Reset(s.Limits.Command)
				if _, err := io.WriteString(p.Stdin, pw+"\n"); err != nil {
					p.Close()
					_ = p.Wait()
					return nil, sshx.Output{Code: -1}, commandError("sudo", err, sshx.Output{})
				}
			case evStarted:
				// The command runs as root: from here on it is a plain command.
				return p, sshx.Output{}, nil
			case evEnded:
				// sudo exited before the command started.
				werr := p.Wait()
				return nil, sshx.Output{Stderr: pre.text(), Code: exitCode(werr)}, sudoFailure(s, pre.text(), werr)
			case evTooMuch:
				p.Close()
				_ = p.Wait()
				return nil, sshx.Output{Code: -1}, &Error{Section: trouble.Sudo, Cause: "sudo on " + s.Name + " printed more than 64 KiB before starting the command",
					Remedy: "check the target's sudo configuration (lecture, prompts)"}
			}
		case <-deadline.C:
			p.Close()
			_ = p.Wait()
			return nil, sshx.Output{Code: -1}, &Error{Section: trouble.Sudo, Cause: fmt.Sprintf("sudo on %s did not start %s within %v", s.Name, name, s.Limits.Command),
				Remedy: "check sudo on the target (a slow PAM module, DNS lookups of the host name)"}
		case <-ctx.Done():
			p.Close()
			_ = p.Wait()
			return nil, sshx.Output{Code: -1}, fmt.Errorf("interrupted: %w", ctx.Err())
		}
	}
}

func exitCode(err error) int {
	var ee *sshx.ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if err == nil {
		return 0
	}
	return -1
}

func needPassword(s *Session) *Error {
	return &Error{Section: trouble.Sudo, Cause: "sudo on " + s.Name + " needs a password and there is no terminal to ask for it",
		Remedy: "run from a terminal, or pass the password on standard input with -asksudo, or give " + s.User + " passwordless sudo (security.sudo.wheelNeedsPassword = false)",
		Err:    ErrNoPrompt}
}

// sudoFailure explains why sudo did not run the command.
func sudoFailure(s *Session, text string, err error) *Error {
	// The connection, not sudo, failed (lost, or declared dead).
	var se *sshx.Error
	if errors.As(err, &se) {
		return commandError("sudo", err, sshx.Output{})
	}
	msg := strings.ToLower(text)
	code := exitCode(err)
	detail := Clean(strings.Join(LastLines(text, 2), " | "), 300)
	switch {
	case code == 127 || strings.Contains(msg, "sudo: not found") || strings.Contains(msg, "sudo: command not found"):
		return &Error{Section: trouble.Sudo, Cause: "sudo is not installed on " + s.Name + " (or not in " + s.User + "'s PATH)",
			Remedy: "enable it (security.sudo.enable = true) and put " + s.User + " in wheel", Err: err}
	case code == 126 || strings.Contains(msg, "permission denied"):
		return &Error{Section: trouble.Sudo, Cause: "sudo on " + s.Name + " cannot be run by " + s.User + " (" + detail + ")",
			Remedy: "check that sudo is installed setuid root (security.sudo.enable = true)", Err: err}
	case strings.Contains(msg, "must have a tty") || strings.Contains(msg, "requiretty"):
		return &Error{Section: trouble.Sudo, Cause: "sudo on " + s.Name + " requires a terminal (Defaults requiretty)",
			Remedy: "allow sudo without a terminal for " + s.User + ": security.sudo.extraConfig = \"Defaults:" + s.User + " !requiretty\"", Err: err}
	case strings.Contains(msg, "not in the sudoers") || strings.Contains(msg, "not allowed to") || strings.Contains(msg, "may not run sudo"):
		return &Error{Section: trouble.Sudo, Cause: s.User + " may not use sudo on " + s.Name + " (" + detail + ")",
			Remedy: "add " + s.User + " to wheel (users.users." + s.User + ".extraGroups) or a rule in security.sudo.extraRules", Err: err}
	case strings.Contains(msg, "incorrect password") || strings.Contains(msg, "no password was provided") || strings.Contains(msg, "password is required"):
		if s.Sudo != nil {
			s.Sudo.Rejected()
		}
		return &Error{Section: trouble.Sudo, Cause: "sudo on " + s.Name + " refused the password", Remedy: "run again and type " + s.User + "'s password on the target", Err: err}
	}
	return &Error{Section: trouble.Sudo, Cause: fmt.Sprintf("sudo on %s failed (exit status %d): %s", s.Name, code, detail),
		Remedy: "check sudo for " + s.User + " on the target", Err: err}
}

// preamble watches sudo's stderr until the command starts, then passes the
// rest of the stream through.
type preamble struct {
	events chan int
	rest   io.Reader
	mu     sync.Mutex
	seen   bytes.Buffer
}

const (
	evPrompt = iota
	evStarted
	evEnded
	evTooMuch
)

func newPreamble(r io.Reader, prompt, start string) *preamble {
	pr, pw := io.Pipe()
	p := &preamble{events: make(chan int, 16), rest: pr}
	go func() {
		buf := make([]byte, 4096)
		var pending []byte // not yet matched
		started := false
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if started {
					if _, werr := pw.Write(buf[:n]); werr != nil {
						_, _ = io.Copy(io.Discard, r)
						return
					}
				} else {
					pending = append(pending, buf[:n]...)
					for {
						pi := bytes.Index(pending, []byte(prompt))
						si := bytes.Index(pending, []byte(start+"\n"))
						if si >= 0 && (pi < 0 || si < pi) {
							p.keep(pending[:si])
							rest := pending[si+len(start)+1:]
							pending = nil
							started = true
							p.events <- evStarted
							if len(rest) > 0 {
								if _, werr := pw.Write(rest); werr != nil {
									_, _ = io.Copy(io.Discard, r)
									return
								}
							}
							break
						}
						if pi >= 0 {
							p.keep(pending[:pi])
							pending = pending[pi+len(prompt):]
							select { // sudo gives up after a few prompts anyway
							case p.events <- evPrompt:
							default:
							}
							continue
						}
						break
					}
					if !started && len(pending)+p.size() > maxPreamble {
						p.events <- evTooMuch
						_, _ = io.Copy(io.Discard, r)
						pw.Close()
						return
					}
				}
			}
			if err != nil {
				if !started {
					p.keep(pending)
					p.events <- evEnded
				}
				pw.Close()
				return
			}
		}
	}()
	return p
}

func (p *preamble) keep(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen.Len() < maxPreamble {
		p.seen.Write(b)
	}
}

func (p *preamble) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen.Len()
}

func (p *preamble) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen.String()
}
