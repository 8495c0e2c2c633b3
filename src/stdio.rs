//! What a child's stdin, stdout and stderr are connected to, and the async
//! pipe ends the parent keeps.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::capture::Sink;
use crate::sys;

/// Where one of a child's standard streams goes.
///
/// The default for [`spawn`](crate::spawn) and [`Command`](crate::Command) is
/// [`Stdio::piped`] for all three, as in Node.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let path = std::env::temp_dir().join(format!("build-{}.log", std::process::id()));
/// let log = std::fs::File::create(&path)?;
/// let mut child = cp::Command::new("echo")
///     .arg("built")
///     .stdin(cp::Stdio::null())
///     .stdout(log)
///     .stderr(cp::Stdio::inherit())
///     .spawn()?;
/// child.wait().await?;
/// assert_eq!(std::fs::read_to_string(&path)?, "built\n");
/// # std::fs::remove_file(&path)?;
/// # Ok(())
/// # }
/// ```
pub struct Stdio(pub(crate) StdioKind);

pub(crate) enum StdioKind {
    Piped,
    Inherit,
    Null,
    Fd(OwnedFd),
    /// This process's own stream, and captured (see [`Stdio::tee`]).
    Tee,
}

impl Stdio {
    /// A new pipe between parent and child; the parent's end appears in
    /// [`Child::stdin`](crate::Child::stdin) and friends.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let child = cp::Command::new("echo").arg("hi").stdout(cp::Stdio::piped()).spawn()?;
    /// assert!(child.stdout.is_some());
    /// assert_eq!(child.wait_with_output().await?.stdout, b"hi\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn piped() -> Stdio {
        Stdio(StdioKind::Piped)
    }

    /// The child uses the parent's own stream.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// cp::Command::new("ls").stdout(cp::Stdio::inherit()).spawn()?.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn inherit() -> Stdio {
        Stdio(StdioKind::Inherit)
    }

    /// `/dev/null`: reads see end of file, writes are discarded (Node's
    /// `'ignore'`).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// cp::Command::new("ls").stdout(cp::Stdio::null()).spawn()?.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[doc(alias = "ignore")]
    pub fn null() -> Stdio {
        Stdio(StdioKind::Null)
    }

    /// Show the stream live *and* keep it: the child's output goes to this
    /// process's own stdout or stderr as it arrives, and the last 64 KiB of
    /// it are kept in the result (so an `exec` that fails carries the tail
    /// of its stderr in the error). `max_buffer` does not apply: nothing
    /// piles up in memory. execa's `stdout: ['pipe', 'inherit']`.
    ///
    /// For [`exec`](crate::exec), [`exec_file`](crate::exec_file) and
    /// pipelines. A [`Command`](crate::Command) or [`fork`](crate::fork)
    /// child hands its pipes to you, so there it means `inherit`.
    ///
    /// What to use in a build script: `.stderr(Stdio::tee())` (and
    /// `.stdout(Stdio::inherit())`), so `cargo build` prints as it goes and
    /// a failure still says why.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # fn main() -> cp::Result<()> {
    /// let err = cp::exec("echo compiling; echo 'error: oops' >&2; exit 101")
    ///     .stdout(cp::Stdio::inherit())
    ///     .stderr(cp::Stdio::tee())
    ///     .run_sync()
    ///     .unwrap_err();
    /// assert!(err.to_string().ends_with("stderr:\nerror: oops"), "{err}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn tee() -> Stdio {
        Stdio(StdioKind::Tee)
    }

    pub(crate) fn kind(&self) -> &StdioKind {
        &self.0
    }
}

/// What a child of [`exec`](crate::exec) or [`exec_file`](crate::exec_file)
/// reads as its stdin: bytes the crate writes (then end of file), or a
/// [`Stdio`] (a file, `inherit`, `null`).
///
/// It comes from what `stdin(..)` is given: `&str`, `String`, `Vec<u8>`,
/// `&[u8]`, a byte string literal, a [`Stdio`], a [`File`] or an [`OwnedFd`].
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # fn main() -> cp::Result<()> {
/// assert_eq!(cp::exec("tr a-z A-Z").stdin("bytes").text_sync()?, "BYTES");
/// let file = std::fs::File::open("/etc/hostname")?;
/// let out = cp::exec("wc -c").stdin(file).text_sync()?;
/// # let _ = out;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Input(pub(crate) InputKind);

