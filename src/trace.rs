//! What the optional `tracing` feature reports: a span per process (its
//! command line and pid; its exit status or signal and how long it ran,
//! recorded when it is reaped) and a `debug` event when it starts, when it
//! is signalled and when it ends. `RUST_LOG=child_process=debug` with
//! `tracing-subscriber` then shows every command a program runs.
//!
//! Without the feature, [`Trace`] is an empty type whose methods do
//! nothing, so the rest of the crate calls it unconditionally.

#[cfg(feature = "tracing")]
mod imp {
    use std::time::Instant;

    use crate::error::CommandLine;
    use crate::kill::Ended;

    /// One process's span, and when it started.
    #[derive(Debug)]
    pub(crate) struct Trace {
        span: tracing::Span,
        started: Instant,
    }

    impl Trace {
        pub(crate) fn spawned(line: &CommandLine, pid: libc::pid_t) -> Trace {
            let span = tracing::debug_span!(
                target: "child_process",
                "process",
                command = %line,
                pid,
                status = tracing::field::Empty,
                elapsed_ms = tracing::field::Empty,
            );
            span.in_scope(|| tracing::debug!(target: "child_process", "spawned"));
            Trace {
                span,
                started: Instant::now(),
            }
        }

        pub(crate) fn signal(&self, signal: i32, group: bool) {
            let name = crate::Signal::from_raw(signal)
                .map_or_else(|| signal.to_string(), |s| s.to_string());
            self.span.in_scope(
                || tracing::debug!(target: "child_process", signal = %name, group, "signal sent"),
            );
        }

        pub(crate) fn ended(&self, ended: &Ended) {
            let elapsed = self.started.elapsed().as_secs_f64() * 1000.0;
            let status = match ended {
                Ended::Status(status) => status.to_string(),
                Ended::Lost(_) => "unknown (status lost)".to_string(),
            };
            self.span.record("status", status.as_str());
            self.span.record("elapsed_ms", elapsed);
            self.span.in_scope(|| {
                tracing::debug!(target: "child_process", status = %status, elapsed_ms = elapsed, "ended")
            });
        }
    }
}

#[cfg(feature = "tracing")]
mod carried {
    /// The awaiting thread's subscriber and current span, carried to the
    /// thread that runs an offloaded run, so its spans and events go where
    /// they would have gone in place (a `with_default` subscriber is
    /// thread-local).
    pub(crate) struct Carried(tracing::Dispatch, tracing::Span);

    impl Carried {
        pub(crate) fn here() -> Carried {
            Carried(
                tracing::dispatcher::get_default(Clone::clone),
                tracing::Span::current(),
            )
        }

        pub(crate) fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
            tracing::dispatcher::with_default(&self.0, || self.1.in_scope(f))
        }
    }
}

#[cfg(not(feature = "tracing"))]
mod carried {
    /// Nothing: the `tracing` feature is off.
    pub(crate) struct Carried;

    impl Carried {
        #[inline]
        pub(crate) fn here() -> Carried {
            Carried
        }

        #[inline]
        pub(crate) fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
            f()
        }
    }
}

pub(crate) use carried::Carried;

#[cfg(not(feature = "tracing"))]
mod imp {
    use crate::error::CommandLine;
    use crate::kill::Ended;

    /// Nothing: the `tracing` feature is off.
    #[derive(Debug)]
    pub(crate) struct Trace;

    impl Trace {
        #[inline]
        pub(crate) fn spawned(_line: &CommandLine, _pid: libc::pid_t) -> Trace {
            Trace
        }

        #[inline]
        pub(crate) fn signal(&self, _signal: i32, _group: bool) {}

        #[inline]
        pub(crate) fn ended(&self, _ended: &Ended) {}
    }
}

pub(crate) use imp::Trace;
