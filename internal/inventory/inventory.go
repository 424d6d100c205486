// Package inventory reads the deployment facts of the fleet: one plain JSON
// file per target (targets/<name>/target.json), or a single inventory file
// mapping names to facts (the output of `nix eval --json .#targets`, and what
// the lab writes).
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// DefaultUser is the SSH user on every target unless its facts say otherwise.
const DefaultUser = "monibahmed"

// DefaultSystem is assumed when a target does not name its platform.
const DefaultSystem = "x86_64-linux"

// FactsFile is the name of the per-target deployment facts file.
const FactsFile = "target.json"

// CommonDir is the directory under targets/ that holds shared modules, not a target.
const CommonDir = "common"

// RequiredFiles are the files every target directory must have.
var requiredFiles = []string{"configuration.nix", "hardware-configuration.nix", "README.md", FactsFile}

// RequiredFiles returns the files every target directory must contain.
func RequiredFiles() []string { return append([]string(nil), requiredFiles...) }

// HealthCheck is one per-target check run after activation.
type HealthCheck struct {
	// Type is "command" (run on the target), "tcp" (connect from the
	// deployer to port on the target's address) or "http" (GET from the
	// deployer, expects 2xx/3xx; either a full url, or port and path on the
	// target's address, which also works for lab addresses).
	Type    string `json:"type"`
	Command string `json:"command,omitempty"`
	Port    int    `json:"port,omitempty"`
	Path    string `json:"path,omitempty"`
	URL     string `json:"url,omitempty"`
	// Timeout per attempt (Go duration, default 5s) and attempts (default 3).
	Timeout string `json:"timeout,omitempty"`
	Retries int    `json:"retries,omitempty"`
}

// DefaultCheckTimeout is a health check's timeout per attempt unless set.
const DefaultCheckTimeout = 5 * time.Second

// TimeoutOrDefault is the check's timeout per attempt.
func (h HealthCheck) TimeoutOrDefault() time.Duration {
	if d, err := time.ParseDuration(h.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultCheckTimeout
}

// Facts is the content of a target.json.
type Facts struct {
	Address string `json:"address"`
	User    string `json:"user,omitempty"`
	// Port is the SSH port (0: ~/.ssh/config's, else 22).
	Port   int           `json:"port,omitempty"`
	System string        `json:"system,omitempty"`
	Tags   []string      `json:"tags,omitempty"`
	Health []HealthCheck `json:"health,omitempty"`
	// Build is where the system is built: "local" (this machine, the
	// default), "target" (the target itself) or the name of another
	// target of the inventory that builds it (see build.go).
	Build string `json:"build,omitempty"`
	// UserSet: User came from the facts (or a flag), not the default, so
	// it wins over ~/.ssh/config's User.
	UserSet bool `json:"-"`
}

// Target is one deployable machine.
type Target struct {
	Name string
	Facts
}

// Inventory is the set of targets, sorted by name.
type Inventory struct {
	Targets []Target
	// Source describes where it was read from, for messages.
	Source string
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// ValidateName checks a target name. Names reach shells and Nix attribute
// paths, so only a conservative character set is allowed.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid target name %q: use lowercase letters, digits and '-', starting with a letter, at most 63 characters", name)
	}
	return nil
}

var (
	userRE   = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	systemRE = regexp.MustCompile(`^[a-z0-9_]+-[a-z0-9_]+$`)
)

// ValidateUser checks an SSH user name.
func ValidateUser(user string) error {
	if !userRE.MatchString(user) {
		return fmt.Errorf("invalid user %q", user)
	}
	return nil
}

var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// ValidateSystem checks a Nix system name such as x86_64-linux (it is
// written into Nix files and target.json).
func ValidateSystem(system string) error {
	if !systemRE.MatchString(system) {
		return fmt.Errorf("invalid system %q (expected e.g. x86_64-linux or aarch64-linux)", system)
	}
	return nil
}

// ValidateAddress accepts an IPv4/IPv6 address or a DNS host name.
func ValidateAddress(addr string) error {
	if addr == "" {
		return errors.New("empty address")
	}
	if net.ParseIP(addr) != nil {
		return nil
	}
	if len(addr) > 253 {
		return fmt.Errorf("invalid address %q: longer than 253 characters", addr)
	}
	labels := strings.Split(strings.TrimSuffix(addr, "."), ".")
	allNumeric := true
	for _, l := range labels {
		if !hostLabelRE.MatchString(l) {
			return fmt.Errorf("invalid address %q: not an IP address or host name", addr)
		}
		if strings.Trim(l, "0123456789") != "" {
			allNumeric = false
		}
	}
	if allNumeric {
		// e.g. 192.168.1.300 — looks like an IPv4 address but is not one.
		return fmt.Errorf("invalid address %q: not a valid IP address", addr)
	}
	return nil
}

