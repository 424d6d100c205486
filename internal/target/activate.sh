# The activation unit of nixos-config: runs as root, detached from the
# deployer's SSH session (a transient systemd unit, or its own session
# without systemd), under `flock -o /run/nixos-config.activate.lock`, so the
# target stays locked for as long as this runs, whatever happens to the
# deployer. Installed and started by internal/target (activate.go), which
# validated every argument.
#
#   activate.sh <dir> deploy <mode> <path> <setprofile 0|1> <prev-gen> <prev-path>
#               <prev-current> <reach-timeout s> <verdict-timeout s> <auto-rollback 0|1>
#   activate.sh <dir> rollback-to <generation> <path>
#
# The history file's path (history= below) is filled in by the deployer
# from internal/target's HistoryFile.
# <dir> (0700) holds this script and the history lines rendered by the
# deployer (history-rolledback-ok, -verdict, -vanished, history-rolledback-
# failed, history-vanished); this script writes there: pid, started, result,
# switch.log, rollback, done. The deployer writes there: reached, verdict.
#
# Nothing polls in a loop of its own: the deployer waits for result by
# taking result.lock, which this script holds until result is written,
# and for rollback and done by taking done.lock, held until it ends (the
# kernel frees it even when it dies). This script waits for reached and
# verdict by reading the FIFO wake, into which the deployer writes a byte
# after each file. Its own children get none of these descriptors.
set -u
dir=$1
action=$2
shift 2
history=@HISTORY_FILE@
profile=/nix/var/nix/profiles/system
export NIXOS_INSTALL_BOOTLOADER=0
# The deployer's PATH comes along (systemd-run -E PATH); NixOS's system
# tools as a fallback, after it.
export PATH="${PATH:+$PATH:}/run/wrappers/bin:/run/current-system/sw/bin"
echo $$ >"$dir/pid"
exec 5>"$dir/result.lock" 6>"$dir/done.lock"
flock 5 && flock 6 || exit 1
wake=0
if mkfifo -m 600 "$dir/wake" 2>/dev/null; then
	exec 7<>"$dir/wake" && wake=1
fi
: >"$dir/started"
# Leftovers of deployers that died long ago (/run is cleared at boot anyway).
find /run/nixos-config -mindepth 1 -maxdepth 1 -type d -mtime +1 -exec rm -rf {} + 2>/dev/null

# put writes a file atomically.
put() { printf '%s\n' "$2" >"$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1"; }

# record appends a history line rendered by the deployer.
record() {
	[ -f "$dir/$1" ] || return 0
	mkdir -p "${history%/*}" && chmod 700 "${history%/*}"
	(umask 077 && cat "$dir/$1" >>"$history") && chmod 600 "$history"
}

# wait_for <file> <seconds>: 0 when the file appeared in time. The time
# is measured on /proc/uptime, which a switch that sets the clock does not
# move.
now_s() { read -r up _ </proc/uptime && echo "${up%.*}"; }
wait_for() {
	[ -e "$dir/$1" ] && return 0
	[ "$2" -gt 0 ] || return 1
	end=$(($(now_s) + $2 + 1))
	while [ ! -e "$dir/$1" ]; do
		left=$((end - $(now_s)))
		[ "$left" -gt 0 ] || return 1
		if [ "$wake" = 1 ]; then
			timeout "$left" head -c 1 <&7 >/dev/null 2>&1 6>&-
			case $? in 0 | 124) ;; *) sleep 0.05 ;; esac
		else
			sleep 0.05
		fi
	done
}

# switch_generation <generation> <system path> <switch-to-configuration
# action> <log>: the system profile back to generation, then its system
# activated. Status 91 when the profile could not be switched (nothing
# activated), else switch-to-configuration's.
switch_generation() {
	nix-env -p "$profile" --switch-generation "$1" >>"$4" 2>&1 5>&- 6>&- 7>&- || return 91
	"$2/bin/switch-to-configuration" "$3" >>"$4" 2>&1 5>&- 6>&- 7>&-
}

case $action in
deploy)
	mode=$1 path=$2 setprofile=$3 prev_gen=$4 prev_path=$5 prev_current=$6
	reach=$7 verdict_timeout=$8 auto=$9
	printf '%s\n' "activation $(basename "$dir") of $path since $(date -u +%Y-%m-%dT%H:%M:%SZ)" >/run/nixos-config.activate.info
	rc=0
	: >"$dir/switch.log"
	[ -f "$path/nixos-version" ] || rc=90
	if [ "$rc" = 0 ] && [ "$setprofile" = 1 ]; then
		nix-env -p "$profile" --set "$path" >>"$dir/switch.log" 2>&1 5>&- 6>&- 7>&- || rc=91
	fi
	if [ "$rc" != 0 ]; then
		# Nothing was activated: nothing to wait for or undo.
		put result "switched $rc $(readlink "$profile" 2>/dev/null)"
		exec 5>&-
		put done "not activated"
		exit 0
	fi
	"$path/bin/switch-to-configuration" "$mode" >>"$dir/switch.log" 2>&1 5>&- 6>&- 7>&-
	rc=$?
	put result "switched $rc $(readlink "$profile" 2>/dev/null)"
	exec 5>&-

	# rollback <why: ok (by itself: no new connection in time), verdict,
	# vanished>: back to what ran before, recorded with the reason's line.
	rollback() {
		case $mode in
		switch | boot)
			switch_generation "$prev_gen" "$prev_path" "$mode" "$dir/rollback.log"
			rrc=$?
			;;
		test)
			"$prev_current/bin/switch-to-configuration" test >>"$dir/rollback.log" 2>&1 5>&- 6>&- 7>&-
			rrc=$?
			;;
		*) rrc=0 ;;
		esac
		if [ "$rrc" != 0 ]; then
			record history-rolledback-failed
		elif [ -f "$dir/history-rolledback-$1" ]; then
			record "history-rolledback-$1"
		else
			record history-rolledback-ok
		fi
		put rollback "rolledback $rrc $(readlink "$profile" 2>/dev/null)"
	}

	if [ "$reach" -gt 0 ] && [ "$rc" = 0 ]; then
		# Magic rollback: the deployer must reach the target again over a
		# new SSH connection, or this rolls back by itself.
		# The deployer and this race for the mkdir (see reachedStateScript).
		if ! wait_for reached "$reach" && mkdir "$dir/reached" 2>/dev/null; then
			echo "no new SSH connection from the deployer within ${reach}s: rolling back" >>"$dir/rollback.log"
			rollback ok
			put done "watchdog"
			exit 0
		fi
	fi
	if wait_for verdict "$verdict_timeout"; then
		v=$(head -c 16 "$dir/verdict")
		if [ "$v" = rollback ]; then rollback verdict; fi
		put done "verdict $v"
		exit 0
	fi
	# The deployer vanished before deciding.
	if [ "$rc" != 0 ] && [ "$auto" = 1 ]; then
		rollback vanished
		put done "vanished rollback"
	else
		record history-vanished
		put done "vanished"
	fi
	;;
rollback-to)
	gen=$1 path=$2
	printf '%s\n' "rollback $(basename "$dir") to generation $gen since $(date -u +%Y-%m-%dT%H:%M:%SZ)" >/run/nixos-config.activate.info
	: >"$dir/switch.log"
	switch_generation "$gen" "$path" switch "$dir/switch.log"
	rc=$?
	put result "switched $rc $(readlink "$profile" 2>/dev/null)"
	put done "rollback-to"
	;;
*)
	put result "switched 2 unknown-action"
	;;
esac
