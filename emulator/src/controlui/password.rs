//! The backup password the UI makes for each Start backup: random from the OS, shown once, kept
//! only in memory that is wiped when it is dropped.

use base64::Engine;
use zeroize::Zeroizing;

/// Random bytes in a password: 192 bits, 32 characters of base64url.
pub const PASSWORD_BYTES: usize = 24;

/// A new backup password from the OS's random number generator.
pub fn backup_password() -> std::io::Result<Zeroizing<String>> {
    let mut raw = Zeroizing::new([0u8; PASSWORD_BYTES]);
    getrandom::fill(&mut raw[..]).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn passwords_are_long_url_safe_and_never_repeat() {
        let mut seen = HashSet::new();
        let mut chars = HashSet::new();
        for _ in 0..200 {
            let p = backup_password().unwrap();
            assert_eq!(p.len(), 32, "{}", p.len());
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            chars.extend(p.chars());
            assert!(seen.insert(p.to_string()), "a password came twice");
        }
        // 6400 characters drawn from 64: all but a few of the alphabet show up.
        assert!(chars.len() >= 60, "only {} distinct characters", chars.len());
    }
}
