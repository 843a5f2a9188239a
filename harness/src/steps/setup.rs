//! `setup.user`: a backup user made the vendor's way (`adduser`, the pkla grant, the
//! harness's key as `ssh-copy-id` would put it), each change recorded on the device first. The
//! grant's command is shared with `nexus-hil provision`.

use std::time::Duration;

use nexus_contract::names::ACTIONS;
use nexus_contract::paths::{BACKUP_USER, PKLA_DIR, VENDOR_PKLA};

use super::{StepEnd, StepLog};
use crate::bench::record;
use crate::scenario::{family, SetupUser};
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

/// The pkla file that grants `user`: the vendor's for its backup user, one of its own otherwise.
pub fn pkla_file(user: &str) -> String {
    if user == BACKUP_USER {
        VENDOR_PKLA.to_string()
    } else {
        format!("10-{user}.pkla")
    }
}

/// `setup.user`. Each change is recorded on the device before it is made
/// (`crate::bench::record`), and undone from there when the scenario ends.
/// Does a step of the setup family.
pub async fn step(
    s: &mut Session<'_>,
    step: family::Setup<'_>,
    timeout: Duration,
    log: &mut StepLog,
) -> Result<(), StepEnd> {
    match step {
        family::Setup::SetupUser(u) => user(s, u, timeout, log).await,
    }
}

pub async fn user(s: &mut Session<'_>, u: &SetupUser, timeout: Duration, log: &mut StepLog) -> Result<(), StepEnd> {
    let name = s.subst(&u.name);
    let actions: Vec<&str> = if u.grant.iter().any(|g| g == "all") {
        ACTIONS.to_vec()
    } else {
        u.grant.iter().map(String::as_str).collect()
    };
    let file = pkla_file(&name);
    let n = sh_quote(&name);
    // The vendor's steps; --disabled-password because no one is there to type one. The record
    // keeps the account files' `-` backups, which adduser rewrites.
    // Under `set -e`: a command that fails (adduser refusing the name, a full disk) ends the
    // script there, and the step fails naming it; nothing goes on with half a user.
    let mut script = format!(
        "set -e\n{}if ! id -u {n} >/dev/null 2>&1; then
         nh_user {n} || exit 1
         adduser --disabled-password {n} --gecos 'Backup' >/dev/null || {{ echo \"adduser {n} failed\" >&2; exit 1; }}
         echo made user; fi
",
        record::functions()
    );
    if !actions.is_empty() {
        // A grant file is written only when it is not already the one this step would write.
        let p = format!("{PKLA_DIR}/{file}");
        let q = sh_quote(&p);
        script.push_str(&format!(
            "new=$(mktemp); export new\n{}\n\
             if [ ! -e {q} ] || ! cmp -s \"$new\" {q}; then nh_file {q} || exit 1; cat \"$new\" > {q}; echo made pkla; fi\n\
             rm -f \"$new\"\n",
            pkla_command(&name, &file, &actions).replace(&format!("> {p}"), "> \"$new\"")
        ));
    }
    // What ssh-copy-id does: the key appended (after a newline if the file lacks its last one),
    // nothing else of the user's files touched.
    script.push_str(&format!(
        "home=$(getent passwd {n} | cut -d: -f6)\nf=\"$home/.ssh/authorized_keys\"\nkey=$(cat)\n\
         if ! [ -e \"$f\" ] || ! grep -qxF \"$key\" \"$f\"; then\n\
         nh_key {n} \"$home\" || exit 1\n\
         [ -d \"$home/.ssh\" ] || install -d -m 700 -o {n} -g {n} \"$home/.ssh\"\n\
         [ -e \"$f\" ] || install -m 600 -o {n} -g {n} /dev/null \"$f\"\n\
         if [ -s \"$f\" ] && [ \"$(tail -c 1 \"$f\" | od -An -c | tr -d ' ')\" != '\\n' ]; then printf '\\n' >> \"$f\"; fi\n\
         printf '%s\\n' \"$key\" >> \"$f\"; echo made key; fi\n"
    ));
    log.lines.push(format!(
        "as {} with sudo: adduser {name}; pkla {file} granting {} action(s); install the harness key (each recorded first)",
        s.dev.admin,
        actions.len()
    ));
    let out = s.ssh("root", &script, Some(s.dev.pubkey.as_bytes()), timeout).await?;
    if out.code != Some(0) {
        return Err(StepEnd::Failed(format!(
            "setting up {name} failed: {}",
            out.stderr.trim()
        )));
    }
    let made: Vec<&str> = out.stdout.lines().filter_map(|l| l.strip_prefix("made ")).collect();
    log.lines.push(format!(
        "made: {}",
        if made.is_empty() {
            "nothing (all there)".to_string()
        } else {
            made.join(", ")
        }
    ));
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
