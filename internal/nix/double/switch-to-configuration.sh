# switch-to-configuration of the test double (the lines above this one are
# written by the builder: toplevel, exit_code, sshd_action, fail_message,
# failing_unit).
#
# Behaves like NixOS's on a lab target:
#   switch, test     point /run/current-system at this system (and restart the
#                    lab's sshd if it is not running, like a unit restart)
#   switch, boot     make this system the default boot entry
#   dry-activate     print what would change, change nothing
# On a lab host with systemd (PID 1, /run/systemd/system exists) sshd is the
# unit sshd.service and is controlled with systemctl; like NixOS's, the
# switch first forgets failed units (`systemctl reset-failed`, see nixpkgs
# nixos/modules/system/activation/switch-to-configuration.pl), and
# lab.simulate.failingUnit starts a unit that fails half a second later,
# after the switch stopped watching: the switch succeeds, the system is
# degraded.
# A file /var/lib/nixos-double/fail/<this system's store name> makes this
# system's activation fail (exit 5) before it changes anything: the lab's
# way to break a rollback (the previous system) after it was deployed.
# Every activation is recorded in /var/lib/nixos-double/activations.log as
# "<UTC time> <mode> <system> <exit code> <unit>", where <unit> is the
# systemd unit the switch ran in (e.g. a transient nixos-config-switch-*
# unit of systemd-run) or "-".
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
if [ -e "$state/fail/${toplevel##*/}" ]; then
	printf '%s %s %s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$mode" "$toplevel" 5 - >>"$state/activations.log"
	echo "switch-to-configuration: this system's activation fails (simulated: $state/fail)" >&2
	exit 5
fi

systemd=
if [ -d /run/systemd/system ]; then systemd=1; fi

# The unit this runs in: the last part of its cgroup, when that is a service.
unit=-
if [ -n "$systemd" ]; then
	cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
	case "${cg##*/}" in
	*.service) unit=${cg##*/} ;;
	esac
fi

sshd_running() {
	[ -f /run/sshd.pid ] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null
}

# stop_sshd ends the lab's sshd and waits (up to 5 s) until it has exited
# (gone, or a zombie: its socket is closed), as systemctl stop does.
stop_sshd() {
	pid=$(cat /run/sshd.pid)
	kill "$pid"
	i=0
	while [ $i -lt 50 ] && [ -e "/proc/$pid" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
		sleep 0.1
		i=$((i + 1))
	done
}

# Another port: a copy of the lab's sshd configuration with that port (-o
# Port=N would add a port, not replace one).
port_config=/run/lab-sshd_config-port
write_port_config() {
	sed "s/^Port .*/Port ${sshd_action#port:}/" "$lab_sshd_config" >"$port_config"
}

# sshd on a systemd lab host: the unit sshd.service; another port is a
# runtime drop-in.
port_dropin=/run/systemd/system/sshd.service.d/lab-port.conf
systemd_sshd() {
	case "$sshd_action" in
	stop)
		if systemctl is-active --quiet sshd.service; then
			echo "stopping the following units: sshd.service"
			systemctl stop sshd.service
		fi
		;;
	port:*)
		echo "restarting the following units: sshd.service"
		write_port_config
		mkdir -p "${port_dropin%/*}"
		printf '[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -f %s -E /var/lib/lab/sshd.log\n' "$port_config" >"$port_dropin"
		systemctl daemon-reload
		systemctl restart sshd.service
		;;
	*)
		if [ -f "$port_dropin" ]; then
			echo "restarting the following units: sshd.service"
			rm -f "$port_dropin"
			systemctl daemon-reload
			systemctl restart sshd.service
		elif ! systemctl is-active --quiet sshd.service; then
			echo "starting the following units: sshd.service"
			systemctl start sshd.service
		fi
		;;
	esac
}

if [ "$mode" = switch ] || [ "$mode" = test ]; then
	if [ -n "$systemd" ]; then systemctl reset-failed; fi
	ln -sfn "$toplevel" /run/current-system.tmp
	mv -fT /run/current-system.tmp /run/current-system
	echo "activating the configuration $toplevel..."
	if [ -f "$lab_sshd_config" ] && [ -n "$systemd" ]; then
		systemd_sshd
	elif [ -f "$lab_sshd_config" ]; then
		case "$sshd_action" in
		stop)
			if sshd_running; then
				echo "stopping the following units: sshd.service"
				stop_sshd
			fi
			;;
		port:*)
			echo "restarting the following units: sshd.service"
			if sshd_running; then stop_sshd; fi
			write_port_config
			/usr/sbin/sshd -f "$port_config"
			;;
		*)
			if ! sshd_running; then
				echo "starting the following units: sshd.service"
				/usr/sbin/sshd -f "$lab_sshd_config"
			fi
			;;
		esac
	fi
	if [ -n "$failing_unit" ] && [ -n "$systemd" ]; then
		echo "starting the following units: $failing_unit.service"
		systemd-run --unit="$failing_unit" --description="$failing_unit (fails, lab.simulate.failingUnit)" --quiet \
			/bin/sh -c 'sleep 0.5; echo "simulated failure" >&2; exit 1' || true
		# Return once it failed, so that whoever looks next sees it.
		i=0
		while ! systemctl is-failed --quiet "$failing_unit.service" && [ $i -lt 100 ]; do
			sleep 0.1
			i=$((i + 1))
		done
	elif [ -n "$failing_unit" ]; then
		echo "lab.simulate.failingUnit: no systemd on this host, nothing fails" >&2
	fi
fi
if [ "$mode" = switch ] || [ "$mode" = boot ]; then
	ln -sfn "$toplevel" "$state/default-boot-entry"
	echo "updating the default boot entry"
fi
printf '%s %s %s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$mode" "$toplevel" "$exit_code" "$unit" >>"$state/activations.log"
if [ "$exit_code" != 0 ]; then
	echo "$fail_message" >&2
	exit "$exit_code"
fi
