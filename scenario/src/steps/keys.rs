//! The keys a step's struct takes, read from its `Deserialize` impl: serde hands a struct's
//! field names (as written in files, renames applied) to the deserializer it is read from, and
//! this one keeps them and stops there. `nexus-hil steps` prints them, and a test holds the step
//! reference of `scenarios/README.md` to them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The names serde gives for `T`'s fields.
pub(super) fn of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut keys = None;
    let _ = T::deserialize(Keys(&mut keys));
    keys.unwrap_or(&[])
}

struct Keys<'k>(&'k mut Option<&'static [&'static str]>);

/// Ends the read once the field names are known.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("only the field names were asked for")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for Keys<'_> {
    type Error = Stop;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = Some(fields);
        Err(Stop)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GpgDecrypt, Step};

    #[test]
    fn a_struct_s_keys_are_its_fields_as_written_in_files() {
        assert_eq!(
            super::of::<GpgDecrypt>(),
            ["file", "password", "output", "expect_failure", "timeout"]
        );
        // A rename is read as the file's name (`for`, not the field's `duration`).
        assert!(Step::keys("fault.cut_network").unwrap().contains(&"for"));
        assert_eq!(Step::keys("no.such_step"), None);
    }

    #[test]
    fn every_step_has_keys() {
        for name in Step::NAMES {
            let keys = Step::keys(name).unwrap();
            assert!(keys.contains(&"timeout"), "{name}: {keys:?}");
        }
    }
}
