# PLACEHOLDER — replace with the output of `nixos-generate-config` on the real
# machine before the first deployment:
#
#   mage hardware <target> <address>     (or, on the target:
#   nixos-generate-config --show-hardware-config > hardware-configuration.nix)
#
# It only makes the configuration evaluate: a root file system, a boot loader
# and the host platform. Deploying it unchanged to a real machine would make it
# unbootable (the device labels below probably do not exist there).
{ lib, ... }:
{
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4"; # fsType has no default in current nixpkgs
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/boot";
    fsType = "vfat";
  };

  # UEFI with systemd-boot (this also turns GRUB off).
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  # Must agree with "system" in target.json.
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
}
