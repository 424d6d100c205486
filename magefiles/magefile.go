//go:build mage

// Deploy the NixOS configurations in targets/ to machines on the local
// network over SSH. Every clone of this repository is a full deployer.
//
// Start with `mage targets` (the inventory) and `mage check`.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/magefile/mage/mg"

	"github.com/monibahmed/nixos-config/internal/gitx"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Namespaces of the targets build:host, rollback:to and discover:subnet. A Go
// type cannot share the name of the functions Build, Rollback and Discover;
// Mage lower-cases an all-capital name as a whole, so BUILD is listed and
// called as "build" (`mage -l`, `mage -h build:host`, `mage build:host`).
// Real namespaces, not aliases: `mage -h` knows only targets.
type (
	BUILD    mg.Namespace
	ROLLBACK mg.Namespace
	DISCOVER mg.Namespace
)

// env is what every target needs: the repository, a process runner and output.
type env struct {
	root   string
	runner run.Runner
	out    *ui.Printer
}

func newEnv(ctx context.Context) (*env, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	r := run.Exec{}
	root, err := gitx.Git{Runner: r, Dir: wd}.Root(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(root + "/flake.nix"); err != nil {
		return nil, fmt.Errorf("%s has no flake.nix: run mage from a clone of the nixos-config repository", root)
	}
	return &env{root: root, runner: r, out: ui.New(os.Stdout)}, nil
}

func (e *env) git() gitx.Git { return gitx.Git{Runner: e.runner, Dir: e.root} }
