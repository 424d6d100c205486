# media-center: Jellyfin media server for the living room.
{ ... }:
{
  imports = [ ./hardware-configuration.nix ];

  services.jellyfin = {
    enable = true;
    # Opens TCP 8096 (web UI) and 8920 (HTTPS), UDP 1900 and 7359 (discovery).
    openFirewall = true;
  };
}
