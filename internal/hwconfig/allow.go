package hwconfig

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/monibahmed/nixos-config/internal/ui"
)

// The allow-list: what nixos-generate-config writes into
// hardware-configuration.nix (nixpkgs
// nixos/modules/installer/tools/nixos-generate-config.pl, the $hwConfig
// template and the @attrs it collects; older releases also wrote
// powerManagement.cpuFreqGovernor, hardware.video.hidpi.enable and
// uncommented networking.interfaces.<if>.useDHCP lines), plus the boot
// loader choice that the same script writes into configuration.nix
// ($bootLoaderConfig): harmless here, but lost on the next mage hardware,
// so mage check warns about it (internal/check/hardware.go). Every option
// has the shape of value the script writes; lib.mkDefault around a value is
// allowed.

// allowedImports: the modules the script imports, relative to modulesPath.
var allowedImports = map[string]bool{
	"/installer/scan/not-detected.nix":    true, // bare metal
	"/profiles/qemu-guest.nix":            true, // qemu, kvm, bochs
	"/hardware/network/broadcom-43xx.nix": true, // Broadcom FullMAC Wi-Fi
}

type rule struct {
	name    string // e.g. fileSystems.<mount point>.device
	pattern []string
	// seg validates the segment matched by "*" ("" when fine).
	seg   func(string) string
	check func(node) string
}

