package deploy

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/run"
	"github.com/monibahmed/nixos-config/internal/sshx"
)

// previous is what a target ran before a deployment: its profile generation
// (with that generation's system) and its running system.
type previous struct {
	generation int
	path       string // the generation's system
	current    string // /run/current-system
}

func previousOf(f targetFacts) previous {
	return previous{generation: generationOf(f.profile), path: f.profilePath, current: f.current}
}

// switchCommand is switch-to-configuration of path in mode, as root, under
// systemd-run where the target has systemd.
func switchCommand(systemd bool, path, mode string) []string {
	sw := []string{path + "/bin/switch-to-configuration", mode}
	if systemd {
		return append([]string{"env", "NIXOS_INSTALL_BOOTLOADER=0", "systemd-run", "-E", "LOCALE_ARCHIVE", "-E", "NIXOS_INSTALL_BOOTLOADER",
			"--collect", "--no-ask-password", "--pipe", "--quiet", "--service-type=exec", "--unit=" + uniqueUnit()}, sw...)
	}
	return append([]string{"env", "NIXOS_INSTALL_BOOTLOADER=0"}, sw...)
}

// restore returns a target to prev after a failed or unhealthy activation
// in mode: the profile goes back to the previous generation and that
// system is activated again, as `nixos-rebuild switch --rollback` does.
func restore(ctx context.Context, s *session, systemd bool, mode string, prev previous) (int, error) {
	switch mode {
	case ModeSwitch, ModeBoot:
		if prev.generation == 0 || prev.path == "" {
			return 0, errors.New("there is no previous generation to roll back to")
		}
		if out, err := s.sudo(ctx, "nix-env", "-p", "/nix/var/nix/profiles/system", "--switch-generation", strconv.Itoa(prev.generation)); err != nil {
			return 0, fmt.Errorf("switching the profile back to generation %d: %v %s", prev.generation, err, strings.TrimSpace(out.Stderr))
		}
		if out, err := s.sudo(ctx, switchCommand(systemd, prev.path, mode)...); err != nil {
			return prev.generation, fmt.Errorf("re-activating generation %d: %v %s", prev.generation, err, strings.Join(lastLines(out.Stderr, 2), " | "))
		}
		return prev.generation, nil
	case ModeTest:
		if prev.current == "" {
			return 0, errors.New("there was no running system to return to")
		}
		if out, err := s.sudo(ctx, switchCommand(systemd, prev.current, ModeTest)...); err != nil {
			return 0, fmt.Errorf("re-activating the previous system: %v %s", err, strings.Join(lastLines(out.Stderr, 2), " | "))
		}
		return prev.generation, nil
	}
	return 0, fmt.Errorf("nothing to roll back in mode %s", mode)
}

//go:embed watchdog.sh
var watchdogScript string

// Magic rollback: before a switch, a watchdog is armed on the target,
// detached from the SSH session (a transient systemd unit where there is
// systemd, a process in its own session otherwise). Unless the deployer
// confirms over a new SSH connection within the timeout, the target rolls
// itself back to the previous generation.
const watchdogDir = "/run/nixos-config"

func armWatchdog(ctx context.Context, s *session, systemd bool, token string, timeout time.Duration, prev previous) error {
	secs := int(timeout.Seconds())
	if secs < 1 {
		secs = 1
	}
	script := watchdogDir + "/watchdog-" + token + ".sh"
	args := []string{token, strconv.Itoa(secs), strconv.Itoa(prev.generation), prev.path, now()}
	var start string
	if systemd {
		start = run.ShellJoin(append([]string{"systemd-run", "--unit=nixos-config-watchdog-" + token, "--collect", "--quiet", "/bin/sh", script}, args...)...)
	} else {
		// sudo (use_pty) ends what is left of its command's session when it
		// exits: wait until the watchdog runs in a session of its own.
		armed := run.Quote(watchdogDir + "/armed-" + token)
		start = "setsid /bin/sh " + run.ShellJoin(append([]string{script}, args...)...) + " </dev/null >/dev/null 2>&1 & " +
			"i=0; while [ ! -e " + armed + " ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; test -e " + armed
	}
	// The script arrives on standard input; the watchdog starts once it is written.
	// (The directory is readable: the deployer checks for markers without sudo.)
	install := "mkdir -p " + watchdogDir + " && chmod 755 " + watchdogDir + " || exit 1\numask 077\ncat > " + run.Quote(script) + " || exit 1\n" + start
	_, err := s.sudoInput(ctx, watchdogScript, "sh", "-c", install)
	return err
}

// confirm tells the watchdog that the deployer reached the target again.
func confirm(ctx context.Context, s *session, token string) error {
	_, err := s.sudo(ctx, "touch", watchdogDir+"/confirm-"+token)
	return err
}

// watchdogRolledBack reports whether the watchdog rolled the target back.
func watchdogRolledBack(ctx context.Context, sh Shell, token string) bool {
	_, err := sh.Run(ctx, "test -e "+run.Quote(watchdogDir+"/rolled-back-"+token), nil)
	return err == nil
}

// waitForTarget reconnects until the target answers or the deadline passes.
func (d *Deployer) waitForTarget(ctx context.Context, connect func(context.Context) (Shell, error), deadline time.Time) (Shell, error) {
	var last error
	for time.Now().Before(deadline) {
		sh, err := connect(ctx)
		if err == nil {
			return sh, nil
		}
		last = err
		var se *sshx.Error
		if errors.As(err, &se) && (se.Kind == sshx.KindChangedHost || se.Kind == sshx.KindUnknownHost) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	return nil, last
}
