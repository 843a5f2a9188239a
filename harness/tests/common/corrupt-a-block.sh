set -e
f=/broot/data/nexus-hil-victim
head -c 1048576 /dev/urandom > $f && sync
src=$(findmnt -no SOURCE /broot | sed 's/\[.*//')
log=$(python3 -c '
import fcntl, struct, sys
fd = open(sys.argv[1], "rb")
# struct fiemap: start, length, flags, mapped_extents, extent_count, reserved; then extents
req = struct.pack("=QQLLLL", 0, 2**64-1, 1, 0, 1, 0) + b"\0" * 56
res = fcntl.ioctl(fd, 0xC020660B, req)
print(struct.unpack("=QQQ", res[32:56])[1])
' $f)
phys=$(btrfs-map-logical -l "$log" "$src" 2>/dev/null | awk '/physical/ {for (i=1;i<=NF;i++) if ($i=="physical") print $(i+1); exit}')
echo "src=$src log=$log phys=$phys"
dd if=/dev/zero of="$src" bs=4096 seek=$((phys / 4096)) count=1 conv=notrunc oflag=direct status=none
echo 3 > /proc/sys/vm/drop_caches
cat $f > /dev/null 2>&1 || echo "read failed as meant"
btrfs device stats /broot
