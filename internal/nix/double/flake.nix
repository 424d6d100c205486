# Test double for nixpkgs.
#
# Real nixpkgs needs Nix >= 2.18 and network access. Offline checks, the lab
# and the tests substitute this flake for the `nixpkgs` input:
#
#   nix flake check --override-input nixpkgs path:$PWD/internal/nix/double --no-write-lock-file
#
# It provides the small part of nixpkgs the repository uses:
#   * lib.nixosSystem: the NixOS module system in miniature (modules.nix,
#     types.nix, merge.nix: imports, options, types, mkIf/mkMerge/mkDefault/
#     mkForce/mkBefore/mkAfter, submodules, freeform settings, assertions)
#     over an option schema (options/*.nix) that declares every option the
#     repository's configurations, templates and common modules set, with
#     its nixpkgs type, its default and — in `from "nixos/modules/…"` — the
#     nixpkgs file it was read from. Undeclared options and ill-typed values
#     fail with NixOS's own messages, plus file:line:column. Only these
#     options exist here: `mage check` with real nixpkgs is the authority.
#     Where the repository relies on what a NixOS module does (GRUB is on by
#     default and needs a device; normal users' defaults; jupyter's and
#     postgresql's accounts, pg_hba.conf defaults and assertions), the
#     schema module does the same.
#     config.system.build.toplevel is built with /bin/sh and coreutils only.
#     The toplevel contains nixos-version and a working
#     bin/switch-to-configuration that behaves like NixOS's on a lab target
#     (see switch-to-configuration.sh). Its store path depends on the content
#     of the target's module files, so editing a target changes only that
#     target's system.
#   * lib: the functions the modules use (lib.nix).
#   * legacyPackages.<system>: stub packages (pkgs.nix); python3.withPackages,
#     rWrapper.override, julia-bin.withPackages record what they were given.
#
# Test-only options read from the configuration (undefined in real NixOS, so
# only test copies of the repository set them; declared in options/lab.nix):
#   lab.simulate.activation.exitCode   switch-to-configuration exits with it
#   lab.simulate.activation.message    printed on stderr before failing
#   lab.simulate.sshd                  "stop", or { port = N; }: applied on switch/test
#   lab.simulate.failingUnit           a unit name: on a systemd lab host the switch
#                                      starts <name>.service, which fails right after
#                                      (the switch succeeds, the system is degraded)
#   lab.simulate.closure.sharedMiB     size of a dependency shared by all targets
#   lab.simulate.closure.uniqueMiB     size of a dependency unique to this target
#   lab.simulate.closure.seed          any string: changes the dependencies' paths
#   lab.simulate.build.failure         the toplevel's builder prints it and fails
{
  description = "Test double for nixpkgs (offline checks and the lab; not for real machines)";

  outputs = { self }:
    let
      lib = import ./lib.nix;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forSystems = f: lib.genAttrs systems f;
    in
    {
      lib = lib // {
        nixosSystem = import ./nixos-system.nix { inherit lib; double = self; };
      };
      legacyPackages = forSystems (system: import ./pkgs.nix { inherit system; });
    };
}
