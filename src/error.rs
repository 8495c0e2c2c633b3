//! The crate's one error type.
//!
//! Every message names the command that ran, so a log line on its own says
//! what failed. The cause sits in [`std::error::Error::source`], not in the
//! message (reqwest's habit), and the variants that carry the child's
//! output append the last lines of its stderr (xshell's "stderr suffix").

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::Signal;

/// What a finished child wrote, and how it ended.
///
/// This is [`std::process::Output`]: `status`, `stdout` and `stderr` are
/// public fields.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> child_process::Result<()> {
/// let out: child_process::Output = child_process::exec("echo hi").await?;
/// assert!(out.status.success());
/// assert_eq!(out.stdout, b"hi\n");
/// # Ok(())
/// # }
/// ```
pub type Output = std::process::Output;

/// How a child ended: [`std::process::ExitStatus`].
///
/// [`std::os::unix::process::ExitStatusExt::signal`] tells which signal
/// killed it.
///
/// # Examples
///
/// ```
/// use std::os::unix::process::ExitStatusExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> child_process::Result<()> {
/// let mut child = child_process::spawn("sleep", ["10"])?;
/// child.kill(child_process::Signal::SIGKILL)?;
/// let status: child_process::ExitStatus = child.wait().await?;
/// assert_eq!(status.signal(), Some(9));
/// # Ok(())
/// # }
/// ```
pub type ExitStatus = std::process::ExitStatus;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong running a child process.
///
/// Match on the variant, or use the accessors ([`Error::output`],
/// [`Error::is_timeout`], [`Error::exit_status`], [`Error::command`]) so
/// that a new variant does not break your code.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// match cp::exec("exit 3").await {
///     Err(cp::Error::Exit { output, .. }) => assert_eq!(output.status.code(), Some(3)),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The process could not be started: the program or cwd is missing, the
    /// program is not executable, an argument holds a NUL byte, the system
    /// is out of fds or processes.
    #[error("failed to spawn `{command}`: {reason}")]
    Spawn {
        /// The command line that was to run.
        command: CommandLine,
        /// What went wrong, in words that name the path involved.
        reason: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The child exited with a non-zero code or was killed by a signal
    /// (from [`exec`](crate::exec) and [`exec_file`](crate::exec_file) only,
    /// unless `ignore_status()`).
    #[error("`{command}` failed: {status}{tail}", status = output.status, tail = OutputTail(output))]
    Exit {
        /// The command line that ran.
        command: CommandLine,
        /// Its status and everything it wrote.
        output: Box<Output>,
    },
    /// The child ran longer than its timeout and was killed, with its whole
    /// process group.
    #[error(
        "`{command}` timed out after {timeout:?}{fate}{tail}",
        fate = KillNote(output.status, *signal, true),
        tail = OutputTail(output)
    )]
    Timeout {
        /// The command line that ran.
        command: CommandLine,
        /// The timeout that expired.
        timeout: Duration,
        /// The signal sent first (`kill_signal`).
        signal: Signal,
        /// What the child wrote before it was killed; `status` says how it
        /// died.
        output: Box<Output>,
    },
    /// The child wrote more than `max_buffer` bytes to one stream and was
    /// killed, with its whole process group. (When the output came from a
    /// background process after the child had already exited, nothing is
    /// killed: the message then gives the child's exit status.)
    #[error(
        "`{command}` wrote more than {limit} bytes to {stream} (max_buffer){fate}{tail}",
        fate = KillNote(output.status, *signal, false),
        tail = StderrTail(&output.stderr)
    )]
    MaxBuffer {
        /// The command line that ran.
        command: CommandLine,
        /// The stream that overflowed.
        stream: Stream,
        /// The limit, in bytes.
        limit: usize,
        /// The signal sent first (`kill_signal`).
        signal: Signal,
        /// What was read, at most `limit` bytes per stream.
        output: Box<Output>,
    },
    /// Reading from, writing to or waiting for the child failed. Also what
    /// `?` makes of a plain [`io::Error`] (then [`Error::command`] is `None`), so a
    /// `main` returning [`Result`] can mix pipe I/O with this crate's calls.
    #[error("i/o error{}: {source}", IoContext(command))]
    Io {
        /// The command line that ran.
        command: CommandLine,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// A stage of a pipeline failed: with `set -o pipefail` semantics, the
    /// last stage that exited non-zero or died of a signal (a stage before
    /// the last that died of `SIGPIPE` because a later one stopped reading,
    /// as `head -1` does, is not a failure).
    #[error(
        "`{command}` failed at stage {stage} (`{stage_command}`): {status}{tail}",
        status = output.status,
        tail = OutputTail(output)
    )]
    Pipeline {
        /// The whole pipeline, `a | b | c`.
        command: CommandLine,
        /// Which stage failed, counted from 1.
        stage: usize,
        /// That stage's command line.
        stage_command: CommandLine,
        /// What the pipeline wrote (the last stage's stdout, every stage's
        /// captured stderr), with the failed stage's status.
        output: Box<Output>,
    },
    /// The child ran and was reaped by someone else, so its exit status is
    /// lost; what it wrote is kept. This happens only when this process
    /// ignores `SIGCHLD` (the kernel then reaps children itself) and the
    /// kernel could not keep the status for us (before Linux 6.15, or a
    /// child that exited before its pidfd was opened), or when other code
    /// in the process reaps with `waitpid(-1)`.
    #[error("`{command}` ran, but {reason}{tail}", tail = StderrTail(stderr))]
    StatusLost {
        /// The command line that ran.
        command: CommandLine,
        /// Why the status is lost.
        reason: String,
        /// What the child wrote to stdout.
        stdout: Vec<u8>,
        /// What the child wrote to stderr.
        stderr: Vec<u8>,
    },
    /// The IPC channel failed: it is closed, a message did not parse, or the
    /// channel fd is unusable.
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

