package deploy

import (
	"context"
	"fmt"
	"sync"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// buildHosts are a run's connections to its build hosts: opened by the
// first target that builds there, shared by the others (each build, copy
// and query is a session of that one connection), closed when the run ends.
type buildHosts struct {
	d  *Deployer
	mu sync.Mutex
	m  map[string]*buildHost
}

// buildHost is one build host of a run (or a target building for itself).
type buildHost struct {
	name string
	sess *target.Session
	fail *Failure
	once sync.Once

	platOnce sync.Once
	plat     *nix.Platforms

	// The run directory (workDir) and the command holding it.
	dirOnce sync.Once
	dir     string
	dirErr  error
	holder  *sshx.Proc
}

func newBuildHosts(d *Deployer) *buildHosts {
	return &buildHosts{d: d, m: map[string]*buildHost{}}
}

// get connects to t once for the run and checks it (host name, Nix). A
// build host needs no sudo and no trusted user. It is not locked: it is not
// activated, and its nix-daemon runs concurrent builds itself.
func (h *buildHosts) get(ctx context.Context, t inventory.Target, o Options) (*buildHost, *Failure) {
	h.mu.Lock()
	bh, ok := h.m[t.Name]
	if !ok {
		bh = &buildHost{name: t.Name}
		h.m[t.Name] = bh
	}
	h.mu.Unlock()
	bh.once.Do(func() { bh.sess, bh.fail = h.d.openBuildHost(ctx, t, o) })
	return bh, bh.fail
}

// close closes every build host's connection.
func (h *buildHosts) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, bh := range h.m {
		if bh.sess != nil {
			bh.releaseDir()
			bh.sess.Close()
		}
	}
}

func (d *Deployer) openBuildHost(ctx context.Context, t inventory.Target, o Options) (*target.Session, *Failure) {
	sess, err := d.session(ctx, t, o)
	if err != nil {
		return nil, builderUnreachable(t.Name, connectFailure(err))
	}
	facts, err := sess.ReadFacts(ctx)
	if err != nil {
		sess.Close()
		return nil, builderUnreachable(t.Name, targetFailure(err))
	}
	if facts.Hostname != t.Name && facts.Hostname != "nixos" && !o.Force {
		sess.Close()
		return nil, &Failure{Section: trouble.WrongMachine,
			Cause:  fmt.Sprintf("the build host %s (%s) answers as %q", t.Name, t.Address, facts.Hostname),
			Remedy: "check the build host's address in its target.json; -force builds there anyway"}
	}
	if !facts.Nix {
		sess.Close()
		return nil, &Failure{Section: trouble.RemoteBuild, Cause: "Nix is not installed on the build host " + t.Name + " (no nix-store in PATH for " + sess.User + ")",
			Remedy: "choose a build host that runs Nix (-buildon), or build on the target"}
	}
	// No sudo: the derivations are content-addressed, so the SSH user's
	// own nix-daemon --stdio adds them; anyone may build; reading the
	// built paths needs no privilege either.
	return sess, nil
}

// builderUnreachable names the build host in a connection failure.
func builderUnreachable(name string, f *Failure) *Failure {
	section := f.Section
	if section == trouble.Network || section == "" {
		section = trouble.RemoteBuild
	}
	return &Failure{Section: section, Cause: "the build host " + name + " is unreachable: " + f.Cause,
		Remedy: f.Remedy + "; or build elsewhere for this run (-buildon=local or -buildon=target); nothing was copied to the target", Err: f.Err}
}

// platforms asks the build host's Nix what it builds (nil when it cannot
// tell: Nix then decides, and its refusal is classified the same way).
func (bh *buildHost) platforms(ctx context.Context) *nix.Platforms {
	bh.platOnce.Do(func() {
		out, err := bh.sess.Run(ctx, "nix show-config", nix.PlatformsScript, nil)
		if err != nil {
			return
		}
		if p, err := nix.ParsePlatforms(out.Stdout); err == nil {
			bh.plat = &p
		}
	})
	return bh.plat
}
