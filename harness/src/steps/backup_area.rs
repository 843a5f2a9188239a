//! Where on the card a running backup's data goes next, for `fault.io_error`'s
//! `where: backup_data`: read in the device (its partial file's extents, btrfs's chunk tree, the
//! card partition's start) and worked out here, in the card's 512-byte sectors.
//!
//! btrfs puts a file's next data just after its last extent when that space is free, and in a
//! new data chunk, made in the card's unallocated space, when its chunk is full. So the area is
//! the rest of the data chunk after the partial file's last extent and the unallocated space:
//! never a metadata or system chunk (nor a superblock copy), so a write that fails there is the
//! data of a file, and btrfs's transaction, and the file system, carry on.

use std::ops::Range;

use nexus_contract::paths;

/// Where btrfs keeps its superblock copies (bytes into the partition): never in the area.
const SUPERBLOCKS: [u64; 3] = [64 << 10, 64 << 20, 256 << 30];
/// btrfs never allocates the first MiB of a device.
const RESERVED: u64 = 1 << 20;

/// The commands whose output [`area`] reads: the card partition's first sector, the partial
/// file's extents (`filefrag -v`) and the chunk tree.
pub fn command(id: &str) -> String {
    let partial = format!("{}/.{}.partial", paths::BACKUPS_DIR, backup_name(id));
    format!(
        "set -e; dev=$(findmnt -no SOURCE /broot | sed 's/\\[.*//'); \
         echo \"partition-start $(cat /sys/class/block/${{dev##*/}}/start)\"; \
         filefrag -v '{partial}'; btrfs inspect-internal dump-tree -t chunk \"$dev\""
    )
}

fn backup_name(id: &str) -> String {
    id.parse()
        .map(paths::backup_file_name)
        .unwrap_or_else(|_| format!("nexus_backup_{id}.tar.gpg"))
}

/// One chunk of the chunk tree: its logical start, length, type and the device offsets of its
/// stripes.
#[derive(Debug, Default, Clone, PartialEq)]
struct Chunk {
    logical: u64,
    length: u64,
    data: bool,
    stripes: Vec<u64>,
}

