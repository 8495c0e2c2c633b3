//! Channels over byte streams that are not one Unix socket: a child's
//! stdout and stdin, a TCP or TLS stream, this process's own stdio
//! through ssh. The stream is joined to one end of a socketpair by two
//! copy loops, and the channel runs on the other end with its usual code
//! (framing, bounded writer, errors), so there is one channel
//! implementation, not two. The cost is one more copy per byte, measured
//! in the benchmark's stdio row.
//!
//! How a lost peer shows: the stream's end of file (or a read error)
//! shuts the socketpair for writing, so `recv` returns `None` after what
//! arrived; a failed write to the stream closes the socketpair end
//! entirely, so `send` fails with `ChannelError::Closed` instead of
//! filling a buffer nobody drains.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::sys;

/// Copy buffer size: large enough that a burst of small messages moves in
/// few system calls.
const BUF: usize = 64 * 1024;

/// Join `reader` and `writer` to a socketpair with two tasks on the
/// current runtime; the caller's end is returned.
pub(super) fn with_tasks<R, W>(reader: R, mut writer: W) -> io::Result<OwnedFd>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let (ours, theirs) = sys::socketpair()?;
    let theirs = std::os::unix::net::UnixStream::from(theirs);
    theirs.set_nonblocking(true)?;
    let theirs = tokio::net::UnixStream::from_std(theirs)?;
    let (mut from_channel, mut to_channel) = theirs.into_split();
    // The stream to the channel: at the stream's end, the channel's
    // `recv` returns `None` after what came.
    let inbound = tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(BUF, reader);
        let _ = tokio::io::copy_buf(&mut reader, &mut to_channel).await;
        let _ = to_channel.shutdown().await;
    });
    let abort = inbound.abort_handle();
    tokio::spawn(async move {
        let mut from_channel_buf = BufReader::with_capacity(BUF, &mut from_channel);
        let copied = tokio::io::copy_buf(&mut from_channel_buf, &mut writer).await;
        if copied.is_ok() {
            // The channel was closed: close the stream for writing too.
            let _ = writer.shutdown().await;
        }
        // Either way the channel side is over (closed, or the stream
        // failed): stop reading for it, which closes the socketpair end
        // and fails the channel's next `send`.
        abort.abort();
    });
    Ok(ours)
}

/// Join two blocking fds (this process's stdin and stdout, as they came)
/// to a socketpair with two threads. Threads, not runtime tasks: a read of
/// stdin may block forever, and a blocking task would keep the runtime
/// from shutting down.
pub(super) fn with_threads(input: OwnedFd, output: OwnedFd) -> io::Result<OwnedFd> {
    let (ours, theirs) = sys::socketpair()?;
    let to_channel = std::os::unix::net::UnixStream::from(theirs);
    let from_channel = to_channel.try_clone()?;
    std::thread::Builder::new()
        .name("channel-stdin".into())
        .spawn(move || {
            let mut input = std::fs::File::from(input);
            let mut to_channel = to_channel;
            let _ = copy(&mut input, &mut to_channel);
            let _ = to_channel.shutdown(std::net::Shutdown::Write);
        })?;
    std::thread::Builder::new()
        .name("channel-stdout".into())
        .spawn(move || {
            let mut output = std::fs::File::from(output);
            let mut from_channel = from_channel;
            if copy(&mut from_channel, &mut output).is_err() {
                // Nobody reads our stdout any more: fail the channel's
                // sends (the stdin thread may sit in a read forever).
                let _ = from_channel.shutdown(std::net::Shutdown::Both);
            }
        })?;
    Ok(ours)
}

/// `io::copy` with a larger buffer, flushing nothing (fds are unbuffered).
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}
