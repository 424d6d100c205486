// Package deploy builds NixOS systems and activates them on targets over SSH,
// following NixOS's own activation protocol: build once for the whole fleet,
// copy each closure with `nix copy`, set the system profile, run
// switch-to-configuration (under systemd-run when the target has systemd),
// and verify over a fresh connection.
package deploy

import (
	"fmt"
	"net"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/signing"
	"github.com/monibahmed/nixos-config/internal/target"
)

// Modes of switch-to-configuration.
const (
	ModeSwitch      = target.ModeSwitch
	ModeBoot        = target.ModeBoot
	ModeTest        = target.ModeTest
	ModeDryActivate = target.ModeDryActivate
)

// Options of one deployment run.
type Options struct {
	Mode       string // switch (default), boot, test, dry-activate
	User       string // SSH user for every target instead of the inventory's
	Rev        string // build this git revision instead of the work tree
	AllowDirty bool   // deploy a work tree with uncommitted changes
	Substitute bool   // let targets fetch paths from their own substituters
	AskSudo    bool   // ask for the sudo password before starting
	Force      bool   // deploy even when the target's hostname differs
	Jobs       int    // targets deployed at once
	// Offline: build against the nixpkgs test double. Such systems are only
	// ever activated on lab hosts.
	Offline bool
	// Safety.
	NoRollback     bool          // keep a failed or unhealthy activation
	NoMagic        bool          // no watchdog on the target
	ConfirmTimeout time.Duration // how long the watchdog waits (default 60s)
	Wait           bool          // wait for another deployer's lock instead of failing
	FailFast       bool          // deployAll: start no new target after a failure
	// SSH settings.
	KnownHosts []string
	Identities []string
	// ConnectTimeout bounds the connect and handshake of each connection
	// (each hop); zero: ssh_config's ConnectTimeout, else sshx.DefaultTimeout.
	ConnectTimeout time.Duration
	Port           int // SSH port for every target instead of target.json's
	// CommandTimeout bounds each short remote command after the handshake
	// (and a copy that moves no byte); DeadPeer is how long a silent
	// connection lives before it is declared dead (zero: ssh_config's
	// ServerAliveInterval x ServerAliveCountMax, else sshx.DefaultDeadAfter).
	CommandTimeout time.Duration
	DeadPeer       time.Duration
	// BuildSilence bounds a build on a build host or the target that
	// prints nothing (default DefaultBuildSilence).
	BuildSilence time.Duration
	// Trust: how the target comes to accept the copied paths (default
	// TrustSudo); SigningKey is the secret key for TrustSigned.
	Trust      Trust
	SigningKey string
	// BuildOn overrides every target's "build" for the run: local, target,
	// or the name of a build host of the inventory (-buildon).
	BuildOn string
	// Abandon closes on the second interrupt: running activations are
	// then left to the targets (see Run).
	Abandon <-chan struct{}
}

// Trust is how a target comes to accept paths built elsewhere: the
// deploy user is never made a trusted Nix user (that is root-equivalent)
// unless TrustTrusted says the target already trusts it.
type Trust string

// Trust mechanisms.
const (
	// TrustSudo: the copy talks to a root nix-daemon started through sudo
	// on the target (the sudo right activation needs anyway).
	TrustSudo Trust = "sudo"
	// TrustSigned: the deployer signs the paths with its key; targets
	// trust the public keys in targets/common/deployer-keys/.
	TrustSigned Trust = "signed"
	// TrustTrusted: the target already trusts the deploy user
	// (nix.settings.trusted-users), as ssh-ng:// copies require.
	TrustTrusted Trust = "trusted"
)

// DefaultJobs is the number of targets deployed at once unless -jobs says
// otherwise: copies are network bound, and the build is shared anyway.
const DefaultJobs = 8

// DefaultBuildSilence: how long a remote build may print nothing.
const DefaultBuildSilence = 30 * time.Minute

