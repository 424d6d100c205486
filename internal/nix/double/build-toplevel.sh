# Builder of the double's toplevel. Runs under /bin/sh with PATH=/usr/bin:/bin.
if [ -n "$buildFailure" ]; then
	echo "$buildFailure" >&2
	exit 1
fi
mkdir -p "$out/bin"
printf '%s\n' "$release" > "$out/nixos-version"
printf '%s\n' "$hostName" > "$out/hostname"
printf '%s\n' "$moduleHashes" > "$out/module-hashes"
# Runtime references: listing the dependency paths makes them part of the closure.
: > "$out/dependencies"
for d in $deps; do printf '%s\n' "$d" >> "$out/dependencies"; done
{
  printf '#!/bin/sh\n'
  printf "toplevel='%s'\n" "$out"
  printf "exit_code='%s'\n" "$exitCode"
  printf "sshd_action='%s'\n" "$sshdAction"
  printf "failing_unit='%s'\n" "$failingUnit"
  printf "fail_message='%s'\n" "$(printf '%s' "$failMessage" | tr -d "'")"
  cat "$switchScript"
} > "$out/bin/switch-to-configuration"
chmod 0555 "$out/bin/switch-to-configuration"
