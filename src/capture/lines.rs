//! Splitting a child's output into lines as it arrives, for
//! [`Exec::lines`](crate::Exec::lines).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

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

/// The lines read and not yet taken, shared by the run that reads them
/// and the [`Lines`](crate::Lines) stream that hands them out, each side
/// waking the other: the consumer when lines arrive or the run ends, the
/// run when the consumer made room.
#[derive(Clone, Default)]
pub(crate) struct Queue(Arc<Mutex<QueueState>>);

#[derive(Default)]
struct QueueState {
    lines: VecDeque<Line>,
    /// The consumer, waiting for a line.
    consumer: Option<Waker>,
    /// The run, waiting for room.
    producer: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The oldest line, if any; wakes a run waiting for room.
    pub(crate) fn pop(&self) -> Option<Line> {
        let mut st = self.lock();
        let line = st.lines.pop_front()?;
        if st.lines.len() < QUEUE_CAP {
            if let Some(waker) = st.producer.take() {
                waker.wake();
            }
        }
        Some(line)
    }

    /// The oldest line, or `Pending` with the consumer's waker kept for
    /// the next line.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Line> {
        if let Some(line) = self.pop() {
            return Poll::Ready(line);
        }
        let mut st = self.lock();
        match st.lines.pop_front() {
            Some(line) => Poll::Ready(line),
            None => {
                st.consumer = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn push(&self, lines: impl IntoIterator<Item = Line>) {
        let mut st = self.lock();
        let before = st.lines.len();
        st.lines.extend(lines);
        if st.lines.len() > before {
            if let Some(waker) = st.consumer.take() {
                waker.wake();
            }
        }
    }

    /// Whether fewer than [`QUEUE_CAP`] lines wait; if not, the run's
    /// waker is kept for when the consumer takes one.
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.lines.len() < QUEUE_CAP {
            Poll::Ready(())
        } else {
            st.producer = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

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

    /// Ready when the consumer has taken enough lines for more to be
    /// read; the run is woken when it does.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.queue.poll_room(cx)
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
        self.queue.push(lines);
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
            self.queue.push([last]);
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
