//! The environment a child inherits unchanged: `environ` itself, handed to
//! `posix_spawn` without a copy, while that is sound.
//!
//! Why: copying the environment (`std::env::vars_os`, two allocations per
//! variable, under std's lock) was most of what our parent did per spawn:
//! callgrind counted 43k user-space instructions per `/bin/true` spawn
//! with 35 variables, 39k of them the copy, against tokio's 6.5k (tokio
//! goes through std, which passes `environ` under its own lock).
//!
//! When it is sound: `environ` still points to the array the kernel laid
//! out on the initial stack (`argv`, a null, then `envp`: the ELF ABI),
//! which this module records before `main` ([`record`]). glibc never frees
//! or moves that array, nor the strings it points to (they are on the
//! stack, or values `setenv` allocated and keeps forever); it only changes
//! it in place, one pointer at a time (`setenv` of an existing variable
//! stores a new string's address; `unsetenv` shifts the rest down).
//! Adding a variable makes glibc copy the array to one of its own and point
//! `environ` there, leaving this one be. So whatever another thread's
//! `std::env::set_var` does meanwhile, the kernel's `execve` in the child
//! reads pointers to valid strings, or null: it passes over the array
//! twice (to count, then to copy), and a `remove_var` shifting the array
//! between the passes leaves a counted slot null. `execve` then fails with
//! `EFAULT` (or `E2BIG`), and `spawn_raw` tries again with a copy (a
//! removal at the wrong moment may also show the child one variable twice,
//! with its one value). Once `environ` points elsewhere (a variable was added),
//! `setenv` may `realloc` that array under a spawn, and the caller copies
//! the environment under std's lock instead, as before
//! (`tests/it/regression.rs`, issue 6: passing that array raw made spawns
//! fail with `EFAULT`).
//!
//! Only glibc says where the initial array is (it passes `argc, argv,
//! envp` to `.init_array` functions, which std relies on for
//! `std::env::args`); elsewhere the environment is always copied.

use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::ipc::INHERITED_ONLY;

/// The `envp` array on the initial stack, recorded by [`record`]; null
/// until then, or where it cannot be known.
static INITIAL: AtomicPtr<*const c_char> = AtomicPtr::new(std::ptr::null_mut());

/// Whether the initial array holds a variable no child inherits
/// ([`INHERITED_ONLY`]: this process was forked with a channel).
static INITIAL_HOLDS_OURS_ONLY: AtomicBool = AtomicBool::new(false);

/// Run by glibc before `main` with the process's `argc` and `argv` (the
/// kernel's array on the initial stack; the dynamic loader's own arguments,
/// when it was run as a program, skipped). `envp` here may already be an
/// array a library constructor's `setenv` made, so the initial one is
/// found from `argv`: right after its terminating null.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn record(argc: libc::c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    let Ok(argc) = usize::try_from(argc) else {
        return;
    };
    if argv.is_null() {
        return;
    }
    // SAFETY: glibc passes the process's argv, an array of `argc` pointers
    // and a terminating null (the ELF ABI); `argv + argc` is that null.
    let end = unsafe { argv.add(argc) };
    // SAFETY: `end` is in the array, as above.
    if !unsafe { end.read() }.is_null() {
        return;
    }
    // SAFETY: one past the terminating null is the start of `envp`, which
    // the ABI places right after it on the same stack.
    let envp = unsafe { end.add(1) };
    let mut at = envp;
    loop {
        // SAFETY: `at` is in `envp`, which ends with a null pointer: the
        // loop stops there. Before `main` nothing changes it.
        let var = unsafe { at.read() };
        if var.is_null() {
            break;
        }
        // SAFETY: a non-null entry of envp is a NUL-terminated string.
        let bytes = unsafe { std::ffi::CStr::from_ptr(var) }.to_bytes();
        if INHERITED_ONLY.iter().any(|name| {
            bytes
                .strip_prefix(name.as_bytes())
                .is_some_and(|r| r.starts_with(b"="))
        }) {
            INITIAL_HOLDS_OURS_ONLY.store(true, Ordering::Relaxed);
        }
        // SAFETY: not past the terminating null, as above.
        at = unsafe { at.add(1) };
    }
    INITIAL.store(envp.cast_mut(), Ordering::Relaxed);
}

