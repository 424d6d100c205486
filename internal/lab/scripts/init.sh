#!/bin/sh
# PID 1 of a lab target: started by the lab as
#   ip netns exec <netns> unshare --mount --uts --pid --fork --mount-proc \
#       --propagation private /bin/sh init.sh <host dir> <hostname>
# so everything below happens in the target's own network, mount, UTS and PID
# namespaces. Nothing is written to the machine's /nix, /etc or /run: the
# target's directories are bind-mounted over them, inside its namespace only.
set -eu
dir=$1
name=$2
fs=$dir/fs

for d in nix etc/nix etc/ssh etc/sudoers.d run var/lib home; do
	mount --bind "$fs/$d" "/$d"
done
for f in passwd group shadow hosts hostname resolv.conf; do
	mount --bind "$fs/etc/$f" "/etc/$f"
done
hostname "$name"
mkdir -p /run/sshd /nix/var/nix/profiles /nix/var/nix/daemon-socket
chmod 0755 /run/sshd

sh "$dir/ctl.sh" start-nix-daemon
if [ -f "$dir/sshd.enabled" ]; then
	sh "$dir/ctl.sh" start-sshd
fi
: >/run/lab-ready

# As PID 1 of the namespace this shell adopts orphans: each `wait` reaps
# every child that exits, including daemons whose starter has gone.
trap 'exit 0' TERM INT
while :; do
	sleep 3600 &
	wait || true
done
