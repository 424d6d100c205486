package target

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
)

// Daemon says how the bridge starts the nix-daemon on the target.
type Daemon int

const (
	// DaemonUser: `nix-daemon --stdio` as the SSH user; it forwards to the
	// target's daemon, which decides by its trusted-users whether it
	// accepts unsigned paths (what ssh-ng:// does).
	DaemonUser Daemon = iota
	// DaemonSudo: `nix-daemon --stdio --store daemon` started as root
	// through sudo: the target's daemon sees root, which it trusts. Only
	// the sudo right activation needs anyway; no trusted-users setting.
	DaemonSudo
)

// Bridge carries Nix's connections to a unix socket on this machine to a
// nix-daemon on the target, each as a session of the session's one SSH
// connection: `nix copy --to unix://<socket>` then talks to the target's
// store without an SSH client of its own.
type Bridge struct {
	Socket string // path of the socket (in a private directory)
	dir    string
	ln     net.Listener
	s      *Session
	daemon Daemon
	ctx    context.Context
	cancel context.CancelFunc

	sent, received atomic.Int64
	last           atomic.Int64 // unix nanoseconds of the last byte moved
	wg             sync.WaitGroup
	mu             sync.Mutex
	procs          map[*sshx.Proc]bool
	errs           []string
	fail           error // why a connection could not be opened
}

// OpenBridge starts a bridge. Close it (always) when the copy is over.
func (s *Session) OpenBridge(ctx context.Context, daemon Daemon) (*Bridge, error) {
	dir, err := run.PrivateDir("nixos-config-bridge")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "nix.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("listening on %s: %w", sock, err)
	}
	bctx, cancel := context.WithCancel(ctx)
	b := &Bridge{Socket: sock, dir: dir, ln: ln, s: s, daemon: daemon, ctx: bctx, cancel: cancel, procs: map[*sshx.Proc]bool{}}
	b.last.Store(time.Now().UnixNano())
	go b.accept()
	return b, nil
}

// URI is the store URI for `nix copy --to`.
func (b *Bridge) URI() string { return "unix://" + b.Socket }

// Sent is the number of bytes sent to the target so far.
func (b *Bridge) Sent() int64 { return b.sent.Load() }

// Received is the number of bytes received from the target so far.
func (b *Bridge) Received() int64 { return b.received.Load() }

// Idle is how long no byte crossed the bridge.
func (b *Bridge) Idle() time.Duration {
	return time.Since(time.Unix(0, b.last.Load()))
}

// Errors returns what the remote daemons printed on stderr (sanitized,
// last lines) and why a connection could not be opened.
func (b *Bridge) Errors() ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errs...), b.fail
}

func (b *Bridge) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.serve(c)
		}()
	}
}

func (b *Bridge) serve(c net.Conn) {
	defer c.Close()
	var p *sshx.Proc
	var err error
	if b.daemon == DaemonSudo {
		p, _, err = b.s.StartRoot(b.ctx, "nix-daemon", append(sessionBound(), "nix-daemon", "--stdio", "--store", "daemon")...)
	} else {
		p, err = b.s.Conn.Start(b.ctx, run.ShellJoin(append(sessionBound(), "nix-daemon", "--stdio")...))
	}
	if err != nil {
		b.mu.Lock()
		if b.fail == nil {
			b.fail = err
		}
		b.mu.Unlock()
		return
	}
	b.mu.Lock()
	b.procs[p] = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.procs, p)
		b.mu.Unlock()
		p.Close()
	}()
	var stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(p.Stdin, &counter{r: c, n: &b.sent, last: &b.last})
		p.Stdin.Close()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(c, &counter{r: p.Stdout, n: &b.received, last: &b.last})
		if uc, ok := c.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(&limited{w: &stderr, n: 16 << 10}, p.Stderr)
	}()
	wg.Wait()
	_ = p.Wait()
	if t := strings.TrimSpace(stderr.String()); t != "" {
		b.mu.Lock()
		for _, l := range LastLines(t, 3) {
			b.errs = append(b.errs, Clean(l, 300))
		}
		if len(b.errs) > 10 {
			b.errs = b.errs[len(b.errs)-10:]
		}
		b.mu.Unlock()
	}
}

// stdioGuard runs "$@" (a `nix-daemon --stdio`) with its standard input
// fed by cat through a fifo, and kills it the moment the session's input
// ends: when this side closes the session, or sshd ends it because the
// connection died. Nix does not stop by itself then: a `nix-daemon
// --stdio` of Nix 2.26 whose client vanished mid-copy waits for its
// daemon's answer while the daemon's worker waits for the rest of the
// path, holding the path's lock; every later copy of that path stalls
// until someone kills them (seen in the lab: the worker in
// locks_lock_inode_wait behind the one in read). Killed, the command
// closes its daemon connection and the worker gives up the lock.
// The shell closes its own copy of standard output, so that the command's
// end is seen at once on this side.
// Once the input has ended the session may be gone altogether: the shell
// says nothing more (its notice of the killed job would die of SIGPIPE
// and leave the fifo's directory behind).
const stdioGuard = `d=$(mktemp -d "${TMPDIR:-/tmp}/nixos-config-stdio.XXXXXX") || exit 1
pid=
trap 'rm -rf "$d"' EXIT
trap '[ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null; exit 1' HUP INT TERM PIPE
mkfifo "$d/in" || exit 1
"$@" <"$d/in" &
pid=$!
exec >&-
cat >"$d/in"
exec 2>/dev/null
kill -KILL "$pid"
wait "$pid"
st=$?
pid=
[ "$st" -ne 137 ] || exit 0 # killed here: a session's normal end
exit "$st"`

// sessionBound is the command line prefix that runs a command under
// stdioGuard.
func sessionBound() []string {
	return []string{"sh", "-c", stdioGuard, "nixos-config-stdio"}
}

// Close stops the bridge: the listener, every carried connection, and the
// private directory.
func (b *Bridge) Close() {
	b.ln.Close()
	b.cancel()
	b.mu.Lock()
	for p := range b.procs {
		p.Close()
	}
	b.mu.Unlock()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	_ = os.RemoveAll(b.dir)
}

// counter counts what crosses it and when.
type counter struct {
	r    io.Reader
	n    *atomic.Int64
	last *atomic.Int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n.Add(int64(n))
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}
