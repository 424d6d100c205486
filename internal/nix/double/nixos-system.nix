# lib.nixosSystem of the test double: the double's module system (./modules.nix)
# over the option schema in ./options plus the configuration's modules, and a
# toplevel built only with /bin/sh and coreutils from the building machine.
{ lib, double }:
{ modules ? [ ], specialArgs ? { }, system ? null, ... }:
let
  inherit (builtins) attrNames filter readDir isAttrs;

  schema = map (f: ./options + "/${f}") (filter (f: builtins.match ".*\\.nix" f != null) (attrNames (readDir ./options)));

  eval = lib.evalModules {
    modules = schema ++ modules;
    specialArgs = { modulesPath = "${double}/nixos/modules"; inherit pkgs; } // specialArgs;
  };
  inherit (eval) options;
  cfg = eval.config;

  hostPlatform =
    if options.nixpkgs.hostPlatform.isDefined then
      (let p = cfg.nixpkgs.hostPlatform; in if isAttrs p then p.system else p)
    else if system != null then system
    else throw "Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set.";
  pkgs = double.legacyPackages.${hostPlatform};
  hostName = cfg.networking.hostName;
  release = "26.11pre-double";

  # nixos/modules/system/activation/top-level.nix
  failedAssertions = map (a: a.message) (filter (a: !a.assertion) cfg.assertions);
  checked =
    if failedAssertions == [ ] then true
    else throw "\nFailed assertions:\n${builtins.concatStringsSep "\n" (map (m: "- " + m) failedAssertions)}";

  sim = cfg.lab.simulate;
  sshdAction =
    if sim.sshd == null then "keep"
    else if sim.sshd == "stop" then "stop"
    else "port:${toString sim.sshd.port}";

  blob = name: mib: derivation {
    inherit name;
    # A different seed gives a different path of the same size.
    seed = sim.closure.seed;
    system = hostPlatform;
    builder = "/bin/sh";
    args = [ "-c" "/usr/bin/mkdir -p $out && /usr/bin/head -c ${toString mib}M /dev/urandom > $out/blob" ];
  };
  deps =
    lib.optional (sim.closure.sharedMiB > 0) (blob "double-shared-${toString sim.closure.sharedMiB}M" sim.closure.sharedMiB)
    ++ lib.optional (sim.closure.uniqueMiB > 0) (blob "double-${hostName}-${toString sim.closure.uniqueMiB}M" sim.closure.uniqueMiB);

  toplevel =
    # Like building a real system: every option evaluated and type-checked
    # (undeclared options fail here), then the assertions.
    assert eval.forced;
    assert checked;
    derivation {
      name = "nixos-system-${hostName}-${release}";
      system = hostPlatform;
      builder = "/bin/sh";
      args = [ "-e" ./build-toplevel.sh ];
      switchScript = ./switch-to-configuration.sh;
      PATH = "/usr/bin:/bin";
      inherit hostName release sshdAction;
      failingUnit = sim.failingUnit;
      exitCode = sim.activation.exitCode;
      buildFailure = sim.build.failure;
      failMessage = sim.activation.message;
      stateVersion = cfg.system.stateVersion;
      # Content hashes (not paths): the toplevel must not change when an
      # unrelated file of the repository changes.
      moduleHashes = builtins.concatStringsSep " " eval.moduleHashes;
      deps = map toString deps;
    };

  config = cfg // {
    system = cfg.system // { build = cfg.system.build // { inherit toplevel; }; };
  };
in
{
  inherit config options pkgs;
  _type = "configuration";
}