// Normalize fills defaults.
func (f *Facts) normalize() {
	f.UserSet = f.User != ""
	if f.User == "" {
		f.User = DefaultUser
	}
	if f.System == "" {
		f.System = DefaultSystem
	}
	if f.Tags == nil {
		f.Tags = []string{}
	}
	if f.Health == nil {
		f.Health = []HealthCheck{}
	}
}

// ParseFacts decodes a target.json, rejecting unknown fields.
func ParseFacts(data []byte) (Facts, error) {
	var f Facts
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, err
	}
	// Nix's builtins.fromJSON rejects anything after the object: so do we.
	if _, err := dec.Token(); err != io.EOF {
		return f, errors.New("unexpected content after the JSON object")
	}
	f.normalize()
	return f, nil
}

// LoadRepo reads every target directory under root/targets (all
// directories except common), the same rule flake.nix applies.
func LoadRepo(root string) (*Inventory, error) {
	dir := filepath.Join(root, "targets")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading targets: %w", err)
	}
	inv := &Inventory{Source: dir}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink != 0 {
			// flake.nix (builtins.readDir) sees a "symlink", not a target.
			return nil, fmt.Errorf("targets/%s is a symbolic link: flakes do not follow it, so it is no target; make it a directory (%s)", e.Name(), trouble.See(trouble.Inventory))
		}
		if !e.IsDir() || e.Name() == CommonDir {
			continue
		}
		t := Target{Name: e.Name()}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), FactsFile))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				// Reported by Lint; keep the target so the name is known.
				t.normalize()
				inv.Targets = append(inv.Targets, t)
				continue
			}
			return nil, fmt.Errorf("target %s: %w", e.Name(), err)
		}
		f, err := ParseFacts(data)
		if err != nil {
			return nil, fmt.Errorf("targets/%s/%s: %w", e.Name(), FactsFile, err)
		}
		t.Facts = f
		inv.Targets = append(inv.Targets, t)
	}
	inv.sort()
	return inv, nil
}

// LoadFile reads an inventory file: a JSON object mapping target names to facts.
func LoadFile(path string) (*Inventory, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes an inventory document. Repeated names are an error (a plain
// JSON decode would silently keep the last one).
func Parse(data []byte, source string) (*Inventory, error) {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("inventory %s: expected a JSON object mapping target names to facts", source)
	}
	inv := &Inventory{Source: source}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("inventory %s: %w", source, err)
		}
		name, _ := tok.(string)
		var msg json.RawMessage
		if err := dec.Decode(&msg); err != nil {
			return nil, fmt.Errorf("inventory %s: target %s: %w", source, name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("inventory %s: target %s is listed twice", source, name)
		}
		seen[name] = true
		f, err := ParseFacts(msg)
		if err != nil {
			return nil, fmt.Errorf("inventory %s: target %s: %w", source, name, err)
		}
		inv.Targets = append(inv.Targets, Target{Name: name, Facts: f})
	}
	inv.sort()
	return inv, nil
}

// Marshal renders the inventory in the file format LoadFile reads.
func (inv *Inventory) Marshal() ([]byte, error) {
	m := make(map[string]Facts, len(inv.Targets))
	for _, t := range inv.Targets {
		m[t.Name] = t.Facts
	}
	return json.MarshalIndent(m, "", "  ")
}

func (inv *Inventory) sort() {
	sort.Slice(inv.Targets, func(i, j int) bool { return inv.Targets[i].Name < inv.Targets[j].Name })
}

// Names lists the target names in order.
func (inv *Inventory) Names() []string {
	out := make([]string, len(inv.Targets))
	for i, t := range inv.Targets {
		out[i] = t.Name
	}
	return out
}

