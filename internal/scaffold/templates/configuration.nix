# {{.Name}}: describe what this machine is for.
#
# Everything in targets/common/ applies to it already: SSH with keys only, the
# monibahmed account with sudo, Nix with flakes and garbage collection,
# NetworkManager, the firewall with port 22 open, time zone and locale.
# Add this machine's own services and packages below.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  # Boot loader: here, not in hardware-configuration.nix (nixos-generate-config
  # never writes it there, and `mage hardware` replaces that file). Keep ONE:
  #
  # UEFI (the machine shows /sys/firmware/efi): systemd-boot.
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  #
  # BIOS (no /sys/firmware/efi): GRUB on the boot disk; remove the two lines
  # above and name the whole disk, not a partition (`ls -l /dev/disk/by-id`):
  # boot.loader.grub.device = "/dev/disk/by-id/ata-EXAMPLE_SERIAL";

  # For example:
  # services.nginx.enable = true;
  # networking.firewall.allowedTCPPorts = [ 80 ];
  # environment.systemPackages = with pkgs; [ ripgrep ];

  # The NixOS release this machine was FIRST installed with; the default is
  # in targets/common/base.nix. Set it here if it differs, never raise it later.
  # system.stateVersion = "26.05";
}
