package check

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/monibahmed/nixos-config/internal/inventory"
	"github.com/monibahmed/nixos-config/internal/nix"
)

// securityApply extracts, per configuration, the settings the lint looks at.
// Options missing from a configuration fall back to NixOS's defaults; values
// of disabled services are not read (some have no default).
const securityApply = `cs: builtins.mapAttrs (name: c:
  let
    cfg = c.config;
    ssh = cfg.services.openssh or { };
    settings = ssh.settings or { };
    users = cfg.users.users or { };
    normal = builtins.filter (u: users.${u}.isNormalUser or false) (builtins.attrNames users);
    passwordOptions = [ "initialPassword" "password" "initialHashedPassword" "hashedPassword" ];
    jupyter = cfg.services.jupyter or { };
    jupyterOn = jupyter.enable or false;
    jupyterUser = users.${jupyter.user or "jupyter"} or { };
    shellOf = u: let s = u.shell or null; in
      if s == null then "" else if builtins.isAttrs s then (s.shellPath or "/bin/sh") else toString s;
    firewall = cfg.networking.firewall or { };
    serve = cfg.services.nix-serve or { };
    pg = cfg.services.postgresql or { };
    jellyfin = cfg.services.jellyfin or { };
    sdboot = cfg.boot.loader.systemd-boot or { };
  in {
    sshEnabled = ssh.enable or false;
    passwordAuthentication = settings.PasswordAuthentication or true;
    kbdInteractiveAuthentication = settings.KbdInteractiveAuthentication or true;
    permitRootLogin = settings.PermitRootLogin or "prohibit-password";
    passwordsInStore = builtins.concatMap (u:
      map (o: "${u}.${o}") (builtins.filter (o: (users.${u}.${o} or null) != null) passwordOptions))
      (builtins.attrNames users);
    authorizedKeys = builtins.listToAttrs (map (u: {
      name = u;
      value = builtins.length (users.${u}.openssh.authorizedKeys.keys or [ ])
        + builtins.length (users.${u}.openssh.authorizedKeys.keyFiles or [ ]);
    }) normal);
    jupyter = if !jupyterOn then null else {
      placeholder = builtins.match ".*REPLACE.*" (jupyter.password or "") != null;
      ip = jupyter.ip or "localhost";
      port = jupyter.port or 8888;
      user = jupyter.user or "jupyter";
      loginShell = shellOf jupyterUser;
      terminalsOff = builtins.match ".*terminals_enabled *= *False.*" (builtins.replaceStrings [ "\n" ] [ " " ] (jupyter.notebookConfig or "")) != null;
    };
    openPorts = firewall.allowedTCPPorts or [ ];
    firewallEnabled = firewall.enable or true;
    nixServe = if !(serve.enable or false) then null else {
      bindAddress = serve.bindAddress or "0.0.0.0";
      port = serve.port or 5000;
    };
    jellyfin = if !(jellyfin.enable or false) then null else {
      openFirewall = jellyfin.openFirewall or false;
    };
    postgresTCP = (pg.enable or false) && (pg.enableTCPIP or false);
    postgresTrust = (pg.enable or false) && builtins.match "(.*[[:space:]])?trust([[:space:]].*)?" (builtins.replaceStrings [ "\n" ] [ " " ] (pg.authentication or "")) != null;
    bootEditor = (sdboot.enable or false) && (sdboot.editor or true);
    trustedUsers = (cfg.nix.settings or { }).trusted-users or [ "root" ];
    extraTrustedUsers = (cfg.nix.settings or { }).extra-trusted-users or [ ];
  }) cs`

type jupyterFacts struct {
	Placeholder  bool   `json:"placeholder"`
	IP           string `json:"ip"`
	Port         int    `json:"port"`
	User         string `json:"user"`
	LoginShell   string `json:"loginShell"`
	TerminalsOff bool   `json:"terminalsOff"`
}

type nixServeFacts struct {
	BindAddress string `json:"bindAddress"`
	Port        int    `json:"port"`
}

type jellyfinFacts struct {
	OpenFirewall bool `json:"openFirewall"`
}

// jellyfinPort is Jellyfin's web UI (nixpkgs
// nixos/modules/services/misc/jellyfin.nix, openFirewall).
const jellyfinPort = 8096

