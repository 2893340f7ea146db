//! The deserialisers of `.kiln.yml`'s values that are more than one YAML type or that keep
//! places inside them: maps with their keys' places, one-or-many strings, images, counts,
//! durations and retries.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use crate::platform::Platform;
use crate::spec::DEFAULT_RETRIES;
use crate::spec::model::{Commands, Patterns};

/// serde-saphyr places the type errors of a `deserialize_any` visitor at the field's key, but
/// its custom errors at the value; these visitor methods refuse the other types of YAML node
/// with the same words as serde, as custom errors, so that the value is blamed.
macro_rules! refuse_other_types {
    ($($kind:ident),*) => { $(refuse_other_types!(@ $kind);)* };
    (@ bool) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(wrong_type(de::Unexpected::Bool(v), &self))
        }
    };
    (@ numbers) => {
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(wrong_type(de::Unexpected::Signed(v), &self))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(wrong_type(de::Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(wrong_type(de::Unexpected::Float(v), &self))
        }
    };
    (@ float) => {
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(wrong_type(de::Unexpected::Float(v), &self))
        }
    };
    (@ unit) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(wrong_type(de::Unexpected::Unit, &self))
        }
    };
    (@ seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(wrong_type(de::Unexpected::Seq, &self))
        }
    };
}

/// Serde's invalid-type error, as a custom one (see [`refuse_other_types`]).
fn wrong_type<E: de::Error>(found: de::Unexpected, expected: &dyn de::Expected) -> E {
    match found {
        de::Unexpected::Unit => E::custom(format_args!("nothing here, expected {expected}")),
        found => E::custom(format_args!("invalid type: {found}, expected {expected}")),
    }
}

/// A map whose keys keep their places (`env`, `services`, `images`, `steps`), in the order
/// written. A key written twice is refused by serde-saphyr itself.
pub(in crate::spec) struct Entries<V>(pub Vec<(Spanned<String>, Spanned<V>)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// One string or a list of them (`run`, `command`, `branch`, `changes`), each with its place;
/// a lone string's place is the field's. `T` (the public type) names what the strings are in
/// the error for anything else.
pub(in crate::spec) struct Strings<T> {
    /// Where the field's value starts.
    pub at: Location,
    pub items: Vec<Spanned<String>>,
    what: PhantomData<T>,
}

/// What a [`Strings`] holds, for the error when it holds something else.
pub(in crate::spec) trait Words {
    const EXPECTING: &'static str;
}

impl Words for Commands {
    const EXPECTING: &'static str = "a command or a list of commands";
}

impl Words for Patterns {
    const EXPECTING: &'static str = "a pattern or a list of patterns";
}

impl<T> Strings<T> {
    pub(super) fn values(&self) -> Vec<String> {
        self.items.iter().map(|s| s.value.clone()).collect()
    }
}

impl<'de, T: Words> Deserialize<'de> for Strings<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Spanned {
            value: OneOrMany(mut items, _),
            referenced,
            ..
        } = Spanned::<OneOrMany<T>>::deserialize(deserializer)?;
        for item in &mut items {
            if item.referenced == Location::UNKNOWN {
                item.referenced = referenced;
            }
        }
        Ok(Self {
            at: referenced,
            items,
            what: PhantomData,
        })
    }
}

/// [`Strings`] before a lone string gets the field's place.
struct OneOrMany<T>(Vec<Spanned<String>>, PhantomData<T>);

impl<'de, T: Words> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor<T>(PhantomData<T>);

        impl<'de, T: Words> Visitor<'de> for OneOrManyVisitor<T> {
            type Value = OneOrMany<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }

            refuse_other_types!(bool, numbers, unit);

            fn visit_str<E: de::Error>(self, item: &str) -> Result<OneOrMany<T>, E> {
                let unknown = Location::UNKNOWN;
                let item = Spanned::new(item.to_owned(), unknown, unknown);
                Ok(OneOrMany(vec![item], PhantomData))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany(items, PhantomData))
            }
        }

        deserializer.deserialize_any(OneOrManyVisitor(PhantomData))
    }
}

