//! Handles (fds) sent with messages, as Node's `subprocess.send(msg,
//! handle)` sends them: a `NODE_HANDLE` envelope whose last byte carries
//! the fd (`SCM_RIGHTS`), answered with `NODE_HANDLE_ACK`
//! (`lib/internal/child_process.js setupChannel`, `handleConversion`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use serde::Serialize;

use crate::error::ChannelError;
use crate::sys::ipc::{self, SocketKind};

/// A socket (or any fd) that came with a message, Node's `handle` of
/// `process.on('message', (msg, handle) => ...)`, from
/// [`Channel::recv_with_handle`](crate::Channel::recv_with_handle).
///
/// Sockets come as tokio types, registered with the current runtime; the
/// kind is read from the socket itself, not trusted from the sender.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let (a, b) = std::os::unix::net::UnixStream::pair()?;
/// let (a, mut b) = (cp::Channel::from_fd(a.into())?, cp::Channel::from_fd(b.into())?);
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// a.send_with_handle(&"take this", &listener).await?;
/// let (msg, handle) = b.recv_with_handle::<String>().await?.unwrap();
/// assert_eq!(msg, "take this");
/// assert!(matches!(handle, Some(cp::Handle::TcpListener(_))));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Handle {
    /// A listening TCP socket (Node's `net.Server`).
    TcpListener(tokio::net::TcpListener),
    /// A connected TCP socket (Node's `net.Socket`).
    TcpStream(tokio::net::TcpStream),
    /// A listening Unix socket (a `net.Server` on a path).
    UnixListener(tokio::net::UnixListener),
    /// A connected Unix stream socket.
    UnixStream(tokio::net::UnixStream),
    /// A UDP socket (Node's `dgram.Socket`).
    UdpSocket(tokio::net::UdpSocket),
    /// Any other fd: a socket of another kind, a pipe, a file.
    Fd(OwnedFd),
}

impl Handle {
    /// Types what arrived by looking at the socket (its type, whether it
    /// listens, its family), and registers it with the runtime.
    pub(crate) fn from_received(fd: OwnedFd) -> io::Result<Handle> {
        let kind = ipc::socket_kind(fd.as_fd());
        if kind == SocketKind::Other {
            return Ok(Handle::Fd(fd));
        }
        crate::sys::set_nonblocking(fd.as_fd())?;
        Ok(match kind {
            SocketKind::TcpListener => {
                Handle::TcpListener(tokio::net::TcpListener::from_std(fd.into())?)
            }
            SocketKind::TcpStream => Handle::TcpStream(tokio::net::TcpStream::from_std(fd.into())?),
            SocketKind::UnixListener => {
                Handle::UnixListener(tokio::net::UnixListener::from_std(fd.into())?)
            }
            SocketKind::UnixStream => {
                Handle::UnixStream(tokio::net::UnixStream::from_std(fd.into())?)
            }
            SocketKind::Udp4 | SocketKind::Udp6 => {
                Handle::UdpSocket(tokio::net::UdpSocket::from_std(fd.into())?)
            }
            SocketKind::Other => Handle::Fd(fd),
        })
    }

    /// The fd, whatever the kind.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn f(handle: child_process::Handle) -> std::os::fd::OwnedFd {
    /// handle.into_owned_fd()
    /// # }
    /// ```
    pub fn into_owned_fd(self) -> OwnedFd {
        match self {
            Handle::TcpListener(s) => s.into_std().expect("registered socket").into(),
            Handle::TcpStream(s) => s.into_std().expect("registered socket").into(),
            Handle::UnixListener(s) => s.into_std().expect("registered socket").into(),
            Handle::UnixStream(s) => s.into_std().expect("registered socket").into(),
            Handle::UdpSocket(s) => s.into_std().expect("registered socket").into(),
            Handle::Fd(fd) => fd,
        }
    }
}

/// The `type` Node's receiver converts a handle with (`handleConversion`),
/// and the `dgramType` it needs for UDP.
pub(crate) fn node_type(fd: impl AsFd) -> (&'static str, Option<&'static str>) {
    match ipc::socket_kind(fd.as_fd()) {
        SocketKind::TcpListener | SocketKind::UnixListener => ("net.Server", None),
        SocketKind::TcpStream | SocketKind::UnixStream => ("net.Socket", None),
        SocketKind::Udp4 => ("dgram.Socket", Some("udp4")),
        SocketKind::Udp6 => ("dgram.Socket", Some("udp6")),
        SocketKind::Other => ("net.Native", None),
    }
}

/// The `NODE_HANDLE` envelope of `msg`, as a wire line:
/// `{"cmd":"NODE_HANDLE","type":T,"msg":MSG[,"dgramType":D]}` and `\n`.
pub(crate) fn envelope<T: Serialize + ?Sized>(
    msg: &T,
    kind: &str,
    dgram: Option<&str>,
) -> Result<Vec<u8>, ChannelError> {
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"msg\":");
    line.extend_from_slice(&super::wire::encode_line(msg)?);
    line.pop(); // the inner `\n`
    if let Some(dgram) = dgram {
        line.extend_from_slice(b",\"dgramType\":\"");
        line.extend_from_slice(dgram.as_bytes());
        line.push(b'"');
    }
    line.extend_from_slice(b"}\n");
    Ok(line)
}

/// A handle we sent that the peer has not acknowledged yet: sent again on
/// `NODE_HANDLE_NACK` (Node does so up to three times).
pub(crate) struct Unacked {
    pub line: Vec<u8>,
    pub fd: std::sync::Arc<OwnedFd>,
    pub tries: u8,
}

impl std::fmt::Debug for Unacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Unacked(fd {}, tries {})",
            self.fd.as_raw_fd(),
            self.tries
        )
    }
}
