//go:build mage

package main

import (
	"context"

	"github.com/monibahmed/nixos-config/internal/check"
	"github.com/monibahmed/nixos-config/internal/nix"
)

// Check validates the repository, stopping at the first broken stage:
// (1) every tracked .nix file parses, (2) the inventory is valid and every file
// the flake needs is tracked by git, (3) `nix flake check` evaluates every
// configuration, (4) security settings are linted (warnings only).
//
// Stage 3 uses the pinned nixpkgs with Nix >= 2.18, and otherwise the nixpkgs
// test double (an offline structural check, announced in the output).
func Check(ctx context.Context,
	offline *bool, // evaluate against the nixpkgs test double (no network, any Nix); -offline=false insists on real nixpkgs
) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	c := &check.Checker{Nix: nix.Nix{Runner: e.runner}, Git: e.git(), Out: e.out}
	res, err := c.Run(ctx, check.Options{Root: e.root, Offline: offline})
	if err != nil {
		return err
	}
	mode := "pinned nixpkgs"
	if res.Offline {
		mode = "offline, test double"
	}
	e.out.Linef("check passed: %d targets (%s), %d warnings", len(res.Targets), mode, len(res.Warnings))
	return nil
}
