# dev-workstation: a developer machine — compilers, build tools, editors' helpers.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  # Boot loader (UEFI: systemd-boot). It lives here, not in
  # hardware-configuration.nix, which `mage hardware` replaces. On a BIOS
  # machine use GRUB on the boot disk instead:
  #   boot.loader.grub.device = "/dev/disk/by-id/<the disk>";
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

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
