//! The tokio driver of the ending rules (`Child::collect`): one `select!` loop over the
//! pipes, stdin, the exit watch and a timer, doing what
//! [`Rules`](crate::capture::Rules) asks.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use std::task::{ready, Context, Poll};

use super::Child;
use crate::capture::{Action, Collected, Ending, Event, Rules, Sink};
use crate::error::{CommandLine, Error, Result, Stream};
use crate::kill::{kill_stragglers, Ended};
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout};

/// What a driver runs: one child, or the stages of a pipeline that share a
/// process group. Member `0` leads the group, if there is one.
pub(crate) trait Run {
    /// The ending rules of the run.
    fn rules(&mut self) -> &mut Rules;
    /// The command line, for errors.
    fn line(&self) -> &CommandLine;
    /// Member `i`'s exit, as a poll (not reaped: its ids stay reserved).
    fn poll_exited(&mut self, i: usize, cx: &mut Context<'_>) -> Poll<Result<()>>;
    /// Reap member `i` if it has exited.
    fn end(&mut self, i: usize) -> Result<Option<Ended>>;
    /// Signal every unreaped member and the group.
    fn signal(&self, signal: i32);
    /// `SIGKILL` to what is left of the group once every member exited.
    fn kill_stragglers(&self);
}

impl Run for Child {
    fn rules(&mut self) -> &mut Rules {
        &mut self.rules
    }

    fn line(&self) -> &CommandLine {
        Child::line(self)
    }

    fn poll_exited(&mut self, _i: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Child::poll_exited(self, cx)
    }

    fn end(&mut self, _i: usize) -> Result<Option<Ended>> {
        self.try_end()
    }

    fn signal(&self, signal: i32) {
        self.signal_tree(signal);
    }

    fn kill_stragglers(&self) {
        if self.leads_group {
            kill_stragglers(self.proc(), &[self.proc().pid]);
        }
    }
}

/// The pipes of an async run and where what comes out of them goes.
pub(crate) type Io<'a> = crate::capture::Io<'a, ChildStdin, ChildStdout, ChildStderr>;

impl Child {
    /// Feed `input` to stdin, read stdout and stderr into `sinks` (taking
    /// the pipes out of the child; a stream without a sink is left in it),
    /// and wait, all at once (one after the other deadlocks as soon as a
    /// pipe fills up), until the rules say the run is over: the child exited
    /// and the pipes are drained, or the timeout or `max_buffer` cut it
    /// short and the tree was killed.
    pub(crate) async fn collect(
        &mut self,
        input: &[u8],
        sinks: [Option<Sink>; 2],
    ) -> Result<Collected> {
        let io = Io::take(
            &mut self.stdin,
            input,
            &mut self.stdout,
            &mut self.stderr,
            sinks,
        );
        let (ending, [out, err]) = drive(self, io).await?;
        let status = self
            .try_end()?
            .expect("the rules finish only once the child is reaped");
        Ok(Collected {
            status,
            stdout: out.into_vec(),
            stderr: err.into_vec(),
            ending,
        })
    }
}

/// The loop: do what the rules ask until they say the run is over.
///
/// `io` is taken apart before the future is made, so that the future holds
/// its parts once (see [`crate::offload::run`]).
pub(crate) fn drive<'a, R: Run>(
    run: &'a mut R,
    io: Io<'a>,
) -> impl Future<Output = Result<(Ending, [Sink; 2])>> + 'a {
    let Io {
        mut stdin,
        mut input,
        stdout,
        stderr,
        sinks: [mut out, mut err],
    } = io;
    async move {
        let line = run.line().clone();
        let io_err = |e| Error::io(&line, e);
        run.rules().capture([stdout.is_some(), stderr.is_some()]);

        // One timer for the whole run, moved only when the rules' deadline
        // changes (a new tokio `Sleep` per wake-up costs a timer insertion).
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;

        let ending = loop {
            let wait = match run.rules().next(Instant::now()) {
                Action::Wait(wait) => wait,
                Action::Reap(i) => {
                    match run.end(i)? {
                        Some(_) => run.rules().on(Event::Reaped(i), Instant::now()),
                        // Cannot happen once the exit was seen; do not spin.
                        None => tokio::task::yield_now().await,
                    }
                    continue;
                }
                Action::Signal(signal) => {
                    run.signal(signal.as_raw());
                    continue;
                }
                Action::KillStragglers => {
                    run.kill_stragglers();
                    continue;
                }
                Action::DrainReady => {
                    let reading = run.rules().reading();
                    if let (Some(pipe), true) = (&stdout, reading[0]) {
                        out.drain_ready(pipe.as_fd());
                    }
                    if let (Some(pipe), true) = (&stderr, reading[1]) {
                        err.drain_ready(pipe.as_fd());
                    }
                    run.rules().drained();
                    continue;
                }
                Action::Finish(ending) => break ending,
            };
            if !wait.feed {
                stdin = None;
            }
            if wait.until != armed {
                armed = wait.until;
                if let Some(until) = armed {
                    timer.as_mut().reset(tokio::time::Instant::from_std(until));
                }
            }
            let watching = run.rules().watching();
            tokio::select! {
                biased;
                // Always polled: room a line consumer made since the last poll
                // is seen, and a tee's copy flows out while reading is off.
                n = read_pipe(&stdout, &mut out, wait.read[0]) => {
                    let event = read_event(Stream::Stdout, n.map_err(io_err)?, &out);
                    run.rules().on(event, Instant::now());
                }
                n = read_pipe(&stderr, &mut err, wait.read[1]) => {
                    let event = read_event(Stream::Stderr, n.map_err(io_err)?, &err);
                    run.rules().on(event, Instant::now());
                }
                n = write_pipe(&stdin, input), if stdin.is_some() => match n {
                    Ok(n) => {
                        input = &input[n..];
                        if input.is_empty() {
                            stdin = None;
                        }
                    }
                    // The child closed its stdin or exited: it chose not to
                    // read the rest. Not an error, as for `sh -c 'head -1'`.
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => stdin = None,
                    Err(e) => return Err(io_err(e)),
                },
                exited = any_exited(run, watching), if wait.exits => {
                    let i = exited?;
                    run.rules().on(Event::Exited(i), Instant::now());
                }
                () = &mut timer, if armed.is_some() => {}
            }
        };
        let deadline = run.rules().deadline();
        out.finish(ending, deadline, None);
        err.finish(ending, deadline, None);
        Ok((ending, [out, err]))
    }
}

