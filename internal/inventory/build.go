package inventory

import (
	"fmt"
	"strings"
)

// Where a target's system is built ("build" in target.json, -buildon).
const (
	// BuildLocal: on the deploying machine (the default).
	BuildLocal = "local"
	// BuildTarget: on the target itself, from derivations evaluated on the
	// deploying machine.
	BuildTarget = "target"
)

// ValidateBuild checks a "build" value or -buildon flag: empty, local,
// target, or a target name (whether that target exists is the
// inventory's question: see BuildHost).
func ValidateBuild(s string) error {
	switch s {
	case "", BuildLocal, BuildTarget:
		return nil
	}
	if ValidateName(s) != nil {
		return fmt.Errorf("invalid build %q: use %q (this machine), %q (the target itself) or the name of a build host in the inventory", s, BuildLocal, BuildTarget)
	}
	return nil
}

// BuildOf is where t's system is built when nothing overrides it: local,
// target, or a build host's name. A target naming itself builds on itself.
func BuildOf(t Target) string {
	switch t.Build {
	case "", BuildLocal:
		return BuildLocal
	case t.Name:
		return BuildTarget
	}
	return t.Build
}

// BuildHost returns the target that builds for others under name, or an
// error naming the targets there are.
func (inv *Inventory) BuildHost(name string) (Target, error) {
	if err := ValidateBuild(name); err != nil {
		return Target{}, err
	}
	for _, t := range inv.Targets {
		if t.Name == name {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("build host %q is not a target of the inventory (targets: %s): a build host needs its own targets/%s/target.json (address, user, system)", name, strings.Join(inv.Names(), ", "), name)
}

// lintBuild checks t's build: a valid value, a build host in the
// inventory, and one of the same system (a build host of another system
// can only build t with emulation; choose another or "target").
func (inv *Inventory) lintBuild(t Target) string {
	if err := ValidateBuild(t.Build); err != nil {
		return err.Error()
	}
	where := BuildOf(t)
	if where == BuildLocal || where == BuildTarget {
		return ""
	}
	h, err := inv.BuildHost(where)
	if err != nil {
		return err.Error()
	}
	if h.System != t.System {
		return fmt.Sprintf("build host %s is %s but this target is %s: choose a build host of the same system, or \"build\": %q", h.Name, h.System, t.System, BuildTarget)
	}
	return ""
}
