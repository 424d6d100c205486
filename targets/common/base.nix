# Base system for every target: Nix, SSH, networking, locale, disk hygiene.
# Options verified against nixpkgs (nixos-unstable, 26.11): file names below
# are relative to nixos/modules/ in the nixpkgs repository.
{ config, lib, pkgs, ... }:
let
  cfg = config.homelab;
in
{
  options.homelab = {
    fail2ban.enable = lib.mkEnableOption "fail2ban, which bans addresses after repeated failed SSH logins";
  };

  config = {
    nix.settings = {
      experimental-features = [ "nix-command" "flakes" ];
      auto-optimise-store = true;

      # No user besides root is a trusted Nix user: a trusted user is
      # root-equivalent through the nix-daemon, without a password, for any
      # program running as that user. Deployments copy closures built
      # elsewhere either through a root nix-daemon that `mage deploy` starts
      # with sudo (the default, -trust=sudo: the sudo right activation needs
      # anyway), or signed with a deployer's key this file's sibling
      # deployer-keys.nix trusts (-trust=signed). nixpkgs' config/nix.nix
      # defaults trusted-users to [ "root" ].

      # Keep builds from filling the disk: when free space on /nix drops
      # below 1 GiB during a build, collect garbage until 5 GiB are free.
      # (Free-form settings; nix.nix checks them against `nix config show`.)
      min-free = 1024 * 1024 * 1024;
      max-free = 5 * 1024 * 1024 * 1024;
    };

    # Old generations keep their whole closure alive; delete them weekly.
    # (services/misc/nix-gc.nix)
    nix.gc = {
      automatic = true;
      dates = "weekly";
      options = "--delete-older-than 30d";
    };

    # Each target chooses its boot loader in its configuration.nix (UEFI:
    # systemd-boot; BIOS: GRUB with a device). For both: a small /boot fills
    # up with kernels of old generations, so keep ten boot entries; and no
    # editing of the kernel command line at the boot menu (init=/bin/sh would
    # give a root shell to anyone at the keyboard).
    # (system/boot/loader/systemd-boot/systemd-boot.nix, loader/grub/grub.nix)
    boot.loader.systemd-boot.configurationLimit = lib.mkDefault 10;
    boot.loader.systemd-boot.editor = lib.mkDefault false;
    boot.loader.grub.configurationLimit = lib.mkDefault 10;

    # Key-only SSH. The settings are sshd_config keys: the two authentication
    # switches are booleans, PermitRootLogin is an enum string.
    # (services/networking/ssh/sshd.nix)
    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "no";
        # Free half-open sessions (a deployer whose link died) after about a
        # minute instead of TCP's two hours, and with them the deploy lock
        # such a session holds. Free-form settings of services/networking/
        # ssh/sshd.nix (settingsFormat: ints are written as they are).
        ClientAliveInterval = 15;
        ClientAliveCountMax = 4;
      };
    };

    # NetworkManager manages every interface (and turns networking.useDHCP
    # off itself). Do not also enable DHCP on a named interface such as eth0:
    # two DHCP clients would fight over it, and real hardware rarely has eth0.
    networking.networkmanager.enable = true;
    networking.firewall = {
      enable = true;
      allowedTCPPorts = [ 22 ];
    };

    services.fail2ban.enable = cfg.fail2ban.enable;

    environment.systemPackages = with pkgs; [ vim git htop tmux wget curl ];

    time.timeZone = "America/Los_Angeles";
    i18n.defaultLocale = "en_US.UTF-8";

    # The NixOS release this machine was FIRST INSTALLED with. It decides the
    # on-disk formats of stateful services (e.g. the PostgreSQL major version),
    # so never raise it on an existing machine, even after upgrading nixpkgs.
    # A target installed with another release overrides it in its
    # configuration.nix: system.stateVersion = "25.11";
    system.stateVersion = lib.mkDefault "26.05";
  };
}
