# Hardware options that nixos-generate-config writes.
{ lib, ... }:
let
  inherit (lib) mkOption types from;
in
{
  options.hardware = {
    cpu.intel.updateMicrocode = from "nixos/modules/hardware/cpu/intel-microcode.nix"
      (mkOption { type = types.bool; default = false; });
    cpu.amd.updateMicrocode = from "nixos/modules/hardware/cpu/amd-microcode.nix"
      (mkOption { type = types.bool; default = false; });
    enableRedistributableFirmware = from "nixos/modules/hardware/all-firmware.nix"
      (mkOption { type = types.bool; default = false; });
    enableAllFirmware = from "nixos/modules/hardware/all-firmware.nix"
      (mkOption { type = types.bool; default = false; });
  };
  options.powerManagement.cpuFreqGovernor = from "nixos/modules/tasks/cpu-freq.nix"
    (mkOption { type = types.nullOr types.str; default = null; });
}
