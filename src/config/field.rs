//! How one value of a raw struct is read: a scalar ([`Leaf`]) or a list
//! of them through one shared set of serde seeds, everything else
//! (sections, lists of sections) through its own `Deserialize`.
//!
//! serde_yaml's deserializer is generic over the visitor: each type read
//! with a visitor of its own costs the router binary a copy of
//! `deserialize_option`, `deserialize_str` or `deserialize_any` and their
//! helpers, about 1.5 KB on MIPS per type. The seeds here are four types
//! in all; a leaf type adds only its parse function, called through a
//! `dyn FnMut`. The parse still runs inside the value's deserialization,
//! so its error carries serde_yaml's key path and line as before.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

/// A scalar as the YAML has it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scalar<'a> {
    Text(&'a str),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    /// A list of lists: the start of the next inner list.
    Open,
}

impl Scalar<'_> {
    /// serde's words for it, as in "invalid type: string \"x\"".
    fn unexpected(&self) -> Unexpected<'_> {
        match *self {
            Scalar::Text(s) => Unexpected::Str(s),
            Scalar::Unsigned(v) => Unexpected::Unsigned(v),
            Scalar::Signed(v) => Unexpected::Signed(v),
            Scalar::Float(v) => Unexpected::Float(v),
            Scalar::Bool(v) => Unexpected::Bool(v),
            Scalar::Open => Unexpected::Seq,
        }
    }

    /// The error for a scalar of the wrong kind: `invalid type: string
    /// "lots", expected a whole number from 0 to 4294967295`.
    pub(super) fn wrong(&self, expected: &str) -> String {
        format!("invalid type: {}, expected {expected}", self.unexpected())
    }

    /// Text, or a whole number as its digits (list entries such as ports
    /// and status codes); anything else is `wrong`.
    pub(super) fn text_or_number(self, expected: &str) -> Result<String, String> {
        match self {
            Scalar::Text(s) => Ok(s.to_owned()),
            Scalar::Unsigned(v) => Ok(v.to_string()),
            Scalar::Signed(v) => Ok(v.to_string()),
            other => Err(other.wrong(expected)),
        }
    }
}

/// A value read from one scalar.
pub(super) trait Leaf: Sized {
    /// `true`: the scalar as written, whatever it looks like (a password
    /// `0123` stays `0123`); `false`: typed (numbers, booleans).
    const TEXT: bool;
    /// What the value should be, in words, for serde's type errors.
    const EXPECTING: &'static str;
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String>;
}

/// A raw struct's field type: how to read its value from the map.
pub(super) trait Field: Sized {
    /// The value of the key just read; `None` for `null` or nothing.
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Self>, A::Error>;
}

impl<T: Leaf> Field for T {
    #[inline(never)]
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
        let mut out = None;
        let mut put = |s: Scalar<'_>| T::from_scalar(s).map(|v| out = Some(v));
        map.next_value_seed(Slot {
            shape: Shape::One,
            text: T::TEXT,
            expecting: T::EXPECTING,
            put: &mut put,
        })?;
        Ok(out)
    }
}

impl<T: Leaf> Field for Vec<T> {
    #[inline(never)]
    fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Vec<T>>, A::Error> {
        let mut items = Vec::new();
        let mut put = |s: Scalar<'_>| T::from_scalar(s).map(|v| items.push(v));
        let seen = map.next_value_seed(Slot {
            shape: Shape::List,
            text: T::TEXT,
            expecting: T::EXPECTING,
            put: &mut put,
        })?;
        Ok(seen.then_some(items))
    }
}

/// Reads `Strings`-like fields: one scalar or a list of them, each as text.
#[inline(never)]
pub(super) fn one_or_many<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Vec<String>>, A::Error> {
    const EXPECTING: &str = "a value or a list of values";
    let mut items = Vec::new();
    let mut put = |s: Scalar<'_>| s.text_or_number(EXPECTING).map(|v| items.push(v));
    let seen = map.next_value_seed(Slot {
        shape: Shape::OneOrList,
        text: false,
        expecting: EXPECTING,
        put: &mut put,
    })?;
    Ok(seen.then_some(items))
}

/// Reads a list of lists of names (a group's `tiers:`); an entry that is
/// one name is a list of one.
#[inline(never)]
pub(super) fn lists<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Vec<Vec<String>>>, A::Error> {
    const EXPECTING: &str = "a list of lists of names";
    let mut lists: Vec<Vec<String>> = Vec::new();
    let mut put = |s: Scalar<'_>| match (s, lists.last_mut()) {
        (Scalar::Open, _) => Ok(lists.push(Vec::new())),
        (s, Some(last)) => s.text_or_number(EXPECTING).map(|v| last.push(v)),
        (s, None) => Err(s.wrong(EXPECTING)),
    };
    let seen =
        map.next_value_seed(Slot { shape: Shape::Nested, text: false, expecting: EXPECTING, put: &mut put })?;
    Ok(seen.then_some(lists))
}

/// Fields read with their own `Deserialize` (sections and lists of them).
macro_rules! nested {
    ($($ty:ty),* $(,)?) => {
        $(impl Field for $ty {
            fn read<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Self>, A::Error> {
                map.next_value()
            }
        })*
    };
}
pub(super) use nested;

