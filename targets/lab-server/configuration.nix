# lab-server: data-science machine for the lab — Jupyter with Python, R and
# Julia kernels, PostgreSQL with a `lab` database, and a C toolchain.
#
# Checked against nixpkgs (nixos-unstable; paths in the nixpkgs repository):
#   nixos/modules/services/development/jupyter/default.nix and kernel-options.nix
#   nixos/modules/services/databases/postgresql.nix
#   nixos/modules/config/users-groups.nix (useDefaultShell, shell)
#   pkgs/development/r-modules/wrapper.nix (rWrapper), cran-packages.json (IRkernel, RPostgres)
#   pkgs/development/compilers/julia/default.nix, pkgs/development/julia-modules (withPackages)
#   pkgs/development/python-modules/psycopg
# README.md explains each choice and what to do on the machine.
{ config, lib, pkgs, ... }:
let
  # The kernels' environments, also installed for logins (same libraries in
  # a notebook and in a shell).
  python = pkgs.python3.withPackages (ps: with ps; [
    ipykernel # runs the kernel
    numpy
    pandas
    matplotlib
    scipy
    psycopg # PostgreSQL driver (psycopg 3)
  ]);
  R = pkgs.rWrapper.override {
    packages = with pkgs.rPackages; [ IRkernel DBI RPostgres ];
  };
  # julia-bin is the upstream binary (`julia` builds from source for hours).
  # withPackages resolves against the Julia registry snapshot in nixpkgs at
  # evaluation time (import from derivation): the first build of this system
  # downloads and precompiles IJulia and LibPQ.
  julia = pkgs.julia-bin.withPackages [ "IJulia" "LibPQ" ];
in
{
  imports = [ ./hardware-configuration.nix ];

  # Boot loader (nixos-generate-config puts it in configuration.nix, never in
  # hardware-configuration.nix). UEFI machine: systemd-boot. On a BIOS
  # machine use GRUB on the boot disk instead:
  #   boot.loader.grub.device = "/dev/disk/by-id/<the disk>";
  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;

  services.jupyter = {
    enable = true;
    # Localhost only. Jupyter speaks plain HTTP and a logged-in notebook runs
    # any code as the jupyter user; reach it through SSH (your key, nothing
    # exposed on the LAN):
    #   ssh -N -L 8888:localhost:8888 monibahmed@192.168.1.50
    # then open http://localhost:8888. To serve the LAN instead, see README.md.
    ip = "127.0.0.1";
    port = 8888;
    # REQUIRED, no default: an argon2 hash of the notebook password, created with
    #   python3 -c 'from jupyter_server.auth import passwd; print(passwd())'
    # It ends up in the world-readable Nix store: a hash, never the password.
    # Until it is replaced nobody can log in to Jupyter (`mage check` warns).
    password = "argon2:$argon2id$v=19$m=10240,t=10,p=8$REPLACE-WITH-YOUR-HASH";
    # No terminals in the browser: notebooks need none, and a terminal would
    # be an interactive shell on the machine.
    notebookConfig = ''
      c.ServerApp.terminals_enabled = False
    '';
    kernels = {
      python3 = {
        displayName = "Python 3 (numpy, pandas, matplotlib, scipy, psycopg)";
        argv = [ python.interpreter "-m" "ipykernel_launcher" "-f" "{connection_file}" ];
        language = "python";
      };
      # IRkernel's own kernel.json, with the R that has the packages.
      ir = {
        displayName = "R (IRkernel, DBI, RPostgres)";
        argv = [ "${R}/bin/R" "--slave" "-e" "IRkernel::main()" "--args" "{connection_file}" ];
        language = "R";
      };
      # IJulia's installkernel() command line; older IJulia releases start
      # from their kernel.jl instead of run_kernel().
      julia = {
        displayName = "Julia (IJulia, LibPQ)";
        argv = [
          "${julia}/bin/julia" "-i" "--color=yes" "-e"
          ''import IJulia; isdefined(IJulia, :run_kernel) ? IJulia.run_kernel() : include(joinpath(pkgdir(IJulia), "src", "kernel.jl"))''
          "{connection_file}"
        ];
        language = "julia";
      };
    };
    # Every kernel's PostgreSQL client reads these: notebooks connect to the
    # lab database without arguments and without a password, e.g.
    #   psycopg.connect("")   DBI::dbConnect(RPostgres::Postgres())   LibPQ.Connection("")
    extraEnvironmentVariables = {
      PGHOST = "/run/postgresql";
      PGDATABASE = "lab";
      PGUSER = "lab";
    };
  };
  # The jupyter account (created by the module) gets no login shell: the
  # module only gives it one for browser terminals, which are off above.
  users.users.jupyter = lib.mkIf config.services.jupyter.enable {
    useDefaultShell = lib.mkForce false;
  };

  services.postgresql = {
    enable = true;
    # Pin the major version: the default follows system.stateVersion and a
    # major upgrade needs a manual data migration.
    package = pkgs.postgresql_17;
    ensureDatabases = [ "lab" ];
    # The role `lab` owns the database `lab` (created on first start).
    ensureUsers = [{ name = "lab"; ensureDBOwnership = true; }];
    # Who may connect as `lab`: monibahmed (`psql -U lab lab`) and the
    # notebooks (the jupyter account). Peer authentication over the Unix
    # socket: the kernel vouches for the system user, no password exists.
    # The module adds its defaults after this line (peer for everyone else,
    # passwords over TCP on localhost only; enableTCPIP stays off).
    identMap = ''
      lab monibahmed lab
      lab jupyter    lab
    '';
    authentication = ''
      local lab lab peer map=lab
    '';
  };

  environment.systemPackages = [ python R julia pkgs.gcc ];
}
