//go:build mage

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/monibahmed/nixos-config/internal/bench"
)

// Bench measures fleet deploys (deployAll against a sequential per-target
// baseline, N = 1, 4, 8 lab targets), a no-op redeploy against the bare
// commands, Nix evaluators and SSH connections per deploy, and discovery
// against nmap, all on the lab in one run (root). Prints a table and writes
// docs/benchmarks.md and docs/benchmarks.json. -quick is a short smoke run
// that writes nothing unless -out is given.
func Bench(ctx context.Context,
	quick *bool, // one small run: checks that the benchmark completes
	runs *int, // runs per figure (default 3)
	fleet *string, // fleet sizes (default 1,4,8)
	rate *int, // Mbit/s of each target's link (default 100)
	uplink *int, // Mbit/s of the deployer's shared uplink (default 1000)
	delay *int, // ms of delay per target link (default 2; needs netem)
	shared *int, // MiB of closure shared by all targets (default 40)
	unique *int, // MiB of closure unique to each target (default 20)
	out *string, // directory for benchmarks.md and benchmarks.json (default docs/)
	render *string, // only rewrite benchmarks.md from this benchmarks.json (no measurement)
) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	if render != nil {
		data, err := os.ReadFile(*render)
		if err != nil {
			return err
		}
		var rep bench.Report
		if err := json.Unmarshal(data, &rep); err != nil {
			return fmt.Errorf("%s: %w", *render, err)
		}
		md, err := os.Create(filepath.Join(filepath.Dir(*render), "benchmarks.md"))
		if err != nil {
			return err
		}
		defer md.Close()
		return rep.WriteMarkdown(md)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := bench.Config{Root: e.root, MageBin: self, Fleet: []int{1, 4, 8}, Runs: 3, Out: os.Stdout,
		Profile: bench.Profile{TargetMbit: 100, UplinkMbit: 1000, DelayMs: 2, SharedMiB: 40, UniqueMiB: 20}}
	dir := filepath.Join(e.root, "docs")
	if on(quick) {
		cfg.Fleet, cfg.Runs = []int{1, 2}, 1
		cfg.Profile.SharedMiB, cfg.Profile.UniqueMiB = 2, 1
		dir = ""
	}
	if runs != nil {
		cfg.Runs = *runs
	}
	if fleet != nil {
		cfg.Fleet = nil
		for _, s := range strings.Split(*fleet, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 || n > 50 {
				return fmt.Errorf("invalid -fleet=%q: comma-separated sizes between 1 and 50", *fleet)
			}
			cfg.Fleet = append(cfg.Fleet, n)
		}
	}
	for _, p := range []struct {
		v   *int
		dst *int
	}{{rate, &cfg.Profile.TargetMbit}, {uplink, &cfg.Profile.UplinkMbit}, {delay, &cfg.Profile.DelayMs}, {shared, &cfg.Profile.SharedMiB}, {unique, &cfg.Profile.UniqueMiB}} {
		if p.v != nil {
			*p.dst = *p.v
		}
	}
	if out != nil {
		dir = *out
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Println()
	if err := rep.WriteText(os.Stdout); err != nil {
		return err
	}
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md, err := os.Create(filepath.Join(dir, "benchmarks.md"))
	if err != nil {
		return err
	}
	defer md.Close()
	if err := rep.WriteMarkdown(md); err != nil {
		return err
	}
	js, err := os.Create(filepath.Join(dir, "benchmarks.json"))
	if err != nil {
		return err
	}
	defer js.Close()
	if err := rep.WriteJSON(js); err != nil {
		return err
	}
	e.out.Linef("bench: wrote %s and %s", filepath.Join(dir, "benchmarks.md"), filepath.Join(dir, "benchmarks.json"))
	return nil
}
