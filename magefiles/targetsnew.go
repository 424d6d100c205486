//go:build mage

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/deploy"
	"github.com/monibahmed/nixos-config/internal/nix"
	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/scaffold"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// New scaffolds a target: targets/<name>/ with a minimal configuration.nix,
// the hardware configuration placeholder, target.json with the address
// given by -address, and a README; then `git add`s it (flakes ignore
// untracked files). Refuses invalid or existing names.
func New(ctx context.Context, name string,
	address *string, // the machine's IP address or host name (required)
	user *string, // SSH user (default monibahmed)
	system *string, // Nix system (default x86_64-linux)
) error {
	e, err := newEnv(ctx)
	if err != nil {
		return err
	}
	files, err := scaffold.New(ctx, e.root, scaffold.Spec{Name: name, Address: str(address), User: str(user), System: str(system)}, e.git())
	if err != nil {
		return err
	}
	for _, f := range files {
		e.out.Linef("new: created %s", f)
	}
	e.out.Linef("new: targets/%s added to git. Next: mage hardware %s %s, edit targets/%s/configuration.nix, mage check, commit, mage deploy %s -", name, name, str(address), name, name)
	return nil
}

// Hardware runs `nixos-generate-config --show-hardware-config` on a machine
// over SSH and installs the result as targets/<name>/hardware-configuration.nix,
// replacing the placeholder, and shows the diff. What the machine answers is
// untrusted: it must parse and set only what nixos-generate-config writes
// (kernel modules, file systems, swap, DHCP, CPU microcode, host platform,
// guest support, the boot loader choice); anything else (users, SSH keys,
// sudo, services, lib.mkForce, imports of other files, ...) is refused
// unless -allowextra. <address> may be "-" for the inventory's.
func Hardware(ctx context.Context, name, address string,
	lab *bool, // use the lab (.lab/)
	user *string, // SSH user instead of target.json's / ~/.ssh/config's
	port *int, // SSH port instead of target.json's / ~/.ssh/config's
	timeout *time.Duration, // bound on the SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on the remote command (default 60s)
	allowextra *bool, // install it even with settings nixos-generate-config never writes (listed first; review them)
) error {
	e, fl, t, err := resolveTarget(ctx, name, address, lab, user)
	if err != nil {
		return err
	}
	if err := deploy.ValidateTarget(t); err != nil {
		return err
	}
	d, o, err := remoteDeployer(e, fl, remoteFlags{lab: lab, user: user, port: port, timeout: timeout, cmdtimeout: cmdtimeout})
	if err != nil {
		return err
	}
	sess, err := d.Open(ctx, t, o)
	if err != nil {
		return err
	}
	defer sess.Close()
	out, err := sess.Run(ctx, "nixos-generate-config", "nixos-generate-config --show-hardware-config", nil)
	if err != nil {
		msg := ui.Sanitize(strings.TrimSpace(out.Stderr), 300)
		if strings.Contains(msg, "not found") {
			return fmt.Errorf("%s has no nixos-generate-config: is it running NixOS (or the NixOS installer)?", t.Address)
		}
		return ui.SanitizeError(fmt.Errorf("nixos-generate-config failed on %s: %w %s", t.Address, err, msg), 600)
	}
	old, rep, err := scaffold.InstallHardware(ctx, e.root, name, scaffold.Hardware{Content: []byte(out.Stdout), Source: t.Address, AllowExtra: on(allowextra)}, nix.Nix{Runner: e.runner})
	for _, f := range rep.Findings {
		// hwconfig sanitizes what it quotes.
		if err != nil {
			e.out.Linef("hardware: %s %s", e.out.Bad("refused:"), f)
		} else {
			e.out.Linef("hardware: %s %s", e.out.Bad("EXTRA, review before you commit:"), f)
		}
	}
	if err != nil {
		return err
	}
	rel := filepath.Join("targets", name, "hardware-configuration.nix")
	// nixos-generate-config leaves the boot loader to configuration.nix.
	defer func() {
		if fw, err := sess.Run(ctx, "firmware probe", scaffold.FirmwareProbe, nil); err == nil {
			e.out.Linef("hardware: %s", scaffold.BootAdvice(name, fw.Stdout))
		}
	}()
	if bytes.Equal(old, []byte(out.Stdout)) {
		e.out.Linef("hardware: %s is unchanged", rel)
		return nil
	}
	// Show what changed, every line sanitized: the file came from the
	// machine and must not be able to hide lines on the terminal.
	tmp, err := os.CreateTemp("", "hardware-old-*.nix")
	if err == nil {
		tmp.Write(old)
		tmp.Close()
		defer os.Remove(tmp.Name())
		diff, _ := run.Output(ctx, e.runner, run.Cmd{Name: "git", Args: []string{"diff", "--no-index", "--no-color", "--", tmp.Name(), filepath.Join(e.root, rel)}})
		for _, l := range ui.SanitizeLines(diff, 0, ui.MaxLine) {
			fmt.Println(l)
		}
	}
	if len(rep.Findings) > 0 {
		e.out.Linef("hardware: wrote %s from %s %s: it sets %d things nixos-generate-config never writes (listed above); review them, run mage check and commit", rel, t.Address, e.out.Bad("with -allowextra"), len(rep.Findings))
		return nil
	}
	e.out.Linef("hardware: wrote %s from %s; review it, run mage check and commit", rel, t.Address)
	return nil
}
