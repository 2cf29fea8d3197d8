//! How the raw structs read the YAML: through one object-safe pair of
//! traits, [`Want`] (what a reader takes from a value) and [`Values`]
//! (one value to read), and one serde seed between them and serde_yaml.
//!
//! serde_yaml's deserializer is generic over the visitor: each type read
//! with a visitor of its own costs the router binary a copy of
//! `deserialize_map`, `deserialize_option`, `deserialize_any` and their
//! helpers, 1–6 KB on MIPS per type. Here serde_yaml sees one seed type
//! ([`Adapter`]) and one map and one sequence access, so it is
//! instantiated once; a section adds its key match, a leaf type its parse
//! function. The parse still runs while serde_yaml reads the value, so
//! an error carries serde_yaml's key path and line as a derive's would.

use std::fmt;
use std::net::SocketAddr;

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

/// Stops a read. The error itself waits in the [`Values`] that raised it,
/// typed as serde_yaml's, so it keeps its place in the file.
#[derive(Debug)]
pub(super) struct Stop;

/// One value to read: a map entry's value or a list's next element.
pub(super) trait Values {
    /// Reads the value as `want` takes it. `false`: a map entry's value
    /// is null (absent), or a list has no more elements.
    fn read(&mut self, want: &mut dyn Want) -> Result<bool, Stop>;
    /// An error about the map that holds this entry (an unknown key, a
    /// key set twice).
    fn fail(&mut self, message: String) -> Stop;
}

/// What a value may be.
pub(super) const SCALAR: u8 = 1;
pub(super) const MAP: u8 = 2;
pub(super) const SEQ: u8 = 4;

