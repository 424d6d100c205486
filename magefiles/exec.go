//go:build mage

package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/monibahmed/nixos-config/internal/deploy"
	"github.com/monibahmed/nixos-config/internal/ui"
)

// Exec runs a shell command on the selected targets in parallel, over the
// SSH connection deploys use (host keys checked, ~/.ssh/config), prints each
// line of output prefixed with its target, then each target's exit status;
// the exit status is non-zero when the command failed or did not run
// anywhere. The selection is names, globs and @tags, comma-separated ('*':
// all). Mage has no "--": give the command as one quoted argument, e.g.
// mage exec @lab 'systemctl is-active jellyfin'. Flags follow it.
func Exec(ctx context.Context, selection, command string,
	sudo *bool, // run the command as root through sudo (the password is asked once, as for deploys, and only ever reaches sudo's prompt)
	asksudo *bool, // ask for the sudo password before starting (reads standard input when it is not a terminal)
	JSON *bool, // print the results as JSON (output captured, control characters escaped) instead of streaming lines
	jobs *int, // targets at once (default 16)
	lab *bool, // the lab's targets (.lab/)
	user *string, // SSH user instead of target.json's / ~/.ssh/config's
	port *int, // SSH port instead of target.json's / ~/.ssh/config's
	timeout *time.Duration, // bound on each SSH connect and handshake (default: ~/.ssh/config ConnectTimeout, else 10s)
	cmdtimeout *time.Duration, // bound on the command on each target (default 10m)
) error {
	if command == "--" {
		return fmt.Errorf(`mage passes no "--": give the command as one quoted argument after the selection, e.g. mage exec %s 'systemctl is-active jellyfin'`, selection)
	}
	e, fl, err := openFleet(ctx, lab)
	if err != nil {
		return err
	}
	targets, err := deploy.Select(fl.inv, selection)
	if err != nil {
		return err
	}
	d, o, err := remoteDeployer(e, fl, remoteFlags{asksudo: asksudo, lab: lab, user: user, port: port, timeout: timeout})
	if err != nil {
		return err
	}
	eo := deploy.ExecOptions{Command: command, Sudo: on(sudo)}
	if cmdtimeout != nil {
		if *cmdtimeout <= 0 {
			return fmt.Errorf("invalid -cmdtimeout=%v: must be positive", *cmdtimeout)
		}
		eo.Timeout = *cmdtimeout
	}
	if jobs != nil {
		if *jobs < 1 {
			return fmt.Errorf("invalid -jobs=%d: at least 1", *jobs)
		}
		eo.Jobs = *jobs
	}
	if !on(JSON) {
		width := 0
		for _, t := range targets {
			width = max(width, len(t.Name))
		}
		var mu sync.Mutex
		eo.Line = func(target, stream, line string) {
			mu.Lock()
			defer mu.Unlock()
			w := os.Stdout
			if stream == "stderr" {
				w = os.Stderr
			}
			fmt.Fprintf(w, "%-*s | %s\n", width, target, line)
		}
	}
	results, err := d.Exec(ctx, targets, eo, o)
	if err != nil {
		return err
	}
	var failed []string
	for _, r := range results {
		switch {
		case r.Err != nil:
			failed = append(failed, r.Target+" (did not run)")
		case r.ExitCode != 0:
			failed = append(failed, fmt.Sprintf("%s (exit %d)", r.Target, r.ExitCode))
		}
	}
	if on(JSON) {
		if err := writeJSON(results); err != nil {
			return err
		}
	} else if err := execSummary(e.out, results); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("exec: %d of %d targets failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	return nil
}

// execSummary prints each target's exit status, and why a command did not run.
func execSummary(p *ui.Printer, results []deploy.ExecResult) error {
	var rows [][]string
	for _, r := range results {
		exit, result := strconv.Itoa(r.ExitCode), p.OK("ok")
		switch {
		case r.Err != nil:
			exit, result = "-", p.Bad("did not run")
		case r.ExitCode != 0:
			result = p.Bad("failed")
		}
		if r.Truncated {
			result += " (output truncated)"
		}
		rows = append(rows, []string{r.Target, r.Address, result, exit, (time.Duration(r.Seconds*1e3) * time.Millisecond).Round(100 * time.Millisecond).String()})
	}
	fmt.Println()
	if err := ui.Table(os.Stdout, []string{"TARGET", "ADDRESS", "RESULT", "EXIT", "DURATION"}, rows); err != nil {
		return err
	}
	for _, r := range results {
		if r.Err != nil {
			fmt.Printf("%s %v\n", p.Bad("✗"), r.Err)
		}
	}
	return nil
}
