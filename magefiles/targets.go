//go:build mage

package main

import (
	"context"
	"os"
	"strings"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Targets lists the inventory: name, address, SSH user, system, where its
// system is built and tags of every target (also: list). Reads
// targets/*/target.json, or the inventory file given with -inventory (e.g.
// the lab's).
func Targets(ctx context.Context,
	inventory *string, // inventory file to read instead of targets/*/target.json (e.g. a lab's inventory.json)
) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	inv, err := loadInventory(e, inventory)
	if err != nil {
		return err
	}
	rows := make([][]string, 0, len(inv.Targets))
	for _, t := range inv.Targets {
		tags := strings.Join(t.Tags, ",")
		if tags == "" {
			tags = "-"
		}
		rows = append(rows, []string{t.Name, t.Address, t.User, t.System, buildOf(t), tags})
	}
	return ui.Table(os.Stdout, []string{"NAME", "ADDRESS", "USER", "SYSTEM", "BUILD", "TAGS"}, rows)
}

// List shows the inventory as a table, like targets.
func List(ctx context.Context,
	inventory *string, // inventory file to read instead of targets/*/target.json (e.g. a lab's inventory.json)
) error {
	return Targets(ctx, inventory)
}

func loadInventory(e *env, file *string) (*inventory.Inventory, error) {
	if file != nil && *file != "" {
		return inventory.LoadFile(*file)
	}
	return inventory.LoadRepo(e.root)
}

// buildOf is where t's system is built (local, target or a build host).
func buildOf(t inventory.Target) string { return inventory.BuildOf(t) }
