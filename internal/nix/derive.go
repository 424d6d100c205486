package nix

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/monibahmed/nixos-config/internal/run"
)

// Derivation is a system evaluated but not built: its store derivation,
// the output path it will have, and the system that must build it.
type Derivation struct {
	Drv    string `json:"drv"`
	Out    string `json:"out"`
	System string `json:"system"`
}

var (
	storePathRE = regexp.MustCompile(`^/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$`)
	systemRE    = regexp.MustCompile(`^[a-z0-9_]+-[a-z0-9_]+$`)
)

// IsStorePath tells whether p is a store path name (no subpath, no
// characters a store path cannot have).
func IsStorePath(p string) bool { return storePathRE.MatchString(p) }

// derivationsApply is the function `nix eval` applies to
// nixosConfigurations: for each name its toplevel's .drv, output and
// `system` (the derivation's, i.e. nixpkgs' stdenv.buildPlatform.system in
// pkgs/stdenv/generic/make-derivation.nix: where it must be built, which
// for a cross-compiled system is the build machine's, not the target's).
// Evaluating drvPath writes the store derivations, and builds nothing.
func derivationsApply(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	return "cs: builtins.listToAttrs (map (n: { name = n; value = let t = cs.${n}.config.system.build.toplevel; in { drv = t.drvPath; out = t.outPath; system = t.system; }; }) [ " +
		strings.Join(quoted, " ") + " ])"
}

// Derivations evaluates the systems of names in one `nix eval` (one
// evaluator for all of them) without building anything. Errors go to p.
// Names must be valid target names (they are written into the expression).
func (n Nix) Derivations(ctx context.Context, f Flake, names []string, p *LogParser) (map[string]Derivation, error) {
	args := append([]string{"eval", "--json", "--log-format", "internal-json", f.Ref() + "#nixosConfigurations", "--apply", derivationsApply(names)}, f.Args()...)
	out, err := n.stream(ctx, f.Offline(), args, p, nil)
	if err != nil {
		return nil, err
	}
	var m map[string]Derivation
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, fmt.Errorf("reading nix eval output: %w", err)
	}
	for _, name := range names {
		d, ok := m[name]
		if !ok || !IsStorePath(d.Drv) || !strings.HasSuffix(d.Drv, ".drv") || !IsStorePath(d.Out) || !systemRE.MatchString(d.System) {
			return nil, fmt.Errorf("nix eval returned no valid derivation for %s: %+v", name, d)
		}
	}
	return m, nil
}

// Realise builds store derivations with `nix-store --realise` (the one
// command that takes a .drv and builds its outputs in every Nix from 2.8
// on: `nix build <drv>^out` needs 2.13 or so, and a bare .drv means the
// derivation itself in newer Nix) and returns the paths it printed. f
// tells whether they come from the test double (GlobalArgs).
func (n Nix) Realise(ctx context.Context, f Flake, drvs []string, p *LogParser) ([]string, error) {
	if len(drvs) == 0 {
		return nil, nil
	}
	c := run.Cmd{Name: "nix-store", Args: append(append(GlobalArgs(f.Offline()), RealiseArgs()...), drvs...), Env: n.Env}
	if p != nil {
		c.Stderr = p
	}
	out, err := n.run(ctx, c)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// RealiseArgs are nix-store's arguments before the derivations: keep
// building the others when one fails, progress as internal-json.
func RealiseArgs() []string {
	return []string{"--realise", "--keep-going", "--log-format", "internal-json"}
}

// Platforms is what a machine's Nix builds: its system, extra-platforms,
// and the systems of the remote builders it may hand builds to.
type Platforms struct {
	System   string
	Extra    []string
	Builders []string // systems of the machines in `builders`
}

// CanBuild tells whether a derivation of system can be built there.
func (p Platforms) CanBuild(system string) bool {
	if system == p.System {
		return true
	}
	for _, l := range [][]string{p.Extra, p.Builders} {
		for _, s := range l {
			if s == system {
				return true
			}
		}
	}
	return false
}

// String lists the systems, e.g. "x86_64-linux (also i686-linux)".
func (p Platforms) String() string {
	s := p.System
	var also []string
	seen := map[string]bool{p.System: true}
	for _, l := range [][]string{p.Extra, p.Builders} {
		for _, x := range l {
			// x86_64-v3-linux and the like are CPU levels, not platforms
			// anyone deploys: leave them out of messages.
			if !seen[x] && !strings.Contains(x, "-v") {
				seen[x] = true
				also = append(also, x)
			}
		}
	}
	if len(also) > 0 {
		sort.Strings(also)
		s += " (also " + strings.Join(also, ", ") + ")"
	}
	return s
}

// MachinesMarker separates `nix show-config` from the builders' machines
// file in PlatformsScript's output.
const MachinesMarker = "@@nixos-config-machines"

// PlatformsScript prints `nix show-config` (`nix config show` where
// show-config is gone), then, when builders names a machines file, the
// marker and the file's first 64 KiB. Run on a build host as its SSH user.
const PlatformsScript = `c=$(nix --extra-experimental-features nix-command show-config 2>/dev/null || nix --extra-experimental-features nix-command config show) || exit $?
printf '%s\n' "$c"
f=$(printf '%s\n' "$c" | sed -n 's/^builders = @//p')
if [ -n "$f" ] && [ -r "$f" ]; then printf '%s\n' '` + MachinesMarker + `'; head -c 65536 "$f"; fi
`

// ParsePlatforms reads PlatformsScript's output (or `nix show-config`'s,
// with the machines file after MachinesMarker).
func ParsePlatforms(text string) (Platforms, error) {
	var p Platforms
	conf, machines, _ := strings.Cut(text, MachinesMarker+"\n")
	builders := ""
	for _, l := range strings.Split(conf, "\n") {
		k, v, ok := strings.Cut(l, " = ")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "system":
			p.System = strings.TrimSpace(v)
		case "extra-platforms":
			p.Extra = strings.Fields(v)
		case "builders":
			builders = strings.TrimSpace(v)
		}
	}
	if !systemRE.MatchString(p.System) {
		return p, fmt.Errorf("nix show-config names no system (%q)", p.System)
	}
	if !strings.HasPrefix(builders, "@") {
		machines = builders
	}
	p.Builders = machineSystems(machines, p.System)
	return p, nil
}

