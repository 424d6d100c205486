# Stub packages: derivations that evaluate but carry no software. Only the
# attributes the flake's devShells and formatter outputs name are provided;
# NixOS modules receive them too, but the double never forces package lists.
{ system }:
let
  stub = name: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" "mkdir -p $out/bin" ];
  };
  names = [
    "bash" "coreutils" "curl" "gcc" "git" "go" "htop" "jq" "mage" "nix" "nixfmt"
    "nixfmt-rfc-style" "nmap" "openssh" "python3" "tmux" "vim" "wget"
  ];
  packages = builtins.listToAttrs (map (n: { name = n; value = stub n; }) names);
in
packages // {
  mkShell = { packages ? [ ], name ? "nix-shell", ... }: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" "echo $packages > $out" ];
    packages = map (p: p.name or "?") packages;
  };
}
