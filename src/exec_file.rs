//! `exec_file`: a program with literal arguments, no shell, the same knobs
//! as `exec`.

use std::ffi::OsStr;
use std::path::Path;

use crate::exec::Job;
use crate::knobs::exec_knobs;
use crate::spawn::Spec;
use crate::{Output, Result, Signal};

/// Run `file` with `args` passed literally (no shell: spaces, quotes, `$HOME`
/// and `*` reach the program as they are), buffering stdout and stderr.
///
/// The defaults are those of [`exec`](crate::exec): no timeout, `SIGTERM`
/// then `SIGKILL` after 2 s, `max_buffer` 1 MiB per stream, stdin
/// `/dev/null`, a process group of its own, a non-zero exit an error. The
/// program is looked up in `PATH` unless it contains a `/`.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let out = cp::exec_file("ls", ["-a"]).cwd("/").await?;
/// assert!(out.stdout.starts_with(b".\n"));
/// let name = cp::exec_file("printf", ["%s", "it's $HOME *"]).text().await?;
/// assert_eq!(name, "it's $HOME *");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// See [`ExecFuture`](crate::ExecFuture).
#[doc(alias = "execFile")]
pub fn exec_file<I, S>(file: impl AsRef<OsStr>, args: I) -> ExecFile
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut spec = Spec::new(file.as_ref());
    spec.args = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    spec.process_group = true;
    ExecFile {
        job: Job::new(spec),
    }
}

/// A program with arguments to run without a shell; `.await` it to run it.
///
/// Built by [`exec_file`]; every setter takes and returns `self`.
///
/// # Examples
///
/// ```
/// use child_process as cp;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let version = cp::exec_file("rustc", ["--version"]).timeout(Duration::from_secs(60)).text().await?;
/// assert!(version.starts_with("rustc "));
/// # Ok(())
/// # }
/// ```
#[must_use = "`ExecFile` does nothing until you `.await` it"]
#[derive(Debug, Clone)]
pub struct ExecFile {
    pub(crate) job: Job,
}

exec_knobs!(
    ExecFile,
    "exec_file(\"sleep\", [\"10\"])",
    "exec_file(\"echo\", [\"hi\"])"
);
