//! Splitting received bytes into lines, without touching a socket.
//!
//! One buffer, read into at least 64 KiB at a time (it grows for long
//! lines), split on `\n` with `memchr`, each line parsed in place. Lines
//! longer than the limit are dropped as they stream in, without being
//! buffered whole: the buffer never grows past the limit plus two reads,
//! and reads go into its spare capacity, so memory that was never written
//! is never touched (no zero-filling).

use serde::de;

use super::wire::{excerpt, internal_cmd, may_be_internal, starts_pattern};
use super::KEEP_CAPACITY;
use crate::error::ChannelError;

/// Reads ask for at least this much (libuv reads 64 KiB at a time).
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// What the framer has for the reader next.
#[derive(Debug)]
pub(super) enum Step {
    /// A message for the user: `buf[start..end]`, without the `\n`.
    Message(usize, usize),
    /// A protocol message (`cmd` starting with `NODE_`), with its `cmd`
    /// and `buf[start..end]`.
    Internal(String, usize, usize),
    /// An error for one message (too long, cut off at the end of stream).
    Error(ChannelError),
    /// Nothing complete yet: read more into [`Framer::room`].
    NeedMore,
    /// The stream ended and everything in it was delivered.
    End,
    /// A blank line, skipped: returned (not skipped in a loop here) so the
    /// reader can charge it to tokio's task budget.
    Blank,
}

/// Splits received bytes into `\n`-terminated messages, in place, without
/// touching a socket: the reader feeds it, and so does the fuzz harness
/// (`fuzz/`), which checks it over arbitrary bytes in arbitrary chunks.
pub(super) struct Framer {
    /// `buf[start..]` is received and not yet consumed; `buf[start..scan]`
    /// is known to hold no `\n`; the spare capacity is where reads go.
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    scan: usize,
    /// No byte of `buf[start..clean]` is an `N` or a backslash (but those
    /// of the line `Framer::may_be_internal` just judged plain, about to be
    /// consumed), so no line ending there can be a protocol message; stale,
    /// and rescanned, once `start` has passed it.
    clean: usize,
    /// We are skipping the rest of a line longer than `max_len`.
    discarding: bool,
    pub(super) eof: bool,
    pub(super) max_len: usize,
    /// The stream offset of `buf[0]`: bytes received before it.
    base: u64,
    /// The last line skipped as too long was a `NODE_HANDLE` envelope: its
    /// sender waits for an answer.
    pub(super) skipped_handle: bool,
}