/// What a reader takes from one value.
pub(super) trait Want {
    /// `SCALAR`, `MAP` and `SEQ` as it accepts them; anything else is a
    /// type error naming [`Want::expecting`].
    fn accepts(&self) -> u8;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result;
    /// Read a scalar as written (`0123` stays `0123`, `yes` stays `yes`)
    /// rather than typed.
    fn text(&self) -> bool {
        false
    }
    fn scalar(&mut self, _s: Scalar<'_>) -> Result<(), String> {
        Ok(())
    }
    /// One key of a map and its value, which it must read (or fail).
    fn entry(&mut self, _key: &str, _value: &mut dyn Values) -> Result<(), Stop> {
        Ok(())
    }
    /// After a map's last entry.
    fn end(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// One element of a list, which it must read.
    fn item(&mut self, _value: &mut dyn Values) -> Result<(), Stop> {
        Ok(())
    }
}

/// A value read from one scalar.
pub(super) trait Leaf: Sized {
    /// `true`: the scalar as written, whatever it looks like (a password
    /// `0123` stays `0123`); `false`: typed (numbers, booleans).
    const TEXT: bool;
    /// What the value should be, in words, for type errors.
    const EXPECTING: &'static str;
    fn from_scalar(s: Scalar<'_>) -> Result<Self, String>;
}

/// A raw struct's field type: how to read its value.
pub(super) trait Field: Sized {
    /// The value; `None` for `null` or nothing.
    fn read(value: &mut dyn Values) -> Result<Option<Self>, Stop>;
}

impl<T: Leaf> Field for T {
    #[inline(never)]
    fn read(value: &mut dyn Values) -> Result<Option<T>, Stop> {
        let mut out = None;
        let mut put = |s: Scalar<'_>| T::from_scalar(s).map(|v| out = Some(v));
        value.read(&mut Scalars {
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
    fn read(value: &mut dyn Values) -> Result<Option<Vec<T>>, Stop> {
        let mut items = Vec::new();
        let mut put = |s: Scalar<'_>| T::from_scalar(s).map(|v| items.push(v));
        let seen = value.read(&mut Scalars {
            shape: Shape::List,
            text: T::TEXT,
            expecting: T::EXPECTING,
            put: &mut put,
        })?;
        Ok(seen.then_some(items))
    }
}

/// Reads one scalar or a list of them, each as text (numbers as digits).
pub(super) fn one_or_many(value: &mut dyn Values) -> Result<Option<Vec<String>>, Stop> {
    const EXPECTING: &str = "a value or a list of values";
    let mut items = Vec::new();
    let mut put = |s: Scalar<'_>| s.text_or_number(EXPECTING).map(|v| items.push(v));
    let seen = value.read(&mut Scalars {
        shape: Shape::OneOrList,
        text: false,
        expecting: EXPECTING,
        put: &mut put,
    })?;
    Ok(seen.then_some(items))
}

/// Reads a list of lists of names (a group's `tiers:`); an entry that is
/// one name is a list of one.
pub(super) fn lists(value: &mut dyn Values) -> Result<Option<Vec<Vec<String>>>, Stop> {
    const EXPECTING: &str = "a list of lists of names";
    let mut lists: Vec<Vec<String>> = Vec::new();
    let mut put = |s: Scalar<'_>| match (s, lists.last_mut()) {
        (Scalar::Open, _) => {
            lists.push(Vec::new());
            Ok(())
        }
        (s, Some(last)) => s.text_or_number(EXPECTING).map(|v| last.push(v)),
        (s, None) => Err(s.wrong(EXPECTING)),
    };
    let seen = value.read(&mut Scalars {
        shape: Shape::Nested,
        text: false,
        expecting: EXPECTING,
        put: &mut put,
    })?;
    Ok(seen.then_some(lists))
}

/// A section (a raw struct) as a field.
pub(super) fn section<T: Want + Default>(value: &mut dyn Values) -> Result<Option<T>, Stop> {
    let mut out = T::default();
    Ok(value.read(&mut out)?.then_some(out))
}

/// A list of sections as a field; a null element is an empty section
/// (which validation then finds lacking).
pub(super) fn sections<T: Want + Default>(value: &mut dyn Values) -> Result<Option<Vec<T>>, Stop> {
    struct Items<'a, T>(&'a mut Vec<T>);
    impl<T: Want + Default> Want for Items<'_, T> {
        fn accepts(&self) -> u8 {
            SEQ
        }
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of maps")
        }
        fn item(&mut self, value: &mut dyn Values) -> Result<(), Stop> {
            let mut t = T::default();
            if value.read(&mut t)? {
                self.0.push(t);
            }
            Ok(())
        }
    }
    let mut items = Vec::new();
    Ok(value.read(&mut Items(&mut items))?.then_some(items))
}

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

/// serde's list of names in an error: "`a`", "`a` or `b`", "one of `a`,
/// `b`, `c`".
pub(super) fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}` or `{b}`"),
        all => format!("one of `{}`", all.join("`, `")),
    }
}

/// An enum read by name: the index in `names` of the one `s` is (the
/// first `shown` names are the ones an error lists, the rest aliases).
/// Not generic, so each enum costs only its table.
pub(super) fn by_name(s: Scalar<'_>, names: &[&str], shown: usize) -> Result<usize, String> {
    let text = match s {
        Scalar::Text(t) => t,
        other => return Err(other.wrong("a name")),
    };
    names
        .iter()
        .position(|n| *n == text)
        .ok_or_else(|| format!("unknown variant `{text}`, expected {}", one_of(&names[..shown])))
}

/// Takes note of a raw struct's key `key` (one of its `keys`, a bit each
/// in `seen`), or fails for a key unknown or set twice.
pub(super) fn key_seen(key: &str, keys: &[&str], seen: &mut u32, value: &mut dyn Values) -> Result<(), Stop> {
    let Some(i) = keys.iter().position(|k| *k == key) else {
        return Err(value.fail(format!("unknown field `{key}`, expected {}", one_of(keys))));
    };
    if *seen & (1 << i) != 0 {
        return Err(value.fail(format!("duplicate field `{key}`")));
    }
    *seen |= 1 << i;
    Ok(())
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

/// Parses a whole document into `T`.
pub(super) fn parse<T: Want + Default>(text: &str) -> Result<T, serde_yaml::Error> {
    let mut out = T::default();
    Adapter { want: &mut out }.deserialize(serde_yaml::Deserializer::from_str(text))?;
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    One,
    List,
    OneOrList,
    /// A list whose entries are lists (or one scalar each).
    Nested,
    /// One entry of a `Nested` list: an `Open`, then its scalars.
    Inner,
}

/// A scalar, or a list of them (`shape`), each handed to `put`.
struct Scalars<'a> {
    shape: Shape,
    text: bool,
    expecting: &'static str,
    put: &'a mut dyn FnMut(Scalar<'_>) -> Result<(), String>,
}

impl Want for Scalars<'_> {
    fn accepts(&self) -> u8 {
        match self.shape {
            Shape::One => SCALAR,
            Shape::List | Shape::Nested => SEQ,
            Shape::OneOrList | Shape::Inner => SCALAR | SEQ,
        }
    }
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if matches!(self.shape, Shape::List) {
            f.write_str("a list of ")?;
        }
        f.write_str(self.expecting)
    }
    fn text(&self) -> bool {
        self.text && self.shape == Shape::One
    }
    fn scalar(&mut self, s: Scalar<'_>) -> Result<(), String> {
        if self.shape == Shape::Inner {
            (self.put)(Scalar::Open)?;
        }
        (self.put)(s)
    }
    fn item(&mut self, value: &mut dyn Values) -> Result<(), Stop> {
        // An inner list opens at its first element, or at its end when
        // empty (`item` is called once more, at the end of every list).
        if self.shape == Shape::Inner {
            (self.put)(Scalar::Open).map_err(|m| value.fail(m))?;
            self.shape = Shape::List;
        }
        let shape = if self.shape == Shape::Nested { Shape::Inner } else { Shape::One };
        value.read(&mut Scalars {
            shape,
            text: self.text,
            expecting: self.expecting,
            put: &mut *self.put,
        })?;
        Ok(())
    }
}

/// Reads `listen`: one entry or a list of them, each a plain address or
/// an `{address, protocol}` map.
pub(super) struct Listen<'a> {
    top: bool,
    out: &'a mut Vec<super::ListenEntry>,
    address: Option<SocketAddr>,
    protocol: Option<super::Protocol>,
}

impl<'a> Listen<'a> {
    pub(super) fn new(out: &'a mut Vec<super::ListenEntry>) -> Self {
        Listen { top: true, out, address: None, protocol: None }
    }
}

impl Want for Listen<'_> {
    fn accepts(&self) -> u8 {
        if self.top {
            SCALAR | MAP | SEQ
        } else {
            SCALAR | MAP
        }
    }
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an address such as 127.0.0.1:1080, or {address: ..., protocol: http}")
    }
    fn scalar(&mut self, s: Scalar<'_>) -> Result<(), String> {
        let addr = super::ListenAddr::from_scalar(s)?;
        self.out.push(super::ListenEntry(addr.0, super::Protocol::Socks5));
        Ok(())
    }
    fn entry(&mut self, key: &str, value: &mut dyn Values) -> Result<(), Stop> {
        match key {
            "address" => self.address = super::ListenAddr::read(value)?.map(|a| a.0),
            "protocol" => self.protocol = super::Protocol::read(value)?,
            other => {
                return Err(value.fail(format!("unknown field `{other}`, expected `address` or `protocol`")));
            }
        }
        Ok(())
    }
    fn end(&mut self) -> Result<(), String> {
        let address = self.address.take().ok_or("missing field `address`")?;
        self.out.push(super::ListenEntry(address, self.protocol.take().unwrap_or(super::Protocol::Socks5)));
        Ok(())
    }
    fn item(&mut self, value: &mut dyn Values) -> Result<(), Stop> {
        value.read(&mut Listen { top: false, out: &mut *self.out, address: None, protocol: None })?;
        Ok(())
    }
}

/// The one seed serde_yaml sees: it reads one value into a `dyn Want`.
struct Adapter<'a> {
    want: &'a mut dyn Want,
}

impl Adapter<'_> {
    fn scalar<E: de::Error>(self, s: Scalar<'_>) -> Result<bool, E> {
        if self.want.accepts() & SCALAR == 0 {
            return Err(E::invalid_type(s.unexpected(), &self));
        }
        self.want.scalar(s).map_err(E::custom)?;
        Ok(true)
    }
}

impl<'de> DeserializeSeed<'de> for Adapter<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        if self.want.text() {
            d.deserialize_option(self)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Adapter<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.want.expecting(f)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    /// Text mode only: the value is not null; read it as written.
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.scalar(Scalar::Text(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.scalar(Scalar::Unsigned(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.scalar(Scalar::Signed(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.scalar(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.scalar(Scalar::Bool(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        if self.want.accepts() & MAP == 0 {
            return Err(de::Error::invalid_type(Unexpected::Map, &self));
        }
        while let Some(key) = map.next_key::<String>()? {
            let mut value = InMap { map: &mut map, err: None, used: false };
            let read = self.want.entry(&key, &mut value);
            if let Some(e) = value.err {
                return Err(e);
            }
            // A `Want` that neither read the value nor failed is a bug;
            // stop rather than read the next key out of step.
            if read.is_err() || !value.used {
                return Err(de::Error::custom("internal error: a map value was not read"));
            }
        }
        self.want.end().map_err(de::Error::custom)?;
        Ok(true)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<bool, S::Error> {
        if self.want.accepts() & SEQ == 0 {
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        loop {
            let mut value = InSeq { seq: &mut seq, err: None, used: false, end: false };
            let read = self.want.item(&mut value);
            if let Some(e) = value.err {
                return Err(e);
            }
            // As for maps; an element never read would loop for ever.
            if read.is_err() || !value.used {
                return Err(de::Error::custom("internal error: a list element was not read"));
            }
            if value.end {
                return Ok(true);
            }
        }
    }
}

/// A map entry's value.
struct InMap<'m, A, E> {
    map: &'m mut A,
    err: Option<E>,
    used: bool,
}

impl<'de, A: MapAccess<'de>> Values for InMap<'_, A, A::Error> {
    fn read(&mut self, want: &mut dyn Want) -> Result<bool, Stop> {
        self.used = true;
        self.map.next_value_seed(Adapter { want }).map_err(|e| {
            self.err = Some(e);
            Stop
        })
    }
    fn fail(&mut self, message: String) -> Stop {
        self.used = true;
        self.err = Some(de::Error::custom(message));
        Stop
    }
}

/// A list's next element. `read` says `false` only at the list's end (a
/// null element is an element).
struct InSeq<'s, S, E> {
    seq: &'s mut S,
    err: Option<E>,
    used: bool,
    end: bool,
}

impl<'de, S: SeqAccess<'de>> Values for InSeq<'_, S, S::Error> {
    fn read(&mut self, want: &mut dyn Want) -> Result<bool, Stop> {
        self.used = true;
        match self.seq.next_element_seed(Adapter { want }) {
            Ok(Some(_)) => Ok(true),
            Ok(None) => {
                self.end = true;
                Ok(false)
            }
            Err(e) => {
                self.err = Some(e);
                Err(Stop)
            }
        }
    }
    fn fail(&mut self, message: String) -> Stop {
        self.used = true;
        self.err = Some(de::Error::custom(message));
        Stop
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw::RawConfig;
    use super::super::Config;
    use super::*;

    fn raw(yaml: &str) -> RawConfig {
        parse(yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"))
    }

    fn error(yaml: &str) -> String {
        match parse::<RawConfig>(yaml) {
            Ok(_) => panic!("{yaml:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn text_keeps_what_was_written_and_numbers_stay_typed() {
        let r = raw(
            "web: {username: 0123, password: 0x10}\nthreads: 0x2\nbackends:\n  - {name: yes, weight: 3}\n",
        );
        let web = r.web.unwrap();
        assert_eq!(web.username.as_deref(), Some("0123"), "a name that looks like a number stays as written");
        assert_eq!(web.password.unwrap().expose(), "0x10");
        assert_eq!(
            r.threads,
            Some(crate::config::values::RawThreads::Count(2)),
            "an integer in hex is an integer"
        );
        let b = &r.backends.unwrap()[0];
        assert_eq!((b.name.as_deref(), b.weight), (Some("yes"), Some(3)));
    }

    #[test]
    fn null_and_empty_are_absent_and_a_null_list_element_is_an_empty_section() {
        let r = raw("health: ~\nweb:\nmode: null\nbackends:\n  -\n  - direct: true\n");
        assert!(r.health.is_none() && r.web.is_none() && r.mode.is_none());
        let backends = r.backends.unwrap();
        assert_eq!(backends.len(), 2);
        assert!(backends[0].direct.is_none() && backends[1].direct == Some(true));
    }

    #[test]
    fn lists_take_their_forms() {
        let r = raw("listen: [127.0.0.1:1, {address: '[::1]:2', protocol: http}]\nallow: [10.0.0.0/8]\n");
        let listen = r.listen.unwrap().0;
        assert_eq!(listen.len(), 2);
        assert_eq!(listen[1].1, super::super::Protocol::Http);
        assert_eq!(r.allow.unwrap().len(), 1);
        let r = raw("groups:\n  - {name: g, tiers: [[a, b], c, [], [7]]}\n  - {name: h, backends: x}\n");
        let groups = r.groups.unwrap();
        let tiers: Vec<Vec<String>> = groups[0].tiers.clone().unwrap().0.into_iter().map(|s| s.0).collect();
        assert_eq!(tiers, [vec!["a", "b"], vec!["c"], vec![], vec!["7"]]);
        assert_eq!(groups[1].backends.clone().unwrap().0, ["x"]);
        assert!(raw("allow: []\n").allow.unwrap().is_empty(), "an empty list is not an absent one");
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            ("mode: fast\n", "mode: unknown variant `fast`, expected `transparent` or `socks5` at line 1"),
            ("limits:\n  max_connections: lots\n", "limits.max_connections: invalid type: string \"lots\", expected a whole number from 0 to 4294967295 at line 2"),
            ("limits:\n  max_connections: 5000000000\n", "invalid value: integer `5000000000`"),
            ("health:\n  check_intervall: 1s\n", "health: unknown field `check_intervall`, expected one of `test_url`"),
            ("backends:\n  - name: a\n    name: b\n", "backends[0]: duplicate field `name`"),
            ("backends: {name: a}\n", "backends: invalid type: map, expected a list of maps"),
            ("allow: 10.0.0.0/8\n", "allow: invalid type: string \"10.0.0.0/8\", expected a list of an address block"),
            ("allow: [10.0.0.0/33]\n", "allow[0]: "),
            ("web: [1]\n", "web: invalid type: sequence, expected a map"),
            ("listen: [[127.0.0.1:1]]\n", "listen[0]: invalid type: sequence"),
            ("listen: {protocol: http}\n", "listen: missing field `address`"),
            ("groups:\n  - tiers: [[[a]]]\n", "groups[0].tiers[0][0]: invalid type: sequence"),
            ("sniff: yes\n", "sniff: invalid type: string \"yes\", expected true or false"),
            ("health:\n  connect_timeout: 5\n", "invalid duration 5: a number needs a unit"),
        ];
        for (yaml, want) in cases {
            let e = error(yaml);
            assert!(e.contains(want), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn a_whole_config_still_reads_as_before() {
        let c = Config::from_yaml(
            "listen: 127.0.0.1:1080\nmode: socks5\nbackends:\n  - {name: Tor, address: '127.0.0.1:9050-9051', weight: 2}\n  - direct: true\n\
             groups:\n  - {name: main, tiers: [[Tor], [direct]]}\nrules:\n  - {port: [25, 465], action: block}\n",
        )
        .unwrap();
        assert_eq!(c.backends.len(), 3);
        assert_eq!(c.rules.len(), 1);
        let summary = c.summary();
        assert!(
            summary.contains("groups: 1\n  main                     roundrobin: [Tor] > [direct]\n"),
            "{summary}"
        );
        assert!(summary.contains("rules: 1 (0 to groups, 0 direct, 1 block)\n"), "{summary}");
    }
}
