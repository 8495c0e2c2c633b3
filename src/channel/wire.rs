//! The rules of one line on the wire: how a message is encoded and
//! decoded, and which lines belong to the protocol (`NODE_...`).

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, DeserializeOwned, IgnoredAny};
use serde::Serialize;

use crate::error::ChannelError;

/// The largest encode buffer a thread keeps for its next message (see
/// [`Line`]): the line of a message holding a 64 KiB string fits (the
/// encoder reserves a long string's length and a little more, so such a
/// line's buffer is not doubled for its last bytes).
const KEEP_LINE_CAPACITY: usize = 128 * 1024;

thread_local! {
    /// This thread's spare encode buffer, empty; taken by [`encode_line`]
    /// and given back when its [`Line`] drops.
    static SPARE_LINE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// One encoded message, in a buffer that goes back to the thread that
/// drops it for the next message: a sender allocated and freed a buffer
/// per message, which callgrind put at about 100 of a ping-pong parent's
/// 5,500 user-space instructions per round trip. A sender re-entered from a
/// `Serialize` impl finds no spare and allocates, as before.
pub(super) struct Line(Vec<u8>);

#[cfg(test)]
impl Line {
    pub(super) fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl Deref for Line {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.capacity() > KEEP_LINE_CAPACITY {
            return;
        }
        let mut spare = std::mem::take(&mut self.0);
        spare.clear();
        // During thread teardown the slot may be gone: the buffer is freed.
        let _ = SPARE_LINE.try_with(|slot| slot.set(spare));
    }
}

/// The capacity of this thread's spare encode buffer.
#[cfg(test)]
pub(super) fn spare_line_capacity() -> usize {
    SPARE_LINE.with(|slot| {
        let spare = slot.take();
        let capacity = spare.capacity();
        slot.set(spare);
        capacity
    })
}

/// One message as its wire line: compact JSON and `\n`.
pub(super) fn encode_line<T: Serialize + ?Sized>(msg: &T) -> Result<Line, ChannelError> {
    // Serialize outside the lock: user code (`Serialize` impls) never runs
    // while the queue is locked.
    let mut line = Line(SPARE_LINE.try_with(Cell::take).unwrap_or_default());
    if line.0.capacity() == 0 {
        line.0.reserve(128);
    }
    // No raw newline in it: strings are escaped, and the encoder turns
    // those of a pretty-printed `RawValue` into spaces.
    super::json::write(&mut line.0, msg).map_err(ChannelError::Encode)?;
    line.0.push(b'\n');
    Ok(line)
}

/// Decodes one line: UTF-8 first (serde_json does not check the contents
/// of strings it skips), then JSON.
pub(super) fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, ChannelError> {
    // `from_slice` checks the UTF-8 of the strings it keeps as it parses
    // them; a whole-line `from_utf8` first cost 6 % of a small-message
    // receiver. Only a failed line is checked whole, to say why.
    serde_json::from_slice(line).map_err(|source| ChannelError::Decode {
        excerpt: excerpt(line),
        source: match std::str::from_utf8(line) {
            Err(e) => de::Error::custom(format_args!("invalid UTF-8 at byte {}", e.valid_up_to())),
            Ok(_) => source,
        },
    })
}

/// The start of a line, for error messages.
pub(super) fn excerpt(line: &[u8]) -> String {
    const MAX: usize = 100;
    let mut text = String::from_utf8_lossy(&line[..line.len().min(MAX)]).into_owned();
    if line.len() > MAX {
        text.push('…');
    }
    text
}

/// The `cmd` of a protocol message, or `None` for a user message.
///
/// Node's rule (`lib/internal/child_process.js isInternal`): a non-null
/// object whose `cmd` is a string longer than 5 chars starting with `NODE_`,
/// judged after `JSON.parse`, so escapes count as what they decode to
/// (`"NODE\u005fHANDLE"` is `NODE_HANDLE`). The cheap test (starts with
/// `{`, and holds `"NODE_` or an escape `\u`) rules out nearly every user
/// message before anything is parsed: Node writes non-ASCII as raw UTF-8,
/// so `\u` is rare.
pub(super) fn internal_cmd(line: &[u8]) -> Option<String> {
    let first = line.iter().find(|&&b| !matches!(b, b' ' | b'\t' | b'\r'))?;
    if *first != b'{' || !may_be_internal(line) {
        return None;
    }
    let CmdProbe(cmd) = serde_json::from_slice(line).ok()?;
    cmd.filter(|cmd| cmd.len() > 5 && cmd.starts_with("NODE_"))
}

/// Whether `line` holds `"NODE_` or a `\u` escape.
///
/// One pass with `memchr2`. On a short line it looks for the `N` of
/// `"NODE_` and for backslashes, both rare in a small message, so one
/// vector scan usually settles it: the byte-by-byte loop it replaces cost
/// 343 instructions per `{"n":102,"echo":true}` (callgrind), a twentieth
/// of a ping-pong child's work per message. On a longer line, where text
/// may hold many `N`s, it goes from quote to backslash. Per small message,
/// `memmem::find` (which builds a searcher per call) and a second pass for
/// the escape had cost more than the searches themselves: 6 % of a
/// receiver; so did comparing every 6-byte window (a `memcmp` call each).
/// The test after a hit is a comparison of fixed-size arrays, which
/// compiles to two loads.
#[inline]
pub(super) fn may_be_internal(line: &[u8]) -> bool {
    const SHORT: usize = 64;
    if line.len() < SHORT {
        memchr::memchr2_iter(b'N', b'\\', line).any(|i| starts_pattern(line, i))
    } else {
        memchr::memchr2_iter(b'"', b'\\', line).any(|i| match line[i] {
            b'"' => line[i + 1..].first_chunk::<5>() == Some(b"NODE_"),
            _ => line.get(i + 1) == Some(&b'u'),
        })
    }
}

/// Whether the `N` or backslash at `line[i]` starts what
/// [`may_be_internal`] looks for: the `N` of `"NODE_`, or a `\u` escape.
#[inline]
pub(super) fn starts_pattern(line: &[u8], i: usize) -> bool {
    match line[i] {
        b'N' => i > 0 && line[i - 1] == b'"' && line[i..].first_chunk::<5>() == Some(b"NODE_"),
        _ => line.get(i + 1) == Some(&b'u'),
    }
}

/// Deserializes only the top-level `cmd` of an object, skipping the rest.
struct CmdProbe(Option<String>);

impl<'de> de::Deserialize<'de> for CmdProbe {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Probe;
        impl<'de> de::Visitor<'de> for Probe {
            type Value = CmdProbe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<CmdProbe, A::Error> {
                let mut cmd = None;
                while let Some(key) = map.next_key::<IsCmd>()? {
                    if key.0 {
                        // Last one wins, as in JSON.parse.
                        cmd = match map.next_value::<serde_json::Value>()? {
                            serde_json::Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(CmdProbe(cmd))
            }
        }
        deserializer.deserialize_map(Probe)
    }
}

/// A map key, remembered only as "is it `cmd`".
struct IsCmd(bool);

impl<'de> de::Deserialize<'de> for IsCmd {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl de::Visitor<'_> for Key {
            type Value = IsCmd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<IsCmd, E> {
                Ok(IsCmd(key == "cmd"))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// The `cmd` of a parsed message if it is the protocol's own (Node's
/// `isInternal`), as [`internal_cmd`] judges a line.
pub(super) fn internal_cmd_of(value: &serde_json::Value) -> Option<String> {
    let cmd = value.as_object()?.get("cmd")?.as_str()?;
    (cmd.len() > 5 && cmd.starts_with("NODE_")).then(|| cmd.to_string())
}
