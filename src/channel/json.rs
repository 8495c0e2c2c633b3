//! Compact JSON for outgoing messages, byte for byte what
//! `serde_json::to_writer` writes, with a faster string escaper.
//!
//! serde_json looks up every byte of a string in a table before copying it
//! (about 3 GB/s here); with 64 KiB messages that was the sender's largest
//! cost after the kernel's copy. Here a string is scanned 32 bytes at a
//! time for the three kinds of byte JSON must escape (a loop the compiler
//! turns into SIMD compares, about 16 GB/s), and the runs between them are
//! copied whole.
//!
//! Numbers are written by serde_json itself, so their formatting is its
//! own; map keys follow its rules (numbers and `bool`s quoted, floats
//! finite), and every error it would raise is taken from serde_json, so the
//! text and the category are the same. serde_json's private struct names
//! (`RawValue`, and `Number` with `arbitrary_precision`) are written
//! verbatim exactly when this build's serde_json does so, which is asked of
//! serde_json once.
//!
//! Three differences. The newlines of a pretty-printed `RawValue` become
//! spaces (the channel sends one message per line). The other two are on
//! inputs serde_json mishandles: a sequence or map that declared a length
//! of 0 and then has items stays valid JSON (serde_json writes `[],1]`),
//! and a message nested more than [`MAX_DEPTH`] arrays and
//! objects deep is an error instead of a stack overflow that aborts the
//! process (the ones this encoder opens: bytes and raw JSON are written
//! flat, without recursion, and not counted).

use std::sync::OnceLock;

use serde::ser::{self, Impossible, Serialize};

type Error = serde_json::Error;

/// The struct name serde_json's `RawValue` serializes under.
const RAW_VALUE: &str = "$serde_json::private::RawValue";
/// The struct name serde_json's `Number` serializes under with
/// `arbitrary_precision`.
const NUMBER: &str = "$serde_json::private::Number";

/// How many arrays and objects deep a message may nest. On a 2 MiB stack (a
/// tokio worker's, a spawned thread's), serde_json and this encoder both
/// overflow at about 1,500 levels in a debug build (ours at 14,000 in
/// release, serde_json at 26,000); our own receivers (serde_json's default)
/// take 128.
const MAX_DEPTH: u32 = 1024;

/// Append `msg` to `out` as compact JSON.
pub(super) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, msg: &T) -> Result<(), Error> {
    msg.serialize(&mut Json { out, depth: 0 })
}

/// Append `s` as a JSON string, escaped as serde_json escapes it.
#[inline]
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.len() < SHORT && !bytes.iter().any(|&b| needs_escape(b)) {
        // Keys and short values: inline, byte by byte, no call to `memcpy`.
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        for &b in bytes {
            out.push(b);
        }
        out.push(b'"');
        return;
    }
    write_escaped(out, bytes);
}

/// Room reserved past a long string for what a message usually has after
/// it: closing brackets and the line's `\n`. Reserving the string alone,
/// a message ending in a 1 MiB string grew its buffer to 2 MiB, copying
/// the line, to append those few bytes (found by an outside attack).
const TAIL: usize = 16;

/// [`write_str`] for a string that is long or needs escapes.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2 + TAIL);
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

/// Strings shorter than this are copied byte by byte when they need no
/// escape.
const SHORT: usize = 16;

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

/// Append `v` in decimal, as serde_json (itoa) writes it: a small loop
/// that pushes the digits, where a call to serde_json for each number
/// cost a `memcpy` of its few bytes.
#[inline]
fn write_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.reserve(digits.len() - at);
    for &d in &digits[at..] {
        out.push(d);
    }
}

/// A map of one entry, `key` to `null`: how serde_json's own errors for a
/// bad key are obtained.
struct OneKey<'a, K: ?Sized>(&'a K);

impl<K: Serialize + ?Sized> Serialize for OneKey<'_, K> {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &())?;
        map.end()
    }
}