/// The area, in card sectors from the disk's start, and a line saying what it is; or why it
/// cannot be found.
pub fn area(out: &str) -> Result<(Vec<Range<u64>>, String), String> {
    let start = out
        .lines()
        .find_map(|l| l.strip_prefix("partition-start "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or("no partition start in the device's answer")?;
    let end = file_end(out)?;
    let (chunks, device_bytes) = chunk_tree(out)?;
    let chunk = chunks
        .iter()
        .find(|c| c.data && c.logical < end && end <= c.logical + c.length)
        .ok_or_else(|| format!("no data chunk holds the partial file's last extent (ending at {end})"))?;
    let &[stripe] = chunk.stripes.as_slice() else {
        return Err(format!(
            "the data chunk at {} has {} stripes; only single data is mapped",
            chunk.logical,
            chunk.stripes.len()
        ));
    };
    let rest = stripe + (end - chunk.logical)..stripe + chunk.length;
    // The device's unallocated space: what no chunk's stripe covers.
    let mut used: Vec<Range<u64>> = chunks
        .iter()
        .flat_map(|c| c.stripes.iter().map(move |&s| s..s + c.length))
        .collect();
    used.sort_by_key(|r| r.start);
    let mut free = Vec::new();
    let mut at = RESERVED;
    for u in &used {
        if u.start > at {
            free.push(at..u.start);
        }
        at = at.max(u.end);
    }
    if device_bytes > at {
        free.push(at..device_bytes);
    }
    let free_bytes: u64 = free.iter().map(|r| r.end - r.start).sum();
    let mut bytes = vec![rest.clone()];
    bytes.extend(free);
    let bytes = without_superblocks(bytes);
    let line = format!(
        "the backup's data goes next after its partial file's last extent: {} MiB left of its data chunk (card \
         bytes {}..{} of the partition from sector {start}) and {} MiB of the card's unallocated space",
        (rest.end - rest.start) >> 20,
        rest.start,
        rest.end,
        free_bytes >> 20
    );
    let sectors = bytes
        .into_iter()
        .filter(|r| r.end > r.start)
        .map(|r| start + r.start.div_ceil(512)..start + r.end / 512)
        .collect();
    Ok((sectors, line))
}

/// The logical end of the partial file's last extent on the card (`filefrag -v`: its
/// physical offsets are btrfs's logical addresses, in blocks); extents not yet on the card
/// (delayed allocation) are left out.
fn file_end(out: &str) -> Result<u64, String> {
    let block: u64 = out
        .lines()
        .find(|l| l.starts_with("File size of "))
        .and_then(|l| l.split(" blocks of ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or("no `filefrag -v` of the partial file in the device's answer (is the backup running?)")?;
    let mut end = None;
    for l in out.lines() {
        let parts: Vec<&str> = l.split(':').map(str::trim).collect();
        if parts.len() < 5 || parts[0].parse::<u64>().is_err() {
            continue;
        }
        let flags = parts[parts.len() - 1];
        if flags.contains("unknown_loc") || flags.contains("delalloc") || flags.contains("inline") {
            continue;
        }
        let last = parts[2].split("..").nth(1).and_then(|n| n.trim().parse::<u64>().ok());
        if let Some(last) = last {
            end = end.max(Some((last + 1) * block));
        }
    }
    end.ok_or_else(|| "the partial file has no data on the card yet; arm the fault at a later percent".to_string())
}

/// The chunk tree's chunks and the device's size (`btrfs inspect-internal dump-tree -t chunk`).
fn chunk_tree(out: &str) -> Result<(Vec<Chunk>, u64), String> {
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut device = None;
    for l in out.lines().map(str::trim) {
        let words: Vec<&str> = l.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "CHUNK_ITEM") {
            let logical = words
                .get(i + 1)
                .map(|w| w.trim_end_matches(')'))
                .and_then(|w| w.parse().ok());
            chunks.push(Chunk {
                logical: logical.ok_or_else(|| format!("cannot read the chunk item {l:?}"))?,
                ..Chunk::default()
            });
        } else if let (Some(c), Some("length")) = (chunks.last_mut(), words.first().copied()) {
            c.length = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
            c.data = words
                .iter()
                .position(|w| *w == "type")
                .and_then(|i| words.get(i + 1))
                .is_some_and(|t| t.split('|').next() == Some("DATA"));
        } else if let (Some(c), Some("stripe")) = (chunks.last_mut(), words.first().copied()) {
            if let Some(i) = words.iter().position(|w| *w == "offset") {
                c.stripes.extend(words.get(i + 1).and_then(|w| w.parse::<u64>().ok()));
            }
        } else if words.first() == Some(&"devid") && words.get(2) == Some(&"total_bytes") {
            device = words.get(3).and_then(|w| w.parse::<u64>().ok());
        }
    }
    if chunks.is_empty() {
        return Err("no chunk tree in the device's answer (btrfs inspect-internal dump-tree)".into());
    }
    Ok((chunks, device.ok_or("no device size in the chunk tree")?))
}

/// `ranges` (bytes into the partition) without the 4 KiB of each superblock copy.
fn without_superblocks(ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    let mut out = ranges;
    for sb in SUPERBLOCKS {
        let cut = sb..sb + 4096;
        out = out
            .into_iter()
            .flat_map(|r| {
                if r.end <= cut.start || cut.end <= r.start {
                    vec![r]
                } else {
                    vec![r.start..cut.start, cut.end..r.end]
                }
            })
            .filter(|r| r.end > r.start)
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the stand-in answers (trimmed): a 1 GiB card partition from sector 526336, a data
    /// chunk of 8 MiB at logical 13631488 and one of 100 MiB, metadata and system DUP.
    const ANSWER: &str = "partition-start 526336
Filesystem type is: 9123683e
File size of /broot/backups/.nexus_backup_4.tar.gpg.partial is 6291456 (1536 blocks of 4096 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:        0..     255:      33024..     33279:    256:
   1:      256..    1023:      33536..     34303:    768:      33280:
   2:     1024..    1535:          0..         0:      0:             last,unknown_loc,delalloc,eof
btrfs-progs v6.2
chunk tree
leaf 22036480 items 5 free space 15781 generation 6 owner CHUNK_TREE
\titem 0 key (DEV_ITEMS DEV_ITEM 1) itemoff 16185 itemsize 98
\t\tdevid 1 total_bytes 1073741824 bytes_used 236978176
\titem 1 key (FIRST_CHUNK_TREE CHUNK_ITEM 13631488) itemoff 16105 itemsize 80
\t\tlength 8388608 owner 2 stripe_len 65536 type DATA|single
\t\t\tstripe 0 devid 1 offset 13631488
\titem 2 key (FIRST_CHUNK_TREE CHUNK_ITEM 22020096) itemoff 15993 itemsize 112
\t\tlength 8388608 owner 2 stripe_len 65536 type SYSTEM|DUP
\t\t\tstripe 0 devid 1 offset 22020096
\t\t\tstripe 1 devid 1 offset 30408704
\titem 3 key (FIRST_CHUNK_TREE CHUNK_ITEM 30408704) itemoff 15881 itemsize 112
\t\tlength 53673984 owner 2 stripe_len 65536 type METADATA|DUP
\t\t\tstripe 0 devid 1 offset 38797312
\t\t\tstripe 1 devid 1 offset 92471296
\titem 4 key (FIRST_CHUNK_TREE CHUNK_ITEM 84082688) itemoff 15801 itemsize 80
\t\tlength 104857600 owner 2 stripe_len 65536 type DATA|single
\t\t\tstripe 0 devid 1 offset 146145280
";

    #[test]
    fn the_area_is_the_rest_of_the_files_data_chunk_and_the_unallocated_space() {
        let (sectors, line) = area(ANSWER).unwrap();
        // The file's last extent on the card ends at block 34304 (logical 140509184), in the
        // 100 MiB chunk (logical 84082688, at 146145280 on the device).
        let end = 34304 * 4096;
        let rest = 146145280 + (end - 84082688);
        let part = 526336;
        assert_eq!(sectors[0], part + rest / 512..part + (146145280 + 104857600) / 512);
        // Unallocated: 1 MiB..13631488 (without the superblock copy at 64 KiB, which is below
        // 1 MiB anyway), and after the last chunk up to the device's end, without the copy at
        // 64 MiB (inside the metadata chunk here: no cut needed).
        assert_eq!(sectors[1], part + 2048..part + 13631488 / 512);
        assert_eq!(
            sectors[2],
            part + (146145280 + 104857600) / 512..part + 1073741824 / 512
        );
        assert_eq!(sectors.len(), 3);
        // Never a metadata or system stripe.
        for (s, len) in [
            (22020096u64, 8388608u64),
            (30408704, 8388608),
            (38797312, 53673984),
            (92471296, 53673984),
        ] {
            let (a, b) = (part + s / 512, part + (s + len) / 512);
            assert!(
                sectors.iter().all(|r| r.end <= a || b <= r.start),
                "{r:?} meets {a}..{b}",
                r = sectors
            );
        }
        assert!(line.contains("MiB left of its data chunk"), "{line}");
    }

    #[test]
    fn a_superblock_copy_in_the_unallocated_space_is_left_out() {
        let ten_mib = (60 << 20)..(70 << 20);
        let cut = without_superblocks(std::iter::once(ten_mib).collect());
        assert_eq!(cut, vec![(60 << 20)..(64 << 20), (64 << 20) + 4096..(70 << 20)]);
    }

    #[test]
    fn a_backup_with_nothing_on_the_card_yet_or_no_chunk_tree_is_named() {
        let none = ANSWER
            .replace("   0:        0..     255:      33024..     33279:    256:\n", "")
            .replace(
                "   1:      256..    1023:      33536..     34303:    768:      33280:\n",
                "",
            );
        assert!(area(&none).unwrap_err().contains("no data on the card yet"));
        let no_tree = ANSWER.split("btrfs-progs").next().unwrap();
        assert!(area(no_tree).unwrap_err().contains("no chunk tree"));
        assert!(area("").unwrap_err().contains("partition start"));
    }

    #[test]
    fn the_command_reads_the_partial_file_of_the_backup() {
        assert!(
            command("4").contains("/broot/backups/.nexus_backup_4.tar.gpg.partial"),
            "{}",
            command("4")
        );
    }
}