type securityFacts struct {
	SSHEnabled                   bool           `json:"sshEnabled"`
	PasswordAuthentication       *bool          `json:"passwordAuthentication"`
	KbdInteractiveAuthentication *bool          `json:"kbdInteractiveAuthentication"`
	PermitRootLogin              *string        `json:"permitRootLogin"`
	PasswordsInStore             []string       `json:"passwordsInStore"`
	AuthorizedKeys               map[string]int `json:"authorizedKeys"`
	Jupyter                      *jupyterFacts  `json:"jupyter"`
	OpenPorts                    []int          `json:"openPorts"`
	FirewallEnabled              *bool          `json:"firewallEnabled"`
	NixServe                     *nixServeFacts `json:"nixServe"`
	Jellyfin                     *jellyfinFacts `json:"jellyfin"`
	PostgresTCP                  bool           `json:"postgresTCP"`
	PostgresTrust                bool           `json:"postgresTrust"`
	BootEditor                   bool           `json:"bootEditor"`
	TrustedUsers                 []string       `json:"trustedUsers"`
	ExtraTrustedUsers            []string       `json:"extraTrustedUsers"`
}

func (c *Checker) security(ctx context.Context, f nix.Flake, inv *inventory.Inventory) ([]string, error) {
	out, err := c.Nix.EvalJSON(ctx, f, "nixosConfigurations", securityApply)
	if err != nil {
		return nil, err
	}
	var facts map[string]securityFacts
	if err := json.Unmarshal([]byte(out), &facts); err != nil {
		return nil, fmt.Errorf("reading security settings: %w", err)
	}
	return SecurityWarnings(inv, facts), nil
}

func loopback(addr string) bool {
	switch addr {
	case "localhost", "127.0.0.1", "::1", "[::1]":
		return true
	}
	return strings.HasPrefix(addr, "127.")
}

func allAddresses(addr string) bool {
	switch addr {
	case "", "0.0.0.0", "::", "[::]", "*":
		return true
	}
	return false
}

func contains(ports []int, p int) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

// SecurityWarnings turns the evaluated settings into warnings, each naming
// the risk and the remedy.
func SecurityWarnings(inv *inventory.Inventory, facts map[string]securityFacts) []string {
	var w []string
	for _, t := range inv.Targets {
		s, ok := facts[t.Name]
		if !ok {
			continue
		}
		for _, uo := range s.PasswordsInStore {
			user, opt, _ := strings.Cut(uo, ".")
			what := "a password"
			if strings.Contains(opt, "Hashed") || strings.HasPrefix(opt, "hashed") {
				what = "a password hash"
			}
			w = append(w, fmt.Sprintf("%s: users.users.%s.%s puts %s in the world-readable Nix store (and in this repository): remove it; set the password on the machine with passwd, or use users.users.%s.hashedPasswordFile with a root-only file on the machine (docs/bootstrap.md)", t.Name, user, opt, what, user))
		}
		if s.AuthorizedKeys[t.User] == 0 {
			w = append(w, fmt.Sprintf("%s: no SSH authorized keys for the deploy user %s: add your public key to users.users.%s.openssh.authorizedKeys.keys (targets/common/users.nix), or deployments cannot log in", t.Name, t.User, t.User))
		}
		if s.SSHEnabled && (s.PasswordAuthentication == nil || *s.PasswordAuthentication ||
			s.KbdInteractiveAuthentication == nil || *s.KbdInteractiveAuthentication) {
			w = append(w, fmt.Sprintf("%s: password SSH login enabled: set services.openssh.settings.PasswordAuthentication and KbdInteractiveAuthentication to false", t.Name))
		}
		if s.SSHEnabled && (s.PermitRootLogin == nil || *s.PermitRootLogin != "no") {
			val := "unset"
			if s.PermitRootLogin != nil {
				val = *s.PermitRootLogin
			}
			w = append(w, fmt.Sprintf("%s: root login allowed over SSH (PermitRootLogin = %s): set services.openssh.settings.PermitRootLogin = \"no\"", t.Name, val))
		}
		w = append(w, jupyterWarnings(t, s)...)
		if s.NixServe != nil {
			if allAddresses(s.NixServe.BindAddress) {
				w = append(w, fmt.Sprintf("%s: nix-serve listens on every address (services.nix-serve.bindAddress = %q) and serves the whole Nix store without authentication: set homelab.binaryCache.server.bindAddress to the machine's LAN address", t.Name, s.NixServe.BindAddress))
			} else {
				w = append(w, fmt.Sprintf("%s: nix-serve serves every path of the Nix store without authentication to whoever reaches %s:%d: keep secrets out of the store (targets/common/secrets.nix) and the machine on a trusted LAN", t.Name, s.NixServe.BindAddress, s.NixServe.Port))
			}
		}
		if j := s.Jellyfin; j != nil && (j.OpenFirewall || contains(s.OpenPorts, jellyfinPort)) {
			how := "services.jellyfin.openFirewall opens TCP 8096 and 8920 and UDP 1900 and 7359"
			if !j.OpenFirewall {
				how = "networking.firewall.allowedTCPPorts opens 8096"
			}
			w = append(w, fmt.Sprintf("%s: Jellyfin is open on every interface (%s), and until its setup wizard is finished whoever on the LAN opens port %d first becomes its administrator: finish the wizard right after the first deploy; consider opening the ports only on the LAN interface (openFirewall = false and networking.firewall.interfaces.<interface>.allowedTCPPorts)", t.Name, how, jellyfinPort))
		}
		if s.PostgresTCP {
			w = append(w, fmt.Sprintf("%s: PostgreSQL listens on every interface (services.postgresql.enableTCPIP): turn it off and connect over the Unix socket, or allow only the LAN in services.postgresql.authentication and the firewall", t.Name))
		}
		if s.PostgresTrust {
			w = append(w, fmt.Sprintf("%s: services.postgresql.authentication uses \"trust\" (no authentication): use peer (with an identMap) or scram-sha-256", t.Name))
		}
		if s.BootEditor {
			w = append(w, fmt.Sprintf("%s: the boot menu lets anyone at the keyboard edit the kernel command line (init=/bin/sh is a root shell): set boot.loader.systemd-boot.editor = false", t.Name))
		}
		var trusted []string
		for _, u := range append(append([]string(nil), s.TrustedUsers...), s.ExtraTrustedUsers...) {
			if u != "root" {
				trusted = append(trusted, u)
			}
		}
		if len(trusted) > 0 {
			w = append(w, fmt.Sprintf("%s: nix.settings.trusted-users trusts %s: a trusted Nix user is root-equivalent (any program running as that user gets root through the nix-daemon, without a password); remove it: deployments need no trusted user (-trust=sudo, the default, or -trust=signed)", t.Name, strings.Join(trusted, ", ")))
		}
		if s.FirewallEnabled != nil && !*s.FirewallEnabled {
			w = append(w, fmt.Sprintf("%s: the firewall is off (networking.firewall.enable = false): turn it on and open only the ports the machine serves", t.Name))
		}
	}
	return w
}

