#!/bin/sh
# Runs inside the new root file system at the end of the image build (mmdebstrap customize hook).
set -eu

# The admin user of the device, with sudo (no password in the emulator, so the harness can use it).
adduser --disabled-password --gecos 'NEXUS admin' nexus >/dev/null
adduser nexus sudo >/dev/null
echo 'nexus ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/nexus
chmod 0440 /etc/sudoers.d/nexus

# [ours] The Control UI runs as its own system user, without a login shell; polkit grants it the
# actions its page needs (20-nexus-ui.pkla). Its admin password is made at first boot
# (nexus-controlui-password.service), so every device has its own. The UI's files come with the
# image's inputs; an image made without them simply has no Control UI.
if [ -x /usr/local/bin/nexus-controlui ]; then
  adduser --system --group --no-create-home --home /nonexistent --shell /usr/sbin/nologin nexus-ui >/dev/null
  systemctl enable nexus-controlui-password.service nexus-controlui.service >/dev/null 2>&1
fi

# A throwaway test device: nexus-backupd starts with test faults (a broken daemon that
# `nexus-hil crash-states --broken-daemon` must catch) only where this file is; no device has it.
echo 'made by nexus-hil: a throwaway test device' > /etc/nexus-hil-throwaway

# Host keys are made at each container's first boot, not shared by every emulator.
rm -f /etc/ssh/ssh_host_*

echo noreya-nexus > /etc/hostname
systemctl enable broot.mount nexus-hostkeys.service nexus-backupd.service nexus-automation.service >/dev/null 2>&1
# A container has no consoles, swap or time sync to wait for.
systemctl mask getty@tty1.service serial-getty@console.service console-getty.service \
  systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  fstrim.timer systemd-networkd-wait-online.service >/dev/null 2>&1 || true
# A privileged container shares the host's binfmt_misc: systemd-binfmt would unregister every
# handler of the host (qemu-aarch64 among them) at each boot and register the image's own.
systemctl mask systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount >/dev/null 2>&1 || true
