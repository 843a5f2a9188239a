//! Durations as scenario files write them (`500ms`, `30s`, `2m`, `1h`): parsing, and the serde
//! functions that turn them into `Duration` while the file loads.

use std::time::Duration;

use serde::{de::Error, Deserialize, Deserializer};

/// Parses `30s`, `2m`, `500ms`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 30s, 2m, 500ms"))?;
    let secs_per = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?} has no unit; write e.g. 30s, 2m, 500ms")),
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is longer than any run can be; write e.g. 30s, 2m, 500ms"))
}

/// `#[serde(deserialize_with)]` for a duration the file must give.
pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(D::Error::custom)
}

/// `#[serde(default, deserialize_with)]` for a duration the file may leave out.
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::value::{Error as ValueError, StrDeserializer};

    fn de(text: &str) -> Result<Duration, String> {
        required(StrDeserializer::<ValueError>::new(text)).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_every_unit() {
        assert_eq!(de("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(de("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(de("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(de(" 1h "), Ok(Duration::from_secs(3600)));
        assert_eq!(de("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn each_mistake_has_its_message() {
        assert_eq!(
            de("soon"),
            Err("\"soon\" is not a duration; write e.g. 30s, 2m, 500ms".into())
        );
        assert_eq!(de(""), Err("\"\" is not a duration; write e.g. 30s, 2m, 500ms".into()));
        assert_eq!(
            de("-1s"),
            Err("\"-1s\" is not a duration; write e.g. 30s, 2m, 500ms".into())
        );
        assert_eq!(de("30"), Err("\"30\" has no unit; write e.g. 30s, 2m, 500ms".into()));
        assert_eq!(de("3d"), Err("\"3d\" has no unit; write e.g. 30s, 2m, 500ms".into()));
        assert_eq!(
            de("99999999999999999h"),
            Err("\"99999999999999999h\" is longer than any run can be; write e.g. 30s, 2m, 500ms".into())
        );
        assert!(de("99999999999999999999s").unwrap_err().contains("is not a duration"));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Both {
        #[serde(deserialize_with = "required")]
        must: Duration,
        #[serde(default, deserialize_with = "optional")]
        may: Option<Duration>,
    }

    #[test]
    fn fields_read_from_yaml() {
        let b: Both = marked_yaml::from_yaml(0, "must: 2m\nmay: 10ms\n").unwrap();
        assert_eq!(
            (b.must, b.may),
            (Duration::from_secs(120), Some(Duration::from_millis(10)))
        );
        let b: Both = marked_yaml::from_yaml(0, "must: 1s\n").unwrap();
        assert_eq!(b.may, None);
        // YAML numbers are texts here too, so a missing unit is named as such.
        let e = marked_yaml::from_yaml::<Both>(0, "must: 30\n").unwrap_err().to_string();
        assert!(e.contains("must") && e.contains("has no unit"), "{e}");
        let e = marked_yaml::from_yaml::<Both>(0, "must: 1s\nmay: [1s]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("may"), "{e}");
        let e = marked_yaml::from_yaml::<Both>(0, "may: 1s\n").unwrap_err().to_string();
        assert!(e.contains("missing field `must`"), "{e}");
    }
}