/// `Debug` prints what `Display` prints (xshell does the same), so that a
/// `main` returning [`Result`] shows the command, the status and the stderr
/// tail, not the fields of a struct.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// What the child wrote before the failure, for [`Error::Exit`],
    /// [`Error::Timeout`] and [`Error::MaxBuffer`].
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let err = cp::exec("echo partial; exit 1").await.unwrap_err();
    /// assert_eq!(err.output().unwrap().stdout, b"partial\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn output(&self) -> Option<&Output> {
        match self {
            Error::Exit { output, .. }
            | Error::Timeout { output, .. }
            | Error::MaxBuffer { output, .. }
            | Error::Pipeline { output, .. } => Some(output),
            _ => None,
        }
    }

    /// How the child ended, where it ended and the error knows.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let err = cp::exec("exit 4").await.unwrap_err();
    /// assert_eq!(err.exit_status().and_then(|s| s.code()), Some(4));
    /// # Ok(())
    /// # }
    /// ```
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.output().map(|o| o.status)
    }

    /// Whether this is [`Error::Timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let err = cp::exec("sleep 10").timeout(Duration::from_millis(10)).await.unwrap_err();
    /// assert!(err.is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The command line the error is about, if it is about one.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let err = cp::exec("exit 1").await.unwrap_err();
    /// assert_eq!(err.command().unwrap().to_string(), "exit 1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn command(&self) -> Option<&CommandLine> {
        match self {
            Error::Spawn { command, .. }
            | Error::Exit { command, .. }
            | Error::Timeout { command, .. }
            | Error::MaxBuffer { command, .. }
            | Error::Pipeline { command, .. }
            | Error::StatusLost { command, .. }
            | Error::Io { command, .. } => Some(command).filter(|c| !c.as_str().is_empty()),
            Error::Channel(_) => None,
        }
    }

    pub(crate) fn spawn(
        command: &CommandLine,
        reason: impl Into<String>,
        source: io::Error,
    ) -> Self {
        Error::Spawn {
            command: command.clone(),
            reason: reason.into(),
            source,
        }
    }

    pub(crate) fn io(command: &CommandLine, source: io::Error) -> Self {
        Error::Io {
            command: command.clone(),
            source,
        }
    }
}

