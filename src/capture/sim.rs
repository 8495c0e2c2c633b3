//! A model of a child and its pipes that drives [`Rules`] the way the real
//! drivers do, for the unit tests (every ordering of events) and the fuzz
//! target (`fuzz/fuzz_targets/rules.rs`): whatever happens, in whatever
//! order, the run must end, with the right [`Ending`], having signalled
//! only processes it had not reaped.

use std::time::{Duration, Instant};

use super::rules::{Action, Ending, Event, Limits, Rules, PIPE_GRACE};
use crate::error::Stream;
use crate::Signal;

/// Something the world may do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Happening {
    /// The child exits on its own.
    Exit,
    /// A stream reaches end of file (every writer closed it).
    Eof(Stream),
    /// A stream gets more than `max_buffer` bytes.
    Overflow(Stream),
    /// A stream gets some bytes, within the limit.
    Data(Stream),
    /// Time passes: up to the next deadline the driver waits for.
    Tick,
}

/// How the model child behaves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Child {
    /// It ignores `kill_signal`: only `SIGKILL` ends it.
    pub ignores_term: bool,
    /// A background process holds the pipes after the child exits, until
    /// the group is `SIGKILL`ed.
    pub background_holds_pipes: bool,
    /// The timeout is set.
    pub timeout: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub ending: Ending,
    /// Signals sent to the tree, in order.
    pub signals: Vec<Signal>,
    pub stragglers_killed: bool,
    /// The signal that ended the child, if one did.
    pub killed_by: Option<Signal>,
    /// Whether the child exited on its own before any kill.
    pub exited_by_itself: bool,
}

