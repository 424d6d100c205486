# The system as a whole: assertions, packages, /etc, locale, platform.
{ config, lib, ... }:
let
  inherit (lib) mkOption types from;
in
{
  options = {
    assertions = from "nixos/modules/misc/assertions.nix" (mkOption { type = types.listOf types.unspecified; default = [ ]; });
    warnings = from "nixos/modules/misc/assertions.nix" (mkOption { type = types.listOf types.str; default = [ ]; });

    system.build = from "nixos/modules/system/activation/top-level.nix"
      (mkOption { type = types.lazyAttrsOf types.unspecified; default = { }; });
    system.stateVersion = from "nixos/modules/misc/version.nix"
      (mkOption { type = types.str; default = lib.trivial.release; });

    nixpkgs.hostPlatform = from "nixos/modules/misc/nixpkgs.nix"
      (mkOption { type = types.either types.str types.attrs; });

    environment.systemPackages = from "nixos/modules/config/system-path.nix"
      (mkOption { type = types.listOf types.package; default = [ ]; });
    environment.variables = from "nixos/modules/config/shells-environment.nix"
      (mkOption { type = types.attrsOf (types.either types.str (types.listOf types.str)); default = { }; });
    environment.etc = from "nixos/modules/system/etc/etc.nix" (mkOption {
      type = types.attrsOf (types.submodule ({ name, config, ... }: {
        options = from "nixos/modules/system/etc/etc.nix" {
          enable = mkOption { type = types.bool; default = true; };
          target = mkOption { type = types.str; default = name; };
          text = mkOption { type = types.nullOr types.lines; default = null; };
          source = mkOption { type = types.path; };
          mode = mkOption { type = types.str; default = "symlink"; };
          user = mkOption { type = types.str; default = "+0"; };
          group = mkOption { type = types.str; default = "+0"; };
        };
      }));
      default = { };
    });

    time.timeZone = from "nixos/modules/config/locale.nix"
      (mkOption { type = types.nullOr types.str; default = null; });
    i18n.defaultLocale = from "nixos/modules/config/i18n.nix"
      (mkOption { type = types.str; default = "en_US.UTF-8"; });

    # Not NixOS: values NixOS evaluates while building the system, which the
    # double's toplevel forces the same way (e.g. a required option read by an
    # enabled service).
    double.forceValues = from "test double (internal)"
      (mkOption { type = types.listOf types.unspecified; default = [ ]; });
  };
}
