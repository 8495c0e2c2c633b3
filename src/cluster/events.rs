//! What the cluster hands its reader: the primary's events on their way to
//! the [`Primary`](super::Primary), and the primary's messages on their way
//! to a [`Worker`](super::Worker)'s `recv`. A queue that keeps the newest
//! unread ones, at most [`EVENTS_KEPT`] of them and [`BYTES_KEPT`] of their
//! memory.
//!
//! Unbounded, a program that never reads events (it only wants the
//! workers to run) held every message and output line its workers ever
//! sent: a worker that floods its channel grew the primary without limit;
//! a worker that never calls `recv` grew the same way with what its
//! primary sent. Bounded with back-pressure, the reader's side would stall
//! once the queue filled (the cluster's own messages share the channel).
//! So the queue drops the oldest, as a tokio `broadcast` receiver that
//! lags does, and says so: the next read says how many went
//! ([`Event::Lagged`], [`ChannelError::Lagged`](crate::ChannelError)).
//! Node drops a message no listener takes, silently.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::Event;

/// How many unread items the queue keeps.
pub(crate) const EVENTS_KEPT: usize = 4096;

/// How much memory the unread events may hold, as [`weight`] counts it:
/// a count alone let a worker sending 16 KiB arrays hold a gigabyte (an
/// outside attack measured it), since a parsed `Value` takes many times
/// its text. The newest event is kept whatever its size.
pub(crate) const BYTES_KEPT: usize = 64 << 20;

/// What the queue holds, and how much memory each takes.
pub(crate) trait Weigh {
    /// The memory `self` holds, about: its own size and what it points to.
    fn weight(&self) -> usize;
}

/// The memory a heap block of `bytes` takes: glibc's malloc rounds a
/// request up, with its 8-byte header, to 16 bytes, and gives at least 32.
/// Without the rounding a flood of one-character strings held 1.8 times
/// the budget (an outside attack).
fn block(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes + 8).next_multiple_of(16).max(32)
    }
}

/// What a parsed `Value` points to. Walked once, after the walk that parsed
/// it; its depth is bounded by the parser (128).
fn value_weight(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    // A map entry: the key, the value, and about as much again in the
    // B-tree's nodes.
    const ENTRY: usize = 2 * (size_of::<String>() + size_of::<Value>());
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => block(s.capacity()),
        Value::Array(a) => {
            block(a.capacity() * size_of::<Value>()) + a.iter().map(value_weight).sum::<usize>()
        }
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| ENTRY + block(k.capacity()) + value_weight(v))
            .sum(),
    }
}

/// A worker's message from the primary, or why one could not be read.
impl Weigh for Result<serde_json::Value, crate::ChannelError> {
    fn weight(&self) -> usize {
        size_of::<Self>()
            + match self {
                Ok(value) => value_weight(value),
                Err(crate::ChannelError::Decode { excerpt, .. }) => block(excerpt.capacity()),
                Err(_) => 0,
            }
    }
}

impl Weigh for Event {
    /// A worker's message, a line of output.
    fn weight(&self) -> usize {
        size_of::<Event>()
            + match self {
                Event::Message { message, .. } => value_weight(message),
                Event::Output { line, .. } => block(line.capacity()),
                _ => 0,
            }
    }
}

struct Inner<T> {
    queue: VecDeque<(T, usize)>,
    /// The sum of the queued events' weights.
    bytes: usize,
    /// Dropped since the last [`Event::Lagged`].
    missed: u64,
    senders: usize,
    receiver: bool,
    waker: Option<Waker>,
}

type Shared<T> = Arc<Mutex<Inner<T>>>;

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, Inner<T>> {
    // Nothing panics under the lock, and no user code runs there.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writing end (the primary's event sources, a worker's dispatcher).
pub(crate) struct EventSender<T = Event>(Shared<T>);

/// The reading end (the [`Primary`](super::Primary), a
/// [`Worker`](super::Worker)).
#[derive(Debug)]
pub(crate) struct EventReceiver<T = Event>(Shared<T>);

impl<T> std::fmt::Debug for Inner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("unread", &self.queue.len())
            .field("bytes", &self.bytes)
            .field("missed", &self.missed)
            .finish()
    }
}

/// A new queue.
pub(crate) fn channel<T: Weigh>() -> (EventSender<T>, EventReceiver<T>) {
    let shared = Arc::new(Mutex::new(Inner {
        queue: VecDeque::new(),
        bytes: 0,
        missed: 0,
        senders: 1,
        receiver: true,
        waker: None,
    }));
    (EventSender(shared.clone()), EventReceiver(shared))
}

