package sshx

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
)

// handler runs one "exec" request of the in-process server.
type handler func(cmd string, stdin io.Reader, stdout, stderr io.Writer) int

// testServer is an in-process SSH server on loopback: it accepts one client
// key, runs exec requests through a Go handler, forwards direct-tcpip (as
// a jump host) and can stop answering (a dead peer).
type testServer struct {
	t        *testing.T
	ln       net.Listener
	hostKey  ssh.Signer
	handle   handler
	frozen   atomic.Bool // stop reading from connections
	sessions atomic.Int32
	open     atomic.Int32 // sessions open now
	max      atomic.Int32 // refuse more open sessions than this (0: no limit; -1: all), like sshd's MaxSessions
	forwards atomic.Int32
	conns    atomic.Int32
	mu       sync.Mutex
	raw      []net.Conn
}

func newKey(t *testing.T) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return s, pemEncode(block)
}

func startServer(t *testing.T, clientKey ssh.PublicKey, h handler) *testServer {
	t.Helper()
	hk, _ := newKey(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, ln: ln, hostKey: hk, handle: h}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(clientKey.Marshal()) {
			return nil, nil
		}
		return nil, fmt.Errorf("unknown key")
	}}
	cfg.AddHostKey(hk)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			s.raw = append(s.raw, c)
			s.mu.Unlock()
			go s.serve(&freezable{Conn: c, frozen: &s.frozen}, cfg)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.raw {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

// freezable stops delivering data once frozen, like a link that went down.
type freezable struct {
	net.Conn
	frozen *atomic.Bool
}

func (f *freezable) Read(b []byte) (int, error) {
	n, err := f.Conn.Read(b)
	for f.frozen.Load() {
		select {} // never return: the peer is gone
	}
	return n, err
}

func (s *testServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *testServer) knownHostsLine(host string) string {
	return fmt.Sprintf("%s %s", host, string(ssh.MarshalAuthorizedKey(s.hostKey.PublicKey())))
}

func (s *testServer) serve(c net.Conn, cfg *ssh.ServerConfig) {
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs) // keepalives get "failure": a reply
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			if m := s.max.Load(); m < 0 || (m > 0 && s.open.Load() >= m) {
				nc.Reject(ssh.ConnectionFailed, "open failed") // as OpenSSH does
				continue
			}
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			s.sessions.Add(1)
			s.open.Add(1)
			go func() { s.session(ch, creqs); s.open.Add(-1) }()
		case "direct-tcpip":
			var p struct {
				Host     string
				Port     uint32
				OrigHost string
				OrigPort uint32
			}
			if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
				nc.Reject(ssh.ConnectionFailed, "bad request")
				continue
			}
			target, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))))
			if err != nil {
				nc.Reject(ssh.ConnectionFailed, "Connection refused")
				continue
			}
			ch, creqs, err := nc.Accept()
			if err != nil {
				target.Close()
				continue
			}
			s.forwards.Add(1)
			go ssh.DiscardRequests(creqs)
			go func() { io.Copy(ch, target); ch.CloseWrite() }()
			go func() { io.Copy(target, ch); target.Close() }()
		default:
			nc.Reject(ssh.UnknownChannelType, "no")
		}
	}
}

func (s *testServer) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for r := range reqs {
		if r.Type != "exec" {
			r.Reply(false, nil)
			continue
		}
		var p struct{ Cmd string }
		ssh.Unmarshal(r.Payload, &p)
		r.Reply(true, nil)
		code := s.handle(unwrapPosixLine(p.Cmd), ch, ch, ch.Stderr())
		ch.CloseWrite()
		st := make([]byte, 4)
		binary.BigEndian.PutUint32(st, uint32(code))
		ch.SendRequest("exit-status", false, st)
		return
	}
}

// client material: a key file and a known_hosts file trusting srv.
func clientFiles(t *testing.T, key []byte, lines ...string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	id := filepath.Join(dir, "id")
	if err := os.WriteFile(id, key, 0o600); err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	content := ""
	for _, l := range lines {
		content += l
	}
	if err := os.WriteFile(kh, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return id, kh
}

// unwrapPosixLine undoes PosixLine (the client wraps every command for the
// login shell), so that handlers see the command the caller gave.
func unwrapPosixLine(cmd string) string {
	rest, ok := strings.CutPrefix(cmd, "exec /bin/sh -c ")
	if !ok {
		return cmd
	}
	var b strings.Builder
	for len(rest) > 0 {
		switch {
		case rest[0] == '\'':
			end := strings.IndexByte(rest[1:], '\'')
			if end < 0 {
				return cmd
			}
			b.WriteString(rest[1 : 1+end])
			rest = rest[2+end:]
		case rest[0] == '\\' && len(rest) > 1:
			b.WriteByte(rest[1])
			rest = rest[2:]
		default:
			return cmd
		}
	}
	return b.String()
}
