//! `setup.user`: a backup user made the vendor's way (`adduser`, the pkla grant, the
//! harness's key as `ssh-copy-id` would put it). The recipe (the grant's command and the
//! removal of a user) is shared with `nexus-hil provision`.

use std::time::Duration;

use nexus_contract::names::ACTIONS;
use nexus_contract::paths::{BACKUP_USER, PKLA_DIR, VENDOR_PKLA};

use super::StepLog;
use crate::scenario::SetupUser;
use crate::session::Session;
use crate::transport::ssh::sh_quote;

/// The vendor's own command for a polkit grant, word for word: `actions` for `user` in the
/// file `file` of the local authority's folder.
pub fn pkla_command(user: &str, file: &str, actions: &[&str]) -> String {
    format!(
        r#"bash -c 'echo -e "[Backup permissions]\nIdentity=unix-user:{user}\nAction={};\nResultActive=yes\nResultInactive=yes\nResultAny=yes\n" > {PKLA_DIR}/{file}'"#,
        actions.join(";")
    )
}

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

/// The pkla file that grants `user`: the vendor's for its backup user, one of its own otherwise.
pub fn pkla_file(user: &str) -> String {
    if user == BACKUP_USER {
        VENDOR_PKLA.to_string()
    } else {
        format!("10-{user}.pkla")
    }
}

/// `setup.user`. "made ..." lines of the script tell what to remove from a real device later.
pub async fn user(s: &mut Session<'_>, u: &SetupUser, timeout: Duration, log: &mut StepLog) -> Result<(), String> {
    let name = s.subst(&u.name);
    let actions: Vec<&str> = if u.grant.iter().any(|g| g == "all") {
        ACTIONS.to_vec()
    } else {
        u.grant.iter().map(String::as_str).collect()
    };
    let file = pkla_file(&name);
    // The vendor's steps; --disabled-password because no one is there to type one.
    let mut script = format!(
        "id -u {n} >/dev/null 2>&1 || {{ adduser --disabled-password {n} --gecos 'Backup' >/dev/null && echo made user; }}\n",
        n = sh_quote(&name)
    );
    if !actions.is_empty() {
        script.push_str(&format!("test -e {PKLA_DIR}/{file} || echo made pkla\n"));
        script.push_str(&pkla_command(&name, &file, &actions));
        script.push('\n');
    }
    // What ssh-copy-id does for the user.
    script.push_str(&format!(
        "home=$(getent passwd {n} | cut -d: -f6)\ninstall -d -m 700 -o {n} -g {n} \"$home/.ssh\"\ncat > \"$home/.ssh/authorized_keys\"\nchown {n}: \"$home/.ssh/authorized_keys\"\nchmod 600 \"$home/.ssh/authorized_keys\"\n",
        n = sh_quote(&name)
    ));
    log.lines.push(format!(
        "as {} with sudo: adduser {name}; pkla {file} granting {} action(s); install the harness key",
        s.dev.admin,
        actions.len()
    ));
    let out = s.ssh("root", &script, Some(s.dev.pubkey.as_bytes()), timeout).await?;
    if out.code != Some(0) {
        return Err(format!("setting up {name} failed: {}", out.stderr.trim()));
    }
    if out.stdout.lines().any(|l| l == "made user") {
        s.made.users.push(name.clone());
    }
    if out.stdout.lines().any(|l| l == "made pkla") {
        s.made.pkla.push(file);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_is_the_vendors_command_word_for_word() {
        let c = pkla_command(BACKUP_USER, VENDOR_PKLA, &ACTIONS);
        assert_eq!(
            c,
            "bash -c 'echo -e \"[Backup permissions]\\nIdentity=unix-user:remotebackup\\nAction=tech.noreya.Backup1.Cancel;tech.noreya.Backup1.Create;tech.noreya.Backup1.Delete;tech.noreya.Backup1.GetList;tech.noreya.Backup1.Status;tech.noreya.Snapshot1.Activate;tech.noreya.Snapshot1.Create;tech.noreya.Snapshot1.Delete;tech.noreya.Snapshot1.GetList;\\nResultActive=yes\\nResultInactive=yes\\nResultAny=yes\\n\" > /etc/polkit-1/localauthority/50-local.d/10-backup.pkla'"
        );
        assert_eq!(pkla_file("alice"), "10-alice.pkla");
    }
}
