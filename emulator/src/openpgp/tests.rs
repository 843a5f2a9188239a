//! Tests of the writer: byte for byte against the RFC 4880 reference ([`super::reference`]) with
//! the random inputs fixed, the same under random data and random chunkings on every path this
//! CPU has, and GnuPG reading what we write.

use std::process::{Command, Stdio};
use std::sync::Once;

use proptest::collection::vec;
use proptest::prelude::*;

use super::reference::{self, Inputs};
use super::*;

/// Runs the real GnuPG on `cipher` with `password` and `args`: its stdout, or its stderr when it
/// fails; with `stderr` also on success.
fn gpg(cipher: &[u8], password: &str, args: &[&str]) -> Result<(Vec<u8>, String), String> {
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
        ])
        .args(args)
        .arg("--decrypt")
        .arg(&file)
        .env("GNUPGHOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gpg must be installed (ci/test installs it)");
    child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok((out.stdout, stderr))
    } else {
        Err(stderr)
    }
}

/// Decrypts with the real GnuPG, as the vendor's users do.
fn gpg_decrypt(cipher: &[u8], password: &str) -> Result<Vec<u8>, String> {
    gpg(cipher, password, &[]).map(|(plain, _)| plain)
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

/// Incompressible bytes from `seed` (xorshift64*).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len.div_ceil(8))
        .flat_map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
        })
        .take(len)
        .collect()
}

/// The fixed inputs of the known-answer tests.
fn fixed(data: &[u8]) -> Inputs<'_> {
    Inputs {
        password: b"correct horse battery staple",
        salt: [0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x07, 0x18],
        count_byte: 0x60,
        prefix: *b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff",
        file_name: "backup.tar",
        mtime: 0x6543_2100,
        data,
    }
}

/// Says `note` on stderr past the test harness's capture, so it shows on passing tests too.
fn note(note: &str) {
    let _ = writeln!(io::stderr(), "note: {note}");
}

/// The paths this CPU can run; says so (once) when the stitched one is not among them, so a
/// run without it is not taken for one that compared it.
fn paths() -> Vec<CipherPath> {
    if CipherPath::best() == CipherPath::Stitched {
        return vec![CipherPath::Stitched, CipherPath::Portable];
    }
    static NOTE: Once = Once::new();
    NOTE.call_once(|| {
        note(
            "no stitched cipher on this machine (x86_64 with AES-NI and SHA extensions only): \
             only the portable path is compared with the reference",
        )
    });
    vec![CipherPath::Portable]
}

/// What our writer made of one message.
struct Ours {
    message: Vec<u8>,
    sha256: [u8; 32],
    path: CipherPath,
    stitched_bytes: u64,
}

/// Our message for `i`, made the way the pipeline makes it: the data pushed into the plaintext
/// side in pieces of `pushes`, each chunk that comes out of it handed to the encryptor in pieces
/// of `splits` (both cycled; the pipeline hands each chunk over whole).
fn ours(i: &Inputs, pushes: &[usize], splits: &[usize], path: CipherPath) -> Ours {
    let (skesk, key) = skesk_packet_salted(i.password, &i.salt, i.count_byte);
    let mut enc = Encryptor::on_path(&skesk, &key, path);
    let (mut plain, mut chunk) = Plaintext::start_with_prefix(i.file_name, i.mtime, &i.prefix);
    let mut message = Vec::new();
    let mut splits = splits.iter().cycle();
    let mut hand_over = |chunk: &mut Vec<u8>, enc: &mut Encryptor| {
        let mut rest = &mut chunk[..];
        while !rest.is_empty() {
            let n = (*splits.next().unwrap()).clamp(1, rest.len());
            let (piece, r) = rest.split_at_mut(n);
            message.extend(enc.encrypt(piece));
            rest = r;
        }
        chunk.clear();
    };
    let mut data = i.data;
    for &n in pushes.iter().cycle() {
        if data.is_empty() {
            break;
        }
        let (piece, r) = data.split_at(n.clamp(1, data.len()));
        plain.push(piece, &mut chunk);
        if !chunk.is_empty() {
            hand_over(&mut chunk, &mut enc);
        }
        data = r;
    }
    plain.finish(&mut chunk);
    hand_over(&mut chunk, &mut enc);
    let (path, stitched_bytes) = (enc.path(), enc.stitched_bytes());
    let (tail, sha256) = enc.finish();
    message.extend(tail);
    Ours {
        message,
        sha256,
        path,
        stitched_bytes,
    }
}

