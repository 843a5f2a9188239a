#!/usr/bin/python3
"""Backs up one snapshot again and again through tech.noreya.Backup1, as the vendor's client
does, until SIGTERM; then cancels the running backup and deletes what it made. The load of a
probe.latency step. Usage: backup-loop.py SNAPSHOT_ID

Each round's password is random and never leaves this process (the backups are deleted).

After every Delete the freed space is trimmed at once (`fstrim /broot`, where there is one):
btrfs with `discard=async` would otherwise discard it about two minutes later, a 20-60 ms stall
of the automation's fdatasync that lands in whatever window of the probe runs then. Trimmed
here, the load's own after-effect stays in the load's windows."""
import secrets
import shutil
import signal
import subprocess
import sys
import time

import dbus


def trim():
    if shutil.which("fstrim"):
        subprocess.run(["fstrim", "/broot"], check=False, stdout=subprocess.DEVNULL)

snapshot_id = int(sys.argv[1])
bus = dbus.SystemBus()
backup = dbus.Interface(bus.get_object("tech.noreya.Backup1", "/tech/noreya/Backup1"), "tech.noreya.Backup1")
stopping = False


def stop(*_):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
rounds = 0
while not stopping:
    backup.Create(dbus.UInt32(snapshot_id), secrets.token_hex(16))
    while not stopping and int(backup.Status().get("id", 0)) == snapshot_id:
        time.sleep(0.2)
    if stopping:
        break
    last = str(backup.Status().get("last_result", ""))
    if last != "ok":
        print(f"round {rounds + 1}: backup ended with {last!r}", file=sys.stderr)
        sys.exit(1)
    backup.Delete(dbus.UInt32(snapshot_id))
    trim()
    rounds += 1
if int(backup.Status().get("id", 0)) == snapshot_id:
    backup.Cancel()
    while int(backup.Status().get("id", 0)) == snapshot_id:
        time.sleep(0.1)
try:
    backup.Delete(dbus.UInt32(snapshot_id))
except dbus.DBusException:
    pass
trim()
print(f"{rounds} backups done", file=sys.stderr)
