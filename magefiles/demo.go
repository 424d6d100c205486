//go:build mage

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/lab"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/setup"
)

// Demo shows the whole pipeline without real machines (needs root). On a
// fresh Debian/Ubuntu machine it first installs what the lab and the tests
// lack (apt-get, naming the packages; their services stay stopped and
// disabled; elsewhere it says what to install). Then it starts
// a lab of SIMULATED NixOS targets named like the example fleet, deploys the
// work tree's configurations to all of them in parallel with the nixpkgs test
// double, prints the summary and the targets' generations, and removes the lab.
func Demo(ctx context.Context) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	fleetInv, err := loadFleet(e, nil)
	if err != nil {
		return err
	}
	// A fresh machine: install what the lab and the tests need.
	in := &setup.Installer{Runner: e.runner, Log: os.Stdout, Notice: func(format string, args ...any) {
		e.out.Linef("demo: "+format, args...)
	}}
	if _, err := in.Ensure(ctx); err != nil {
		return err
	}
	state, err := os.MkdirTemp("", "nixos-config-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	e.out.Linef("demo: starting %d SIMULATED NixOS targets on this machine (network namespaces on 10.77.99.0/24, not real machines)", len(fleetInv.inv.Targets))
	l, err := lab.Start(ctx, lab.Config{Name: "demo", StateDir: state, Subnet: "10.77.99.0/24", Targets: fleetInv.inv.Names()}, run.Exec{})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := l.Down(cctx); err != nil {
			e.out.Linef("demo: removing the lab failed: %v", err)
			return
		}
		e.out.Linef("demo: lab removed")
	}()
	inv, err := loadLabFleet(state)
	if err != nil {
		return err
	}
	e.out.Linef("demo: deploying the example fleet (deployAll, built once with the nixpkgs test double)")
	allow := true
	err = runDeploy(ctx, e, inv, inv.inv.Targets, deployFlags{allowdirty: &allow})
	fmt.Println()
	e.out.Linef("demo: the simulated targets now run:")
	if perr := printLabStatus(ctx, e, l); perr != nil && err == nil {
		err = perr
	}
	return err
}

// loadLabFleet reads the inventory, known_hosts and key a lab wrote.
func loadLabFleet(state string) (*fleet, error) {
	l := &fleet{lab: true}
	inv, err := inventory.LoadFile(filepath.Join(state, "inventory.json"))
	if err != nil {
		return nil, fmt.Errorf("no lab inventory: %w", err)
	}
	l.inv = inv
	l.knownHosts = []string{filepath.Join(state, "known_hosts")}
	l.identities = []string{filepath.Join(state, "id_ed25519")}
	return l, nil
}
