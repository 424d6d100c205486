# Boot loaders and kernel modules. The GRUB behaviour users meet is
# reproduced: GRUB is on unless another loader turns it off, and without a
# device it fails the same assertion as NixOS.
{ config, lib, ... }:
let
  inherit (lib) mkOption types from;
  grub = config.boot.loader.grub;
  grubNix = "nixos/modules/system/boot/loader/grub/grub.nix";
  kernelNix = "nixos/modules/system/boot/kernel.nix";
  # kernel.nix: a list of module names, or an attribute set of them set to
  # true; the option's value is the list of names.
  modulesOption = mkOption {
    type = types.coercedTo (types.listOf types.str) (l: lib.genAttrs l (_: true)) (types.attrsOf types.bool);
    default = { };
    apply = mods: builtins.filter (m: mods.${m}) (builtins.attrNames mods);
  };
in
{
  options.boot = {
    loader.grub = from grubNix {
      enable = mkOption { type = types.bool; default = true; };
      device = mkOption { type = types.str; default = ""; };
      devices = mkOption { type = types.listOf types.str; default = [ ]; };
      mirroredBoots = mkOption {
        type = types.listOf (types.submodule {
          options = from grubNix {
            path = mkOption { type = types.str; };
            devices = mkOption { type = types.listOf types.str; default = [ ]; };
            efiSysMountPoint = mkOption { type = types.nullOr types.str; default = null; };
          };
        });
        default = [ ];
      };
      efiSupport = mkOption { type = types.bool; default = false; };
      efiInstallAsRemovable = mkOption { type = types.bool; default = false; };
      configurationLimit = mkOption { type = types.int; default = 100; };
    };
    loader.systemd-boot = from "nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix" {
      enable = mkOption { type = types.bool; default = false; };
      configurationLimit = mkOption { type = types.nullOr types.int; default = null; };
      # The stored copy read defaults to true (newer releases may not): the
      # repository sets it explicitly.
      editor = mkOption { type = types.bool; default = true; };
    };
    loader.efi = from "nixos/modules/system/boot/loader/efi.nix" {
      canTouchEfiVariables = mkOption { type = types.bool; default = false; };
      efiSysMountPoint = mkOption { type = types.str; default = "/boot"; };
    };
    initrd.availableKernelModules = from kernelNix modulesOption;
    initrd.kernelModules = from kernelNix modulesOption;
    initrd.luks.devices = from "nixos/modules/system/boot/luksroot.nix" (mkOption {
      type = types.attrsOf (types.submodule {
        options = from "nixos/modules/system/boot/luksroot.nix" {
          device = mkOption { type = types.str; };
          allowDiscards = mkOption { type = types.bool; default = false; };
        };
      });
      default = { };
    });
    kernelModules = from kernelNix modulesOption;
    kernelParams = from kernelNix (mkOption {
      type = types.listOf (types.strMatching ''([^"[:space:]]|"[^"]*")+''
        // { name = "kernelParam"; description = "string, with spaces inside double quotes"; });
      default = [ ];
    });
    extraModulePackages = from kernelNix (mkOption { type = types.listOf types.package; default = [ ]; });
  };
  # Each loader names itself here; two enabled loaders conflict like in NixOS.
  options.system.boot.loader.id = from "nixos/modules/system/boot/loader/loader.nix"
    (mkOption { type = types.str; default = ""; });

  config = lib.mkMerge [
    (lib.mkIf config.boot.loader.systemd-boot.enable {
      boot.loader.grub.enable = lib.mkDefault false;
      system.boot.loader.id = "systemd-boot";
    })
    (lib.mkIf grub.enable {
      boot.loader.grub.devices = lib.optional (grub.device != "") grub.device;
      boot.loader.grub.mirroredBoots = lib.optionals (grub.devices != [ ]) [
        { path = "/boot"; inherit (grub) devices; inherit (config.boot.loader.efi) efiSysMountPoint; }
      ];
      system.boot.loader.id = "grub";
      assertions = [
        {
          assertion = grub.mirroredBoots != [ ];
          message = "You must set the option ‘boot.loader.grub.devices’ or "
            + "'boot.loader.grub.mirroredBoots' to make the system bootable.";
        }
        {
          assertion = grub.efiInstallAsRemovable -> grub.efiSupport;
          message = "If you wish to to use boot.loader.grub.efiInstallAsRemovable, then turn on boot.loader.grub.efiSupport";
        }
      ] ++ builtins.concatMap
        (b: map
          (device: {
            assertion = device == "nodev" || lib.hasPrefix "/" device;
            message = "GRUB devices must be absolute paths, not ${device} in ${b.path}";
          })
          b.devices)
        grub.mirroredBoots;
    })
  ];
}
