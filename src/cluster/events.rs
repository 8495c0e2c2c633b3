//! The primary's events on their way to the [`Primary`](super::Primary): a
//! queue that keeps the newest [`EVENTS_KEPT`] unread ones.
//!
//! Unbounded, a program that never reads events (it only wants the
//! workers to run) held every message and output line its workers ever
//! sent: a worker that floods its channel grew the primary without limit.
//! Bounded with back-pressure, the same program would stall the cluster
//! once the queue filled. So the queue drops the oldest, as a tokio
//! `broadcast` receiver that lags does, and says so: the next event read
//! is [`Event::Lagged`] with how many went. Node drops a message no
//! listener takes, silently.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::Event;

/// How many unread events the queue keeps.
pub(crate) const EVENTS_KEPT: usize = 4096;

struct Inner {
    queue: VecDeque<Event>,
    /// Dropped since the last [`Event::Lagged`].
    missed: u64,
    senders: usize,
    receiver: bool,
    waker: Option<Waker>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    // Nothing panics under the lock, and no user code runs there.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The primary's end.
pub(crate) struct EventSender(Shared);

/// The [`Primary`](super::Primary)'s end.
#[derive(Debug)]
pub(crate) struct EventReceiver(Shared);

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("unread", &self.queue.len())
            .field("missed", &self.missed)
            .finish()
    }
}

/// A new queue.
pub(crate) fn channel() -> (EventSender, EventReceiver) {
    let shared = Arc::new(Mutex::new(Inner {
        queue: VecDeque::new(),
        missed: 0,
        senders: 1,
        receiver: true,
        waker: None,
    }));
    (EventSender(shared.clone()), EventReceiver(shared))
}

impl EventSender {
    /// Queues `event`, dropping the oldest unread one when
    /// [`EVENTS_KEPT`] are queued; `false` once the receiver is gone.
    pub(crate) fn send(&self, event: Event) -> bool {
        let waker = {
            let mut inner = lock(&self.0);
            if !inner.receiver {
                return false;
            }
            if inner.queue.len() >= EVENTS_KEPT {
                inner.queue.pop_front();
                inner.missed += 1;
            }
            inner.queue.push_back(event);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

impl Clone for EventSender {
    fn clone(&self) -> EventSender {
        lock(&self.0).senders += 1;
        EventSender(self.0.clone())
    }
}

impl Drop for EventSender {
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

impl EventReceiver {
    /// The next event: [`Event::Lagged`] first when some were dropped,
    /// then the oldest kept; `None` once every sender is gone and the
    /// queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut inner = lock(&self.0);
        if inner.missed > 0 {
            let missed = std::mem::take(&mut inner.missed);
            return Poll::Ready(Some(Event::Lagged { missed }));
        }
        if let Some(event) = inner.queue.pop_front() {
            return Poll::Ready(Some(event));
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

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let unread = {
            let mut inner = lock(&self.0);
            inner.receiver = false;
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
