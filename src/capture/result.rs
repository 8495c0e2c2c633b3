//! What a run left behind, and the result it makes: the output, or the
//! error that says what went wrong. No I/O.

use crate::error::{CommandLine, Error, Output, Result};
use crate::kill::Ended;

use super::rules::{Ending, Limits};

/// What a run left behind: how it ended, and what it wrote.
pub(crate) struct Collected {
    pub status: Ended,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub ending: Ending,
}

impl Collected {
    /// The output, or [`Error::StatusLost`] (with the output) when the exit
    /// status is not known.
    pub(crate) fn into_output(self, command: &CommandLine) -> Result<Output> {
        match self.status {
            Ended::Status(status) => Ok(Output {
                status,
                stdout: self.stdout,
                stderr: self.stderr,
            }),
            Ended::Lost(why) => Err(Error::StatusLost {
                command: command.clone(),
                reason: why.to_string(),
                stdout: self.stdout,
                stderr: self.stderr,
            }),
        }
    }
}

/// Turn how a run ended into the result `exec` promises: the output, or
/// the error that says what went wrong.
pub(crate) fn judge(
    command: &CommandLine,
    limits: &Limits,
    ignore_status: bool,
    collected: Collected,
) -> Result<Output> {
    let ending = collected.ending;
    let output = Box::new(collected.into_output(command)?);
    let command = command.clone();
    match ending {
        Ending::TimedOut => Err(Error::Timeout {
            command,
            timeout: limits.timeout.unwrap_or_default(),
            signal: limits.kill_signal,
            output,
        }),
        Ending::Overflow(stream) => Err(Error::MaxBuffer {
            command,
            stream,
            limit: limits.max_buffer,
            signal: limits.kill_signal,
            output,
        }),
        Ending::Exited if output.status.success() || ignore_status => Ok(*output),
        Ending::Exited => Err(Error::Exit { command, output }),
    }
}

/// stdout as text: one trailing `\n` or `\r\n` removed, UTF-8 or an error.
pub(crate) fn into_text(line: &CommandLine, output: Output) -> Result<String> {
    let mut stdout = output.stdout;
    if stdout.ends_with(b"\n") {
        stdout.pop();
        if stdout.ends_with(b"\r") {
            stdout.pop();
        }
    }
    String::from_utf8(stdout).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let source = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("stdout is not valid UTF-8 (at byte {at})"),
        );
        Error::io(line, source)
    })
}
