# Merging the definitions of one option, as nixpkgs' lib/modules.nix
# (mergeDefinitions) and lib/options.nix (mergeEqualOption, mergeOneOption)
# do: mkIf/mkMerge discharged, the definitions of the highest priority kept,
# mkBefore/mkAfter ordered, every remaining definition type-checked.
lib:
let
  inherit (builtins) isBool isFunction isList isAttrs isString isInt concatMap filter foldl' head tail length all any sort;
  inherit (lib) showOption showDefs prioritySuggestion;

  typeOf = v: if isAttrs v then v._type or null else null;

  # mkIf and mkMerge, evaluated (the conditions are read here, at the option).
  discharge = v:
    let t = typeOf v; in
    if t == "merge" then concatMap discharge v.contents
    else if t == "if" then
      (if !isBool v.condition then throw "‘mkIf’ called with a non-Boolean condition"
      else if v.condition then discharge v.content else [ ])
    else [ v ];

  dischargeDef = d: map (v: d // { value = v; }) (discharge d.value);
in
rec {
  inherit discharge;

  mergeEqualOption = loc: defs:
    (foldl'
      (first: d:
        if d.value != first.value then
          throw "The option `${showOption loc}' has conflicting definition values:${showDefs [ first d ]}\n${prioritySuggestion}"
        else first)
      (head defs)
      (tail defs)).value;

  mergeOneOption = loc: defs:
    if length defs == 1 then (head defs).value
    else throw "The option `${showOption loc}' is defined multiple times while it's expected to be unique.\n\nDefinition values:${showDefs defs}\n${prioritySuggestion}";

  mergeDefaultOption = loc: defs:
    let list = map (d: d.value) defs; in
    if length list == 1 then head list
    else if all isFunction list then x: mergeDefaultOption loc (map (d: d // { value = d.value x; }) defs)
    else if all isList list then builtins.concatLists list
    else if all isAttrs list then foldl' (a: b: a // b) { } list
    else if all isBool list then any (x: x) list
    else if all isString list then builtins.concatStringsSep "" list
    else if all isInt list && all (x: x == head list) list then head list
    else throw "Cannot merge definitions of `${showOption loc}'. Definition values:${showDefs defs}";

  # defs: [ { file; value; pos? } ] -> { mergedValue; isDefined; defsFinal; optionalValue; }
  mergeDefinitions = loc: type: defs:
    let
      discharged = concatMap dischargeDef defs;
      prioOf = d: if typeOf d.value == "override" then d.value.priority else 100;
      highestPrio = foldl' (p: d: let q = prioOf d; in if q < p then q else p) 9999 discharged;
      # An override may wrap mkIf/mkMerge in turn.
      kept = concatMap
        (d: dischargeDef (if typeOf d.value == "override" then d // { value = d.value.content; } else d))
        (filter (d: prioOf d == highestPrio) discharged);
      orderOf = d: if typeOf d.value == "order" then d.value.priority else 1000;
      unorder = d: if typeOf d.value == "order" then d // { value = d.value.content; } else d;
      defsFinal =
        if any (d: typeOf d.value == "order") kept
        then map unorder (sort (a: b: orderOf a < orderOf b) kept)
        else kept;
      isDefined = defsFinal != [ ];
      invalid = filter (d: !type.check d.value) defsFinal;
      mergedValue =
        if !isDefined then
          throw "The option `${showOption loc}' was accessed but has no value defined. Try setting the option."
        else if invalid == [ ] then type.merge loc defsFinal
        else throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:${showDefs invalid}";
    in
    {
      inherit defsFinal isDefined mergedValue highestPrio;
      optionalValue = if isDefined then { value = mergedValue; } else { };
    };
}
