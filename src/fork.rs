//! `fork`: a child with an IPC channel on fd 3, as Node's `fork` makes one.
//!
//! The channel is a `socketpair`; the child's end is placed at fd 3 by the
//! same `posix_spawn` file actions as stdio (no `pre_exec`, so no fork
//! path), and the child's environment says where it is:
//! `NODE_CHANNEL_FD=3`, `NODE_CHANNEL_SERIALIZATION_MODE=json`
//! (`lib/internal/child_process.js ChildProcess.prototype.spawn`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::capture::Limits;
use crate::channel::Channel;
use crate::child::Child;
use crate::command::Command;
use crate::error::{ChannelError, Error, Result};
use crate::kill::OnDrop;
use crate::spawn::Spec;
use crate::stdio::Stdio;
use crate::sys;
use crate::sys::ipc;

/// The fd the child finds its channel on: Node's default `[0, 1, 2, 'ipc']`.
const CHANNEL_FD: i32 = 3;

/// Prepare to start `program` with an IPC channel to it.
///
/// The child reads `NODE_CHANNEL_FD` to find the channel: a Rust program
/// calls [`Channel::from_parent`], a Node script uses `process.send` and
/// `process.on('message')`. A `program` ending in `.js`, `.mjs` or `.cjs`
/// runs under `node` (found in `PATH`) unless [`Fork::exec_path`] names an
/// interpreter; any other program runs directly.
///
/// Defaults, as in Node's `fork`:
/// - stdin, stdout and stderr inherited (piped with [`Fork::silent`]);
/// - the parent's environment, plus `NODE_CHANNEL_FD=3` and
///   `NODE_CHANNEL_SERIALIZATION_MODE=json`;
/// - the child keeps running when the [`Child`] is dropped (see
///   [`Fork::kill_on_drop`]); it sees its channel close and can exit.
///
/// # Examples
///
/// ```no_run
/// use child_process as cp;
/// use serde_json::json;
///
/// # async fn run() -> cp::Result<()> {
/// let mut worker = cp::fork("worker.js").args(["--id", "1"]).spawn()?;
/// worker.send(&json!({"job": 1})).await?;
/// let reply: Option<serde_json::Value> = worker.recv().await?;
/// worker.disconnect();
/// worker.wait().await?;
/// # Ok(())
/// # }
/// ```
pub fn fork(program: impl AsRef<OsStr>) -> Fork {
    Fork {
        program: program.as_ref().to_owned(),
        args: Vec::new(),
        exec_path: None,
        exec_args: Vec::new(),
        spec: Spec::default(),
        stdio: [None, None, None],
        silent: false,
        kill_on_drop: false,
        limits: Limits {
            kill_signal: crate::Signal::SIGTERM,
            ..Limits::UNLIMITED
        },
        listen_fds: Vec::new(),
        on_stdio: false,
    }
}

/// A child to start with an IPC channel; built by [`fork`].
///
/// # Examples
///
/// ```no_run
/// use child_process as cp;
///
/// # async fn run() -> cp::Result<()> {
/// let worker = cp::fork("target/release/worker").env("WORKER_ID", "3").silent(true).spawn()?;
/// # Ok(())
/// # }
/// ```
#[must_use = "`Fork` does nothing until you call `spawn()`"]
#[derive(Debug)]
pub struct Fork {
    program: OsString,
    args: Vec<OsString>,
    exec_path: Option<PathBuf>,
    exec_args: Vec<OsString>,
    spec: Spec,
    stdio: [Option<Stdio>; 3],
    silent: bool,
    kill_on_drop: bool,
    limits: Limits,
    /// Listening sockets placed at fd 3, 4, ... with systemd's
    /// `LISTEN_FDS`/`LISTEN_PID` (the cluster's `listen_fds`); the channel
    /// then comes after them.
    listen_fds: Vec<std::sync::Arc<OwnedFd>>,
    /// The channel is the child's stdin and stdout, not fd 3.
    on_stdio: bool,
}

