# dev-workstation: a developer machine — compilers, build tools, editors' helpers.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  programs.git.enable = true;
  programs.tmux.enable = true;
  # direnv with nix-direnv: `use flake` in .envrc loads a project's dev shell.
  programs.direnv.enable = true;

  environment.systemPackages = with pkgs; [
    go
    gcc
    gnumake
    python3
    nodejs
    ripgrep
    fd
    jq
    nixfmt
  ];
}
