package deploy

import (
	"context"
	"fmt"
	"runtime"
	"strings"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// place is where a target's system is built.
type place struct {
	kind   string           // inventory.BuildLocal, inventory.BuildTarget or placeHost
	host   inventory.Target // the build host (placeHost)
	system string           // the target's declared system (target.json)
}

const placeHost = "host"

func (p place) String() string {
	if p.kind == placeHost {
		return p.host.Name
	}
	if p.kind == "" {
		return inventory.BuildLocal
	}
	return p.kind
}

// remote tells whether the system is built on another machine.
func (p place) remote() bool { return p.kind == inventory.BuildTarget || p.kind == placeHost }

// plan decides where each target's system is built: -buildon for the
// whole run, else the target's "build" (target.json), else this machine.
// A build host is a target of the inventory (d.Fleet), reached like any
// target (its user and port, and -user/-port, apply) and never activated.
func (d *Deployer) plan(targets []inventory.Target, o Options) (map[string]place, error) {
	out := map[string]place{}
	for _, t := range targets {
		where, from := inventory.BuildOf(t), "target "+t.Name+`: "build"`
		if err := inventory.ValidateBuild(t.Build); err != nil {
			return nil, fmt.Errorf("target %s: %w (fix targets/%s/target.json; mage check shows it too; %s)", t.Name, err, t.Name, trouble.See(trouble.RemoteBuild))
		}
		if o.BuildOn != "" {
			where, from = o.BuildOn, "-buildon"
			if where == t.Name {
				where = inventory.BuildTarget
			}
		}
		p := place{kind: where, system: t.System}
		switch {
		case IsLocal(t.Address) || where == inventory.BuildLocal:
			// A target that is this machine builds here whatever it says.
			p.kind = inventory.BuildLocal
		case where == inventory.BuildTarget:
		default:
			if d.Fleet == nil {
				return nil, fmt.Errorf("%s names the build host %q but there is no inventory to find it in", from, where)
			}
			h, err := d.Fleet.BuildHost(where)
			if err != nil {
				return nil, fmt.Errorf("%s: %w (%s)", from, err, trouble.See(trouble.RemoteBuild))
			}
			if o.User != "" {
				h.User, h.UserSet = o.User, true
			}
			if o.Port != 0 {
				h.Port = o.Port
			}
			if err := ValidateTarget(h); err != nil {
				return nil, fmt.Errorf("%s: build host %w", from, err)
			}
			p.kind, p.host = placeHost, h
			if IsLocal(h.Address) {
				p.kind, p.host = inventory.BuildLocal, inventory.Target{}
			} else if o.Trust == TrustSigned {
				// The key signs paths in this machine's store; what a build
				// host built never is.
				return nil, fmt.Errorf("target %s builds on %s, and -trust=signed signs only what is built on this machine: deploy it with -trust=sudo (the default) or -trust=trusted, or build it on the target (-buildon=target needs no trust at all) (%s)", t.Name, h.Name, trouble.See(trouble.RemoteBuild))
			}
		}
		out[t.Name] = p
	}
	return out, nil
}

// foreignFailure: this machine cannot build a target's system, and the
// target builds here. Nothing was copied; the remedy names the setting.
func foreignFailure(name, system string, here nix.Platforms) *Failure {
	return &Failure{Section: trouble.Foreign, Target: name, Stage: StageBuild,
		Cause: fmt.Sprintf("this machine builds %s systems, not %s", here, system),
		Remedy: fmt.Sprintf(`build it elsewhere: "build": "target" (or the name of a build host of that system) in targets/%s/target.json, or -buildon=target for this run; nothing was copied`,
			name)}
}

// localPlatforms asks this machine's Nix what it builds (nil when it
// cannot tell: Nix then decides, and its refusal is reported the same way).
func (d *Deployer) localPlatforms(ctx context.Context) *nix.Platforms {
	p, err := d.Nix.Platforms(ctx)
	if err != nil {
		return nil
	}
	return &p
}

// nativeSystem is the Nix system name of this machine's own platform
// ("" when not known here): Nix builds it without being asked.
func nativeSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64", "ppc64le": "powerpc64le"}[runtime.GOARCH]
	if arch == "" || (runtime.GOOS != "linux" && runtime.GOOS != "darwin") {
		return ""
	}
	return arch + "-" + runtime.GOOS
}

// needsEvaluation tells whether the shared build must evaluate first
// (one `nix eval` for the fleet, then build what builds here): a target
// builds elsewhere, or declares a system this machine does not build (its
// derivation's system decides: a cross-compiled system builds here).
func needsEvaluation(names []string, plan map[string]place, here *nix.Platforms) bool {
	for _, n := range names {
		p := plan[n]
		if p.remote() || (here != nil && p.system != "" && !here.CanBuild(p.system)) {
			return true
		}
	}
	return false
}

// platformFailure turns Nix's refusal to build another platform's
// derivation into the failure with its remedy (nil: not that).
func platformFailure(name string, text string, here *nix.Platforms) *Failure {
	sys, ok := nix.PlatformMismatch(text)
	if !ok {
		return nil
	}
	p := nix.Platforms{System: "other"}
	if here != nil {
		p = *here
	}
	return foreignFailure(name, sys, p)
}

// errorText joins what a LogParser kept of Nix's errors and other lines.
func errorText(p *nix.LogParser) string {
	var text []string
	for _, e := range p.Errors() {
		text = append(text, e.Message)
	}
	text = append(text, p.Plain()...)
	return strings.Join(text, "\n")
}
