package lab

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/testutil"
)

func requirePrereqs(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	missing := Prerequisites()
	testutil.Require(t, len(missing) == 0, "the lab needs %s", strings.Join(missing, ", "))
}

// leftovers lists what of a lab still exists on the machine.
func leftovers(t *testing.T, name string, hosts []Host) []string {
	t.Helper()
	var found []string
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			found = append(found, "netns "+e.Name())
		}
	}
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if strings.HasPrefix(i.Name, name) {
			found = append(found, "interface "+i.Name)
		}
	}
	for _, h := range hosts {
		if procStartTime(h.PID) != 0 {
			found = append(found, "process "+h.Name)
		}
	}
	return found
}

func TestUpTwiceDownTwice(t *testing.T) {
	requirePrereqs(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	cfg := Config{Name: "lc", StateDir: dir, Subnet: "10.77.20.0/24", Targets: []string{"one", "two"}, Extras: true}
	l, err := New(cfg, run.Exec{})
	if err != nil {
		t.Fatal(err)
	}
	// Down with nothing up is harmless.
	if err := l.Down(ctx); err != nil {
		t.Fatalf("down with nothing up: %v", err)
	}
	if err := l.Up(ctx); err != nil {
		t.Fatal(err)
	}
	first := l.Hosts()
	var pids []int
	var mountsBefore []string
	for _, h := range first {
		pids = append(pids, h.PID)
		m, _ := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/mountinfo")
		mountsBefore = append(mountsBefore, string(m))
	}
	// Every process in the hosts' namespaces (init, sshd, nix-daemon, sessions).
	var nsPIDs []int
	for _, h := range first {
		nsPIDs = append(nsPIDs, l.netnsPIDs(ctx, h.NetNS)...)
	}
	if len(nsPIDs) < 2*len(first) {
		t.Fatalf("expected init and daemons in every host, found %v", nsPIDs)
	}
	// The machine's own mount table is untouched by the hosts' bind mounts.
	self, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(self), dir) {
		t.Fatal("a lab mount is visible on this machine")
	}
	if !strings.Contains(mountsBefore[0], filepath.Join(dir, "hosts", "one", "fs", "nix")) {
		t.Fatal("host one does not have its own /nix mounted")
	}

	// Up again: same hosts, same processes.
	l2, _ := New(cfg, run.Exec{})
	if err := l2.Up(ctx); err != nil {
		t.Fatal(err)
	}
	for i, h := range l2.Hosts() {
		if h.PID != pids[i] {
			t.Errorf("second up replaced %s (pid %d -> %d)", h.Name, pids[i], h.PID)
		}
	}

	if err := l2.Down(ctx); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, "lc", first); len(left) > 0 {
		t.Fatalf("left after down: %v", left)
	}
	for _, p := range nsPIDs {
		if procStartTime(p) != 0 {
			t.Errorf("process %d of the lab survived", p)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		entries, _ := os.ReadDir(dir)
		t.Errorf("state directory left: %v", entries)
	}
	if err := l2.Down(ctx); err != nil {
		t.Fatalf("second down: %v", err)
	}
}

// failingSpawner fails for one host, as if its init could not start.
type failingSpawner struct {
	run.Exec
	failFor string
}

func (f failingSpawner) Spawn(c run.Cmd, log string) (int, error) {
	if strings.Contains(strings.Join(c.Args, " "), "/hosts/"+f.failFor+"/") {
		return 0, errors.New("injected failure")
	}
	return f.Exec.Spawn(c, log)
}

func TestUpRollsBackOnFailure(t *testing.T) {
	requirePrereqs(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	cfg := Config{Name: "rb", StateDir: dir, Subnet: "10.77.30.0/24", Targets: []string{"first", "second", "third"}}
	l, err := NewWith(cfg, run.Exec{}, failingSpawner{failFor: "second"})
	if err != nil {
		t.Fatal(err)
	}
	err = l.Up(ctx)
	if err == nil || !strings.Contains(err.Error(), "lab host second: injected failure") {
		t.Fatalf("want the injected failure, got %v", err)
	}
	if left := leftovers(t, "rb", nil); len(left) > 0 {
		t.Fatalf("rollback left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state.json left after rollback")
	}
	// A later Up on the same directory works.
	l2, _ := New(cfg, run.Exec{})
	if err := l2.Up(ctx); err != nil {
		t.Fatal(err)
	}
	if len(l2.Hosts()) != 3 {
		t.Errorf("hosts: %v", l2.Hosts())
	}
	if err := l2.Down(ctx); err != nil {
		t.Fatal(err)
	}
}

// dyingInitSpawner starts, for one host, an init that fails the way a
// fresh machine made it fail (no /nix to mount onto) and exits.
type dyingInitSpawner struct {
	run.Exec
	host string
}

func (d dyingInitSpawner) Spawn(c run.Cmd, log string) (int, error) {
	if strings.Contains(strings.Join(c.Args, " "), "/hosts/"+d.host+"/") {
		c = run.Cmd{Name: "/bin/sh", Args: []string{"-c", "echo 'mount: /nix: mount point does not exist.' >&2; exit 32"}}
	}
	return d.Exec.Spawn(c, log)
}

// The start-up error quotes the end of the init log: the log itself goes
// with the rolled-back host's directory.
func TestStartErrorQuotesInitLog(t *testing.T) {
	requirePrereqs(t)
	dir := filepath.Join(t.TempDir(), "state")
	l, err := NewWith(Config{Name: "il", StateDir: dir, Subnet: "10.77.31.0/24", Targets: []string{"one"}}, run.Exec{}, dyingInitSpawner{host: "one"})
	if err != nil {
		t.Fatal(err)
	}
	err = l.Up(context.Background())
	if err == nil || !strings.Contains(err.Error(), "lab host one: starting the init process") || !strings.Contains(err.Error(), "mount: /nix: mount point does not exist.") {
		t.Fatalf("want the init log's last line in the error, got %v", err)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "hosts", "one", "init.log")); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("the host's directory should be gone after the rollback: %v", statErr)
	}
	if left := leftovers(t, "il", nil); len(left) > 0 {
		t.Fatalf("rollback left: %v", left)
	}
}
