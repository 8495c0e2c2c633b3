//! The ending rules of a run, without I/O.

use std::time::{Duration, Instant};

use crate::error::Stream;
use crate::Signal;

/// How long the pipes are still read after the child exited, when a process
/// it started in the background keeps them open.
pub(crate) const PIPE_GRACE: Duration = Duration::from_millis(100);

/// How long `SIGKILL` waits after `kill_signal` by default.
pub(crate) const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);

/// What bounds a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Kill the tree after this long; `None` (or zero, as Node's
    /// `timeout: 0`) for never.
    pub timeout: Option<Duration>,
    /// The most bytes kept per captured stream; one more kills the tree.
    pub max_buffer: usize,
    /// The first signal of a kill.
    pub kill_signal: Signal,
    /// How long after `kill_signal` `SIGKILL` follows.
    pub kill_grace: Duration,
}

impl Limits {
    /// No timeout, no limit: `wait`, `wait_with_output`, `output_sync`.
    pub(crate) const UNLIMITED: Limits = Limits {
        timeout: None,
        max_buffer: usize::MAX,
        kill_signal: Signal::SIGKILL,
        kill_grace: DEFAULT_KILL_GRACE,
    };
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Every process exited on its own (and the pipes were drained).
    Exited,
    /// The timeout expired; the tree was killed.
    TimedOut,
    /// A stream went over `max_buffer`; the tree was killed unless every
    /// process had already exited.
    Overflow(Stream),
}

/// What the driver saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A read on a stream returned bytes; `overflowed` once the stream holds
    /// more than `max_buffer`.
    Read(Stream, bool),
    /// A stream reached end of file.
    Eof(Stream),
    /// Process `i` exited (seen through its pidfd or `waitid(WNOWAIT)`,
    /// not reaped: its pid and group id stay reserved).
    Exited(usize),
    /// Process `i` was reaped.
    Reaped(usize),
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Wait for one of the things [`Wait`] lists, then report it.
    Wait(Wait),
    /// Reap process `i` (it exited) and report [`Event::Reaped`].
    Reap(usize),
    /// Send this signal to every unreaped process and to their group,
    /// followed by `SIGCONT` (a stopped process keeps every other signal
    /// pending).
    Signal(Signal),
    /// Every process exited: `SIGKILL` to whatever is left of their group.
    KillStragglers,
    /// Read what the open streams hold right now, without waiting, then
    /// call [`Rules::drained`].
    DrainReady,
    /// The run is over.
    Finish(Ending),
}

/// What a driver waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    /// Wake up at this time at the latest.
    pub until: Option<Instant>,
    /// Read these streams (stdout, stderr) when they are readable.
    pub read: [bool; 2],
    /// Watch for the exit of the unreaped processes.
    pub exits: bool,
    /// Keep writing stdin.
    pub feed: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Member {
    exited: bool,
    reaped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Everything runs; the timeout applies.
    Running,
    /// Every process was reaped; the pipes are read until end of file, or
    /// until `until` if a background process keeps them open.
    Draining {
        until: Instant,
    },
    /// Cut short: the tree is being killed.
    Killing {
        why: Ending,
        signalled: bool,
        sigkill_at: Option<Instant>,
        hard: bool,
        stragglers: bool,
    },
    /// [`Action::DrainReady`] was handed out.
    Finishing(Ending),
    Done(Ending),
}

/// The ending rules of one run: a child, or the stages of a pipeline that
/// share one process group.
///
/// - A run ends normally once every process exited and was reaped and
///   every captured stream is at end of file, or [`PIPE_GRACE`] after the
///   last reap if a background process keeps a pipe open.
/// - The timeout applies while any process is unreaped.
/// - A timeout, or a stream over `max_buffer` while a process runs, kills
///   the tree: `kill_signal` (and `SIGCONT`), `SIGKILL` after `kill_grace`,
///   `SIGKILL` to the group's stragglers once every process exited (their
///   zombies still reserve the group id), then reaping, then what the pipes
///   already hold is read without waiting. The streams are read meanwhile,
///   so a child that writes while it dies is not blocked on a full pipe.
/// - An overflow after every process was reaped (a background process
///   wrote it) ends the run without killing anything.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    limits: Limits,
    /// When the timeout expires; `None` for never.
    deadline: Option<Instant>,
    /// The captured streams still being read (not at end of file, not over
    /// the limit).
    open: [bool; 2],
    members: Vec<Member>,
    /// The processes lead a process group of their own.
    group: bool,
    phase: Phase,
}

/// `now + d`, or `None` (never) when that is past what `Instant` holds:
/// `Duration::MAX` is a valid "no deadline", not a panic.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

impl Rules {
    /// The rules for `members` processes started at `now`, reading the
    /// streams marked in `read` (stdout, stderr).
    pub(crate) fn new(limits: Limits, now: Instant, members: usize, group: bool) -> Rules {
        let deadline = limits
            .timeout
            .filter(|t| !t.is_zero())
            .and_then(|t| deadline_after(now, t));
        Rules {
            limits,
            deadline,
            open: [false; 2],
            members: vec![Member::default(); members],
            group,
            phase: Phase::Running,
        }
    }