/// `image: name` or `image: { platform: name }`, each name with its place.
pub(in crate::spec) enum RawImage {
    Any(String),
    PerPlatform(Vec<(Spanned<Platform>, Spanned<String>)>),
}

impl<'de> Deserialize<'de> for RawImage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameOrMap;

        impl<'de> Visitor<'de> for NameOrMap {
            type Value = RawImage;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image name or a map of platform to image name")
            }

            refuse_other_types!(bool, numbers, unit, seq);

            fn visit_str<E: de::Error>(self, name: &str) -> Result<RawImage, E> {
                Ok(RawImage::Any(name.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawImage, A::Error> {
                let mut names = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    names.push(entry);
                }
                Ok(RawImage::PerPlatform(names))
            }
        }

        deserializer.deserialize_any(NameOrMap)
    }
}

/// A whole number of any sign (`shards`, `retry`), so that the checks can say what range is
/// allowed rather than serde saying `invalid u32`.
#[derive(Clone, Copy)]
pub(in crate::spec) struct Whole(pub i64);

impl<'de> Deserialize<'de> for Whole {
    /// Read as text and parsed here, so that a word where a number belongs is blamed at the
    /// word: serde-saphyr places the type errors of `deserialize_any` at the key.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        whole(&text).map_err(de::Error::custom)
    }
}

/// `text` as a whole number, or why not.
fn whole(text: &str) -> Result<Whole, String> {
    text.trim()
        .parse()
        .map(Whole)
        .map_err(|_| format!("`{text}` is not a whole number"))
}

/// A `timeout` such as `90s` or `10m`; how long it may be is a check's business.
pub(in crate::spec) struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Timeout).map_err(|e| {
            de::Error::custom(format!(
                "timeout: `{text}` is not a duration such as 90s or 10m ({e})"
            ))
        })
    }
}

/// `retry: 1` or `retry: { max: 1, exit_codes: [137] }`.
pub(in crate::spec) enum RawRetry {
    Count(Whole),
    Fields(RetryFields),
}

/// `retry`'s long form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::spec) struct RetryFields {
    #[serde(default)]
    pub max: Option<Spanned<Whole>>,
    #[serde(default)]
    pub exit_codes: Vec<Whole>,
}

impl<'de> Deserialize<'de> for RawRetry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountOrFields;

        impl<'de> Visitor<'de> for CountOrFields {
            type Value = RawRetry;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of retries or `{ max, exit_codes }`")
            }

            refuse_other_types!(bool, float, unit, seq);

            fn visit_u64<E: de::Error>(self, max: u64) -> Result<RawRetry, E> {
                Ok(RawRetry::Count(Whole::from(max)))
            }

            fn visit_i64<E: de::Error>(self, max: i64) -> Result<RawRetry, E> {
                Ok(RawRetry::Count(Whole(max)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<RawRetry, E> {
                whole(text).map(RawRetry::Count).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRetry, A::Error> {
                let fields = RetryFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRetry::Fields(fields))
            }
        }

        deserializer.deserialize_any(CountOrFields)
    }
}

/// A count too large for `i64` is out of every range, so it saturates.
impl From<u64> for Whole {
    fn from(n: u64) -> Self {
        Self(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl RawRetry {
    /// The number of retries asked for, with the place to blame when it is out of range.
    pub fn max(this: &Spanned<Self>) -> (i64, Location) {
        match &this.value {
            Self::Count(Whole(n)) => (*n, this.referenced),
            Self::Fields(RetryFields { max: Some(max), .. }) => (max.value.0, max.referenced),
            Self::Fields(RetryFields { max: None, .. }) => {
                (i64::from(DEFAULT_RETRIES), this.referenced)
            }
        }
    }
}
