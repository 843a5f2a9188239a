#!/bin/sh
# Runs inside the arm64 stand-in's root file system after images/emulator/customize.sh
# (mmdebstrap customize hook): what a Pi-class device has that the container does not.
set -eu

# A short initramfs module list: the default (MODULES=most) takes very long to pack under
# qemu-user emulation, and the stand-in's virtual hardware needs only these to mount its root
# (the SD card's btrfs is mounted later by fstab). The initramfs loads them itself, without
# udev (etc/initramfs-tools/hooks/nexus-standin).
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 >> /etc/initramfs-tools/modules
echo 'MODULES=list' > /etc/initramfs-tools/conf.d/nexus-standin.conf
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-image-arm64
# Uncompressed (mkinitramfs always compresses): unpacking gzip took the emulated kernel 0.5 s.
for initrd in /boot/initrd.img-*; do
  gzip -dc "$initrd" > "$initrd.cpio"
  mv "$initrd.cpio" "$initrd"
done

# The SD card is a disk of its own here, mounted by fstab as on the device, not the container's
# loop mount of an image file.
systemctl disable broot.mount >/dev/null 2>&1 || true
rm -f /etc/systemd/system/broot.mount

systemctl enable systemd-networkd.service >/dev/null 2>&1
# What a NEXUS does not have or use, each a few seconds of emulated CPU at every boot, some
# of them while the boot's critical chain waits on udev: e2scrub_reap (ext4 scrub snapshots
# of LVM volumes), the dpkg database's daily backup, DRM, EFI pstore and device-mapper
# modules, and the kernel's debug, tracing, huge-page, configfs and FUSE-control mounts.
systemctl mask e2scrub_reap.service dpkg-db-backup.timer \
  modprobe@drm.service modprobe@efi_pstore.service modprobe@dm_mod.service modprobe@configfs.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount sys-kernel-config.mount \
  sys-fs-fuse-connections.mount >/dev/null 2>&1
# btrfs loaded at the start of the boot, beside the rest, as on the device (whose kernel has
# it from the start): loaded when udev first sees the card, its RAID6 and XOR speed tests
# (a second or more of emulated CPU) held up the card's mount and all that waits for it.
echo btrfs > /etc/modules-load.d/nexus-standin.conf
# sudo looks up the host name (the container's engine writes /etc/hosts; here the image does),
# and the build host's resolver means nothing in the stand-in, which reaches no DNS server.
printf '127.0.0.1\tlocalhost\n127.0.1.1\tnoreya-nexus\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
: > /etc/resolv.conf

# The admin key arrives with the image (the container mounts it at each start instead).
install -d -m 0700 -o nexus -g nexus /home/nexus/.ssh
install -m 0600 -o nexus -g nexus /usr/local/lib/nexus-hil/admin_authorized_keys /home/nexus/.ssh/authorized_keys
rm -f /usr/local/lib/nexus-hil/admin_authorized_keys

# This /etc and /var are up to date with /usr (systemd's ConditionNeedsUpdate): without the
# stamps, systemd-sysusers runs at every boot, and udev, the card's mount and everything after
# them wait for it.
touch /etc/.updated /var/.updated