// machineSystems reads the systems of a machines list (nix.conf's builders
// or /etc/nix/machines): one machine per line or ';', the systems in the
// second field, comma-separated ("-" or none: the local system).
func machineSystems(list, local string) []string {
	var out []string
	for _, m := range strings.FieldsFunc(list, func(r rune) bool { return r == '\n' || r == ';' }) {
		if i := strings.IndexByte(m, '#'); i >= 0 {
			m = m[:i]
		}
		f := strings.Fields(m)
		switch {
		case len(f) == 0:
			continue
		case len(f) == 1 || f[1] == "-":
			out = append(out, local)
		default:
			for _, s := range strings.Split(f[1], ",") {
				if systemRE.MatchString(s) {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// Platforms asks this machine's Nix what it can build.
func (n Nix) Platforms(ctx context.Context) (Platforms, error) {
	out, err := n.stream(ctx, false, []string{"show-config"}, nil, nil)
	if err != nil {
		// `nix show-config` may be gone in a future Nix: `nix config show`.
		var err2 error
		if out, err2 = n.stream(ctx, false, []string{"config", "show"}, nil, nil); err2 != nil {
			return Platforms{}, err
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if f, ok := strings.CutPrefix(l, "builders = @"); ok {
			if data, rerr := os.ReadFile(strings.TrimSpace(f)); rerr == nil {
				if len(data) > 64<<10 {
					data = data[:64<<10]
				}
				out += "\n" + MachinesMarker + "\n" + string(data)
			}
		}
	}
	return ParsePlatforms(out)
}

var (
	// Nix <= 2.26: "a 'aarch64-linux' with features {} is required to build
	// '/nix/store/…drv', but I am a 'x86_64-linux' with features {…}".
	mismatchOldRE = regexp.MustCompile(`a '([^']+)' with features \{[^}]*\} is required to build`)
	// Nix 2.34: "Cannot build '…drv'. Reason: platform mismatch Required
	// system: 'aarch64-linux' Current system: 'x86_64-linux'".
	mismatchNewRE = regexp.MustCompile(`Required system: '([^']+)'`)
)

// PlatformMismatch tells whether Nix refused a build because the machine
// does not build the derivation's system, and which system was required.
func PlatformMismatch(text string) (string, bool) {
	text = StripANSI(text)
	for _, re := range []*regexp.Regexp{mismatchOldRE, mismatchNewRE} {
		if m := re.FindStringSubmatch(text); m != nil {
			return m[1], true
		}
	}
	return "", false
}
