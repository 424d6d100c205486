#!/bin/sh
# Prepares the shared base root of systemd lab hosts; run once by mmdebstrap
# (--customize-hook) with the new root's path as $1, on this machine.
# Everything a single host needs of its own (host keys, users, sudoers,
# nix.conf, sshd's address) is bound in by the lab when the host starts.
set -eu
root=$1
units=$root/etc/systemd/system

# sshd and the Nix daemon under the unit names NixOS uses. sshd reads the
# lab's configuration (its address) and logs where the lab looks.
# Started means listening where Debian's sshd tells systemd so (Type=notify).
type=$(sed -n 's/^Type=//p' "$root/usr/lib/systemd/system/ssh.service" | tail -n 1)
rm -f "$units/sshd.service" "$units/multi-user.target.wants/ssh.service" \
	"$units/sockets.target.wants/ssh.socket"
cat >"$units/sshd.service" <<EOF
[Unit]
Description=SSH Daemon (lab host)
After=network.target

[Service]
Type=${type:-simple}
ExecStart=/usr/sbin/sshd -D -f /var/lib/lab/sshd_config -E /var/lib/lab/sshd.log
ExecReload=/bin/kill -HUP \$MAINPID
KillMode=process
Restart=always
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755

[Install]
WantedBy=multi-user.target
EOF
cat >"$units/nix-daemon.service" <<'EOF'
[Unit]
Description=Nix Daemon (lab host)
RequiresMountsFor=/nix/store

[Service]
ExecStartPre=/bin/mkdir -p /nix/var/nix/daemon-socket /nix/var/nix/profiles
ExecStart=/usr/bin/nix-daemon
KillMode=process

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$units/multi-user.target.wants"
ln -sf ../sshd.service "$units/multi-user.target.wants/sshd.service"
ln -sf ../nix-daemon.service "$units/multi-user.target.wants/nix-daemon.service"

# Periodic jobs and consoles nobody uses: they would only add noise (or
# work) to a lab host.
for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
	e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-pstore.service \
	console-getty.service getty@tty1.service; do
	rm -f "$units"/*.wants/"$u"
	ln -sf /dev/null "$units/$u"
done

# Mount points of the lab's binds (a fresh root has no /etc/hosts).
mkdir -p "$root/nix" "$root/var/lib/lab"
touch "$root/etc/hosts"
# Every host gets host keys of its own.
rm -f "$root"/etc/ssh/ssh_host_*
# An empty machine-id: systemd-nspawn gives every boot its own.
: >"$root/etc/machine-id"
