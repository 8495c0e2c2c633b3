//! Faulting a big capture's buffer in ahead of its reads, on a thread of
//! its own.
//!
//! Landing a large output in fresh memory costs more in page faults than in
//! copying: the pipe's copy of 1 GiB takes about 0.35 s here, faulting its
//! pages in 0.4 s or (on a VM whose host takes back freed memory) several
//! times that. One `MADV_POPULATE_WRITE` a few MiB ahead of the reads
//! replaces a fault per 4 KiB with one call, but still on the reading
//! thread, which meanwhile does not read, so the producer stalls on a full
//! pipe. Here a helper thread faults in ahead while the reader reads: on
//! a 2-CPU VM, 1 GiB from `dd bs=64K` went from 0.75–1.56 GB/s (inline)
//! to 1.27–3.33 GB/s (medians 1.31 and 3.08, five rounds each, a C
//! prototype of both); in `cargo bench --bench compare -- capture`, from
//! 1.08–1.16× std's `output()` to 1.83–2.38× (every runtime shape), and
//! from 2.05× to 3.12× for a 1 MiB writer. The same idea as a kernel's
//! readahead, for the page tables of a buffer about to be written.
//!
//! The helper never touches the buffer's bytes: it only asks the kernel to
//! fault pages in, which leaves their contents alone (pages already
//! present, written by a read, are skipped). It works on an address range
//! the reader published, and the reader waits for the call in flight
//! before it reallocates or frees the buffer. The pages it faulted in past
//! the last read are given back when the capture ends
//! (`sys::discard_spare`).
//!
//! Helpers are capped at one per CPU for the process. A capture leaked
//! with `mem::forget` keeps its helper, and that helper's place under the
//! cap, for the life of the process, as it keeps its child and pipes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use super::PAGE;

/// How far past the reads the helper keeps the buffer faulted in.
pub(crate) const AHEAD: usize = 16 * 1024 * 1024;

/// Faulted in per call: small enough that a reader waiting to grow or
/// free the buffer waits for little (a millisecond at worst on a VM whose
/// host faults each page in), large enough that the calls cost nothing
/// (a thousand per GiB).
const CHUNK: usize = 1024 * 1024;

/// Helpers alive at once at most: one per CPU. Past that, captures fault
/// their pages in on their own thread, as before.
fn max_helpers() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

static HELPERS: AtomicUsize = AtomicUsize::new(0);

/// The helper thread of one capture; dropping it stops the helper and
/// joins it (after the call in flight, if any, returns): no thread
/// outlives its capture.
pub(crate) struct Ahead {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Rung when the helper has work, when its call returns, and to stop.
    cond: Condvar,
}

struct State {
    /// The buffer's address and capacity; `None` while the reader
    /// reallocates it.
    buf: Option<(usize, usize)>,
    /// Faulted in (or read into) up to this offset.
    done: usize,
    /// Fault in up to this offset.
    target: usize,
    /// A call on the buffer is under way.
    busy: bool,
    /// The helper waits for work.
    idle: bool,
    /// The reader waits for the call in flight to return.
    reader_waits: bool,
    stop: bool,
}

impl Ahead {
    /// Starts a helper for `buf`, of which `len` bytes are read and
    /// `populated` are faulted in; `None` when there is a helper per CPU
    /// already, a single CPU (it would only take turns with the reader), or
    /// no thread to be had.
    pub(crate) fn start(buf: &mut Vec<u8>, populated: usize) -> Option<Ahead> {
        let max = max_helpers();
        if max < 2
            || HELPERS
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_err()
        {
            return None;
        }
        let len = buf.len();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Some((buf.as_mut_ptr() as usize, buf.capacity())),
                done: populated.max(len),
                target: len + AHEAD,
                busy: false,
                idle: false,
                reader_waits: false,
                stop: false,
            }),
            cond: Condvar::new(),
        });
        let helper = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("cp-fault-ahead".into())
            .spawn(move || {
                helper.run();
                HELPERS.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(thread) => Some(Ahead {
                shared,
                thread: Some(thread),
            }),
            Err(_) => {
                HELPERS.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }

    /// `len` bytes are read: keep faulting in up to [`AHEAD`] past them.
    ///
    /// An idle helper is woken only for a whole [`CHUNK`] of work: woken
    /// for the few KiB each small read moves the target (a producer writing
    /// 4 KiB at a time), it cost a futex call and two context switches per
    /// read, and a 64 MiB capture 10 % of its time.
    pub(crate) fn read_up_to(&self, len: usize) {
        let mut st = self.shared.lock();
        st.done = st.done.max(len);
        st.target = len + AHEAD;
        if st.idle && st.work().is_some() {
            st.idle = false;
            self.shared.cond.notify_all();
        }
    }

    /// Runs `grow` (which may move `buf`) once no call on the buffer is in
    /// flight, then hands the helper the new buffer.
    pub(crate) fn regrow(&self, buf: &mut Vec<u8>, grow: impl FnOnce(&mut Vec<u8>)) {
        let mut st = self.shared.quiet();
        st.buf = None;
        drop(st);
        grow(buf);
        let mut st = self.shared.lock();
        st.buf = Some((buf.as_mut_ptr() as usize, buf.capacity()));
        // Copied to a new place, the pages past the bytes were not.
        st.done = buf.len();
        st.idle = false;
        self.shared.cond.notify_all();
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.stop = true;
        st.buf = None;
        self.shared.cond.notify_all();
        drop(st);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl State {
    /// The helper's next call: the buffer (address, capacity) and the
    /// offsets to fault in, a whole [`CHUNK`] or the rest of the capacity;
    /// `None` while there is less to do.
    fn work(&self) -> Option<(usize, usize, usize, usize)> {
        let (base, cap) = self.buf?;
        // Chunks end on a page boundary (in address terms), so the next
        // one starts on one: `populate_range` skips a partial page at
        // either end.
        let page_end = |offset: usize| ((base + offset) & !(PAGE - 1)).saturating_sub(base);
        let end = page_end(self.target.min(cap));
        if self.done >= end || (end - self.done < CHUNK && end < page_end(cap)) {
            return None;
        }
        let len = page_end(self.done + CHUNK).min(end) - self.done;
        Some((base, cap, self.done, len))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing that can panic runs under the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, once no call on the buffer is in flight.
    fn quiet(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        while st.busy {
            st.reader_waits = true;
            st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.reader_waits = false;
        st
    }

    /// The helper waits for the reader to give it work.
    fn idle<'a>(&self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.idle = true;
        st = self.cond.wait(st).unwrap_or_else(PoisonError::into_inner);
        st.idle = false;
        st
    }

    /// The helper: fault in [`CHUNK`] at a time up to the target, then wait
    /// for the reads to move it.
    fn run(&self) {
        let mut st = self.lock();
        while !st.stop {
            let Some((base, cap, from, len)) = st.work() else {
                st = self.idle(st);
                continue;
            };
            st.busy = true;
            drop(st);
            // SAFETY: [base + from, base + from + len) is spare capacity of
            // the reader's `Vec` (`from` is at or past its length, `end`
            // within its capacity), which stays where it is until `busy` is
            // cleared: the reader waits for that (`quiet`) before it
            // reallocates or frees it.
            let ok = unsafe { super::populate_range(base + from, len) };
            st = self.lock();
            st.busy = false;
            if st.reader_waits {
                self.cond.notify_all();
            }
            if !ok {
                return;
            }
            if st.buf == Some((base, cap)) {
                st.done = st.done.max(from + len);
            }
        }
    }
}
