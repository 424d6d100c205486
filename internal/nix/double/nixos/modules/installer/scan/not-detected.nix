# Stand-in for nixpkgs' nixos/modules/installer/scan/not-detected.nix, which
# nixos-generate-config imports into hardware-configuration.nix. The real one
# enables redistributable firmware.
{ lib, ... }:
{
  hardware.enableRedistributableFirmware = lib.mkDefault true;
}
