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

/// The account files whose `-` backups adduser and deluser rewrite.
pub const ACCOUNT_BACKUPS: &str = "passwd- group- shadow- gshadow- subuid- subgid-";
/// Where a scenario keeps them while it runs (put back and removed when it ends).
pub const SAVED_ACCOUNTS: &str = "/var/lib/nexus-hil-scenario/accounts";

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
    // The vendor's steps; --disabled-password because no one is there to type one. adduser
    // rewrites the account files' `-` backups: they are kept first, to be put back.
    let mut script = format!(
        "if ! id -u {n} >/dev/null 2>&1; then\n\
         install -d -m 700 {SAVED_ACCOUNTS}\n\
         for b in {ACCOUNT_BACKUPS}; do [ -e /etc/$b ] && [ ! -e {SAVED_ACCOUNTS}/$b ] && cp -p /etc/$b {SAVED_ACCOUNTS}/$b; done\n\
         adduser --disabled-password {n} --gecos 'Backup' >/dev/null && echo made user; fi\n",
        n = sh_quote(&name)
    );
    if !actions.is_empty() {
        // An existing grant file is kept aside (restored when the scenario ends) unless it is
        // already the one this step would write.
        let p = format!("{PKLA_DIR}/{file}");
        script.push_str(&format!(
            "new=$(mktemp); export new\n{}\n\
             if [ ! -e {p} ]; then cat \"$new\" > {p}; echo made pkla;\n\
             elif ! cmp -s \"$new\" {p}; then cp -p {p} {p}.nexus-hil-saved && cat \"$new\" > {p}; echo replaced pkla; fi\n\
             rm -f \"$new\"\n",
            pkla_command(&name, &file, &actions).replace(&format!("> {p}"), "> \"$new\"")
        ));
    }
    // What ssh-copy-id does: the key appended (after a newline if the file lacks its last one),
    // nothing else of the user's files touched; each change said, so it can be undone exactly.
    script.push_str(&format!(
        "home=$(getent passwd {n} | cut -d: -f6)\nf=\"$home/.ssh/authorized_keys\"\nkey=$(cat)\n\
         [ -d \"$home/.ssh\" ] || {{ install -d -m 700 -o {n} -g {n} \"$home/.ssh\"; echo made sshdir; }}\n\
         [ -e \"$f\" ] || {{ install -m 600 -o {n} -g {n} /dev/null \"$f\"; echo made keyfile; }}\n\
         if ! grep -qxF \"$key\" \"$f\"; then\n\
         if [ -s \"$f\" ] && [ \"$(tail -c 1 \"$f\" | od -An -c | tr -d ' ')\" != '\\n' ]; then printf '\\n' >> \"$f\"; echo made newline; fi\n\
         printf '%s\\n' \"$key\" >> \"$f\"; echo made key; fi\n",
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
    let said = |what: &str| out.stdout.lines().any(|l| l == what);
    if said("made user") {
        s.made.users.push(name.clone());
    } else if said("made key") {
        // A user that was there keeps its file: only the line (and a newline added) goes.
        s.made.keys.push(crate::session::AddedKey {
            user: name.clone(),
            newline: said("made newline"),
            file: said("made keyfile"),
            dir: said("made sshdir"),
        });
    }
    if said("made pkla") {
        s.made.pkla.push(file);
    } else if said("replaced pkla") {
        s.made.replaced_pkla.push(file);
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