#[derive(Debug)]
pub(crate) enum InputKind {
    Bytes(Vec<u8>),
    Stdio(Stdio),
}

impl From<Vec<u8>> for Input {
    fn from(bytes: Vec<u8>) -> Input {
        Input(InputKind::Bytes(bytes))
    }
}

impl From<&[u8]> for Input {
    fn from(bytes: &[u8]) -> Input {
        Input(InputKind::Bytes(bytes.to_vec()))
    }
}

impl<const N: usize> From<&[u8; N]> for Input {
    fn from(bytes: &[u8; N]) -> Input {
        Input(InputKind::Bytes(bytes.to_vec()))
    }
}

impl From<String> for Input {
    fn from(text: String) -> Input {
        Input(InputKind::Bytes(text.into_bytes()))
    }
}

impl From<&String> for Input {
    fn from(text: &String) -> Input {
        Input(InputKind::Bytes(text.as_bytes().to_vec()))
    }
}

impl From<&str> for Input {
    fn from(text: &str) -> Input {
        Input(InputKind::Bytes(text.as_bytes().to_vec()))
    }
}

impl From<Stdio> for Input {
    fn from(stdio: Stdio) -> Input {
        Input(InputKind::Stdio(stdio))
    }
}

impl From<File> for Input {
    fn from(file: File) -> Input {
        Input(InputKind::Stdio(file.into()))
    }
}

impl From<OwnedFd> for Input {
    fn from(fd: OwnedFd) -> Input {
        Input(InputKind::Stdio(fd.into()))
    }
}

impl From<File> for Stdio {
    /// The child reads from or writes to this file.
    fn from(file: File) -> Stdio {
        Stdio(StdioKind::Fd(file.into()))
    }
}

impl From<OwnedFd> for Stdio {
    /// The child gets this fd (a duplicate of it, at 0, 1 or 2).
    fn from(fd: OwnedFd) -> Stdio {
        Stdio(StdioKind::Fd(fd))
    }
}

impl fmt::Debug for Stdio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            StdioKind::Piped => f.write_str("Stdio::piped()"),
            StdioKind::Inherit => f.write_str("Stdio::inherit()"),
            StdioKind::Null => f.write_str("Stdio::null()"),
            StdioKind::Fd(fd) => write!(f, "Stdio::from(fd {})", fd.as_raw_fd()),
            StdioKind::Tee => f.write_str("Stdio::tee()"),
        }
    }
}

/// The parent's end of a pipe, non-blocking, registered with tokio.
struct Pipe(AsyncFd<OwnedFd>);

