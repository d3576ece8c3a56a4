//! Log levels shared by all binaries, as the FAQ's verbosity table describes.
//!
//! Level 0 is the default. Each `-v` adds one (verbose, debug, trace); each `-q` takes one
//! away: -1 hides info, -2 also hides warnings (and the program's own stdout, where the
//! binary honours it), -3 also silences subprocess stderr. Everything goes to stderr;
//! stdout is for data only.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

static LEVEL: AtomicI32 = AtomicI32::new(0);

/// Set the process-wide verbosity: `verbose - quiet`.
pub fn set_level(level: i32) {
    LEVEL.store(level, Ordering::Relaxed);
}

/// The current verbosity level.
pub fn level() -> i32 {
    LEVEL.load(Ordering::Relaxed)
}

/// Whether a message at `at` would print (0 info, 1 verbose, 2 debug, 3 trace,
/// -1 warning).
pub fn enabled(at: i32) -> bool {
    level() >= at
}

/// How lines start and end: ch-run writes `ch-run[PID]: warning: MSG (file:line)` as
/// Charliecloud's C tools do; the other binaries write `warning: MSG`.
struct Style {
    /// Program name, printed as `NAME[PID]: ` with the PID of the printing process.
    program: String,
    locations: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

/// Start every line with `PROGRAM[PID]: ` and, if `locations`, end it with the source
/// location. Call once, early; later calls are ignored.
pub fn set_style(program: &str, locations: bool) {
    let _ = STYLE.set(Style {
        program: program.to_string(),
        locations,
    });
}

/// One log line as printed: prefix, `kind` (`"warning: "` or empty), message, location.
pub fn format_line(kind: &str, msg: &std::fmt::Arguments, file: &str, line: u32) -> String {
    let (prefix, locations) = STYLE
        .get()
        .map(|s| {
            (
                format!("{}[{}]: ", s.program, std::process::id()),
                s.locations,
            )
        })
        .unwrap_or((String::new(), false));
    if locations {
        let file = file.rsplit('/').next().unwrap_or(file);
        format!("{prefix}{kind}{msg} ({file}:{line})")
    } else {
        format!("{prefix}{kind}{msg}")
    }
}

#[doc(hidden)]
pub fn emit(kind: &str, msg: std::fmt::Arguments, file: &str, line: u32) {
    eprintln!("{}", format_line(kind, &msg, file, line));
}

/// A line at level `at` with `kind` before the message. The arguments are evaluated only
/// when the line prints.
#[doc(hidden)]
#[macro_export]
macro_rules! log_at {
    ($at:expr, $kind:expr, $($arg:tt)*) => {
        if $crate::log::enabled($at) {
            $crate::log::emit($kind, format_args!($($arg)*), file!(), line!())
        }
    };
}

/// Print an informational line (hidden by `-q`).
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log_at!(0, "", $($arg)*) };
}

/// Print a verbose line (`-v`).
#[macro_export]
macro_rules! verbose {
    ($($arg:tt)*) => { $crate::log_at!(1, "", $($arg)*) };
}

/// Print a debug line (`-vv`).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log_at!(2, "", $($arg)*) };
}

/// Print a warning (hidden by `-qq`).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log_at!(-1, "warning: ", $($arg)*) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_of_hidden_lines_are_not_evaluated() {
        // No unit test changes the level: it is the default, 0, so debug lines are hidden.
        assert_eq!(level(), 0);
        let mut evaluated = 0;
        crate::debug!("{}", {
            evaluated += 1;
            evaluated
        });
        assert_eq!(evaluated, 0);
    }

    #[test]
    fn lines_are_plain_until_a_style_is_set() {
        // The style is process-wide and set once: check the unset form, then the set one.
        if STYLE.get().is_none() {
            assert_eq!(
                format_line("warning: ", &format_args!("x {}", 1), "src/a/b.rs", 7),
                "warning: x 1"
            );
        }
        set_style("ch-run", true);
        let pid = std::process::id();
        assert_eq!(
            format_line(
                "warning: ",
                &format_args!("$PATH not set"),
                "src/run/mod.rs",
                455
            ),
            format!("ch-run[{pid}]: warning: $PATH not set (mod.rs:455)")
        );
        assert_eq!(
            format_line("", &format_args!("image: /i"), "src/bin/ch-run.rs", 3),
            format!("ch-run[{pid}]: image: /i (ch-run.rs:3)")
        );
    }
}
