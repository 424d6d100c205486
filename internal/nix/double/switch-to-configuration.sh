# switch-to-configuration of the test double (the lines above this one are
# written by the builder: toplevel, exit_code, sshd_action, fail_message).
#
# Behaves like NixOS's on a lab target:
#   switch, test     point /run/current-system at this system (and restart the
#                    lab's sshd if it is not running, like a unit restart)
#   switch, boot     make this system the default boot entry
#   dry-activate     print what would change, change nothing
# Every activation is recorded in /var/lib/nixos-double/activations.log as
# "<UTC time> <mode> <system> <exit code>".
set -eu
mode="${1-}"
case "$mode" in
switch | boot | test | dry-activate) ;;
*)
	echo "Usage: switch-to-configuration [switch|boot|test|dry-activate]" >&2
	exit 1
	;;
esac

state=/var/lib/nixos-double
lab_sshd_config=/var/lib/lab/sshd_config
current=$(readlink /run/current-system 2>/dev/null || echo none)

if [ "$mode" = dry-activate ]; then
	echo "would switch /run/current-system from $current to $toplevel"
	if [ "$sshd_action" = stop ]; then echo "would stop the following units: sshd.service"; fi
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "switch-to-configuration: this program must be run as root" >&2
	exit 1
fi
mkdir -p "$state"

sshd_running() {
	[ -f /run/sshd.pid ] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null
}

if [ "$mode" = switch ] || [ "$mode" = test ]; then
	ln -sfn "$toplevel" /run/current-system.tmp
	mv -fT /run/current-system.tmp /run/current-system
	echo "activating the configuration $toplevel..."
	if [ -f "$lab_sshd_config" ]; then
		case "$sshd_action" in
		stop)
			if sshd_running; then
				echo "stopping the following units: sshd.service"
				kill "$(cat /run/sshd.pid)"
			fi
			;;
		port:*)
			echo "restarting the following units: sshd.service"
			if sshd_running; then kill "$(cat /run/sshd.pid)"; fi
			sleep 0.2
			/usr/sbin/sshd -f "$lab_sshd_config" -o "Port=${sshd_action#port:}"
			;;
		*)
			if ! sshd_running; then
				echo "starting the following units: sshd.service"
				/usr/sbin/sshd -f "$lab_sshd_config"
			fi
			;;
		esac
	fi
fi
if [ "$mode" = switch ] || [ "$mode" = boot ]; then
	ln -sfn "$toplevel" "$state/default-boot-entry"
	echo "updating the default boot entry"
fi
printf '%s %s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$mode" "$toplevel" "$exit_code" >>"$state/activations.log"
if [ "$exit_code" != 0 ]; then
	echo "$fail_message" >&2
	exit "$exit_code"
fi
