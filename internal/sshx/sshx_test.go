package sshx

import (
	"context"
	"errors"
	"net"
	"strings"
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
	_, err = Dial(context.Background(), Config{Address: "127.0.0.1", Port: port, User: "u", Identities: []string{"/nonexistent"}})
	if err == nil || !strings.Contains(err.Error(), "reading SSH key /nonexistent") {
		t.Fatalf("missing key: %v", err)
	}
	key := t.TempDir() + "/id"
	writeKey(t, key)
	_, err = Dial(context.Background(), Config{Address: "127.0.0.1", Port: port, User: "u", Identities: []string{key}, KnownHosts: []string{t.TempDir() + "/kh"}})
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
	_, err = Dial(context.Background(), Config{Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, User: "u",
		Identities: []string{key}, KnownHosts: []string{t.TempDir() + "/kh"}, Timeout: 500 * time.Millisecond})
	var se *Error
	if !errors.As(err, &se) || se.Kind != KindTimeout || !strings.Contains(se.Error(), "SSH handshake with 127.0.0.1:") {
		t.Fatalf("silent server: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the handshake timeout was not applied (%v)", time.Since(start))
	}
}
