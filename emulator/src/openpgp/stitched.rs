//! AES-256-CFB encryption stitched with SHA-1 of the plaintext and SHA-256 of another stream, on
//! x86_64 with AES-NI and SHA extensions. All three are serial chains bound by instruction
//! latency, not by throughput, so one core runs them side by side nearly for the price of the
//! AES chain alone (the same idea as OpenSSL's stitched `aesni_cbc_sha*` for TLS). The SHA rounds
//! follow the RustCrypto `sha1`/`sha2` x86 back ends (MIT/Apache-2.0), cut into pieces so that
//! they sit between the AES blocks of the same 64 bytes.

#![allow(unsafe_op_in_unsafe_fn)]

use core::arch::x86_64::*;

/// AES-256 round keys, wiped when dropped.
pub struct RoundKeys([__m128i; 15]);

impl Drop for RoundKeys {
    fn drop(&mut self) {
        for k in &mut self.0 {
            // SAFETY: a plain store into our own array; volatile so it is not optimized away.
            unsafe { core::ptr::write_volatile(k, _mm_setzero_si128()) };
        }
    }
}

/// Whether this CPU has what the stitched code needs.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("sha")
        && std::arch::is_x86_feature_detected!("sse4.1")
        && std::arch::is_x86_feature_detected!("ssse3")
}

macro_rules! key_step {
    ($t1:ident, $t2:ident) => {{
        let t2 = _mm_shuffle_epi32($t2, 0xff);
        let mut t4 = _mm_slli_si128($t1, 4);
        $t1 = _mm_xor_si128($t1, t4);
        t4 = _mm_slli_si128(t4, 4);
        $t1 = _mm_xor_si128($t1, t4);
        t4 = _mm_slli_si128(t4, 4);
        $t1 = _mm_xor_si128($t1, t4);
        $t1 = _mm_xor_si128($t1, t2);
    }};
}

macro_rules! key_step2 {
    ($t1:ident, $t3:ident) => {{
        let t4 = _mm_aeskeygenassist_si128($t1, 0);
        let t2 = _mm_shuffle_epi32(t4, 0xaa);
        let mut t4 = _mm_slli_si128($t3, 4);
        $t3 = _mm_xor_si128($t3, t4);
        t4 = _mm_slli_si128(t4, 4);
        $t3 = _mm_xor_si128($t3, t4);
        t4 = _mm_slli_si128(t4, 4);
        $t3 = _mm_xor_si128($t3, t4);
        $t3 = _mm_xor_si128($t3, t2);
    }};
}

impl RoundKeys {
    /// Expands an AES-256 key (the Intel AES-NI white paper's schedule).
    ///
    /// # Safety
    /// [`available`] must be true.
    #[target_feature(enable = "aes,sse2")]
    pub unsafe fn new(key: &[u8; 32]) -> Self {
        let mut rk = [_mm_setzero_si128(); 15];
        let mut t1 = _mm_loadu_si128(key.as_ptr().cast());
        let mut t3 = _mm_loadu_si128(key.as_ptr().add(16).cast());
        rk[0] = t1;
        rk[1] = t3;
        macro_rules! pair {
            ($i:expr, $rcon:expr) => {{
                let t2 = _mm_aeskeygenassist_si128(t3, $rcon);
                key_step!(t1, t2);
                rk[$i] = t1;
                key_step2!(t1, t3);
                rk[$i + 1] = t3;
            }};
        }
        pair!(2, 0x01);
        pair!(4, 0x02);
        pair!(6, 0x04);
        pair!(8, 0x08);
        pair!(10, 0x10);
        pair!(12, 0x20);
        let t2 = _mm_aeskeygenassist_si128(t3, 0x40);
        key_step!(t1, t2);
        rk[14] = t1;
        Self(rk)
    }
}

/// AES-256 of one block.
#[inline(always)]
unsafe fn aes(rk: &[__m128i; 15], b: __m128i) -> __m128i {
    let mut x = _mm_xor_si128(b, rk[0]);
    x = _mm_aesenc_si128(x, rk[1]);
    x = _mm_aesenc_si128(x, rk[2]);
    x = _mm_aesenc_si128(x, rk[3]);
    x = _mm_aesenc_si128(x, rk[4]);
    x = _mm_aesenc_si128(x, rk[5]);
    x = _mm_aesenc_si128(x, rk[6]);
    x = _mm_aesenc_si128(x, rk[7]);
    x = _mm_aesenc_si128(x, rk[8]);
    x = _mm_aesenc_si128(x, rk[9]);
    x = _mm_aesenc_si128(x, rk[10]);
    x = _mm_aesenc_si128(x, rk[11]);
    x = _mm_aesenc_si128(x, rk[12]);
    x = _mm_aesenc_si128(x, rk[13]);
    _mm_aesenclast_si128(x, rk[14])
}