var (
	kernelModuleRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	fsTypeRE       = regexp.MustCompile(`^[a-z0-9._+-]{1,32}$`)
	mountOptionRE  = regexp.MustCompile(`^[A-Za-z0-9_=.,:/@+%~-]{1,128}$`)
	platformRE     = regexp.MustCompile(`^[a-z0-9_]+(-[a-z0-9_]+){1,3}$`)
	governorRE     = regexp.MustCompile(`^[a-z]{1,32}$`)
	interfaceRE    = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,15}$`)
	uuidRE         = regexp.MustCompile(`^[0-9a-fA-F-]{1,64}$`)
	luksNameRE     = regexp.MustCompile(`^[A-Za-z0-9_.+-]{1,128}$`)
)

// Mount points a hardware file must not mount over: system directories,
// SSH keys, this toolkit's state.
var sensitiveMounts = []string{"/etc", "/root", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/run", "/proc", "/sys", "/dev",
	"/nix/store", "/nix/var", "/var/lib/nixos-config"}

func mountPoint(s string) string {
	if !strings.HasPrefix(s, "/") || path.Clean(s) != s || len(s) > 256 || !ui.IsClean(s) {
		return "not a clean absolute mount point"
	}
	for _, m := range sensitiveMounts {
		if s == m || strings.HasPrefix(s, m+"/") {
			return "mounts over " + m + ", a system directory"
		}
	}
	if strings.Contains(s, "/.ssh") {
		return "mounts over an SSH key directory"
	}
	return ""
}

func device(s string) string {
	if s == "" || len(s) > 256 || !ui.IsClean(s) || strings.ContainsAny(s, " \t") {
		return "not a device"
	}
	return ""
}

func interfaceName(s string) string {
	if !interfaceRE.MatchString(s) {
		return "not a network interface name"
	}
	return ""
}

func luksName(s string) string {
	if !luksNameRE.MatchString(s) {
		return "not a device-mapper name"
	}
	return ""
}

func matches(re *regexp.Regexp, what string) func(string) string {
	return func(s string) string {
		if !re.MatchString(s) {
			return "not " + what
		}
		return ""
	}
}

// Value shapes.

// found describes a value that has the wrong shape.
func found(n node) string {
	if app, ok := n.(appNode); ok {
		return "found " + ui.Sanitize(render(app), 60) + " (" + describeCall(app) + ")"
	}
	return "found " + ui.Sanitize(render(n), 60)
}

func boolean(n node) string {
	if isRef(n, "true") || isRef(n, "false") {
		return ""
	}
	return "expects true or false, " + found(n)
}

func firmwareBool(n node) string {
	if isRef(n, "config", "hardware", "enableRedistributableFirmware") {
		return ""
	}
	if boolean(n) == "" {
		return ""
	}
	return "expects true, false or config.hardware.enableRedistributableFirmware, " + found(n)
}

func str(valid func(string) string) func(node) string {
	return func(n node) string {
		s, ok := n.(strNode)
		if !ok {
			return "expects a string, " + found(n)
		}
		if p := valid(s.s); p != "" {
			return fmt.Sprintf("%q: %s", ui.Sanitize(s.s, 60), p)
		}
		return ""
	}
}

func strList(valid func(string) string) func(node) string {
	return func(n node) string {
		l, ok := n.(listNode)
		if !ok {
			return "expects a list of strings, " + found(n)
		}
		for _, e := range l.elems {
			if p := str(valid)(e); p != "" {
				return p
			}
		}
		return ""
	}
}

// modulePackages: the script only adds config.boot.kernelPackages.broadcom_sta.
func modulePackages(n node) string {
	l, ok := n.(listNode)
	if !ok {
		return "expects a list, " + found(n)
	}
	for _, e := range l.elems {
		if !isRef(e, "config", "boot", "kernelPackages", "broadcom_sta") {
			return "adds " + ui.Sanitize(render(e), 60) + ": nixos-generate-config only adds config.boot.kernelPackages.broadcom_sta"
		}
	}
	return ""
}

// swapDevices: a list of { device = "…"; }.
func swapDevices(n node) string {
	l, ok := n.(listNode)
	if !ok {
		return "expects a list, " + found(n)
	}
	for _, e := range l.elems {
		set, ok := e.(attrsNode)
		if !ok || len(set.binds) != 1 || len(set.binds[0].path) != 1 || set.binds[0].path[0] != "device" {
			return "expects entries { device = \"…\"; }, " + found(e)
		}
		if p := str(device)(set.binds[0].value); p != "" {
			return p
		}
	}
	return ""
}

var rules = []rule{
	{name: "boot.initrd.availableKernelModules", pattern: []string{"boot", "initrd", "availableKernelModules"}, check: strList(matches(kernelModuleRE, "a kernel module name"))},
	{name: "boot.initrd.kernelModules", pattern: []string{"boot", "initrd", "kernelModules"}, check: strList(matches(kernelModuleRE, "a kernel module name"))},
	{name: "boot.kernelModules", pattern: []string{"boot", "kernelModules"}, check: strList(matches(kernelModuleRE, "a kernel module name"))},
	{name: "boot.extraModulePackages", pattern: []string{"boot", "extraModulePackages"}, check: modulePackages},
	{name: "boot.initrd.luks.devices.<name>.device", pattern: []string{"boot", "initrd", "luks", "devices", "*", "device"}, seg: luksName, check: str(device)},
	{name: "boot.isContainer", pattern: []string{"boot", "isContainer"}, check: boolean},
	{name: "boot.swraid.enable", pattern: []string{"boot", "swraid", "enable"}, check: boolean},
	{name: "fileSystems.<mount point>.device", pattern: []string{"fileSystems", "*", "device"}, seg: mountPoint, check: str(device)},
	{name: "fileSystems.<mount point>.fsType", pattern: []string{"fileSystems", "*", "fsType"}, seg: mountPoint, check: str(matches(fsTypeRE, "a file system type"))},
	{name: "fileSystems.<mount point>.options", pattern: []string{"fileSystems", "*", "options"}, seg: mountPoint, check: strList(matches(mountOptionRE, "a mount option"))},
	{name: "fileSystems.<mount point>.stratis.poolUuid", pattern: []string{"fileSystems", "*", "stratis", "poolUuid"}, seg: mountPoint, check: str(matches(uuidRE, "a UUID"))},
	{name: "swapDevices", pattern: []string{"swapDevices"}, check: swapDevices},
	{name: "networking.useDHCP", pattern: []string{"networking", "useDHCP"}, check: boolean},
	{name: "networking.interfaces.<interface>.useDHCP", pattern: []string{"networking", "interfaces", "*", "useDHCP"}, seg: interfaceName, check: boolean},
	{name: "networking.enableIntel2200BGFirmware", pattern: []string{"networking", "enableIntel2200BGFirmware"}, check: boolean},
	{name: "networking.enableIntel3945ABGFirmware", pattern: []string{"networking", "enableIntel3945ABGFirmware"}, check: boolean},
	{name: "nixpkgs.hostPlatform", pattern: []string{"nixpkgs", "hostPlatform"}, check: str(matches(platformRE, "a platform such as x86_64-linux"))},
	{name: "hardware.cpu.intel.updateMicrocode", pattern: []string{"hardware", "cpu", "intel", "updateMicrocode"}, check: firmwareBool},
	{name: "hardware.cpu.amd.updateMicrocode", pattern: []string{"hardware", "cpu", "amd", "updateMicrocode"}, check: firmwareBool},
	{name: "hardware.enableRedistributableFirmware", pattern: []string{"hardware", "enableRedistributableFirmware"}, check: boolean},
	{name: "hardware.video.hidpi.enable", pattern: []string{"hardware", "video", "hidpi", "enable"}, check: boolean},
	{name: "hardware.parallels.enable", pattern: []string{"hardware", "parallels", "enable"}, check: boolean},
	{name: "powerManagement.cpuFreqGovernor", pattern: []string{"powerManagement", "cpuFreqGovernor"}, check: str(matches(governorRE, "a CPU frequency governor"))},
	{name: "virtualisation.virtualbox.guest.enable", pattern: []string{"virtualisation", "virtualbox", "guest", "enable"}, check: boolean},
	{name: "virtualisation.vmware.guest.enable", pattern: []string{"virtualisation", "vmware", "guest", "enable"}, check: boolean},
	{name: "virtualisation.hypervGuest.enable", pattern: []string{"virtualisation", "hypervGuest", "enable"}, check: boolean},
	// The boot loader choice ($bootLoaderConfig); no extra entries, no
	// extra configuration and no install commands (those run as root).
	{name: "boot.loader.systemd-boot.enable", pattern: []string{"boot", "loader", "systemd-boot", "enable"}, check: boolean},
	{name: "boot.loader.efi.canTouchEfiVariables", pattern: []string{"boot", "loader", "efi", "canTouchEfiVariables"}, check: boolean},
	{name: "boot.loader.efi.efiSysMountPoint", pattern: []string{"boot", "loader", "efi", "efiSysMountPoint"}, check: str(mountPoint)},
	{name: "boot.loader.grub.enable", pattern: []string{"boot", "loader", "grub", "enable"}, check: boolean},
	{name: "boot.loader.grub.device", pattern: []string{"boot", "loader", "grub", "device"}, check: str(device)},
	{name: "boot.loader.grub.devices", pattern: []string{"boot", "loader", "grub", "devices"}, check: strList(device)},
	{name: "boot.loader.grub.efiSupport", pattern: []string{"boot", "loader", "grub", "efiSupport"}, check: boolean},
	{name: "boot.loader.grub.efiInstallAsRemovable", pattern: []string{"boot", "loader", "grub", "efiInstallAsRemovable"}, check: boolean},
	{name: "boot.loader.generic-extlinux-compatible.enable", pattern: []string{"boot", "loader", "generic-extlinux-compatible", "enable"}, check: boolean},
}

// AllowedOptions lists the options a hardware configuration may set (for
// documentation and messages).
func AllowedOptions() []string {
	out := []string{"imports (modulesPath + " + strings.Join(sortedKeys(allowedImports), ", ") + ")"}
	for _, r := range rules {
		out = append(out, r.name)
	}
	return out
}

// lookup finds the rule for an option path; nil when none allows it. A
// rule whose wildcard segment does not validate does not allow it either
// (its check is wrapped to say why).
func lookup(p []string) *rule {
	for i := range rules {
		r := &rules[i]
		if len(r.pattern) != len(p) {
			continue
		}
		ok, wild := true, ""
		for j, s := range r.pattern {
			if s == "*" {
				wild = p[j]
			} else if s != p[j] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if r.seg != nil {
			if problem := r.seg(wild); problem != "" {
				return &rule{name: r.name, check: func(node) string { return fmt.Sprintf("%q: %s", ui.Sanitize(wild, 60), problem) }}
			}
		}
		return r
	}
	return nil
}

// areas describe options outside the list by what they touch, longest
// prefix first.
var areas = []struct{ prefix, what string }{
	{"users.users", "creates or changes a user account (groups, password, SSH keys)"},
	{"users", "changes users or groups"},
	{"security.sudo", "changes sudo rules"},
	{"security", "changes security settings (sudo, PAM, polkit, …)"},
	{"services.openssh", "configures the SSH server"},
	{"services", "configures a service"},
	{"systemd", "adds or changes systemd units (runs programs)"},
	{"system.activationScripts", "runs shell commands as root on every activation"},
	{"system", "changes system settings"},
	{"boot.initrd.luks", "changes how encrypted disks are opened (can run commands in the initrd)"},
	{"boot.initrd", "changes the initrd (can run commands at boot)"},
	{"boot.loader", "changes the boot loader beyond choosing it (extra entries and install commands run as root)"},
	{"boot.postBootCommands", "runs shell commands at boot"},
	{"boot.kernelParams", "changes the kernel command line"},
	{"boot.kernelPackages", "changes the kernel"},
	{"boot", "changes booting"},
	{"networking.firewall", "changes the firewall"},
	{"networking", "changes the network configuration"},
	{"nix", "changes Nix's settings (trusted users, substituters, signing keys)"},
	{"nixpkgs", "changes nixpkgs (overlays, allowed unfree packages)"},
	{"environment", "changes the system environment (packages, files in /etc)"},
	{"programs", "enables or configures programs"},
	{"fileSystems", "a file system setting"},
	{"hardware", "a hardware setting"},
	{"config", "an explicit config section"},
	{"options", "declares options"},
}

func describePath(p []string) string {
	joined := strings.Join(p, ".")
	for _, a := range areas {
		if joined == a.prefix || strings.HasPrefix(joined, a.prefix+".") {
			return a.what + ": nixos-generate-config never writes it"
		}
	}
	return "not an option nixos-generate-config writes"
}
