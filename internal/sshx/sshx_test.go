package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Connection failures on loopback only: a closed port and a listener that
// never speaks SSH.
func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, err = Dial(context.Background(), Config{Host: "127.0.0.1", Port: port, User: "u", Identities: []string{"/nonexistent"}, IdentitiesOnly: true})
	if err == nil || !strings.Contains(err.Error(), "reading SSH key /nonexistent") {
		t.Fatalf("missing key: %v", err)
	}
	key := t.TempDir() + "/id"
	writeKey(t, key)
	_, err = Dial(context.Background(), Config{Host: "127.0.0.1", Port: port, User: "u", Identities: []string{key}, KnownHosts: []string{t.TempDir() + "/kh"}})
	var se *Error
	if !errors.As(err, &se) || se.Kind != KindRefused || !strings.Contains(se.Error(), "connection refused by 127.0.0.1:") {
		t.Fatalf("refused: %v", err)
	}
}

func TestHandshakeBoundedByTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept, then say nothing
		}
	}()
	key := t.TempDir() + "/id"
	writeKey(t, key)
	start := time.Now()
	_, err = Dial(context.Background(), Config{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, User: "u",
		Identities: []string{key}, KnownHosts: []string{t.TempDir() + "/kh"}, Timeout: 500 * time.Millisecond})
	var se *Error
	if !errors.As(err, &se) || se.Kind != KindTimeout || !strings.Contains(se.Error(), "SSH handshake with 127.0.0.1:") {
		t.Fatalf("silent server: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the handshake timeout was not applied (%v)", time.Since(start))
	}
}

// echoServer answers commands: "big N" prints N bytes, "sleep" blocks until
// stdin closes, "exit N" exits with N, "cat" copies stdin, others echo.
func echoServer(t *testing.T) (*testServer, Config) {
	t.Helper()
	signer, keyPEM := newKey(t)
	srv := startServer(t, signer.PublicKey(), func(cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
		switch {
		case strings.HasPrefix(cmd, "big "):
			var n int
			fmt.Sscan(strings.TrimPrefix(cmd, "big "), &n)
			chunk := []byte(strings.Repeat("x", 64<<10))
			for n > 0 {
				m := min(n, len(chunk))
				if _, err := stdout.Write(chunk[:m]); err != nil {
					return 1
				}
				n -= m
			}
			return 0
		case cmd == "sleep":
			io.Copy(io.Discard, stdin)
			return 0
		case strings.HasPrefix(cmd, "exit "):
			var n int
			fmt.Sscan(strings.TrimPrefix(cmd, "exit "), &n)
			fmt.Fprintln(stderr, "failing on purpose")
			return n
		case cmd == "cat":
			io.Copy(stdout, stdin)
			return 0
		}
		fmt.Fprintln(stdout, "echo:", cmd)
		return 0
	})
	id, kh := clientFiles(t, keyPEM, srv.knownHostsLine(fmt.Sprintf("[127.0.0.1]:%d", srv.port())))
	return srv, Config{Host: "127.0.0.1", Port: srv.port(), User: "u", Identities: []string{id}, IdentitiesOnly: true,
		KnownHosts: []string{kh}, Timeout: 2 * time.Second}
}

func TestExecOutputLimitsAndExit(t *testing.T) {
	_, cfg := echoServer(t)
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	out, err := c.Run(ctx, "hello", nil)
	if err != nil || out.Stdout != "echo: hello\n" {
		t.Fatalf("echo: %q %v", out.Stdout, err)
	}
	out, err = c.Run(ctx, "cat", strings.NewReader("input"))
	if err != nil || out.Stdout != "input" {
		t.Fatalf("cat: %q %v", out.Stdout, err)
	}
	_, err = c.Run(ctx, "exit 3", nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || !strings.Contains(ee.Error(), "failing on purpose") {
		t.Fatalf("exit: %v", err)
	}
	start := time.Now()
	_, err = c.Exec(ctx, Command{Line: "big 100000000", Limit: 1 << 20})
	var se *Error
	if !errors.As(err, &se) || se.Kind != KindTooMuch || !strings.Contains(se.Error(), "more than 1 MiB on standard output of `big`") {
		t.Fatalf("limit: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("the limit did not stop the command early (%v)", time.Since(start))
	}
	// The connection stays usable.
	if out, err := c.Run(ctx, "again", nil); err != nil || out.Stdout != "echo: again\n" {
		t.Fatalf("after limit: %q %v", out.Stdout, err)
	}
}

func TestExecTimeoutAndCancel(t *testing.T) {
	_, cfg := echoServer(t)
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	start := time.Now()
	_, err = c.Exec(context.Background(), Command{Line: "sleep", Stdin: pr, Timeout: 300 * time.Millisecond})
	var se *Error
	if !errors.As(err, &se) || se.Kind != KindSlow || !strings.Contains(se.Error(), "did not finish `sleep` within 300ms") {
		t.Fatalf("timeout: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("timeout not applied: %v", time.Since(start))
	}
	// Cancelling while output streams in: no data race (run with -race).
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i)*2*time.Millisecond)
		var sink strings.Builder
		_, err := c.Exec(ctx, Command{Line: "big 50000000", Stdout: &sink})
		cancel()
		if err == nil {
			t.Fatal("a cancelled command succeeded")
		}
		_ = sink.Len() // read after Exec returned: nothing writes it any more
	}
}

