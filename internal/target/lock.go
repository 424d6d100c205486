package target

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// The target's locks. /run is cleared at boot, so no lock survives the
// machine.
//
//   - LockFile is held by a deployer's session for its whole sequence
//     (preflight to history), so it is freed when the deployer finishes
//     or its connection dies.
//   - ActivationLockFile is held by the activation unit for as long as it
//     runs (switch, waiting for the deployer's verdict, its own rollback),
//     whether or not the deployer is still there. A deployer that takes
//     LockFile also waits until no activation runs, so a dead deployer
//     never frees a target mid-activation.
const (
	LockFile               = "/run/nixos-config.lock"
	LockInfoFile           = "/run/nixos-config.lock.info"
	ActivationLockFile     = "/run/nixos-config.activate.lock"
	ActivationLockInfoFile = "/run/nixos-config.activate.info"
	lockBusyCode           = 99
)

// LockedError: another deployer (or its activation) holds the target.
type LockedError struct {
	Target string
	Holder string // sanitized
	// Activation: the holder is an activation still running on the target.
	Activation bool
}

func (e *LockedError) Error() string {
	if e.Activation {
		return fmt.Sprintf("%s is still activating a deployment (%s)", e.Target, e.Holder)
	}
	return fmt.Sprintf("%s is being deployed by %s", e.Target, e.Holder)
}

// Lock is a held deploy lock.
type Lock struct {
	stdin *io.PipeWriter
	done  chan error
	once  sync.Once
}