/// A `Leaf` read with `FromStr` from the text as written.
macro_rules! leaf_from_str {
    ($($ty:ty => $expecting:literal),* $(,)?) => {
        $(impl $crate::config::field::Leaf for $ty {
            const TEXT: bool = true;
            const EXPECTING: &'static str = $expecting;
            fn from_scalar(s: $crate::config::field::Scalar<'_>) -> Result<Self, String> {
                match s {
                    $crate::config::field::Scalar::Text(t) => t.parse().map_err(|e| format!("{e}")),
                    other => Err(other.wrong($expecting)),
                }
            }
        })*
    };
}
pub(super) use leaf_from_str;

/// An enum read by name: the index in `names` of the one `s` is (the
/// first `shown` names are the ones an error lists, the rest aliases).
/// Not generic, so each enum costs only its table.
pub(super) fn by_name(s: Scalar<'_>, names: &[&str], shown: usize) -> Result<usize, String> {
    let text = match s {
        Scalar::Text(t) => t,
        other => return Err(other.wrong("a name")),
    };
    if let Some(i) = names.iter().position(|n| *n == text) {
        return Ok(i);
    }
    let listed: Vec<String> = names[..shown].iter().map(|n| format!("`{n}`")).collect();
    let expected = match listed.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    };
    Err(format!("unknown variant `{text}`, expected {expected}"))
}

impl Leaf for String {
    const TEXT: bool = true;
    const EXPECTING: &'static str = "a string";
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String> {
        match s {
            Scalar::Text(t) => Ok(t.to_owned()),
            other => Err(other.wrong(Self::EXPECTING)),
        }
    }
}

impl Leaf for u32 {
    const TEXT: bool = false;
    const EXPECTING: &'static str = "a whole number from 0 to 4294967295";
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String> {
        match s {
            Scalar::Unsigned(v) => u32::try_from(v).map_err(|_| too_large(s)),
            Scalar::Signed(_) => Err(too_large(s)),
            other => Err(other.wrong(Self::EXPECTING)),
        }
    }
}

fn too_large(s: Scalar<'_>) -> String {
    format!("invalid value: {}, expected {}", s.unexpected(), u32::EXPECTING)
}

impl Leaf for bool {
    const TEXT: bool = false;
    const EXPECTING: &'static str = "true or false";
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String> {
        match s {
            Scalar::Bool(v) => Ok(v),
            other => Err(other.wrong(Self::EXPECTING)),
        }
    }
}

impl Leaf for std::net::IpAddr {
    const TEXT: bool = true;
    const EXPECTING: &'static str = "an IP address";
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String> {
        match s {
            Scalar::Text(t) => t.parse().map_err(|_| format!("invalid IP address {t:?}")),
            other => Err(other.wrong(Self::EXPECTING)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    One,
    List,
    OneOrList,
    /// A list whose entries are lists (or one scalar each).
    Nested,
}

/// The seed for one field's value: `null` reads as absent (`false`).
struct Slot<'a> {
    shape: Shape,
    text: bool,
    expecting: &'static str,
    put: &'a mut dyn FnMut(Scalar<'_>) -> Result<(), String>,
}

impl<'de> DeserializeSeed<'de> for Slot<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Slot<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let Slot { shape, text, expecting, put } = self;
        match shape {
            Shape::One => Elem { nest: false, text, expecting, put }.deserialize(d)?,
            _ => d.deserialize_any(List { shape, text, expecting, put })?,
        }
        Ok(true)
    }
}

/// One scalar: a field's value or a list's entry; with `nest`, a list
/// of them (after an `Open`) or one.
struct Elem<'a> {
    nest: bool,
    text: bool,
    expecting: &'static str,
    put: &'a mut dyn FnMut(Scalar<'_>) -> Result<(), String>,
}

impl<'de> DeserializeSeed<'de> for Elem<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.text && !self.nest {
            d.deserialize_str(self)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl Elem<'_> {
    fn scalar<E: de::Error>(self, s: Scalar<'_>) -> Result<(), E> {
        if self.nest {
            (self.put)(Scalar::Open).map_err(E::custom)?;
        }
        (self.put)(s).map_err(E::custom)
    }
}

impl<'de> Visitor<'de> for Elem<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Text(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::Unsigned(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Signed(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        if !self.nest {
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        let Elem { text, expecting, put, .. } = self;
        put(Scalar::Open).map_err(de::Error::custom)?;
        while seq.next_element_seed(Elem { nest: false, text, expecting, put: &mut *put })?.is_some() {}
        Ok(())
    }
}

/// A list of scalars, or (`OneOrList`) a single scalar as a list of
/// one, or (`Nested`) a list of lists.
struct List<'a> {
    shape: Shape,
    text: bool,
    expecting: &'static str,
    put: &'a mut dyn FnMut(Scalar<'_>) -> Result<(), String>,
}

impl List<'_> {
    fn scalar<E: de::Error>(self, s: Scalar<'_>) -> Result<(), E> {
        if self.shape == Shape::OneOrList {
            (self.put)(s).map_err(E::custom)
        } else {
            Err(E::invalid_type(s.unexpected(), &self))
        }
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of {}", self.expecting)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let List { shape, text, expecting, put } = self;
        let nest = shape == Shape::Nested;
        while seq.next_element_seed(Elem { nest, text, expecting, put: &mut *put })?.is_some() {}
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Text(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::Unsigned(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Signed(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }
}
