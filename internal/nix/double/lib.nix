# The subset of nixpkgs' lib that the repository's modules and the double's
# option schema (./options) use: the same names, the same merge semantics
# and the same error wording as nixpkgs' lib/modules.nix, lib/options.nix
# and lib/types.nix. Written for the test double; it is much smaller than
# nixpkgs' module system and knows only what the repository needs.
let
  inherit (builtins) isAttrs isList isString isInt isBool isFloat isFunction isPath
    attrNames concatMap concatStringsSep filter foldl' head length all toJSON;

  lib = {
    # ---- properties (lib/modules.nix) --------------------------------------
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkOptionDefault = lib.mkOverride 1500;
    mkDefault = lib.mkOverride 1000;
    mkForce = lib.mkOverride 50;
    mkOrder = priority: content: { _type = "order"; inherit priority content; };
    mkBefore = lib.mkOrder 500;
    mkAfter = lib.mkOrder 1500;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };

    # ---- options (lib/options.nix) -----------------------------------------
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
    isOption = v: isAttrs v && (v._type or null) == "option";
    literalExpression = text: { _type = "literalExpression"; inherit text; };

    # `from "nixos/modules/…" { … }` records, on every option of the tree,
    # the nixpkgs file its declaration was read from (see ./options).
    # Takes one option or a tree of them.
    from = file: v:
      if lib.isOption v then v // { declaredIn = file; }
      else builtins.mapAttrs (n: lib.from file) v;

    # Option paths as NixOS prints them: names that are not identifiers quoted.
    showOption = loc: concatStringsSep "." (map
      (p: if p == "*" || builtins.match "<.*>" p != null
        || builtins.match "[a-zA-Z_][a-zA-Z0-9_'-]*" p != null then p else toJSON p)
      loc);

    # A definition's place: file:line:column where Nix knows it.
    showLocation = d:
      if (d.pos or null) != null then "${d.pos.file}:${toString d.pos.line}:${toString d.pos.column}"
      else d.file;

    # "\n- In `<file>': <value>" for each definition, like lib.options.showDefs.
    showDefs = defs: concatStringsSep "" (map
      (d:
        let r = builtins.tryEval (lib.pretty 0 d.value); in
        "\n- In `${lib.showLocation d}'" + (if r.success then ": " + r.value else ""))
      defs);

    prioritySuggestion = ''
      Use `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions.'';

    # A one-line rendering of a value (nixpkgs uses lib.generators.toPretty).
    pretty = depth: v:
      if lib.isDerivation v then "<derivation ${v.name or "?"}>"
      else if isAttrs v then
        (if v == { } then "{ }"
        else if depth > 2 then "{ ... }"
        else "{ " + concatStringsSep " " (map (n: "${lib.showOption [ n ]} = ${lib.pretty (depth + 1) v.${n}};") (attrNames v)) + " }")
      else if isList v then
        (if v == [ ] then "[ ]"
        else if depth > 2 then "[ ... ]"
        else "[ " + concatStringsSep " " (map (lib.pretty (depth + 1)) v) + " ]")
      else if isString v then toJSON v
      else if isInt v || isFloat v then toString v
      else if isBool v then (if v then "true" else "false")
      else if v == null then "null"
      else if isFunction v then "<function>"
      else if isPath v then toString v
      else "<${builtins.typeOf v}>";

    # ---- attribute sets and lists ------------------------------------------
    isDerivation = v: isAttrs v && (v.type or null) == "derivation";
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    mapAttrs = builtins.mapAttrs;
    attrNames = builtins.attrNames;
    attrValues = builtins.attrValues;
    filterAttrs = pred: set: builtins.listToAttrs (concatMap
      (n: if pred n set.${n} then [{ name = n; value = set.${n}; }] else [ ])
      (attrNames set));
    mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
    setAttrByPath = path: value:
      if path == [ ] then value else { ${head path} = lib.setAttrByPath (builtins.tail path) value; };
    recursiveUpdate = a: b: a // builtins.mapAttrs
      (n: bv: if a ? ${n} && isAttrs a.${n} && isAttrs bv && !lib.isDerivation bv
        then lib.recursiveUpdate a.${n} bv else bv)
      b;
    imap1 = f: list: builtins.genList (i: f (i + 1) (builtins.elemAt list i)) (length list);
    last = list: builtins.elemAt list (length list - 1);
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: a: if cond then a else { };
    toList = x: if isList x then x else [ x ];
    elem = builtins.elem;
    any = builtins.any;
    all = builtins.all;
    unique = foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
    flatten = x: if isList x then concatMap lib.flatten x else [ x ];

    # ---- strings -----------------------------------------------------------
    concatStringsSep = builtins.concatStringsSep;
    concatMapStringsSep = sep: f: list: concatStringsSep sep (map f list);
    concatMapStrings = f: list: concatStringsSep "" (map f list);
    hasPrefix = pre: s: builtins.substring 0 (builtins.stringLength pre) s == pre;
    hasInfix = infix: s: builtins.match ".*${lib.escapeRegex infix}.*" s != null;
    escapeRegex = builtins.replaceStrings
      [ "\\" "[" "]" "{" "}" "(" ")" "^" "$" "." "|" "*" "+" "?" ]
      [ "\\\\" "\\[" "\\]" "\\{" "\\}" "\\(" "\\)" "\\^" "\\$" "\\." "\\|" "\\*" "\\+" "\\?" ];
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    trivial.release = "26.11";
    version = "26.11pre-double";

    types = import ./types.nix lib;
    evalModules = import ./modules.nix lib;
  };
in
lib
