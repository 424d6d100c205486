# lib.nixosSystem of the test double: a small module system and a toplevel
# built only with /bin/sh and coreutils from the building machine.
{ lib, double }:
{ modules ? [ ], specialArgs ? { }, system ? null, ... }:
let
  inherit (builtins) isAttrs isFunction isList isPath isString attrNames concatMap
    filter foldl' head length all any elem hashFile hashString toJSON;

  # ---- collecting modules -------------------------------------------------
  # A module is a path, a function returning an attribute set, or an
  # attribute set; paths and functions may be nested through `imports`.
  callModule = m:
    let
      raw = if isPath m || isString m then import m else m;
      args = specialArgs // {
        inherit lib config options pkgs;
        modulesPath = "${double}/nixos/modules";
      };
    in
    if isFunction raw then raw (builtins.intersectAttrs (builtins.functionArgs raw) args) else raw;

  # `import ./dir` reads ./dir/default.nix.
  moduleFile = p: if builtins.pathExists (p + "/default.nix") then p + "/default.nix" else p;

  collect = m:
    let
      v = callModule m;
      structured = v ? config || v ? options;
      own = {
        # Content hashes (not paths): the toplevel must not change when an
        # unrelated file of the repository changes.
        hashes = if isPath m then [ (hashFile "sha256" (moduleFile m)) ] else [ ];
        options = v.options or { };
        defs = if structured then v.config or { }
          else removeAttrs v [ "imports" "_file" "key" "disabledModules" "meta" ];
      };
    in
    [ own ] ++ concatMap collect (v.imports or [ ]);

  collected = concatMap collect modules;

  # ---- merging ----------------------------------------------------------
  isOption = v: isAttrs v && (v._type or null) == "option";
  isDerivation = v: isAttrs v && (v.type or null) == "derivation";
  isPlainSet = v: isAttrs v && !(v ? _type) && !isDerivation v;

  # An item is one definition with the conditions and priority that wrap it.
  item = value: { conds = [ ]; prio = 100; inherit value; };
  unwrap = it:
    let v = it.value; t = if isAttrs v then v._type or null else null; in
    if t == "merge" then concatMap (c: unwrap (it // { value = c; })) v.contents
    else if t == "if" then unwrap (it // { conds = it.conds ++ [ v.condition ]; value = v.content; })
    else if t == "override" then unwrap (it // { prio = v.priority; value = v.content; })
    else [ it ];

  showPath = path: builtins.concatStringsSep "." path;

  # mergeWith walks the definitions like the module system: attribute sets
  # merge name by name, and at the leaves `leaf` decides.
  mergeWith = leaf: path: items0:
    let items = concatMap unwrap items0; in
    if items != [ ] && all (it: isPlainSet it.value) items then
      let names = attrNames (foldl' (acc: it: acc // it.value) { } items); in
      lib.genAttrs names (n: mergeWith leaf (path ++ [ n ])
        (concatMap (it: if it.value ? ${n} then [ (it // { value = it.value.${n}; }) ] else [ ]) items))
    else leaf path items;

  activeOf = items: filter (it: all (c: c) it.conds) items;

  # The value of an option: the definitions of the highest priority, lists
  # concatenated, other values equal.
  resolve = path: items:
    let
      active = activeOf items;
      best = foldl' (p: it: if it.prio < p then it.prio else p) 100000 active;
      chosen = map (it: it.value) (filter (it: it.prio == best) active);
    in
    if active == [ ] then throw "The option `${showPath path}' is used but not defined."
    else if all isList chosen then builtins.concatLists chosen
    else if all (v: v == head chosen) chosen then head chosen
    else throw "The option `${showPath path}' has conflicting definition values: ${toJSON chosen}";

  mergeItems = mergeWith resolve;
  # Same shape, leaves say whether anything defines them (mkIf false does not).
  definedItems = mergeWith (path: items: activeOf items != [ ]);

  # Option declarations: merged trees whose leaves are mkOption values.
  options = foldl' (acc: m: recursiveUpdateUntil acc m.options) { } collected;
  recursiveUpdateUntil = a: b:
    a // builtins.mapAttrs (n: bv:
      if a ? ${n} && isAttrs a.${n} && !isOption a.${n} && isAttrs bv && !isOption bv
      then recursiveUpdateUntil a.${n} bv else bv) b;
  # Defaults become definitions at the priority of mkOptionDefault.
  defaultsOf = tree: builtins.mapAttrs (n: v:
    if isOption v then (if v ? default then lib.mkOptionDefault v.default else lib.mkMerge [ ])
    else if isAttrs v then defaultsOf v else lib.mkMerge [ ]) tree;

  allItems = map (m: item m.defs) collected ++ [ (item (defaultsOf options)) ];
  merged = mergeItems [ ] allItems;
  defined = definedItems [ ] allItems;

  # ---- the parts of the configuration the double looks at ------------------
  hostName = merged.networking.hostName or "nixos";
  hostPlatform =
    let p = merged.nixpkgs.hostPlatform or system; in
    if p == null then throw "Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set."
    else if isAttrs p then p.system else p;
  pkgs = double.legacyPackages.${hostPlatform};
  release = "26.11pre-double";

  failed = filter (a: !a.assertion) [
    {
      assertion = merged ? fileSystems && merged.fileSystems ? "/";
      message = "The ‘fileSystems’ option does not specify your root file system.";
    }
    {
      assertion =
        let b = merged.boot or { }; l = b.loader or { }; g = l.grub or { }; in
        (b.isContainer or false) || (l.systemd-boot.enable or false) || (g.enable or true) == false
        || (g.device or "") != "" || (g.devices or [ ]) != [ ];
      message = "You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable.";
    }
  ];
  checked = if failed == [ ] then true
    else throw "\nFailed assertions:\n${builtins.concatStringsSep "\n" (map (a: "- " + a.message) failed)}";

  sim = merged.lab.simulate or { };
  activation = sim.activation or { };
  exitCode = activation.exitCode or 0;
  sshdAction =
    let s = sim.sshd or null; in
    if s == null then "keep"
    else if s == "stop" then "stop"
    else if isAttrs s && s ? port then "port:${toString s.port}"
    else throw "lab.simulate.sshd must be \"stop\" or { port = N; }";
  failingUnit =
    let u = sim.failingUnit or ""; in
    if isString u && builtins.match "[A-Za-z0-9_.@-]*" u != null then u
    else throw "lab.simulate.failingUnit must be a unit name such as \"indexer\"";
  closure = sim.closure or { };

  blob = name: mib: derivation {
    inherit name;
    # A different seed gives a different path of the same size.
    seed = toString (closure.seed or "");
    system = hostPlatform;
    builder = "/bin/sh";
    args = [ "-c" "/usr/bin/mkdir -p $out && /usr/bin/head -c ${toString mib}M /dev/urandom > $out/blob" ];
  };
  deps =
    lib.optional ((closure.sharedMiB or 0) > 0) (blob "double-shared-${toString closure.sharedMiB}M" closure.sharedMiB)
    ++ lib.optional ((closure.uniqueMiB or 0) > 0) (blob "double-${hostName}-${toString closure.uniqueMiB}M" closure.uniqueMiB);

  # Evaluate every defined value (to weak head normal form), as NixOS's type
  # checks do, so that mistakes such as `port = 8888 + "x";` fail here too.
  # Package-valued options are skipped: the double has no real packages.
  packageOptions = [ "package" "packages" "systemPackages" "extraPackages" "shell" "kernelPackages" "plugins" ];
  forceLeaves = v: d:
    if d == false then true # only mkIf-false definitions: as if unset
    else if isAttrs d && isPlainSet v then
      builtins.all (n: elem n packageOptions || forceLeaves v.${n} d.${n}) (attrNames v)
    else builtins.seq v true;
  evaluated = forceLeaves merged defined;

  toplevel =
    assert checked;
    assert evaluated;
    assert builtins.isInt exitCode;
    derivation {
      name = "nixos-system-${hostName}-${release}";
      system = hostPlatform;
      builder = "/bin/sh";
      args = [ "-e" ./build-toplevel.sh ];
      switchScript = ./switch-to-configuration.sh;
      PATH = "/usr/bin:/bin";
      inherit hostName release exitCode sshdAction failingUnit;
      buildFailure = sim.build.failure or "";
      failMessage = activation.message or "switch-to-configuration: activation failed (simulated)";
      stateVersion = merged.system.stateVersion or release;
      moduleHashes = builtins.concatStringsSep " " (concatMap (m: m.hashes) collected);
      deps = map toString deps;
    };

  config = merged // {
    system = (merged.system or { }) // {
      build = ((merged.system or { }).build or { }) // { inherit toplevel; };
    };
  };
in
{
  inherit config options pkgs;
  _type = "configuration";
}
