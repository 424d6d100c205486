package target

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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

// bridgeDirPrefix names the private directories of bridges; a directory
// whose process is gone is removed by the next bridge (a killed deployer
// leaves nothing behind for long).
const bridgeDirPrefix = "nixos-config-bridge-"

// maxSocketPath is below the 108 bytes of sockaddr_un.
const maxSocketPath = 100

// bridgeBase picks where the socket lives: $TMPDIR when the path fits a
// socket address and a store URI, else /tmp.
func bridgeBase() string {
	t := os.TempDir()
	if len(t)+len(bridgeDirPrefix)+40 < maxSocketPath && !strings.ContainsAny(t, " ?#%&+;=\"'\\\n\t") {
		return t
	}
	return "/tmp"
}

// reapBridgeDirs removes bridge directories of processes that no longer run.
func reapBridgeDirs(base string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), bridgeDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok || int(st.Uid) != os.Geteuid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue // alive (or not ours to judge)
		}
		_ = os.RemoveAll(filepath.Join(base, e.Name()))
	}
}

// OpenBridge starts a bridge. Close it (always) when the copy is over.
func (s *Session) OpenBridge(ctx context.Context, daemon Daemon) (*Bridge, error) {
	base := bridgeBase()
	reapBridgeDirs(base)
	dir, err := os.MkdirTemp(base, bridgeDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("creating the bridge's directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
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
		p, _, err = b.s.StartRoot(b.ctx, "nix-daemon", "nix-daemon", "--stdio", "--store", "daemon")
	} else {
		p, err = b.s.Conn.Start(b.ctx, "nix-daemon --stdio")
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