func jupyterWarnings(t inventory.Target, s securityFacts) []string {
	j := s.Jupyter
	if j == nil {
		return nil
	}
	var w []string
	if j.Placeholder {
		w = append(w, fmt.Sprintf("%s: services.jupyter.password is still the placeholder: nobody can log in to Jupyter until you set an argon2 hash (see targets/%s/README.md)", t.Name, t.Name))
	}
	if !loopback(j.IP) {
		w = append(w, fmt.Sprintf("%s: Jupyter listens on %s:%d over plain HTTP, and a logged-in notebook runs any code as %s: bind services.jupyter.ip to 127.0.0.1 and reach it through an SSH tunnel (targets/%s/README.md), or put it behind TLS and open the port only on the LAN interface", t.Name, j.IP, j.Port, j.User, t.Name))
		if contains(s.OpenPorts, j.Port) {
			w = append(w, fmt.Sprintf("%s: networking.firewall.allowedTCPPorts opens Jupyter's port %d on every interface: open it only on the LAN interface with networking.firewall.interfaces.<interface>.allowedTCPPorts", t.Name, j.Port))
		}
	} else if contains(s.OpenPorts, j.Port) {
		w = append(w, fmt.Sprintf("%s: port %d is open in the firewall but Jupyter listens only on %s: remove it from networking.firewall.allowedTCPPorts", t.Name, j.Port, j.IP))
	}
	if j.LoginShell != "" && !strings.HasSuffix(j.LoginShell, "nologin") && !j.TerminalsOff {
		w = append(w, fmt.Sprintf("%s: the %s account has a login shell (%s) and Jupyter's browser terminals are on, so a notebook login is a shell on the machine: set c.ServerApp.terminals_enabled = False in services.jupyter.notebookConfig and users.users.%s.useDefaultShell = lib.mkForce false", t.Name, j.User, j.LoginShell, j.User))
	}
	return w
}
