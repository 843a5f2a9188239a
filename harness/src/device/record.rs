//! The record of a scenario's changes, kept on the device itself so that a device is left as
//! found in every outcome. Each change is recorded before it is made, as one numbered entry under
//! [`DIR`]: a kind (`file`, `user`, `key`, `snapshots`) and what undoing it needs (the file as it
//! was, the account files' `-` backups, the key line, the snapshot ids there were). An entry is
//! written in a `.new` folder, flushed, and renamed into force; only then is the change made, so
//! an entry may exist for a change that never came (undoing it changes nothing), never the other
//! way round. [`undo_script`] undoes every entry, newest first, and removes each undone one:
//! the runner runs it when a scenario ends, and at a run's start for what a run that crashed or
//! lost its connection left; `provision --undo` runs it too.

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
/// `nh_user NAME`, `nh_key NAME HOME` (the key in `$key`), `nh_snapshots "IDS"`. Each returns
/// non-zero when the record could not be written, and the caller makes no change then.
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
nh_snapshots() {{
  nh_begin snapshots "the scenario's snapshots" && printf '%s\n' "$1" > "$nh_entry.new/before" || return 1
  nh_commit
}}
"#
    )
}

/// Records the device's snapshot ids, so that every later snapshot (and its backup) is deleted
/// when the record is undone.
pub fn snapshots_command(before: &[u64]) -> String {
    let ids: Vec<String> = before.iter().map(u64::to_string).collect();
    format!("{}nh_snapshots {}", functions(), sh_quote(&ids.join(" ")))
}

/// How each kind of entry is undone. Each function runs under `set -e` in a subshell, gets the
/// entry's folder, and prints a line per change it took back.
fn undo_functions() -> String {
    let snapshots = format!(
        r#"import sys, time, dbus
before = set(int(x) for x in open(sys.argv[1]).read().split())
bus = dbus.SystemBus()
def iface(name, path):
    return dbus.Interface(bus.get_object(name, path), name)
snap = iface('{SNAPSHOT1}', '{snap_path}')
back = iface('{BACKUP1}', '{back_path}')
def running():
    return int(back.Status().get('id', 0))
for s in snap.GetList():
    i = int(s['id'])
    if i in before:
        continue
    if running() == i:
        back.Cancel()
        for _ in range(100):
            if running() != i:
                break
            time.sleep(0.1)
    try:
        back.Delete(dbus.UInt32(i))
        what = 'deleted snapshot %d and its backup' % i
    except dbus.DBusException:
        what = 'deleted snapshot %d' % i
    snap.Delete(dbus.UInt32(i))
    print(what)
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
nh_undo_snapshots() {{
  python3 -c {} "$1/before"
}}
"#,
        sh_quote(&snapshots)
    )
}

/// A script (run as root) that undoes the record's entries newest first, each undone entry
/// removed, and prints what it did. `only`: just the `file` entries of that path. Exit status 1
/// when an entry could not be undone (it is kept, and named).
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
         if [ $nh_fail = 0 ]; then rmdir \"$NH_RECORD\" 2>/dev/null || true; rmdir \"${NH_RECORD%/*}\" 2>/dev/null || true; fi\n"
    };
    format!(
        "NH_RECORD={DIR}\n{}nh_fail=0 nh_found=0\n\
         [ -d \"$NH_RECORD\" ] || {{ {} }}\n\
         for n in $(ls \"$NH_RECORD\" | grep -E '^[0-9]+$' | sort -rn); do\n  e=\"$NH_RECORD/$n\"\n  {filter}\
         ( set -e; \"nh_undo_$(cat \"$e/kind\")\" \"$e\" ); rc=$?\n  \
         if [ $rc = 0 ]; then rm -rf \"$e\"; else echo \"could not undo $(cat \"$e/kind\") $(cat \"$e/what\") (exit $rc): kept in $e\"; nh_fail=1; fi\n\
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
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
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
}
