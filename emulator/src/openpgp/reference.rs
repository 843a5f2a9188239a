//! The same OpenPGP message built the plain way, for the known-answer and property tests: RFC 4880
//! read afresh, whole buffers through `cfb-mode`, `sha1` and `sha2`, no code shared with the writer.

use aes::Aes256;
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Everything random or chosen in a message, fixed.
pub struct Inputs<'a> {
    pub password: &'a [u8],
    pub salt: [u8; 8],
    pub count_byte: u8,
    /// The random part of the prefix (RFC 4880 5.13); its last two bytes are repeated after it.
    pub prefix: [u8; 16],
    pub file_name: &'a str,
    pub mtime: u32,
    pub data: &'a [u8],
}

/// Iterated and salted S2K with SHA-256 (RFC 4880 3.7.1.3): salt and password repeated up to the
/// count, but at least once whole.
pub fn s2k(password: &[u8], salt: &[u8; 8], count_byte: u8) -> [u8; 32] {
    let c = count_byte as usize;
    let count = ((16 + (c & 15)) << ((c >> 4) + 6)).max(salt.len() + password.len());
    let stream: Vec<u8> = salt.iter().chain(password).copied().cycle().take(count).collect();
    Sha256::digest(&stream).into()
}

/// A new-format packet (RFC 4880 4.2.2): bodies over 2^20 bytes go out as partial lengths of 2^20
/// (the framing the writer chose), the last piece (never empty) with a definite length.
pub fn packet(tag: u8, body: &[u8]) -> Vec<u8> {
    const PIECE: usize = 1 << 20;
    let mut out = vec![0xC0 | tag];
    let mut rest = body;
    while rest.len() > PIECE {
        out.push(0xE0 | 20);
        out.extend_from_slice(&rest[..PIECE]);
        rest = &rest[PIECE..];
    }
    match rest.len() {
        n @ 0..=191 => out.push(n as u8),
        n @ 192..=8383 => out.extend_from_slice(&[((n - 192) >> 8) as u8 + 192, (n - 192) as u8]),
        n => {
            out.push(0xFF);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(rest);
    out
}

/// SKESK v4 (AES-256, iterated and salted SHA-256 S2K), then SEIPD v1: AES-256-CFB with a zero IV
/// over the prefix, a binary literal data packet and the MDC packet (SHA-1 of all before it and
/// of the MDC packet's own two header bytes). Returns the message and the session key.
pub fn message(i: &Inputs) -> (Vec<u8>, [u8; 32]) {
    let key = s2k(i.password, &i.salt, i.count_byte);
    let mut skesk = vec![4, 9, 3, 8];
    skesk.extend_from_slice(&i.salt);
    skesk.push(i.count_byte);

    let mut literal = vec![b'b', i.file_name.len() as u8];
    literal.extend_from_slice(i.file_name.as_bytes());
    literal.extend_from_slice(&i.mtime.to_be_bytes());
    literal.extend_from_slice(i.data);

    let mut plain = i.prefix.to_vec();
    plain.extend_from_slice(&i.prefix[14..]);
    plain.extend(packet(11, &literal));
    plain.extend_from_slice(&[0xD3, 0x14]);
    let mdc = Sha1::digest(&plain);
    plain.extend_from_slice(&mdc);
    cfb_mode::Encryptor::<Aes256>::new(&key.into(), &[0u8; 16].into()).encrypt(&mut plain);

    let mut seipd = vec![1];
    seipd.extend(plain);
    let mut out = packet(3, &skesk);
    out.extend(packet(18, &seipd));
    (out, key)
}
