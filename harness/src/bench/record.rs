//! The record of a scenario's changes, kept on the device itself so that a device is left as
//! found in every outcome. Each change is recorded before it is made, as one numbered entry under
//! [`DIR`]: a kind (`file`, `user`, `key`, `snapshot`, `backup`) and what undoing it needs (the
//! file as it was, the account files' `-` backups, the key line, the id the run was given). An
//! entry is written in a `.new` folder, flushed, and renamed into force; only then is the change
//! made, so an entry may exist for a change that never came (undoing it changes nothing), never
//! the other way round. A snapshot or a backup is the exception: its id is known only from the
//! reply that made it, so it is recorded as soon as that reply is read, before the next step. The
//! run owns exactly what it recorded: the undo deletes those snapshots and backups and nothing
//! else on the device (not what the owner, their backup server or another run made meanwhile).
//! [`undo_script`] undoes the entries newest first, each undone one removed, and stops at the
//! first it cannot undo, keeping it and every older one: the runner runs it when a scenario
//! ends, and at a run's start for what a run that crashed or lost its connection left;
//! `provision --undo` runs it too.

use nexus_contract::names::{object_path, BACKUP1, SNAPSHOT1};

use crate::transport::ssh::sh_quote;

/// Where the entries live (the device lock's folder holds it).
pub const DIR: &str = "/var/lib/nexus-hil/undo";

/// Shell function `remove_user NAME`: ends the user's sessions (logins leave a user manager
/// behind for a moment, and userdel refuses a user with processes), waits up to 10 s for its
/// processes to go, then removes it with its home.
pub const REMOVE_USER: &str = r#"remove_user() {
  ru=$1; ruid=$(id -u "$ru") || return 1
  loginctl terminate-user "$ru" >/dev/null 2>&1 || true
  i=0
  while [ $i -lt 100 ]; do
    busy=0
    for p in /proc/[0-9]*; do [ "$(stat -c %u "$p" 2>/dev/null)" = "$ruid" ] && busy=1 && break; done
    [ $busy = 0 ] && break
    sleep 0.1; i=$((i+1))
  done
  deluser --remove-home "$ru" >/dev/null 2>&1 || userdel -r "$ru"
}
"#;

/// The account files whose `-` backups adduser and deluser rewrite.
pub const ACCOUNT_BACKUPS: &str = "passwd- group- shadow- gshadow- subuid- subgid-";

