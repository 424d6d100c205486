# services.postgresql: options, default authentication and ident map, the
# ensureDBOwnership assertion and the postgres account.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types from;
  pgNix = "nixos/modules/services/databases/postgresql.nix";
  cfg = config.services.postgresql;
in
{
  options.services.postgresql = from pgNix {
    enable = mkOption { type = types.bool; default = false; };
    package = mkOption { type = types.package; };
    enableTCPIP = mkOption { type = types.bool; default = false; };
    authentication = mkOption { type = types.lines; default = ""; };
    identMap = mkOption { type = types.lines; default = ""; };
    ensureDatabases = mkOption { type = types.listOf types.str; default = [ ]; };
    ensureUsers = mkOption {
      type = types.listOf (types.submodule {
        options = from pgNix {
          name = mkOption { type = types.str; };
          ensureDBOwnership = mkOption { type = types.bool; default = false; };
          ensureClauses = mkOption {
            type = types.submodule { freeformType = types.attrsOf (types.oneOf [ types.str types.int types.bool ]); };
            default = { };
          };
        };
      });
      default = [ ];
    };
    settings = mkOption {
      type = types.submodule {
        freeformType = types.attrsOf (types.oneOf [ types.bool types.float types.int types.str ]);
        options = from pgNix {
          port = mkOption { type = types.port; default = 5432; };
        };
      };
      default = { };
    };
    superUser = mkOption { type = types.str; default = "postgres"; };
  };

  config = lib.mkIf cfg.enable {
    services.postgresql.authentication = lib.mkMerge [
      (lib.mkBefore "# Generated file; do not edit!")
      (lib.mkAfter ''
        # default value of services.postgresql.authentication
        local all ${cfg.superUser}         peer map=postgres
        local all all              peer
        host  all all 127.0.0.1/32 md5
        host  all all ::1/128      md5
      '')
    ];
    services.postgresql.identMap = lib.mkAfter ''
      postgres ${cfg.superUser} ${cfg.superUser}
    '';
    # No default in the option: the module picks the major version from
    # system.stateVersion (postgresql.nix, `services.postgresql.package =
    # let … base = if versionAtLeast config.system.stateVersion "25.11" …`),
    # so a configuration without `package` evaluates on NixOS. The oldest
    # surviving major warns, removed ones throw, as there.
    services.postgresql.package =
      let
        v = config.system.stateVersion;
        removed = ver: throw "postgresql_${ver} was removed, please upgrade your postgresql version.";
        oldest = ver: builtins.trace "evaluation warning: The postgresql package is not pinned and selected automatically by `system.stateVersion`. Right now this is `pkgs.postgresql_${ver}`, the oldest postgresql version available and thus the next that will be removed when EOL on the next stable cycle.";
      in
      lib.mkDefault (
        if lib.versionAtLeast v "25.11" then pkgs.postgresql_17
        else if lib.versionAtLeast v "24.11" then pkgs.postgresql_16
        else if lib.versionAtLeast v "23.11" then pkgs.postgresql_15
        else if lib.versionAtLeast v "22.05" then pkgs.postgresql_14
        else if lib.versionAtLeast v "21.11" then oldest "13" pkgs.postgresql_13
        else if lib.versionAtLeast v "20.03" then removed "11"
        else if lib.versionAtLeast v "17.09" then removed "9_6"
        else removed "9_5");
    users.users.postgres = { uid = 71; group = "postgres"; description = "PostgreSQL server user"; home = "/var/lib/postgresql"; useDefaultShell = true; };
    users.groups.postgres = { };
    environment.systemPackages = [ cfg.package ];
    double.forceValues = [ cfg.package ];
    assertions = map
      (u: {
        assertion = u.ensureDBOwnership -> builtins.elem u.name cfg.ensureDatabases;
        message = ''
          For each database user defined with `services.postgresql.ensureUsers` and
          `ensureDBOwnership = true;`, a database with the same name must be defined
          in `services.postgresql.ensureDatabases`.

          Offender: ${u.name} has not been found among databases.
        '';
      })
      cfg.ensureUsers;
  };
}