/// serde_json's error for a key that cannot be one ("key must be a
/// string"), or for a float key that is not finite.
fn key_error(not_finite: bool) -> Error {
    let refused = if not_finite {
        serde_json::to_vec(&OneKey(&f64::NAN))
    } else {
        serde_json::to_vec(&OneKey(&()))
    };
    refused
        .err()
        .unwrap_or_else(|| ser::Error::custom("key must be a string"))
}

/// A struct of serde_json's private name `name` with one field `field`
/// whose value is the string `1`, or `()` if not `string`.
struct Private {
    name: &'static str,
    field: &'static str,
    string: bool,
}

impl Serialize for Private {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::SerializeStruct;
        let mut st = s.serialize_struct(self.name, 1)?;
        if self.string {
            st.serialize_field(self.field, "1")?;
        } else {
            st.serialize_field(self.field, &())?;
        }
        st.end()
    }
}

/// Whether this build's serde_json writes a struct of the private name
/// `name` verbatim (features `raw_value`, `arbitrary_precision`): asked
/// once, of serde_json itself.
fn verbatim(name: &'static str) -> bool {
    static RAW: OnceLock<bool> = OnceLock::new();
    static NUM: OnceLock<bool> = OnceLock::new();
    let cell = match name {
        RAW_VALUE => &RAW,
        NUMBER => &NUM,
        _ => return false,
    };
    *cell.get_or_init(|| {
        let probe = Private {
            name,
            field: name,
            string: true,
        };
        serde_json::to_vec(&probe).is_ok_and(|json| json == b"1")
    })
}

/// serde_json's error for a verbatim struct with a field of another name
/// (`string`), or whose field is not a string.
fn verbatim_error(name: &'static str, string: bool) -> Error {
    let field = if string { "" } else { name };
    serde_json::to_vec(&Private {
        name,
        field,
        string,
    })
    .err()
    .unwrap_or_else(|| ser::Error::custom("expected value"))
}

struct Json<'o> {
    out: &'o mut Vec<u8>,
    /// Arrays and objects open around the value being written.
    depth: u32,
}

impl<'o> Json<'o> {
    #[inline]
    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ser::Error::custom(format_args!(
                "the message nests more than {MAX_DEPTH} arrays and objects deep"
            )));
        }
        Ok(())
    }

    #[inline]
    fn open<'a>(&'a mut self, opening: u8, close: Close) -> Result<Compound<'a, 'o>, Error> {
        self.enter()?;
        self.out.push(opening);
        Ok(Compound::Items {
            json: self,
            first: true,
            close,
        })
    }

    /// `{"variant":` before the value of an enum variant.
    #[inline]
    fn open_variant(&mut self, variant: &str) -> Result<(), Error> {
        self.enter()?;
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        Ok(())
    }
}

macro_rules! by_serde_json {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            #[inline]
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
        serialize_i128(i128),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
    );

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        if v < 0 {
            self.out.push(b'-');
        }
        write_decimal(self.out, v.unsigned_abs());
        Ok(())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(v.into())
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        write_decimal(self.out, v);
        Ok(())
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    #[inline]
    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.open_variant(variant)?;
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        self.depth -= 1;
        Ok(())
    }

    #[inline]
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        self.open(b'[', Close::Bracket)
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Error> {
        self.serialize_seq(Some(len))
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        self.serialize_seq(Some(len))
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        self.open_variant(variant)?;
        self.open(b'[', Close::BracketBrace)
    }

    #[inline]
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        self.open(b'{', Close::Brace)
    }

    #[inline]
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        if verbatim(name) {
            return Ok(Compound::Verbatim { json: self, name });
        }
        self.serialize_map(Some(len))
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        self.open_variant(variant)?;
        self.open(b'{', Close::BraceBrace)
    }
}