// Normalize validates and fills defaults.
func (o *Options) Normalize() error {
	switch o.Mode {
	case "":
		o.Mode = ModeSwitch
	case ModeSwitch, ModeBoot, ModeTest, ModeDryActivate:
	default:
		return fmt.Errorf("invalid mode %q: use switch, boot, test or dry-activate", o.Mode)
	}
	if o.Jobs == 0 {
		o.Jobs = DefaultJobs
	}
	if o.Jobs < 0 {
		return fmt.Errorf("invalid -jobs=%d: must be at least 1", o.Jobs)
	}
	switch o.Trust {
	case "":
		o.Trust = TrustSudo
	case TrustSudo, TrustSigned, TrustTrusted:
	default:
		return fmt.Errorf("invalid -trust=%s: use sudo (default), signed or trusted", o.Trust)
	}
	if o.Trust == TrustSigned && o.SigningKey == "" {
		o.SigningKey = signing.DefaultKeyFile()
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("invalid -port=%d", o.Port)
	}
	if o.User != "" {
		if err := inventory.ValidateUser(o.User); err != nil {
			return err
		}
	}
	if err := inventory.ValidateBuild(o.BuildOn); err != nil {
		return fmt.Errorf("-buildon: %w", err)
	}
	// ConnectTimeout and DeadPeer stay zero unless a flag set them: then
	// ~/.ssh/config (ConnectTimeout, ServerAlive*) and the defaults apply
	// when the connection is resolved (sshx.Resolve).
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"timeout", &o.ConnectTimeout, 0}, {"cmdtimeout", &o.CommandTimeout, target.DefaultCommandTimeout}, {"deadpeer", &o.DeadPeer, 0},
		{"buildsilence", &o.BuildSilence, DefaultBuildSilence}} {
		if *d.v < 0 {
			return fmt.Errorf("invalid -%s=%v: must be positive", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v != 0 && *d.v < time.Second {
			return fmt.Errorf("invalid -%s=%v: at least 1s", d.name, *d.v)
		}
	}
	if o.ConfirmTimeout == 0 {
		o.ConfirmTimeout = 60 * time.Second
	}
	if o.ConfirmTimeout < 5*time.Second {
		return fmt.Errorf("invalid -confirmtimeout=%v: at least 5s", o.ConfirmTimeout)
	}
	return nil
}

// limits are the bounds of every target session of a run.
func (o Options) limits() target.Limits {
	return target.Limits{Command: o.CommandTimeout}
}

// SetsProfile tells whether the mode creates a system generation.
func SetsProfile(mode string) bool { return mode == ModeSwitch || mode == ModeBoot }

// Activates tells whether the mode changes the running system.
func Activates(mode string) bool { return mode == ModeSwitch || mode == ModeTest }

// IsLocal reports whether address means "this machine".
func IsLocal(address string) bool {
	switch strings.ToLower(address) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// Select returns the targets matching a selection: comma-separated names,
// globs (path.Match syntax) and @tags. Empty selects all.
func Select(inv *inventory.Inventory, selection string) ([]inventory.Target, error) {
	if strings.TrimSpace(selection) == "" {
		return inv.Targets, nil
	}
	picked := map[string]bool{}
	for _, term := range strings.Split(selection, ",") {
		term = strings.TrimSpace(term)
		if term == "" {
			continue
		}
		matched := false
		for _, t := range inv.Targets {
			var ok bool
			switch {
			case strings.HasPrefix(term, "@"):
				for _, tag := range t.Tags {
					if tag == term[1:] {
						ok = true
					}
				}
			default:
				var err error
				ok, err = path.Match(term, t.Name)
				if err != nil {
					return nil, fmt.Errorf("invalid pattern %q in -on: %w", term, err)
				}
			}
			if ok {
				picked[t.Name] = true
				matched = true
			}
		}
		if !matched {
			return nil, fmt.Errorf("-on=%s: %q matches no target (targets: %s)", selection, term, strings.Join(inv.Names(), ", "))
		}
	}
	var out []inventory.Target
	for _, t := range inv.Targets {
		if picked[t.Name] {
			out = append(out, t)
		}
	}
	return out, nil
}

// prepareTargets applies -user and -port to every target and validates
// each before anything reaches a shell.
func prepareTargets(targets []inventory.Target, o Options) error {
	for i := range targets {
		if o.User != "" {
			targets[i].User, targets[i].UserSet = o.User, true
		}
		if o.Port != 0 {
			targets[i].Port = o.Port
		}
		if err := ValidateTarget(targets[i]); err != nil {
			return err
		}
	}
	return nil
}

// parallel runs do(i) for i in [0, n), at most jobs at once, and waits.
func parallel(n, jobs int, do func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, jobs)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			do(i)
		}()
	}
	wg.Wait()
}

// ValidateTarget checks a target's name, address and user before anything
// reaches a shell.
func ValidateTarget(t inventory.Target) error {
	if err := inventory.ValidateName(t.Name); err != nil {
		return err
	}
	if err := inventory.ValidateAddress(t.Address); err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	if ip := net.ParseIP(t.Address); ip != nil && ip.To4() == nil && !IsLocal(t.Address) {
		return fmt.Errorf("target %s: IPv6 addresses are not supported by `nix copy` store URLs; use a host name", t.Name)
	}
	if err := inventory.ValidateUser(t.User); err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	if t.Port < 0 || t.Port > 65535 {
		return fmt.Errorf("target %s: invalid port %d", t.Name, t.Port)
	}
	for i, h := range t.Health {
		if err := h.Validate(); err != nil {
			return fmt.Errorf("target %s: health check %d: %w (fix target.json; mage check shows it too)", t.Name, i+1, err)
		}
	}
	return nil
}
