#!/bin/bash
# What a user would write by hand: tar of a snapshot piped into gpg, at normal priority and
# without any I/O limit, again and again until SIGTERM; the load of a probe.latency step.
# Usage: naive-backup.sh SNAPSHOT_ID
set -u
src=/broot/snapshot/snapshots/$1
out=/broot/backups/.naive-backup.tar.gpg
home=$(mktemp -d)
# A random passphrase, kept in a pipe: the backups are thrown away.
pass=$(head -c 16 /dev/urandom | base64)
# Space freed by the last round is trimmed at once, as backup-loop.py does (btrfs's async
# discard would stall the automation two minutes later, in another window of the probe).
trim() { command -v fstrim >/dev/null && fstrim /broot >/dev/null 2>&1; true; }
# The harness stops the whole process group (tar and gpg too); this cleans up. A pipeline
# started just as the group was signalled missed the signal: it is stopped and waited for
# here ($! is its gpg; tar then ends on a broken pipe), or its gpg would write the file again
# after it was removed, a backup left behind (1 run in 24 of the perf suite did).
trap 'kill -TERM $! 2>/dev/null; wait; rm -rf "$home" "$out"; trim; exit 0' TERM INT
test -d "$src" || { echo "no snapshot $1 at $src" >&2; exit 1; }
while :; do
  tar -C "$src" -cf - . | gpg --homedir "$home" --batch --yes --pinentry-mode loopback \
    --passphrase-fd 3 --symmetric --cipher-algo AES256 --compress-algo none -o "$out" 3<<<"$pass" &
  wait $! || { echo "tar | gpg failed" >&2; exit 1; }
  trim
done
