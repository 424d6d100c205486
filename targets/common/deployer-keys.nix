# The public keys of the people who deploy with signed closures
# (`mage deploy -trust=signed`): one file per key in ./deployer-keys/, named
# <key name>.pub and holding the line `mage signingKey` printed. Every target
# trusts them for paths copied to it. Adding or removing a file and deploying
# (with -trust=sudo the first time a key is new) is how deployers come and go.
#
# extra-trusted-public-keys adds to nixpkgs' default trusted-public-keys
# (cache.nixos.org) instead of replacing it (nix.settings is free-form in
# nixos/modules/config/nix.nix; Nix reads extra-<setting> as an addition).
{ lib, ... }:
let
  dir = ./deployer-keys;
  entries = if builtins.pathExists dir then builtins.readDir dir else { };
  names = builtins.filter
    (n: entries.${n} == "regular" && builtins.match ".*\\.pub" n != null)
    (builtins.attrNames entries);
  # The key is the file's first line, without surrounding blanks.
  keyOf = n:
    let m = builtins.match "[[:space:]]*([^[:space:]]+)[[:space:]]*.*" (builtins.readFile (dir + "/${n}"));
    in if m == null then throw "deployer-keys/${n} holds no key" else builtins.head m;
in
{
  nix.settings.extra-trusted-public-keys = map keyOf names;
}
