package lab

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/monibahmed/nixos-config/internal/nix"
)

// HostStatus is what lab:status shows for one host.
type HostStatus struct {
	Name          string `json:"name"`
	Role          string `json:"role"`
	Address       string `json:"address"`
	Running       bool   `json:"running"`
	SSHD          bool   `json:"sshd"`
	NixDaemon     bool   `json:"nixDaemon"`
	Generation    int    `json:"generation"` // 0: none yet
	CurrentSystem string `json:"currentSystem,omitempty"`
}

// Status inspects every host of a lab that is up.
func (l *Lab) Status(ctx context.Context) ([]HostStatus, error) {
	if err := l.Open(); err != nil {
		return nil, err
	}
	var out []HostStatus
	for _, h := range l.state.Hosts {
		st := HostStatus{Name: h.Name, Role: h.Role, Address: h.Address, Running: h.alive()}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(h.Address, strconv.Itoa(h.sshPort())), 500*time.Millisecond); err == nil {
			st.SSHD = true
			c.Close()
		}
		if st.Running {
			script := `sh "$1" status; echo "profile=$(readlink /nix/var/nix/profiles/system)"; echo "current=$(readlink /run/current-system)"`
			if o, err := l.Exec(ctx, h.Name, "/bin/sh", "-c", script, "status", filepath.Join(h.Dir, "ctl.sh")); err == nil {
				for _, line := range strings.Split(o, "\n") {
					switch {
					case line == "nix-daemon up":
						st.NixDaemon = true
					case strings.HasPrefix(line, "profile="):
						st.Generation = GenerationOf(strings.TrimPrefix(line, "profile="))
					case strings.HasPrefix(line, "current="):
						st.CurrentSystem = strings.TrimPrefix(line, "current=")
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
