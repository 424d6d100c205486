# Modules shared by every target. flake.nix imports this directory for each
# target; add new shared modules to the list below.
{
  imports = [
    ./base.nix
    ./users.nix
    ./deployer-keys.nix
    # Optional, off by default: see each file.
    ./binary-cache.nix
    ./secrets.nix
  ];
}
