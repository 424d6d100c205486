package target

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/monibahmed/nixos-config/internal/sshx"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// Facts are what the preflight learns about a target before taking its
// lock: who it is and what it can do. Nothing here decides a deployment's
// rollback; State (read under the lock) does.
type Facts struct {
	Hostname string
	Sudo     string // SudoOK, SudoPassword, SudoMissing
	Nix      bool
	Systemd  bool
	Lab      bool // a lab host of this repository (accepts test-double systems)
}

// Sudo states of the preflight.
const (
	SudoOK       = "ok"
	SudoPassword = "password"
	SudoMissing  = "missing"
)

const factsScript = `echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
if command -v sudo >/dev/null 2>&1; then
	sudo -n true >/dev/null 2>&1
	case $? in
	0) echo sudo=ok ;;
	126 | 127) echo sudo=missing ;;
	*) echo sudo=password ;;
	esac
else
	echo sudo=missing
fi
if command -v nix-env >/dev/null 2>&1 && command -v nix-store >/dev/null 2>&1; then echo nix=ok; else echo nix=missing; fi
if [ -d /run/systemd/system ]; then echo systemd=yes; else echo systemd=no; fi
if [ -e /var/lib/lab/sshd_config ]; then echo lab=yes; else echo lab=no; fi
`

var hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?$`)

// ReadFacts runs the preflight probe.
func (s *Session) ReadFacts(ctx context.Context) (Facts, error) {
	out, err := s.Run(ctx, "preflight", factsScript, nil)
	if err != nil {
		e := commandError("the preflight probe", err, out)
		var se *sshx.Error
		switch {
		case errors.As(err, &se) && se.Kind == sshx.KindSlow:
			e.Remedy = "check that the target runs a POSIX shell for " + s.User + " and answers in time (-cmdtimeout gives it more)"
		case errors.As(err, &se) && se.Kind != sshx.KindTooMuch:
			// The connection's own trouble: its remedy stands.
		default:
			e.Remedy = "check that the target runs a POSIX shell for " + s.User + " (its shell startup files print nothing)"
		}
		return Facts{}, e
	}
	var f Facts
	seen := map[string]bool{}
	for _, line := range strings.Split(out.Stdout, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), "=")
		if !ok || seen[k] {
			continue
		}
		seen[k] = true
		switch k {
		case "hostname":
			f.Hostname = strings.TrimSpace(v)
		case "sudo":
			f.Sudo = v
		case "nix":
			f.Nix = v == "ok"
		case "systemd":
			f.Systemd = v == "yes"
		case "lab":
			f.Lab = v == "yes"
		}
	}
	if !seen["hostname"] || !seen["sudo"] {
		// The probe did not run as written: a login shell that does not
		// take `exec /bin/sh -c '...'` (sshx.PosixLine), or startup files
		// that replace the command.
		return f, &Error{Section: trouble.TargetSetup, Cause: fmt.Sprintf("the preflight probe did not run on the target (it printed %q)", Clean(firstLines(out.Stdout+out.Stderr, 2), 160)),
			Remedy: "check " + s.User + "'s login shell on the target (sh, bash, zsh and fish work; csh, tcsh and nushell do not) and that its startup files print nothing and run the command they are given"}
	}
	if !hostnameRE.MatchString(f.Hostname) {
		return f, &Error{Section: trouble.TargetSetup, Cause: fmt.Sprintf("the target's host name %q is not a valid host name", Clean(f.Hostname, 80)),
			Remedy: "check networking.hostName on the target (letters, digits, '-' and '.')"}
	}
	switch f.Sudo {
	case SudoOK, SudoPassword, SudoMissing:
	default:
		return f, &Error{Section: trouble.TargetSetup, Cause: "the preflight probe gave no usable answer about sudo",
			Remedy: "check the target's shell startup files for output (they must print nothing for non-interactive shells)"}
	}
	return f, nil
}

// State is what a deployment decides from; it is read under the lock.
type State struct {
	// Current is /run/current-system (empty: none).
	Current string
	// Generation is the system profile's generation (0: none) and
	// Profile its system.
	Generation int
	Profile    string
	// Free is the space available on /nix/store, in bytes (-1: unknown).
	Free int64
}

// FreeProbe is a shell command printing one line, "free=<KiB available
// on /nix/store>" (empty when unknown); ParseFree reads it.
const FreeProbe = `echo "free=$(df -Pk /nix/store 2>/dev/null | awk 'NR==2 {print $4}')"`

const stateScript = `echo "current=$(readlink /run/current-system 2>/dev/null)"
echo "profile=$(readlink /nix/var/nix/profiles/system 2>/dev/null)"
echo "profilepath=$(readlink -f /nix/var/nix/profiles/system 2>/dev/null)"
` + FreeProbe + "\n"

// ParseFree validates FreeProbe's line: bytes free, -1 when unknown.
func ParseFree(line string) (int64, error) {
	k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), "=")
	if !ok || k != "free" {
		return -1, badFact("free space on /nix", line)
	}
	return parseFreeKB(strings.TrimSpace(v))
}

func parseFreeKB(v string) (int64, error) {
	if v == "" {
		return -1, nil
	}
	kb, err := strconv.ParseInt(v, 10, 64)
	// Up to an exabyte; anything else is not a df answer.
	if err != nil || kb < 0 || kb > 1<<50 {
		return -1, badFact("free space on /nix", v)
	}
	return kb * 1024, nil
}

// ReadState reads the target's current system and generation.
func (s *Session) ReadState(ctx context.Context) (State, error) {
	out, err := s.Run(ctx, "state", stateScript, nil)
	if err != nil {
		return State{}, commandError("reading the target's system profile", err, out)
	}
	return ParseState(out.Stdout)
}

// ParseState validates the state probe's output.
func ParseState(out string) (State, error) {
	st := State{Free: -1}
	var link string
	seen := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), "=")
		if !ok || seen[k] {
			continue
		}
		seen[k] = true
		v = strings.TrimSpace(v)
		switch k {
		case "current":
			st.Current = v
		case "profile":
			link = v
		case "profilepath":
			st.Profile = v
		case "free":
			free, err := parseFreeKB(v)
			if err != nil {
				return st, err
			}
			st.Free = free
		}
	}
	if st.Current != "" && !IsStorePath(st.Current) {
		return st, badFact("/run/current-system", st.Current)
	}
	if link != "" {
		g, ok := ParseGeneration(link)
		if !ok {
			return st, badFact("the system profile", link)
		}
		st.Generation = g
		if !IsStorePath(st.Profile) {
			return st, badFact("the system profile's target", st.Profile)
		}
	} else {
		st.Profile = ""
	}
	return st, nil
}

func badFact(what, v string) *Error {
	return &Error{Section: trouble.TargetSetup, Cause: fmt.Sprintf("the target reports an invalid %s: %q", what, Clean(v, 120)),
		Remedy: "this is not what a NixOS machine reports: check the target (console) before deploying to it"}
}

// storePathRE is a path directly under /nix/store (Nix's name rules).
var storePathRE = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]{1,211}$`)

// IsStorePath reports whether p is a store path (not a path inside one).
func IsStorePath(p string) bool { return storePathRE.MatchString(p) }

// MaxGeneration bounds generation numbers read from a target.
const MaxGeneration = 1_000_000

// ParseGeneration reads N from a profile link "system-N-link" (or a path
// ending in it). N must be a positive number below MaxGeneration.
func ParseGeneration(link string) (int, bool) {
	link = strings.TrimSpace(link)
	if i := strings.LastIndexByte(link, '/'); i >= 0 {
		link = link[i+1:]
	}
	digits, ok := strings.CutPrefix(link, "system-")
	if !ok {
		return 0, false
	}
	digits, ok = strings.CutSuffix(digits, "-link")
	if !ok || digits == "" || len(digits) > 7 || strings.Trim(digits, "0123456789") != "" || digits[0] == '0' {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 || n >= MaxGeneration {
		return 0, false
	}
	return n, true
}

// firstLines is the first n lines of s, joined with " | ".
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}
