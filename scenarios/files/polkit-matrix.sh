#!/bin/bash
# Calls each of the nine methods once as the calling user, with arguments that change nothing
# even when allowed, and prints per polkit action: allowed, or denied (naming the action or not).
send() { dbus-send --system --print-reply --dest="tech.noreya.$1" "/tech/noreya/$1" "tech.noreya.$1.$2" "${@:3}" 2>&1; }
check() {
  local out
  out=$(send "$@")
  case "$out" in
    *AccessDenied*"tech.noreya.$1.$2"*) echo "tech.noreya.$1.$2: denied, naming the action" ;;
    *AccessDenied*) echo "tech.noreya.$1.$2: denied without naming the action" ;;
    *) echo "tech.noreya.$1.$2: allowed" ;;
  esac
}
check Backup1 Cancel
check Backup1 Create uint32:4000000000 string:not-a-real-backup
check Backup1 Delete uint32:4000000000
check Backup1 GetList
check Backup1 Status
check Snapshot1 Activate uint32:4000000000
check Snapshot1 Create boolean:false boolean:false string:nothing
check Snapshot1 Delete uint32:4000000000
check Snapshot1 GetList