// The section std uses for its own record of `argv` (`std::env::args`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[link_section = ".init_array.00099"]
static RECORD: extern "C" fn(libc::c_int, *const *const c_char, *const *const c_char) = record;

extern "C" {
    /// glibc's (and POSIX's) pointer to the current environment array.
    static environ: *const *const c_char;
}

/// This process's own environment array, as `posix_spawn`'s `envp`: only
/// made by [`inherited`].
#[derive(Clone, Copy)]
pub(crate) struct Inherited(*const *const c_char);

impl Inherited {
    pub(crate) fn as_ptr(self) -> *const *mut c_char {
        self.0.cast()
    }
}

/// `environ`, when it is still the initial array (see the module's doc)
/// and holds nothing a child must not inherit; `None` when the process
/// added a variable since, cleared the environment, runs on a C library
/// that does not say where the array began, or holds a variable of
/// [`INHERITED_ONLY`] (only ever there from the start: setting one adds
/// it, which moves the array).
pub(crate) fn inherited() -> Option<Inherited> {
    let initial = INITIAL.load(Ordering::Relaxed);
    if initial.is_null() {
        return None;
    }
    // SAFETY: `environ` is a pointer-sized, aligned global that glibc
    // stores whole; only std's `set_var`/`remove_var` (whose safety
    // contract rules out another thread reading the environment meanwhile
    // other than through std) or C's `setenv` store to it. Only the
    // pointer is read here, volatile so that it is read once, now.
    let now = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(environ)) };
    if now != initial.cast_const() {
        return None;
    }
    // Checked under std's lock, and only by a process started with one.
    let ours_only = INITIAL_HOLDS_OURS_ONLY.load(Ordering::Relaxed)
        && INHERITED_ONLY.iter().any(|v| std::env::var_os(v).is_some());
    (!ours_only).then_some(Inherited(now))
}

#[cfg(test)]
mod tests {
    use super::inherited;

    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// The environment a child of ours sees (`env -0`), as a set.
    fn childs_env() -> BTreeSet<Vec<u8>> {
        let out = crate::Command::new("/usr/bin/env")
            .arg("-0")
            .output_sync()
            .unwrap();
        assert!(out.status.success());
        out.stdout
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Ours, minus what a child never inherits.
    fn our_env() -> BTreeSet<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        std::env::vars_os()
            .filter(|(k, _)| !crate::sys::ipc::INHERITED_ONLY.iter().any(|v| k == v))
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
            .collect()
    }

