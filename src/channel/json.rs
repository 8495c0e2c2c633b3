//! Compact JSON for outgoing messages, byte for byte what
//! `serde_json::to_writer` writes, with a faster string escaper.
//!
//! serde_json looks up every byte of a string in a table before copying it
//! (about 3 GB/s here); with 64 KiB messages that was the sender's largest
//! cost after the kernel's copy. Here a string is scanned 32 bytes at a
//! time for the three kinds of byte JSON must escape (a loop the compiler
//! turns into SIMD compares, about 16 GB/s), and the runs between them are
//! copied whole. Everything that is not a string (numbers, and map keys
//! that are not strings) is written by serde_json itself, so its formatting
//! and its errors are the same. serde_json's two private struct names are
//! honoured: `RawValue` (feature `raw_value`) and a `Number` with feature
//! `arbitrary_precision` are written verbatim, as serde_json does.

use std::fmt;

use serde::ser::{self, Impossible, Serialize};

type Error = serde_json::Error;

/// The struct name serde_json's `RawValue` serializes under.
const RAW_VALUE: &str = "$serde_json::private::RawValue";
/// The struct name serde_json's `Number` serializes under with
/// `arbitrary_precision`.
const NUMBER: &str = "$serde_json::private::Number";

/// Append `msg` to `out` as compact JSON.
pub(super) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, msg: &T) -> Result<(), Error> {
    msg.serialize(&mut Json { out })
}

/// Append `s` as a JSON string, escaped as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..at]);
        push_escape(out, bytes[at]);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The first byte at or after `from` that must be escaped.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const CHUNK: usize = 32;
    let mut chunks = bytes[from..].chunks_exact(CHUNK);
    let mut base = from;
    for chunk in &mut chunks {
        // No early exit inside: the compiler vectorises the whole chunk.
        if chunk.iter().fold(false, |any, &b| any | needs_escape(b)) {
            return chunk
                .iter()
                .position(|&b| needs_escape(b))
                .map(|i| base + i);
        }
        base += CHUNK;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| needs_escape(b))
        .map(|i| base + i)
}

/// serde_json's escapes: the short ones where JSON has them, `\u00xx`
/// (lower-case hex) for the other control characters.
fn push_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
    }
}

/// Append a map key: a string key directly, anything else as serde_json
/// writes it (integers and floats quoted, or its "key must be a string").
fn write_key<K: Serialize + ?Sized>(out: &mut Vec<u8>, key: &K) -> Result<(), Error> {
    match key.serialize(StrOnly { out, raw: false }) {
        Ok(()) => Ok(()),
        Err(NotStr) => {
            // `{KEY:null}` from serde_json, of which the key is wanted.
            let one = serde_json::to_vec(&OneKey(key))?;
            out.extend_from_slice(&one[1..one.len() - b":null}".len()]);
            Ok(())
        }
    }
}

/// A map of one entry, `key` to `null`: how serde_json's own key rules are
/// reached for a key that is not a string.
struct OneKey<'a, K: ?Sized>(&'a K);

impl<K: Serialize + ?Sized> Serialize for OneKey<'_, K> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &())?;
        map.end()
    }
}

struct Json<'o> {
    out: &'o mut Vec<u8>,
}

macro_rules! by_serde_json {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<(), Error> {
                serde_json::to_writer(&mut *self.out, &v)
            }
        )*
    };
}

impl<'a, 'o> ser::Serializer for &'a mut Json<'o> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, 'o>;
    type SerializeTuple = Compound<'a, 'o>;
    type SerializeTupleStruct = Compound<'a, 'o>;
    type SerializeTupleVariant = Compound<'a, 'o>;
    type SerializeMap = Compound<'a, 'o>;
    type SerializeStruct = Compound<'a, 'o>;
    type SerializeStructVariant = Compound<'a, 'o>;

    by_serde_json!(
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
    );

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a, 'o>, Error> {
        Ok(self.open(b"[", b"]"))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'o>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'o>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'o>, Error> {
        self.out.push(b'{');
        write_str(self.out, variant);
        Ok(self.open(b":[", b"]}"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a, 'o>, Error> {
        Ok(self.open(b"{", b"}"))
    }

    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'a, 'o>, Error> {
        if name == RAW_VALUE || name == NUMBER {
            return Ok(Compound::Verbatim(self));
        }
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a, 'o>, Error> {
        self.out.push(b'{');
        write_str(self.out, variant);
        Ok(self.open(b":{", b"}}"))
    }
}

