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

    # BOOTSTRAP ONLY: lets you log in on the console of a freshly installed
    # machine. It is applied only when the account is first created. Remove it
    # once a key is in authorizedKeys and you have run `passwd` on the target;
    # `mage check` warns while it is set.
    initialPassword = "changeme";
  };

  # Deployments run `sudo`; members of wheel must type their password.
  # `mage deploy` probes with `sudo -n true` and asks for the password once
  # per run when needed (see README.md, "Sudo").
  security.sudo.enable = true;
  security.sudo.wheelNeedsPassword = true;
}
