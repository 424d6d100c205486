# A desktop for a machine used at its own screen: Plasma 6 with SDDM, as
# targets/dev-workstation/README.md suggests. Plasma turns on SDDM's Wayland
# mode; SDDM without it (or X11) fails the same assertion as NixOS.
{ config, lib, ... }:
let
  inherit (lib) mkOption types from;
  sddmNix = "nixos/modules/services/display-managers/sddm.nix";
  plasma = config.services.desktopManager.plasma6;
  sddm = config.services.displayManager.sddm;
in
{
  options.services = {
    desktopManager.plasma6 = from "nixos/modules/services/desktop-managers/plasma6.nix" {
      enable = mkOption { type = types.bool; default = false; };
      enableQt5Integration = mkOption { type = types.bool; default = true; };
    };
    displayManager.sddm = from sddmNix {
      enable = mkOption { type = types.bool; default = false; };
      wayland.enable = mkOption { type = types.bool; default = false; };
    };
    xserver.enable = from "nixos/modules/services/x11/xserver.nix"
      (mkOption { type = types.bool; default = false; });
  };

  config = lib.mkMerge [
    # plasma6.nix: services.displayManager.sddm.wayland = mkDefault { enable = true; … }.
    (lib.mkIf plasma.enable {
      services.displayManager.sddm.wayland.enable = lib.mkDefault true;
    })
    (lib.mkIf sddm.enable {
      assertions = [{
        assertion = config.services.xserver.enable || sddm.wayland.enable;
        message = ''
          SDDM requires either services.xserver.enable or services.displayManager.sddm.wayland.enable to be true
        '';
      }];
    })
  ];
}
