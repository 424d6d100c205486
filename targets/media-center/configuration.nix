# media-center: Jellyfin media server for the living room.
{ ... }:
{
  imports = [ ./hardware-configuration.nix ];

  # Boot loader (UEFI: systemd-boot). It lives here, not in
  # hardware-configuration.nix, which `mage hardware` replaces. On a BIOS
  # machine use GRUB on the boot disk instead:
  #   boot.loader.grub.device = "/dev/disk/by-id/<the disk>";
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  services.jellyfin = {
    enable = true;
    # Opens TCP 8096 (web UI) and 8920 (HTTPS), UDP 1900 and 7359 (discovery).
    openFirewall = true;
  };
}