impl From<io::Error> for Error {
    /// An [`Error::Io`] with an empty command line.
    fn from(source: io::Error) -> Error {
        Error::Io {
            command: CommandLine::verbatim(""),
            source,
        }
    }
}

struct IoContext<'a>(&'a CommandLine);

impl fmt::Display for IoContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.as_str().is_empty() {
            Ok(())
        } else {
            write!(f, " while running `{}`", self.0)
        }
    }
}

impl From<Error> for io::Error {
    /// Keeps the message and maps the kind: a timeout is
    /// [`io::ErrorKind::TimedOut`], a spawn or i/o failure keeps its OS error
    /// kind, everything else is [`io::ErrorKind::Other`].
    fn from(err: Error) -> io::Error {
        let kind = match &err {
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::Spawn { source, .. } | Error::Io { source, .. } => source.kind(),
            Error::Channel(ChannelError::Closed) => io::ErrorKind::BrokenPipe,
            Error::Channel(ChannelError::Io(e)) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

/// Which output stream of a child, as [`Error::MaxBuffer`] reports it.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// match cp::exec("yes").max_buffer(1024).await {
///     Err(cp::Error::MaxBuffer { stream, .. }) => assert_eq!(stream, cp::Stream::Stdout),
///     other => panic!("unexpected: {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }
}

/// Why the IPC channel failed; carried by [`Error::Channel`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The channel is closed: we disconnected, or the peer closed its end or
    /// exited.
    #[error("the IPC channel is closed")]
    Closed,
    /// The child has no channel: it was not started by
    /// [`fork`](crate::fork), or [`Child::take_channel`](crate::Child::take_channel)
    /// took it.
    #[error("this child has no IPC channel (not started by fork, or the channel was taken)")]
    NoChannel,
    /// A message could not be encoded as JSON.
    #[error("could not encode an IPC message as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// One received line is not JSON, or not of the requested type. Only
    /// that message is lost; the next `recv` returns the next one.
    #[error("could not decode an IPC message ({source}): {excerpt}")]
    Decode {
        /// The start of the offending line, lossily decoded.
        excerpt: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// One received line was longer than the channel's limit; it was
    /// skipped without being buffered whole.
    #[error("an IPC message of more than {limit} bytes was skipped")]
    TooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// fds sent with a message were lost on the way in: more came in one
    /// message than a read takes (64 or more), or our fd table was full,
    /// and the kernel closed the rest (`MSG_CTRUNC`). The messages
    /// themselves are not lost; a `NODE_HANDLE` whose fd is missing is
    /// refused (`NODE_HANDLE_NACK`), so a Node sender sends it again.
    #[error(
        "fds sent with a message were lost (more than one read can take, or our fd table was full)"
    )]
    HandleLost,
    /// The peer refused a handle we sent (`NODE_HANDLE_NACK`: its fd did
    /// not arrive) four times, and the message that went with it was not
    /// delivered. Node warns with `SentHandleNotReceivedWarning`; we return
    /// this from the next `recv` on the channel.
    #[error(
        "the peer refused a handle sent with a message four times; the message was not delivered"
    )]
    HandleRefused,
    /// Messages were dropped unread: a cluster [`Worker`](crate::cluster::Worker)
    /// that falls behind keeps the newest 4,096 messages (and 64 MiB) the
    /// primary sent, and the next `recv` says how many older ones went.
    /// The `recv` after it goes on with the oldest kept.
    #[error("{missed} IPC messages were dropped unread: the receiver fell behind")]
    Lagged {
        /// How many messages were dropped since the last read.
        missed: u64,
    },
    /// `NODE_CHANNEL_FD` or `NODE_CHANNEL_SERIALIZATION_MODE` is unusable.
    #[error("cannot open the IPC channel from the parent: {reason}")]
    Setup {
        /// What is wrong with it.
        reason: String,
    },
    /// Reading from or writing to the channel's socket failed.
    #[error("i/o error on the IPC channel: {0}")]
    Io(#[source] io::Error),
}