/// What ends a compound: `]` or `}`, and a second `}` after the items of
/// a tuple or struct variant (`{"variant":[...]}`), whose opening counted
/// as a level of its own.
#[derive(Clone, Copy)]
enum Close {
    Bracket,
    Brace,
    BracketBrace,
    BraceBrace,
}

/// A sequence, map or struct being written.
enum Compound<'a, 'o> {
    Items {
        json: &'a mut Json<'o>,
        first: bool,
        close: Close,
    },
    /// serde_json's `RawValue` or `Number`: one field, of the struct's own
    /// name, whose string is the JSON itself.
    Verbatim {
        json: &'a mut Json<'o>,
        name: &'static str,
    },
}

impl<'o> Compound<'_, 'o> {
    #[inline]
    fn json(&mut self) -> &mut Json<'o> {
        match self {
            Compound::Items { json, .. } | Compound::Verbatim { json, .. } => json,
        }
    }

    /// The writer, after the comma that goes before every item but the
    /// first.
    #[inline]
    fn next_item(&mut self) -> &mut Json<'o> {
        if let Compound::Items { json, first, .. } = self {
            if !std::mem::take(first) {
                json.out.push(b',');
            }
        }
        self.json()
    }

    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(self.next_item())
    }

    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        if let Compound::Verbatim { json, name } = self {
            if key != *name {
                return Err(verbatim_error(name, true));
            }
            return value.serialize(RawStr {
                out: json.out,
                name,
            });
        }
        let json = self.next_item();
        write_str(json.out, key);
        json.out.push(b':');
        value.serialize(json)
    }

    #[inline]
    fn close(self) -> Result<(), Error> {
        if let Compound::Items { json, close, .. } = self {
            match close {
                Close::Bracket => json.out.push(b']'),
                Close::Brace => json.out.push(b'}'),
                Close::BracketBrace => {
                    json.out.extend_from_slice(b"]}");
                    json.depth -= 1;
                }
                Close::BraceBrace => {
                    json.out.extend_from_slice(b"}}");
                    json.depth -= 1;
                }
            }
            json.depth -= 1;
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
                #[inline]
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                    self.element(value)
                }
                #[inline]
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
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        key.serialize(Key(self.next_item().out))
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let json = self.json();
        json.out.push(b':');
        value.serialize(json)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// The two kinds of struct: named fields.
macro_rules! fields {
    ($($kind:ident),*) => {
        $(
            impl ser::$kind for Compound<'_, '_> {
                type Ok = ();
                type Error = Error;
                #[inline]
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Result<(), Error> {
                    self.field(key, value)
                }
                #[inline]
                fn end(self) -> Result<(), Error> {
                    self.close()
                }
            }
        )*
    };
}

fields!(SerializeStruct, SerializeStructVariant);

/// A map key, by serde_json's rules (its `MapKeySerializer`): strings,
/// chars and unit variants as strings; integers, finite floats and `bool`s
/// quoted; newtypes and `Some` by what they hold; anything else refused
/// with serde_json's own error. The key is serialized once.
struct Key<'o>(&'o mut Vec<u8>);

macro_rules! quoted {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<(), Error> {
                self.0.push(b'"');
                serde_json::to_writer(&mut *self.0, &v)?;
                self.0.push(b'"');
                Ok(())
            }
        )*
    };
}

/// Methods that refuse what they are given, with the serializer's own
/// `refused()` error.
macro_rules! refuse {
    ($($method:ident($($ty:ty),*)),* $(,)?) => {
        $(
            fn $method(self, $(_: $ty),*) -> Result<(), Error> {
                Err(self.refused())
            }
        )*
    };
}

