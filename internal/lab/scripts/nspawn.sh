#!/bin/sh
# Starts a systemd lab host: systemd-nspawn boots a Debian root with systemd
# as PID 1. Run by the lab as
#   unshare --mount --propagation private /bin/sh nspawn.sh \
#       <host dir> <machine name> <base root> <netns file> <cgroup name> [--bind=...]...
# Everything mounted here (the netns file, the root overlay, cgroup2, a /run
# of its own) lives in this private mount namespace only and vanishes with
# the container: nothing is mounted on the machine, nothing is written to its
# /run. The script then becomes systemd-nspawn (exec), so the lab knows the
# supervisor by this PID and the container's systemd as its child.
set -eu
dir=$1
name=$2
base=$3
netns=$4
cgname=$5
shift 5

mkdir -p "$dir/upper" "$dir/work" "$dir/root"
# The lab's network namespace, under a path that stays visible after /run
# is replaced below.
: >"$dir/netns"
mount --bind "$netns" "$dir/netns"
# The host's own writable root: the shared read-only base plus this host's
# changes in upper/.
mount -t overlay lab-root -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"

# systemd-nspawn --keep-unit puts itself and the container into "supervisor"
# and "payload" below the cgroup it starts in: give each host a cgroup of its
# own (in the unified hierarchy, whatever this machine mounts), or two hosts
# would share one. The lab removes it when the host goes.
mount -t cgroup2 lab-cgroup /sys/fs/cgroup
own=$(sed -n 's/^0:://p' /proc/self/cgroup)
cg=${own%/}/$cgname
mkdir "/sys/fs/cgroup$cg"
echo $$ >"/sys/fs/cgroup$cg/cgroup.procs"
echo "$cg" >"$dir/cgroup"

# systemd-nspawn keeps locks and mount propagation directories in
# /run/systemd/nspawn: a /run of its own keeps the machine's /run untouched.
mount -t tmpfs -o mode=0755 lab-run /run

# --register=no --keep-unit: this machine's PID 1 need not be systemd (no
# machined, no transient scope). --link-journal=no, --resolv-conf=off,
# --timezone=off: nothing of the machine's is linked or copied in.
exec systemd-nspawn --quiet --directory="$dir/root" --boot --register=no --keep-unit \
	--machine="$name" --network-namespace-path="$dir/netns" \
	--link-journal=no --resolv-conf=off --timezone=off --console=read-only \
	"$@"