/// A command line as shown in messages: the `exec` string as given, or the
/// program and its arguments, quoted where a shell would need it.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let err = cp::exec_file("false", ["a b"]).await.unwrap_err();
/// assert_eq!(err.command().unwrap().to_string(), "false 'a b'");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CommandLine(Arc<str>);

impl CommandLine {
    /// The command line as text.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// let err = child_process::exec_file("false", ["a b"]).run_sync().unwrap_err();
    /// assert_eq!(err.command().unwrap().as_str(), "false 'a b'");
    /// # Ok(())
    /// # }
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A command line given as one string (`exec`).
    ///
    /// Messages must stay readable: a longer line is cut at
    /// [`SHOWN_LINE`] bytes, saying how long it was.
    pub(crate) fn verbatim(line: &str) -> Self {
        if line.len() <= SHOWN_LINE {
            return CommandLine(line.into());
        }
        let mut shown = String::with_capacity(SHOWN_LINE + 32);
        shown.push_str(cut(line, SHOWN_LINE));
        shown.push_str(&format!("… ({} bytes)", line.len()));
        CommandLine(shown.into())
    }

    /// A command line built from a program and its arguments, each quoted
    /// for a POSIX shell when it needs it.
    ///
    /// An argument longer than [`SHOWN_ARG`] bytes shows its start and its
    /// length, and arguments past [`SHOWN_LINE`] bytes of line are counted,
    /// not shown: 40 arguments of 100 KiB make a line of a few hundred
    /// bytes, not 4 MB of error text.
    pub(crate) fn from_argv<'a>(argv: impl IntoIterator<Item = &'a std::ffi::OsStr>) -> Self {
        let mut line = String::new();
        let mut argv = argv.into_iter().enumerate();
        for (i, arg) in argv.by_ref() {
            if line.len() > SHOWN_LINE {
                let more = 1 + argv.count();
                line.push_str(&format!(" … ({more} more arguments)"));
                break;
            }
            if i > 0 {
                line.push(' ');
            }
            let arg = arg.to_string_lossy();
            if arg.len() > SHOWN_ARG {
                push_quoted(&mut line, cut(&arg, SHOWN_ARG / 4));
                line.push_str(&format!("…({} bytes)", arg.len()));
            } else {
                push_quoted(&mut line, &arg);
            }
        }
        CommandLine(line.into())
    }
}

/// How much of a command line messages show.
const SHOWN_LINE: usize = 1024;
/// How long one argument may be before messages shorten it.
const SHOWN_ARG: usize = 256;

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn push_quoted(line: &mut String, arg: &str) {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        line.push_str(arg);
    } else if arg.chars().any(char::is_control) {
        // Bash's $'...' quoting, so a NUL or a newline shows as an escape.
        line.push_str("$'");
        for c in arg.chars() {
            match c {
                '\'' => line.push_str("\\'"),
                '\\' => line.push_str("\\\\"),
                '\n' => line.push_str("\\n"),
                '\t' => line.push_str("\\t"),
                '\r' => line.push_str("\\r"),
                c if c.is_control() => line.push_str(&format!("\\x{:02x}", c as u32)),
                c => line.push(c),
            }
        }
        line.push('\'');
    } else {
        line.push('\'');
        line.push_str(&arg.replace('\'', r"'\''"));
        line.push('\'');
    }
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// How a timeout or a `max_buffer` overflow ended for the child: killed by
/// us, or it exited on its own (after a timeout: it trapped the signal, or
/// left the group; after an overflow: it had exited already, and the bytes
/// came from a process it left behind). `.2` says the signal was sent.
///
/// The status is the truth: a child that left its group and exited on its
/// own, or trapped the signal and exited, is not said to be killed; one
/// that ignored `kill_signal` is said to be killed with `SIGKILL`.
struct KillNote(ExitStatus, Signal, bool);