/// Where two messages first differ, for a failure message that helps.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(at) => format!("first difference at byte {at} of {} (reference: {})", a.len(), b.len()),
        None => format!("lengths differ: {} bytes, reference {}", a.len(), b.len()),
    }
}

/// Compares our message for `i` with the reference, on `path`; also the SHA-256 we report.
fn assert_matches_reference(i: &Inputs, pushes: &[usize], splits: &[usize], path: CipherPath) {
    let (want, _) = reference::message(i);
    let got = ours(i, pushes, splits, path);
    assert_eq!(got.path, path, "the encryptor took another path than asked");
    assert!(
        got.message == want,
        "{path:?} path, {} bytes of data, pushes {pushes:?}, splits {splits:?}: {}",
        i.data.len(),
        first_difference(&got.message, &want)
    );
    assert_eq!(
        got.sha256,
        <[u8; 32]>::from(Sha256::digest(&got.message)),
        "the reported SHA-256"
    );
}

/// "hello, world\n" under [`fixed`], as GnuPG reads it (checked below): pins the format itself,
/// should the writer and the reference ever drift the same way. SKESK (15 bytes), then SEIPD.
const HELLO: &str = concat!(
    "c30d04090308a1b2c3d4e5f6071860",
    "d248019eeb6859b9f848f8f2d3d4635bae2bd9e68c73d9a8a0a428abe31d53df76ca68785e87003cb196edae0321",
    "7441e2e6d67df44d333131b87565efbcb76724ebd3e96fa0f56e0762",
);

#[test]
fn known_answer_message_is_pinned_and_gnupg_reads_it() {
    let data = b"hello, world\n";
    let i = fixed(data);
    let (want, _) = reference::message(&i);
    let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, HELLO, "the reference message changed");
    for path in paths() {
        assert_matches_reference(&i, &[data.len()], &[PARTIAL], path);
    }
    let password = std::str::from_utf8(i.password).unwrap();
    assert_eq!(gpg_decrypt(&want, password).unwrap(), data);
}

#[test]
fn messages_match_the_rfc_4880_reference_byte_for_byte() {
    // Around the length encodings (1, 2 and 5 bytes) and the 2^20 partial segments of the
    // literal packet (16 bytes of header here) and of the SEIPD packet (63 bytes around the data).
    let lens = [
        0,
        1,
        15,
        16,
        17,
        64,
        175,
        176,
        8367,
        8368,
        PARTIAL - 63,
        PARTIAL - 62,
        PARTIAL - 16,
        PARTIAL - 15,
        2 * PARTIAL + 4099,
    ];
    for len in lens {
        let data = pseudo_random(len, len as u64);
        let i = fixed(&data);
        for path in paths() {
            // As the pipeline feeds it: 1 MiB reads, each framed chunk handed over whole.
            assert_matches_reference(&i, &[PARTIAL], &[usize::MAX], path);
        }
    }
}

#[test]
fn s2k_key_matches_the_reference_and_gnupg() {
    let i = fixed(b"x");
    let key = derive_key(i.password, &i.salt, i.count_byte);
    assert_eq!(*key, reference::s2k(i.password, &i.salt, i.count_byte));
    // GnuPG derives the session key from the password itself and shows it.
    let (message, _) = reference::message(&i);
    let (_, stderr) = gpg(
        &message,
        std::str::from_utf8(i.password).unwrap(),
        &["--show-session-key"],
    )
    .unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02X}")).collect();
    assert!(
        stderr.contains(&format!("9:{hex}")),
        "GnuPG's session key differs: {stderr}"
    );
}

