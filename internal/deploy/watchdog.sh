# Magic rollback watchdog of nixos-config, run as root and detached from the
# deployer's SSH session. Arguments: token, timeout in seconds, previous
# generation, its system, time of arming.
# Unless /run/nixos-config/confirm-<token> appears within the timeout (the
# deployer reached the target over a new SSH connection after the switch),
# the profile goes back to the previous generation and that system is
# activated again.
set -u
token=$1
timeout=$2
prev_gen=$3
prev_path=$4
dir=/run/nixos-config
log=/var/lib/nixos-config/watchdog.log
touch "$dir/armed-$token"
mkdir -p /var/lib/nixos-config
i=0
while [ "$i" -lt "$timeout" ]; do
	if [ -e "$dir/confirm-$token" ]; then
		rm -f "$dir/confirm-$token" "$dir/watchdog-$token.sh" "$dir/armed-$token"
		exit 0
	fi
	sleep 1
	i=$((i + 1))
done
if [ -e "$dir/confirm-$token" ]; then
	rm -f "$dir/confirm-$token" "$dir/watchdog-$token.sh" "$dir/armed-$token"
	exit 0
fi
{
	echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $token: no confirmation within ${timeout}s, rolling back to generation $prev_gen"
	nix-env -p /nix/var/nix/profiles/system --switch-generation "$prev_gen"
	NIXOS_INSTALL_BOOTLOADER=0 "$prev_path/bin/switch-to-configuration" switch
	echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $token: rollback finished with status $?"
} >>"$log" 2>&1
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '{"id":"%s","result":"rolled-back","rolledBackTo":%s,"note":"magic rollback: no confirmation within %ss"}\n' "$token" "$prev_gen" "$timeout" >>/var/lib/nixos-config/history.jsonl
printf '{"id":"%s-rollback","kind":"rollback","generation":%s,"path":"%s","deployer":"watchdog@%s","time":"%s","mode":"switch","result":"ok","note":"magic rollback of deploy %s"}\n' "$token" "$prev_gen" "$prev_path" "$(hostname)" "$now" "$token" >>/var/lib/nixos-config/history.jsonl
touch "$dir/rolled-back-$token"
rm -f "$dir/watchdog-$token.sh" "$dir/armed-$token"
