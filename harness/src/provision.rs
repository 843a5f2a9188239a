//! `nexus-hil provision`: prepares a real device for the suite with only its admin account, the
//! way the vendor documents it: the `remotebackup` user, the documented polkit grant, the
//! harness's key for both users. Checks that what the scenarios use is there
//! (`systemd-stdio-bridge`, python3-dbus, rsync). Idempotent; every change is written to a
//! manifest on the device (`/var/lib/nexus-hil/provisioned`) so `--undo` removes exactly what
//! was added and restores the account files' backups it touched. `--dry-run` prints each
//! command and changes nothing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::error::InfraError;
use crate::run::{harness_key, parse_target, Target};
use crate::runner::{sh_quote, ALL_ACTIONS};
use crate::ssh::SshTarget;

/// Arguments of `nexus-hil provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The device's admin account: `ssh://nexus@HOST[:PORT]`.
    #[arg(long)]
    pub target: String,
    /// Key to log in as the admin while provisioning (default: the harness key, then your own
    /// ssh keys and agent). The admin needs sudo without a password prompt.
    #[arg(long)]
    pub login_key: Option<PathBuf>,
    /// Print each command and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove exactly what earlier provisioning added.
    #[arg(long)]
    pub undo: bool,
}

/// Where the manifest and saved files live on the device.
const STATE: &str = "/var/lib/nexus-hil";
/// The account files whose `-` backups adduser/deluser rewrite; provisioning restores them.
const ACCOUNT_BACKUPS: &str = "passwd- group- shadow- gshadow- subuid- subgid-";

/// The vendor's own command for the polkit grant, word for word.
fn pkla_command() -> String {
    format!(
        r#"bash -c 'echo -e "[Backup permissions]\nIdentity=unix-user:remotebackup\nAction={};\nResultActive=yes\nResultInactive=yes\nResultAny=yes\n" > /etc/polkit-1/localauthority/50-local.d/10-backup.pkla'"#,
        ALL_ACTIONS.join(";")
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
fn provision_script(admin: &str, pubkey: &str, dry: bool) -> String {
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
fn undo_script(pubkey: &str, dry: bool) -> String {
    let mut s = format!("DRY={}\nKEY={}\n", u8::from(dry), sh_quote(pubkey.trim()));
    s.push_str(&COMMON.replace("__STATE__", STATE));
    s.push_str(REMOVE_USER);
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
run "rm -rf $STATE"
say "undone: the device is as it was before provisioning"
"#,
    );
    s
}

/// Runs `nexus-hil provision`. Exit status: 0 done, 1 the device lacks something, 2 bad
/// arguments, 3 the device could not be reached or refused.
pub async fn command(args: ProvisionArgs) -> Result<ExitCode, InfraError> {
    let (user, host, port) = match parse_target(&args.target) {
        Ok(Target::Remote { user, host, port }) => (user, host, port),
        Ok(Target::Emulator | Target::Fleet(_)) => {
            eprintln!("nexus-hil: provision prepares a real device: --target ssh://nexus@HOST[:PORT]");
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("nexus-hil: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let key = harness_key();
    let dir = key.parent().map(PathBuf::from).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| InfraError::io(dir.display(), e))?;
    crate::ssh::make_key(&dir).await?;
    let pubkey = std::fs::read_to_string(key.with_extension("pub"))
        .map_err(|e| InfraError::io(key.with_extension("pub").display(), e))?;
    let script = if args.undo {
        undo_script(&pubkey, args.dry_run)
    } else {
        provision_script(&user, &pubkey, args.dry_run)
    };
    let login = args.login_key.clone().unwrap_or_else(|| key.clone());
    let ssh = SshTarget {
        host: host.clone(),
        port,
        key: login.clone(),
        known_hosts: dir.join("known_hosts"),
    };
    let mut argv = ssh.ssh_argv(&user);
    if args.login_key.is_none() {
        // Besides the harness key, whatever the user's own ssh offers (keys, agent).
        if let Some(i) = argv.iter().position(|a| a == "IdentitiesOnly=yes") {
            argv.drain(i - 1..=i);
        }
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).arg("--").arg("sudo -n sh -s");
    eprintln!(
        "nexus-hil: {} {user}@{host}:{port}{}",
        if args.undo {
            "undoing the provisioning of"
        } else {
            "provisioning"
        },
        if args.dry_run {
            " (dry run: nothing changes)"
        } else {
            ""
        }
    );
    let out = crate::ssh::run_local(cmd, Some(script.as_bytes()), Duration::from_secs(120))
        .await
        .map_err(|e| InfraError::Unreachable(format!("ssh {user}@{host}:{port}: {e}")))?;
    print!("{}", out.stdout);
    match out.code {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(4) => Ok(ExitCode::from(1)),
        Some(255) => Err(InfraError::Unreachable(format!(
            "ssh {user}@{host}:{port} as the admin failed: {}; pass --login-key, or make sure your ssh can log in",
            out.stderr.trim()
        ))),
        _ if out.stderr.contains("sudo") => Err(InfraError::Unreachable(format!(
            "{user} cannot use sudo without a password prompt ({}); the suite needs that for its root steps: \
             allow it (for example `{user} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/nexus-hil) and provision again",
            out.stderr.trim()
        ))),
        code => Err(InfraError::Unreachable(format!(
            "provisioning stopped (exit {code:?}): {}",
            out.stderr.trim()
        ))),
    }
}
