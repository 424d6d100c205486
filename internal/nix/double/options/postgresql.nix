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
