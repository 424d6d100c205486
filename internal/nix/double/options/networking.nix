# Host name, DHCP, NetworkManager and the firewall.
{ config, lib, ... }:
let
  inherit (lib) mkOption types from;
  ifNix = "nixos/modules/tasks/network-interfaces.nix";
  fwNix = "nixos/modules/services/networking/firewall.nix";
  # firewall.nix: commonOptions (global and per interface), canonicalised.
  canonical = ports: lib.unique (builtins.sort builtins.lessThan ports);
  portOptions = from fwNix {
    allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; apply = canonical; };
    allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; apply = canonical; };
  };
in
{
  options.networking = {
    hostName = from ifNix (mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    });
    useDHCP = from ifNix (mkOption { type = types.bool; default = true; });
    interfaces = from ifNix (mkOption {
      type = types.attrsOf (types.submodule {
        options = from ifNix {
          useDHCP = mkOption { type = types.nullOr types.bool; default = null; };
        };
      });
      default = { };
    });
    networkmanager.enable = from "nixos/modules/services/networking/networkmanager.nix"
      (mkOption { type = types.bool; default = false; });
    firewall = portOptions // from fwNix {
      enable = mkOption { type = types.bool; default = true; };
      interfaces = mkOption {
        type = types.attrsOf (types.submodule { options = portOptions; });
        default = { };
      };
      extraInputRules = mkOption { type = types.lines; default = ""; };
    };
  };

  # networkmanager.nix: NetworkManager runs DHCP itself.
  config = lib.mkIf config.networking.networkmanager.enable {
    networking.useDHCP = false;
  };
}
