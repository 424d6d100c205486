package check

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/monibahmed/nixos-config/internal/hwconfig"
	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/trouble"
)

// maxHardwareWarnings per target: the first few show what is wrong.
const maxHardwareWarnings = 8

// HardwareWarnings checks every target's hardware-configuration.nix against
// what nixos-generate-config writes (internal/hwconfig): a hardware file
// that adds users, keys, sudo rules, services or overrides is worth a word,
// however it got there (mage hardware -allowextra, or an edit).
func HardwareWarnings(root string, inv *inventory.Inventory) []string {
	var w []string
	for _, t := range inv.Targets {
		rel := filepath.Join("targets", t.Name, "hardware-configuration.nix")
		f, err := os.Open(filepath.Join(root, rel))
		if err != nil {
			continue // stage 2 reports missing files
		}
		data, err := io.ReadAll(io.LimitReader(f, hwconfig.MaxSize+1))
		f.Close()
		if err != nil {
			w = append(w, fmt.Sprintf("%s: reading %s: %v", t.Name, rel, err))
			continue
		}
		rep := hwconfig.Analyze(data)
		// nixos-generate-config writes the boot loader into
		// configuration.nix, never into this file: here it is lost on the
		// next mage hardware, and the machine falls back to GRUB without a
		// device (issue 12).
		var loader []string
		for _, o := range rep.Options {
			if strings.HasPrefix(o, "boot.loader.") {
				loader = append(loader, o)
			}
		}
		if len(loader) > 0 {
			w = append(w, fmt.Sprintf("%s: %s sets %s: boot.loader.* in hardware-configuration.nix: move it to configuration.nix (mage hardware replaces this file)", t.Name, rel, strings.Join(loader, ", ")))
		}
		// Options first (users, sudo, ...), then problems of the text.
		sort.SliceStable(rep.Findings, func(i, j int) bool { return rep.Findings[i].Path != "" && rep.Findings[j].Path == "" })
		for i, fd := range rep.Findings {
			if i == maxHardwareWarnings {
				w = append(w, fmt.Sprintf("%s: %s: and %d more settings nixos-generate-config never writes", t.Name, rel, len(rep.Findings)-i))
				break
			}
			remedy := "if it is yours, move it to configuration.nix, else remove it"
			if fd.Path == "" {
				remedy = "remove it"
			}
			w = append(w, fmt.Sprintf("%s: %s %s; %s (%s)", t.Name, rel, fd, remedy, trouble.See(trouble.Hardware)))
		}
	}
	return w
}
