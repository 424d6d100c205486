// Package trouble names the sections of docs/troubleshooting.md. Every error
// class the toolkit reports points to its section, and a test checks that
// each section exists.
package trouble

// File is the troubleshooting guide, relative to the repository root.
const File = "docs/troubleshooting.md"

// Sections (GitHub anchors of the guide's headings).
const (
	Network      = "network"
	HostKeys     = "host-keys"
	Auth         = "authentication"
	Sudo         = "sudo"
	TrustedUsers = "trusted-users-and-signatures"
	DiskSpace    = "disk-space"
	Eval         = "evaluation-errors"
	Build        = "build-errors"
	Activation   = "activation-failures"
	Health       = "health-checks"
	Rollbacks    = "rollbacks"
	Locks        = "locks"
	WrongMachine = "wrong-machine"
	TargetSetup  = "target-setup"
	NixVersion   = "nix-version"
	LocalNix     = "nix-on-this-machine"
	GitState     = "git-state"
	Inventory    = "inventory"
	Check        = "mage-check"
	Discovery    = "discovery"
	Hardware     = "hardware-configuration"
	Lab          = "the-lab"
	Foreign      = "systems-this-machine-cannot-build"
	RemoteBuild  = "remote-builds"
)

// Sections lists every section the code refers to.
func Sections() []string {
	return []string{Network, HostKeys, Auth, Sudo, TrustedUsers, DiskSpace, Eval, Build, Activation, Health,
		Rollbacks, Locks, WrongMachine, TargetSetup, NixVersion, LocalNix, GitState, Inventory, Check, Discovery, Hardware, Lab,
		Foreign, RemoteBuild}
}

// See is the reference appended to error messages.
func See(section string) string {
	if section == "" {
		return ""
	}
	return "see " + File + "#" + section
}
