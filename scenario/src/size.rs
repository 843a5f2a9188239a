//! Sizes as scenario files and `nexus-hil run --card-content` write them (`32MiB`, `256MiB`,
//! `1GiB`, `512KiB`, or plain bytes): parsing, showing, and the serde function that turns one
//! into bytes while the file loads.

use serde::{de::Error, Deserialize, Deserializer};

const UNITS: [(&str, u64); 4] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40)];

/// Parses `32MiB`, `256 MiB`, `1GiB`, `512KiB` or plain bytes (`33554432`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let hint = "write e.g. 32MiB, 256MiB, 1GiB or a number of bytes";
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a size; {hint}"))?;
    let unit = unit.trim_start();
    let per = match unit {
        "" | "B" => 1,
        _ => match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, per)) => *per,
            None => {
                return Err(format!(
                    "{s:?}: unknown unit {unit:?} (binary units only: KiB, MiB, GiB, TiB); {hint}"
                ))
            }
        },
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("{s:?} is larger than any card; {hint}"))
}

/// `bytes` as people read it: `32 MiB`, `1 GiB`, `1.5 MiB`, `100 bytes`.
pub fn show_size(bytes: u64) -> String {
    match UNITS.iter().rev().find(|(_, per)| bytes >= *per) {
        Some((name, per)) if bytes.is_multiple_of(*per) => format!("{} {name}", bytes / per),
        Some((name, per)) => format!("{:.1} {name}", bytes as f64 / *per as f64),
        None => format!("{bytes} bytes"),
    }
}

/// `#[serde(default, deserialize_with)]` for a size the file may leave out.
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.as_deref().map(parse_size).transpose().map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_and_plain_bytes() {
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size(" 256 MiB "), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("268435456"), Ok(256 << 20));
        assert_eq!(parse_size("100B"), Ok(100));
    }

    #[test]
    fn each_mistake_has_its_message() {
        let e = parse_size("big").unwrap_err();
        assert!(e.starts_with("\"big\" is not a size; write e.g. 32MiB"), "{e}");
        let e = parse_size("32MB").unwrap_err();
        assert!(
            e.contains("unknown unit \"MB\"") && e.contains("binary units only"),
            "{e}"
        );
        let e = parse_size("-1MiB").unwrap_err();
        assert!(e.contains("is not a size"), "{e}");
        let e = parse_size("99999999999TiB").unwrap_err();
        assert!(e.contains("larger than any card"), "{e}");
    }

    #[test]
    fn shows_the_largest_whole_unit() {
        assert_eq!(show_size(32 << 20), "32 MiB");
        assert_eq!(show_size(1 << 30), "1 GiB");
        assert_eq!(show_size(3 << 19), "1.5 MiB");
        assert_eq!(show_size(100), "100 bytes");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Card {
        #[serde(default, deserialize_with = "optional")]
        card_content: Option<u64>,
    }

    #[test]
    fn read_from_yaml_as_text_or_number() {
        let c: Card = marked_yaml::from_yaml(0, "card_content: 256MiB\n").unwrap();
        assert_eq!(c.card_content, Some(256 << 20));
        let c: Card = marked_yaml::from_yaml(0, "card_content: 33554432\n").unwrap();
        assert_eq!(c.card_content, Some(32 << 20));
        let c: Card = marked_yaml::from_yaml(0, "{}\n").unwrap();
        assert_eq!(c.card_content, None);
        let e = marked_yaml::from_yaml::<Card>(0, "card_content: lots\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("card_content") && e.contains("is not a size"), "{e}");
    }
}
