//! `Signal`: a Unix signal by name, without exposing `nix` or `libc`.

use std::fmt;
use std::str::FromStr;

/// A Unix signal, such as [`Signal::SIGTERM`].
///
/// `Display` prints the name (`SIGTERM`); `FromStr` takes the name with or
/// without the `SIG` prefix (`"SIGTERM"`, `"TERM"`), in any case, or the
/// number (`"15"`), as Node's `killSignal` does. Every name in Node's
/// `os.constants.signals` parses, the Linux aliases too (`SIGIOT` is
/// `SIGABRT`, `SIGPOLL` is `SIGIO`, `SIGCLD` is `SIGCHLD`, `SIGUNUSED` is
/// `SIGSYS`); they print under their main name.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # fn main() -> Result<(), cp::ParseSignalError> {
/// let sig: cp::Signal = "TERM".parse()?;
/// assert_eq!(sig, cp::Signal::SIGTERM);
/// assert_eq!(sig.to_string(), "SIGTERM");
/// assert_eq!(sig.as_raw(), 15);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(i32);

macro_rules! signals {
    ($($name:ident),* $(,)?) => {
        impl Signal {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub const $name: Signal = Signal(libc::$name);
            )*
        }

        const TABLE: &[(&str, i32)] = &[$((stringify!($name), libc::$name)),*];
    };
}

signals!(
    SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGKILL, SIGUSR1, SIGSEGV,
    SIGUSR2, SIGPIPE, SIGALRM, SIGTERM, SIGSTKFLT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN,
    SIGTTOU, SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, SIGSYS,
);

impl Signal {
    /// The signal with this number, if the platform has one by that number
    /// (real-time signals included).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// assert_eq!(cp::Signal::from_raw(9), Some(cp::Signal::SIGKILL));
    /// assert_eq!(cp::Signal::from_raw(0), None);
    /// ```
    pub fn from_raw(signo: i32) -> Option<Signal> {
        (1..=libc::SIGRTMAX())
            .contains(&signo)
            .then_some(Signal(signo))
    }

    /// The signal's number.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(child_process::Signal::SIGINT.as_raw(), 2);
    /// ```
    pub fn as_raw(self) -> i32 {
        self.0
    }

    fn name(self) -> Option<&'static str> {
        TABLE
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None if self.0 >= libc::SIGRTMIN() => {
                write!(f, "SIGRTMIN+{}", self.0 - libc::SIGRTMIN())
            }
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// Other names Linux gives the same signals (signal(7)).
const ALIASES: &[(&str, i32)] = &[
    ("SIGIOT", libc::SIGABRT),
    ("SIGPOLL", libc::SIGIO),
    ("SIGCLD", libc::SIGCHLD),
    ("SIGUNUSED", libc::SIGSYS),
];

impl FromStr for Signal {
    type Err = ParseSignalError;

    fn from_str(s: &str) -> Result<Signal, ParseSignalError> {
        let err = || ParseSignalError(s.to_owned());
        if let Ok(n) = s.parse::<i32>() {
            return Signal::from_raw(n).ok_or_else(err);
        }
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        TABLE
            .iter()
            .chain(ALIASES)
            .find(|(name, _)| &name[3..] == bare)
            .map(|&(_, n)| Signal(n))
            .ok_or_else(err)
    }
}

/// The error of parsing a [`Signal`] from a string that names no signal.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// let err = "SIGNOPE".parse::<cp::Signal>().unwrap_err();
/// assert_eq!(err.to_string(), "unknown signal `SIGNOPE`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal `{0}`")]
pub struct ParseSignalError(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_and_without_prefix() {
        assert_eq!("SIGTERM".parse(), Ok(Signal::SIGTERM));
        assert_eq!("TERM".parse(), Ok(Signal::SIGTERM));
        assert_eq!("sigkill".parse(), Ok(Signal::SIGKILL));
        assert_eq!("9".parse(), Ok(Signal::SIGKILL));
        assert!("SIG".parse::<Signal>().is_err());
        // Issue 10: Node's os.constants.signals has the Linux aliases too.
        assert_eq!("SIGIOT".parse(), Ok(Signal::SIGABRT));
        assert_eq!("poll".parse(), Ok(Signal::SIGIO));
        assert_eq!("SIGCLD".parse(), Ok(Signal::SIGCHLD));
        assert_eq!("SIGUNUSED".parse(), Ok(Signal::SIGSYS));
        assert_eq!("SIGIOT".parse::<Signal>().unwrap().to_string(), "SIGABRT");
        assert!("0".parse::<Signal>().is_err());
        assert!("".parse::<Signal>().is_err());
    }

    #[test]
    fn displays_names() {
        assert_eq!(Signal::SIGTERM.to_string(), "SIGTERM");
        assert_eq!(Signal::SIGUSR2.to_string(), "SIGUSR2");
        assert_eq!(
            Signal::from_raw(libc::SIGRTMIN() + 1).unwrap().to_string(),
            "SIGRTMIN+1"
        );
    }
}
