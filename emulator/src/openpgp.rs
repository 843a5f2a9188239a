//! OpenPGP password encryption (RFC 4880) as GnuPG 2.2 decrypts it: a SKESK v4 packet with an
//! iterated and salted SHA-256 S2K, then a SEIPD v1 packet (AES-256-CFB with MDC) holding one
//! literal data packet. Both packets stream with partial body lengths, so any size works in
//! constant memory. The plaintext side (framing + SHA-1 MDC) and the cipher side (AES-CFB + SHA-256
//! of the output) are separate types so they can run on different threads.

use std::io::{self, Write};

use aes::cipher::KeyIvInit;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

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

type Aes256CfbEnc = cfb_mode::BufEncryptor<aes::Aes256>;

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

/// The plaintext side: the random prefix, the literal data packet and the MDC.
pub struct Plaintext {
    framer: PartialFramer,
    mdc: Sha1,
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
            mdc: Sha1::new(),
        };
        let name = &file_name.as_bytes()[..file_name.len().min(255)];
        let mut out = prefix.to_vec();
        out.push(TAG_LITERAL);
        let mut head = vec![b'b', name.len() as u8];
        head.extend_from_slice(name);
        head.extend_from_slice(&mtime.to_be_bytes());
        // The first partial segment must hold at least 512 bytes: start with a fully buffered body.
        this.framer.pending = head;
        this.mdc.update(&out);
        Ok((this, out))
    }

    /// Frames `data` into `out` (appending); returns how many bytes were appended.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        self.framer.push(data, out);
        self.mdc.update(&out[start..]);
    }

    /// Ends the literal packet and appends the MDC packet.
    pub fn finish(self, out: &mut Vec<u8>) {
        let Self { framer, mut mdc } = self;
        let start = out.len();
        framer.finish(out);
        out.extend_from_slice(&MDC_HEADER);
        mdc.update(&out[start..]);
        let digest = mdc.finalize();
        out.extend_from_slice(&digest);
    }
}

/// The cipher side without I/O: encrypts plaintext into the SEIPD packet's framed bytes, which
/// the caller writes (and hashes) where it likes, e.g. on another thread.
pub struct Encryptor {
    cfb: Aes256CfbEnc,
    framer: PartialFramer,
}

impl Encryptor {
    /// The encryptor, and the bytes that open the output: the SKESK packet and the SEIPD header.
    pub fn new(skesk: &[u8], key: &Key) -> (Self, Vec<u8>) {
        let iv = [0u8; 16];
        let k: &[u8; 32] = key;
        // aes 0.8: AES-NI for single blocks; 0.9 routes every block through VAES-512, whose
        // per-call key broadcast made serial CFB several times slower here.
        let cfb = Aes256CfbEnc::new(k.into(), &iv.into());
        let mut head = skesk.to_vec();
        head.push(TAG_SEIPD);
        let mut framer = PartialFramer::default();
        framer.pending.push(1); // SEIPD version
        (Self { cfb, framer }, head)
    }

    /// Encrypts `plain` in place and appends every full segment that is ready to `out`.
    pub fn encrypt(&mut self, plain: &mut [u8], out: &mut Vec<u8>) {
        self.cfb.encrypt(plain);
        self.framer.push(plain, out);
    }

    /// Ends the SEIPD packet: appends the last segment to `out`.
    pub fn finish(self, out: &mut Vec<u8>) {
        self.framer.finish(out);
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
    let (mut enc, head) = Encryptor::new(&skesk, &key);
    let mut output = output;
    let mut sha256 = Sha256::new();
    let mut emit = |bytes: &[u8]| -> io::Result<()> {
        sha256.update(bytes);
        output.write_all(bytes)
    };
    emit(&head)?;
    let (mut plain, mut out) = Plaintext::start(file_name, 0)?;
    let mut cipher = Vec::new();
    enc.encrypt(&mut out, &mut cipher);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.clear();
        plain.push(&buf[..n], &mut out);
        enc.encrypt(&mut out, &mut cipher);
        emit(&cipher)?;
        cipher.clear();
    }
    out.clear();
    plain.finish(&mut out);
    enc.encrypt(&mut out, &mut cipher);
    enc.finish(&mut cipher);
    emit(&cipher)?;
    output.flush()?;
    Ok(sha256.finalize().into())
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
