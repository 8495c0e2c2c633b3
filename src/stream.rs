//! `Exec::lines`: the output of a running `exec` as a stream of lines, with
//! every guarantee of `exec` (timeout, tree kill, `Error::Exit` at the end).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::capture::{judge, Line, LineSink, Queue, Sink};
use crate::error::{Error, ExitStatus, Output, Result, Stream};
use crate::exec::{Job, Route};

/// The lines a running [`exec`](crate::exec) or
/// [`exec_file`](crate::exec_file) writes to stdout and stderr, as they
/// arrive: a [`Stream`](futures_core::Stream) of `Result<Line>`, from
/// [`Exec::lines`](crate::Exec::lines).
///
/// Each [`Line`] says which stream it came from. The stream ends with the
/// run: after the last line, a run that failed gives one `Err` with the same
/// error `.await` would give ([`Error::Exit`] with the stderr tail,
/// [`Error::Timeout`], ...), then `None`; a run that succeeded just ends.
/// The timeout, the kill of the tree, `kill_signal` and `kill_grace` work as
/// for `.await`, whether or not the lines are being taken; `max_buffer`
/// does not apply (nothing piles up: reading pauses while 1,024 lines wait
/// to be taken).
///
/// # Cancellation
///
/// Dropping `Lines` before the end kills the child's process group, as
/// dropping an `exec` future does.
///
/// # Examples
///
/// ```
/// use child_process as cp;
/// use futures::StreamExt;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let mut lines = cp::exec("echo compiling; echo 'warning: x' >&2")
///     .timeout(Duration::from_secs(60))
///     .lines()?;
/// while let Some(line) = lines.next().await {
///     let line = line?;
///     println!("{:>6} | {}", line.stream(), line.text());
/// }
/// assert!(lines.status().unwrap().success());
/// # Ok(())
/// # }
/// ```
#[must_use = "streams do nothing unless polled"]
pub struct Lines {
    queue: Queue,
    run: Option<Driver>,
    error: Option<Error>,
    status: Option<ExitStatus>,
}

impl Lines {
    pub(crate) fn start(job: Job) -> Result<Lines> {
        let mut child = job.spawn_child()?;
        let queue = Queue::default();
        let lines = |route: &Route, stream| match route {
            Route::Capture | Route::Tee => Some(Sink::Lines(LineSink::new(stream, queue.clone()))),
            _ => None,
        };
        let out = lines(&job.stdout, Stream::Stdout);
        let err = if job.spec.merge_stderr {
            None
        } else {
            lines(&job.stderr, Stream::Stderr)
        };
        let line = job.spec.command_line();
        let for_run = line.clone();
        let run = async move {
            let collected = child.collect(job.input(), [out, err]).await?;
            judge(&for_run, &job.limits, job.ignore_status, collected)
        };
        // As a task of its own, the run reads ahead and keeps its timeout
        // while the consumer is busy with a line; dropping the stream
        // aborts the task, and the child goes with it.
        let run = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Driver::Task {
                task: runtime.spawn(run),
                line,
            },
            Err(_) => Driver::InPlace(Box::pin(run)),
        };
        Ok(Lines {
            queue,
            run: Some(run),
            error: None,
            status: None,
        })
    }

    /// How the child ended, once the stream has ended successfully;
    /// `None` before (or after a failure: the error said how).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// use futures::StreamExt;
    /// let mut lines = child_process::exec("echo hi").lines()?;
    /// while let Some(line) = lines.next().await {
    ///     line?;
    /// }
    /// assert_eq!(lines.status().unwrap().code(), Some(0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }
}

/// Where the run of a [`Lines`] stream is driven.
enum Driver {
    /// A task on the runtime the stream was made in.
    Task {
        task: tokio::task::JoinHandle<Result<Output>>,
        line: crate::error::CommandLine,
    },
    /// By the consumer's polls (no runtime when the stream was made).
    InPlace(Pin<Box<dyn Future<Output = Result<Output>> + Send>>),
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Output>> {
        match self {
            Driver::InPlace(run) => run.as_mut().poll(cx),
            Driver::Task { task, line } => {
                Poll::Ready(match std::task::ready!(Pin::new(task).poll(cx)) {
                    Ok(result) => result,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // Only a runtime shutting down cancels it (our drop aborts
                    // it, but then nobody polls).
                    Err(_) => Err(Error::io(
                        line,
                        std::io::Error::other("the runtime shut down while the command ran"),
                    )),
                })
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Driver::Task { task, .. } = self {
            task.abort();
        }
    }
}

impl futures_core::Stream for Lines {
    type Item = Result<Line>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Line>>> {
        let this = self.get_mut();
        loop {
            if let Some(line) = this.queue.pop() {
                return Poll::Ready(Some(Ok(line)));
            }
            if let Some(error) = this.error.take() {
                return Poll::Ready(Some(Err(error)));
            }
            let Some(run) = &mut this.run else {
                return Poll::Ready(None);
            };
            // Woken by the next line, or by the run's end.
            if let Poll::Ready(line) = this.queue.poll_pop(cx) {
                return Poll::Ready(Some(Ok(line)));
            }
            match run.poll(cx) {
                Poll::Ready(result) => {
                    this.run = None;
                    match result {
                        Ok(output) => this.status = Some(output.status),
                        Err(error) => this.error = Some(error),
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lines")
            .field("running", &self.run.is_some())
            .field("status", &self.status)
            .finish()
    }
}
