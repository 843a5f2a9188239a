//! Variables in step texts: the `${name}` references a text makes, and the variables the
//! loader itself defines.

/// The variable that holds the round inside `repeat`.
pub const ITERATION: &str = "iteration";

/// The variable that holds the try's seed (`nexus-hil run --seed`; each repetition and retry
/// has its own, derived from it): known in every step, and no scenario's own.
pub const SEED: &str = "seed";

/// The `${name}` references in a text; `$${` is a literal `${` (for shell variables).
pub fn references(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            rest = &rest[i + 2..];
            continue;
        }
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_skip_escaped_and_unclosed() {
        assert_eq!(references("echo ${id} $${HOME} ${a}${b}"), ["id", "a", "b"]);
        assert_eq!(references("${open"), Vec::<&str>::new());
    }
}