impl fmt::Display for KillNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        let KillNote(status, sent, surely_sent) = *self;
        match status.signal().and_then(Signal::from_raw) {
            Some(died) if died == sent => write!(f, " and was killed with {sent}"),
            Some(Signal::SIGKILL) => write!(
                f,
                " and was killed with SIGKILL ({sent} did not end it within the grace period)"
            ),
            Some(died) => write!(f, "; {sent} was sent and it died of {died}"),
            None if surely_sent => {
                write!(f, "; {sent} was sent and it exited on its own ({status})")
            }
            None => write!(f, "; it had already exited ({status})"),
        }
    }
}

/// What a failed run wrote, for its error message: the tail of stderr, or
/// of stdout when stderr is empty (merged with `stderr_to_stdout`, or a
/// tool such as a test runner that reports failures on stdout).
struct OutputTail<'a>(&'a Output);

impl fmt::Display for OutputTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Output { stdout, stderr, .. } = self.0;
        if stderr.iter().all(|&b| b == b'\n') && !stdout.is_empty() {
            Tail(stdout, "stdout").fmt(f)
        } else {
            StderrTail(stderr).fmt(f)
        }
    }
}

/// The last lines of a child's stderr, for error messages: at most 20 lines
/// and 4 KiB, introduced by a newline; nothing when stderr is empty.
struct StderrTail<'a>(&'a [u8]);

impl fmt::Display for StderrTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Tail(self.0, "stderr").fmt(f)
    }
}

/// The last lines of a stream, labelled.
struct Tail<'a>(&'a [u8], &'static str);

const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4096;

