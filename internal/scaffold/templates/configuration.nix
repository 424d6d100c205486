# {{.Name}}: describe what this machine is for.
#
# Everything in targets/common/ applies to it already: SSH with keys only, the
# monibahmed account with sudo, Nix with flakes and garbage collection,
# NetworkManager, the firewall with port 22 open, time zone and locale.
# Add this machine's own services and packages below.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  # For example:
  # services.nginx.enable = true;
  # networking.firewall.allowedTCPPorts = [ 80 ];
  # environment.systemPackages = with pkgs; [ ripgrep ];

  # The NixOS release this machine was FIRST installed with; the default is
  # in targets/common/base.nix. Set it here if it differs, never raise it later.
  # system.stateVersion = "26.05";
}