/// The first of the `watching` members (bits) to exit.
async fn any_exited<R: Run>(run: &mut R, watching: u64) -> Result<usize> {
    std::future::poll_fn(|cx| {
        for i in (0..64).filter(|i| watching & (1 << i) != 0) {
            if let Poll::Ready(result) = run.poll_exited(i, cx) {
                return Poll::Ready(result.map(|()| i));
            }
        }
        Poll::Pending
    })
    .await
}

/// What one read means to the rules: end of file, or bytes (over the limit
/// or not).
fn read_event(stream: Stream, n: usize, capture: &Sink) -> Event {
    if n == 0 {
        Event::Eof(stream)
    } else {
        Event::Read(stream, capture.overflowed())
    }
}

/// One read from `pipe` into `sink`, once `reading` and the sink has room
/// (a line consumer or our own output may be behind); until then a tee's
/// copy keeps flowing out. Room is checked on every poll, not once when the
/// `select!` is built: the consumer of `Exec::lines` frees it between polls.
async fn read_pipe<P: CapturePipe>(
    pipe: &Option<P>,
    sink: &mut Sink,
    reading: bool,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let Some(pipe) = pipe.as_ref().filter(|_| reading) else {
            let _ = sink.poll_flush(cx);
            return Poll::Pending;
        };
        ready!(sink.poll_room(cx));
        pipe.poll_read_into(cx, sink)
    })
    .await
}

async fn write_pipe(pipe: &Option<ChildStdin>, buf: &[u8]) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.write_some(buf).await,
        None => std::future::pending().await,
    }
}

trait CapturePipe: AsFd {
    fn poll_read_into(&self, cx: &mut Context<'_>, capture: &mut Sink) -> Poll<io::Result<usize>>;
}

impl CapturePipe for ChildStdout {
    fn poll_read_into(&self, cx: &mut Context<'_>, capture: &mut Sink) -> Poll<io::Result<usize>> {
        self.poll_read_capture(cx, capture)
    }
}

impl CapturePipe for ChildStderr {
    fn poll_read_into(&self, cx: &mut Context<'_>, capture: &mut Sink) -> Poll<io::Result<usize>> {
        self.poll_read_capture(cx, capture)
    }
}