/// Run the rules against the model: `script` says what the world does at
/// each wait, in order (a happening the driver is not waiting for, or that
/// cannot happen any more, is skipped). Panics when an invariant breaks.
pub(crate) fn simulate(child: Child, script: &[Happening]) -> Outcome {
    let start = Instant::now();
    let mut now = start;
    let limits = Limits {
        timeout: child.timeout.then_some(Duration::from_secs(10)),
        max_buffer: 100,
        kill_signal: Signal::SIGTERM,
        kill_grace: Duration::from_secs(2),
    };
    let mut rules = Rules::new(limits, now, 1, true);
    rules.capture([true, true]);

    let mut alive = true;
    let mut exited = false; // the exit happened (the driver may not know yet)
    let mut exit_seen = false;
    let mut reaped = false;
    let mut pipes_open = [true, true];
    let mut holder_alive = child.background_holds_pipes;
    let mut out = Outcome {
        ending: Ending::Exited,
        signals: Vec::new(),
        stragglers_killed: false,
        killed_by: None,
        exited_by_itself: false,
    };
    let mut script = script.iter().copied();
    let mut steps = 0;

    loop {
        steps += 1;
        assert!(steps < 1000, "the rules never finished");
        match rules.next(now) {
            Action::Wait(wait) => {
                assert!(
                    !rules.all_reaped() || !wait.exits,
                    "watching a reaped child"
                );
                // The world acts: first what the script says, then, once it
                // is used up, whatever must happen (the child dies of a
                // SIGKILL, time passes, a killed group closes the pipes).
                let mut acted = false;
                for h in script.by_ref() {
                    if let Some(ev) = apply(
                        h,
                        &mut alive,
                        &mut exited,
                        &mut pipes_open,
                        holder_alive,
                        &wait,
                        &mut now,
                        &mut out,
                    ) {
                        feed(&mut rules, ev, now, &mut exit_seen);
                        acted = true;
                        break;
                    }
                    if h == Happening::Tick && wait.until.is_some() {
                        acted = true;
                        break;
                    }
                }
                if acted {
                    continue;
                }
                if exited && !exit_seen && wait.exits {
                    feed(&mut rules, Event::Exited(0), now, &mut exit_seen);
                    continue;
                }
                for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                    if wait.read[i] && pipes_open[i] && !alive && !holder_alive {
                        pipes_open[i] = false;
                        feed(&mut rules, Event::Eof(stream), now, &mut exit_seen);
                        acted = true;
                        break;
                    }
                }
                if acted {
                    continue;
                }
                if alive && wait.until.is_none() && !child.timeout {
                    // The script is used up and nothing bounds the run: the
                    // child ends by itself, as every real one eventually does.
                    alive = false;
                    exited = true;
                    out.exited_by_itself = out.signals.is_empty();
                    continue;
                }
                match wait.until {
                    Some(until) => now = now.max(until),
                    None => panic!("the driver would wait forever: {wait:?}, alive {alive}, pipes {pipes_open:?}"),
                }
            }
            Action::Reap(i) => {
                assert_eq!(i, 0);
                assert!(exited && exit_seen && !reaped, "reaping what did not exit");
                reaped = true;
                feed(&mut rules, Event::Reaped(0), now, &mut exit_seen);
            }
            Action::Signal(signal) => {
                assert!(!reaped, "signal after the child was reaped");
                out.signals.push(signal);
                if signal == Signal::SIGKILL || !child.ignores_term {
                    if alive {
                        alive = false;
                        exited = true;
                        out.killed_by = Some(signal);
                    }
                    holder_alive = false;
                }
            }
            Action::KillStragglers => {
                assert!(!reaped, "group signal after the leader was reaped");
                assert!(exited, "stragglers killed while the child runs");
                out.stragglers_killed = true;
                holder_alive = false;
            }
            Action::DrainReady => rules.drained(),
            Action::Finish(ending) => {
                assert!(reaped, "finished with the child unreaped");
                out.ending = ending;
                return out;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    h: Happening,
    alive: &mut bool,
    exited: &mut bool,
    pipes_open: &mut [bool; 2],
    holder_alive: bool,
    wait: &super::rules::Wait,
    now: &mut Instant,
    out: &mut Outcome,
) -> Option<Event> {
    let i = |s: Stream| match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    };
    match h {
        Happening::Exit if *alive => {
            *alive = false;
            *exited = true;
            if out.signals.is_empty() {
                out.exited_by_itself = true;
            }
            // Seen at once when the driver watches the exit, later if not.
            wait.exits.then_some(Event::Exited(0))
        }
        Happening::Eof(s) if wait.read[i(s)] && pipes_open[i(s)] && !*alive && !holder_alive => {
            pipes_open[i(s)] = false;
            Some(Event::Eof(s))
        }
        Happening::Overflow(s)
            if wait.read[i(s)] && pipes_open[i(s)] && (*alive || holder_alive) =>
        {
            Some(Event::Read(s, true))
        }
        Happening::Data(s) if wait.read[i(s)] && pipes_open[i(s)] => Some(Event::Read(s, false)),
        Happening::Tick => {
            if let Some(until) = wait.until {
                *now = (*now).max(until) + PIPE_GRACE / 2;
            }
            None
        }
        _ => None,
    }
}

fn feed(rules: &mut Rules, ev: Event, now: Instant, exit_seen: &mut bool) {
    if ev == Event::Exited(0) {
        *exit_seen = true;
    }
    rules.on(ev, now);
}

/// The fuzz target's entry point: bytes choose the child's behaviour and
/// the script.
#[cfg(fuzzing)]
pub fn fuzz_rules(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let child = Child {
        ignores_term: flags & 1 != 0,
        background_holds_pipes: flags & 2 != 0,
        timeout: flags & 4 != 0,
    };
    let script: Vec<Happening> = rest
        .iter()
        .map(|b| match b % 8 {
            0 => Happening::Exit,
            1 => Happening::Eof(Stream::Stdout),
            2 => Happening::Eof(Stream::Stderr),
            3 => Happening::Overflow(Stream::Stdout),
            4 => Happening::Overflow(Stream::Stderr),
            5 => Happening::Data(Stream::Stdout),
            6 => Happening::Data(Stream::Stderr),
            _ => Happening::Tick,
        })
        .collect();
    check(child, &script);
}

/// [`simulate`], plus what the outcome must be for the script.
pub(crate) fn check(child: Child, script: &[Happening]) -> Outcome {
    let out = simulate(child, script);
    match out.ending {
        Ending::Exited => {
            assert!(out.signals.is_empty(), "an exit on its own sends no signal");
            assert!(out.exited_by_itself);
        }
        Ending::TimedOut => {
            assert!(child.timeout);
            assert_eq!(out.signals.first(), Some(&Signal::SIGTERM));
            assert!(out.stragglers_killed, "a kill reaches the whole group");
        }
        // An overflow seen before the exit was noticed still kills the
        // group (a background writer may be in it); the message then says
        // the child had exited.
        Ending::Overflow(_) if out.exited_by_itself => {}
        Ending::Overflow(_) => {
            assert_eq!(out.signals.first(), Some(&Signal::SIGTERM));
            assert!(out.stragglers_killed);
        }
    }
    if child.ignores_term {
        assert_ne!(out.killed_by, Some(Signal::SIGTERM), "the model ignores it");
    }
    if out.killed_by.is_some() || !out.signals.is_empty() {
        assert!(
            out.ending != Ending::Exited,
            "a killed run is not a normal exit"
        );
    }
    out
}
