#!/usr/bin/python3
# The vendor's backup client from the NEXUS backup documentation ("Create a backup.py script"),
# word for word; only the indentation, lost in the published copy, is restored.
import dbus
import signal
from time import sleep


def script_interrupted(signum, frame):
    print("\nScript aborted, backup does not stop!")
    exit(1)


signal.signal(signal.SIGINT, script_interrupted)

BACKUP_PASSWORD = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

print("Creating snapshot...")
bus = dbus.SystemBus()
snapshot_object = bus.get_object("tech.noreya.Snapshot1", "/tech/noreya/Snapshot1")
snapshot_iface = dbus.Interface(snapshot_object, dbus_interface="tech.noreya.Snapshot1")
backup_object = bus.get_object("tech.noreya.Backup1", "/tech/noreya/Backup1")
backup_iface = dbus.Interface(backup_object, dbus_interface="tech.noreya.Backup1")
snapshot_id = snapshot_iface.Create(True, True, "Backup script")
print("Snapshot " + str(snapshot_id) + " created")
backup_iface.Create(snapshot_id, BACKUP_PASSWORD)
status = backup_iface.Status()
while status["id"] == snapshot_id:
    print("Backup progress: " + str(status["progress"]) + "%")
    sleep(5)
    status = backup_iface.Status()
print("Backup finished")
