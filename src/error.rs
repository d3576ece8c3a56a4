//! The library's one I/O error type: an action on a path that failed, with the
//! `std::io::Error` as its cause. Every module's error enum wraps it in a transparent
//! `Io` variant, so the message (`can't ACTION: PATH`) and the cause chain are the same
//! everywhere and no module keeps its own helper.

use std::path::{Path, PathBuf};

/// An I/O operation on `path` failed: `can't {action}: {path}`, caused by `source`. The
/// path is shown escaped ([`crate::log::shown`]): much of it may come from an archive, a
/// layout or a remote (a member's name), whose control characters must not reach the
/// terminal nor forge a line.
#[derive(Debug, thiserror::Error)]
#[error("can't {action}: {}", crate::log::shown(&.path.to_string_lossy()))]
pub struct IoError {
    /// What was being done, as a verb phrase ("read", "create directory").
    pub action: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        IoError {
            action,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// `.at(action, path)` on an `io::Result`: the error becomes an [`IoError`] naming both.
pub trait IoResultExt<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T, IoError>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl AsRef<Path>) -> Result<T, IoError> {
        self.map_err(|source| IoError::new(action, path, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_action_and_path_and_keeps_its_cause() {
        let r: std::io::Result<()> = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let e = r.at("read", "/no/such").unwrap_err();
        assert_eq!(e.to_string(), "can't read: /no/such");
        let r: std::io::Result<()> = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let e = r.at("read", "/a\x1b[31m\nforged").unwrap_err();
        assert_eq!(e.to_string(), "can't read: /a\\u{1b}[31m\\u{a}forged");
        let cause = std::error::Error::source(&e).expect("a cause");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
    }
}
