//! OpenPGP password encryption (RFC 4880) as GnuPG 2.2 decrypts it: a SKESK v4 packet with an
//! iterated and salted SHA-256 S2K, then a SEIPD v1 packet (AES-256-CFB with MDC) holding one
//! literal data packet. Both packets stream with partial body lengths, so any size works in
//! constant memory. The plaintext side ([`Plaintext`]: framing) and the cipher side
//! ([`Encryptor`]: SHA-1 MDC, AES-CFB, framing and the SHA-256 of the output) are separate types
//! so they can run on different threads. On x86_64 with AES-NI and SHA extensions the cipher side
//! runs its three serial chains stitched together on one core ([`stitched`]).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use aes::cipher::{BlockEncrypt, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::{ZeroizeOnDrop, Zeroizing};

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

// The S2K hasher holds the password (its block buffer) and a state one step from the key: it
// must wipe itself when dropped (sha2's `zeroize` feature). This fails to build if it does not.
const _: fn() = || {
    fn wiped_on_drop<T: ZeroizeOnDrop>() {}
    wiped_on_drop::<Sha256>();
    wiped_on_drop::<Key>();
    wiped_on_drop::<aes::Aes256>();
};

/// Derives the AES-256 key from `password` with iterated and salted SHA-256.
pub fn derive_key(password: &[u8], salt: &[u8; 8], count_byte: u8) -> Key {
    // Finalized in place (no move that would leave a copy behind) and wiped where it lies.
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
    // Straight into the wiped buffer: no temporary copy of the key.
    hasher.finalize_into_reset((&mut *key).into());
    key
}

/// The SKESK packet for `password` and the key it stands for.
pub fn skesk_packet(password: &[u8], count_byte: u8) -> io::Result<(Vec<u8>, Key)> {
    let mut salt = [0u8; 8];
    getrandom::fill(&mut salt).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(skesk_packet_salted(password, &salt, count_byte))
}

/// [`skesk_packet`] with a given salt; private so that only the known-answer tests fix it.
fn skesk_packet_salted(password: &[u8], salt: &[u8; 8], count_byte: u8) -> (Vec<u8>, Key) {
    let key = derive_key(password, salt, count_byte);
    let mut p = vec![TAG_SKESK, 13, 4, SYM_AES256, S2K_ITERATED_SALTED, HASH_SHA256];
    p.extend_from_slice(salt);
    p.push(count_byte);
    (p, key)
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
    /// The cipher; with the stitched round keys when `path` asks for them and the CPU has them.
    fn new(key: &Key, path: CipherPath) -> Self {
        let k: &[u8; 32] = key;
        let _ = path; // only x86_64 has a choice
        Self {
            aes: aes::Aes256::new(k.into()),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has what the stitched code needs; checked first.
            stitched: (path == CipherPath::Stitched && stitched::available())
                .then(|| unsafe { stitched::RoundKeys::new(k) }),
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
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        Ok(Self::start_with_prefix(file_name, mtime, &random))
    }

    /// [`Plaintext::start`] with a given random prefix; private so that only the known-answer
    /// tests fix it.
    fn start_with_prefix(file_name: &str, mtime: u32, random: &[u8; 16]) -> (Self, Vec<u8>) {
        let mut prefix = [0u8; 18];
        prefix[..16].copy_from_slice(random);
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
        (this, out)
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

/// The code that runs the cipher side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherPath {
    /// AES-NI and SHA extensions, the three chains stitched on one core (x86_64).
    Stitched,
    /// The `aes`, `sha1` and `sha2` crates, one chain after the other.
    Portable,
}

impl CipherPath {
    /// The fastest path this CPU has (unless [`force_portable`] was called).
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if stitched::available() && !FORCE_PORTABLE.load(Ordering::Relaxed) {
            return Self::Stitched;
        }
        Self::Portable
    }
}

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Makes the encryptors made from now on take the portable path even where the CPU has the
/// stitched one; for the benchmarks' A/B of the two paths on the same data. Not in the config.
#[doc(hidden)]
pub fn force_portable(on: bool) {
    FORCE_PORTABLE.store(on, Ordering::Relaxed);
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
    /// Plaintext bytes the stitched code encrypted.
    stitched_bytes: u64,
}

impl Encryptor {
    /// The encryptor on the best path this CPU has; its first output is the SKESK packet and
    /// the SEIPD header.
    pub fn new(skesk: &[u8], key: &Key) -> Self {
        Self::on_path(skesk, key, CipherPath::best())
    }

    /// The encryptor on `path` (the portable one where the CPU lacks the stitched one).
    fn on_path(skesk: &[u8], key: &Key, path: CipherPath) -> Self {
        let mut ready = skesk.to_vec();
        ready.push(TAG_SEIPD);
        let mut framer = PartialFramer::default();
        framer.pending.push(1); // SEIPD version
        Self {
            cfb: Cfb::new(key, path),
            mdc: sha1_hash(),
            sha256: sha256_hash(),
            framer,
            ready,
            stitched_bytes: 0,
        }
    }

    /// The path this encryptor runs on.
    pub fn path(&self) -> CipherPath {
        #[cfg(target_arch = "x86_64")]
        if self.cfb.stitched.is_some() {
            return CipherPath::Stitched;
        }
        CipherPath::Portable
    }

    /// Plaintext bytes the stitched code has encrypted so far (the rest went the portable way).
    pub fn stitched_bytes(&self) -> u64 {
        self.stitched_bytes
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
                self.stitched_bytes += both as u64;
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
mod reference;
#[cfg(test)]
mod tests;
