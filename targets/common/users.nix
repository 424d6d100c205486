# The owner's account, used for logins and deployments on every target.
# (config/users-groups.nix; authorized keys: services/networking/ssh/sshd.nix;
#  sudo: security/sudo.nix)
{ pkgs, ... }:
{
  users.users.monibahmed = {
    isNormalUser = true;
    description = "Monib Ahmed";
    extraGroups = [ "wheel" "networkmanager" "audio" "video" ];
    shell = pkgs.bash;

    # Public keys allowed to log in (and therefore to deploy). Password login
    # over SSH is off, so a target is unreachable over SSH until a key is here.
    # `mage check` warns while this list is empty.
    openssh.authorizedKeys.keys = [
      # "ssh-ed25519 AAAA... monibahmed@laptop"
    ];

    # No password in this repository: everything here is world-readable in
    # the Nix store. The password (which sudo asks for) is set on each
    # machine, once, when it is installed (docs/bootstrap.md, step 1), and
    # NixOS keeps it (users.mutableUsers is true by default). To manage it
    # declaratively instead, point at a root-only file ON THE MACHINE holding
    # a hash from `mkpasswd -m yescrypt` (read at every activation):
    #   hashedPasswordFile = "/var/lib/secrets/monibahmed.passwd";
  };

  # Deployments run `sudo`; members of wheel must type their password.
  # `mage deploy` probes with `sudo -n true` and asks for the password once
  # per run when needed (see README.md, "Sudo").
  security.sudo.enable = true;
  security.sudo.wheelNeedsPassword = true;
}