func TestKeepaliveDetectsDeadPeer(t *testing.T) {
	srv, cfg := echoServer(t)
	// A dead-peer time shorter than the default interval keeps its bound:
	// the interval follows it (at least 1s) instead of raising it to 5s.
	rc, err := Resolve(Settings{Host: "127.0.0.1", Keepalive: Keepalive{DeadAfter: time.Second}, ConfigFiles: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Keepalive.DeadAfter != time.Second || rc.Keepalive.Interval != time.Second {
		t.Fatalf("-deadpeer=1s resolved to %+v", rc.Keepalive)
	}
	if i := IntervalFor(9 * time.Second); i != 3*time.Second {
		t.Fatalf("interval for 9s: %v", i)
	}
	cfg.Keepalive = rc.Keepalive
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(context.Background(), Command{Line: "sleep", Stdin: pr})
		done <- err
	}()
	// A peer answering the keepalives lives, even when the dead-peer time
	// is the interval: three intervals, and the command still runs.
	select {
	case err := <-done:
		t.Fatalf("a live peer was declared dead: %v", err)
	case <-time.After(3500 * time.Millisecond):
	}
	srv.frozen.Store(true)
	select {
	case err := <-done:
		var se *Error
		if !errors.As(err, &se) || se.Kind != KindDeadPeer || !strings.Contains(se.Error(), "stopped answering") {
			t.Fatalf("dead peer: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a dead peer hung the command")
	}
}

func TestProxyJumpThroughSSHConfig(t *testing.T) {
	signer, keyPEM := newKey(t)
	echo := func(cmd string, _ io.Reader, stdout, _ io.Writer) int { fmt.Fprint(stdout, "ran ", cmd); return 0 }
	jump := startServer(t, signer.PublicKey(), echo)
	target := startServer(t, signer.PublicKey(), echo)
	id, kh := clientFiles(t, keyPEM,
		jump.knownHostsLine(fmt.Sprintf("[127.0.0.1]:%d", jump.port())),
		target.knownHostsLine(fmt.Sprintf("[127.0.0.1]:%d", target.port())))
	conf := filepath.Join(t.TempDir(), "config")
	os.WriteFile(conf, []byte(fmt.Sprintf(`Host bastion
  HostName 127.0.0.1
  Port %d
  User jumper
Host inner
  HostName 127.0.0.1
  Port %d
  ProxyJump bastion
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
`, jump.port(), target.port(), id, kh)), 0o600)
	cfg, err := Resolve(Settings{Host: "inner", User: "deploy", ConfigFiles: []string{conf}})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Jumps) != 1 || cfg.Jumps[0].User != "jumper" || cfg.Jumps[0].Port != jump.port() || cfg.User != "deploy" {
		t.Fatalf("resolved: %+v", cfg)
	}
	// The jump host inherits no identity from the target's block: give it the key.
	cfg.Jumps[0].Identities, cfg.Jumps[0].KnownHosts = []string{id}, []string{kh}
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Run(context.Background(), "hostname", nil)
	c.Close()
	if err != nil || out.Stdout != "ran hostname" {
		t.Fatalf("through the jump: %q %v", out.Stdout, err)
	}
	if jump.forwards.Load() != 1 || jump.sessions.Load() != 0 || target.sessions.Load() != 1 {
		t.Fatalf("jump forwards %d sessions %d, target sessions %d", jump.forwards.Load(), jump.sessions.Load(), target.sessions.Load())
	}
	// The target's key is checked too: an impostor behind the bastion is refused.
	_, kh2 := clientFiles(t, keyPEM,
		jump.knownHostsLine(fmt.Sprintf("[127.0.0.1]:%d", jump.port())),
		jump.knownHostsLine(fmt.Sprintf("[127.0.0.1]:%d", target.port())))
	cfg.KnownHosts, cfg.Jumps[0].KnownHosts = []string{kh2}, []string{kh2}
	_, err = Dial(context.Background(), cfg)
	var se *Error
	if !errors.As(err, &se) || se.Kind != KindChangedHost || se.Jump != "" {
		t.Fatalf("impostor behind the jump: %v", err)
	}
	// So is the bastion's: a wrong key for it stops the dial there, and
	// the error names the jump host and its key problem.
	_, kh3 := clientFiles(t, keyPEM,
		target.knownHostsLine(fmt.Sprintf("[127.0.0.1]:%d", jump.port())),
		target.knownHostsLine(fmt.Sprintf("[127.0.0.1]:%d", target.port())))
	cfg.KnownHosts, cfg.Jumps[0].KnownHosts = []string{kh3}, []string{kh3}
	forwards := jump.forwards.Load()
	_, err = Dial(context.Background(), cfg)
	if !errors.As(err, &se) || se.Kind != KindChangedHost || se.Jump != "bastion" ||
		!strings.Contains(se.Error(), "jump host bastion: ") || !strings.Contains(se.Error(), fmt.Sprintf("[127.0.0.1]:%d", jump.port())) {
		t.Fatalf("impostor bastion: %v", err)
	}
	if jump.forwards.Load() != forwards {
		t.Fatal("a connection was forwarded through a bastion whose key did not match")
	}
}

func TestResolvePrecedence(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	conf := filepath.Join(home, "config")
	os.WriteFile(conf, []byte(`Host lab-*
  User fromconfig
  Port 2222
  ConnectTimeout 3
Host *
  IdentityFile ~/.ssh/special
  UserKnownHostsFile ~/kh1 ~/kh2
`), 0o600)
	c, err := Resolve(Settings{Host: "lab-server", ConfigFiles: []string{conf}})
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "fromconfig" || c.Port != 2222 || c.Timeout != 3*time.Second || c.HostName != "lab-server" ||
		len(c.Identities) != 1 || c.Identities[0] != filepath.Join(home, ".ssh/special") ||
		len(c.KnownHosts) != 3 || c.KnownHosts[0] != filepath.Join(home, "kh1") || c.KnownHosts[2] != "/etc/ssh/ssh_known_hosts" {
		t.Fatalf("from ssh_config: %+v", c)
	}
	c, err = Resolve(Settings{Host: "lab-server", User: "flag", Port: 22, Timeout: time.Second, KnownHosts: []string{"/kh"}, ConfigFiles: []string{conf}})
	if err != nil || c.User != "flag" || c.Port != 22 || c.Timeout != time.Second || len(c.KnownHosts) != 1 {
		t.Fatalf("settings win: %+v %v", c, err)
	}
	os.WriteFile(conf, []byte("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n"), 0o600)
	if _, err := Resolve(Settings{Host: "a", User: "u", ConfigFiles: []string{conf}}); err == nil || !strings.Contains(err.Error(), "ProxyJump") {
		t.Fatalf("loop: %v", err)
	}
	os.WriteFile(conf, []byte("Match exec \"true\"\n  User x\n"), 0o600)
	if _, err := Resolve(Settings{Host: "a", ConfigFiles: []string{conf}}); err == nil || !strings.Contains(err.Error(), "cannot be read by this toolkit") {
		t.Fatalf("unsupported: %v", err)
	}
}

func TestHostKeyTypeMismatch(t *testing.T) {
	srv, cfg := echoServer(t)
	// known_hosts knows an ECDSA key for the host; the server has only ed25519.
	kh := filepath.Join(t.TempDir(), "kh")
	os.WriteFile(kh, []byte(fmt.Sprintf("[127.0.0.1]:%d ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=\n", srv.port())), 0o600)
	cfg.KnownHosts = []string{kh}
	_, err := Dial(context.Background(), cfg)
	var se *Error
	if !errors.As(err, &se) || se.Kind != KindKeyType || !strings.Contains(se.Error(), "offers no host key of the type") {
		t.Fatalf("key type: %v", err)
	}
}

// A server that allows two sessions per connection (sshd's MaxSessions)
// refuses the third: it is asked for again as the others end, and every
// command runs.
func TestSessionsRefusedAreAskedAgain(t *testing.T) {
	srv, cfg := echoServer(t)
	srv.max.Store(2)
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			go func() { time.Sleep(200 * time.Millisecond); pw.Close() }()
			_, err := c.Exec(context.Background(), Command{Line: "sleep", Stdin: pr})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a command failed: %v", err)
		}
	}
	if got := srv.sessions.Load(); got != n {
		t.Fatalf("%d sessions ran, want %d", got, n)
	}
	// Interrupted while waiting for a session: stops waiting.
	hold, release := io.Pipe()
	defer release.Close()
	for i := 0; i < 2; i++ {
		go c.Exec(context.Background(), Command{Line: "sleep", Stdin: hold})
	}
	for srv.open.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.Exec(ctx, Command{Line: "echo"}); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("waiting for a session while interrupted: %v", err)
	}
	// A server refusing every session: with none of ours open, the
	// refusal is final, with sshd as the cause.
	release.Close()
	srv.max.Store(-1)
	for c.sessions.Load() > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	_, err = c.Exec(context.Background(), Command{Line: "echo"})
	var se *Error
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "refused to open an SSH session (open failed): check sshd there") {
		t.Fatalf("a server refusing all sessions: %v", err)
	}
}
