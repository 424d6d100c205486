# Optional LAN binary cache (off by default). One target serves its Nix store
# with nix-serve; the others substitute from it, so a package built or
# downloaded once is fetched over the LAN afterwards (deploy with -substitute
# to let targets fetch from it instead of receiving everything from the
# deploying machine). Options of services.nix-serve:
# nixos/modules/services/networking/nix-serve.nix in nixpkgs.
#
# nix-serve answers every request for any path in this machine's store,
# without authentication: bind it to the LAN address only (bindAddress has no
# default, so enabling the server without choosing one fails evaluation),
# and keep secrets out of the store (secrets.nix).
#
# On the serving target:
#   homelab.binaryCache.server = { enable = true; bindAddress = "192.168.1.50"; };
#   # once, on that machine, as root:
#   #   nix-store --generate-binary-cache-key lab-cache-1 /var/lib/nix-serve/cache-priv-key.pem /var/lib/nix-serve/cache-pub-key.pem
# On the clients (or in targets/common for all):
#   homelab.binaryCache.url = "http://192.168.1.50:5000";
#   homelab.binaryCache.publicKey = "lab-cache-1:<contents of cache-pub-key.pem>";
{ config, lib, ... }:
let
  cfg = config.homelab.binaryCache;
in
{
  options.homelab.binaryCache = {
    server = {
      enable = lib.mkEnableOption "serving this machine's Nix store to the LAN with nix-serve";
      bindAddress = lib.mkOption {
        type = lib.types.str;
        example = "192.168.1.50";
        description = "Address nix-serve listens on: this machine's LAN address (not 0.0.0.0).";
      };
      port = lib.mkOption {
        type = lib.types.port;
        default = 5000;
        description = "Port nix-serve listens on (opened in the firewall).";
      };
      secretKeyFile = lib.mkOption {
        type = lib.types.str;
        default = "/var/lib/nix-serve/cache-priv-key.pem";
        description = "Signing key, created once on the machine (never in the repository).";
      };
    };
    url = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      description = "URL of the LAN cache to substitute from, e.g. http://192.168.1.50:5000.";
    };
    publicKey = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      description = "Public key of the LAN cache (name:base64).";
    };
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.server.enable {
      services.nix-serve = {
        enable = true;
        inherit (cfg.server) bindAddress port;
        secretKeyFile = cfg.server.secretKeyFile;
        openFirewall = true;
      };
    })
    (lib.mkIf (cfg.url != null) {
      # extra-*: added to cache.nixos.org, not replacing it.
      nix.settings.extra-substituters = [ cfg.url ];
      nix.settings.extra-trusted-public-keys = lib.optional (cfg.publicKey != null) cfg.publicKey;
    })
  ];
}