impl<'a, 'o> Json<'o> {
    fn open(&'a mut self, opening: &[u8], close: &'static [u8]) -> Compound<'a, 'o> {
        self.out.extend_from_slice(opening);
        Compound::Items {
            json: self,
            first: true,
            close,
        }
    }
}

/// A sequence, map or struct being written.
enum Compound<'a, 'o> {
    Items {
        json: &'a mut Json<'o>,
        first: bool,
        close: &'static [u8],
    },
    /// serde_json's `RawValue` or `Number`: one field whose string is the
    /// JSON itself.
    Verbatim(&'a mut Json<'o>),
}

impl<'o> Compound<'_, 'o> {
    /// The writer, after the comma that goes before every item but the
    /// first.
    fn next_item(&mut self) -> &mut Json<'o> {
        match self {
            Compound::Items { json, first, .. } => {
                if !std::mem::take(first) {
                    json.out.push(b',');
                }
                json
            }
            Compound::Verbatim(json) => json,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(self.next_item())
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        if let Compound::Verbatim(json) = self {
            return value
                .serialize(StrOnly {
                    out: json.out,
                    raw: true,
                })
                .map_err(|NotStr| ser::Error::custom("expected the raw JSON as a string"));
        }
        let json = self.next_item();
        write_str(json.out, key);
        json.out.push(b':');
        value.serialize(json)
    }

    fn close(self) -> Result<(), Error> {
        if let Compound::Items { json, close, .. } = self {
            json.out.extend_from_slice(close);
        }
        Ok(())
    }
}

/// The four kinds of sequence: each item after a comma.
macro_rules! sequence {
    ($($kind:ident::$method:ident),*) => {
        $(
            impl ser::$kind for Compound<'_, '_> {
                type Ok = ();
                type Error = Error;
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                    self.element(value)
                }
                fn end(self) -> Result<(), Error> {
                    self.close()
                }
            }
        )*
    };
}

sequence!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        write_key(self.next_item().out, key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let json = self.next_item_of_entry();
        json.out.push(b':');
        value.serialize(json)
    }
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl<'o> Compound<'_, 'o> {
    /// The writer for a map value: its key was the item, so no comma.
    fn next_item_of_entry(&mut self) -> &mut Json<'o> {
        match self {
            Compound::Items { json, .. } | Compound::Verbatim(json) => json,
        }
    }
}

/// The two kinds of struct: named fields.
macro_rules! fields {
    ($($kind:ident),*) => {
        $(
            impl ser::$kind for Compound<'_, '_> {
                type Ok = ();
                type Error = Error;
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Result<(), Error> {
                    self.field(key, value)
                }
                fn end(self) -> Result<(), Error> {
                    self.close()
                }
            }
        )*
    };
}

fields!(SerializeStruct, SerializeStructVariant);

/// "Not a string": what [`StrOnly`] says of anything else.
#[derive(Debug)]
struct NotStr;

impl fmt::Display for NotStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a string")
    }
}

impl std::error::Error for NotStr {}

impl ser::Error for NotStr {
    fn custom<T: fmt::Display>(_msg: T) -> NotStr {
        NotStr
    }
}

/// Takes a string (or what serde_json's map keys treat as one: a char, a
/// unit variant, a newtype around one) and appends it: escaped and quoted,
/// or with `raw` as it is. Anything else is [`NotStr`], and nothing is
/// written.
struct StrOnly<'o> {
    out: &'o mut Vec<u8>,
    raw: bool,
}

