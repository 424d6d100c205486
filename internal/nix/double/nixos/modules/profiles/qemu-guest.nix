# Stand-in for nixpkgs' nixos/modules/profiles/qemu-guest.nix (imported by
# nixos-generate-config on virtual machines).
{ ... }:
{ }
