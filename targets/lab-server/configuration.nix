# lab-server: data-science workstation for the lab — Jupyter, PostgreSQL,
# Python, R, Julia and a C toolchain.
{ pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ];

  services.jupyter = {
    enable = true;
    # Listen on the LAN (the default is localhost only); the module has no
    # openFirewall option, so the port is opened below.
    ip = "0.0.0.0";
    port = 8888;
    # REQUIRED, no default: an argon2 hash of the notebook password, created with
    #   python3 -c 'from jupyter_server.auth import passwd; print(passwd())'
    # It ends up in the world-readable Nix store: use a hash, never the password.
    # Until it is replaced nobody can log in to Jupyter (`mage check` warns).
    password = "argon2:$argon2id$v=19$m=10240,t=10,p=8$REPLACE-WITH-YOUR-HASH";
  };

  services.postgresql = {
    enable = true;
    # Pin the major version: the default follows system.stateVersion and a
    # major upgrade needs a manual data migration.
    package = pkgs.postgresql_17;
    ensureDatabases = [ "lab" ];
    ensureUsers = [{ name = "lab"; ensureDBOwnership = true; }];
  };

  networking.firewall.allowedTCPPorts = [ 8888 ];

  environment.systemPackages = with pkgs; [
    (python3.withPackages (ps: with ps; [ numpy pandas matplotlib scipy ]))
    gcc
    R
    # The upstream binary release: `julia` is built from source, which takes hours.
    julia-bin
  ];
}
