# The subset of nixpkgs' lib used by the repository's modules, with the same
# names and meanings (priorities as in nixpkgs lib/modules.nix).
let
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOption = attrs: attrs // { _type = "option"; };
  type = name: { _type = "option-type"; inherit name; };
  types = {
    bool = type "bool";
    str = type "str";
    int = type "int";
    port = type "port";
    path = type "path";
    package = type "package";
    lines = type "lines";
    anything = type "anything";
    raw = type "raw";
    listOf = _: type "listOf";
    attrsOf = _: type "attrsOf";
    nullOr = _: type "nullOr";
    enum = _: type "enum";
    either = _: _: type "either";
    oneOf = _: type "oneOf";
    submodule = _: type "submodule";
  };
  genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
in
{
  inherit mkOverride mkOption types genAttrs;
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  mkOptionDefault = mkOverride 1500;
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkBefore = x: x;
  mkAfter = x: x;
  mkEnableOption = name: mkOption {
    type = types.bool;
    default = false;
    description = "Whether to enable ${name}.";
  };
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  optionalAttrs = cond: a: if cond then a else { };
  mapAttrs = builtins.mapAttrs;
  attrNames = builtins.attrNames;
  attrValues = builtins.attrValues;
  filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap
    (n: if pred n set.${n} then [{ name = n; value = set.${n}; }] else [ ])
    (builtins.attrNames set));
  concatStringsSep = builtins.concatStringsSep;
  concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);
  hasPrefix = pre: s: builtins.substring 0 (builtins.stringLength pre) s == pre;
  versionAtLeast = a: b: builtins.compareVersions a b >= 0;
  trivial.release = "26.11";
  version = "26.11pre-double";
}