/// Shell functions that record a change (the script runs as root): `nh_file PATH [UNIT]`,
/// `nh_user NAME`, `nh_key NAME HOME` (the key in `$key`), `nh_made snapshot|backup ID`. Each
/// returns non-zero when the record could not be written, and the caller makes no change then.
pub fn functions() -> String {
    format!(
        r#"NH_RECORD={DIR}
nh_begin() {{
  mkdir -p -m 700 "$NH_RECORD" || return 1
  nh_n=$(ls "$NH_RECORD" | grep -E '^[0-9]+$' | sort -n | tail -n 1)
  nh_entry="$NH_RECORD/$(printf '%06d' "$(expr "${{nh_n:-0}}" + 1)")"
  rm -rf "$nh_entry.new" && mkdir "$nh_entry.new" && printf '%s\n' "$1" > "$nh_entry.new/kind" &&
    printf '%s\n' "$2" > "$nh_entry.new/what"
}}
nh_commit() {{
  sync "$nh_entry.new"/* && mv "$nh_entry.new" "$nh_entry" && sync "$NH_RECORD"
}}
nh_file() {{
  nh_begin file "$1" && printf '%s\n' "$1" > "$nh_entry.new/path" || return 1
  if [ -e "$1" ] || [ -L "$1" ]; then cp -a "$1" "$nh_entry.new/saved" || return 1; fi
  if [ -n "$2" ]; then printf '%s\n' "$2" > "$nh_entry.new/restart" || return 1; fi
  nh_commit
}}
nh_user() {{
  nh_begin user "$1" && printf '%s\n' "$1" > "$nh_entry.new/name" || return 1
  for b in {ACCOUNT_BACKUPS}; do
    if [ -e "/etc/$b" ]; then cp -a "/etc/$b" "$nh_entry.new/$b" || return 1; fi
  done
  nh_commit
}}
nh_key() {{
  nh_begin key "$1" && printf '%s\n' "$1" > "$nh_entry.new/name" && printf '%s\n' "$key" > "$nh_entry.new/key" &&
    : > "$nh_entry.new/made" || return 1
  [ -d "$2/.ssh" ] || echo dir >> "$nh_entry.new/made"
  [ -e "$2/.ssh/authorized_keys" ] || echo file >> "$nh_entry.new/made"
  if [ -s "$2/.ssh/authorized_keys" ] && [ "$(tail -c 1 "$2/.ssh/authorized_keys" | od -An -c | tr -d ' ')" != '\n' ]; then
    echo newline >> "$nh_entry.new/made"
  fi
  nh_commit
}}
nh_made() {{
  case "$1" in snapshot|backup) ;; *) echo "nh_made: unknown kind $1" >&2; return 1;; esac
  case "$2" in ''|*[!0-9]*) echo "nh_made: $1 id '$2' is not a number" >&2; return 1;; esac
  nh_begin "$1" "$1 $2" && printf '%s\n' "$2" > "$nh_entry.new/id" || return 1
  nh_commit
}}
"#
    )
}

/// What a run can make on a device through the daemon, and so own: each is recorded by the id
/// the daemon's reply gave the run, and only those are deleted when the record is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// A snapshot (`Snapshot1.Create`'s reply).
    Snapshot,
    /// The backup of a snapshot, started by the run (`Backup1.Create` that succeeded).
    Backup,
}

impl Made {
    pub fn name(self) -> &'static str {
        match self {
            Made::Snapshot => "snapshot",
            Made::Backup => "backup",
        }
    }

    pub fn parse(s: &str) -> Option<Made> {
        match s {
            "snapshot" => Some(Made::Snapshot),
            "backup" => Some(Made::Backup),
            _ => None,
        }
    }
}

/// Records that the run made `what` with this id, so that the undo deletes it (and, for a
/// backup, cancels it if it still runs). Nothing the run did not record is ever deleted.
pub fn made_command(what: Made, id: u64) -> String {
    format!("{}nh_made {} {id}", functions(), what.name())
}

/// Lines a step's command prints to say what it made (`made snapshot 12`, `made backup 12`),
/// which the harness records as the run's own.
pub fn made_lines(stdout: &str) -> Vec<(Made, u64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.trim().strip_prefix("made ")?.split_whitespace();
            let what = Made::parse(w.next()?)?;
            let id = w.next()?.parse().ok()?;
            w.next().is_none().then_some((what, id))
        })
        .collect()
}

/// How each kind of entry is undone. Each function runs under `set -e` in a subshell, gets the
/// entry's folder, and prints a line per change it took back.
fn undo_functions() -> String {
    // Ids the run recorded, one entry each: a backup (cancelled first when it is the one
    // running: the run started it) or a snapshot. One the scenario deleted itself is gone
    // already; anything else the daemon refuses (a snapshot in use by a backup someone else
    // runs) fails the entry, and the undo stops there.
    let made = format!(
        r#"import sys, time, dbus
kind, i = sys.argv[1], int(open(sys.argv[2]).read().split()[0])
bus = dbus.SystemBus()
def iface(name, path):
    return dbus.Interface(bus.get_object(name, path), name)
snap = iface('{SNAPSHOT1}', '{snap_path}')
back = iface('{BACKUP1}', '{back_path}')
def running():
    return int(back.Status().get('id', 0))
def gone(e, name):
    return e.get_dbus_name() == 'tech.noreya.Error.' + name
if kind == 'backup':
    if running() == i:
        back.Cancel()
        for _ in range(300):
            if running() != i:
                break
            time.sleep(0.1)
        else:
            sys.exit('the backup of snapshot %d the run started is still running after Cancel' % i)
        print('cancelled the backup of snapshot %d' % i)
    try:
        back.Delete(dbus.UInt32(i))
        print('deleted backup %d' % i)
    except dbus.DBusException as e:
        if not gone(e, 'NoSuchBackup'):
            raise
else:
    try:
        snap.Delete(dbus.UInt32(i))
        print('deleted snapshot %d' % i)
    except dbus.DBusException as e:
        if not gone(e, 'NoSuchSnapshot'):
            raise
"#,
        snap_path = object_path(SNAPSHOT1),
        back_path = object_path(BACKUP1)
    );
    format!(
        r#"{REMOVE_USER}nh_undo_file() {{
  P=$(cat "$1/path")
  if [ -e "$1/saved" ] || [ -L "$1/saved" ]; then
    cp -a "$1/saved" "$P.nexus-hil-undo"; mv -f "$P.nexus-hil-undo" "$P"; echo "put $P back as it was"
  elif [ -e "$P" ] || [ -L "$P" ]; then
    rm -f "$P"; echo "removed $P"
  fi
  if [ -e "$1/restart" ]; then u=$(cat "$1/restart"); systemctl restart "$u"; echo "restarted $u"; fi
}}
nh_undo_user() {{
  n=$(cat "$1/name")
  if id -u "$n" >/dev/null 2>&1; then remove_user "$n"; echo "removed user $n"; fi
  for b in {ACCOUNT_BACKUPS}; do
    if [ -e "$1/$b" ]; then cp -a "$1/$b" "/etc/$b"; else rm -f "/etc/$b"; fi
  done
}}
nh_undo_key() {{
  n=$(cat "$1/name")
  h=$(getent passwd "$n" | cut -d: -f6)
  f="$h/.ssh/authorized_keys"
  if [ -n "$h" ] && [ -e "$f" ]; then
    grep -vxF -f "$1/key" "$f" > "$f.nexus-hil-undo" || true
    if grep -qx newline "$1/made" && [ -s "$f.nexus-hil-undo" ]; then truncate -s -1 "$f.nexus-hil-undo"; fi
    cat "$f.nexus-hil-undo" > "$f"; rm -f "$f.nexus-hil-undo"
    if grep -qx file "$1/made" && [ ! -s "$f" ]; then rm -f "$f"; fi
    if grep -qx dir "$1/made"; then rmdir "$h/.ssh" 2>/dev/null || true; fi
    echo "removed the harness's key from $n's authorized_keys"
  fi
}}
nh_undo_snapshot() {{
  python3 -c {made} snapshot "$1/id"
}}
nh_undo_backup() {{
  python3 -c {made} backup "$1/id"
}}
nh_undo_snapshots() {{
  echo "an older nexus-hil recorded the snapshots there were before its scenario, not the ones it made: \
nothing is deleted for it (compare Snapshot1.GetList with what you expect)"
}}
"#,
        made = sh_quote(&made)
    )
}

/// A script (run as root) that undoes the record's entries newest first, each undone entry
/// removed, and prints what it did. `only`: just the `file` entries of that path. It stops at
/// the first entry it cannot undo: that entry and every older one are kept (an older change
/// undone over a newer one that stayed would leave a state that never existed), each named,
/// and the exit status is 1.
pub fn undo_script(only: Option<&str>) -> String {
    let filter = match only {
        Some(p) => format!(
            "[ \"$(cat \"$e/kind\")\" = file ] && [ \"$(cat \"$e/path\")\" = {} ] || continue\n  nh_found=1\n",
            sh_quote(p)
        ),
        None => "nh_found=1\n".to_string(),
    };
    let tidy = if only.is_some() {
        "[ $nh_found = 1 ] || { echo \"nothing recorded for that path\" >&2; exit 2; }\n"
    } else {
        "rm -rf \"$NH_RECORD\"/*.new\n\
         if [ $nh_fail = 1 ]; then for k in $(ls \"$NH_RECORD\" | grep -E '^[0-9]+$' | sort -rn); do \
         if [ \"$k\" -lt \"${e##*/}\" ]; then \
         echo \"not undone, being older: $(cat \"$NH_RECORD/$k/kind\") $(cat \"$NH_RECORD/$k/what\") (kept in $NH_RECORD/$k)\"; fi; done; fi\n\
         if [ $nh_fail = 0 ]; then rmdir \"$NH_RECORD\" 2>/dev/null || true; rmdir \"${NH_RECORD%/*}\" 2>/dev/null || true; fi\n"
    };
    format!(
        "NH_RECORD={DIR}\n{}nh_fail=0 nh_found=0\n\
         [ -d \"$NH_RECORD\" ] || {{ {} }}\n\
         for n in $(ls \"$NH_RECORD\" | grep -E '^[0-9]+$' | sort -rn); do\n  e=\"$NH_RECORD/$n\"\n  {filter}\
         ( set -e; \"nh_undo_$(cat \"$e/kind\")\" \"$e\" ); rc=$?\n  \
         if [ $rc = 0 ]; then rm -rf \"$e\"; else echo \"could not undo $(cat \"$e/kind\") $(cat \"$e/what\") (exit $rc): kept in $e\"; nh_fail=1; break; fi\n\
         done\n{tidy}exit $nh_fail\n",
        undo_functions(),
        if only.is_some() {
            "echo 'nothing recorded for that path' >&2; exit 2;"
        } else {
            "exit 0;"
        }
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// Runs the record's shell under a private root folder (`DIR` and the files rewritten into
    /// it), so the functions are tried for real without touching this machine's /etc.
    fn sh(root: &Path, script: &str) -> (i32, String) {
        let script = script.replace(DIR, &root.join("undo").display().to_string());
        // Shims (a `systemctl` that fails once) go first on the PATH when a test made them.
        let path = format!(
            "{}:{}",
            root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("PATH", path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    }

    #[test]
    fn files_are_put_back_newest_change_first_and_the_record_goes() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("conf");
        let new = root.path().join("helper");
        std::fs::write(&f, "as found\n").unwrap();
        let (q, n) = (sh_quote(&f.display().to_string()), sh_quote(&new.display().to_string()));
        let script = format!(
            "{}nh_file {q} && echo first > {q} && nh_file {q} && echo second > {q} && nh_file {n} && echo x > {n}",
            functions()
        );
        assert_eq!(sh(root.path(), &script).0, 0);
        assert_eq!(std::fs::read_dir(root.path().join("undo")).unwrap().count(), 3);
        let (code, said) = sh(root.path(), &undo_script(None));
        assert_eq!(code, 0, "{said}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "as found\n");
        assert!(!new.exists(), "the file the record says was not there is still there");
        assert!(!root.path().join("undo").exists(), "the record is left behind");
        assert!(
            said.starts_with(&format!("removed {}\nput {} back", new.display(), f.display())),
            "{said}"
        );
    }

    #[test]
    fn an_entry_never_put_in_force_changes_nothing_and_one_path_can_go_back_early() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::write(&a, "a\n").unwrap();
        std::fs::write(&b, "b\n").unwrap();
        let (qa, qb) = (sh_quote(&a.display().to_string()), sh_quote(&b.display().to_string()));
        let script = format!(
            "{}nh_file {qa} && echo A > {qa} && nh_file {qb} && echo B > {qb} && nh_begin file half",
            functions()
        );
        assert_eq!(sh(root.path(), &script).0, 0);
        let (code, said) = sh(root.path(), &undo_script(Some(&a.display().to_string())));
        assert_eq!(code, 0, "{said}");
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "a\n");
        assert_eq!(
            std::fs::read_to_string(&b).unwrap(),
            "B\n",
            "ssh.restore of one path put another back"
        );
        let (code, said) = sh(root.path(), &undo_script(Some(&a.display().to_string())));
        assert_eq!(code, 2, "{said}");
        assert!(said.contains("nothing recorded for that path"), "{said}");
        let (code, said) = sh(root.path(), &undo_script(None));
        assert_eq!(code, 0, "{said}");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "b\n");
        assert!(
            !root.path().join("undo").exists(),
            "the half-made entry is left: {said}"
        );
    }

    #[test]
    fn an_entry_that_cannot_be_undone_is_kept_and_named() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("gone/conf");
        std::fs::create_dir(root.path().join("gone")).unwrap();
        std::fs::write(&f, "x\n").unwrap();
        let q = sh_quote(&f.display().to_string());
        assert_eq!(sh(root.path(), &format!("{}nh_file {q}", functions())).0, 0);
        std::fs::remove_dir_all(root.path().join("gone")).unwrap();
        let (code, said) = sh(root.path(), &undo_script(None));
        assert_eq!(code, 1, "{said}");
        assert!(
            said.contains("could not undo file") && said.contains("kept in"),
            "{said}"
        );
        assert!(root.path().join("undo/000001").exists());
    }

    /// Two changes to one file, the newer one's restart failing once: the undo stops there and
    /// keeps both (putting the file "as found" under a newer change that stayed would leave a
    /// state that never existed); the next undo finishes and the file is as it was found.
    #[test]
    fn the_undo_stops_at_the_first_entry_it_cannot_undo_and_the_next_one_finishes() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let once = root.path().join("failed-once");
        let shim = bin.join("systemctl");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\nif [ ! -e '{0}' ]; then : > '{0}'; echo 'Job for unit failed' >&2; exit 1; fi\nexit 0\n",
                once.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A path with a space, a quote and a newline: every use of it is quoted.
        let f = root.path().join("it's a\nconf");
        let found = b"as found\n\x00binary\n".to_vec();
        std::fs::write(&f, &found).unwrap();
        let q = sh_quote(&f.display().to_string());
        let script = format!(
            "{}nh_file {q} && echo first > {q} && nh_file {q} unit.service && echo second > {q}",
            functions()
        );
        assert_eq!(sh(root.path(), &script).0, 0);
        let (code, said) = sh(root.path(), &undo_script(None));
        assert_eq!(code, 1, "{said}");
        assert!(said.contains("could not undo file"), "{said}");
        assert!(said.contains("not undone, being older: file"), "{said}");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "first\n",
            "the newer entry's copy is back, and the older one was not undone under it: {said}"
        );
        assert!(root.path().join("undo/000001").exists() && root.path().join("undo/000002").exists());
        let (code, said) = sh(root.path(), &undo_script(None));
        assert_eq!(code, 0, "{said}");
        assert_eq!(std::fs::read(&f).unwrap(), found, "{said}");
        assert!(!root.path().join("undo").exists(), "{said}");
    }

    #[test]
    fn what_the_run_made_is_recorded_by_its_id_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let (code, said) = sh(root.path(), &made_command(Made::Snapshot, 12));
        assert_eq!(code, 0, "{said}");
        let e = root.path().join("undo/000001");
        assert_eq!(std::fs::read_to_string(e.join("kind")).unwrap(), "snapshot\n");
        assert_eq!(std::fs::read_to_string(e.join("id")).unwrap(), "12\n");
        assert_eq!(sh(root.path(), &made_command(Made::Backup, 12)).0, 0);
        assert_eq!(
            std::fs::read_to_string(root.path().join("undo/000002/kind")).unwrap(),
            "backup\n"
        );
        let (code, said) = sh(root.path(), &format!("{}nh_made snapshot '1 2'", functions()));
        assert_eq!(code, 1, "{said}");
        assert!(said.contains("is not a number"), "{said}");
        assert!(!root.path().join("undo/000003").exists());
        assert_eq!(
            made_lines("Creating snapshot...\nmade snapshot 7\nmade backup 7\nmade snapshot x\nmade snapshots 8\n made backup 9 \n"),
            vec![(Made::Snapshot, 7), (Made::Backup, 7), (Made::Backup, 9)]
        );
    }

    /// A record an older nexus-hil left (the snapshot ids there were before its scenario) is
    /// not taken as a licence to delete every newer snapshot: nothing is deleted for it.
    #[test]
    fn an_older_before_list_deletes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let e = root.path().join("undo/000001");
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(e.join("kind"), "snapshots\n").unwrap();
        std::fs::write(e.join("what"), "the scenario's snapshots\n").unwrap();
        std::fs::write(e.join("before"), "1 2 3\n").unwrap();
        let (code, said) = sh(root.path(), &undo_script(None));
        assert_eq!(code, 0, "{said}");
        assert!(said.contains("nothing is deleted"), "{said}");
        assert!(!said.contains("deleted snapshot"), "{said}");
    }
}