impl Framer {
    pub(crate) fn new(max_len: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            clean: 0,
            discarding: false,
            eof: false,
            max_len,
            base: 0,
            skipped_handle: false,
        }
    }

    /// The stream offset of `buf[i]`: how many bytes came before it.
    pub(crate) fn offset(&self, i: usize) -> u64 {
        self.base + i as u64
    }

    /// The bytes of a message `next_message` returned.
    pub(crate) fn get(&self, start: usize, end: usize) -> &[u8] {
        &self.buf[start..end]
    }

    /// The buffer to read into: append to it (into its spare capacity,
    /// which holds at least [`READ_CHUNK`] bytes). With it, the stream
    /// offset of the first byte appended.
    pub(crate) fn room(&mut self) -> (&mut Vec<u8>, u64) {
        self.make_room();
        let at = self.offset(self.buf.len());
        (&mut self.buf, at)
    }

    /// Bytes received and not yet consumed.
    pub(super) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether the reader has nothing to do but read: no whole line is
    /// buffered, the stream has not ended, and the part of a line that is
    /// buffered is within the limit (past it, [`Framer::next_message`] has
    /// an error to report).
    #[inline(always)]
    pub(crate) fn wants_bytes(&mut self) -> bool {
        if self.eof || self.discarding || self.buf.len() - self.start > self.max_len {
            return false;
        }
        if find_newline(&self.buf[self.scan..]).is_some() {
            return false;
        }
        // As `next_line` does: the next search starts past these bytes.
        self.scan = self.buf.len();
        true
    }

    /// The stream ended.
    pub(crate) fn set_eof(&mut self) {
        self.eof = true;
    }

    /// Bytes held, for the fuzz harness's memory bound.
    #[cfg(any(fuzzing, test))]
    pub(super) fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// The next message: blank lines are told apart, for the reader to skip
    /// (Node never writes them, and would die reading one), and so are
    /// protocol messages.
    pub(crate) fn next_message(&mut self) -> Step {
        match self.next_line() {
            Ok(Some((start, end))) => {
                let line = &self.buf[start..end];
                if line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                    return Step::Blank;
                }
                match internal_cmd(line) {
                    Some(cmd) => Step::Internal(cmd, start, end),
                    None => Step::Message(start, end),
                }
            }
            Ok(None) if self.eof => Step::End,
            Ok(None) => Step::NeedMore,
            Err(e) => Step::Error(e),
        }
    }

    /// The next message if it is the common kind: a whole line, not too
    /// long, not blank, and plainly not a protocol message; `None` leaves
    /// everything else (and an incomplete line) to [`Framer::next_message`].
    ///
    /// Inlined into the reader: a [`Step`] holds a `ChannelError`, and
    /// returning one through memory, then copying it on as the reader's
    /// result, cost a small-message receiver 10 % in stalled loads (perf
    /// annotate).
    #[inline(always)]
    pub(crate) fn next_plain(&mut self) -> Option<(usize, usize)> {
        if self.discarding {
            return None;
        }
        let Some(i) = find_newline(&self.buf[self.scan..]) else {
            // As `next_line` does: the next search starts past these bytes
            // (`wants_bytes`, asked next, then has none to look at).
            self.scan = self.buf.len();
            return None;
        };
        let (start, end) = (self.start, self.scan + i);
        if end - start > self.max_len {
            return None;
        }
        let line = &self.buf[start..end];
        let first = line
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b'\r'))?;
        if line[first] == b'{' && self.may_be_internal(start, end) {
            return None;
        }
        self.start = end + 1;
        self.scan = self.start;
        Some((start, end))
    }

    /// [`may_be_internal`] for the line `buf[start..end]`, with the
    /// search for its bytes (`N`, backslash) run ahead through everything
    /// buffered, once per buffer rather than once per line: `memchr2` on a
    /// line of a dozen bytes cost 160 instructions per message (callgrind,
    /// one-way receiver), most of them setting up the search. The search
    /// goes from hit to hit; each hit in the line is judged where it is,
    /// and the one past the line becomes the frontier the next lines start
    /// from. A line with many hits (text full of `N`s) is judged by
    /// `may_be_internal`'s own scan instead, which goes from quote to quote
    /// on a long line. Per message (callgrind, one-way receiver): 1,861 ->
    /// 1,667 instructions for `{"n":i}`, 2,021 -> 1,899 for `{"Name":i}`.
    ///
    /// When the line may be internal, `clean` goes back to `start`.
    #[inline(always)]
    fn may_be_internal(&mut self, start: usize, end: usize) -> bool {
        const MAX_HITS: usize = 4;
        let mut at = self.clean.max(start);
        let mut hits = 0;
        while at < end {
            let hit =
                memchr::memchr2(b'N', b'\\', &self.buf[at..]).map_or(self.buf.len(), |i| at + i);
            if hit >= end {
                self.clean = hit;
                return false;
            }
            hits += 1;
            let line = &self.buf[start..end];
            if hits > MAX_HITS {
                self.clean = start;
                return may_be_internal(line);
            }
            if starts_pattern(line, hit - start) {
                self.clean = start;
                return true;
            }
            at = hit + 1;
        }
        false
    }

    /// The next `\n`-terminated line (without the `\n`); `Ok(None)` when
    /// more bytes are needed or, after `set_eof`, at the end.
    fn next_line(&mut self) -> Result<Option<(usize, usize)>, ChannelError> {
        loop {
            if let Some(i) = find_newline(&self.buf[self.scan..]) {
                let (start, end) = (self.start, self.scan + i);
                self.start = end + 1;
                self.scan = self.start;
                if std::mem::take(&mut self.discarding) {
                    continue;
                }
                if end - start > self.max_len {
                    self.skipped_handle = is_handle_envelope(&self.buf[start..end]);
                    return Err(ChannelError::TooLong {
                        limit: self.max_len,
                    });
                }
                return Ok(Some((start, end)));
            }
            self.scan = self.buf.len();
            if self.discarding {
                self.start = self.buf.len();
            } else if self.buf.len() - self.start > self.max_len {
                // Drop what we have of this line and the rest of it as it
                // arrives, so one huge message cannot exhaust memory.
                self.discarding = true;
                self.skipped_handle = is_handle_envelope(&self.buf[self.start..]);
                self.start = self.buf.len();
                return Err(ChannelError::TooLong {
                    limit: self.max_len,
                });
            }
            if self.eof {
                let rest = &self.buf[self.start..self.buf.len()];
                self.start = self.buf.len();
                if !self.discarding && rest.iter().any(|&b| !matches!(b, b' ' | b'\t' | b'\r')) {
                    // Node drops such a fragment silently; we say so.
                    return Err(ChannelError::Decode {
                        excerpt: excerpt(rest),
                        source: de::Error::custom("the channel closed in the middle of a message"),
                    });
                }
                self.discarding = false;
            }
            return Ok(None);
        }
    }

    /// Ensures at least [`READ_CHUNK`] free bytes after `end`, moving the
    /// unconsumed bytes to the front or growing the buffer.
    fn make_room(&mut self) {
        if self.start == self.buf.len() {
            self.base += self.start as u64;
            self.start = 0;
            self.scan = 0;
            self.clean = 0;
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
        if self.buf.capacity() - self.buf.len() >= READ_CHUNK {
            return;
        }
        if self.start > 0 {
            self.base += self.start as u64;
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.scan -= self.start;
            self.clean = self.clean.saturating_sub(self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            // Double, but never past what one line of `max_len` bytes and a
            // read need: a longer line is dropped before it gets there.
            let len = self.buf.len();
            let cap = (self.buf.capacity() * 2)
                .min(self.max_len.saturating_add(2 * READ_CHUNK))
                .max(len + READ_CHUNK);
            self.buf.reserve_exact(cap - len);
        }
    }
}

/// The fuzz harness's entry point (`fuzz/fuzz_targets/framing.rs`); not part
/// of the API. Feeds `data` to a [`Framer`] in the chunks `cuts` marks, and
/// checks, with panics the fuzzer catches, that:
/// - the framer never holds more than `max_len` plus three read chunks,
///   whatever the input (no unbounded memory, and not twice the limit);
/// - what it yields equals a naive model: split the whole input on `\n`,
///   skip blank and `NODE_` lines, one `TooLong` per over-long line, one
///   error for a non-blank fragment cut off by the end of the stream;
/// - the readers' shortcut, [`Framer::next_plain`] tried before
///   [`Framer::next_message`] (every other step, so that both paths see
///   plain lines, and the shortcut meets every state), changes none of
///   that; nor does reading on whenever [`Framer::wants_bytes`] says so
///   (as `recv` does), without asking `next_message`.
#[cfg(any(fuzzing, test))]
pub fn fuzz_framing(data: &[u8], cuts: &[usize], max_len: usize) {
    #[derive(Debug, PartialEq)]
    enum Out {
        Message(Vec<u8>),
        Internal(String),
        TooLong,
        Cut,
    }
    let bound = max_len + 3 * READ_CHUNK;
    let mut framer = Framer::new(max_len);
    let mut got = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    let mut chunks = cuts.into_iter().scan(0, |at, cut| {
        let chunk = &data[*at..cut];
        *at = cut;
        Some(chunk)
    });
    // What the current "read" has not delivered yet: a chunk larger than
    // the framer's free space arrives in several reads, as from a socket.
    let mut pending: &[u8] = &[];
    // One read: the next bytes, or the end of the stream.
    let mut read = |framer: &mut Framer| {
        while pending.is_empty() {
            match chunks.next() {
                Some(chunk) => pending = chunk,
                None => break,
            }
        }
        if pending.is_empty() {
            framer.set_eof();
        } else {
            let (room, _) = framer.room();
            let n = (room.capacity() - room.len()).min(pending.len());
            room.extend_from_slice(&pending[..n]);
            pending = &pending[n..];
        }
    };
    for step in 0.. {
        if step % 2 == 0 {
            if let Some((start, end)) = framer.next_plain() {
                got.push(Out::Message(framer.get(start, end).to_vec()));
                continue;
            }
            // A receiver's loop (`poll_recv`): read on without asking
            // `next_message` while the framer says there is nothing else
            // to do; every other time, so both ways meet every state.
            if step % 4 == 0 && framer.wants_bytes() {
                read(&mut framer);
                continue;
            }
        }
        match framer.next_message() {
            Step::Message(start, end) => got.push(Out::Message(framer.get(start, end).to_vec())),
            Step::Internal(cmd, _, _) => got.push(Out::Internal(cmd)),
            Step::Error(ChannelError::TooLong { .. }) => got.push(Out::TooLong),
            Step::Error(_) => got.push(Out::Cut),
            Step::End => break,
            Step::Blank => {}
            Step::NeedMore => read(&mut framer),
        }
        assert!(
            framer.held() <= bound,
            "framer holds {} bytes (bound {bound})",
            framer.held()
        );
    }

    let mut model = Vec::new();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let tail = lines.pop().unwrap_or_default();
    let blank = |line: &[u8]| line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'));
    for line in lines {
        if line.len() > max_len {
            model.push(Out::TooLong);
        } else if blank(line) {
        } else if let Some(cmd) = internal_cmd(line) {
            model.push(Out::Internal(cmd));
        } else {
            model.push(Out::Message(line.to_vec()));
        }
    }
    if tail.len() > max_len {
        model.push(Out::TooLong);
    } else if !blank(tail) {
        model.push(Out::Cut);
    }
    assert_eq!(got, model);
}

/// Whether `line` (or what of it is buffered) starts as a `NODE_HANDLE`
/// envelope, `{"cmd":"NODE_HANDLE"`, as Node and our sender write it (the
/// `cmd` key first), whitespace allowed between the tokens. A line cut
/// before that much of it came is not taken for one.
fn is_handle_envelope(line: &[u8]) -> bool {
    let mut rest = line;
    for token in [&b"{"[..], b"\"cmd\"", b":", b"\"NODE_HANDLE\""] {
        let at = rest
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
            .unwrap_or(rest.len());
        match rest[at..].strip_prefix(token) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    true
}

/// The first `\n` in `bytes`. Small messages are the common case and a
/// line of them is a few dozen bytes: those are looked at eight bytes at a
/// time in a register, since `memchr`'s call through its CPU-dispatched
/// pointer cost more per line than the scan; past them, `memchr`.
#[inline]
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const NEAR: usize = 64;
    let near = &bytes[..bytes.len().min(NEAR)];
    match near_newline(near) {
        Some(i) => Some(i),
        None if bytes.len() > NEAR => memchr::memchr(b'\n', &bytes[NEAR..]).map(|i| NEAR + i),
        None => None,
    }
}

/// The first `\n` in a short `bytes`, a word at a time: the zero-byte test
/// of "Bit Twiddling Hacks" (`haszero`) on the word XOR `\n` in every byte.
/// The test can flag bytes above a real match (a borrow carries upward),
/// never below one, so the lowest flag is the first `\n`; byte `i` of the
/// word is `bytes[i]` on any target, by `from_le_bytes`. With `{"n":i}`
/// lines it saved 25 of a receiver's 1,695 instructions per message
/// (callgrind).
#[inline]
fn near_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = bytes.chunks_exact(8);
    for (k, word) in (&mut words).enumerate() {
        let x = u64::from_le_bytes(word.try_into().expect("a chunk of 8")) ^ NEWLINES;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(k * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let tail = words.remainder();
    let at = bytes.len() - tail.len();
    tail.iter().position(|&b| b == b'\n').map(|i| at + i)
}
