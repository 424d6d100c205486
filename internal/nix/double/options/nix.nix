# Nix settings and garbage collection.
{ lib, ... }:
let
  inherit (lib) mkOption types from;
  nixNix = "nixos/modules/config/nix.nix";
  # nix.nix: semanticConfType (the freeform part of nix.settings). Real
  # NixOS also allows packages; the double's package type checks nothing
  # (its packages are stubs, see types.nix), so with it in `either` every
  # list would count as a package and two list definitions of one setting
  # (e.g. extra-trusted-public-keys from two modules) would clash instead of
  # concatenating. No setting of this repository takes a package.
  confAtom = types.nullOr (types.oneOf [ types.bool types.int types.float types.str types.path ])
    // { description = "Nix config atom (null, bool, int, float, str, path or package)"; };
in
{
  options.nix = {
    settings = from nixNix (mkOption {
      type = types.submodule {
        freeformType = types.attrsOf (types.either confAtom (types.listOf confAtom));
        options = from nixNix {
          trusted-users = mkOption { type = types.listOf types.str; default = [ "root" ]; };
          allowed-users = mkOption { type = types.listOf types.str; default = [ "*" ]; };
          auto-optimise-store = mkOption { type = types.bool; default = false; };
          substituters = mkOption { type = types.listOf types.str; default = [ "https://cache.nixos.org/" ]; };
          trusted-public-keys = mkOption {
            type = types.listOf types.str;
            default = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
          };
        };
      };
      default = { };
    });
    gc = from "nixos/modules/services/misc/nix-gc.nix" {
      automatic = mkOption { type = types.bool; default = false; };
      dates = mkOption { type = types.singleLineStr; default = "03:15"; };
      options = mkOption { type = types.singleLineStr; default = ""; };
    };
  };
}
