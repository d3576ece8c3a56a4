//! The error type of `run`, carrying what ch-run's message format needs.
//!
//! Charliecloud prints `ch-run[PID]: error: MESSAGE: strerror (file:line errno)`; the
//! library keeps the message, the optional errno and the source location where the error
//! was made (via `#[track_caller]`), and the binary renders them.

use nix::errno::Errno;
use std::panic::Location;

/// Exit status for miscellaneous errors (Charliecloud's `EXIT_MISC_ERR`).
pub const EXIT_MISC: i32 = 31;
/// Exit status when the command could not be executed.
pub const EXIT_EXEC: i32 = 49;
/// Exit status when the SquashFS daemon ended before the command.
pub const EXIT_SQUASH: i32 = 84;
/// Exit status of `--feature=FEAT` when FEAT is not available.
pub const EXIT_FEATURE: i32 = 87;
/// Exit status for a command-line usage error.
pub const EXIT_USAGE: i32 = 64;

/// An error from setting up or running a container.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct RunError {
    msg: String,
    #[source]
    errno: Option<Errno>,
    location: &'static Location<'static>,
    hint: Option<String>,
    /// The exit status ch-run ends with after this error.
    status: i32,
}

impl RunError {
    /// An error without an errno.
    #[track_caller]
    pub fn msg(msg: impl Into<String>) -> RunError {
        RunError {
            msg: msg.into(),
            errno: None,
            location: Location::caller(),
            hint: None,
            status: EXIT_MISC,
        }
    }

    /// An error caused by a failed system call.
    #[track_caller]
    pub fn sys(msg: impl Into<String>, errno: Errno) -> RunError {
        RunError {
            msg: msg.into(),
            errno: Some(errno),
            location: Location::caller(),
            hint: None,
            status: EXIT_MISC,
        }
    }

    /// The command could not be executed (`execve(2)` failed): ch-run exits with
    /// [`EXIT_EXEC`] rather than [`EXIT_MISC`], whatever the message says.
    #[track_caller]
    pub fn exec(msg: impl Into<String>, errno: Errno) -> RunError {
        RunError {
            status: EXIT_EXEC,
            ..RunError::sys(msg, errno)
        }
    }

    /// An error caused by an I/O error (errno taken from it when it has one).
    #[track_caller]
    pub fn io(msg: impl Into<String>, e: &std::io::Error) -> RunError {
        RunError {
            msg: msg.into(),
            errno: e.raw_os_error().map(Errno::from_raw),
            location: Location::caller(),
            hint: None,
            status: EXIT_MISC,
        }
    }

    /// Attach a hint printed on its own line after the error.
    pub fn with_hint(mut self, hint: impl Into<String>) -> RunError {
        self.hint = Some(hint.into());
        self
    }

    /// The main message, without errno text or location.
    pub fn message(&self) -> &str {
        &self.msg
    }

    pub fn errno(&self) -> Option<Errno> {
        self.errno
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The exit status for this error: [`EXIT_EXEC`] for [`RunError::exec`], else
    /// [`EXIT_MISC`].
    pub fn exit_status(&self) -> i32 {
        self.status
    }

    /// The full report: `ch-run[PID]: error: ...`, then `ch-run[PID]: hint: ...` if any.
    pub fn report(&self) -> String {
        let pid = std::process::id();
        let mut s = format!("ch-run[{pid}]: error: {}", self.render());
        if let Some(h) = &self.hint {
            s.push_str(&format!("\nch-run[{pid}]: hint: {h}"));
        }
        s
    }

    /// Render in Charliecloud's format, without the `ch-run[PID]: error: ` prefix:
    /// `MESSAGE: strerror (file:line errno)` or `MESSAGE (file:line)`.
    pub fn render(&self) -> String {
        let file = self.location.file().rsplit('/').next().unwrap_or("?");
        match self.errno {
            Some(e) => format!(
                "{}: {} ({}:{} {})",
                self.msg,
                strerror(e),
                file,
                self.location.line(),
                e as i32
            ),
            None => format!("{} ({}:{})", self.msg, file, self.location.line()),
        }
    }
}

/// The C library's description of an errno, e.g. "No such file or directory".
pub fn strerror(e: Errno) -> String {
    std::io::Error::from_raw_os_error(e as i32)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_with_errno_names_file_line_and_errno() {
        let e = RunError::sys("can't stat: /x", Errno::ENOENT);
        let r = e.render();
        assert!(
            r.starts_with("can't stat: /x: No such file or directory (error.rs:"),
            "{r}"
        );
        assert!(r.ends_with(" 2)"), "{r}");
    }

    #[test]
    fn exit_status_comes_from_the_kind_not_the_message() {
        assert_eq!(
            RunError::exec("anything", Errno::ENOENT).exit_status(),
            EXIT_EXEC
        );
        assert_eq!(
            RunError::sys("can't execve(2): lookalike", Errno::ENOENT).exit_status(),
            EXIT_MISC
        );
        assert_eq!(RunError::msg("can't execve").exit_status(), EXIT_MISC);
        // The location is where `exec` was called, not inside it.
        assert!(RunError::exec("x", Errno::ENOENT)
            .render()
            .contains("error.rs:"));
    }

    #[test]
    fn render_without_errno_has_only_location() {
        let r = RunError::msg("--bind: destination can't be /").render();
        assert!(
            r.starts_with("--bind: destination can't be / (error.rs:"),
            "{r}"
        );
    }
}