// Get returns the named target or an error listing the valid names.
func (inv *Inventory) Get(name string) (Target, error) {
	if err := ValidateName(name); err != nil {
		return Target{}, fmt.Errorf("%w (known targets: %s)", err, strings.Join(inv.Names(), ", "))
	}
	for _, t := range inv.Targets {
		if t.Name == name {
			return t, nil
		}
	}
	return Target{}, fmt.Errorf("unknown target %q: known targets are %s (inventory %s; %s)", name, strings.Join(inv.Names(), ", "), inv.Source, trouble.See(trouble.Inventory))
}

// Problem is one lint finding.
type Problem struct {
	Target  string
	Message string
}

func (p Problem) String() string {
	if p.Target == "" {
		return p.Message
	}
	return p.Target + ": " + p.Message
}

// Lint checks names, addresses, duplicates, health checks and build hosts.
func (inv *Inventory) Lint() []Problem {
	var probs []Problem
	byAddr := map[string]string{}
	for _, t := range inv.Targets {
		if err := ValidateName(t.Name); err != nil {
			probs = append(probs, Problem{t.Name, err.Error()})
		}
		if t.Address == "" {
			probs = append(probs, Problem{t.Name, "no address in " + FactsFile})
		} else if err := ValidateAddress(t.Address); err != nil {
			probs = append(probs, Problem{t.Name, err.Error()})
		} else {
			// DNS names are case-insensitive and may end with a dot.
			key := strings.ToLower(strings.TrimSuffix(t.Address, "."))
			if ip := net.ParseIP(t.Address); ip != nil {
				key = ip.String()
			}
			if other, dup := byAddr[key]; dup {
				probs = append(probs, Problem{t.Name, fmt.Sprintf("duplicate address %s (also used by %s)", t.Address, other)})
			} else {
				byAddr[key] = t.Name
			}
		}
		if !userRE.MatchString(t.User) {
			probs = append(probs, Problem{t.Name, fmt.Sprintf("invalid user %q", t.User)})
		}
		if t.Port < 0 || t.Port > 65535 {
			probs = append(probs, Problem{t.Name, fmt.Sprintf("invalid port %d (1-65535, or leave it out for 22 / ~/.ssh/config)", t.Port)})
		}
		if !systemRE.MatchString(t.System) {
			probs = append(probs, Problem{t.Name, fmt.Sprintf("invalid system %q (expected e.g. x86_64-linux)", t.System)})
		}
		for i, h := range t.Health {
			if err := h.Validate(); err != nil {
				probs = append(probs, Problem{t.Name, fmt.Sprintf("health check %d: %v", i+1, err)})
			}
		}
		if p := inv.lintBuild(t); p != "" {
			probs = append(probs, Problem{t.Name, p})
		}
	}
	return probs
}

// Validate checks one health check declaration.
func (h HealthCheck) Validate() error {
	switch h.Type {
	case "command":
		if strings.TrimSpace(h.Command) == "" {
			return errors.New(`type "command" needs "command"`)
		}
	case "tcp":
		if h.Port < 1 || h.Port > 65535 {
			return fmt.Errorf(`type "tcp" needs "port" between 1 and 65535, got %d`, h.Port)
		}
	case "http":
		switch {
		case h.URL != "":
			if !strings.HasPrefix(h.URL, "http://") && !strings.HasPrefix(h.URL, "https://") {
				return fmt.Errorf(`type "http" needs "url" starting with http:// or https://, got %q`, h.URL)
			}
		case h.Port < 1 || h.Port > 65535:
			return errors.New(`type "http" needs "url", or "port" (and "path") on the target's address`)
		case h.Path != "" && !strings.HasPrefix(h.Path, "/"):
			return fmt.Errorf(`"path" must start with /, got %q`, h.Path)
		}
	default:
		return fmt.Errorf("unknown type %q (use command, tcp or http)", h.Type)
	}
	if h.Timeout != "" {
		d, err := time.ParseDuration(h.Timeout)
		if err != nil {
			return fmt.Errorf("timeout %q: %w", h.Timeout, err)
		}
		if d <= 0 || d > time.Hour {
			return fmt.Errorf("timeout %q: must be between 1ns and 1h", h.Timeout)
		}
	}
	if h.Retries < 0 || h.Retries > 100 {
		return fmt.Errorf("retries must be between 0 and 100")
	}
	return nil
}

// WithAddress returns the targets in the inventory whose address equals addr.
func (inv *Inventory) WithAddress(addr string) []Target {
	var out []Target
	for _, t := range inv.Targets {
		if strings.EqualFold(t.Address, addr) {
			out = append(out, t)
		}
	}
	return out
}
