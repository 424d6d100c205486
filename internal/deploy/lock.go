package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"sync"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
)

// Files of the target lock. /run is cleared at boot, so a lock never
// survives the machine.
const (
	lockFile     = "/run/nixos-config.lock"
	lockInfoFile = "/run/nixos-config.lock.info"
	lockBusyCode = 99
)

// Deployer identity for locks and history: user@machine.
func Identity() string {
	u := "unknown"
	if cur, err := user.Current(); err == nil {
		u = cur.Username
	}
	h, _ := os.Hostname()
	if h == "" {
		h = "unknown"
	}
	return u + "@" + h
}

// LockedError: another deployer holds the target.
type LockedError struct {
	Target string
	Holder string // "<user@machine> since <time> (commit <rev>)"
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("%s is being deployed by %s", e.Target, e.Holder)
}

// lock is a held target lock: `flock` on the target, run by a session of the
// deployer's SSH connection and kept by `cat` reading that session's input.
// Closing the input (or the deployer dying, which closes the connection)
// releases it.
type lock struct {
	stdin *io.PipeWriter
	done  chan error
	once  sync.Once
}

func (l *lock) release() {
	l.once.Do(func() {
		l.stdin.Close()
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
		}
	})
}

// lineWatch signals when a given line appears on a stream.
type lineWatch struct {
	mu    sync.Mutex
	buf   strings.Builder
	want  string
	fired chan struct{}
	once  sync.Once
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf.Write(p)
	seen := strings.Contains(w.buf.String(), w.want+"\n")
	w.mu.Unlock()
	if seen {
		w.once.Do(func() { close(w.fired) })
	}
	return len(p), nil
}

// acquireLock takes the target's deploy lock. Without wait it fails at once
// with a *LockedError naming the holder; with wait it blocks until free.
func acquireLock(ctx context.Context, s *session, target, info string, wait bool, onWait func(holder string)) (*lock, error) {
	args := []string{"flock", "-E", fmt.Sprint(lockBusyCode)}
	if !wait {
		args = append(args, "-n")
	}
	args = append(args, lockFile, "sh", "-c", `printf '%s\n' "$1" > `+lockInfoFile+`; echo locked; exec cat >/dev/null`, "lock-holder", info)
	cmd, prefix := s.sudoCommand(args...)
	pr, pw := io.Pipe()
	watch := &lineWatch{want: "locked", fired: make(chan struct{})}
	var stderr strings.Builder
	l := &lock{stdin: pw, done: make(chan error, 1)}
	go func() { l.done <- s.sh.RunStream(context.WithoutCancel(ctx), cmd, pr, watch, &stderr) }()
	if prefix != "" {
		go func() { _, _ = io.WriteString(pw, prefix) }()
	}
	waitNoted := false
	for {
		select {
		case <-watch.fired:
			return l, nil
		case err := <-l.done:
			pw.Close()
			var ee *sshx.ExitError
			if errors.As(err, &ee) && ee.Code == lockBusyCode {
				return nil, &LockedError{Target: target, Holder: readHolder(ctx, s)}
			}
			if err == nil {
				err = errors.New("the lock holder exited")
			}
			return nil, fmt.Errorf("taking the deploy lock: %w %s", err, strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
			l.release()
			return nil, ctx.Err()
		case <-time.After(time.Second):
			if wait && !waitNoted && onWait != nil {
				waitNoted = true
				onWait(readHolder(ctx, s))
			}
		}
	}
}

func readHolder(ctx context.Context, s *session) string {
	out, err := s.sh.Run(ctx, "cat "+run.Quote(lockInfoFile), nil)
	if err != nil || strings.TrimSpace(out.Stdout) == "" {
		return "another deployer (no details recorded)"
	}
	return strings.TrimSpace(out.Stdout)
}

// lockInfo describes this deployer for the lock file.
func lockInfo(commit string, dirty bool) string {
	c := shortCommit(commit)
	if dirty {
		c += "-dirty"
	}
	return fmt.Sprintf("%s since %s (commit %s)", Identity(), time.Now().UTC().Format(time.RFC3339), c)
}

func shortCommit(c string) string {
	if c == "" {
		return "none"
	}
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
