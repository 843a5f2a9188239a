//! OpenPGP password encryption (RFC 4880) as GnuPG 2.2 decrypts it: a SKESK v4 packet with an
//! iterated and salted SHA-256 S2K, then a SEIPD v1 packet (AES-256-CFB with MDC) holding one
//! literal data packet. Both packets stream with partial body lengths, so any size works in
//! constant memory. The plaintext side ([`Plaintext`]: framing) and the cipher side
//! ([`Encryptor`]: SHA-1 MDC, AES-CFB, framing and the SHA-256 of the output) are separate types
//! so they can run on different threads. On x86_64 with AES-NI and SHA extensions the cipher side
//! runs its three serial chains stitched together on one core ([`stitched`]).

use std::io::{self, Write};

use aes::cipher::{BlockEncrypt, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[cfg(target_arch = "x86_64")]
mod stitched;

/// Size of one partial body segment: 2^20 bytes.
const PARTIAL_POWER: u8 = 20;
const PARTIAL: usize = 1 << PARTIAL_POWER;

const TAG_SKESK: u8 = 0xC3; // new format, tag 3
const TAG_SEIPD: u8 = 0xD2; // new format, tag 18
const TAG_LITERAL: u8 = 0xCB; // new format, tag 11
const MDC_HEADER: [u8; 2] = [0xD3, 0x14]; // new format tag 19, length 20

const SYM_AES256: u8 = 9;
const S2K_ITERATED_SALTED: u8 = 3;
const HASH_SHA256: u8 = 8;

/// The session key derived from the password.
pub type Key = Zeroizing<[u8; 32]>;

/// Bytes hashed by an S2K count byte (RFC 4880 3.7.1.3).
pub fn s2k_count(c: u8) -> usize {
    (16 + (c as usize & 15)) << ((c as usize >> 4) + 6)
}

/// Derives the AES-256 key from `password` with iterated and salted SHA-256.
pub fn derive_key(password: &[u8], salt: &[u8; 8], count_byte: u8) -> Key {
    let mut hasher = Sha256::new();
    let total = s2k_count(count_byte).max(salt.len() + password.len());
    let mut left = total;
    while left > 0 {
        let n = left.min(salt.len());
        hasher.update(&salt[..n]);
        left -= n;
        let n = left.min(password.len());
        hasher.update(&password[..n]);
        left -= n;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&hasher.finalize());
    key
}

/// The SKESK packet for `password` and the key it stands for.
pub fn skesk_packet(password: &[u8], count_byte: u8) -> io::Result<(Vec<u8>, Key)> {
    let mut salt = [0u8; 8];
    getrandom::fill(&mut salt).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let key = derive_key(password, &salt, count_byte);
    let mut p = vec![TAG_SKESK, 13, 4, SYM_AES256, S2K_ITERATED_SALTED, HASH_SHA256];
    p.extend_from_slice(&salt);
    p.push(count_byte);
    Ok((p, key))
}

/// Encodes a definite body length (RFC 4880 4.2.2).
fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 192 {
        out.push(len as u8);
    } else if len < 8384 {
        let l = len - 192;
        out.push(((l >> 8) + 192) as u8);
        out.push((l & 0xff) as u8);
    } else {
        out.push(0xff);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Splits a packet body into partial segments as bytes arrive; the last segment has a definite length.
#[derive(Default)]
struct PartialFramer {
    pending: Vec<u8>,
}

impl PartialFramer {
    /// Appends `data`; every full segment that is not known to be the last goes to `out`. A
    /// segment is copied once, straight from `pending` and `data`; only the tail waits.
    fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        loop {
            let need = PARTIAL - self.pending.len();
            // Keep at least one byte back so the final segment is never empty.
            if data.len() <= need {
                self.pending.extend_from_slice(data);
                return;
            }
            out.reserve(PARTIAL + 1);
            out.push(0xE0 | PARTIAL_POWER);
            out.extend_from_slice(&self.pending);
            out.extend_from_slice(&data[..need]);
            self.pending.clear();
            data = &data[need..];
        }
    }

    fn finish(self, out: &mut Vec<u8>) {
        push_length(out, self.pending.len());
        out.extend_from_slice(&self.pending);
    }
}

/// A Merkle-Damgard hash (SHA-1 or SHA-256) fed block by block, so that runs of whole blocks
/// can go through the stitched code while the rest goes through the `sha1`/`sha2` crates.
struct BlockHash<const W: usize> {
    state: [u32; W],
    buf: [u8; 64],
    fill: usize,
    len: u64,
    compress: fn(&mut [u32; W], &[[u8; 64]]),
}

impl<const W: usize> BlockHash<W> {
    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.fill > 0 {
            let n = (64 - self.fill).min(data.len());
            self.buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill < 64 {
                return;
            }
            (self.compress)(&mut self.state, &[self.buf]);
            self.fill = 0;
        }
        let (blocks, rest) = data.as_chunks::<64>();
        (self.compress)(&mut self.state, blocks);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.fill = rest.len();
    }

    /// Bytes still to come before the stream is at a block boundary.
    fn to_boundary(&self) -> usize {
        (64 - self.fill) % 64
    }

    /// Pads (the same for SHA-1 and SHA-256) and writes the digest, big-endian words, to `out`.
    fn finish(mut self, out: &mut [u8]) {
        let bits = self.len * 8;
        let mut pad = [0u8; 64];
        pad[0] = 0x80;
        self.update(&pad[..64 - (self.fill + 8) % 64]);
        self.update(&bits.to_be_bytes());
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
    }
}