/// `Fork` is built by value (`fork(..).args(..).spawn()`), where `Command`
/// takes `&mut self` as std's does: the crate's contract fixes
/// `Fork::spawn(self)`, and a `Fork` holds [`Stdio`]s, which own fds and
/// cannot be used twice, so a `Fork` is used once anyway. Build it in
/// steps by reassigning: `let mut f = fork(p); if verbose { f = f.args(["-v"]) }`.
impl Fork {
    /// Arguments for the program (after the script, for an interpreter).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::fork("worker.js").args(["--verbose"]).spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn args<I, S>(mut self, args: I) -> Fork
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The interpreter that runs `program` (Node's `execPath`), e.g. a
    /// particular `node` binary.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::fork("worker.js").exec_path("/opt/node20/bin/node").spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    #[doc(alias = "execPath")]
    pub fn exec_path(mut self, path: impl AsRef<Path>) -> Fork {
        self.exec_path = Some(path.as_ref().to_owned());
        self
    }

    /// Arguments for the interpreter, placed before `program` (Node's
    /// `execArgv`). Only meaningful with an interpreter: a `.js` program or
    /// [`Fork::exec_path`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::fork("worker.js").exec_args(["--max-old-space-size=512"]).spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    #[doc(alias = "execArgv")]
    pub fn exec_args<I, S>(mut self, args: I) -> Fork
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The child's working directory.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::fork("worker.js").cwd("workers").spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Fork {
        self.spec.set_cwd(dir.as_ref());
        self
    }