#[test]
fn stitched_path_runs_where_the_cpu_has_aes_ni_and_sha_ni() {
    #[cfg(target_arch = "x86_64")]
    let has = std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("sha");
    #[cfg(not(target_arch = "x86_64"))]
    let has = false;
    let data = pseudo_random(3 * PARTIAL, 7);
    let i = fixed(&data);
    let (skesk, key) = skesk_packet_salted(i.password, &i.salt, i.count_byte);
    let enc = Encryptor::new(&skesk, &key);
    let got = ours(&i, &[PARTIAL], &[usize::MAX], enc.path());
    if has {
        assert_eq!(enc.path(), CipherPath::Stitched, "the CPU has AES-NI and SHA-NI");
        // Not the first chunk (no output to hash beside it yet), the short last one and the
        // block edges: the rest, two thirds here.
        assert!(
            got.stitched_bytes * 2 >= data.len() as u64,
            "the stitched code encrypted only {} of {} bytes",
            got.stitched_bytes,
            data.len()
        );
    } else {
        note("this CPU lacks AES-NI or SHA extensions (or is not x86_64): the portable path runs");
        assert_eq!((enc.path(), got.stitched_bytes), (CipherPath::Portable, 0));
    }
}

/// Lengths of data: small, around one and around two 2^20 segments.
fn data_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..5000,
        (PARTIAL - 600)..(PARTIAL + 600),
        (2 * PARTIAL - 200)..(2 * PARTIAL + 5000)
    ]
}

/// Piece sizes: byte-sized (every offset in a block), mid-sized, and up to a few segments.
fn pieces(max: usize) -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1usize..130, 1usize..20_000, 1usize..max], 1..5)
}

proptest! {
    // Each case is up to 2 MiB through three encoders: few cases, so the suite stays in seconds.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_data_in_any_pieces_gives_the_reference_bytes_on_every_path(
        len in data_len(),
        seed in any::<u64>(),
        password in vec(any::<u8>(), 1..1500),
        count_byte in prop_oneof![0u8..0x20, Just(0x60)],
        salt in any::<[u8; 8]>(),
        prefix in any::<[u8; 16]>(),
        pushes in pieces(3 * PARTIAL),
        splits in pieces(PARTIAL + 5000),
    ) {
        let data = pseudo_random(len, seed);
        let i = Inputs { password: &password, salt, count_byte, prefix, file_name: "t.tar", mtime: 1, data: &data };
        let (want, _) = reference::message(&i);
        for path in paths() {
            let got = ours(&i, &pushes, &splits, path);
            prop_assert!(got.message == want, "{:?} path: {}", path, first_difference(&got.message, &want));
            prop_assert_eq!(got.sha256, <[u8; 32]>::from(Sha256::digest(&got.message)));
            if path == CipherPath::Portable {
                prop_assert_eq!(got.stitched_bytes, 0);
            }
        }
    }
}

/// Encrypts the plaintext stream `plain` cut into pieces of `sizes` (cycled) on `path`.
fn encrypt_pieces(plain: &[u8], sizes: &[usize], key: &Key, path: CipherPath) -> (Vec<u8>, [u8; 32]) {
    let mut enc = Encryptor::on_path(&[TAG_SKESK], key, path);
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
    let data: Vec<u8> = (0..3 * PARTIAL + 4321).map(|i| (i * 131 + i / 977) as u8).collect();
    let (mut framer, mut plain) = Plaintext::start("x.tar", 0).unwrap();
    framer.push(&data, &mut plain);
    framer.finish(&mut plain);
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut key[..]).unwrap();
    // Odd sizes put the stitched runs at every offset of the SHA-256 and CFB blocks.
    let sizes = [1, 63, 64, 65, 1000, PARTIAL + 1, PARTIAL / 2 + 17, 5, 2 * PARTIAL + 3];
    let best = *paths().first().unwrap();
    let (a, sha_a) = encrypt_pieces(&plain, &sizes, &key, best);
    let (b, sha_b) = encrypt_pieces(&plain, &sizes, &key, CipherPath::Portable);
    let (c, sha_c) = encrypt_pieces(&plain, &[PARTIAL + 1], &key, best);
    assert!(a == b && a == c, "the output depends on the path or the pieces");
    assert_eq!(sha_a, <[u8; 32]>::from(Sha256::digest(&a)));
    assert_eq!((sha_a, sha_b), (sha_c, sha_c));
    // A real message around it: GnuPG checks the MDC (our SHA-1) and decrypts.
    let (skesk, key) = skesk_packet(b"pw", 0x60).unwrap();
    let mut message = skesk.clone();
    message.extend(encrypt_pieces(&plain, &sizes, &key, best).0[1..].iter());
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
