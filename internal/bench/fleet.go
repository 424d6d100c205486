// Package bench measures the toolkit against baselines run in the same
// process on the same lab: fleet deploys against a sequential per-target
// baseline (what deploy.sh/deploy-all.sh did), a no-op redeploy against the
// bare commands, and discovery against nmap. Figures are medians of several
// runs, reported as ratios; nothing here asserts timings.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/monibahmed/nixos-config/internal/scaffold"
)

// Profile of the simulated network and systems.
type Profile struct {
	TargetMbit int // each target's link
	UplinkMbit int // the deployer's side of the lab bridge, shared by all
	DelayMs    int // per target link (needs netem)
	SharedMiB  int // closure part shared by all targets
	UniqueMiB  int // closure part unique to each target
}

func (p Profile) String() string {
	return fmt.Sprintf("%d Mbit/s per target, %d Mbit/s shared uplink, %d ms delay; closures %d MiB shared + %d MiB per target",
		p.TargetMbit, p.UplinkMbit, p.DelayMs, p.SharedMiB, p.UniqueMiB)
}

// makeFleet writes a flake repository with n targets node-1..node-n whose
// systems (built with the nixpkgs test double) carry the profile's closures,
// copying the flake, the shared modules and the double from root.
func makeFleet(ctx context.Context, root, dir string, n int, p Profile, seed string) error {
	copies := []string{"flake.nix", "flake.lock", "targets/common", "internal/nix/double"}
	for _, c := range copies {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, c)), 0o755); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "cp", "-r", filepath.Join(root, c), filepath.Join(dir, c)).CombinedOutput(); err != nil {
			return fmt.Errorf("copying %s: %v %s", c, err, out)
		}
	}
	hw := scaffold.Placeholder("")
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("node-%d", i)
		td := filepath.Join(dir, "targets", name)
		if err := os.MkdirAll(td, 0o755); err != nil {
			return err
		}
		conf := fmt.Sprintf(`{ ... }:
{
  imports = [ ./hardware-configuration.nix ];
  boot.loader.systemd-boot.enable = true;
  lab.simulate.closure = { sharedMiB = %d; uniqueMiB = %d; seed = %q; };
}
`, p.SharedMiB, p.UniqueMiB, seed)
		files := map[string]string{
			"configuration.nix":          conf,
			"hardware-configuration.nix": string(hw),
			"README.md":                  "# " + name + "\n\nBenchmark target.\n",
			"target.json":                fmt.Sprintf(`{"address": "10.99.0.%d"}`+"\n", i),
		}
		for f, c := range files {
			if err := os.WriteFile(filepath.Join(td, f), []byte(c), 0o644); err != nil {
				return err
			}
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"},
		{"-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q", "-m", "benchmark fleet"}} {
		// No detached automatic maintenance writing into the repository
		// while the benchmark removes it.
		cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "maintenance.auto=false", "-c", "gc.auto=0"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	return os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("/.lab/\n/.bench/\n"), 0o644)
}

// nixShim is a directory with a `nix` that logs each invocation before
// running the real one: evaluator processes are counted from that log.
func nixShim(dir string) (string, string, error) {
	real, err := exec.LookPath("nix")
	if err != nil {
		return "", "", err
	}
	bin := filepath.Join(dir, "shim")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", "", err
	}
	log := filepath.Join(dir, "nix-invocations.log")
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %q\nexec %q \"$@\"\n", log, real)
	if err := os.WriteFile(filepath.Join(bin, "nix"), []byte(script), 0o755); err != nil {
		return "", "", err
	}
	return bin, log, nil
}

// evaluators counts the invocations in a shim log that start a Nix
// evaluator (nix build/eval/flake), from line `from` on.
func evaluators(log string, from int) (int, int) {
	data, _ := os.ReadFile(log)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) == 1 && lines[0] == "" {
		lines = nil
	}
	n := 0
	for i, l := range lines {
		if i < from {
			continue
		}
		for _, sub := range []string{" build ", " eval ", " flake "} {
			if strings.Contains(" "+l+" ", sub) {
				n++
				break
			}
		}
	}
	return n, len(lines)
}
