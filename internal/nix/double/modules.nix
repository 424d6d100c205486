# evalModules of the test double: the module system NixOS runs on, reduced to
# what the repository uses (nixpkgs' lib/modules.nix is the model).
#
#   * modules are paths, functions or attribute sets, with `imports`
#     (deduplicated by path), `options`, `config` and `freeformType`;
#   * definitions keep mkIf/mkMerge/mkOverride/mkOrder until they reach
#     their option, where they are discharged, prioritised and type-checked;
#   * a definition without a declared option fails like NixOS:
#     "The option `…' does not exist. Definition values: - In `file:line:col': …"
#     (Nix knows where each attribute was written, so the double names the
#     line; NixOS names only the file);
#   * `forced` evaluates every defined option deeply (type checks included),
#     as building a real system evaluates nearly every option.
lib:
{ modules, prefix ? [ ], specialArgs ? { } }:
let
  inherit (builtins) isAttrs isFunction isPath isString attrNames concatMap filter foldl' head all hasAttr;
  inherit (lib) isOption showOption showDefs;

  args = specialArgs // { inherit lib config options; };

  # `import ./dir` reads ./dir/default.nix; name that file in messages.
  moduleFile = p: if isPath p && builtins.pathExists (p + "/default.nix") then p + "/default.nix" else p;

  # Attributes of a module that are not configuration.
  reserved = [ "_file" "key" "disabledModules" "require" "imports" "freeformType" "meta" "_class" ];

  unify = key: file: m:
    if !isAttrs m then throw "Module `${key}' is not a module: it evaluates to a ${builtins.typeOf m}."
    else if m ? config || m ? options then
      let bad = builtins.filter (n: !builtins.elem n (reserved ++ [ "options" "config" ])) (attrNames m); in
      if bad != [ ] then
        throw "Module `${key}' has an unsupported attribute `${head bad}'. This is caused by introducing a top-level `config' or `options' attribute. Add configuration attributes immediately on the top level instead, or move all of them (namely: ${toString bad}) into the explicit `config' attribute."
      else {
        _file = m._file or file;
        imports = m.imports or [ ];
        options = m.options or { };
        defs = [{ file = m._file or file; value = m.config or { }; skip = [ ]; }];
        freeformType = m.freeformType or null;
      }
    else {
      _file = m._file or file;
      imports = (m.require or [ ]) ++ (m.imports or [ ]);
      options = { };
      # The module itself (not a copy without the reserved names): Nix keeps
      # attribute positions only on the original set.
      defs = [{ file = m._file or file; value = m; skip = reserved; }];
      freeformType = m.freeformType or null;
    };

  node = parentFile: parentKey: i: m:
    let
      pathLike = isPath m || isString m;
      file = if pathLike then toString (moduleFile m) else parentFile;
      key = if pathLike then toString m else "${parentKey}:anon-${toString i}";
      raw = if pathLike then import m else m;
      value = if isFunction raw then raw (builtins.intersectAttrs (builtins.functionArgs raw) args) else raw;
    in
    unify key file value // {
      inherit key;
      hashes = if isPath m then [ (builtins.hashFile "sha256" (moduleFile m)) ] else [ ];
    };

  collected = builtins.genericClosure {
    startSet = lib.imap1 (i: m: node "<unknown-file>" "" i m) modules;
    operator = n: lib.imap1 (i: m: node n._file n.key i m) n.imports;
  };

  # ---- declarations ---------------------------------------------------------
  declare = file: tree: builtins.mapAttrs
    (n: v:
      if isOption v then v // { declarations = [ file ]; }
      else if isAttrs v then declare file v
      else throw "The option declaration `${n}' in `${file}' is neither an option nor a set of options.")
    tree;
  mergeDecls = loc: a: b: a // builtins.mapAttrs
    (n: bv:
      if !(a ? ${n}) then bv
      else if isOption a.${n} && isOption bv then
        throw "The option `${showOption (loc ++ [ n ])}' in `${head bv.declarations}' is already declared in `${head a.${n}.declarations}'."
      else if isOption a.${n} || isOption bv then
        throw "The option `${showOption (loc ++ [ n ])}' is declared both as an option and as a set of options."
      else mergeDecls (loc ++ [ n ]) a.${n} bv)
    b;
  declarations = foldl' (acc: m: mergeDecls prefix acc (declare m._file m.options)) { } collected;
  freeformType = foldl' (acc: m: if acc != null then acc else m.freeformType) null collected;

  # ---- definitions ------------------------------------------------------------
  # A definition is { file; value; pos; wrap; skip }: `wrap` re-applies the
  # mkIf/mkOverride that enclosed it, `skip` lists names that are not config.
  pushDown = d:
    let v = d.value; t = if isAttrs v then v._type or null else null; in
    if t == "merge" then concatMap (c: pushDown (d // { value = c; })) v.contents
    else if t == "if" then pushDown (d // { value = v.content; wrap = x: d.wrap (lib.mkIf v.condition x); })
    else if t == "override" then pushDown (d // { value = v.content; wrap = x: d.wrap (lib.mkOverride v.priority x); })
    else [ d ];

  topDefs = concatMap (m: concatMap (d: pushDown (d // { pos = null; wrap = x: x; })) m.defs) collected;

  namesOf = d: if isAttrs d.value then filter (n: !builtins.elem n (d.skip or [ ])) (attrNames d.value) else [ ];

  # Walks declarations and definitions together, level by level.
  mergeLevel = loc: decls: defs:
    let
      notSets = filter (d: !isAttrs d.value) defs;
      defsOf = n: concatMap
        (d: if isAttrs d.value && hasAttr n d.value && !builtins.elem n (d.skip or [ ])
          then [{ inherit (d) file wrap; value = d.value.${n}; pos = builtins.unsafeGetAttrPos n d.value; }]
          else [ ])
        defs;
      defined = foldl' (acc: d: acc // lib.genAttrs (namesOf d) (_: null)) { } defs;
      sub = builtins.mapAttrs
        (n: decl:
          if isOption decl then {
            option = evalOptionValue (loc ++ [ n ]) decl (map (d: d // { value = d.wrap d.value; }) (defsOf n));
            unmatched = [ ];
          }
          else
            let r = mergeLevel (loc ++ [ n ]) decl (concatMap pushDown (defsOf n)); in
            { option = r.tree; inherit (r) unmatched; })
        decls;
      strays = filter (n: !(decls ? ${n})) (attrNames defined);
    in
    if notSets != [ ] then
      throw "A definition for option `${showOption loc}' is not of type `attribute set'. Definition values:${showDefs notSets}"
    else {
      tree = builtins.mapAttrs (n: r: r.option) sub;
      unmatched =
        concatMap (n: map (d: d // { prefix = [ n ]; }) (defsOf n)) strays
        ++ concatMap (n: map (d: d // { prefix = [ n ] ++ d.prefix; }) sub.${n}.unmatched) (attrNames sub);
    };

  evalOptionValue = loc: opt: defs:
    let
      type = opt.type or lib.types.unspecified;
      withDefault =
        (if opt ? default then [{ file = head opt.declarations; value = lib.mkOptionDefault opt.default; pos = null; }] else [ ])
        ++ defs;
      res = lib.types.mergeDefinitions loc type withDefault;
    in
    opt // {
      inherit loc type;
      inherit (res) isDefined highestPrio;
      value = if opt ? apply then opt.apply res.mergedValue else res.mergedValue;
      # Before `apply`: what the type knows how to force.
      mergedValue = res.mergedValue;
      files = map (d: d.file) res.defsFinal;
      definitionsWithLocations = res.defsFinal;
    };

  merged = mergeLevel prefix declarations topDefs;
  options = merged.tree;

  valuesOf = tree: builtins.mapAttrs (n: v: if isOption v then v.value else valuesOf v) tree;
  declaredConfig = valuesOf merged.tree;
  freeformConfig =
    if freeformType == null || merged.unmatched == [ ] then { }
    else freeformType.merge prefix (map (d: { inherit (d) file pos; value = lib.setAttrByPath d.prefix (d.wrap d.value); }) merged.unmatched);
  config = if freeformConfig == { } then declaredConfig else lib.recursiveUpdate freeformConfig declaredConfig;

  checkUnmatched =
    if freeformType != null || merged.unmatched == [ ] then true
    else
      let d = head merged.unmatched; in
      throw "The option `${showOption (prefix ++ d.prefix)}' does not exist. Definition values:${showDefs [ d ]}";

  forceTree = tree: all
    (n: let v = tree.${n}; in if isOption v then (!v.isDefined || v.type.force v.mergedValue) else forceTree v)
    (attrNames tree);
in
{
  inherit config options;
  forced = builtins.seq checkUnmatched (forceTree merged.tree && (freeformType == null || freeformType.force freeformConfig));
  moduleHashes = concatMap (m: m.hashes) collected;
}
