//! The tokio driver of the ending rules (`Child::collect`): one `select!` loop over the
//! pipes, stdin, the exit watch and a timer, doing what
//! [`Rules`](crate::capture::Rules) asks.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use super::Child;
use crate::capture::{Action, Capture, Collected, Event};
use crate::error::{Error, Result, Stream};
use crate::kill::kill_stragglers;
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout};

impl Child {
    /// Feed `input` to stdin, capture stdout and stderr where `capture`
    /// says (taking them out of the child), and wait, all at once (one after
    /// the other deadlocks as soon as a pipe fills up), until the rules say
    /// the run is over: the child exited and the pipes are drained, or the
    /// timeout or `max_buffer` cut it short and the tree was killed.
    pub(crate) async fn collect(&mut self, input: &[u8], capture: [bool; 2]) -> Result<Collected> {
        let line = self.line().clone();
        let io_err = |e| Error::io(&line, e);
        let mut stdin = self.stdin.take().filter(|_| !input.is_empty());
        let stdout = if capture[0] { self.stdout.take() } else { None };
        let stderr = if capture[1] { self.stderr.take() } else { None };
        let mut input = input;
        let max = self.rules.limits().max_buffer;
        let (mut out, mut err) = (Capture::new(max), Capture::new(max));
        self.rules.capture([stdout.is_some(), stderr.is_some()]);

        // One timer for the whole run, moved only when the rules' deadline
        // changes (a new tokio `Sleep` per wake-up costs a timer insertion).
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;

        let ending = loop {
            let wait = match self.rules.next(Instant::now()) {
                Action::Wait(wait) => wait,
                Action::Reap(_) => {
                    match self.try_end()? {
                        Some(_) => self.rules.on(Event::Reaped(0), Instant::now()),
                        // Cannot happen once the exit was seen; do not spin.
                        None => tokio::task::yield_now().await,
                    }
                    continue;
                }
                Action::Signal(signal) => {
                    self.signal_tree(signal.as_raw());
                    continue;
                }
                Action::KillStragglers => {
                    kill_stragglers(self.proc(), &[self.proc().pid]);
                    continue;
                }
                Action::DrainReady => {
                    let reading = self.rules.reading();
                    if let (Some(pipe), true) = (&stdout, reading[0]) {
                        out.drain_ready(pipe.as_fd());
                    }
                    if let (Some(pipe), true) = (&stderr, reading[1]) {
                        err.drain_ready(pipe.as_fd());
                    }
                    self.rules.drained();
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
            tokio::select! {
                biased;
                n = read_pipe(&stdout, &mut out), if wait.read[0] => {
                    let event = read_event(Stream::Stdout, n.map_err(io_err)?, &out);
                    self.rules.on(event, Instant::now());
                }
                n = read_pipe(&stderr, &mut err), if wait.read[1] => {
                    let event = read_event(Stream::Stderr, n.map_err(io_err)?, &err);
                    self.rules.on(event, Instant::now());
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
                exited = self.exited(), if wait.exits => {
                    exited?;
                    self.rules.on(Event::Exited(0), Instant::now());
                }
                () = &mut timer, if armed.is_some() => {}
            }
        };
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

/// What one read means to the rules: end of file, or bytes (over the limit
/// or not).
fn read_event(stream: Stream, n: usize, capture: &Capture) -> Event {
    if n == 0 {
        Event::Eof(stream)
    } else {
        Event::Read(stream, capture.overflowed())
    }
}

async fn read_pipe<P: CapturePipe>(pipe: &Option<P>, capture: &mut Capture) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read_into(capture).await,
        None => std::future::pending().await,
    }
}

async fn write_pipe(pipe: &Option<ChildStdin>, buf: &[u8]) -> io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.write_some(buf).await,
        None => std::future::pending().await,
    }
}

trait CapturePipe: AsFd {
    async fn read_into(&self, capture: &mut Capture) -> io::Result<usize>;
}

impl CapturePipe for ChildStdout {
    async fn read_into(&self, capture: &mut Capture) -> io::Result<usize> {
        self.read_capture(capture).await
    }
}

impl CapturePipe for ChildStderr {
    async fn read_into(&self, capture: &mut Capture) -> io::Result<usize> {
        self.read_capture(capture).await
    }
}
