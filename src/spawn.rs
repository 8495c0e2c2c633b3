//! The one place a process is created: [`Spec`] (what to run) becomes a
//! `posix_spawn` plan in [`spawn_raw`], and failures are explained in words.
//!
//! No tokio here: the async [`Child`](crate::Child) and the blocking driver
//! both start from the [`RawChild`] this returns. The syscalls are in `sys`.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::{CommandLine, Error, Result};
use crate::stdio::StdioKind;
use crate::sys;
use crate::sys::ipc;

/// What to run: program, arguments, environment, cwd. Shared by every
/// builder of the crate, and `Clone` so an `Exec` can be run twice.
#[derive(Clone, Debug, Default)]
pub(crate) struct Spec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub argv0: Option<OsString>,
    pub cwd: Option<PathBuf>,
    pub env_clear: bool,
    /// Changes to the environment in order: `Some` sets, `None` removes.
    pub env: Vec<(OsString, Option<OsString>)>,
    /// Run the child in a process group of its own.
    pub process_group: bool,
    /// Run the child in the process group of this (living, unreaped)
    /// process instead: the later stages of a pipeline join the first's.
    pub join_group: Option<libc::pid_t>,
    /// Give the child's stderr the same target as its stdout (2>&1).
    pub merge_stderr: bool,
    /// Run the child in a session of its own (`setsid`).
    pub new_session: bool,
    /// How error messages show the command; by default the quoted argv.
    pub display: Option<CommandLine>,
}

impl Spec {
    pub(crate) fn new(program: &OsStr) -> Spec {
        Spec {
            program: program.to_owned(),
            ..Spec::default()
        }
    }

    /// Whether the child leads a process group of its own (its pid names
    /// the group): a group of its own, or a session of its own.
    pub(crate) fn leads_group(&self) -> bool {
        self.process_group || self.new_session
    }

    pub(crate) fn command_line(&self) -> CommandLine {
        match &self.display {
            Some(line) => line.clone(),
            None => CommandLine::from_argv(
                std::iter::once(&*self.program).chain(self.args.iter().map(|a| &**a)),
            ),
        }
    }

    /// The child's working directory; an empty path leaves the parent's,
    /// as Node does with `cwd: ''`.
    pub(crate) fn set_cwd(&mut self, dir: &Path) {
        self.cwd = (!dir.as_os_str().is_empty()).then(|| dir.to_owned());
    }

    pub(crate) fn set_env(&mut self, key: &OsStr, val: Option<&OsStr>) {
        self.env.push((key.to_owned(), val.map(ToOwned::to_owned)));
    }

    pub(crate) fn clear_env(&mut self) {
        self.env_clear = true;
        self.env.clear();
    }

    /// The child's environment: ours as it is when nothing changes it and
    /// that is sound (`sys::env`), else built by [`Spec::envp_copy`].
    fn envp(&self, line: &CommandLine) -> Result<sys::Envp> {
        for (key, val) in &self.env {
            check_env_key(key, line)?;
            if let Some(val) = val {
                check_nul(
                    val.as_bytes(),
                    format_args!("environment variable {key:?}"),
                    line,
                )?;
            }
        }
        if self.env.is_empty() && !self.env_clear {
            if let Some(env) = sys::env::inherited() {
                return Ok(sys::Envp::Inherited(env));
            }
        }
        Ok(sys::Envp::Built(self.envp_copy()))
    }

