# services.jupyter: its options, the kernel submodule, and what the module
# does when enabled (its account; the password and kernels are read while
# the system is built, so an unset password fails evaluation like NixOS).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types from;
  jupyterNix = "nixos/modules/services/development/jupyter/default.nix";
  kernelNix = "nixos/modules/services/development/jupyter/kernel-options.nix";
  cfg = config.services.jupyter;
in
{
  options.services.jupyter = from jupyterNix {
    enable = mkOption { type = types.bool; default = false; };
    ip = mkOption { type = types.str; default = "localhost"; };
    port = mkOption { type = types.port; default = 8888; };
    package = mkOption { type = types.package; default = pkgs.python3.pkgs.jupyter; };
    extraPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    extraEnvironmentVariables = mkOption {
      # `inherit (options.environment.variables) type` in jupyter/default.nix.
      type = types.attrsOf (types.either types.str (types.listOf types.str));
      default = { };
    };
    command = mkOption { type = types.str; default = "jupyter notebook"; };
    notebookDir = mkOption { type = types.str; default = "~/"; };
    user = mkOption { type = types.str; default = "jupyter"; };
    group = mkOption { type = types.str; default = "jupyter"; };
    password = mkOption { type = types.str; };
    notebookConfig = mkOption { type = types.lines; default = ""; };
    kernels = mkOption {
      type = types.nullOr (types.attrsOf (types.submodule {
        options = from kernelNix {
          displayName = mkOption { type = types.str; default = ""; };
          argv = mkOption { type = types.listOf types.str; };
          language = mkOption { type = types.str; };
          logo32 = mkOption { type = types.nullOr types.path; default = null; };
          logo64 = mkOption { type = types.nullOr types.path; default = null; };
          extraPaths = mkOption { type = types.attrsOf types.path; default = { }; };
        };
      }));
      default = null;
    };
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.enable {
      # The unit's ExecStart and the kernel directory read these.
      double.forceValues = [ cfg.password cfg.kernels cfg.notebookConfig ];
    })
    (lib.mkIf (cfg.enable && cfg.group == "jupyter") { users.groups.jupyter = { }; })
    (lib.mkIf (cfg.enable && cfg.user == "jupyter") {
      users.users.jupyter = {
        inherit (cfg) group;
        home = "/var/lib/jupyter";
        createHome = true;
        isSystemUser = true;
        useDefaultShell = true; # jupyter/default.nix: "needed so that the user can start a terminal"
      };
    })
  ];
}
