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
	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/target"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// health runs the target's health checks on the verification connection.
func (j *job) health(ctx context.Context) *Failure {
	if err := j.d.healthChecks(ctx, j.live(), j.t, j.facts.Systemd); err != nil {
		return &Failure{Section: trouble.Health, Cause: err.Error()}
	}
	return nil
}

// healthChecks runs after an activation: the system must not be degraded
// (where there is systemd), and the target's own checks from its deployment
// facts must pass, each with a timeout and retries. It returns nil or the
// first failure.
func (d *Deployer) healthChecks(ctx context.Context, sh *target.Session, t inventory.Target, systemd bool) error {
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
func systemState(ctx context.Context, sh *target.Session) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _ := sh.Run(ctx, "systemctl is-system-running", "systemctl is-system-running", nil)
		state := target.Clean(strings.TrimSpace(out.Stdout), 40)
		switch state {
		case "running":
			return nil
		case "degraded":
			units, _ := sh.Run(ctx, "systemctl --failed", "systemctl --failed --no-legend --plain | awk '{print $1}' | head -n 20", nil)
			return fmt.Errorf("the system is degraded: failed units: %s", target.Clean(strings.Join(strings.Fields(units.Stdout), ", "), 400))
		case "starting", "initializing", "maintenance":
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

func runCheck(ctx context.Context, sh *target.Session, t inventory.Target, h inventory.HealthCheck) error {
	timeout := h.TimeoutOrDefault()
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
		last = checkOnce(cctx, sh, t, h, timeout)
		cancel()
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("health check failed: %s: %v (%d attempts, %v each)", describe(t, h), last, attempts, timeout)
}

func checkOnce(ctx context.Context, sh *target.Session, t inventory.Target, h inventory.HealthCheck, timeout time.Duration) error {
	switch h.Type {
	case "command":
		// Killed on the target at its timeout (not only abandoned here).
		secs := int((timeout + time.Second - 1) / time.Second)
		out, err := sh.Conn.Exec(ctx, sshx.Command{Name: "health check", Line: fmt.Sprintf("timeout -s KILL %d sh -c %s", secs, run.Quote(h.Command)),
			Limit: 64 << 10, Timeout: timeout + 5*time.Second})
		if err != nil {
			if ctx.Err() != nil || out.Code == 137 {
				return fmt.Errorf("timed out")
			}
			msg := target.Clean(strings.Join(target.LastLines(out.Stderr+"\n"+out.Stdout, 2), " | "), 300)
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
		// No proxy from the environment and no redirects: the check talks
		// to the target and nowhere else (a 3xx answer counts as up).
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP status %d", resp.StatusCode)
		}
		return nil
	}
	return fmt.Errorf("unknown check type %q", h.Type)
}