// Release frees the lock.
func (l *Lock) Release() {
	l.once.Do(func() {
		l.stdin.Close()
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// lockScript runs as root. It takes LockFile (waiting when $2 is 1),
// then waits for any running activation to end, records who holds the
// lock, says "locked" and keeps it until its input closes. While waiting
// it prints a line every second: when the deployer is gone, the write
// fails and the waiting ends (no stray flock is left behind).
const lockScript = `info=$1 wait=$2
umask 022
exec 8>>` + LockFile + ` || exit 97
while ! flock -n 8; do
	holder=$(head -c 512 ` + LockInfoFile + ` 2>/dev/null | head -n 1)
	if [ "$wait" != 1 ]; then echo "busy $holder"; exit 99; fi
	echo "waiting $holder" || exit 98
	sleep 1
done
exec 7>>` + ActivationLockFile + ` || exit 97
while ! flock -n 7; do
	holder=$(head -c 512 ` + ActivationLockInfoFile + ` 2>/dev/null | head -n 1)
	if [ "$wait" != 1 ]; then echo "activating $holder"; exit 99; fi
	echo "waiting-activation $holder" || exit 98
	sleep 1
done
exec 7>&-
printf '%s\n' "$info" >` + LockInfoFile + `
echo locked
exec cat >/dev/null
`

// Lock takes the target's deploy lock. Without wait it fails at once with a
// *LockedError naming the holder; with wait it blocks until free, calling
// onWait (at most every few seconds) with the holder.
func (s *Session) Lock(ctx context.Context, info string, wait bool, onWait func(holder string)) (*Lock, error) {
	pr, pw := io.Pipe()
	watch := &lineWatch{lines: make(chan string, 64)}
	w := "0"
	if wait {
		w = "1"
	}
	l := &Lock{stdin: pw, done: make(chan error, 1)}
	var stderr bytes.Buffer
	// Not the caller's context: a held lock outlives it (Release ends it).
	// abandon ends the command while it still waits: the script reads no
	// input then, and its next line fails once the session is gone.
	rctx, abandon := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer abandon()
		_, err := s.RunRoot(rctx, Root{Name: "the deploy lock", Args: []string{"sh", "-c", lockScript, "lock", info, w},
			Stdin: pr, Stdout: watch, Stderr: &limited{w: &stderr, n: 4096}, Timeout: 1<<63 - 1})
		watch.close()
		l.done <- err
	}()
	// Without wait the script answers at once: one deadline from the
	// start. With wait, only the script's own "waiting" lines (once a
	// second while another deployer or an activation holds the target)
	// extend it; anything else the target prints does not.
	lastNote := time.Time{}
	timeout := time.NewTimer(s.Limits.Command)
	defer timeout.Stop()
	for {
		select {
		case line, ok := <-watch.lines:
			if !ok {
				err := <-l.done
				pw.Close()
				return nil, s.lockError(err, watch.last(), stderr.String())
			}
			kind, holder, _ := strings.Cut(line, " ")
			holder = Clean(holder, 200)
			switch kind {
			case "locked":
				if line == "locked" {
					return l, nil
				}
			case "waiting", "waiting-activation":
				if !wait {
					continue
				}
				if !timeout.Stop() {
					select {
					case <-timeout.C:
					default:
					}
				}
				timeout.Reset(s.Limits.Command)
				if onWait != nil && time.Since(lastNote) > 10*time.Second {
					lastNote = time.Now()
					if kind == "waiting-activation" {
						onWait("an activation still running on the target (" + holder + ")")
					} else {
						onWait(holder)
					}
				}
			}
		case <-timeout.C:
			abandon()
			l.Release()
			cause := fmt.Sprintf("taking the deploy lock on %s did not finish within %v", s.Name, s.Limits.Command)
			if last := watch.last(); last != "" {
				cause += " (its last line: " + Clean(last, 100) + ")"
			}
			return nil, &Error{Section: trouble.Locks, Cause: cause, Remedy: "check sudo and flock (util-linux) on the target, or raise -cmdtimeout"}
		case <-ctx.Done():
			abandon()
			l.Release()
			return nil, fmt.Errorf("interrupted: %w", ctx.Err())
		}
	}
}

func (s *Session) lockError(err error, last, stderr string) error {
	var ee *sshx.ExitError
	if errors.As(err, &ee) && ee.Code == lockBusyCode {
		kind, holder, _ := strings.Cut(last, " ")
		holder = Clean(holder, 200)
		if holder == "" {
			holder = "another deployer (no details recorded)"
		}
		return &LockedError{Target: s.Name, Holder: holder, Activation: kind == "activating"}
	}
	var te *Error
	if errors.As(err, &te) {
		return te
	}
	if err == nil {
		err = errors.New("the lock holder exited")
	}
	return &Error{Section: trouble.Locks, Cause: "taking the deploy lock on " + s.Name + " failed: " + Clean(strings.TrimSpace(err.Error()+" "+stderr), 300),
		Remedy: "check that flock (util-linux) and sudo work on the target", Err: err}
}

// lineWatch splits a stream into lines (each at most 1 KiB; the rest of a
// longer line is dropped) without rescanning what it saw before.
type lineWatch struct {
	mu     sync.Mutex
	cur    []byte
	drop   bool
	lines  chan string
	lastL  string
	closed bool
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range p {
		if b == '\n' {
			line := string(w.cur)
			w.cur, w.drop = w.cur[:0], false
			w.lastL = line
			select {
			case w.lines <- line:
			default: // nobody listens any more (e.g. "waiting" lines piling up)
			}
			continue
		}
		if len(w.cur) >= 1024 {
			w.drop = true
			continue
		}
		if !w.drop {
			w.cur = append(w.cur, b)
		}
	}
	return len(p), nil
}

func (w *lineWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.lines)
	}
}

func (w *lineWatch) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastL
}

// limited keeps at most n bytes.
type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.n -= k
		_, _ = l.w.Write(p[:k])
	}
	return len(p), nil
}

// LockInfo describes this deployer for the lock file.
func LockInfo(identity, commit string, dirty bool, what string) string {
	c := ShortCommit(commit)
	if dirty {
		c += "-dirty"
	}
	if what != "" {
		return fmt.Sprintf("%s since %s (%s)", identity, time.Now().UTC().Format(time.RFC3339), what)
	}
	return fmt.Sprintf("%s since %s (commit %s)", identity, time.Now().UTC().Format(time.RFC3339), c)
}

// ShortCommit abbreviates a commit id for messages.
func ShortCommit(c string) string {
	if c == "" {
		return "none"
	}
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
