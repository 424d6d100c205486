package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// builderConn plays a build host's `nix-store --realise`: it prints one
// event, then a line every tick for chatter, then answers the built path
// (chatter > 0) or prints nothing more and never ends (chatter == 0).
type builderConn struct {
	mu      sync.Mutex
	lines   []string
	chatter int
	tick    time.Duration
	answer  string
}

func (c *builderConn) Exec(ctx context.Context, cmd sshx.Command) (sshx.Output, error) {
	c.mu.Lock()
	c.lines = append(c.lines, cmd.Line)
	c.mu.Unlock()
	io.WriteString(cmd.Stderr, `@nix {"action":"start","id":2,"level":0,"text":"","type":104}`+"\n")
	if c.chatter == 0 {
		<-ctx.Done()
		return sshx.Output{Code: -1}, ctx.Err()
	}
	for i := 0; i < c.chatter; i++ {
		select {
		case <-ctx.Done():
			return sshx.Output{Code: -1}, ctx.Err()
		case <-time.After(c.tick):
		}
		fmt.Fprintf(cmd.Stderr, `@nix {"action":"result","fields":[%d,%d,0,0],"id":2,"type":105}`+"\n", i, c.chatter)
	}
	io.WriteString(cmd.Stdout, c.answer+"\n")
	return sshx.Output{}, nil
}

func (c *builderConn) Start(context.Context, string) (*sshx.Proc, error) {
	return nil, errors.New("not supported")
}

func (c *builderConn) Close() error { return nil }

// A remote build that prints nothing for -buildsilence is stopped with one
// line naming the builder and the flag; the builder's Nix gets
// --max-silent-time; a build that keeps printing is not stopped.
func TestRemoteBuildSilence(t *testing.T) {
	const system = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi"
	newJob := func(conn *builderConn, silence time.Duration) (*job, *buildHost) {
		j := &job{d: &Deployer{Report: quiet{}}, t: inventory.Target{Name: "pi"}, o: Options{BuildSilence: silence},
			built: buildResult{path: system, drv: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi.drv"}}
		return j, &buildHost{name: "builder", sess: &target.Session{Conn: conn, Name: "builder"}}
	}
	silent := &builderConn{}
	j, bh := newJob(silent, time.Second)
	done := make(chan *Failure, 1)
	go func() {
		done <- j.realise(context.Background(), bh, "the build host builder", "/tmp/root", j.built.drv)
	}()
	var f *Failure
	select {
	case f = <-done:
	case <-time.After(time.Minute):
		t.Fatal("a silent build was not stopped")
	}
	if f == nil || f.Section != trouble.RemoteBuild || !strings.Contains(f.Error(), "the build on builder printed nothing for 1s") || !strings.Contains(f.Error(), "raise -buildsilence") {
		t.Fatalf("failure: %v", f)
	}
	if len(silent.lines) != 1 || !strings.HasPrefix(silent.lines[0], "nix-store --max-silent-time 1 --realise ") {
		t.Errorf("command lines: %q", silent.lines)
	}

	// Chatter for longer than the silence bound: not stopped.
	busy := &builderConn{chatter: 8, tick: 400 * time.Millisecond, answer: system}
	j, bh = newJob(busy, time.Second)
	if f := j.realise(context.Background(), bh, "the build host builder", "/tmp/root", j.built.drv); f != nil {
		t.Fatalf("a build that prints was stopped: %v", f)
	}
}
