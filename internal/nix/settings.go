package nix

import (
	"os"
	"os/user"
)

// The toolkit does not depend on the machine's nix.conf: every nix command it
// runs (nix, nix-build, nix-store, nix-instantiate) carries the settings it
// needs on its command line. Nix 2.8 to 2.34 accept all of them (`--option
// NAME VALUE` and `--extra-experimental-features` are valid for the old
// commands too). Measured on fresh Debian roots without a nix.conf, Nix's
// defaults are build-users-group = nixbld (a group Debian's nix-bin does not
// create), sandbox = true, sandbox-paths empty and substituters =
// https://cache.nixos.org/.

// Features are the experimental features the toolkit uses.
const Features = "nix-command flakes"

// GlobalArgs returns the settings for one nix command line:
//   - the experimental features flakes and nix-command;
//   - build-users-group empty when this process is root and the machine has
//     no nixbld group: root builds in its own local store without a daemon,
//     and Nix refuses to build with a build-users-group that does not exist;
//   - for builds against the nixpkgs test double (offline): no sandbox (the
//     double's builders run /bin/sh and tools under /usr/bin, which a sandbox
//     hides) and no substituters, so that nothing is ever asked of
//     cache.nixos.org or any other binary cache.
func GlobalArgs(offline bool) []string {
	args := []string{"--extra-experimental-features", Features}
	if os.Geteuid() == 0 && !groupExists("nixbld") {
		args = append(args, "--option", "build-users-group", "")
	}
	if offline {
		args = append(args, "--option", "sandbox", "false", "--option", "substituters", "")
	}
	return args
}

func groupExists(name string) bool {
	_, err := user.LookupGroup(name)
	return err == nil
}
