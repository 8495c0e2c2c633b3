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

/// The pipes of a run and where what comes out of them goes; `W` is the
/// stdin pipe and `O`, `E` the read ends (tokio types for the async driver,
/// fds for the `poll(2)` one).
pub(crate) struct Io<'a, W, O, E> {
    pub stdin: Option<W>,
    pub input: &'a [u8],
    pub stdout: Option<O>,
    pub stderr: Option<E>,
    pub sinks: [Sink; 2],
}

impl<'a, W, O, E> Io<'a, W, O, E> {
    /// Pair pipes with sinks. A read pipe is taken only when its bytes have
    /// somewhere to go (a stream without a sink stays where it was: it went
    /// elsewhere, or the caller keeps it); stdin only when there is input to
    /// feed. A sink without a pipe stays empty.
    pub(crate) fn take(
        stdin: &mut Option<W>,
        input: &'a [u8],
        stdout: &mut Option<O>,
        stderr: &mut Option<E>,
        [out, err]: [Option<Sink>; 2],
    ) -> Self {
        Io {
            stdin: stdin.take().filter(|_| !input.is_empty()),
            input,
            stdout: out.as_ref().and_then(|_| stdout.take()),
            stderr: err.as_ref().and_then(|_| stderr.take()),
            sinks: [
                out.unwrap_or_else(Sink::none),
                err.unwrap_or_else(Sink::none),
            ],
        }
    }
}
pub use lines::Line;
pub(crate) use lines::{LineSink, Queue};
pub(crate) use result::{into_text, judge, Collected};
pub(crate) use rules::{deadline_after, Action, Ending, Event, Limits, Rules, DEFAULT_KILL_GRACE};
#[cfg(fuzzing)]
pub use sim::fuzz_rules;

#[cfg(test)]
mod tests;
