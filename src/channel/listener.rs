//! Channels between processes not related by fork: a Unix socket path
//! that one side listens on and the other connects to.
//!
//! Permission model: the socket file is created with mode 0600 (connecting
//! needs write permission on it), so only its owner and root can connect;
//! and the listener also checks each peer's uid (`SO_PEERCRED`) and drops
//! connections from any other user, root included. The file never exists
//! with a wider mode: it is bound inside a fresh 0700 directory, narrowed,
//! then linked into place.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Channel;
use crate::error::{ChannelError, Result};

/// A Unix socket path that accepts channels, from
/// [`ChannelListener::bind`]; the other side calls [`Channel::connect`].
/// The socket file is removed when the listener is dropped.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// # let dir = std::env::temp_dir().join(format!("cp-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("worker.sock");
/// let listener = cp::ChannelListener::bind(&path)?;
/// let client = cp::Channel::connect(&path).await?;
/// let mut server = listener.accept().await?;
/// client.send(&"hello").await?;
/// assert_eq!(server.recv::<String>().await?.as_deref(), Some("hello"));
/// # drop(listener);
/// # std::fs::remove_dir(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ChannelListener {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    uid: u32,
    /// The socket file's device and inode: the drop removes the path only
    /// while it is still ours.
    file: (u64, u64),
}

impl ChannelListener {
    /// Create the socket file at `path` (mode 0600) and listen on it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run() -> child_process::Result<()> {
    /// let listener = child_process::ChannelListener::bind("/run/user/1000/app.sock")?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Io`] when `path` exists (`AlreadyExists`, whatever
    /// is there, a dangling symlink too: remove a stale socket first), its
    /// directory is not writable, or there is no tokio runtime.
    pub fn bind(path: impl AsRef<Path>) -> Result<ChannelListener> {
        let path = path.as_ref();
        tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("ChannelListener::bind needs a tokio runtime"))
            .map_err(ChannelError::Io)?;
        let listener = bind_private(path).map_err(ChannelError::Io)?;
        let meta = std::fs::symlink_metadata(path).map_err(ChannelError::Io)?;
        Ok(ChannelListener {
            listener,
            path: path.to_owned(),
            uid: meta.uid(),
            file: (meta.dev(), meta.ino()),
        })
    }

    /// The next channel from a process of the same user. Connections from
    /// other users (possible only for root, given the file's mode) are
    /// closed and skipped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let listener = child_process::ChannelListener::bind("/tmp/app.sock")?;
    /// loop {
    ///     let mut channel = listener.accept().await?;
    ///     tokio::spawn(async move {
    ///         while let Ok(Some(msg)) = channel.recv::<serde_json::Value>().await {
    ///             let _ = channel.send(&msg).await;
    ///         }
    ///     });
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Io`] when `accept(2)` fails (out of fds).
    ///
    /// # Cancellation
    ///
    /// Cancel-safe.
    pub async fn accept(&self) -> Result<Channel> {
        loop {
            let (stream, _) = self.listener.accept().await.map_err(ChannelError::Io)?;
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == self.uid => {
                    let std = stream.into_std().map_err(ChannelError::Io)?;
                    return Channel::from_fd(std.into());
                }
                _ => continue,
            }
        }
    }

    /// The socket's path.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run() -> child_process::Result<()> {
    /// let listener = child_process::ChannelListener::bind("/tmp/app.sock")?;
    /// assert_eq!(listener.path(), std::path::Path::new("/tmp/app.sock"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ChannelListener {
    fn drop(&mut self) {
        // Someone may have removed our socket and put a file of theirs
        // there: leave that alone.
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Bind `path` so that it never exists with a mode wider than 0600: bind
/// in a new 0700 directory beside it, narrow the file, then hard-link it
/// into place (which fails if `path` exists, unlike a rename).
fn bind_private(path: &Path) -> io::Result<tokio::net::UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    // A name nobody can guess, so nobody can take it first.
    let nonce = {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let mut private = parent.to_owned();
    private.push(format!(
        ".{}.{}.{nonce:x}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let result = (|| {
        let listener = tokio::net::UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result
}

impl Channel {
    /// Connect to a [`ChannelListener`] at `path`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let channel = child_process::Channel::connect("/tmp/app.sock").await?;
    /// channel.send(&"hello").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Io`] when nothing listens there or this user may not
    /// connect (`PermissionDenied`).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Channel> {
        let stream = tokio::net::UnixStream::connect(path.as_ref())
            .await
            .map_err(ChannelError::Io)?;
        let std = stream.into_std().map_err(ChannelError::Io)?;
        Channel::from_fd(std.into())
    }
}
