//! Worker output as log lines: prefixed with the time and the worker,
//! to the primary's own stdout/stderr or to files rotated by size.
//!
//! Rotation renames (`out.log` → `out.log.1` → ... up to `keep`) and opens
//! a new file, as logrotate's default `create` mode does; it never copies
//! and truncates, which loses the lines written in between. Each line is
//! one `write(2)` on an `O_APPEND` file under a lock, so lines of several
//! workers never interleave.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::WorkerId;

/// Where [`Setup::logs`](super::Setup::logs) sends the workers' stdout and
/// stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Logs {
    /// To the primary's own stdout and stderr, each line prefixed with
    /// the time and the worker: `2026-12-02T10:00:00.123Z [worker 3] ...`.
    Prefixed,
    /// To `out.log` and `err.log` in a directory (created if missing),
    /// prefixed the same way (a file moved or removed behind the primary's
    /// back, its directory too, is noticed within a second and made
    /// again), rotated when a file passes `max_size`
    /// bytes, keeping `keep` old files (`out.log.1` is the newest).
    /// [`Primary::reopen_logs`](super::Primary::reopen_logs), or `SIGUSR1`
    /// to the primary, reopens them after an outside tool moved them.
    Files {
        /// The directory.
        dir: PathBuf,
        /// Rotate past this many bytes (`u64::MAX`: never).
        max_size: u64,
        /// Old files kept.
        keep: usize,
    },
}

impl Logs {
    /// [`Logs::Files`] in `dir`, rotated at 10 MiB, keeping 5.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Logs;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").logs(Logs::files("/var/log/app")).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn files(dir: impl AsRef<Path>) -> Logs {
        Logs::Files {
            dir: dir.as_ref().to_owned(),
            max_size: 10 << 20,
            keep: 5,
        }
    }
}

/// The log writer of a cluster: one thread that owns the files (or the
/// primary's stdout and stderr), fed by every worker's reader task
/// through a bounded queue. A stuck stdout or a slow disk then holds up
/// the workers' pipes (they block on write, as under a terminal), never
/// the primary's tasks.
#[derive(Debug, Clone)]
pub(crate) struct LogWriter {
    tx: tokio::sync::mpsc::Sender<Msg>,
}

#[derive(Debug)]
enum Msg {
    Line(crate::Stream, WorkerId, Vec<u8>),
    Reopen,
    /// Answered once every line queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Debug)]
enum Target {
    Stdout,
    Stderr,
    File {
        path: PathBuf,
        file: Option<File>,
        size: u64,
        max_size: u64,
        keep: usize,
        /// When the path was last checked to still name our file.
        checked: std::time::Instant,
    },
}

/// Lines queued for the writer thread before reader tasks wait.
const QUEUE: usize = 4096;

pub(crate) fn start(logs: &Logs) -> io::Result<LogWriter> {
    let targets = match logs {
        Logs::Prefixed => [Target::Stdout, Target::Stderr],
        Logs::Files {
            dir,
            max_size,
            keep,
        } => {
            std::fs::create_dir_all(dir)?;
            let file = |name: &str| -> io::Result<Target> {
                let path = dir.join(name);
                let file = append(&path)?;
                let size = file.metadata()?.len();
                Ok(Target::File {
                    path,
                    file: Some(file),
                    size,
                    max_size: *max_size,
                    keep: *keep,
                    checked: std::time::Instant::now(),
                })
            };
            [file("out.log")?, file("err.log")?]
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("cluster-logs".into())
        .spawn(move || {
            let mut targets = targets;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Line(stream, worker, line) => {
                        let i = usize::from(stream == crate::Stream::Stderr);
                        targets[i].line(worker, &line);
                    }
                    Msg::Reopen => targets.iter_mut().for_each(Target::reopen),
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
    Ok(LogWriter { tx })
}

impl LogWriter {
    /// Queue one line; waits while the writer is behind. `false` once
    /// the writer is gone.
    pub(crate) async fn line(&self, stream: crate::Stream, worker: WorkerId, line: &[u8]) -> bool {
        self.tx
            .send(Msg::Line(stream, worker, line.to_vec()))
            .await
            .is_ok()
    }

    /// Reopen the files by name (an outside tool moved them), after the
    /// lines queued so far.
    pub(crate) async fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen).await;
    }

    /// Wait until every line queued so far is written.
    pub(crate) async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Whether `path` still names the open `file`.
fn names(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// `append`, making the directory again if someone removed it.
fn append_creating(path: &Path) -> io::Result<File> {
    match append(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            append(path)
        }
        other => other,
    }
}

impl Target {
    /// Write one line for `worker`, rotating first if it would pass the
    /// size limit. A failed write is reported to the primary's stderr and
    /// the line goes there instead: never lost silently.
    fn line(&mut self, worker: WorkerId, line: &[u8]) {
        let mut text = Vec::with_capacity(line.len() + 48);
        text.extend_from_slice(timestamp(SystemTime::now()).as_bytes());
        text.extend_from_slice(format!(" [worker {worker}] ").as_bytes());
        text.extend_from_slice(line);
        text.push(b'\n');
        let result = match self {
            Target::Stdout => io::stdout().lock().write_all(&text),
            Target::Stderr => io::stderr().lock().write_all(&text),
            Target::File {
                path,
                file,
                size,
                max_size,
                keep,
                checked,
            } => (|| {
                // Once a second: is the path still our file? Someone may
                // have moved it (logrotate without a signal) or removed
                // its directory; lines would go to a file nobody sees.
                if checked.elapsed() >= std::time::Duration::from_secs(1) {
                    *checked = std::time::Instant::now();
                    if file.as_ref().is_some_and(|f| !names(path, f)) {
                        *file = None;
                        *size = 0;
                    }
                }
                if *size > 0 && size.saturating_add(text.len() as u64) > *max_size {
                    match rotate(path, *keep) {
                        // Someone moved or removed the file: start anew.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        other => other?,
                    }
                    *file = None;
                    *size = 0;
                }
                if file.is_none() {
                    *file = Some(append_creating(path)?);
                }
                file.as_mut().expect("opened").write_all(&text)?;
                *size += text.len() as u64;
                Ok(())
            })(),
        };
        if let Err(e) = result {
            let _ = writeln!(
                io::stderr(),
                "child_process: cannot write a worker's log: {e}"
            );
            let _ = io::stderr().write_all(&text);
        }
    }

    fn reopen(&mut self) {
        if let Target::File {
            path, file, size, ..
        } = self
        {
            *file = append_creating(path).ok();
            *size = file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
        }
    }
}

/// `x.log.{keep-1}` → `x.log.{keep}`, ..., `x.log` → `x.log.1`; the oldest
/// falls off.
fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    let numbered = |n: usize| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        return std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(numbered(keep));
    for n in (1..keep).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    std::fs::rename(path, numbered(1))
}

/// `2026-12-02T10:00:00.123Z` (UTC; days to a civil date by Howard
/// Hinnant's `civil_from_days`).
fn timestamp(now: SystemTime) -> String {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_213_210_123);
        assert_eq!(timestamp(t), "2026-12-02T12:06:50.123Z");
        assert_eq!(
            timestamp(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