impl fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stderr = self.0.strip_suffix(b"\n").unwrap_or(self.0);
        if stderr.is_empty() {
            return Ok(());
        }
        let mut start = stderr.len().saturating_sub(TAIL_BYTES);
        if let Some(nth) = stderr
            .iter()
            .rev()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(TAIL_LINES - 1)
        {
            start = start.max(stderr.len() - nth.0);
        }
        let cut = if start > 0 { "...\n" } else { "" };
        write!(
            f,
            "\n{}:\n{cut}{}",
            self.1,
            String::from_utf8_lossy(&stderr[start..])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn output(stderr: &[u8]) -> Box<Output> {
        Box::new(Output {
            stderr: stderr.to_vec(),
            ..*ended(2 << 8)
        })
    }

    /// An empty output with this raw wait status.
    fn ended(raw: i32) -> Box<Output> {
        Box::new(Output {
            status: ExitStatus::from_raw(raw),
            stdout: vec![],
            stderr: vec![],
        })
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }

    #[test]
    fn exit_message_names_command_status_and_stderr_tail() {
        let err = Error::Exit {
            command: CommandLine::verbatim("make all"),
            output: output(b"boom\n"),
        };
        assert_eq!(
            err.to_string(),
            "`make all` failed: exit status: 2\nstderr:\nboom"
        );
    }

    #[test]
    fn max_buffer_message_says_whether_the_child_was_killed() {
        let err = |raw| Error::MaxBuffer {
            command: CommandLine::verbatim("yes"),
            stream: Stream::Stdout,
            limit: 10,
            signal: Signal::SIGTERM,
            output: ended(raw),
        };
        assert_eq!(
            err(libc::SIGTERM).to_string(),
            "`yes` wrote more than 10 bytes to stdout (max_buffer) and was killed with SIGTERM"
        );
        assert_eq!(
            err(0).to_string(),
            "`yes` wrote more than 10 bytes to stdout (max_buffer); it had already exited (exit status: 0)"
        );
    }

    #[test]
    fn timeout_message_says_how_the_child_really_ended() {
        let err = |raw| Error::Timeout {
            command: CommandLine::verbatim("x"),
            timeout: Duration::from_millis(300),
            signal: Signal::SIGTERM,
            output: ended(raw),
        };
        assert_eq!(
            err(libc::SIGTERM).to_string(),
            "`x` timed out after 300ms and was killed with SIGTERM"
        );
        assert_eq!(
            err(libc::SIGKILL).to_string(),
            "`x` timed out after 300ms and was killed with SIGKILL (SIGTERM did not end it within the grace period)"
        );
        // Issue 11: a child that exited by itself was not "killed".
        assert_eq!(
            err(0).to_string(),
            "`x` timed out after 300ms; SIGTERM was sent and it exited on its own (exit status: 0)"
        );
    }

    /// Issue 10: `fn main() -> cp::Result<()>` prints `Debug`; it must read
    /// like `Display`, and an i/o error must carry its cause in the text.
    #[test]
    fn debug_is_display_and_io_errors_name_their_cause() {
        let err = Error::Exit {
            command: CommandLine::verbatim("make all"),
            output: output(b"boom\n"),
        };
        assert_eq!(format!("{err:?}"), err.to_string());
        let err = Error::from(io::Error::from_raw_os_error(libc::EPIPE));
        assert_eq!(err.to_string(), "i/o error: Broken pipe (os error 32)");
        assert!(err.command().is_none(), "no command for a plain io::Error");
        let err = Error::io(
            &CommandLine::verbatim("ls"),
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stdout is not valid UTF-8 (at byte 3)",
            ),
        );
        assert_eq!(
            format!("{err:?}"),
            "i/o error while running `ls`: stdout is not valid UTF-8 (at byte 3)"
        );
        let err = Error::Channel(ChannelError::Io(io::Error::from_raw_os_error(libc::EBADF)));
        assert!(
            err.to_string()
                .ends_with("Bad file descriptor (os error 9)"),
            "{err}"
        );
    }

    #[test]
    fn stderr_tail_keeps_last_twenty_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let err = Error::Exit {
            command: CommandLine::verbatim("x"),
            output: output(text.as_bytes()),
        };
        let msg = err.to_string();
        assert!(msg.contains("...\nline 10\n"), "{msg}");
        assert!(!msg.contains("line 9\n"), "{msg}");
        assert!(msg.ends_with("line 29"), "{msg}");
    }

    /// Issue 11: an error about a huge command line stays readable.
    #[test]
    fn long_command_lines_are_shortened() {
        let big = "x".repeat(100 * 1024);
        let argv: Vec<&std::ffi::OsStr> = std::iter::once("prog")
            .chain(std::iter::repeat_n(big.as_str(), 40))
            .map(std::ffi::OsStr::new)
            .collect();
        let line = CommandLine::from_argv(argv);
        assert!(
            line.as_str().len() < 2 * SHOWN_LINE,
            "{}",
            line.as_str().len()
        );
        assert!(line.as_str().starts_with("prog xxxx"), "{line}");
        assert!(line.as_str().contains("…(102400 bytes)"), "{line}");
        assert!(line.as_str().ends_with("more arguments)"), "{line}");
        let line = CommandLine::verbatim(&"é".repeat(5000));
        assert!(line.as_str().len() < SHOWN_LINE + 32);
        assert!(line.as_str().ends_with("… (10000 bytes)"), "{line}");
    }

    #[test]
    fn argv_is_quoted_for_display() {
        let argv = ["echo", "a b", "it's", "$HOME", "", "a\0b\n"].map(std::ffi::OsStr::new);
        assert_eq!(
            CommandLine::from_argv(argv).as_str(),
            r#"echo 'a b' 'it'\''s' '$HOME' '' $'a\x00b\n'"#
        );
    }
}