    /// The child's environment, as `KEY=VALUE` C strings.
    ///
    /// The inherited variables keep their order, minus those the changes
    /// name; then come the variables the changes set, in the order of each
    /// one's last change. `vars_os` (std's copy, taken under its lock) goes
    /// straight into the packed buffer, one variable at a time. The changes
    /// must have been checked (by [`Spec::envp`]).
    fn envp_copy(&self) -> sys::CStrArray {
        let changed = |key: &OsStr| self.env.iter().any(|(k, _)| k == key);
        let mut envp = sys::CStrArray::builder();
        if !self.env_clear {
            // A channel (or cluster worker id) this process inherited belongs
            // to this process, not to its children: a child told
            // `NODE_CHANNEL_FD=3` while fd 3 is closed in it (Node aborts) or
            // is something else would speak on the wrong fd. `fork` sets the
            // variables again for the channel it makes.
            for (k, v) in std::env::vars_os() {
                if !ipc::INHERITED_ONLY.iter().any(|i| k == *i) && !changed(&k) {
                    // Variables from the OS cannot hold NUL bytes (they are C
                    // strings).
                    envp.push([k.as_bytes(), b"=", v.as_bytes()]);
                }
            }
        }
        for (i, (k, v)) in self.env.iter().enumerate() {
            let last = !self.env[i + 1..].iter().any(|(later, _)| later == k);
            if let Some(v) = v.as_ref().filter(|_| last) {
                envp.push([k.as_bytes(), b"=", v.as_bytes()]);
            }
        }
        envp.finish()
    }

    /// The value `PATH` will have in the child.
    fn child_path(&self) -> Option<OsString> {
        if let Some((_, val)) = self.env.iter().rev().find(|(k, _)| k == "PATH") {
            return val.clone();
        }
        if self.env_clear {
            None
        } else {
            std::env::var_os("PATH")
        }
    }
}

