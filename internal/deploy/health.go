package deploy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/run"
)

// healthChecks runs after an activation: the system must not be degraded
// (where there is systemd), and the target's own checks from its deployment
// facts must pass, each with a timeout and retries. It returns nil or the
// first failure.
func (d *Deployer) healthChecks(ctx context.Context, sh Shell, t inventory.Target, systemd bool) error {
	if systemd {
		if err := systemState(ctx, sh); err != nil {
			return err
		}
	}
	for _, h := range t.Health {
		if err := runCheck(ctx, sh, t, h); err != nil {
			return err
		}
	}
	return nil
}

// systemState waits for `systemctl is-system-running` to settle.
func systemState(ctx context.Context, sh Shell) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := sh.Run(ctx, "systemctl is-system-running", nil)
		state := strings.TrimSpace(out.Stdout)
		switch state {
		case "running":
			return nil
		case "degraded":
			units, _ := sh.Run(ctx, "systemctl --failed --no-legend --plain | awk '{print $1}'", nil)
			return fmt.Errorf("the system is degraded: failed units: %s", strings.Join(strings.Fields(units.Stdout), ", "))
		case "starting", "initializing":
			if time.Now().After(deadline) {
				return fmt.Errorf("the system is still %s after 90s", state)
			}
		default:
			return fmt.Errorf("systemctl is-system-running says %q", state)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func describe(t inventory.Target, h inventory.HealthCheck) string {
	switch h.Type {
	case "command":
		return fmt.Sprintf("command %q on %s", h.Command, t.Name)
	case "tcp":
		return fmt.Sprintf("TCP port %d on %s", h.Port, t.Address)
	}
	return "HTTP " + checkURL(t, h)
}

func checkURL(t inventory.Target, h inventory.HealthCheck) string {
	if h.URL != "" {
		return h.URL
	}
	path := h.Path
	if path == "" {
		path = "/"
	}
	return "http://" + net.JoinHostPort(t.Address, strconv.Itoa(h.Port)) + path
}

func runCheck(ctx context.Context, sh Shell, t inventory.Target, h inventory.HealthCheck) error {
	timeout := 5 * time.Second
	if h.Timeout != "" {
		if d, err := time.ParseDuration(h.Timeout); err == nil {
			timeout = d
		}
	}
	attempts := h.Retries
	if attempts <= 0 {
		attempts = 3
	}
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
			}
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		last = checkOnce(cctx, sh, t, h)
		cancel()
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("health check failed: %s: %v (%d attempts, %v each)", describe(t, h), last, attempts, timeout)
}

func checkOnce(ctx context.Context, sh Shell, t inventory.Target, h inventory.HealthCheck) error {
	switch h.Type {
	case "command":
		out, err := sh.Run(ctx, "sh -c "+run.Quote(h.Command), nil)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("timed out")
			}
			msg := strings.TrimSpace(out.Stderr + " " + out.Stdout)
			return fmt.Errorf("exit status %d %s", out.Code, msg)
		}
		return nil
	case "tcp":
		var dl net.Dialer
		c, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(t.Address, strconv.Itoa(h.Port)))
		if err != nil {
			return err
		}
		return c.Close()
	case "http":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, checkURL(t, h), nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP status %d", resp.StatusCode)
		}
		return nil
	}
	return fmt.Errorf("unknown check type %q", h.Type)
}