/// Every compound (and a newtype variant), refused with `refused()`.
macro_rules! refuse_compounds {
    () => {
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _value: &T,
        ) -> Result<(), Error> {
            Err(self.refused())
        }

        fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
            Err(self.refused())
        }

        fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
            Err(self.refused())
        }

        fn serialize_tuple_struct(
            self,
            _name: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeTupleStruct, Error> {
            Err(self.refused())
        }

        fn serialize_tuple_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeTupleVariant, Error> {
            Err(self.refused())
        }

        fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
            Err(self.refused())
        }

        fn serialize_struct(
            self,
            _name: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeStruct, Error> {
            Err(self.refused())
        }

        fn serialize_struct_variant(
            self,
            _name: &'static str,
            _index: u32,
            _variant: &'static str,
            _len: usize,
        ) -> Result<Self::SerializeStructVariant, Error> {
            Err(self.refused())
        }
    };
}

impl Key<'_> {
    /// serde_json's "key must be a string".
    fn refused(&self) -> Error {
        key_error(false)
    }
}

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.0, v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
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

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0
            .extend_from_slice(if v { b"\"true\"" } else { b"\"false\"" });
        Ok(())
    }

    quoted!(
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
    );

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        if !v.is_finite() {
            return Err(key_error(true));
        }
        self.0.push(b'"');
        serde_json::to_writer(&mut *self.0, &v)?;
        self.0.push(b'"');
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        if !v.is_finite() {
            return Err(key_error(true));
        }
        self.0.push(b'"');
        serde_json::to_writer(&mut *self.0, &v)?;
        self.0.push(b'"');
        Ok(())
    }

    refuse!(
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    refuse_compounds!();
}

/// The field of a verbatim struct: a plain string, appended as it is (as
/// serde_json's `RawValueStrEmitter` and `NumberStrEmitter` take only
/// `serialize_str`); anything else is serde_json's error for it, and an
/// error the value raises itself passes through.
struct RawStr<'o> {
    out: &'o mut Vec<u8>,
    name: &'static str,
}

impl RawStr<'_> {
    /// serde_json's error for a verbatim field that is not a string.
    fn refused(&self) -> Error {
        verbatim_error(self.name, false)
    }
}