    /// Set an environment variable on top of the inherited environment
    /// (Node's `env` replaces it instead).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::fork("worker.js").env("NODE_ENV", "production").spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> Fork {
        self.spec.set_env(key.as_ref(), Some(val.as_ref()));
        self
    }

    /// Set several environment variables.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::fork("worker.js").envs([("A", "1"), ("B", "2")]).spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn envs<I, K, V>(mut self, vars: I) -> Fork
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.spec.set_env(k.as_ref(), Some(v.as_ref()));
        }
        self
    }

    /// Remove a variable from the child's environment.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("sh")
    ///     .args(["-c", "test -z \"$HOME\""])
    ///     .env_remove("HOME")
    ///     .spawn()?;
    /// assert!(worker.wait().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Fork {
        self.spec.set_env(key.as_ref(), None);
        self
    }

    /// Start from an empty environment (the channel variables are still
    /// set). Without `PATH`, a bare program name is looked up in
    /// `/usr/local/bin:/usr/bin:/bin`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("sh")
    ///     .args(["-c", "test -z \"$HOME\" && test \"$NODE_CHANNEL_FD\" = 3"])
    ///     .env_clear()
    ///     .spawn()?;
    /// assert!(worker.wait().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    pub fn env_clear(mut self) -> Fork {
        self.spec.clear_env();
        self
    }

    /// Kill the child if it runs longer than `timeout` (Node's `timeout`
    /// option of `fork`), enforced by [`Child::wait`] as for
    /// [`Command::timeout`](crate::Command::timeout): `kill_signal`
    /// (default `SIGTERM`), `SIGKILL` after `kill_grace`, then
    /// [`Error::Timeout`](crate::Error::Timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("sleep").args(["30"]).timeout(Duration::from_millis(50)).spawn()?;
    /// assert!(worker.wait().await.unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: std::time::Duration) -> Fork {
        self.limits.timeout = Some(timeout);
        self
    }

    /// The signal a timeout sends first (default `SIGTERM`, Node's
    /// `killSignal`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("sleep")
    ///     .args(["30"])
    ///     .timeout(Duration::from_millis(50))
    ///     .kill_signal(child_process::Signal::SIGINT)
    ///     .spawn()?;
    /// assert!(worker.wait().await.unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    #[doc(alias = "killSignal")]
    pub fn kill_signal(mut self, signal: crate::Signal) -> Fork {
        self.limits.kill_signal = signal;
        self
    }

    /// How long after the timeout's first signal `SIGKILL` follows
    /// (default 2 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("sh")
    ///     .args(["-c", "trap '' TERM; sleep 30"])
    ///     .timeout(Duration::from_millis(50))
    ///     .kill_grace(Duration::from_millis(100))
    ///     .spawn()?;
    /// assert!(worker.wait().await.unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_grace(mut self, grace: std::time::Duration) -> Fork {
        self.limits.kill_grace = grace;
        self
    }

    /// Pipe the child's stdin, stdout and stderr to the parent instead of
    /// inheriting them, as Node's `silent: true`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::fork("worker.js").silent(true).spawn()?;
    /// assert!(worker.stdout.is_some());
    /// # Ok(())
    /// # }
    /// ```
    pub fn silent(mut self, silent: bool) -> Fork {
        self.silent = silent;
        self
    }

    /// Where the child's stdin comes from (overrides `silent`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
    /// cp::fork("worker.js").stdin(cp::Stdio::null()).spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stdin(mut self, stdio: impl Into<Stdio>) -> Fork {
        self.stdio[0] = Some(stdio.into());
        self
    }

    /// Where the child's stdout goes (overrides `silent`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
    /// cp::fork("worker.js").stdout(cp::Stdio::piped()).spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stdout(mut self, stdio: impl Into<Stdio>) -> Fork {
        self.stdio[1] = Some(stdio.into());
        self
    }

    /// Where the child's stderr goes (overrides `silent`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
    /// cp::fork("worker.js").stderr(cp::Stdio::null()).spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stderr(mut self, stdio: impl Into<Stdio>) -> Fork {
        self.stdio[2] = Some(stdio.into());
        self
    }

    /// Kill the child with `SIGKILL` when the [`Child`] is dropped before it
    /// was waited for (default `false`: it sees its channel close instead).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::fork("worker.js").kill_on_drop(true).spawn()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_on_drop(mut self, kill_on_drop: bool) -> Fork {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// Run the channel over the child's stdin and stdout instead of fd 3
    /// (stderr stays for logs): for workers that speak JSON lines on stdio,
    /// in any language, and for commands that carry only stdio to the real
    /// worker (`ssh host worker`, `docker exec -i`, `sh -c 'exec worker'`).
    ///
    /// The child's fd 0 and fd 1 are one Unix socket, so the parent's side
    /// is as fast as a fork channel and a worker that reads the socket
    /// directly ([`Channel::from_stdio`] does) can even receive handles;
    /// through a relay only the bytes travel. `NODE_CHANNEL_FD` is not
    /// set: a Node worker reads `process.stdin` with `readline` and writes
    /// `JSON.stringify(msg) + '\n'` to `process.stdout` (see
    /// `examples/stdio_worker.js`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("ssh")
    ///     .args(["build-host", "worker", "--stdio"])
    ///     .channel_on_stdio()
    ///     .spawn()?;
    /// worker.send(&"job 1").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn channel_on_stdio(mut self) -> Fork {
        self.on_stdio = true;
        self
    }

    /// The child leads a process group of its own (cluster workers: the
    /// primary signals a worker with what it started).
    pub(crate) fn in_own_group(mut self) -> Fork {
        self.spec.process_group = true;
        self
    }

    /// Pass listening sockets as systemd socket activation does.
    pub(crate) fn listen_fds(mut self, fds: Vec<std::sync::Arc<OwnedFd>>) -> Fork {
        self.listen_fds = fds;
        self
    }

    /// Start the child with its channel.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("worker.js").spawn()?;
    /// worker.send("hello").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] as for [`Command::spawn`], and when `exec_args` are
    /// given without an interpreter.
    pub fn spawn(self) -> Result<Child> {
        let Fork {
            program,
            args,
            exec_path,
            exec_args,
            mut spec,
            stdio,
            silent,
            kill_on_drop,
            limits,
            listen_fds,
            on_stdio,
        } = self;
        let is_script = Path::new(&program)
            .extension()
            .is_some_and(|ext| ext == "js" || ext == "mjs" || ext == "cjs");
        let interpreter = exec_path
            .map(PathBuf::into_os_string)
            .or_else(|| is_script.then(|| "node".into()));
        match interpreter {
            Some(interpreter) => {
                spec.program = interpreter;
                spec.args = exec_args;
                spec.args.push(program);
            }
            None => {
                spec.program = program;
                if !exec_args.is_empty() {
                    return Err(Error::spawn(
                        &spec.command_line(),
                        "exec_args need an interpreter: a .js program or exec_path",
                        std::io::Error::from(std::io::ErrorKind::InvalidInput),
                    ));
                }
            }
        }
        spec.args.extend(args);
        let channel_fd = CHANNEL_FD + listen_fds.len() as i32;
        if !listen_fds.is_empty() {
            // sd_listen_fds(3): LISTEN_PID must be the worker's own pid,
            // known only once it runs; a shell sets it and execs the
            // program in its place (same pid, same fds).
            let program = std::mem::replace(&mut spec.program, "/bin/sh".into());
            let mut args = vec![
                "-c".into(),
                "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"".into(),
                program,
            ];
            args.append(&mut spec.args);
            spec.args = args;
            let n = listen_fds.len().to_string();
            spec.set_env(OsStr::new("LISTEN_FDS"), Some(OsStr::new(&n)));
            spec.set_env(OsStr::new("LISTEN_PID"), None);
        }
        if on_stdio {
            if stdio[0].is_some() || stdio[1].is_some() {
                return Err(Error::spawn(
                    &spec.command_line(),
                    "stdin and stdout carry the channel (channel_on_stdio): do not set them",
                    std::io::Error::from(std::io::ErrorKind::InvalidInput),
                ));
            }
            // No channel variables: the child's channel is its stdio.
            spec.set_env(OsStr::new(ipc::CHANNEL_FD_VAR), None);
            spec.set_env(OsStr::new(ipc::SERIALIZATION_VAR), None);
        } else {
            // Appended last, so they win over the user's env, as in Node.
            let channel_var = channel_fd.to_string();
            spec.set_env(
                OsStr::new(ipc::CHANNEL_FD_VAR),
                Some(OsStr::new(&channel_var)),
            );
            spec.set_env(OsStr::new(ipc::SERIALIZATION_VAR), Some(OsStr::new("json")));
        }

        let line = spec.command_line();
        let (ours, theirs) = sys::socketpair()
            .map_err(|e| crate::spawn::resource_error(&line, "create the IPC socketpair", e))?;
        let mut cmd = Command::from_spec(spec);
        let default = || {
            if silent {
                Stdio::piped()
            } else {
                Stdio::inherit()
            }
        };
        let [stdin, stdout, stderr] = stdio;
        if on_stdio {
            // Placed below as fds 0 and 1.
            cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
        } else {
            cmd.stdin(stdin.unwrap_or_else(default))
                .stdout(stdout.unwrap_or_else(default));
        }
        cmd.stderr(stderr.unwrap_or_else(default));
        let on_drop = OnDrop::kill_on_drop(kill_on_drop);
        let mut extra: Vec<_> = listen_fds
            .iter()
            .zip(CHANNEL_FD..)
            .map(|(fd, at)| (fd.as_fd(), at))
            .collect();
        if on_stdio {
            extra.extend([(theirs.as_fd(), 0), (theirs.as_fd(), 1)]);
        } else {
            extra.push((theirs.as_fd(), channel_fd));
        }
        let mut child = cmd.spawn_with(&extra, on_drop, limits)?;
        drop(theirs);
        let channel = Channel::from_fd(ours).map_err(|e| match e {
            Error::Channel(ChannelError::Io(source)) => Error::spawn(
                &line,
                "cannot set up our end of the IPC channel (duplicate its fd, register it with the tokio runtime)",
                source,
            ),
            other => other,
        })?;
        child.set_channel(channel);
        Ok(child)
    }
}
