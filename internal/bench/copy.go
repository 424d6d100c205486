package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/signing"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
)

// CopyResult is the throughput of one way of copying a closure.
type CopyResult struct {
	Method string  `json:"method"`
	Note   string  `json:"note"`
	Secs   Stat    `json:"seconds"`
	MiBps  float64 `json:"mibPerSecond"`
	Load   Load    `json:"load"`
}

func nowSeconds() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// copyMethods measures, on one unshaped lab target (so that the figures
// show what the transport itself costs), the same closure copied by:
// OpenSSH (nix copy --to ssh-ng://, what the old scripts and the previous
// toolkit did), and through the toolkit's bridge over its own SSH
// connection as the deploy user, to a root daemon started with sudo (the
// default), and signed with a deployer key.
func (r *runner) copyMethods(ctx context.Context, rep *Report) error {
	l, err := r.newLabShaped(ctx, 1, false, false)
	if err != nil {
		return err
	}
	defer l.Down(context.Background())
	inv, err := inventory.LoadFile(l.InventoryPath())
	if err != nil {
		return err
	}
	t := inv.Targets[0]
	paths, err := r.build(ctx, []string{t.Name})
	if err != nil {
		return err
	}
	n := nix.New(r.ex)
	closures, err := n.Closures(ctx, paths)
	if err != nil {
		return err
	}
	var size int64
	var all []string
	for p, s := range closures[paths[0]] {
		size += s
		all = append(all, p)
	}
	// A signing key of the benchmark's own, trusted by the target.
	keyDir, err := os.MkdirTemp("", "nixos-config-bench-key-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(keyDir)
	key := filepath.Join(keyDir, "key.sec")
	pub, err := signing.Create(ctx, r.ex, "bench-1", key, false)
	if err != nil {
		return err
	}
	if err := l.TrustKeys(ctx, t.Name, pub); err != nil {
		return err
	}
	// Forget the closure on the target between copies.
	forget := func() error {
		_, err := l.Exec(ctx, t.Name, "sh", "-c", "nix-store --delete "+strings.Join(all, " ")+" >/dev/null 2>&1; true")
		return err
	}
	state := filepath.Join(r.fleet, ".lab")
	dial := func() (*target.Session, error) {
		cfg := sshx.Config{Host: t.Address, User: t.User, KnownHosts: []string{filepath.Join(state, "known_hosts")},
			Identities: []string{filepath.Join(state, "id_ed25519")}, IdentitiesOnly: true}
		c, err := sshx.Dial(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return target.New(t.Name, t.User, c, nil, target.Limits{}), nil
	}
	bridged := func(daemon target.Daemon, o nix.CopyOptions, ps []string) error {
		s, err := dial()
		if err != nil {
			return err
		}
		defer s.Close()
		b, err := s.OpenBridge(ctx, daemon)
		if err != nil {
			return err
		}
		defer b.Close()
		o.To = b.URI()
		return n.Copy(ctx, ps, o, &nix.LogParser{})
	}
	methods := []struct {
		name, note string
		copy       func() error
	}{
		{"OpenSSH (ssh-ng://)", "nix copy --to ssh-ng:// as a trusted user (the old scripts' way)", func() error {
			var buf bytes.Buffer
			err := r.ex.Run(ctx, run.Cmd{Name: "nix", Args: append(nix.GlobalArgs(false), "copy", "--no-check-sigs", "--to", "ssh-ng://"+t.User+"@"+t.Address, paths[0]),
				Env: []string{"NIX_SSHOPTS=" + strings.Join(r.sshOpts(), " ")}, Stdout: &buf, Stderr: &buf})
			if err != nil {
				return fmt.Errorf("%w: %s", err, buf.String())
			}
			return nil
		}},
		{"bridge, trusted user", "-trust=trusted: the toolkit's one connection, the deploy user's daemon", func() error {
			return bridged(target.DaemonUser, nix.CopyOptions{NoCheckSigs: true}, paths)
		}},
		{"bridge, root daemon via sudo", "-trust=sudo (default): no trusted user", func() error {
			return bridged(target.DaemonSudo, nix.CopyOptions{NoCheckSigs: true}, paths)
		}},
		{"bridge, signed", "-trust=signed: signing in a temporary cache here, then the copy", func() error {
			dir, err := run.PrivateDir("nixos-config-bench-signed")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if err := n.Copy(ctx, all, nix.CopyOptions{To: signing.CacheURL(dir, key), NoRecursive: true}, &nix.LogParser{}); err != nil {
				return err
			}
			return bridged(target.DaemonUser, nix.CopyOptions{From: "file://" + dir, NoRecursive: true}, all)
		}},
	}
	runs := max(r.cfg.Runs, 3)
	for _, m := range methods {
		var secs []float64
		var load Load
		for i := 0; i < runs; i++ {
			if err := forget(); err != nil {
				return err
			}
			start := time.Now()
			l, err := measure(m.copy)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			secs = append(secs, time.Since(start).Seconds())
			load = worst(load, l)
		}
		res := CopyResult{Method: m.name, Note: m.note, Secs: stat(secs), Load: load}
		res.MiBps = float64(size) / (1 << 20) / res.Secs.Median
		rep.Copy = append(rep.Copy, res)
		r.logf("copy of %s, %s: %.2fs (%.0f MiB/s)", mib(size), m.name, res.Secs.Median, res.MiBps)
	}
	rep.CopyBytes = size
	return nil
}