    /// One more process in the run (a pipeline's next stage).
    /// When the timeout expires, if there is one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn add_member(&mut self) {
        self.members.push(Member::default());
    }

    /// Start reading these streams (those the driver captures).
    pub(crate) fn capture(&mut self, read: [bool; 2]) {
        self.open = read;
    }

    /// The knobs this run was given.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// When `SIGKILL` is due, for a run dropped in the middle of a kill:
    /// `Some(None)` if the kill started and `SIGKILL` is never due (an
    /// infinite grace), `None` if no kill started.
    pub(crate) fn sigkill_due(&self) -> Option<Option<Instant>> {
        match self.phase {
            Phase::Killing {
                signalled: true,
                sigkill_at,
                hard: false,
                ..
            } => Some(sigkill_at),
            _ => None,
        }
    }

    /// The streams still being read (stdout, stderr).
    pub(crate) fn reading(&self) -> [bool; 2] {
        self.open
    }

    /// The processes whose exit is still to be seen, as bits (at most 64
    /// processes in a run: a pipeline has at most 64 stages).
    pub(crate) fn watching(&self) -> u64 {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.exited)
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }

    /// Whether every process was reaped.
    pub(crate) fn all_reaped(&self) -> bool {
        self.members.iter().all(|m| m.reaped)
    }

    /// Feed what the driver saw.
    pub(crate) fn on(&mut self, event: Event, now: Instant) {
        match event {
            Event::Read(stream, overflowed) => {
                if !overflowed {
                    return;
                }
                self.open[index(stream)] = false;
                match self.phase {
                    Phase::Running if self.all_reaped() => {
                        self.phase = Phase::Finishing(Ending::Overflow(stream))
                    }
                    Phase::Running => self.kill(Ending::Overflow(stream)),
                    Phase::Draining { .. } => {
                        self.phase = Phase::Finishing(Ending::Overflow(stream))
                    }
                    // Already ending: the first reason stands.
                    _ => {}
                }
            }
            Event::Eof(stream) => self.open[index(stream)] = false,
            Event::Exited(i) => self.members[i].exited = true,
            Event::Reaped(i) => {
                self.members[i].exited = true;
                self.members[i].reaped = true;
                if self.phase == Phase::Running && self.all_reaped() {
                    self.phase = Phase::Draining {
                        until: now + PIPE_GRACE,
                    };
                }
            }
        }
    }

    /// The reads [`Action::DrainReady`] asked for are done.
    pub(crate) fn drained(&mut self) {
        if let Phase::Finishing(ending) = self.phase {
            self.phase = Phase::Done(ending);
        }
    }

    fn kill(&mut self, why: Ending) {
        self.phase = Phase::Killing {
            why,
            signalled: false,
            sigkill_at: None,
            hard: false,
            stragglers: false,
        };
    }

    /// What to do next, at `now`.
    pub(crate) fn next(&mut self, now: Instant) -> Action {
        loop {
            match &mut self.phase {
                Phase::Running => {
                    if let Some(i) = self.members.iter().position(|m| m.exited && !m.reaped) {
                        return Action::Reap(i);
                    }
                    if self.deadline.is_some_and(|d| now >= d) {
                        self.kill(Ending::TimedOut);
                        continue;
                    }
                    return Action::Wait(Wait {
                        until: self.deadline,
                        read: self.open,
                        exits: true,
                        feed: !self.members[0].exited,
                    });
                }
                Phase::Draining { until } => {
                    if self.open == [false; 2] {
                        self.phase = Phase::Done(Ending::Exited);
                    } else if now >= *until {
                        self.phase = Phase::Finishing(Ending::Exited);
                        return Action::DrainReady;
                    } else {
                        return Action::Wait(Wait {
                            until: Some(*until),
                            read: self.open,
                            exits: false,
                            feed: false,
                        });
                    }
                }
                Phase::Killing {
                    why,
                    signalled,
                    sigkill_at,
                    hard,
                    stragglers,
                } => {
                    if !*signalled {
                        *signalled = true;
                        *sigkill_at = deadline_after(now, self.limits.kill_grace);
                        return Action::Signal(self.limits.kill_signal);
                    }
                    if self.members.iter().all(|m| m.exited) {
                        if self.group && !*stragglers {
                            *stragglers = true;
                            return Action::KillStragglers;
                        }
                        if let Some(i) = self.members.iter().position(|m| !m.reaped) {
                            return Action::Reap(i);
                        }
                        self.phase = Phase::Finishing(*why);
                        return Action::DrainReady;
                    }
                    if !*hard && sigkill_at.is_some_and(|t| now >= t) {
                        *hard = true;
                        return Action::Signal(Signal::SIGKILL);
                    }
                    return Action::Wait(Wait {
                        until: if *hard { None } else { *sigkill_at },
                        read: self.open,
                        exits: true,
                        feed: false,
                    });
                }
                // The driver has not called `drained` yet: ask again.
                Phase::Finishing(_) => return Action::DrainReady,
                Phase::Done(ending) => return Action::Finish(*ending),
            }
        }
    }
}

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}
