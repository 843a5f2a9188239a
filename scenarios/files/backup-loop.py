#!/usr/bin/python3
"""Backs up one snapshot again and again through tech.noreya.Backup1, as the vendor's client
does, until SIGTERM; then cancels the running backup and deletes what it made. The load of a
probe.latency step. Usage: backup-loop.py SNAPSHOT_ID

Each round's password is random and never leaves this process (the backups are deleted)."""
import secrets
import signal
import sys
import time

import dbus

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
    rounds += 1
if int(backup.Status().get("id", 0)) == snapshot_id:
    backup.Cancel()
    while int(backup.Status().get("id", 0)) == snapshot_id:
        time.sleep(0.1)
try:
    backup.Delete(dbus.UInt32(snapshot_id))
except dbus.DBusException:
    pass
print(f"{rounds} backups done", file=sys.stderr)
