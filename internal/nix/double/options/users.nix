# Users, groups, sudo. The parts of users-groups.nix that decide what an
# account looks like (normal users' defaults, the default shell) and its
# assertions are reproduced.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types from;
  usersNix = "nixos/modules/config/users-groups.nix";
  sshdNix = "nixos/modules/services/networking/ssh/sshd.nix";
  cfg = config.users;
  passwd = types.passwdEntry;

  userOpts = { name, config, ... }: {
    options = from usersNix {
      enable = mkOption { type = types.bool; default = true; };
      name = mkOption { type = passwd types.str; };
      description = mkOption { type = passwd types.str; default = ""; };
      uid = mkOption { type = types.nullOr types.int; default = null; };
      isSystemUser = mkOption { type = types.bool; default = false; };
      isNormalUser = mkOption { type = types.bool; default = false; };
      group = mkOption { type = types.str; default = ""; };
      extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
      home = mkOption { type = passwd types.path; default = "/var/empty"; };
      createHome = mkOption { type = types.bool; default = false; };
      shell = mkOption {
        type = types.nullOr (types.either types.shellPackage (passwd types.path));
        default = pkgs.shadow;
      };
      useDefaultShell = mkOption { type = types.bool; default = false; };
      hashedPassword = mkOption { type = types.nullOr (passwd types.str); default = null; };
      password = mkOption { type = types.nullOr types.str; default = null; };
      hashedPasswordFile = mkOption { type = types.nullOr types.str; default = null; };
      initialHashedPassword = mkOption { type = types.nullOr (passwd types.str); default = null; };
      initialPassword = mkOption { type = types.nullOr types.str; default = null; };
      packages = mkOption { type = types.listOf types.package; default = [ ]; };
    } // {
      openssh.authorizedKeys = from sshdNix {
        keys = mkOption { type = types.listOf types.singleLineStr; default = [ ]; };
        keyFiles = mkOption { type = types.listOf types.path; default = [ ]; };
      };
    };
    config = lib.mkMerge [
      {
        name = lib.mkDefault name;
        shell = lib.mkIf config.useDefaultShell (lib.mkDefault cfg.defaultUserShell);
      }
      (lib.mkIf config.isNormalUser {
        group = lib.mkDefault "users";
        createHome = lib.mkDefault true;
        home = lib.mkDefault "${cfg.defaultUserHome}/${config.name}";
        useDefaultShell = lib.mkDefault true;
        isSystemUser = lib.mkDefault false;
      })
    ];
  };

  groupOpts = { name, ... }: {
    options = from usersNix {
      name = mkOption { type = passwd types.str; default = name; };
      gid = mkOption { type = types.nullOr types.int; default = null; };
      members = mkOption { type = types.listOf (passwd types.str); default = [ ]; };
    };
  };

  # The groups NixOS itself defines (users-groups.nix, config.users.groups).
  builtinGroups = [ "root" "wheel" "disk" "kmem" "tty" "floppy" "uucp" "lp" "cdrom" "tape" "audio" "video"
    "dialout" "nogroup" "users" "nixbld" "utmp" "adm" "input" "kvm" "render" "sgx" "shadow" "clock" ];
in
{
  options.users = from usersNix {
    mutableUsers = mkOption { type = types.bool; default = true; };
    users = mkOption { type = types.attrsOf (types.submodule userOpts); default = { }; };
    groups = mkOption { type = types.attrsOf (types.submodule groupOpts); default = { }; };
    defaultUserHome = mkOption { type = types.str; default = "/home"; };
  } // {
    defaultUserShell = from "nixos/modules/config/shells-environment.nix" (mkOption {
      type = types.either types.path types.shellPackage;
      default = pkgs.bashInteractive;
    });
  };

  options.security.sudo = from "nixos/modules/security/sudo.nix" {
    enable = mkOption { type = types.bool; default = true; };
    wheelNeedsPassword = mkOption { type = types.bool; default = true; };
  };

  config = {
    users.users.root = { uid = 0; description = "System administrator"; home = "/root"; group = "root"; shell = lib.mkDefault cfg.defaultUserShell; };
    users.users.nobody = { uid = 65534; isSystemUser = true; group = "nogroup"; };
    users.groups = lib.genAttrs builtinGroups (_: { });

    assertions =
      let groupNames = builtins.attrNames cfg.groups; in
      builtins.concatMap
        (u: [
          {
            assertion = u.group != "";
            message = "users.users.${u.name}.group is unset. This used to default to\nnogroup, but this is unsafe. For example you can create a group\nfor this user with:\nusers.users.${u.name}.group = \"${u.name}\";\nusers.groups.${u.name} = {};";
          }
          {
            assertion = u.group == "" || builtins.elem u.group groupNames;
            message = "The following users have a primary group that is undefined: ${u.name}\nHint: Add this to your NixOS configuration:\n  users.groups.${u.group} = {};";
          }
          {
            assertion = (u.isSystemUser || (u.uid != null && u.uid < 1000 && !u.isNormalUser)) != u.isNormalUser;
            message = "Exactly one of users.users.${u.name}.isSystemUser and users.users.${u.name}.isNormalUser must be set.";
          }
        ])
        (builtins.attrValues cfg.users);
  };
}
