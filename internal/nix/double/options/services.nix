# SSH, fail2ban, Jellyfin, nix-serve, nginx: options and the effects of their
# modules that the repository relies on (accounts, firewall ports).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types from;
  sshdNix = "nixos/modules/services/networking/ssh/sshd.nix";
  jellyfinNix = "nixos/modules/services/misc/jellyfin.nix";
  serveNix = "nixos/modules/services/networking/nix-serve.nix";
  nginxNix = "nixos/modules/services/web-servers/nginx/default.nix";
  nginx = config.services.nginx;
  ssh = config.services.openssh;
  jellyfin = config.services.jellyfin;
  serve = config.services.nix-serve;
  # sshd.nix: settingsFormat (a key-value format; the values sshd accepts).
  sshAtom = types.nullOr (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]);
in
{
  options.services = {
    openssh = from sshdNix {
      enable = mkOption { type = types.bool; default = false; };
      openFirewall = mkOption { type = types.bool; default = true; };
      ports = mkOption { type = types.listOf types.port; default = [ 22 ]; };
      settings = mkOption {
        type = types.submodule {
          freeformType = types.attrsOf sshAtom;
          options = from sshdNix {
            PasswordAuthentication = mkOption { type = types.nullOr types.bool; default = true; };
            KbdInteractiveAuthentication = mkOption { type = types.nullOr types.bool; default = true; };
            PermitRootLogin = mkOption {
              type = types.nullOr (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ]);
              default = "prohibit-password";
            };
            X11Forwarding = mkOption { type = types.nullOr types.bool; default = false; };
            AllowUsers = mkOption { type = types.nullOr (types.listOf types.str); default = null; };
          };
        };
        default = { };
      };
    };

    fail2ban.enable = from "nixos/modules/services/security/fail2ban.nix"
      (mkOption { type = types.bool; default = false; });

    jellyfin = from jellyfinNix {
      enable = mkOption { type = types.bool; default = false; };
      openFirewall = mkOption { type = types.bool; default = false; };
      user = mkOption { type = types.str; default = "jellyfin"; };
      group = mkOption { type = types.str; default = "jellyfin"; };
      dataDir = mkOption { type = types.path; default = "/var/lib/jellyfin"; };
    };

    # The scaffold's example (internal/scaffold/templates/configuration.nix).
    nginx = from nginxNix {
      enable = mkOption { type = types.bool; default = false; };
      user = mkOption { type = types.str; default = "nginx"; };
      group = mkOption { type = types.str; default = "nginx"; };
    };

    nix-serve = from serveNix {
      enable = mkOption { type = types.bool; default = false; };
      port = mkOption { type = types.port; default = 5000; };
      bindAddress = mkOption { type = types.str; default = "0.0.0.0"; };
      openFirewall = mkOption { type = types.bool; default = false; };
      secretKeyFile = mkOption { type = types.nullOr types.str; default = null; };
      extraParams = mkOption { type = types.separatedString " "; default = ""; };
    };
  };

  config = lib.mkMerge [
    (lib.mkIf ssh.enable {
      users.users.sshd = { isSystemUser = true; group = "sshd"; description = "SSH privilege separation user"; };
      users.groups.sshd = { };
      networking.firewall.allowedTCPPorts = lib.optionals ssh.openFirewall ssh.ports;
    })
    (lib.mkIf jellyfin.enable {
      users.users = lib.mkIf (jellyfin.user == "jellyfin") { jellyfin = { group = jellyfin.group; isSystemUser = true; }; };
      users.groups = lib.mkIf (jellyfin.group == "jellyfin") { jellyfin = { }; };
      # jellyfin.nix: web UI 8096, HTTPS 8920; discovery 1900 and 7359 (UDP).
      networking.firewall = lib.mkIf jellyfin.openFirewall {
        allowedTCPPorts = [ 8096 8920 ];
        allowedUDPPorts = [ 1900 7359 ];
      };
    })
    # nginx/default.nix: its account when the default user is kept.
    (lib.mkIf nginx.enable {
      users.users = lib.mkIf (nginx.user == "nginx") { nginx = { group = nginx.group; isSystemUser = true; }; };
      users.groups = lib.mkIf (nginx.group == "nginx") { nginx = { }; };
    })
    (lib.mkIf serve.enable {
      networking.firewall.allowedTCPPorts = lib.optional serve.openFirewall serve.port;
    })
  ];
}
