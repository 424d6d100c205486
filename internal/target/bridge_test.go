package target_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
)

// waitFor polls cond for up to 10 seconds (a bound, not a timing claim).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// Copy progress comes from the bytes crossing the bridge, so it moves
// inside one large path: part of a single connection's stream counts
// before the rest is sent.
func TestBridgeCountsBytesWithinOneStream(t *testing.T) {
	bin := t.TempDir()
	// The target's daemon: takes everything it is sent.
	if err := os.WriteFile(filepath.Join(bin, "nix-daemon"), []byte("#!/bin/sh\nexec cat >/dev/null\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	s := target.New("lab-server", "monibahmed", sshx.Local{Runner: run.Exec{}}, nil, target.Limits{})
	b, err := s.OpenBridge(context.Background(), target.DaemonUser)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if info, err := os.Stat(filepath.Dir(b.Socket)); err != nil || info.Mode() != os.ModeDir|0o700 {
		t.Fatalf("socket directory: %v %v", info.Mode(), err)
	}
	c, err := net.Dial("unix", b.Socket)
	if err != nil {
		t.Fatal(err)
	}
	const part, total = 256 << 10, 4 << 20
	chunk := bytes.Repeat([]byte("n"), part)
	if _, err := c.Write(chunk); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first part counted", func() bool { return b.Sent() >= part })
	if got := b.Sent(); got <= 0 || got >= total {
		t.Fatalf("after %d of %d bytes: Sent() = %d", part, total, got)
	}
	for sent := part; sent < total; sent += part {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.UnixConn).CloseWrite()
	waitFor(t, "every byte counted", func() bool { return b.Sent() == total })
	c.Close()
	b.Close()
	if _, err := os.Stat(filepath.Dir(b.Socket)); !os.IsNotExist(err) {
		t.Fatalf("socket directory left after Close: %v", err)
	}
}
