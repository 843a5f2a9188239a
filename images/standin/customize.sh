#!/bin/sh
# Runs inside the arm64 stand-in's root file system after images/emulator/customize.sh
# (mmdebstrap customize hook): what a Pi-class device has that the container does not.
set -eu

# A short initramfs module list: the default (MODULES=most) takes very long to pack under
# qemu-user emulation, and the stand-in's virtual hardware needs only these.
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 btrfs >> /etc/initramfs-tools/modules
echo 'MODULES=list' > /etc/initramfs-tools/conf.d/nexus-standin.conf
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-image-arm64

# The SD card is a disk of its own here, mounted by fstab as on the device, not the container's
# loop mount of an image file.
systemctl disable broot.mount >/dev/null 2>&1 || true
rm -f /etc/systemd/system/broot.mount

systemctl enable systemd-networkd.service >/dev/null 2>&1
# sudo looks up the host name (the container's engine writes /etc/hosts; here the image does),
# and the build host's resolver means nothing in the stand-in, which reaches no DNS server.
printf '127.0.0.1\tlocalhost\n127.0.1.1\tnoreya-nexus\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
: > /etc/resolv.conf

# The admin key arrives with the image (the container mounts it at each start instead).
install -d -m 0700 -o nexus -g nexus /home/nexus/.ssh
install -m 0600 -o nexus -g nexus /usr/local/lib/nexus-hil/admin_authorized_keys /home/nexus/.ssh/authorized_keys
rm -f /usr/local/lib/nexus-hil/admin_authorized_keys