macro_rules! not_str {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {
        $(
            fn $method(self, $(_: $ty),*) -> Result<(), NotStr> {
                Err(NotStr)
            }
        )*
    };
}

impl ser::Serializer for StrOnly<'_> {
    type Ok = ();
    type Error = NotStr;
    type SerializeSeq = Impossible<(), NotStr>;
    type SerializeTuple = Impossible<(), NotStr>;
    type SerializeTupleStruct = Impossible<(), NotStr>;
    type SerializeTupleVariant = Impossible<(), NotStr>;
    type SerializeMap = Impossible<(), NotStr>;
    type SerializeStruct = Impossible<(), NotStr>;
    type SerializeStructVariant = Impossible<(), NotStr>;

    fn serialize_str(self, v: &str) -> Result<(), NotStr> {
        if self.raw {
            self.out.extend_from_slice(v.as_bytes());
        } else {
            write_str(self.out, v);
        }
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), NotStr> {
        if self.raw {
            return Err(NotStr);
        }
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), NotStr> {
        if self.raw {
            return Err(NotStr);
        }
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), NotStr> {
        value.serialize(self)
    }

    not_str!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), NotStr> {
        Err(NotStr)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), NotStr> {
        Err(NotStr)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, NotStr> {
        Err(NotStr)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, NotStr> {
        Err(NotStr)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, NotStr> {
        Err(NotStr)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, NotStr> {
        Err(NotStr)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, NotStr> {
        Err(NotStr)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, NotStr> {
        Err(NotStr)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, NotStr> {
        Err(NotStr)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;
    use serde_json::{json, Value};

    /// Ours, next to serde_json's, for the same value: same bytes, or the
    /// same error.
    fn same<T: Serialize + ?Sized>(value: &T) {
        let mut ours = Vec::new();
        let ours = super::write(&mut ours, value).map(|()| ours);
        let theirs = serde_json::to_vec(value);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => assert_eq!(
                String::from_utf8_lossy(&a),
                String::from_utf8_lossy(&b),
                "output differs"
            ),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("ours {a:?}, serde_json {b:?}"),
        }
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        let every: String = (0u8..0x80).map(char::from).collect();
        same(&every);
        same("");
        same("héllo wörld ✓ 🦀 \u{2028}\u{2029}");
        // An escape at every offset around the 32-byte chunks, and runs of
        // them.
        for len in [1, 7, 8, 31, 32, 33, 63, 64, 65, 100] {
            for at in 0..len {
                for c in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '\t'] {
                    let mut s: Vec<char> = vec!['x'; len];
                    s[at] = c;
                    let s: String = s.into_iter().collect();
                    same(&s);
                }
            }
        }
        same(&"\"\\\n\r\t\u{8}\u{c}".repeat(50));
        same(&"x".repeat(1 << 16));
    }

    #[derive(Serialize)]
    struct Unit;
    #[derive(Serialize)]
    struct Newtype(String);
    #[derive(Serialize)]
    struct Tuple(i32, &'static str, Option<bool>);
    #[derive(Serialize)]
    struct Fields {
        a: u8,
        #[serde(rename = "b\"quoted\"")]
        b: Vec<Option<f64>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        #[serde(flatten)]
        rest: BTreeMap<String, Value>,
        empty: Vec<u8>,
        unit: (),
    }
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
    enum Kind {
        Plain,
        Wrapped(String),
        Pair(u8, u8),
        Named { x: i64 },
    }
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct KeyNewtype(u32);
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct KeyString(String);

    struct Bytes(&'static [u8]);
    impl Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[test]
    fn every_serde_shape_matches() {
        same(&Unit);
        same(&Newtype("n\"t".into()));
        same(&Tuple(-3, "t", None));
        same(&Fields {
            a: 255,
            b: vec![Some(0.1), None, Some(f64::NAN), Some(-0.0), Some(1e300)],
            skipped: None,
            rest: [("extra".to_string(), json!({"deep": [1, "2", null]}))].into(),
            empty: vec![],
            unit: (),
        });
        same(&[Kind::Plain, Kind::Wrapped("w".into()), Kind::Pair(1, 2)]);
        same(&Kind::Named { x: i64::MIN });
        same(&(
            u64::MAX,
            i128::MIN,
            u128::MAX,
            1.5f32,
            f32::INFINITY,
            'c',
            '"',
        ));
        same(&Bytes(b"\x00\xffab"));
        same(&Some(Some(())));
        same(&Vec::<Value>::new());
        same(&BTreeMap::<String, u8>::new());
        same(&json!({"a": {}, "b": [], "c": [[], {}], "": ""}));
    }

    #[test]
    fn map_keys_follow_serde_json_rules() {
        same(&BTreeMap::from([(1i64, "a"), (-2, "b")]));
        same(&BTreeMap::from([(u128::MAX, 0)]));
        same(&BTreeMap::from([(true, 1), (false, 0)]));
        same(&BTreeMap::from([('k', 1), ('"', 2)]));
        same(&BTreeMap::from([(Kind::Plain, 1)]));
        same(&BTreeMap::from([(KeyNewtype(7), 1)]));
        same(&BTreeMap::from([(KeyString("s\n".into()), 1)]));
        same(&HashMap::from([(1.5f64.to_bits(), 1)]));
        same(&BTreeMap::from([(UnitKey, 1)]));
        // Not a string, nor anything serde_json turns into one: its error.
        same(&BTreeMap::from([(vec![1u8], 1)]));
        same(&BTreeMap::from([(Kind::Pair(1, 2), 1)]));
        same(&BTreeMap::from([(Kind::Wrapped("w".into()), 1)]));
        same(&BTreeMap::from([(Some(1u8), 1)]));
        same(&BTreeMap::from([((), 1)]));
    }

    /// A unit struct as a key (not a valid one for serde_json either).
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct UnitKey;

    /// Values made by a small deterministic generator, nested, with odd
    /// strings and numbers.
    #[test]
    fn generated_values_match() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        fn value(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            let pick = next() % if depth > 3 { 5 } else { 7 };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(next() % 2 == 0),
                2 => match next() % 3 {
                    0 => json!(next() as i64),
                    1 => json!(next()),
                    _ => json!(f64::from_bits(next() >> 2)),
                },
                3 | 4 => {
                    let len = (next() % 70) as usize;
                    let s: String = (0..len)
                        .map(|_| match next() % 6 {
                            0 => char::from((next() % 0x20) as u8),
                            1 => '"',
                            2 => '\\',
                            3 => 'é',
                            _ => char::from(b'a' + (next() % 26) as u8),
                        })
                        .collect();
                    Value::String(s)
                }
                5 => Value::Array((0..next() % 5).map(|_| value(next, depth + 1)).collect()),
                _ => Value::Object(
                    (0..next() % 5)
                        .map(|i| {
                            let key = match value(next, 9) {
                                Value::String(s) => s,
                                _ => format!("k{i}"),
                            };
                            (key, value(next, depth + 1))
                        })
                        .collect(),
                ),
            }
        }
        for _ in 0..2000 {
            same(&value(&mut next, 0));
        }
    }

    /// serde_json's `RawValue` serializes as a struct under a private
    /// name; serde_json writes its field's string as it is, and so do we.
    #[test]
    fn raw_json_is_written_verbatim() {
        struct Raw(&'static str);
        impl Serialize for Raw {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct(super::RAW_VALUE, 1)?;
                st.serialize_field(super::RAW_VALUE, self.0)?;
                st.end()
            }
        }
        let mut raw = Vec::new();
        super::write(&mut raw, &[Raw("{ \"a\" : 1 }")]).unwrap();
        assert_eq!(raw, b"[{ \"a\" : 1 }]");
    }
}