fn check_env_key(key: &OsStr, line: &CommandLine) -> Result<()> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'=') || bytes.contains(&0) {
        return Err(Error::spawn(
            line,
            format!("invalid environment variable name {key:?}: it must be non-empty and hold no `=` or NUL"),
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    Ok(())
}

/// A NUL byte cannot cross into C; `what` names the value in the error (it
/// is only formatted on failure).
fn check_nul(bytes: &[u8], what: impl std::fmt::Display, line: &CommandLine) -> Result<()> {
    match memchr::memchr(0, bytes) {
        None => Ok(()),
        Some(at) => {
            let shown = String::from_utf8_lossy(&bytes[..at]);
            Err(Error::spawn(
                line,
                format!("{what} holds a NUL byte (after {shown:?})"),
                io::Error::from(io::ErrorKind::InvalidInput),
            ))
        }
    }
}

fn c_string(bytes: Vec<u8>, what: impl std::fmt::Display, line: &CommandLine) -> Result<CString> {
    check_nul(&bytes, what, line)?;
    Ok(CString::new(bytes).expect("checked for NUL bytes"))
}

/// A spawned process before it is wrapped for tokio or for blocking use.
pub(crate) struct RawChild {
    pub pid: libc::pid_t,
    /// When `posix_spawn` returned: a timeout counts from here.
    pub started: std::time::Instant,
    pub pidfd: Option<OwnedFd>,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// It leads a process group of its own (`process_group`,
    /// `new_session`, or a group it was to join was gone).
    pub leads_group: bool,
}

/// Start a process. The only caller of `sys::spawn` in the crate.
///
/// `extra` places more fds in the child (the IPC socket of `fork`), as
/// `(parent fd, child fd number)`. Every parent-side pipe end comes back
/// non-blocking and CLOEXEC.
pub(crate) fn spawn_raw(
    spec: &Spec,
    line: &CommandLine,
    stdio: [&StdioKind; 3],
    extra: &[(BorrowedFd<'_>, RawFd)],
) -> Result<RawChild> {
    let program = c_string(spec.program.as_bytes().to_vec(), "program", line)?;
    if program.as_bytes().is_empty() {
        return Err(Error::spawn(
            line,
            "program is empty",
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    let argv0 = match &spec.argv0 {
        Some(argv0) => {
            check_nul(argv0.as_bytes(), "argv0", line)?;
            argv0.as_bytes()
        }
        None => program.as_bytes(),
    };
    for (i, arg) in spec.args.iter().enumerate() {
        check_nul(arg.as_bytes(), format_args!("argument {}", i + 1), line)?;
    }
    let argv = sys::CStrArray::new(
        std::iter::once(argv0)
            .chain(spec.args.iter().map(|a| a.as_bytes()))
            .map(|a| [a]),
    );
    let cwd = match &spec.cwd {
        Some(cwd) => Some(c_string(cwd.as_os_str().as_bytes().to_vec(), "cwd", line)?),
        None => None,
    };
    let envp = spec.envp(line)?;
    let path = resolve_program(spec, &program, line)?;

    // Pipes: (parent end, child end).
    let io_err = |e: io::Error| resource_error(line, "create a pipe", e);
    let mut parent = [None, None, None];
    let mut child_ends: [Option<OwnedFd>; 3] = [None, None, None];
    // 2>&1: stderr is whatever stdout is (one pipe, so the order of
    // interleaved writes is kept); what `stdio[2]` says is not used.
    let stdio = if spec.merge_stderr {
        [stdio[0], stdio[1], &StdioKind::Inherit]
    } else {
        stdio
    };
    for (i, kind) in stdio.iter().enumerate() {
        if let StdioKind::Piped = kind {
            let (read, write) = sys::pipe().map_err(io_err)?;
            let (mine, theirs) = if i == 0 { (write, read) } else { (read, write) };
            sys::set_nonblocking(mine.as_fd()).map_err(io_err)?;
            parent[i] = Some(mine);
            child_ends[i] = Some(theirs);
        }
    }

    // Every source fd must sit above every target, so no dup2 clobbers a
    // source that a later dup2 still needs, and dup2(fd, fd) (which keeps
    // CLOEXEC set) cannot happen. Only a parent that closed its own 0-2 gets
    // low fds from pipe() or open(); std has the same concern.
    let close_from = extra
        .iter()
        .map(|(_, target)| target + 1)
        .fold(3, RawFd::max);
    let dev_null = if stdio.iter().any(|k| matches!(k, StdioKind::Null)) {
        Some(sys::dev_null().map_err(|e| Error::spawn(line, "cannot open /dev/null", e))?)
    } else {
        None
    };
    // A non-blocking fd given as stdio would make the child's reads and
    // writes fail with EAGAIN (libuv makes a child's 0-2 blocking in its
    // fork path; posix_spawn has no such step): a pipe gets a blocking
    // description of its own, anything else is refused (`sys::blocking_stdio`).
    let mut reopened: [Option<OwnedFd>; 3] = [None, None, None];
    for (i, kind) in stdio.iter().enumerate() {
        if let StdioKind::Fd(fd) = kind {
            reopened[i] = sys::blocking_stdio(fd.as_fd()).map_err(|e| {
                let name = ["stdin", "stdout", "stderr"][i];
                Error::spawn(
                    line,
                    format!("the fd given as {name} cannot be used: {e}"),
                    e,
                )
            })?;
        }
    }
    let mut lifted: Vec<OwnedFd> = Vec::new();
    let mut sources: Vec<(BorrowedFd<'_>, RawFd)> = Vec::with_capacity(3 + extra.len());
    let mut wanted: Vec<(BorrowedFd<'_>, RawFd)> = Vec::with_capacity(3 + extra.len());
    for (i, kind) in stdio.iter().enumerate() {
        let fd = match kind {
            StdioKind::Piped => child_ends[i].as_ref().map(|fd| fd.as_fd()),
            StdioKind::Null => dev_null,
            StdioKind::Fd(fd) => Some(reopened[i].as_ref().map_or(fd.as_fd(), |r| r.as_fd())),
            // A tee is the caller's to carry out; here it is the parent's
            // own stream, as inherit.
            StdioKind::Inherit | StdioKind::Tee => None,
        };
        if let Some(fd) = fd {
            wanted.push((fd, i as RawFd));
        }
    }
    if spec.merge_stderr {
        let stdout = match wanted.iter().find(|&&(_, target)| target == 1) {
            Some(&(fd, _)) => fd,
            // stdout is inherited: the parent's fd 1, which stays open.
            None => sys::own_fd(1),
        };
        wanted.push((stdout, 2));
    }
    wanted.extend_from_slice(extra);
    for &(fd, _) in &wanted {
        if std::os::fd::AsRawFd::as_raw_fd(&fd) < close_from {
            lifted.push(sys::dup_at_least(fd, close_from).map_err(io_err)?);
        }
    }
    let mut lifted_iter = lifted.iter();
    for &(fd, target) in &wanted {
        if std::os::fd::AsRawFd::as_raw_fd(&fd) < close_from {
            sources.push((
                lifted_iter
                    .next()
                    .expect("one lifted fd per low source")
                    .as_fd(),
                target,
            ));
        } else {
            sources.push((fd, target));
        }
    }

    // The environment copied after a first try with ours as is failed;
    // declared before the plan, which then borrows it.
    let copied;
    let mut plan = sys::SpawnPlan {
        path: &path,
        argv: &argv,
        envp: &envp,
        cwd: cwd.as_deref(),
        fds: &sources,
        close_from,
        process_group: match spec.join_group {
            Some(pgid) => Some(pgid),
            None => spec.process_group.then_some(0),
        },
        new_session: spec.new_session,
    };
    let mut leads_group = spec.leads_group() && spec.join_group.is_none();
    let mut spawned = sys::spawn(&plan);
    // Ours as is changed under the kernel's two passes over it: another
    // thread's `remove_var` shifted the array between `execve` counting the
    // strings and copying them, so a slot counted was null (`EFAULT`), or
    // the strings outgrew what was counted (`E2BIG`). Again with a copy,
    // taken under std's lock, which a true `E2BIG` fails the same way.
    if matches!(plan.envp, sys::Envp::Inherited(_))
        && matches!(&spawned, Err(e) if matches!(e.raw_os_error(), Some(libc::EFAULT | libc::E2BIG)))
    {
        copied = sys::Envp::Built(spec.envp_copy());
        plan.envp = &copied;
        spawned = sys::spawn(&plan);
    }
    // The group to join is gone: its leader exited and was reaped before
    // this process could join (a pipeline's first stage when `SIGCHLD` is
    // ignored, which makes the kernel reap at once). `setpgid` says EPERM;
    // the stage then leads a group of its own, which the pipeline signals
    // as well (`kill::signal_tree`).
    if spec.join_group.is_some()
        && matches!(&spawned, Err(e) if e.raw_os_error() == Some(libc::EPERM))
    {
        plan.process_group = Some(0);
        leads_group = true;
        spawned = sys::spawn(&plan);
    }
    let pid = spawned.map_err(|e| {
        let reason = explain_spawn_error(&e, spec, &path, &argv, plan.envp);
        Error::spawn(line, reason, e)
    })?;
    drop(sources);
    drop(child_ends);
    // Without a pidfd (out of fds, or a kernel before 5.3) the child is
    // still ours: waiting falls back to SIGCHLD + waitpid(pid). Failing here
    // would leave a running child that nobody supervises.
    let pidfd = sys::pidfd_open_child(pid).unwrap_or(None);
    let [stdin, stdout, stderr] = parent;
    Ok(RawChild {
        pid,
        started: std::time::Instant::now(),
        pidfd,
        stdin,
        stdout,
        stderr,
        leads_group,
    })
}

/// Find the program the way `execvp` would, in the `PATH` the child will
/// have (std does the same when the caller changed `PATH`), so errors can
/// name the file and `posix_spawn` (not `posix_spawnp`) runs it directly.
fn resolve_program(spec: &Spec, program: &CString, line: &CommandLine) -> Result<CString> {
    if program.as_bytes().contains(&b'/') {
        return Ok(program.clone());
    }
    let path_var = spec
        .child_path()
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = None;
    for dir in std::env::split_paths(&path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        // What the child will execute: a relative entry is relative to the
        // child's cwd, since posix_spawn changes directory first. Here, in
        // the parent, the same file is at `cwd/entry`.
        let candidate = dir.join(OsStr::from_bytes(program.as_bytes()));
        let here = match (&spec.cwd, dir.is_relative()) {
            (Some(cwd), true) => cwd.join(&candidate),
            _ => candidate.clone(),
        };
        if let Ok(meta) = std::fs::metadata(&here) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return c_string(candidate.into_os_string().into_vec(), "program", line);
            }
            denied.get_or_insert(here);
        }
    }
    let (reason, kind) = match denied {
        Some(path) => (
            format!("`{}` is not an executable file", path.display()),
            io::ErrorKind::PermissionDenied,
        ),
        None => (
            format!(
                "program `{}` not found in PATH ({})",
                program.to_string_lossy(),
                path_var.to_string_lossy()
            ),
            io::ErrorKind::NotFound,
        ),
    };
    Err(Error::spawn(line, reason, io::Error::from(kind)))
}

/// Say in words why `posix_spawn` failed. glibc reports a failed `chdir` and a
/// failed `execve` with the same errno (Node then blames the program for a
/// missing cwd, nodejs/node#11520), so look at the cwd and the program again.
fn explain_spawn_error(
    err: &io::Error,
    spec: &Spec,
    path: &CString,
    argv: &sys::CStrArray,
    envp: &sys::Envp,
) -> String {
    let program = Path::new(OsStr::from_bytes(path.as_bytes()));
    if let Some(cwd) = &spec.cwd {
        match std::fs::metadata(cwd) {
            Err(_) => return format!("cwd `{}` does not exist", cwd.display()),
            Ok(meta) if !meta.is_dir() => {
                return format!("cwd `{}` is not a directory", cwd.display())
            }
            Ok(_) => {}
        }
    }
    let shown = match (&spec.cwd, program.is_relative()) {
        (Some(cwd), true) => format!("`{}` (in cwd `{}`)", program.display(), cwd.display()),
        _ => format!("`{}`", program.display()),
    };
    let full = match (&spec.cwd, program.is_relative()) {
        (Some(cwd), true) => cwd.join(program),
        _ => program.to_owned(),
    };
    match err.raw_os_error() {
        Some(libc::E2BIG) => match envp {
            sys::Envp::Built(envp) => explain_e2big(argv, envp),
            // The same variables, as bytes to measure.
            sys::Envp::Inherited(_) => explain_e2big(argv, &spec.envp_copy()),
        },
        Some(libc::ENOEXEC) => {
            format!("program {shown} is not in an executable format (a script needs a `#!` line)")
        }
        Some(libc::EAGAIN) => "the process limit was reached (RLIMIT_NPROC)".to_string(),
        Some(libc::EMFILE | libc::ENFILE) => "out of file descriptors".to_string(),
        Some(libc::ENOMEM) => "out of memory".to_string(),
        _ => match std::fs::metadata(&full) {
            Err(_) => format!("program {shown} not found"),
            Ok(meta) if meta.is_dir() => format!("program {shown} is a directory"),
            Ok(_) if err.raw_os_error() == Some(libc::EACCES) => {
                format!("program {shown} is not executable (permission denied)")
            }
            Ok(_) => format!("could not execute program {shown}"),
        },
    }
}

/// `E2BIG` has two causes: one string over `MAX_ARG_STRLEN` (128 KiB), or
/// all of them over `ARG_MAX`. Name the one that was hit.
fn explain_e2big(argv: &sys::CStrArray, envp: &sys::CStrArray) -> String {
    let one = sys::MAX_ARG_STRLEN;
    if let Some((i, len)) = argv.longest().filter(|&(_, len)| len >= one) {
        let which = if i == 0 {
            "argv[0]".to_string()
        } else {
            format!("argument {i}")
        };
        return format!(
            "{which} is {len} bytes; one argument may be at most {} bytes (MAX_ARG_STRLEN, 128 KiB)",
            one - 1
        );
    }
    if let Some((i, len)) = envp.longest().filter(|&(_, len)| len >= one) {
        let var = envp.get(i);
        let name = String::from_utf8_lossy(var.split(|&b| b == b'=').next().unwrap_or_default());
        return format!(
            "environment variable {name} is {len} bytes; one variable (NAME=value) may be at most {} bytes (MAX_ARG_STRLEN, 128 KiB)",
            one - 1
        );
    }
    format!(
        "argument list too long: {} bytes of arguments and environment, the limit is {} (ARG_MAX)",
        argv.total_bytes() + envp.total_bytes(),
        sys::arg_max()
    )
}

/// The error of a spawn that could not `doing` (make a pipe, a socket):
/// [`describe_resource_error`] says why.
pub(crate) fn resource_error(line: &CommandLine, doing: &str, e: io::Error) -> Error {
    Error::spawn(line, describe_resource_error(&e, doing), e)
}

/// "cannot {doing}", and why when the process or the system is out of fds.
fn describe_resource_error(err: &io::Error, doing: &str) -> String {
    match err.raw_os_error() {
        Some(libc::EMFILE) => {
            format!("cannot {doing}: this process is out of file descriptors (RLIMIT_NOFILE)")
        }
        Some(libc::ENFILE) => format!("cannot {doing}: the system is out of file descriptors"),
        _ => format!("cannot {doing}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment a child gets: inherited variables in order, minus
    /// those the changes name (no duplicates), then the set ones in the
    /// order of each one's last change; removals stick. Built twice, so the
    /// second array is built on the first one's reused buffers.
    #[test]
    fn environment_changes_apply_in_order() {
        let mut spec = Spec::new(OsStr::new("/bin/true"));
        let line = spec.command_line();
        spec.set_env(OsStr::new("PATH"), Some(OsStr::new("/x")));
        spec.set_env(OsStr::new("CP_U1"), Some(OsStr::new("a")));
        spec.set_env(OsStr::new("CP_U2"), Some(OsStr::new("b")));
        spec.set_env(OsStr::new("CP_U1"), Some(OsStr::new("c")));
        spec.set_env(OsStr::new("CP_U2"), None);
        for _ in 0..2 {
            spec.envp(&line).unwrap();
            let env = spec.envp_copy().strings();
            let tail: Vec<&[u8]> = env.iter().rev().take(2).rev().map(|s| &s[..]).collect();
            assert_eq!(tail, [&b"PATH=/x"[..], b"CP_U1=c"]);
            let named = |key: &[u8]| {
                env.iter()
                    .filter(|s| s.split(|&b| b == b'=').next() == Some(key))
                    .count()
            };
            assert_eq!(
                (named(b"PATH"), named(b"CP_U1"), named(b"CP_U2")),
                (1, 1, 0)
            );
            // Other tests set the channel variables meanwhile; a child never
            // inherits those.
            let inherited = std::env::vars_os()
                .filter(|(k, _)| k != "PATH" && !ipc::INHERITED_ONLY.iter().any(|v| k == v))
                .count();
            assert_eq!(env.len(), inherited + 2);
        }
        spec.clear_env();
        spec.set_env(OsStr::new("ONLY"), Some(OsStr::new("me")));
        assert!(matches!(spec.envp(&line), Ok(sys::Envp::Built(_))));
        assert_eq!(spec.envp_copy().strings(), [b"ONLY=me".to_vec()]);
    }

    /// Errors the kernel gives under resource limits, which a test process
    /// running as root cannot provoke (root is exempt from RLIMIT_NPROC):
    /// the words for them, through the same function real failures use.
    #[test]
    fn resource_errors_are_explained() {
        let spec = Spec::new(OsStr::new("/bin/true"));
        let path = CString::new("/bin/true").unwrap();
        let argv = sys::CStrArray::new([[path.as_bytes()]]);
        let envp = sys::Envp::Built(sys::CStrArray::new([] as [[&[u8]; 1]; 0]));
        let explain = |errno| {
            explain_spawn_error(
                &io::Error::from_raw_os_error(errno),
                &spec,
                &path,
                &argv,
                &envp,
            )
        };
        assert_eq!(
            explain(libc::EAGAIN),
            "the process limit was reached (RLIMIT_NPROC)"
        );
        assert_eq!(explain(libc::EMFILE), "out of file descriptors");
        assert_eq!(explain(libc::ENOMEM), "out of memory");
        assert!(explain(libc::E2BIG).starts_with("argument list too long"));
        let err = Error::spawn(
            &spec.command_line(),
            explain(libc::EAGAIN),
            io::Error::from_raw_os_error(libc::EAGAIN),
        );
        assert_eq!(
            err.to_string(),
            "failed to spawn `/bin/true`: the process limit was reached (RLIMIT_NPROC)"
        );
    }
}
