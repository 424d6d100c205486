# Test-only options of the double (undefined in real NixOS; only test copies
# of the repository set them). See ../flake.nix for what each one does.
{ lib, ... }:
let
  inherit (lib) mkOption types from;
in
{
  options.lab.simulate = from "test double (lab.simulate)" {
    activation.exitCode = mkOption { type = types.int; default = 0; };
    activation.message = mkOption { type = types.str; default = "switch-to-configuration: activation failed (simulated)"; };
    sshd = mkOption {
      type = types.nullOr (types.either (types.enum [ "stop" ]) (types.submodule {
        options.port = from "test double (lab.simulate)" (mkOption { type = types.port; });
      }));
      default = null;
    };
    closure.sharedMiB = mkOption { type = types.ints.unsigned; default = 0; };
    closure.uniqueMiB = mkOption { type = types.ints.unsigned; default = 0; };
    closure.seed = mkOption { type = types.str; default = ""; };
    build.failure = mkOption { type = types.str; default = ""; };
    # A unit that fails half a second after the switch (systemd lab hosts).
    failingUnit = mkOption { type = types.strMatching "[A-Za-z0-9_.@-]*"; default = ""; };
  };
}
