# Stub packages: derivations that evaluate but carry no software. The
# functions that build environments (python3.withPackages, rWrapper.override,
# julia-bin.withPackages, jupyter-kernel.create) record what they were asked
# for in `packageNames`, so tests can check what a configuration would
# install. Package values are neither checked nor forced by the double's
# option types (see types.nix), so a name missing here only matters when a
# test reads it.
{ system }:
let
  stub = name: attrs: derivation
    {
      inherit name system;
      builder = "/bin/sh";
      args = [ "-c" "mkdir -p $out/bin" ];
    } // attrs // { inherit name; pname = name; };

  stubs = names: builtins.listToAttrs (map (n: { name = n; value = stub n { }; }) names);

  # An environment whose inputs are recorded but not part of the derivation:
  # instantiating it does not evaluate the (stub) inputs.
  env = name: packageNames: attrs: stub name ({ inherit packageNames; } // attrs);

  # pkgs/development/interpreters/python: python3.withPackages (ps: [ … ]).
  pythonPackages = stubs [
    "ipykernel" "jupyter" "notebook" "jupyterlab" "numpy" "pandas" "matplotlib" "scipy" "psycopg" "psycopg2"
    "sqlalchemy" "scikit-learn" "seaborn" "requests" "pip"
  ];
  python3 = stub "python3" {
    pkgs = pythonPackages;
    sitePackages = "lib/python3.13/site-packages";
    withPackages = f:
      let self = env "python3-env" (map (p: p.pname) (f pythonPackages)) {
        interpreter = "${self}/bin/python3";
        sitePackages = "lib/python3.13/site-packages";
      }; in self;
  };

  # pkgs/development/r-modules: rWrapper.override { packages = [ … ]; }.
  rPackages = stubs [ "IRkernel" "DBI" "RPostgres" "RPostgreSQL" "ggplot2" "dplyr" "tidyverse" "data_table" ];
  rWrapper = stub "R-wrapper" {
    override = { packages ? [ ], ... }: env "R-wrapper" (map (p: p.pname) packages) { };
  };

  # pkgs/development/julia-modules: julia.withPackages [ "IJulia" … ].
  julia = name: stub name { withPackages = names: env "${name}-env" names { }; };

  # pkgs/applications/editors/jupyter-kernel: jupyter-kernel.create { definitions; }.
  jupyter-kernel = {
    default = { };
    create = { definitions ? { } }: env "jupyter-kernels" (builtins.attrNames definitions) { inherit definitions; };
  };

  packages = stubs [
    "coreutils" "curl" "fd" "file" "gcc" "git" "gnumake" "go" "htop" "jq" "mage" "nix" "nixfmt"
    "nixfmt-rfc-style" "nmap" "nodejs" "openssh" "ripgrep" "tmux" "vim" "wget" "jellyfin"
    "postgresql" "postgresql_13" "postgresql_14" "postgresql_15" "postgresql_16" "postgresql_17" "R" "treefmt"
  ] // {
    inherit python3 rPackages rWrapper jupyter-kernel;
    python3Packages = pythonPackages;
    julia = julia "julia";
    julia-bin = julia "julia-bin";
    # nixfmt-tree: treefmt configured for nixfmt, meant for `nix fmt`
    # (pkgs/by-name/ni/nixfmt-tree/package.nix).
    nixfmt-tree = stub "nixfmt-tree" { meta.mainProgram = "treefmt"; };
    # Login shells (users-groups.nix checks `shellPath`).
    bash = stub "bash" { shellPath = "/bin/bash"; };
    bashInteractive = stub "bash-interactive" { shellPath = "/bin/bash"; };
    shadow = stub "shadow" { shellPath = "/bin/nologin"; };
  };
in
packages // {
  mkShell = { packages ? [ ], name ? "nix-shell", ... }: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" "echo $packages > $out" ];
    packages = map (p: p.name or "?") packages;
  };
}
