//! Splitting a child's output into lines as it arrives, for
//! [`Exec::lines`](crate::Exec::lines).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use crate::error::Stream;
use crate::sys;

/// One line a child wrote, from [`Lines`](crate::Lines).
///
/// The bytes are exactly what the child wrote, without the `\n`; nothing is
/// dropped or replaced: [`Line::text`] decodes lossily for display,
/// [`Line::as_bytes`] gives the bytes. A line longer than 1 MiB comes in
/// pieces of 1 MiB (all but the last with [`Line::is_complete`] false), so
/// a child that never writes `\n` cannot make this process grow; the last
/// line of a stream that does not end in `\n` is not complete either.
///
/// # Examples
///
/// ```
/// use child_process as cp;
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let mut lines = cp::exec("echo out; echo err >&2").lines()?;
/// while let Some(line) = lines.next().await {
///     let line = line?;
///     println!("[{}] {}", line.stream(), line.text());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Line {
    stream: Stream,
    bytes: Vec<u8>,
    complete: bool,
}

impl Line {
    /// Which stream the line came from.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// use futures::StreamExt;
    /// let mut lines = child_process::exec("echo oops >&2").lines()?;
    /// let line = lines.next().await.unwrap()?;
    /// assert_eq!(line.stream(), child_process::Stream::Stderr);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// The line's bytes, without the `\n`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// use futures::StreamExt;
    /// let mut lines = child_process::exec("printf 'a\\377\\n'").lines()?;
    /// assert_eq!(lines.next().await.unwrap()?.as_bytes(), b"a\xff");
    /// # Ok(())
    /// # }
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The line as text; bytes that are not UTF-8 show as `U+FFFD`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// use futures::StreamExt;
    /// let mut lines = child_process::exec("echo héllo").lines()?;
    /// assert_eq!(lines.next().await.unwrap()?.text(), "héllo");
    /// # Ok(())
    /// # }
    /// ```
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }

    /// Whether the line ended with `\n` (not a piece of a line over 1 MiB,
    /// nor a last line without one).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// use futures::StreamExt;
    /// let mut lines = child_process::exec("printf 'done\\nno newline'").lines()?;
    /// assert!(lines.next().await.unwrap()?.is_complete());
    /// assert!(!lines.next().await.unwrap()?.is_complete());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The bytes, taken out.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// use futures::StreamExt;
    /// let mut lines = child_process::exec("echo x").lines()?;
    /// assert_eq!(lines.next().await.unwrap()?.into_bytes(), b"x");
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("stream", &self.stream)
            .field("text", &self.text())
            .field("complete", &self.complete)
            .finish()
    }
}

/// The lines both streams of one run produce, in the order they were read.
pub(crate) type Queue = Arc<Mutex<VecDeque<Line>>>;

/// A line longer than this is handed out in pieces.
pub(crate) const MAX_LINE: usize = 1024 * 1024;
/// Reading pauses while this many lines wait to be taken.
const QUEUE_CAP: usize = 1024;
/// What is kept of a stream for the error of a failed run.
const TAIL: usize = 64 * 1024;
const CHUNK: usize = 64 * 1024;

/// One stream read into lines.
pub(crate) struct LineSink {
    stream: Stream,
    /// The part of a line read so far (no `\n` in `buf[..scan]`).
    buf: Vec<u8>,
    scan: usize,
    queue: Queue,
    tail: Vec<u8>,
    short: bool,
}

impl LineSink {
    pub(crate) fn new(stream: Stream, queue: Queue) -> LineSink {
        LineSink {
            stream,
            buf: Vec::new(),
            scan: 0,
            queue,
            tail: Vec::new(),
            short: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Line>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the consumer has taken enough lines for more to be read.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().len() < QUEUE_CAP
    }

    pub(crate) fn read_from(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.buf.reserve(CHUNK);
        let n = sys::read_to_spare(fd, &mut self.buf, CHUNK)?;
        self.short = n < CHUNK;
        if n == 0 {
            self.flush();
            return Ok(0);
        }
        let new = &self.buf[self.buf.len() - n..];
        self.tail.extend_from_slice(new);
        if self.tail.len() > 2 * TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
        let mut start = 0;
        let mut lines = Vec::new();
        for end in memchr::memchr_iter(b'\n', &self.buf[self.scan..]).map(|i| i + self.scan) {
            lines.push(self.line(start, end, true));
            start = end + 1;
        }
        self.buf.drain(..start);
        self.scan = self.buf.len();
        while self.buf.len() >= MAX_LINE {
            let piece: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
            lines.push(Line {
                stream: self.stream,
                bytes: piece,
                complete: false,
            });
            self.scan = self.buf.len();
        }
        self.lock().extend(lines);
        Ok(n)
    }

    fn line(&self, start: usize, end: usize, complete: bool) -> Line {
        Line {
            stream: self.stream,
            bytes: self.buf[start..end].to_vec(),
            complete,
        }
    }

    pub(crate) fn last_read_was_short(&self) -> bool {
        self.short
    }

    /// Hand out what is left of a line without `\n`.
    pub(crate) fn flush(&mut self) {
        if !self.buf.is_empty() {
            let last = Line {
                stream: self.stream,
                bytes: std::mem::take(&mut self.buf),
                complete: false,
            };
            self.scan = 0;
            self.lock().push_back(last);
        }
    }

    /// What the result keeps of the stream: its last 64 KiB.
    pub(crate) fn into_tail(mut self) -> Vec<u8> {
        self.flush();
        if self.tail.len() > TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
        self.tail
    }
}