/// Encrypts one 16-byte block at `p` in place: CFB, `iv` is the previous ciphertext block.
#[inline(always)]
unsafe fn cfb_block(rk: &[__m128i; 15], iv: &mut __m128i, p: *mut u8) {
    let c = _mm_xor_si128(aes(rk, *iv), _mm_loadu_si128(p.cast()));
    _mm_storeu_si128(p.cast(), c);
    *iv = c;
}

macro_rules! sha1_rounds4 {
    ($h0:ident, $h1:ident, $wk:expr, $i:expr) => {
        _mm_sha1rnds4_epu32($h0, _mm_sha1nexte_epu32($h1, $wk), $i)
    };
}

macro_rules! sha1_schedule {
    ($v0:expr, $v1:expr, $v2:expr, $v3:expr) => {
        _mm_sha1msg2_epu32(_mm_xor_si128(_mm_sha1msg1_epu32($v0, $v1), $v2), $v3)
    };
}

macro_rules! sha1_sr4 {
    ($h0:ident, $h1:ident, $w0:expr, $w1:expr, $w2:expr, $w3:expr, $w4:expr, $i:expr) => {
        $w4 = sha1_schedule!($w0, $w1, $w2, $w3);
        $h1 = sha1_rounds4!($h0, $h1, $w4, $i);
    };
}

const SHA256_K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// Four SHA-256 rounds.
#[inline(always)]
unsafe fn sha256_rounds4(r: usize, abef: &mut __m128i, cdgh: &mut __m128i, w: __m128i) {
    let k = _mm_loadu_si128(SHA256_K.as_ptr().add(4 * r).cast());
    let t1 = _mm_add_epi32(w, k);
    *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, t1);
    let t2 = _mm_shuffle_epi32(t1, 0x0E);
    *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, t2);
}

/// The next message word group of SHA-256, then four rounds with it.
#[inline(always)]
unsafe fn sha256_sr4(r: usize, abef: &mut __m128i, cdgh: &mut __m128i, w: &mut [__m128i; 4]) {
    let i = r % 4;
    let t1 = _mm_sha256msg1_epu32(w[i], w[(i + 1) % 4]);
    let t2 = _mm_alignr_epi8(w[(i + 3) % 4], w[(i + 2) % 4], 4);
    w[i] = _mm_sha256msg2_epu32(_mm_add_epi32(t1, t2), w[(i + 3) % 4]);
    sha256_rounds4(r, abef, cdgh, w[i]);
}

/// SHA-1 state in the registers' order.
struct Sha1State {
    abcd: __m128i,
    e: __m128i,
}

/// SHA-256 state in the registers' order.
struct Sha256State {
    abef: __m128i,
    cdgh: __m128i,
}

impl Sha1State {
    #[target_feature(enable = "sse2,sse4.1")]
    unsafe fn load(state: &[u32; 5]) -> Self {
        let abcd = _mm_shuffle_epi32(_mm_loadu_si128(state.as_ptr().cast()), 0b00011011);
        Self {
            abcd,
            e: _mm_set_epi32(state[4] as i32, 0, 0, 0),
        }
    }
    #[target_feature(enable = "sse2,sse4.1")]
    unsafe fn store(&self, state: &mut [u32; 5]) {
        _mm_storeu_si128(state.as_mut_ptr().cast(), _mm_shuffle_epi32(self.abcd, 0b00011011));
        state[4] = _mm_extract_epi32(self.e, 3) as u32;
    }
}

