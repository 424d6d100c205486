# Programs the targets enable.
{ lib, ... }:
let
  inherit (lib) mkOption types from;
in
{
  options.programs = {
    git.enable = from "nixos/modules/programs/git.nix" (mkOption { type = types.bool; default = false; });
    tmux.enable = from "nixos/modules/programs/tmux.nix" (mkOption { type = types.bool; default = false; });
    direnv.enable = from "nixos/modules/programs/direnv.nix" (mkOption { type = types.bool; default = false; });
  };
}