impl ser::Serializer for RawStr<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        // A `RawValue` built from pretty-printed JSON holds newlines. There
        // a `\n` can only be whitespace between tokens (a JSON string
        // cannot hold a raw one), so a space means the same and keeps the
        // channel's one message per line. Done here, the only place a raw
        // newline can come from, instead of a pass over every line.
        let from = self.out.len();
        self.out.extend_from_slice(v.as_bytes());
        for b in &mut self.out[from..] {
            if *b == b'\n' {
                *b = b' ';
            }
        }
        Ok(())
    }

    refuse!(
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
        serialize_char(char),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(self.refused())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(self.refused())
    }

    refuse_compounds!();
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
        same(&[0i64, -1, 9, 10, -10, 99, 100, 1 << 53, i64::MAX, i64::MIN]);
        same(&(
            u8::MAX,
            u16::MAX,
            u32::MAX,
            i8::MIN,
            i16::MIN,
            i32::MIN,
            0u64,
            10u64,
        ));
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
    /// name; serde_json writes its field's string as it is when its
    /// `raw_value` feature is on, as a map otherwise, and refuses a field
    /// of another name or a value that is not a string. Ours does what this
    /// build's serde_json does, including inside an internally tagged enum
    /// (serde adds the tag as a field, which serde_json refuses).
    #[test]
    fn private_structs_follow_serde_json() {
        struct Raw(&'static str, &'static str);
        impl Serialize for Raw {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct(self.0, 1)?;
                st.serialize_field(self.0, self.1)?;
                st.end()
            }
        }
        #[derive(Serialize)]
        #[serde(tag = "t")]
        enum Tagged {
            R(Raw),
        }
        for name in [super::RAW_VALUE, super::NUMBER] {
            same(&[Raw(name, "{ \"a\" : 1 }")]);
            same(&Raw(name, "7"));
            same(&Tagged::R(Raw(name, "7")));
        }
        struct NotAString(&'static str);
        impl Serialize for NotAString {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct(self.0, 1)?;
                st.serialize_field(self.0, &'x')?;
                st.end()
            }
        }
        same(&NotAString(super::RAW_VALUE));
        same(&NotAString(super::NUMBER));
        // An error the field's value raises itself is the caller's, unchanged.
        struct Boom;
        impl Serialize for Boom {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("boom"))
            }
        }
        struct Fails(&'static str);
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct(self.0, 1)?;
                st.serialize_field(self.0, &Boom)?;
                st.end()
            }
        }
        same(&Fails(super::RAW_VALUE));
        same(&Fails(super::NUMBER));
        // The real thing (the tests build serde_json with `raw_value`).
        assert!(super::verbatim(super::RAW_VALUE));
        let raw =
            serde_json::value::RawValue::from_string("{ \"a\" : [1, \"x\"] }".into()).unwrap();
        same(&(&raw, [&raw], BTreeMap::from([("k", &raw)])));
        #[derive(Serialize)]
        #[serde(tag = "t")]
        enum TaggedRaw {
            R(Box<serde_json::value::RawValue>),
        }
        same(&TaggedRaw::R(raw.clone()));
        // Pretty-printed raw JSON stays on one line: its newlines are
        // whitespace between tokens, written as spaces.
        let pretty = serde_json::to_string_pretty(&json!({"a": [1, "x\ny"], "b": {}})).unwrap();
        assert!(pretty.contains('\n'));
        let raw = serde_json::value::RawValue::from_string(pretty).unwrap();
        let mut out = Vec::new();
        super::write(&mut out, &[&raw]).unwrap();
        assert!(!out.contains(&b'\n'), "{}", String::from_utf8_lossy(&out));
        let back: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, json!([{"a": [1, "x\ny"], "b": {}}]));
    }

    /// A key is serialized once: one whose output changes from call to
    /// call comes out as serde_json writes it.
    #[test]
    fn keys_are_serialized_once() {
        use std::cell::Cell;
        struct Counting(Cell<u32>);
        impl Serialize for Counting {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let n = self.0.get();
                self.0.set(n + 1);
                s.serialize_u32(n)
            }
        }
        struct OneEntry(Counting);
        impl Serialize for OneEntry {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(&self.0, &0)?;
                map.end()
            }
        }
        let mut out = Vec::new();
        super::write(&mut out, &OneEntry(Counting(Cell::new(0)))).unwrap();
        assert_eq!(out, br#"{"0":0}"#);
    }

    /// A sequence that declared no items and then has some: serde_json
    /// writes `[],1,2]`; ours stays JSON.
    #[test]
    fn a_declared_length_that_lies_still_gives_json() {
        struct Liar;
        impl Serialize for Liar {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(0))?;
                seq.serialize_element(&1)?;
                seq.serialize_element(&2)?;
                seq.end()
            }
        }
        let mut out = Vec::new();
        super::write(&mut out, &Liar).unwrap();
        assert_eq!(out, b"[1,2]");
    }

    /// Nesting up to the limit is written as serde_json writes it; one
    /// level more is an error, not a stack overflow.
    #[test]
    fn nesting_past_the_limit_is_an_error() {
        let nest = |depth: u32| {
            let mut v = json!(0);
            for i in 0..depth {
                v = if i % 2 == 0 {
                    json!([v])
                } else {
                    json!({ "k": v })
                };
            }
            v
        };
        same(&nest(super::MAX_DEPTH));
        let mut out = Vec::new();
        let err = super::write(&mut out, &nest(super::MAX_DEPTH + 1)).unwrap_err();
        assert!(err.to_string().contains("nests more than 1024"), "{err}");
        // Variants count as the object they are written as.
        #[derive(Serialize)]
        enum E {
            V(Box<E>),
            End,
        }
        let mut e = E::End;
        for _ in 0..=super::MAX_DEPTH {
            e = E::V(Box::new(e));
        }
        assert!(super::write(&mut Vec::new(), &e).is_err());
    }
}