impl Sha256State {
    #[target_feature(enable = "sse2,sse4.1,ssse3")]
    unsafe fn load(state: &[u32; 8]) -> Self {
        let dcba = _mm_loadu_si128(state.as_ptr().cast());
        let hgfe = _mm_loadu_si128(state.as_ptr().add(4).cast());
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(hgfe, 0x1B);
        Self {
            abef: _mm_alignr_epi8(cdab, efgh, 8),
            cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
        }
    }
    #[target_feature(enable = "sse2,sse4.1,ssse3")]
    unsafe fn store(&self, state: &mut [u32; 8]) {
        let feba = _mm_shuffle_epi32(self.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(self.cdgh, 0xB1);
        _mm_storeu_si128(state.as_mut_ptr().cast(), _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128(state.as_mut_ptr().add(4).cast(), _mm_alignr_epi8(dchg, feba, 8));
    }
}

/// For every 64-byte block of `plain`: SHA-1 of it into `s1`, then AES-256-CFB encryption in
/// place (`iv`: the previous ciphertext block); and, beside it, SHA-256 of the block of `other`
/// with the same index into `s2`. `plain` and `other` hold the same number of whole blocks.
///
/// # Safety
/// [`available`] must be true.
#[target_feature(enable = "aes,sha,sse2,ssse3,sse4.1")]
pub unsafe fn cfb_sha1_sha256(
    rk: &RoundKeys,
    iv: &mut [u8; 16],
    s1: &mut [u32; 5],
    plain: &mut [u8],
    s2: &mut [u32; 8],
    other: &[u8],
) {
    assert!(plain.len().is_multiple_of(64) && other.len() == plain.len());
    let rk = &rk.0;
    let mut v = _mm_loadu_si128(iv.as_ptr().cast());
    let mut h = Sha1State::load(s1);
    let mut g = Sha256State::load(s2);
    let mask1 = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0A0B_0C0D_0E0F);
    let mask2 = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
    let blocks = plain.len() / 64;
    let p0 = plain.as_mut_ptr();
    let o0 = other.as_ptr();
    for n in 0..blocks {
        let p = p0.add(64 * n);
        let o = o0.add(64 * n);
        // SHA-1 needs the plaintext before it is encrypted in place: load it first.
        let mut w0 = _mm_shuffle_epi8(_mm_loadu_si128(p.cast()), mask1);
        let mut w1 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(16).cast()), mask1);
        let mut w2 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(32).cast()), mask1);
        let mut w3 = _mm_shuffle_epi8(_mm_loadu_si128(p.add(48).cast()), mask1);
        let mut w4;
        let mut x: [__m128i; 4] =
            core::array::from_fn(|i| _mm_shuffle_epi8(_mm_loadu_si128(o.add(16 * i).cast()), mask2));
        let (abef0, cdgh0) = (g.abef, g.cdgh);
        let (abef, cdgh) = (&mut g.abef, &mut g.cdgh);
        let mut h0 = h.abcd;
        let mut h1 = _mm_add_epi32(h.e, w0);

        cfb_block(rk, &mut v, p);
        h1 = _mm_sha1rnds4_epu32(h0, h1, 0);
        h0 = sha1_rounds4!(h1, h0, w1, 0);
        sha256_rounds4(0, abef, cdgh, x[0]);
        h1 = sha1_rounds4!(h0, h1, w2, 0);
        h0 = sha1_rounds4!(h1, h0, w3, 0);
        sha256_rounds4(1, abef, cdgh, x[1]);
        sha1_sr4!(h0, h1, w0, w1, w2, w3, w4, 0);
        sha1_sr4!(h1, h0, w1, w2, w3, w4, w0, 1);
        sha256_rounds4(2, abef, cdgh, x[2]);
        sha256_rounds4(3, abef, cdgh, x[3]);

        cfb_block(rk, &mut v, p.add(16));
        sha1_sr4!(h0, h1, w2, w3, w4, w0, w1, 1);
        sha1_sr4!(h1, h0, w3, w4, w0, w1, w2, 1);
        sha256_sr4(4, abef, cdgh, &mut x);
        sha1_sr4!(h0, h1, w4, w0, w1, w2, w3, 1);
        sha1_sr4!(h1, h0, w0, w1, w2, w3, w4, 1);
        sha256_sr4(5, abef, cdgh, &mut x);
        sha1_sr4!(h0, h1, w1, w2, w3, w4, w0, 2);
        sha256_sr4(6, abef, cdgh, &mut x);
        sha256_sr4(7, abef, cdgh, &mut x);

        cfb_block(rk, &mut v, p.add(32));
        sha1_sr4!(h1, h0, w2, w3, w4, w0, w1, 2);
        sha1_sr4!(h0, h1, w3, w4, w0, w1, w2, 2);
        sha256_sr4(8, abef, cdgh, &mut x);
        sha1_sr4!(h1, h0, w4, w0, w1, w2, w3, 2);
        sha1_sr4!(h0, h1, w0, w1, w2, w3, w4, 2);
        sha256_sr4(9, abef, cdgh, &mut x);
        sha1_sr4!(h1, h0, w1, w2, w3, w4, w0, 3);
        sha256_sr4(10, abef, cdgh, &mut x);
        sha256_sr4(11, abef, cdgh, &mut x);

        cfb_block(rk, &mut v, p.add(48));
        sha1_sr4!(h0, h1, w2, w3, w4, w0, w1, 3);
        sha1_sr4!(h1, h0, w3, w4, w0, w1, w2, 3);
        sha256_sr4(12, abef, cdgh, &mut x);
        sha1_sr4!(h0, h1, w4, w0, w1, w2, w3, 3);
        sha1_sr4!(h1, h0, w0, w1, w2, w3, w4, 3);
        sha256_sr4(13, abef, cdgh, &mut x);
        sha256_sr4(14, abef, cdgh, &mut x);
        sha256_sr4(15, abef, cdgh, &mut x);

        h.abcd = _mm_add_epi32(h.abcd, h0);
        h.e = _mm_sha1nexte_epu32(h1, h.e);
        g.abef = _mm_add_epi32(g.abef, abef0);
        g.cdgh = _mm_add_epi32(g.cdgh, cdgh0);
    }
    _mm_storeu_si128(iv.as_mut_ptr().cast(), v);
    h.store(s1);
    g.store(s2);
}
