package nix

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/monibahmed/nixos-config/internal/trouble"
)

// EnvKind names a problem of the Nix installation on this machine (as
// opposed to a problem of the configuration being evaluated or built).
type EnvKind string

// Problems of the local Nix installation.
const (
	// EnvDaemonPermission: this user may not open the nix-daemon's socket.
	EnvDaemonPermission EnvKind = "daemon permission"
	// EnvNoDaemon: Nix wants the daemon and none answers on its socket.
	EnvNoDaemon EnvKind = "no daemon"
	// EnvStoreAccess: no daemon, and this user cannot write /nix itself.
	EnvStoreAccess EnvKind = "store access"
	// EnvBuildUsers: build-users-group names a group this machine lacks.
	EnvBuildUsers EnvKind = "build users"
	// EnvFeatures: an experimental feature the toolkit needs is disabled.
	EnvFeatures EnvKind = "features"
)

// EnvError is a problem of the local Nix installation, with its cause and remedy.
type EnvError struct {
	Kind   EnvKind
	Cause  string
	Remedy string
	Text   string // the line of Nix's output that showed it
	Err    error  // the failed command
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("%s: %s (%s)", e.Cause, e.Remedy, trouble.See(trouble.LocalNix))
}

func (e *EnvError) Unwrap() error { return e.Err }

var (
	// The daemon's socket, wherever the state directory is.
	daemonSocketRE = regexp.MustCompile(`[^\s'"]*daemon-socket/socket`)
	buildGroupRE   = regexp.MustCompile(`group '([^']*)' specified in 'build-users-group' does not exist`)
	featureRE      = regexp.MustCompile(`experimental Nix feature '([^']+)' is disabled`)
)

// Environment recognises, in the output of a failed nix command, a problem
// of this machine's Nix installation rather than of what it evaluated or
// built; nil when there is none. It matches what every Nix from 2.8 to 2.34
// has in common (the socket's path and the errno text, the setting's name),
// not one version's sentence: 2.8 says "getting status of
// /nix/var/nix/daemon-socket/socket: Permission denied", later versions
// "cannot connect to socket at '/nix/var/nix/daemon-socket/socket':
// Permission denied".
func Environment(output string) *EnvError {
	for _, line := range strings.Split(output, "\n") {
		if e := environmentLine(StripANSI(line)); e != nil {
			return e
		}
	}
	return nil
}

func environmentLine(l string) *EnvError {
	text := strings.TrimSpace(l)
	switch {
	case daemonSocketRE.MatchString(l) && (strings.Contains(l, "Permission denied") || strings.Contains(l, "Operation not permitted")):
		sock := daemonSocketRE.FindString(l)
		return &EnvError{Kind: EnvDaemonPermission, Text: text,
			Cause:  "this user may not use the Nix daemon (permission denied on " + sock + "), not a problem of the configuration",
			Remedy: "add the user to the group allowed to use the daemon (Debian: `sudo adduser $USER nix-users`, then log in again), or run as root"}
	case daemonSocketRE.MatchString(l) && (strings.Contains(l, "No such file or directory") || strings.Contains(l, "Connection refused")):
		sock := daemonSocketRE.FindString(l)
		return &EnvError{Kind: EnvNoDaemon, Text: text,
			Cause:  "no Nix daemon answers on " + sock + ", and this user cannot use the store without one",
			Remedy: "run as root (root uses /nix directly), or start the daemon (Debian: `apt-get install nix-setup-systemd`; elsewhere `systemctl start nix-daemon`)"}
	case strings.Contains(l, "/nix/var/nix") && (strings.Contains(l, "Permission denied") || strings.Contains(l, "Operation not permitted")):
		return &EnvError{Kind: EnvStoreAccess, Text: text,
			Cause:  "this user cannot write the Nix store under /nix and no Nix daemon serves it",
			Remedy: "run as root, or install the Nix daemon so other users can build (Debian: `apt-get install nix-setup-systemd`, then `adduser $USER nix-users`)"}
	case buildGroupRE.MatchString(l):
		g := buildGroupRE.FindStringSubmatch(l)[1]
		return &EnvError{Kind: EnvBuildUsers, Text: text,
			Cause: "Nix is configured to build as the members of group '" + g + "' (build-users-group), and this machine has no such group",
			Remedy: "run as root without a daemon (the toolkit then builds without build users), or set `build-users-group =` in /etc/nix/nix.conf and restart nix-daemon, " +
				"or create the group and its build users as Nix's multi-user installation does"}
	case featureRE.MatchString(l):
		f := featureRE.FindStringSubmatch(l)[1]
		return &EnvError{Kind: EnvFeatures, Text: text,
			Cause:  "Nix refuses the experimental feature '" + f + "' that the toolkit enables on its command line",
			Remedy: "upgrade Nix, or allow the feature in /etc/nix/nix.conf (experimental-features = nix-command flakes)"}
	}
	return nil
}
