package deploy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/sshx"
)

// resolveAs goes the way of a run: the options normalized, the run's
// connector, -user/-port applied to the target, the connection resolved.
func resolveAs(t *testing.T, o Options, conf string, tg inventory.Target) sshx.Config {
	t.Helper()
	if err := o.Normalize(); err != nil {
		t.Fatal(err)
	}
	targets := []inventory.Target{tg}
	if err := prepareTargets(targets, o); err != nil {
		t.Fatal(err)
	}
	c := NewSSHConnector(o, []string{"/kh"}, nil)
	c.ConfigFiles = []string{conf}
	cfg, err := c.Resolve(targets[0])
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func writeSSHConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func factsTarget(t *testing.T, facts string) inventory.Target {
	t.Helper()
	f, err := inventory.ParseFacts([]byte(facts))
	if err != nil {
		t.Fatal(err)
	}
	return inventory.Target{Name: "lab-server", Facts: f}
}

// ssh_config's ConnectTimeout and ServerAlive* apply unless -timeout and
// -deadpeer are given (flag > ssh_config > defaults).
func TestConnectTimeoutAndDeadPeerPrecedence(t *testing.T) {
	conf := writeSSHConfig(t, "Host 10.0.0.9\n  ConnectTimeout 3\n  ServerAliveInterval 2\n  ServerAliveCountMax 4\n")
	tg := factsTarget(t, `{"address": "10.0.0.9"}`)
	cfg := resolveAs(t, Options{}, conf, tg)
	if cfg.Timeout != 3*time.Second || cfg.Keepalive.Interval != 2*time.Second || cfg.Keepalive.DeadAfter != 8*time.Second {
		t.Fatalf("ssh_config: timeout %v keepalive %+v", cfg.Timeout, cfg.Keepalive)
	}
	// The flag's dead-peer time brings its own interval (a third of it).
	cfg = resolveAs(t, Options{ConnectTimeout: 7 * time.Second, DeadPeer: 9 * time.Second}, conf, tg)
	if cfg.Timeout != 7*time.Second || cfg.Keepalive.DeadAfter != 9*time.Second || cfg.Keepalive.Interval != 3*time.Second {
		t.Fatalf("flags: timeout %v keepalive %+v", cfg.Timeout, cfg.Keepalive)
	}
	cfg = resolveAs(t, Options{}, writeSSHConfig(t, ""), tg)
	if cfg.Timeout != sshx.DefaultTimeout || cfg.Keepalive.DeadAfter != sshx.DefaultDeadAfter || cfg.Keepalive.Interval != sshx.DefaultDeadAfter/3 {
		t.Fatalf("defaults: timeout %v keepalive %+v", cfg.Timeout, cfg.Keepalive)
	}
	// A dead-peer time shorter than the default interval keeps its bound.
	cfg = resolveAs(t, Options{DeadPeer: 2 * time.Second}, writeSSHConfig(t, ""), tg)
	if cfg.Keepalive.DeadAfter != 2*time.Second || cfg.Keepalive.Interval != time.Second {
		t.Fatalf("-deadpeer=2s: keepalive %+v", cfg.Keepalive)
	}
}

// "port" in target.json wins over ssh_config's Port, -port over both.
func TestPortPrecedence(t *testing.T) {
	conf := writeSSHConfig(t, "Host 10.0.0.9\n  Port 2222\n")
	if cfg := resolveAs(t, Options{}, conf, factsTarget(t, `{"address": "10.0.0.9"}`)); cfg.Port != 2222 {
		t.Fatalf("ssh_config: port %d", cfg.Port)
	}
	withPort := `{"address": "10.0.0.9", "port": 2200}`
	if cfg := resolveAs(t, Options{}, conf, factsTarget(t, withPort)); cfg.Port != 2200 {
		t.Fatalf("target.json: port %d", cfg.Port)
	}
	if cfg := resolveAs(t, Options{Port: 2300}, conf, factsTarget(t, withPort)); cfg.Port != 2300 {
		t.Fatalf("-port: port %d", cfg.Port)
	}
	if cfg := resolveAs(t, Options{}, writeSSHConfig(t, ""), factsTarget(t, `{"address": "10.0.0.9"}`)); cfg.Port != 22 {
		t.Fatalf("default: port %d", cfg.Port)
	}
}
