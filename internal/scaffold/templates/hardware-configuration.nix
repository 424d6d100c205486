# PLACEHOLDER — replace with the output of `nixos-generate-config` on the real
# machine before the first deployment:
#
#   mage hardware <target> <address>     (or, on the target:
#   nixos-generate-config --show-hardware-config > hardware-configuration.nix)
#
# Like that output, it holds the file systems and the host platform, and no
# boot loader: the boot loader is chosen in configuration.nix. Deploying this
# placeholder unchanged to a real machine would make it unbootable (the
# device labels below probably do not exist there).
{ lib, ... }:
{
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/boot";
    fsType = "vfat";
    options = [ "fmask=0077" "dmask=0077" ];
  };

  # Must agree with "system" in target.json (flake.nix sets it from there at
  # the same priority; different values are an evaluation error).
  nixpkgs.hostPlatform = lib.mkDefault "{{.System}}";
}
