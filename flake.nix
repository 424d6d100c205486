{
  description = "NixOS configurations of the home lab, deployed over SSH with the Mage toolkit in this repository";

  # Users move the pin with `nix flake update`; flake.lock records it.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      # Every directory under ./targets except ./targets/common is a target,
      # so adding a target never requires editing this file.
      entries = builtins.readDir ./targets;
      names = builtins.filter (n: entries.${n} == "directory" && n != "common")
        (builtins.attrNames entries);
      forNames = f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);

      # Deployment facts (address, SSH user, system, tags, health checks) are
      # plain JSON: `nix eval --json .#targets` reads them without evaluating nixpkgs.
      defaults = { user = "monibahmed"; system = "x86_64-linux"; tags = [ ]; health = [ ]; };
      targets = forNames (n: defaults // builtins.fromJSON (builtins.readFile (./targets + "/${n}/target.json")));

      systems = [ "x86_64-linux" "aarch64-linux" ];
      forSystems = f: builtins.listToAttrs (map (s: { name = s; value = f s; }) systems);
    in
    {
      inherit targets;

      # Shared modules, for reuse from other flakes.
      nixosModules.common = import ./targets/common;

      nixosConfigurations = forNames (n: nixpkgs.lib.nixosSystem {
        modules = [
          ./targets/common
          (./targets + "/${n}/configuration.nix")
          ({ lib, ... }: {
            networking.hostName = n;
            # Same priority as nixos-generate-config's line in
            # hardware-configuration.nix: equal values merge, a mismatch between
            # target.json and the hardware is an evaluation error.
            nixpkgs.hostPlatform = lib.mkDefault targets.${n}.system;
          })
        ];
      });

      # `nix develop`: everything the toolkit needs on a deploying machine.
      devShells = forSystems (s:
        let pkgs = nixpkgs.legacyPackages.${s}; in {
          default = pkgs.mkShell { packages = with pkgs; [ go mage openssh jq nmap git ]; };
        });

      # `nix fmt` formats every .nix file of the repository. nixfmt-tree is
      # treefmt set up for nixfmt (pkgs/by-name/ni/nixfmt-tree/package.nix):
      # it walks the tree itself, so it works whether `nix fmt` passes no
      # arguments (Nix >= 2.25) or "." (older Nix). Plain nixfmt would read
      # stdin and wait forever when given no arguments.
      formatter = forSystems (s: nixpkgs.legacyPackages.${s}.nixfmt-tree);
    };
}
