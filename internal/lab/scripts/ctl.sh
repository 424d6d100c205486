#!/bin/sh
# Service control inside a lab host, run in its namespaces (by init.sh, or
# by the lab through nsenter as `sh -c <this script> ctl <command>`).
# Usage: ctl.sh <command>
#   start-nix-daemon | stop-nix-daemon | start-sshd | stop-sshd | status
# On a systemd host (systemd is PID 1) the services are units and systemctl
# controls them; elsewhere this script starts and stops the daemons itself.
set -eu
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ -d /run/systemd/system ]; then
	case "${1-}" in
	start-nix-daemon) systemctl start nix-daemon.service ;;
	stop-nix-daemon) systemctl stop nix-daemon.service ;;
	start-sshd) systemctl start sshd.service ;;
	stop-sshd) systemctl stop sshd.service ;;
	status)
		if systemctl is-active --quiet sshd.service; then echo "sshd up"; else echo "sshd down"; fi
		if systemctl is-active --quiet nix-daemon.service && [ -S /nix/var/nix/daemon-socket/socket ]; then
			echo "nix-daemon up"
		else
			echo "nix-daemon down"
		fi
		echo "system=$(systemctl is-system-running 2>/dev/null || true)"
		;;
	*)
		echo "usage: ctl.sh start-nix-daemon|stop-nix-daemon|start-sshd|stop-sshd|status" >&2
		exit 2
		;;
	esac
	exit 0
fi

case "${1-}" in
start-nix-daemon)
	if alive /run/nix-daemon.pid; then exit 0; fi
	rm -f /nix/var/nix/daemon-socket/socket
	mkdir -p /nix/var/nix/daemon-socket
	setsid nix-daemon >>/var/lib/lab/nix-daemon.log 2>&1 </dev/null &
	echo $! >/run/nix-daemon.pid
	i=0
	while [ ! -S /nix/var/nix/daemon-socket/socket ]; do
		i=$((i + 1))
		if [ $i -gt 100 ]; then
			echo "nix-daemon did not create its socket" >&2
			exit 1
		fi
		sleep 0.05
	done
	;;
stop-nix-daemon)
	if alive /run/nix-daemon.pid; then
		kill "$(cat /run/nix-daemon.pid)"
		i=0
		while alive /run/nix-daemon.pid && [ $i -lt 100 ]; do
			i=$((i + 1))
			sleep 0.05
		done
	fi
	rm -f /run/nix-daemon.pid /nix/var/nix/daemon-socket/socket
	;;
start-sshd)
	if alive /run/sshd.pid; then exit 0; fi
	# Daemonizes; writes /run/sshd.pid (PidFile in the config).
	/usr/sbin/sshd -f /var/lib/lab/sshd_config -E /var/lib/lab/sshd.log
	;;
stop-sshd)
	if alive /run/sshd.pid; then
		kill "$(cat /run/sshd.pid)"
		i=0
		while alive /run/sshd.pid && [ $i -lt 100 ]; do
			i=$((i + 1))
			sleep 0.05
		done
	fi
	rm -f /run/sshd.pid
	;;
status)
	if alive /run/sshd.pid; then echo "sshd up"; else echo "sshd down"; fi
	if alive /run/nix-daemon.pid && [ -S /nix/var/nix/daemon-socket/socket ]; then
		echo "nix-daemon up"
	else
		echo "nix-daemon down"
	fi
	;;
*)
	echo "usage: ctl.sh start-nix-daemon|stop-nix-daemon|start-sshd|stop-sshd|status" >&2
	exit 2
	;;
esac
