// Package hostile runs SSH servers that misbehave on purpose, for tests of
// what the toolkit does with untrusted peers: a server accepts any client
// key and answers every command with whatever its Behaviour says (an endless
// line, escape sequences, a huge host name, nothing at all). A server can
// listen inside another network namespace (a lab host's), so that a scan of
// the lab subnet finds it.
package hostile

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// Behaviour says how a server misbehaves.
type Behaviour struct {
	// Banner is sent before the SSH library's own identification line
	// ("SSH-2.0-OpenSSH_9.9"), as is, and may carry escape sequences. A
	// banner starting with "SSH-" is what the client takes for the server's
	// version; the handshake then fails (the library signs its own).
	Banner string
	// RawLine, when set, makes the server no SSH server at all: it sends
	// this line over and over, without a newline, until the client leaves.
	RawLine string
	// KeyType of the host key: "ed25519" (default) or "ecdsa".
	KeyType string
	// Answer answers a command: it writes to stdout and stderr and returns
	// when done (or when a write fails: the client left). Nil: the command
	// never answers (the server waits until the client leaves).
	Answer func(command string, stdout, stderr io.Writer)
}

// Server is a running hostile server.
type Server struct {
	Addr string
	Key  ssh.PublicKey
	// Sent counts the bytes the server wrote to clients.
	Sent atomic.Int64

	l      net.Listener
	b      Behaviour
	cfg    *ssh.ServerConfig
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

// Start serves b on l until Close.
func Start(l net.Listener, b Behaviour) (*Server, error) {
	signer, err := hostKey(b.KeyType)
	if err != nil {
		l.Close()
		return nil, err
	}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil },
		ServerVersion:     "SSH-2.0-OpenSSH_9.9",
	}
	cfg.AddHostKey(signer)
	s := &Server{Addr: l.Addr().String(), Key: signer.PublicKey(), l: l, b: b, cfg: cfg, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Listen starts a server on addr ("127.0.0.1:0": any free port).
func Listen(addr string, b Behaviour) (*Server, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return Start(l, b)
}

// ListenIn starts a server on addr inside the network namespace at
// netnsPath (e.g. /run/netns/<name>). Needs root.
func ListenIn(netnsPath, addr string, b Behaviour) (*Server, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The socket stays in the namespace it was made in. The thread goes
		// back to its own namespace afterwards: a thread left in the lab's
		// namespace (the main thread cannot end) would make this process
		// one of the lab host's, to be killed with it.
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer own.Close()
		f, err := os.Open(netnsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("entering %s: %w", netnsPath, err)}
			return
		}
		l, err := net.Listen("tcp", addr)
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread ends with this goroutine
		ch <- result{l, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, r.err
	}
	return Start(r.l, b)
}

func hostKey(kind string) (ssh.Signer, error) {
	switch kind {
	case "", "ed25519":
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return ssh.NewSignerFromKey(priv)
	case "ecdsa":
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		return ssh.NewSignerFromKey(priv)
	}
	return nil, fmt.Errorf("unknown key type %q", kind)
}

// Close stops the server and drops its connections.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.l.Close()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serve(&countConn{Conn: c, n: &s.Sent})
		}()
	}
}

type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (s *Server) serve(c net.Conn) {
	if s.b.RawLine != "" {
		chunk := []byte(s.b.RawLine)
		for len(chunk) < 32<<10 {
			chunk = append(chunk, s.b.RawLine...)
		}
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}
	if s.b.Banner != "" {
		if _, err := io.WriteString(c, s.b.Banner+"\r\n"); err != nil {
			return
		}
	}
	_, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go s.session(ch, creqs)
	}
}

func (s *Server) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(false, nil)
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			req.Reply(false, nil)
			return
		}
		req.Reply(true, nil)
		if s.b.Answer == nil {
			for range reqs { // until the client closes the channel or leaves
			}
			return
		}
		s.b.Answer(p.Command, ch, ch.Stderr())
		status := make([]byte, 4)
		binary.BigEndian.PutUint32(status, 0)
		ch.SendRequest("exit-status", false, status)
		return
	}
}

// Endless writes line (without a newline) until the client leaves.
func Endless(line string) func(string, io.Writer, io.Writer) {
	return func(_ string, stdout, _ io.Writer) {
		chunk := []byte(line)
		for len(chunk) < 32<<10 {
			chunk = append(chunk, line...)
		}
		for {
			if _, err := stdout.Write(chunk); err != nil {
				return
			}
		}
	}
}

// Reply writes text to stdout.
func Reply(text string) func(string, io.Writer, io.Writer) {
	return func(_ string, stdout, _ io.Writer) { io.WriteString(stdout, text) }
}

// Slowly writes text, then waits d before it ends the command.
func Slowly(text string, d time.Duration) func(string, io.Writer, io.Writer) {
	return func(_ string, stdout, _ io.Writer) {
		io.WriteString(stdout, text)
		time.Sleep(d)
	}
}
