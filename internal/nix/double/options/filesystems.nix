# File systems and swap: what nixos-generate-config writes.
{ config, lib, ... }:
let
  inherit (lib) mkOption types from;
  fsNix = "nixos/modules/tasks/filesystems.nix";
  # filesystems.nix: a local "non-empty" check on str.
  nonEmptyStr = types.addCheck types.str (s: builtins.match "[ \t\n]*" s == null)
    // { description = "string (with check: non-empty)"; };
in
{
  options.fileSystems = from fsNix (mkOption {
    type = types.attrsOf (types.submodule ({ name, config, ... }: {
      options = from fsNix {
        enable = mkOption { type = types.bool; default = true; };
        mountPoint = mkOption { type = nonEmptyStr; default = name; };
        device = mkOption { type = types.nullOr nonEmptyStr; default = null; };
        fsType = mkOption { type = nonEmptyStr; default = "auto"; };
        options = mkOption { type = types.nonEmptyListOf nonEmptyStr; default = [ "defaults" ]; };
        label = mkOption { type = types.nullOr nonEmptyStr; default = null; };
        neededForBoot = from "nixos/modules/system/boot/stage-1.nix"
          (mkOption { type = types.bool; default = false; });
        depends = mkOption { type = types.listOf nonEmptyStr; default = [ ]; };
        noCheck = mkOption { type = types.bool; default = false; };
      };
      config.device = lib.mkIf (config.label != null) (lib.mkDefault "/dev/disk/by-label/${config.label}");
    }));
    default = { };
    apply = lib.filterAttrs (_: fs: fs.enable);
  });

  options.swapDevices = from "nixos/modules/config/swap.nix" (mkOption {
    type = types.listOf (types.submodule {
      options = from "nixos/modules/config/swap.nix" {
        device = mkOption { type = types.str; };
        label = mkOption { type = types.nullOr types.str; default = null; };
        size = mkOption { type = types.nullOr types.int; default = null; };
        priority = mkOption { type = types.nullOr types.int; default = null; };
        randomEncryption.enable = mkOption { type = types.bool; default = false; };
      };
    });
    default = [ ];
  });

  config = {
    # stage-1.nix
    assertions = [{
      assertion = builtins.any (fs: fs.mountPoint == "/") (builtins.attrValues config.fileSystems);
      message = "The ‘fileSystems’ option does not specify your root file system.";
    }];
    # filesystems.nix throws this while writing /etc/fstab.
    double.forceValues = map
      (fs: if fs.device == null then throw "No device specified for mount point ‘${fs.mountPoint}’." else true)
      (builtins.attrValues config.fileSystems);
  };
}
