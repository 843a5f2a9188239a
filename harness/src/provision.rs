//! What `nexus-hil provision` runs on a device: prepares a real device for the suite with only its admin account, the
//! way the vendor documents it: the `remotebackup` user, the documented polkit grant, the
//! harness's key for both users. Checks that what the scenarios use is there
//! (`systemd-stdio-bridge`, python3-dbus, rsync). Idempotent; every change is written to a
//! manifest on the device (`/var/lib/nexus-hil/provisioned`) so `--undo` removes exactly what
//! was added and restores the account files' backups it touched. `--dry-run` prints each
//! command and changes nothing.

use nexus_contract::names::ACTIONS;
use nexus_contract::paths::{BACKUP_USER, VENDOR_PKLA};

use crate::bench::record::{ACCOUNT_BACKUPS, REMOVE_USER};
use crate::steps::setup;
use crate::transport::ssh::sh_quote;

/// Where the manifest and saved files live on the device.
const STATE: &str = "/var/lib/nexus-hil";

/// The vendor's own command for the polkit grant, word for word.
fn pkla_command() -> String {
    setup::pkla_command(BACKUP_USER, VENDOR_PKLA, &ACTIONS)
}

const COMMON: &str = r#"set -eu
STATE=__STATE__
MANIFEST=$STATE/provisioned
PKLA=/etc/polkit-1/localauthority/50-local.d/10-backup.pkla
say() { printf '%s\n' "$*"; }
# Prints a command, then runs it unless this is a dry run.
run() { say "\$ $1"; if [ "$DRY" != 1 ]; then eval "$1" </dev/null; fi; }
note() { if [ "$DRY" != 1 ]; then printf '%s\n' "$1" >> "$MANIFEST"; fi; }
"#;

/// The provisioning script, run as root on the device.
pub fn provision_script(admin: &str, pubkey: &str, dry: bool) -> String {
    let mut s = format!(
        "DRY={}\nADMIN={}\nKEY={}\nPKLA_CMD={}\n",
        u8::from(dry),
        sh_quote(admin),
        sh_quote(pubkey.trim()),
        sh_quote(&pkla_command())
    );
    s.push_str(&COMMON.replace("__STATE__", STATE));
    s.push_str(&format!("ACCOUNT_BACKUPS='{ACCOUNT_BACKUPS}'\n"));
    s.push_str(
        r#"missing=""
command -v systemd-stdio-bridge >/dev/null 2>&1 || missing="$missing systemd-stdio-bridge (package systemd)"
python3 -c 'import dbus' >/dev/null 2>&1 || missing="$missing python3-dbus"
command -v rsync >/dev/null 2>&1 || missing="$missing rsync"
if [ -n "$missing" ]; then
  say "missing on the device:$missing; install it (apt-get install systemd python3-dbus rsync) and provision again"
  exit 4
fi
say "ok: systemd-stdio-bridge, python3-dbus and rsync are present"
[ -d "$STATE" ] || run "install -d -m 700 $STATE"

add_key() {
  u=$1
  if ! id -u "$u" >/dev/null 2>&1; then say "\$ authorize the harness key for $u (after it is made)"; return; fi
  home=$(getent passwd "$u" | cut -d: -f6)
  g=$(id -gn "$u")
  f=$home/.ssh/authorized_keys
  if [ -f "$f" ] && grep -qxF "$KEY" "$f"; then say "ok: the harness key is already authorized for $u"; return; fi
  if [ ! -d "$home/.ssh" ]; then run "install -d -m 700 -o $u -g $g $home/.ssh"; note "dir $home/.ssh"; fi
  if [ ! -e "$f" ]; then run "install -m 600 -o $u -g $g /dev/null $f"; note "file $f"; fi
  run "printf '%s\\n' \"\$KEY\" >> $f"
  note "key $f"
}

add_key "$ADMIN"
if id -u remotebackup >/dev/null 2>&1; then
  say "ok: user remotebackup exists"
else
  if [ ! -e "$STATE/accounts" ]; then
    run "install -d -m 700 $STATE/accounts"
    for b in $ACCOUNT_BACKUPS; do
      if [ -e "/etc/$b" ]; then run "cp -p /etc/$b $STATE/accounts/$b"; fi
    done
  fi
  run "adduser --disabled-password --gecos Backup remotebackup >/dev/null"
  note "user remotebackup"
fi
if [ -e "$PKLA" ]; then
  tmp=$(mktemp)
  PKLA_TMP=$(printf '%s' "$PKLA_CMD" | sed "s#> $PKLA#> $tmp#")
  eval "$PKLA_TMP"
  if cmp -s "$tmp" "$PKLA"; then
    say "ok: $PKLA is the documented grant"
  else
    run "cp -p $PKLA $STATE/10-backup.pkla.saved"
    note "replaced $PKLA"
    run "$PKLA_CMD"
  fi
  rm -f "$tmp"
else
  run "$PKLA_CMD"
  note "made $PKLA"
fi
add_key remotebackup
say "provisioned: the suite can run with --target and the harness key"
"#,
    );
    s
}

/// The undo script: reverts the manifest's entries, newest first. Each revert checks first, so
/// an undo that stopped half way can simply be run again.
pub fn undo_script(pubkey: &str, dry: bool) -> String {
    let mut s = format!("DRY={}\nKEY={}\n", u8::from(dry), sh_quote(pubkey.trim()));
    s.push_str(&COMMON.replace("__STATE__", STATE));
    s.push_str(REMOVE_USER);
    // First what runs left recorded (a run that crashed or lost the device mid-scenario).
    s.push_str(&format!(
        "if [ -d {dir} ]; then\n  if [ \"$DRY\" = 1 ]; then say \"would undo the changes runs left recorded in {dir}\";\n  \
         else sh -c {} || {{ say \"some changes runs left in {dir} could not be undone (above)\"; exit 1; }}; fi\nfi\n",
        sh_quote(&crate::bench::record::undo_script(None)),
        dir = crate::bench::record::DIR
    ));
    s.push_str(
        r#"if [ ! -e "$MANIFEST" ]; then say "nothing to undo: $MANIFEST does not exist"; exit 0; fi
tac "$MANIFEST" | while read -r what path; do
  case "$what" in
    key) if [ -f "$path" ]; then run "grep -vxF \"\$KEY\" $path > $path.nexus-hil || true; cat $path.nexus-hil > $path; rm -f $path.nexus-hil"; fi ;;
    file) run "rm -f $path" ;;
    dir) if [ -d "$path" ]; then run "rmdir $path"; fi ;;
    user) if id -u "$path" >/dev/null 2>&1; then run "remove_user $path"; fi
          for b in $(ls "$STATE/accounts" 2>/dev/null); do run "cp -p $STATE/accounts/$b /etc/$b"; done ;;
    made) run "rm -f $path" ;;
    replaced) run "cp -p $STATE/10-backup.pkla.saved $path" ;;
    *) say "unknown manifest line: $what $path" ;;
  esac
done
run "find $STATE -mindepth 1 -maxdepth 1 ! -name lock ! -name .mutex -exec rm -rf {} +"
say "undone: the device is as it was before provisioning"
"#,
    );
    s
}
