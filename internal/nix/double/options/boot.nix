# Boot loaders and kernel modules. The GRUB behaviour users meet is
# reproduced: GRUB is on unless another loader turns it off, and without a
# device it fails the same assertion as NixOS.
{ config, lib, ... }:
let
  inherit (lib) mkOption types from;
  grub = config.boot.loader.grub;
  grubNix = "nixos/modules/system/boot/loader/grub/grub.nix";
  kernelNix = "nixos/modules/system/boot/kernel.nix";
  binfmtNix = "nixos/modules/system/boot/binfmt.nix";
  binfmt = config.boot.binfmt;
  hostPlatform = let p = config.nixpkgs.hostPlatform; in if builtins.isAttrs p then p.system else p;
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
    binfmt = from binfmtNix {
      # binfmt.nix: listOf (enum (attrNames utils.binfmtMagics)), the
      # systems of nixos/lib/binfmt-magics.nix.
      emulatedSystems = mkOption {
        type = types.listOf (types.enum [
          "armv6l-linux" "armv7l-linux" "aarch64-linux" "aarch64_be-linux" "i386-linux" "i486-linux"
          "i586-linux" "i686-linux" "x86_64-linux" "alpha-linux" "sparc64-linux" "sparc-linux"
          "powerpc-linux" "powerpc64-linux" "powerpc64le-linux" "mips-linux" "mipsel-linux"
          "mips64-linux" "mips64el-linux" "mips64-linuxabin32" "mips64el-linuxabin32"
          "riscv32-linux" "riscv64-linux" "loongarch64-linux" "wasm32-wasi" "wasm64-wasi"
          "s390x-linux" "x86_64-windows" "i686-windows"
        ]);
        default = [ ];
      };
      addEmulatedSystemsToNixSandbox = mkOption { type = types.bool; default = true; };
    };
  };
  # Each loader names itself here; two enabled loaders conflict like in NixOS.
  options.system.boot.loader.id = from "nixos/modules/system/boot/loader/loader.nix"
    (mkOption { type = types.str; default = ""; });

  config = lib.mkMerge [
    # binfmt.nix: the emulated systems become extra platforms of the
    # machine's Nix (i686 too on x86_64); emulating its own system fails
    # the module's `assert system != pkgs.stdenv.hostPlatform.system`.
    (lib.mkIf (binfmt.addEmulatedSystemsToNixSandbox && binfmt.emulatedSystems != [ ]) {
      nix.settings.extra-platforms =
        map (system: assert system != hostPlatform; system) binfmt.emulatedSystems
        ++ lib.optional (hostPlatform == "x86_64-linux") "i686-linux";
    })
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
