// Package scaffold creates new targets from templates and installs the
// hardware configuration of a real machine.
package scaffold

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/monibahmed/nixos-config/internal/hwconfig"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/trouble"
	"github.com/monibahmed/nixos-config/internal/ui"
)

//go:embed templates
var templates embed.FS

// Spec of a new target.
type Spec struct {
	Name    string
	Address string
	User    string
	System  string
}

// Git is what scaffolding needs from git.
type Git interface {
	Add(ctx context.Context, paths ...string) error
}

// New creates targets/<name>/ with a minimal configuration, the hardware
// placeholder, target.json and a README, and adds it to git (flakes ignore
// untracked files). It refuses invalid and existing names.
func New(ctx context.Context, root string, s Spec, git Git) ([]string, error) {
	if err := inventory.ValidateName(s.Name); err != nil {
		return nil, err
	}
	if s.Name == inventory.CommonDir {
		return nil, fmt.Errorf("%q is reserved for the shared modules", s.Name)
	}
	if s.Address == "" {
		return nil, errors.New("no address: give the machine's address with -address=<ip or host name>")
	}
	if err := inventory.ValidateAddress(s.Address); err != nil {
		return nil, err
	}
	if s.User == "" {
		s.User = inventory.DefaultUser
	}
	if err := inventory.ValidateUser(s.User); err != nil {
		return nil, err
	}
	if s.System == "" {
		s.System = inventory.DefaultSystem
	}
	if err := inventory.ValidateSystem(s.System); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "targets", s.Name)
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("target %s already exists (targets/%s)", s.Name, s.Name)
	}
	facts, err := json.MarshalIndent(inventory.Facts{Address: s.Address, User: s.User, System: s.System, Tags: []string{}}, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"target.json": append(facts, '\n')}
	for _, name := range []string{"configuration.nix", "hardware-configuration.nix", "README.md"} {
		data, err := render(name, s)
		if err != nil {
			return nil, err
		}
		files[name] = data
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		written = append(written, filepath.Join("targets", s.Name, name))
	}
	if err := git.Add(ctx, filepath.Join("targets", s.Name)); err != nil {
		return written, fmt.Errorf("created targets/%s but `git add` failed (flakes ignore untracked files): %w", s.Name, err)
	}
	return written, nil
}

func render(name string, s Spec) ([]byte, error) {
	src, err := templates.ReadFile("templates/" + name)
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, s); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Placeholder returns the hardware configuration placeholder for a target
// of the given system ("" for the default).
func Placeholder(system string) []byte {
	if system == "" {
		system = inventory.DefaultSystem
	}
	data, _ := render("hardware-configuration.nix", Spec{System: system})
	return data
}

// Parser checks Nix syntax.
type Parser interface {
	ParseFile(ctx context.Context, path string) error
}

// Hardware is a fetched hardware configuration to install.
type Hardware struct {
	Content []byte
	// Source names where it came from (an address), for messages.
	Source string
	// AllowExtra installs it even when it sets what nixos-generate-config
	// never writes (the findings are returned for the caller to show).
	AllowExtra bool
}

// RefusedError: the hardware configuration sets what nixos-generate-config
// never writes, and nothing was written.
type RefusedError struct {
	Source string
	Report hwconfig.Report
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the hardware configuration from %s sets what nixos-generate-config never writes, so nothing was written (%s): check the machine, or if you trust every line, rerun with -allowextra (%s)",
		e.Source, e.Report.Summary(2), trouble.See(trouble.Hardware))
}

// InstallHardware validates a hardware configuration and writes it into the
// target's directory: it must be small, parse (nix-instantiate --parse), and
// set only what nixos-generate-config writes (hwconfig.Analyze), unless
// AllowExtra. It returns the previous content and the analysis.
func InstallHardware(ctx context.Context, root, name string, hw Hardware, p Parser) ([]byte, hwconfig.Report, error) {
	var rep hwconfig.Report
	if err := inventory.ValidateName(name); err != nil {
		return nil, rep, err
	}
	dir := filepath.Join(root, "targets", name)
	if _, err := os.Stat(dir); err != nil {
		return nil, rep, fmt.Errorf("target %s does not exist: create it with mage new %s -address=<address>", name, name)
	}
	content := hw.Content
	if len(bytes.TrimSpace(content)) == 0 || !bytes.Contains(content, []byte("{")) {
		return nil, rep, errors.New("nixos-generate-config printed no configuration")
	}
	if len(content) > hwconfig.MaxSize {
		return nil, rep, fmt.Errorf("the hardware configuration from %s has %d bytes, more than %d: a generated one is a few KiB; nothing was written (%s)", hw.Source, len(content), hwconfig.MaxSize, trouble.See(trouble.Hardware))
	}
	tmp, err := os.CreateTemp("", "hardware-*.nix")
	if err != nil {
		return nil, rep, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return nil, rep, err
	}
	tmp.Close()
	if err := p.ParseFile(ctx, tmp.Name()); err != nil {
		// Nix quotes the offending line: it comes from the machine.
		return nil, rep, ui.SanitizeError(fmt.Errorf("the generated hardware configuration does not parse: %w", err), 400)
	}
	rep = hwconfig.Analyze(content)
	if !rep.OK() && !hw.AllowExtra {
		return nil, rep, &RefusedError{Source: hw.Source, Report: rep}
	}
	path := filepath.Join(dir, "hardware-configuration.nix")
	old, _ := os.ReadFile(path)
	if err := os.WriteFile(path, content, 0o644); err != nil {
		return nil, rep, err
	}
	return old, rep, nil
}

// FirmwareProbe prints "uefi" or "bios" on a Linux machine.
const FirmwareProbe = "if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi"

// BootAdvice says which boot loader lines targets/<name>/configuration.nix
// needs on a machine whose firmware FirmwareProbe reported. The generated
// hardware configuration never contains them.
func BootAdvice(name, firmware string) string {
	cfg := filepath.Join("targets", name, "configuration.nix")
	switch strings.TrimSpace(firmware) {
	case "uefi":
		return fmt.Sprintf("the machine boots with UEFI: %s needs boot.loader.systemd-boot.enable = true and boot.loader.efi.canTouchEfiVariables = true", cfg)
	case "bios":
		return fmt.Sprintf("the machine boots with BIOS: %s needs GRUB on the boot disk, boot.loader.grub.device = \"/dev/disk/by-id/<disk>\" (see `ls -l /dev/disk/by-id` there), and no systemd-boot lines", cfg)
	}
	return fmt.Sprintf("could not tell whether the machine boots with UEFI or BIOS: check the boot loader lines in %s", cfg)
}