fn sha1_hash() -> BlockHash<5> {
    BlockHash {
        state: [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0],
        buf: [0; 64],
        fill: 0,
        len: 0,
        compress: sha1::block_api::compress,
    }
}

fn sha256_hash() -> BlockHash<8> {
    BlockHash {
        state: [
            0x6a09_e667,
            0xbb67_ae85,
            0x3c6e_f372,
            0xa54f_f53a,
            0x510e_527f,
            0x9b05_688c,
            0x1f83_d9ab,
            0x5be0_cd19,
        ],
        buf: [0; 64],
        fill: 0,
        len: 0,
        compress: sha2::block_api::compress256,
    }
}

/// AES-256 in CFB mode over a stream (OpenPGP's SEIPD: zero IV, no resync).
struct Cfb {
    aes: aes::Aes256,
    #[cfg(target_arch = "x86_64")]
    stitched: Option<stitched::RoundKeys>,
    /// The previous ciphertext block, being overwritten by the current one.
    iv: [u8; 16],
    /// The current block's key stream, and how much of it is used.
    ks: [u8; 16],
    pos: usize,
}

impl Drop for Cfb {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.iv.zeroize();
        self.ks.zeroize();
    }
}

impl Cfb {
    fn new(key: &Key) -> Self {
        let k: &[u8; 32] = key;
        Self {
            aes: aes::Aes256::new(k.into()),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has what the stitched code needs; checked first.
            stitched: stitched::available().then(|| unsafe { stitched::RoundKeys::new(k) }),
            iv: [0; 16],
            ks: [0; 16],
            pos: 0,
        }
    }

    fn encrypt(&mut self, data: &mut [u8]) {
        // A started block ends byte by byte; whole blocks go at once; a new partial block is begun.
        let started = ((16 - self.pos) % 16).min(data.len());
        let (head, rest) = data.split_at_mut(started);
        self.encrypt_bytes(head);
        let (blocks, tail) = rest.as_chunks_mut::<16>();
        for block in blocks {
            let mut ks = self.iv.into();
            self.aes.encrypt_block(&mut ks);
            for (b, k) in block.iter_mut().zip(ks) {
                *b ^= k;
            }
            self.iv = *block;
        }
        self.encrypt_bytes(tail);
    }

    fn encrypt_bytes(&mut self, data: &mut [u8]) {
        for b in data {
            if self.pos == 0 {
                let mut block = self.iv.into();
                self.aes.encrypt_block(&mut block);
                self.ks = block.into();
            }
            *b ^= self.ks[self.pos];
            self.iv[self.pos] = *b;
            self.pos = (self.pos + 1) % 16;
        }
    }
}

/// The plaintext side: the random prefix and the literal data packet.
pub struct Plaintext {
    framer: PartialFramer,
}

impl Plaintext {
    /// Starts the plaintext; the returned bytes (prefix and packet start) go first to the cipher side.
    pub fn start(file_name: &str, mtime: u32) -> io::Result<(Self, Vec<u8>)> {
        let mut prefix = [0u8; 18];
        getrandom::fill(&mut prefix[..16]).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        prefix[16] = prefix[14];
        prefix[17] = prefix[15];
        let mut this = Self {
            framer: PartialFramer::default(),
        };
        let name = &file_name.as_bytes()[..file_name.len().min(255)];
        let mut out = prefix.to_vec();
        out.push(TAG_LITERAL);
        let mut head = vec![b'b', name.len() as u8];
        head.extend_from_slice(name);
        head.extend_from_slice(&mtime.to_be_bytes());
        // The first partial segment must hold at least 512 bytes: start with a fully buffered body.
        this.framer.pending = head;
        Ok((this, out))
    }

