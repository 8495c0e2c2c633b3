//! Run child processes the way Node.js's `child_process` does, from Rust.
//!
//! - [`exec`] runs a command line through `/bin/sh -c` and buffers its
//!   output; [`exec_file`] runs a program with literal arguments. Both take a
//!   timeout that kills the whole process tree, a kill signal, a
//!   `max_buffer` limit, and fail with an [`Error`] that says what ran and
//!   why it failed. `run_sync()` runs them without an async runtime.
//! - [`spawn`] and [`Command`] start a process with piped stdio by default;
//!   [`Child`] waits for it, signals it and streams its output.
//! - [`fork`] starts a child with Node's IPC channel; [`Channel`] is the
//!   child's side. A Rust parent can fork a Node script and a Node parent
//!   can fork a Rust program.
//! - Every process is started with `posix_spawn` (never `fork()`), reaped
//!   through a pidfd, and never left as a zombie.
//!
//! ```no_run
//! use child_process as cp;
//! use std::time::Duration;
//! use tokio::io::AsyncWriteExt;
//!
//! # async fn tour() -> cp::Result<()> {
//! // A command line through the shell, with a timeout.
//! let out = cp::exec("ls -la").timeout(Duration::from_secs(5)).await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//!
//! // stdout as a String, trailing newline removed.
//! let head = cp::exec("git rev-parse HEAD").text().await?;
//!
//! // No shell: arguments are passed literally.
//! let out = cp::exec_file("git", ["log", "-1", "--format=%s"]).cwd(".").await?;
//!
//! // The primitive: stdio piped by default.
//! let mut child = cp::spawn("grep", ["-c", "x"])?;
//! let mut stdin = child.stdin.take().unwrap();
//! stdin.write_all(b"x\ny\nx\n").await?;
//! drop(stdin);
//! let out = child.wait_with_output().await?;
//! assert_eq!(out.stdout, b"2\n");
//!
//! // A worker with Node's IPC channel: JSON messages both ways.
//! let mut worker = cp::fork("worker.js").spawn()?;
//! worker.send(&serde_json::json!({ "job": 1 })).await?;
//! let reply: Option<serde_json::Value> = worker.recv().await?;
//! # let _ = (head, reply);
//! # Ok(())
//! # }
//!
//! // In a script, without a runtime:
//! # fn script() -> cp::Result<()> {
//! let version = cp::exec_file("rustc", ["--version"]).text_sync()?;
//! # Ok(())
//! # }
//! ```
//!
//! The traps this crate handles for you (grandchildren holding pipes after a
//! timeout, zombies, `SIGPIPE`, fds leaking into children, messages lost at
//! exit) are listed in `docs/gotchas.md` in the repository, and each Node
//! option's counterpart in `docs/node-compat.md`.
//!
//! # Platform-specific behavior
//!
//! Linux only, with glibc ≥ 2.34 (`posix_spawn_file_actions_addclosefrom_np`).
//! pidfds (Linux ≥ 5.3) are used when the kernel has them; older kernels fall
//! back to `SIGCHLD` and `waitpid(pid)`.

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// In reading order: the primitive, its pipes, what is built on it, errors.
mod spawn;
mod command;
mod child;
mod kill;
mod stdio;
mod capture;
mod reaper;
mod knobs;
mod exec;
mod exec_file;
mod stream;
mod pipeline;
mod blocking;
mod offload;
mod fork;
pub mod cluster;
mod channel;
mod error;
mod signal;
mod trace;
#[allow(unsafe_code)]
mod sys;

// For the fuzz harness in fuzz/ only: cargo-fuzz builds with `--cfg fuzzing`.
#[cfg(fuzzing)]
pub use capture::fuzz_rules;
pub use capture::Line;
#[cfg(fuzzing)]
pub use channel::fuzz_framing;
pub use channel::{worker_args, Channel, ChannelListener, ChannelReceiver, ChannelSender, Handle};
pub use child::Child;
pub use cluster::cluster;
pub use command::{spawn, Command};
pub use error::{ChannelError, CommandLine, Error, ExitStatus, Output, Result, Stream};
pub use exec::{exec, Exec, ExecFuture, TextFuture};
pub use exec_file::{exec_file, ExecFile};
pub use fork::{fork, Fork};
pub use pipeline::Pipeline;
pub use signal::{ParseSignalError, Signal};
pub use stdio::{ChildStderr, ChildStdin, ChildStdout, Input, Stdio};
pub use stream::Lines;