    /// Run in a fresh copy of the test binary (`probe_in_a_fresh_process`),
    /// which starts with `CP_ENV_PROBE`, `CP_ENV_PROBE_GONE` and
    /// `NODE_CHANNEL_FD` set: the initial environment is passed as is while
    /// variables change in place (another thread churning one meanwhile),
    /// and is copied once a variable is added. Does nothing when not run
    /// that way.
    #[test]
    fn probe() {
        if std::env::var_os("CP_ENV_PROBE").is_none() {
            return;
        }
        // Never inherited, though ours: the environment is copied without it.
        assert!(std::env::var_os("NODE_CHANNEL_FD").is_some());
        assert!(inherited().is_none(), "a channel variable is left out");
        let env = childs_env();
        assert!(!env.iter().any(|v| v.starts_with(b"NODE_CHANNEL_FD=")));
        assert_eq!(env, our_env());
        std::env::remove_var("NODE_CHANNEL_FD");
        assert!(
            inherited().is_some(),
            "the initial environment is passed as is"
        );
        assert_eq!(childs_env(), our_env());

        // Removing and changing variables the process started with keeps
        // the array, and the child sees the change.
        std::env::remove_var("CP_ENV_PROBE_GONE");
        std::env::set_var("CP_ENV_PROBE", "changed");
        assert!(inherited().is_some(), "in-place changes keep the array");
        let env = childs_env();
        assert!(env.contains(&b"CP_ENV_PROBE=changed"[..]));
        assert!(!env.iter().any(|v| v.starts_with(b"CP_ENV_PROBE_GONE=")));
        assert_eq!(env, our_env());

        // Another thread changes a value in place while children start:
        // each sees one of the values.
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::env::set_var("CP_ENV_PROBE", if i % 2 == 0 { "a" } else { "bb" });
                    i += 1;
                }
            })
        };
        for _ in 0..200 {
            assert!(inherited().is_some());
            let out = crate::Command::new("/bin/sh")
                .args(["-c", "printf %s \"$CP_ENV_PROBE\""])
                .output_sync()
                .unwrap();
            assert!(out.status.success());
            assert!(
                [&b"a"[..], b"bb", b"changed"].contains(&&out.stdout[..]),
                "{:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();

        std::env::set_var("CP_ENV_PROBE_ADDED", "1");
        assert!(inherited().is_none(), "an added variable moves the array");
        let env = childs_env();
        assert!(env.contains(&b"CP_ENV_PROBE_ADDED=1"[..]));
        assert_eq!(env, our_env());
        println!("probe ran");
    }

    /// Variables a fresh process of [`removals_while_spawning`] starts with.
    const REMOVED: usize = 5000;

    /// Run in a fresh copy of the test binary, started with [`REMOVED`]
    /// variables: one thread removes them (glibc shifts the initial array
    /// down in place) while this one spawns. `execve` reads the array twice
    /// (to count, then to copy), so a removal between the two passes made a
    /// spawn fail with `EFAULT`; it is retried with a copy.
    #[test]
    fn removals_probe() {
        if std::env::var_os("CP_ENV_REMOVALS").is_none() {
            return;
        }
        assert!(inherited().is_some());
        let done = Arc::new(AtomicBool::new(false));
        let remover = {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..REMOVED {
                    std::env::remove_var(format!("CP_ENV_REMOVED_{i}"));
                }
                done.store(true, Ordering::Relaxed);
            })
        };
        let mut failures = Vec::new();
        let mut spawns = 0;
        while !done.load(Ordering::Relaxed) {
            spawns += 1;
            if let Err(e) = crate::Command::new("/bin/true").output_sync() {
                failures.push(e.to_string());
            }
        }
        remover.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} of {spawns}: {failures:?}",
            failures.len()
        );
        assert!(inherited().is_some(), "removals keep the array");
        assert_eq!(childs_env(), our_env());
        println!("probe ran");
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn removals_while_spawning() {
        // Without the retry, about half of such processes saw a failure.
        for _ in 0..4 {
            run_probe("removals_probe", |cmd| {
                cmd.env("CP_ENV_REMOVALS", "1");
                for i in 0..REMOVED {
                    cmd.env(format!("CP_ENV_REMOVED_{i}"), "x");
                }
            });
        }
    }

    /// Runs the test `name` alone in a fresh copy of this binary, its
    /// environment set by `env`, and checks that it ran and passed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn run_probe(name: &str, env: impl FnOnce(&mut std::process::Command)) {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            &format!("sys::env::tests::{name}"),
            "--nocapture",
        ]);
        env(&mut cmd);
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("probe ran"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn probe_in_a_fresh_process() {
        run_probe("probe", |cmd| {
            cmd.env("CP_ENV_PROBE", "1")
                .env("CP_ENV_PROBE_GONE", "1")
                // Not an fd of the child's: recorded and never adopted.
                .env("NODE_CHANNEL_FD", "987");
        });
    }
}