    /// Frames `data` into `out` (appending).
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.framer.push(data, out);
    }

    /// Ends the literal packet (the cipher side adds the MDC packet after it).
    pub fn finish(self, out: &mut Vec<u8>) {
        self.framer.finish(out);
    }
}

/// The cipher side without I/O: hashes the plaintext for the MDC, encrypts it, frames the SEIPD
/// packet and hashes the output with SHA-256 (the backup's checksum). The output of one call is
/// handed out by the next, hashed beside that call's encryption.
pub struct Encryptor {
    cfb: Cfb,
    mdc: BlockHash<5>,
    sha256: BlockHash<8>,
    framer: PartialFramer,
    /// Output not yet hashed: what the next call hands out.
    ready: Vec<u8>,
}

impl Encryptor {
    /// The encryptor; its first output is the SKESK packet and the SEIPD header.
    pub fn new(skesk: &[u8], key: &Key) -> Self {
        let mut ready = skesk.to_vec();
        ready.push(TAG_SEIPD);
        let mut framer = PartialFramer::default();
        framer.pending.push(1); // SEIPD version
        Self {
            cfb: Cfb::new(key),
            mdc: sha1_hash(),
            sha256: sha256_hash(),
            framer,
            ready,
        }
    }

    /// Encrypts the next plaintext `plain` in place; returns the output that is complete and
    /// hashed (that of the call before).
    pub fn encrypt(&mut self, plain: &mut [u8]) -> Vec<u8> {
        let prev = std::mem::replace(&mut self.ready, Vec::with_capacity(plain.len() + 64));
        self.encrypt_hashing(plain, &prev);
        self.framer.push(plain, &mut self.ready);
        prev
    }

    /// SHA-1 then AES-CFB of `plain`, and SHA-256 of `other` beside them.
    fn encrypt_hashing(&mut self, mut plain: &mut [u8], mut other: &[u8]) {
        // SHA-1 and CFB start at the same byte, so one boundary lines up both.
        let n = self.mdc.to_boundary().min(plain.len());
        let (head, rest) = plain.split_at_mut(n);
        self.mdc.update(head);
        self.cfb.encrypt(head);
        plain = rest;
        let n = self.sha256.to_boundary().min(other.len());
        self.sha256.update(&other[..n]);
        other = &other[n..];
        #[cfg(target_arch = "x86_64")]
        if let Some(keys) = &self.cfb.stitched {
            if self.mdc.fill == 0 && self.cfb.pos == 0 && self.sha256.fill == 0 {
                let both = (plain.len() / 64).min(other.len() / 64) * 64;
                let (now, rest) = plain.split_at_mut(both);
                // SAFETY: `stitched` is set only when the CPU has what it needs.
                unsafe {
                    stitched::cfb_sha1_sha256(
                        keys,
                        &mut self.cfb.iv,
                        &mut self.mdc.state,
                        now,
                        &mut self.sha256.state,
                        &other[..both],
                    )
                };
                self.mdc.len += both as u64;
                self.sha256.len += both as u64;
                plain = rest;
                other = &other[both..];
            }
        }
        self.mdc.update(plain);
        self.cfb.encrypt(plain);
        self.sha256.update(other);
    }

    /// Ends the SEIPD packet with the MDC packet; returns the rest of the output and the
    /// SHA-256 of all of it.
    pub fn finish(mut self) -> (Vec<u8>, [u8; 32]) {
        let mut out = std::mem::take(&mut self.ready);
        let mut mdc = [0u8; 22];
        mdc[..2].copy_from_slice(&MDC_HEADER);
        self.mdc.update(&MDC_HEADER);
        let Self {
            mut cfb,
            mdc: hash,
            mut sha256,
            mut framer,
            ..
        } = self;
        hash.finish(&mut mdc[2..]);
        cfb.encrypt(&mut mdc);
        framer.push(&mdc, &mut out);
        framer.finish(&mut out);
        sha256.update(&out);
        let mut digest = [0u8; 32];
        sha256.finish(&mut digest);
        (out, digest)
    }
}

