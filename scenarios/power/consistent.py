#!/usr/bin/python3
# After a power cut: is the device consistent? Run as root on the device by the power
# scenarios (ssh.put, then ssh.run). It asks the daemon what it says over D-Bus and looks at
# /broot for what it should not hold:
# - nothing is reported running (Backup1.Status: id 0, state idle);
# - the backups listed are exactly the ones given on the command line (those finished before
#   the cut), /broot/backups holds exactly their files (no partial file, none under a final
#   name), and each file has the size and SHA-256 GetList gives;
# - every snapshot listed is whole (info.json and the parts it names) and every snapshot folder
#   is listed (none left half made or half deleted); at most one is active;
# - no switch left half done (/broot/system.new, data.old, ...);
# - with --activated ID: the marker files written after snapshot ID into the live system and
#   data are both there (the switch did not happen) or both gone (it did, and then ID is the
#   active snapshot and an automatic snapshot kept both markers).
# Prints "consistent: highest id N" (the highest snapshot or backup id the device holds, for
# "ids are never reused" checks) and what it saw on stderr; or what is wrong, exit status 1.
# Usage: consistent.py [--activated ID] [BACKUP_ID ...]
import hashlib
import os
import sys

import dbus

BROOT = "/broot"
SNAPSHOTS = BROOT + "/snapshot/snapshots"
BACKUPS = BROOT + "/backups"
MARKER = "nexus-hil-marker"

args = sys.argv[1:]
activated = None
if args[:1] == ["--activated"]:
    activated = int(args[1])
    args = args[2:]
expected = sorted(int(a) for a in args)
wrong = []
bus = dbus.SystemBus()


def iface(name):
    path = "/" + name.replace(".", "/")
    return dbus.Interface(bus.get_object(name, path), dbus_interface=name)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


snapshot = iface("tech.noreya.Snapshot1")
backup = iface("tech.noreya.Backup1")

status = backup.Status()
if int(status["id"]) != 0 or str(status.get("state", "idle")) != "idle":
    wrong.append("a backup is reported running: id %s, state %s" % (status["id"], status.get("state")))

listed = {int(b["id"]): b for b in backup.GetList()}
if sorted(listed) != expected:
    wrong.append("Backup1.GetList lists %s, expected exactly %s" % (sorted(listed), expected))
files = sorted(os.listdir(BACKUPS))
want = sorted("nexus_backup_%d.tar.gpg" % i for i in expected)
if files != want:
    wrong.append("%s holds %s, expected exactly %s" % (BACKUPS, files, want))
for i, b in sorted(listed.items()):
    path = str(b["path"])
    if not os.path.isfile(path):
        wrong.append("backup %d is listed but %s is not a file" % (i, path))
        continue
    if os.path.getsize(path) != int(b["size"]) or sha256(path) != str(b["sha256"]):
        wrong.append("backup %d: %s is not the size and SHA-256 GetList gives" % (i, path))

snaps = {int(s["id"]): s for s in snapshot.GetList()}
for name in sorted(os.listdir(SNAPSHOTS)):
    if not name.isdigit() or int(name) not in snaps:
        wrong.append("%s/%s is not listed: left half made or half deleted" % (SNAPSHOTS, name))
for i, s in sorted(snaps.items()):
    folder = "%s/%d" % (SNAPSHOTS, i)
    if not os.path.isfile(folder + "/info.json"):
        wrong.append("snapshot %d is listed without %s/info.json" % (i, folder))
    for part in ("system", "data"):
        if bool(s[part]) != os.path.isdir("%s/%s" % (folder, part)):
            wrong.append("snapshot %d: %s says %s=%s, the folder says otherwise" % (i, "info", part, bool(s[part])))
active = [i for i, s in snaps.items() if bool(s["active"])]
if len(active) > 1:
    wrong.append("more than one snapshot is active: %s" % active)
left = sorted(n for n in os.listdir(BROOT) if n.endswith(".new") or n.endswith(".old"))
if left:
    wrong.append("a switch left %s in %s" % (left, BROOT))

if activated is not None:
    kept = [p for p in ("system", "data") if os.path.exists("%s/%s/%s" % (BROOT, p, MARKER))]
    if len(kept) == 1:
        wrong.append("the switch to snapshot %d is half done: only %s still has its marker" % (activated, kept[0]))
    elif kept:
        if activated in active:
            wrong.append("snapshot %d is reported active, but the live system still has the markers" % activated)
        print("the switch to snapshot %d did not happen: both markers are there" % activated, file=sys.stderr)
    else:
        if activated not in active:
            wrong.append("the markers are gone, but snapshot %d is not reported active" % activated)
        holders = [
            i
            for i in snaps
            if all(os.path.exists("%s/%d/%s/%s" % (SNAPSHOTS, i, p, MARKER)) for p in ("system", "data"))
        ]
        if not holders:
            wrong.append("the switch to snapshot %d lost the state it left: no snapshot holds the markers" % activated)
        print(
            "the switch to snapshot %d happened whole; the state left is kept in snapshot(s) %s" % (activated, holders),
            file=sys.stderr,
        )

print("snapshots %s (active %s), backups %s" % (sorted(snaps), active, sorted(listed)), file=sys.stderr)
if wrong:
    for w in wrong:
        print("INCONSISTENT: " + w)
        print("INCONSISTENT: " + w, file=sys.stderr)
    sys.exit(1)
print("consistent: highest id %d" % max([0] + list(snaps) + list(listed)))
