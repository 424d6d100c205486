# Option types with nixpkgs' names, checks, merge semantics and
# descriptions (the descriptions appear in "is not of type `…'" errors, so
# they follow nixpkgs' lib/types.nix word for word).
#
# Each type also has `force`: how the double evaluates a merged value deeply
# enough to run every nested type check, as building a real system would.
# Packages are the exception: the double has stub packages only, so it
# neither checks nor forces package values (a misspelt package name is
# found by `mage check` with real nixpkgs, not offline).
lib:
let
  inherit (builtins) isAttrs isList isString isInt isBool isFloat isFunction isPath
    attrNames concatMap filter foldl' head length all any elem toJSON listToAttrs;
  merge = import ./merge.nix lib;
  inherit (merge) mergeDefinitions mergeEqualOption mergeOneOption mergeDefaultOption;
  inherit (lib) showOption showDefs;

  isStringLike = x: isString x || isPath x || (isAttrs x && (x ? outPath || x ? __toString));
  forceWHNF = v: builtins.seq v true;

  # lib.types.optionDescriptionPhrase: parentheses where the phrase would be ambiguous.
  phrase = ok: t: if ok (t.descriptionClass or null) then t.description else "(${t.description})";

  mkOptionType =
    { name
    , description ? null
    , descriptionClass ? null
    , check ? (_: true)
    , merge ? mergeDefaultOption
    , emptyValue ? { }
    , force ? forceWHNF
    , getSubModules ? null
    , nestedTypes ? { }
    }: {
      _type = "option-type";
      inherit name descriptionClass check merge emptyValue force getSubModules nestedTypes;
      description = if description == null then name else description;
    };

  addCheck = t: extra: t // { check = x: t.check x && extra x; };

  between = lo: hi: addCheck types.int (x: x >= lo && x <= hi) // {
    name = "intBetween";
    description = "integer between ${toString lo} and ${toString hi} (both inclusive)";
  };
  unsign = bits: range: between 0 (range - 1) // {
    name = "unsignedInt${toString bits}";
    description = "${toString bits} bit unsigned integer; between 0 and ${toString (range - 1)} (both inclusive)";
  };

  separatedString = sep: mkOptionType {
    name = "separatedString";
    description = if sep == "" then "Concatenated string" else "strings concatenated with ${toJSON sep}";
    descriptionClass = "noun";
    check = isString;
    merge = loc: defs: builtins.concatStringsSep sep (map (d: d.value) defs);
  };

  strMatching = pattern: mkOptionType {
    name = "strMatching ${toJSON pattern}";
    description = "string matching the pattern ${pattern}";
    descriptionClass = "noun";
    check = x: isString x && builtins.match pattern x != null;
    merge = mergeEqualOption;
  };

  attrsWith = lazy: elemType: mkOptionType {
    name = if lazy then "lazyAttrsOf" else "attrsOf";
    description = (if lazy then "lazy attribute set" else "attribute set")
      + " of ${phrase (c: c == "noun" || c == "composite") elemType}";
    descriptionClass = "composite";
    check = isAttrs;
    merge = loc: defs:
      let
        names = attrNames (foldl' (acc: d: acc // d.value) { } defs);
        defsOf = n: concatMap
          (d: if d.value ? ${n}
            then [{ inherit (d) file; value = d.value.${n}; pos = builtins.unsafeGetAttrPos n d.value; }]
            else [ ])
          defs;
        mergedOf = n: mergeDefinitions (loc ++ [ n ]) elemType (defsOf n);
      in
      if lazy then lib.genAttrs names (n: (mergedOf n).mergedValue)
      else listToAttrs (concatMap
        (n: let r = (mergedOf n).optionalValue; in if r ? value then [{ name = n; value = r.value; }] else [ ])
        names);
    emptyValue = { value = { }; };
    force = if lazy then (_: true) else v: all (n: elemType.force v.${n}) (attrNames v);
    getSubModules = elemType.getSubModules;
    nestedTypes.elemType = elemType;
  };

  types = rec {
    inherit mkOptionType addCheck;

    raw = mkOptionType { name = "raw"; description = "raw value"; descriptionClass = "noun"; merge = mergeOneOption; };
    unspecified = mkOptionType { name = "unspecified"; description = "unspecified value"; descriptionClass = "noun"; };
    anything = mkOptionType {
      name = "anything";
      descriptionClass = "noun";
      merge = loc: defs:
        if all (d: isAttrs d.value && !lib.isDerivation d.value) defs then (attrsOf anything).merge loc defs
        else if length defs == 1 then (head defs).value
        else mergeEqualOption loc defs;
      force = v:
        if lib.isDerivation v || isFunction v then true
        else if isAttrs v then all (n: anything.force v.${n}) (attrNames v)
        else if isList v then all anything.force v
        else forceWHNF v;
    };

    bool = mkOptionType { name = "bool"; description = "boolean"; descriptionClass = "noun"; check = isBool; merge = mergeEqualOption; };
    int = mkOptionType { name = "int"; description = "signed integer"; descriptionClass = "noun"; check = isInt; merge = mergeEqualOption; };
    float = mkOptionType { name = "float"; description = "floating point number"; descriptionClass = "noun"; check = isFloat; merge = mergeEqualOption; };
    ints = {
      inherit between;
      unsigned = addCheck int (x: x >= 0) // {
        name = "unsignedInt";
        description = "unsigned integer, meaning >=0";
        descriptionClass = "nonRestrictiveClause";
      };
      positive = addCheck int (x: x > 0) // {
        name = "positiveInt";
        description = "positive integer, meaning >0";
        descriptionClass = "nonRestrictiveClause";
      };
      u8 = unsign 8 256;
      u16 = unsign 16 65536;
      u32 = unsign 32 4294967296;
    };
    port = ints.u16;

    str = mkOptionType { name = "str"; description = "string"; descriptionClass = "noun"; check = isString; merge = mergeEqualOption; };
    nonEmptyStr = mkOptionType {
      name = "nonEmptyStr";
      description = "non-empty string";
      descriptionClass = "noun";
      check = x: isString x && builtins.match "[ \t\n]*" x == null;
      merge = mergeEqualOption;
    };
    singleLineStr = mkOptionType {
      name = "singleLineStr";
      description = "(optionally newline-terminated) single-line string";
      descriptionClass = "noun";
      check = x: isString x && builtins.match "[^\n\r]*\n?" x != null;
      merge = mergeEqualOption;
    };
    inherit strMatching separatedString;
    lines = separatedString "\n";
    commas = separatedString ",";
    envVar = separatedString ":";
    passwdEntry = entryType: addCheck entryType (s: !(lib.hasInfix ":" s || lib.hasInfix "\n" s)) // {
      name = "passwdEntry ${entryType.name}";
      description = "${phrase (c: c == "noun") entryType}, not containing newlines or colons";
      descriptionClass = "nonRestrictiveClause";
    };

    attrs = mkOptionType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = loc: foldl' (res: d: res // d.value) { };
      emptyValue = { value = { }; };
    };

    # Not checked and not forced: see the comment at the top.
    package = mkOptionType { name = "package"; descriptionClass = "noun"; merge = mergeOneOption; force = _: true; };
    shellPackage = package // { check = x: lib.isDerivation x && x ? shellPath; };

    path = mkOptionType {
      name = "path";
      descriptionClass = "noun";
      check = x: isStringLike x && builtins.substring 0 1 (toString x) == "/";
      merge = mergeEqualOption;
    };

    listOf = elemType: mkOptionType {
      name = "listOf";
      description = "list of ${phrase (c: c == "noun" || c == "composite") elemType}";
      descriptionClass = "composite";
      check = isList;
      merge = loc: defs: map (x: x.value) (filter (x: x ? value) (builtins.concatLists (lib.imap1
        (n: d: lib.imap1
          (m: v: (mergeDefinitions (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) elemType
            [{ inherit (d) file; value = v; pos = d.pos or null; }]).optionalValue)
          d.value)
        defs)));
      emptyValue = { value = [ ]; };
      force = v: all elemType.force v;
      getSubModules = elemType.getSubModules;
      nestedTypes.elemType = elemType;
    };
    nonEmptyListOf = elemType: addCheck (listOf elemType) (l: l != [ ]) // {
      description = "non-empty ${phrase (c: c == "noun") (listOf elemType)}";
      emptyValue = { };
    };

    attrsOf = attrsWith false;
    lazyAttrsOf = attrsWith true;

    uniq = t: t // { merge = mergeOneOption; };
    unique = { message }: uniq;

    nullOr = elemType: mkOptionType {
      name = "nullOr";
      description = "null or ${phrase (c: c == "noun" || c == "conjunction") elemType}";
      descriptionClass = "conjunction";
      check = x: x == null || elemType.check x;
      merge = loc: defs:
        let nulls = length (filter (d: d.value == null) defs); in
        if nulls == length defs then null
        else if nulls != 0 then
          throw "The option `${showOption loc}` is defined both null and not null, in ${builtins.concatStringsSep ", " (map (d: "`${d.file}'") defs)}."
        else elemType.merge loc defs;
      emptyValue = { value = null; };
      force = v: v == null || elemType.force v;
      getSubModules = elemType.getSubModules;
      nestedTypes.elemType = elemType;
    };

    enum = values:
      let
        show = v:
          if isString v then toJSON v
          else if isInt v then toString v
          else if isBool v then (if v then "true" else "false")
          else "<${builtins.typeOf v}>";
      in
      mkOptionType {
        name = "enum";
        description =
          if values == [ ] then "impossible (empty enum)"
          else if length values == 1 then "value ${show (head values)} (singular enum)"
          else "one of ${builtins.concatStringsSep ", " (map show values)}";
        descriptionClass = if length values < 2 then "noun" else "conjunction";
        check = x: elem x values;
        merge = mergeEqualOption;
      };

    either = t1: t2: mkOptionType {
      name = "either";
      description =
        if (t1.descriptionClass or null) == "nonRestrictiveClause"
        then "${t1.description}, or ${phrase (c: c == "noun" || c == "conjunction") t2}"
        else "${phrase (c: c == "noun" || c == "conjunction") t1} or ${phrase (c: c == "noun" || c == "conjunction" || c == "composite") t2}";
      descriptionClass = "conjunction";
      check = x: t1.check x || t2.check x;
      merge = loc: defs:
        if all (d: t1.check d.value) defs then t1.merge loc defs
        else if all (d: t2.check d.value) defs then t2.merge loc defs
        else mergeOneOption loc defs;
      force = v: if t1.check v then t1.force v else t2.force v;
      nestedTypes = { left = t1; right = t2; };
    };
    oneOf = ts: foldl' either (head ts) (builtins.tail ts);

    coercedTo = coercedType: coerceFunc: finalType: mkOptionType {
      name = "coercedTo";
      description = "${phrase (c: c == "noun") finalType} or ${phrase (c: c == "noun") coercedType} convertible to it";
      check = x: (coercedType.check x && finalType.check (coerceFunc x)) || finalType.check x;
      merge = loc: defs: finalType.merge loc (map
        (d: if finalType.check d.value then d else d // { value = coerceFunc d.value; })
        defs);
      force = finalType.force;
      getSubModules = finalType.getSubModules;
    };

    functionTo = elemType: mkOptionType {
      name = "functionTo";
      description = "function that evaluates to a(n) ${phrase (c: c == "noun" || c == "composite") elemType}";
      descriptionClass = "composite";
      check = isFunction;
      merge = loc: defs: args: (mergeDefinitions (loc ++ [ "<function body>" ]) elemType
        (map (d: d // { value = d.value args; }) defs)).mergedValue;
      force = _: true;
    };

    # A submodule is evaluated by the double's module system with the
    # definitions as further modules; its value is strict in its own checks
    # (undeclared options, types), so forcing it checks everything inside.
    submoduleWith = { modules, specialArgs ? { }, shorthandOnlyDefinesConfig ? false, description ? null }: mkOptionType {
      name = "submodule";
      inherit description;
      check = x: isAttrs x || isFunction x || path.check x;
      merge = loc: defs:
        let
          defModules = map
            (d:
              if isAttrs d.value && shorthandOnlyDefinesConfig
              then { _file = d.file; config = d.value; }
              else { _file = d.file; imports = [ d.value ]; })
            defs;
          ev = lib.evalModules {
            modules = lib.toList modules ++ defModules;
            prefix = loc;
            specialArgs = specialArgs // { name = lib.last loc; };
          };
        in
        builtins.seq ev.forced ev.config;
      emptyValue = { value = { }; };
      getSubModules = lib.toList modules;
    };
    submodule = modules: submoduleWith { inherit modules; shorthandOnlyDefinesConfig = true; };
  };
in
types // { inherit (merge) mergeDefinitions mergeEqualOption mergeOneOption mergeDefaultOption discharge; }