/// Encrypts everything from `input` to `output` in one thread; for tests and small data.
pub fn encrypt_all(
    input: &mut impl io::Read,
    output: impl Write,
    password: &[u8],
    count_byte: u8,
    file_name: &str,
) -> io::Result<[u8; 32]> {
    let (skesk, key) = skesk_packet(password, count_byte)?;
    let mut enc = Encryptor::new(&skesk, &key);
    let mut output = output;
    let (mut plain, mut out) = Plaintext::start(file_name, 0)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        plain.push(&buf[..n], &mut out);
        if !out.is_empty() {
            output.write_all(&enc.encrypt(&mut out))?;
            out.clear();
        }
    }
    plain.finish(&mut out);
    output.write_all(&enc.encrypt(&mut out))?;
    let (rest, sha256) = enc.finish();
    output.write_all(&rest)?;
    output.flush()?;
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Decrypts with the real GnuPG, as the vendor's users do.
    fn gpg_decrypt(cipher: &[u8], password: &str) -> Result<Vec<u8>, String> {
        let home = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.gpg");
        std::fs::write(&file, cipher).unwrap();
        let mut child = Command::new("gpg")
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                "0",
                "--decrypt",
            ])
            .arg(&file)
            .env("GNUPGHOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg must be installed (ci/test installs it)");
        child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn roundtrip(len: usize) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut cipher = Vec::new();
        let sha = encrypt_all(&mut &data[..], &mut cipher, b"correct horse", 0x60, "x.tar").unwrap();
        assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&cipher)));
        let plain = gpg_decrypt(&cipher, "correct horse").unwrap();
        assert_eq!(plain.len(), data.len());
        assert!(plain == data, "decrypted bytes differ for len {len}");
    }

    /// Encrypts the plaintext stream `plain` cut into pieces of `sizes` (cycled); `stitched`
    /// false takes the portable path even where the stitched one is there.
    fn encrypt_pieces(plain: &[u8], sizes: &[usize], key: &Key, stitched: bool) -> (Vec<u8>, [u8; 32]) {
        let mut enc = Encryptor::new(&[TAG_SKESK], key);
        #[cfg(target_arch = "x86_64")]
        if !stitched {
            enc.cfb.stitched = None;
        }
        let _ = stitched;
        let mut out = Vec::new();
        let mut rest = plain;
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, r) = rest.split_at(n.min(rest.len()));
            out.extend(enc.encrypt(&mut piece.to_vec()));
            rest = r;
        }
        let (tail, sha) = enc.finish();
        out.extend(tail);
        (out, sha)
    }

    #[test]
    fn stitched_and_portable_paths_give_the_same_bytes_and_gnupg_reads_them() {
        #[cfg(target_arch = "x86_64")]
        if !stitched::available() {
            eprintln!("this CPU lacks AES-NI or SHA extensions: only the portable path is tested");
        }
        let data: Vec<u8> = (0..3 * PARTIAL + 4321).map(|i| (i * 131 + i / 977) as u8).collect();
        let (mut framer, mut plain) = Plaintext::start("x.tar", 0).unwrap();
        framer.push(&data, &mut plain);
        framer.finish(&mut plain);
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut key[..]).unwrap();
        // Odd sizes put the stitched runs at every offset of the SHA-256 and CFB blocks.
        let sizes = [1, 63, 64, 65, 1000, PARTIAL + 1, PARTIAL / 2 + 17, 5, 2 * PARTIAL + 3];
        let (a, sha_a) = encrypt_pieces(&plain, &sizes, &key, true);
        let (b, sha_b) = encrypt_pieces(&plain, &sizes, &key, false);
        let (c, sha_c) = encrypt_pieces(&plain, &[PARTIAL + 1], &key, true);
        assert!(a == b && a == c, "the output depends on the path or the pieces");
        assert_eq!(sha_a, <[u8; 32]>::from(Sha256::digest(&a)));
        assert_eq!((sha_a, sha_b), (sha_c, sha_c));
        // A real message around it: GnuPG checks the MDC (our SHA-1) and decrypts.
        let (skesk, key) = skesk_packet(b"pw", 0x60).unwrap();
        let mut message = skesk.clone();
        message.extend(encrypt_pieces(&plain, &sizes, &key, true).0[1..].iter());
        assert!(gpg_decrypt(&message, "pw").unwrap() == data, "GnuPG read other bytes");
    }

    #[test]
    fn gnupg_decrypts_small_and_empty_messages() {
        roundtrip(0);
        roundtrip(1);
        roundtrip(191);
        roundtrip(8383);
    }

    #[test]
    fn gnupg_decrypts_messages_across_partial_segments() {
        roundtrip(PARTIAL - 20);
        roundtrip(PARTIAL);
        roundtrip(3 * PARTIAL + 12345);
    }

    #[test]
    fn wrong_password_is_refused_by_gnupg() {
        let mut cipher = Vec::new();
        encrypt_all(&mut &b"secret data"[..], &mut cipher, b"right", 0x60, "x").unwrap();
        let err = gpg_decrypt(&cipher, "wrong").unwrap_err();
        assert!(
            err.contains("decryption failed") || err.contains("Bad session key"),
            "{err}"
        );
    }

    #[test]
    fn s2k_count_matches_rfc_examples() {
        assert_eq!(s2k_count(0x60), 65536);
        assert_eq!(s2k_count(0xff), 65_011_712);
    }
}
