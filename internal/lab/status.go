package lab

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/nix"
)

// HostStatus is what lab:status shows for one host.
type HostStatus struct {
	Name          string `json:"name"`
	Role          string `json:"role"`
	Kind          string `json:"kind,omitempty"` // KindSystemd for systemd hosts
	Address       string `json:"address"`
	Running       bool   `json:"running"`
	SSHD          bool   `json:"sshd"`
	NixDaemon     bool   `json:"nixDaemon"`
	Generation    int    `json:"generation"` // 0: none yet
	CurrentSystem string `json:"currentSystem,omitempty"`
	// SystemState is `systemctl is-system-running` on a systemd host.
	SystemState string `json:"systemState,omitempty"`
}

// Status inspects every host of a lab that is up.
func (l *Lab) Status(ctx context.Context) ([]HostStatus, error) {
	if err := l.Open(); err != nil {
		return nil, err
	}
	var out []HostStatus
	for _, h := range l.state.Hosts {
		st := HostStatus{Name: h.Name, Role: h.Role, Kind: h.Kind, Address: h.Address, Running: h.alive()}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, strconv.Itoa(h.sshPort())), 500*time.Millisecond); err == nil {
			st.SSHD = true
			c.Close()
		}
		if st.Running {
			script := `sh -c "$1" ctl status; echo "profile=$(readlink /nix/var/nix/profiles/system)"; echo "current=$(readlink /run/current-system)"`
			if o, err := l.Exec(ctx, h.Name, "/bin/sh", "-c", script, "status", ctlScript); err == nil {
				for _, line := range strings.Split(o, "\n") {
					switch {
					case line == "nix-daemon up":
						st.NixDaemon = true
					case strings.HasPrefix(line, "profile="):
						st.Generation = GenerationOf(strings.TrimPrefix(line, "profile="))
					case strings.HasPrefix(line, "current="):
						st.CurrentSystem = strings.TrimPrefix(line, "current=")
					case strings.HasPrefix(line, "system="):
						st.SystemState = systemState(strings.TrimPrefix(line, "system="))
					}
				}
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// GenerationOf reads N from a profile link name "system-N-link"; 0 otherwise.
func GenerationOf(link string) int { return nix.GenerationOf(link) }

// systemState keeps a word of `systemctl is-system-running` (lower-case
// letters and dashes), "unknown" otherwise.
func systemState(s string) string {
	if s == "" || len(s) > 20 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz-") != "" {
		return "unknown"
	}
	return s
}
