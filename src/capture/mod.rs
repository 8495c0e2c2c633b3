//! How a run of a child ends, written once for every driver.
//!
//! [`Rules`] is the ending of a run as an I/O-free state machine: events go
//! in (bytes read on a stream, end of file, a process exited or was reaped,
//! time passed), actions come out (wait for these things until then, reap,
//! signal the tree, read what is left, finish with this result). The tokio
//! driver (`Child::collect` in `collect.rs`) and the `poll(2)` driver
//! (`blocking.rs`) only carry out the actions, so `.await` and
//! `run_sync()` cannot disagree about when a run ends. The shape follows the
//! channel's `Framer`: logic without sockets, fed by a thin loop, tested on
//! its own.
//!
//! [`Capture`] is the buffer one output stream is read into.

mod buffer;
mod lines;
mod result;
mod rules;
#[cfg(any(test, fuzzing))]
mod sim;

pub(crate) use buffer::{Sink, Tee};
pub use lines::Line;
pub(crate) use lines::{LineSink, Queue};
pub(crate) use result::{into_text, judge, Collected};
pub(crate) use rules::{deadline_after, Action, Ending, Event, Limits, Rules, DEFAULT_KILL_GRACE};
#[cfg(fuzzing)]
pub use sim::fuzz_rules;

#[cfg(test)]
mod tests;
