//! `exec_file`: a program with literal arguments, no shell, the same knobs
//! as `exec`.

use std::ffi::OsStr;
use std::future::IntoFuture;
use std::path::Path;
use std::time::Duration;

use crate::exec::{exec_knobs, ExecFuture, Job, TextFuture};
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
/// ```no_run
/// use child_process as cp;
///
/// # async fn run() -> cp::Result<()> {
/// let out = cp::exec_file("git", ["status", "--short"]).cwd("repo").await?;
/// let name = cp::exec_file("printf", ["%s", "it's $HOME *"]).text().await?;
/// assert_eq!(name, "it's $HOME *");
/// # let _ = out;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// See [`ExecFuture`].
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
/// ```no_run
/// use child_process as cp;
/// use std::time::Duration;
///
/// # async fn run() -> cp::Result<()> {
/// let out = cp::exec_file("cargo", ["build", "--release"]).timeout(Duration::from_secs(600)).await?;
/// # let _ = out;
/// # Ok(())
/// # }
/// ```
#[must_use = "`ExecFile` does nothing until you `.await` it"]
#[derive(Debug, Clone)]
pub struct ExecFile {
    pub(crate) job: Job,
}

exec_knobs!(ExecFile, "exec_file(\"sleep\", [\"10\"])");