impl Pipe {
    fn new(fd: OwnedFd) -> io::Result<Pipe> {
        sys::tokio_fd::register(fd, Interest::READABLE | Interest::WRITABLE)
            .map(Pipe)
            .map_err(|(_, e)| e)
    }

    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let wanted = buf.remaining();
            let before = buf.filled().len();
            match guard.try_io(|fd| sys::tokio_fd::read_into(fd.as_fd(), buf)) {
                Ok(result) => {
                    // A short read emptied the pipe (see `read_capture`).
                    let got = buf.filled().len() - before;
                    if result.is_ok() && got > 0 && got < wanted {
                        guard.clear_ready();
                    }
                    return Poll::Ready(result);
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| sys::write(fd.as_fd(), buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    /// Read once into `capture` when the pipe is readable.
    fn poll_read_capture(
        &self,
        cx: &mut Context<'_>,
        capture: &mut Sink,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            match guard.try_io(|fd| capture.read_from(fd.as_fd())) {
                Ok(Ok(n)) => {
                    // A short read emptied the pipe: wait for the next edge
                    // instead of a read that would only say EAGAIN (tokio's
                    // own PollEvented::poll_read does the same).
                    if n > 0 && capture.last_read_was_short() {
                        guard.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Write once from `buf` when the pipe is writable.
    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| sys::write(fd.as_fd(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    fn into_blocking_fd(self) -> io::Result<OwnedFd> {
        let fd = self.0.into_inner();
        sys::set_blocking(fd.as_fd())?;
        Ok(fd)
    }
}

macro_rules! pipe_end {
    ($(#[$doc:meta])* $name:ident, $(#[$fd_example:meta])*) => {
        $(#[$doc])*
        pub struct $name(Pipe);

        impl $name {
            pub(crate) fn new(fd: OwnedFd) -> io::Result<$name> {
                Pipe::new(fd).map($name)
            }

            /// The pipe end as a blocking [`OwnedFd`], for handing to another
            /// process (tokio de-registers it first).
            ///
            /// # Examples
            ///
            $(#[$fd_example])*
            ///
            /// # Errors
            ///
            /// Fails if the fd cannot be made blocking again.
            pub fn into_owned_fd(self) -> io::Result<OwnedFd> {
                self.0.into_blocking_fd()
            }
        }

        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0 .0.get_ref().as_fd()
            }
        }

        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.0 .0.as_raw_fd()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.as_raw_fd()).finish()
            }
        }
    };
}

pipe_end!(
    /// The parent's end of a child's stdin pipe: a tokio [`AsyncWrite`].
    ///
    /// Drop it to close the child's stdin. Writing after the child has exited
    /// fails with [`io::ErrorKind::BrokenPipe`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut child = child_process::spawn("wc", ["-l"])?;
    /// let mut stdin = child.stdin.take().unwrap();
    /// stdin.write_all(b"one\ntwo\n").await?;
    /// drop(stdin); // end of input
    /// assert_eq!(child.wait_with_output().await?.stdout, b"2\n");
    /// # Ok(())
    /// # }
    /// ```
    ChildStdin,
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut cat = cp::spawn("cat", [""; 0])?;
    /// let fd = cat.stdin.take().unwrap().into_owned_fd()?;
    /// cp::Command::new("echo").arg("hi").stdout(fd).spawn()?.wait().await?;
    /// assert_eq!(cat.wait_with_output().await?.stdout, b"hi\n");
    /// # Ok(())
    /// # }
    /// ```
);
pipe_end!(
    /// The parent's end of a child's stdout pipe: a tokio [`AsyncRead`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio::io::AsyncReadExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut child = child_process::spawn("echo", ["hello"])?;
    /// let mut text = String::new();
    /// child.stdout.take().unwrap().read_to_string(&mut text).await?;
    /// assert_eq!(text, "hello\n");
    /// child.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    ChildStdout,
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut echo = cp::spawn("echo", ["hi"])?;
    /// let fd = echo.stdout.take().unwrap().into_owned_fd()?;
    /// let out = cp::Command::new("tr").args(["a-z", "A-Z"]).stdin(fd).spawn()?.wait_with_output().await?;
    /// assert_eq!(out.stdout, b"HI\n");
    /// echo.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
);
pipe_end!(
    /// The parent's end of a child's stderr pipe: a tokio [`AsyncRead`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio::io::{AsyncBufReadExt, BufReader};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut child = child_process::spawn("sh", ["-c", "echo one >&2; echo two >&2"])?;
    /// let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    /// while let Some(line) = lines.next_line().await? {
    ///     eprintln!("sh: {line}");
    /// }
    /// child.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    ChildStderr,
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut sh = cp::spawn("sh", ["-c", "echo oops >&2"])?;
    /// let fd = sh.stderr.take().unwrap().into_owned_fd()?;
    /// let out = cp::Command::new("tr").args(["a-z", "A-Z"]).stdin(fd).spawn()?.wait_with_output().await?;
    /// assert_eq!(out.stdout, b"OOPS\n");
    /// sh.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
);

impl ChildStdin {
    pub(crate) async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_some(buf).await
    }
}

impl AsyncWrite for ChildStdin {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Pipes have no user-space buffer to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The fd is closed when the ChildStdin is dropped, as in tokio.
        Poll::Ready(Ok(()))
    }
}

macro_rules! async_read {
    ($name:ident) => {
        impl $name {
            pub(crate) fn poll_read_capture(
                &self,
                cx: &mut Context<'_>,
                capture: &mut Sink,
            ) -> Poll<io::Result<usize>> {
                self.0.poll_read_capture(cx, capture)
            }
        }

        impl AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                self.0.poll_read(cx, buf)
            }
        }
    };
}

async_read!(ChildStdout);
async_read!(ChildStderr);
