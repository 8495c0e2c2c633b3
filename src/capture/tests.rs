//! The ending rules on their own: every ordering of exit, end of file,
//! timeout and overflow, through the model in `sim.rs`.

use std::time::{Duration, Instant};

use super::rules::{Action, Ending, Event, Limits, Rules, Wait, PIPE_GRACE};
use super::sim::{check, Child, Happening};
use crate::error::Stream;
use crate::Signal;

const OUT: Stream = Stream::Stdout;
const ERR: Stream = Stream::Stderr;

/// Every permutation of `items`.
fn permutations(items: &[Happening]) -> Vec<Vec<Happening>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

fn children() -> Vec<Child> {
    let mut all = Vec::new();
    for bits in 0..8 {
        all.push(Child {
            ignores_term: bits & 1 != 0,
            background_holds_pipes: bits & 2 != 0,
            timeout: bits & 4 != 0,
        });
    }
    all
}

#[test]
fn every_ordering_of_the_four_events_ends_correctly() {
    let events = [
        Happening::Exit,
        Happening::Eof(OUT),
        Happening::Eof(ERR),
        Happening::Tick,
        Happening::Overflow(OUT),
    ];
    let mut endings = std::collections::BTreeSet::new();
    for child in children() {
        for script in permutations(&events) {
            let out = check(child, &script);
            endings.insert(format!("{:?}", out.ending));
        }
    }
    // The orderings reach every kind of ending.
    assert_eq!(endings.len(), 3, "{endings:?}");
}

#[test]
fn exit_then_eof_finishes_without_signals() {
    let out = check(
        Child::default(),
        &[Happening::Exit, Happening::Eof(OUT), Happening::Eof(ERR)],
    );
    assert_eq!(out.ending, Ending::Exited);
    assert!(out.signals.is_empty());
}

#[test]
fn timeout_kills_then_escalates_when_the_signal_is_ignored() {
    let child = Child {
        ignores_term: true,
        timeout: true,
        ..Child::default()
    };
    let out = check(child, &[Happening::Tick]);
    assert_eq!(out.ending, Ending::TimedOut);
    assert_eq!(out.signals, [Signal::SIGTERM, Signal::SIGKILL]);
}

#[test]
fn background_process_holding_pipes_ends_after_the_grace() {
    let child = Child {
        background_holds_pipes: true,
        ..Child::default()
    };
    let out = check(child, &[Happening::Exit]);
    assert_eq!(out.ending, Ending::Exited);
    assert!(out.signals.is_empty(), "the `&` process is left running");
}

#[test]
fn overflow_after_the_exit_kills_nothing() {
    let child = Child {
        background_holds_pipes: true,
        ..Child::default()
    };
    let now = Instant::now();
    let mut rules = Rules::new(Limits::UNLIMITED, now, 1, true);
    rules.capture([true, true]);
    rules.on(Event::Exited(0), now);
    assert_eq!(rules.next(now), Action::Reap(0));
    rules.on(Event::Reaped(0), now);
    rules.on(Event::Read(OUT, true), now);
    assert_eq!(rules.next(now), Action::DrainReady);
    rules.drained();
    assert_eq!(rules.next(now), Action::Finish(Ending::Overflow(OUT)));
    let _ = child;
}

#[test]
fn zero_and_huge_timeouts_mean_never() {
    let now = Instant::now();
    for timeout in [Duration::ZERO, Duration::MAX] {
        let limits = Limits {
            timeout: Some(timeout),
            ..Limits::UNLIMITED
        };
        let mut rules = Rules::new(limits, now, 1, false);
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            rules.next(later),
            Action::Wait(Wait {
                until: None,
                read: [false, false],
                exits: true,
                feed: true,
            })
        );
    }
}

#[test]
fn infinite_grace_never_escalates() {
    let now = Instant::now();
    let limits = Limits {
        timeout: Some(Duration::from_millis(1)),
        kill_grace: Duration::MAX,
        ..Limits::UNLIMITED
    };
    let mut rules = Rules::new(limits, now, 1, true);
    let later = now + Duration::from_secs(1);
    assert_eq!(rules.next(later), Action::Signal(Signal::SIGKILL));
    assert_eq!(rules.sigkill_due(), Some(None));
    match rules.next(later + Duration::from_secs(3600)) {
        Action::Wait(w) => assert_eq!(w.until, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pipes_open_after_reap_are_read_for_the_grace_only() {
    let now = Instant::now();
    let mut rules = Rules::new(Limits::UNLIMITED, now, 1, false);
    rules.capture([true, false]);
    rules.on(Event::Reaped(0), now);
    match rules.next(now) {
        Action::Wait(w) => assert_eq!(w.until, Some(now + PIPE_GRACE)),
        other => panic!("{other:?}"),
    }
    assert_eq!(rules.next(now + PIPE_GRACE), Action::DrainReady);
}

#[test]
fn a_pipeline_reaps_every_stage_and_kills_the_group_once() {
    let now = Instant::now();
    let limits = Limits {
        timeout: Some(Duration::from_secs(1)),
        ..Limits::UNLIMITED
    };
    let mut rules = Rules::new(limits, now, 3, true);
    rules.capture([true, false]);
    // The first stage exits early (`head -1` downstream): reaped at once.
    rules.on(Event::Exited(0), now);
    assert_eq!(rules.next(now), Action::Reap(0));
    rules.on(Event::Reaped(0), now);
    // The timeout comes while the others run.
    let late = now + Duration::from_secs(2);
    assert_eq!(rules.next(late), Action::Signal(Signal::SIGKILL));
    rules.on(Event::Exited(1), late);
    rules.on(Event::Exited(2), late);
    assert_eq!(rules.next(late), Action::KillStragglers);
    assert_eq!(rules.next(late), Action::Reap(1));
    rules.on(Event::Reaped(1), late);
    assert_eq!(rules.next(late), Action::Reap(2));
    rules.on(Event::Reaped(2), late);
    assert_eq!(rules.next(late), Action::DrainReady);
    rules.drained();
    assert_eq!(rules.next(late), Action::Finish(Ending::TimedOut));
}

/// Long random scripts, data included (what the fuzz target does, on a
/// fixed seed).
#[test]
fn random_scripts_end_correctly() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let all = [
        Happening::Exit,
        Happening::Eof(OUT),
        Happening::Eof(ERR),
        Happening::Overflow(OUT),
        Happening::Overflow(ERR),
        Happening::Data(OUT),
        Happening::Data(ERR),
        Happening::Tick,
    ];
    for _ in 0..20_000 {
        let bits = next();
        let child = Child {
            ignores_term: bits & 1 != 0,
            background_holds_pipes: bits & 2 != 0,
            timeout: bits & 4 != 0,
        };
        let len = (next() % 14) as usize;
        let script: Vec<Happening> = (0..len).map(|_| all[(next() % 8) as usize]).collect();
        check(child, &script);
    }
}
