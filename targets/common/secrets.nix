# Secrets (off by default). Nothing secret belongs in this repository in
# clear text: everything here ends up world-readable in the Nix store.
# The secrets/ directory is laid out for sops-nix (or agenix); see
# secrets/README.md for how to turn it on. This module only records where
# the encrypted files live, so that target configurations can refer to them:
#   sops.defaultSopsFile = config.homelab.secrets.directory + "/lab-server.yaml";
{ lib, ... }:
{
  options.homelab.secrets = {
    directory = lib.mkOption {
      type = lib.types.path;
      default = ../../secrets;
      description = "Directory of the encrypted secrets (sops-nix or agenix files).";
    };
  };
}