impl<T: Weigh> EventSender<T> {
    /// Queues `event`, dropping the oldest unread ones while more than
    /// [`EVENTS_KEPT`] are queued or they weigh more than [`BYTES_KEPT`];
    /// `false` once the receiver is gone.
    pub(crate) fn send(&self, event: T) -> bool {
        let weight = event.weight();
        let mut dropped = Vec::new();
        let waker = {
            let mut inner = lock(&self.0);
            if !inner.receiver {
                return false;
            }
            inner.queue.push_back((event, weight));
            inner.bytes += weight;
            while inner.queue.len() > 1
                && (inner.queue.len() > EVENTS_KEPT || inner.bytes > BYTES_KEPT)
            {
                let Some((old, w)) = inner.queue.pop_front() else {
                    break;
                };
                inner.bytes -= w;
                inner.missed += 1;
                dropped.push(old);
            }
            inner.waker.take()
        };
        // Freed outside the lock: a big message takes a while.
        drop(dropped);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

impl<T> Clone for EventSender<T> {
    fn clone(&self) -> EventSender<T> {
        lock(&self.0).senders += 1;
        EventSender(self.0.clone())
    }
}

impl<T> Drop for EventSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut inner = lock(&self.0);
            inner.senders -= 1;
            if inner.senders > 0 {
                return;
            }
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl EventReceiver<Event> {
    /// The next event: [`Event::Lagged`] first when some were dropped,
    /// then the oldest kept; `None` once every sender is gone and the
    /// queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.poll_next(cx)
            .map(|next| next.map(|next| next.unwrap_or_else(|missed| Event::Lagged { missed })))
    }
}

impl<T> EventReceiver<T> {
    /// The next item: `Err` with how many were dropped first when some
    /// were, then the oldest kept; `None` once every sender is gone and the
    /// queue is empty.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, u64>>> {
        let mut inner = lock(&self.0);
        if inner.missed > 0 {
            return Poll::Ready(Some(Err(std::mem::take(&mut inner.missed))));
        }
        if let Some((item, weight)) = inner.queue.pop_front() {
            inner.bytes -= weight;
            return Poll::Ready(Some(Ok(item)));
        }
        if inner.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut inner.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for EventReceiver<T> {
    fn drop(&mut self) {
        let unread = {
            let mut inner = lock(&self.0);
            inner.receiver = false;
            inner.bytes = 0;
            std::mem::take(&mut inner.queue)
        };
        // Dropped outside the lock.
        drop(unread);
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;
    use crate::cluster::WorkerId;

    fn message(i: u64) -> Event {
        Event::Message {
            worker: 1 as WorkerId,
            message: serde_json::json!({ "i": i }),
        }
    }

    fn index(event: &Event) -> u64 {
        match event {
            Event::Message { message, .. } => message["i"].as_u64().expect("an index"),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[tokio::test]
    async fn unread_events_keep_the_newest_and_say_how_many_went() {
        let (tx, mut rx) = channel();
        let sent = EVENTS_KEPT as u64 * 3 + 7;
        for i in 0..sent {
            assert!(tx.send(message(i)));
        }
        let first = poll_fn(|cx| rx.poll_recv(cx)).await;
        let missed = sent - EVENTS_KEPT as u64;
        assert!(
            matches!(first, Some(Event::Lagged { missed: m }) if m == missed),
            "{first:?}"
        );
        for i in missed..sent {
            let event = poll_fn(|cx| rx.poll_recv(cx)).await.expect("an event");
            assert_eq!(index(&event), i);
        }
        // Read as they come, nothing is dropped.
        for i in 0..EVENTS_KEPT as u64 * 2 {
            tx.send(message(i));
            let event = poll_fn(|cx| rx.poll_recv(cx)).await.expect("an event");
            assert_eq!(index(&event), i);
        }
        drop(tx);
        assert!(poll_fn(|cx| rx.poll_recv(cx)).await.is_none());
    }

    #[tokio::test]
    async fn unread_events_are_bounded_in_memory_too() {
        let (tx, mut rx) = channel();
        let big = |i: u64| Event::Message {
            worker: 1 as WorkerId,
            message: serde_json::json!({ "i": i, "d": vec![0; 1 << 17] }),
        };
        // Each weighs 4 MiB (131,072 `Value`s of 32 bytes): 100 of them
        // would be 400 MiB.
        assert!(big(0).weight() > 4 << 20);
        for i in 0..100 {
            tx.send(big(i));
            let inner = lock(&tx.0);
            assert!(inner.bytes <= BYTES_KEPT, "{} bytes held", inner.bytes);
        }
        let missed = match poll_fn(|cx| rx.poll_recv(cx)).await {
            Some(Event::Lagged { missed }) => missed,
            other => panic!("not Lagged first: {other:?}"),
        };
        let mut next = missed;
        while let Poll::Ready(Some(event)) = rx.poll_recv(&mut Context::from_waker(Waker::noop())) {
            assert_eq!(index(&event), next);
            next += 1;
        }
        assert_eq!(next, 100);
        // One heavier than the whole budget is still delivered.
        let huge = Event::Output {
            worker: 1,
            stream: crate::Stream::Stdout,
            line: "x".repeat(BYTES_KEPT + 1),
        };
        tx.send(huge);
        assert!(matches!(
            poll_fn(|cx| rx.poll_recv(cx)).await,
            Some(Event::Output { line, .. }) if line.len() == BYTES_KEPT + 1
        ));
        assert_eq!(lock(&tx.0).bytes, 0);
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_send_and_by_the_last_sender_going() {
        let (tx, mut rx) = channel();
        let tx2 = tx.clone();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.send(message(0));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one sender is left");
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx2);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn sends_fail_once_the_receiver_is_gone() {
        let (tx, rx) = channel();
        assert!(tx.send(message(0)));
        drop(rx);
        assert!(!tx.send(message(1)));
    }
}
