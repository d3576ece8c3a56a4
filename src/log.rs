//! Log levels shared by all binaries, as the FAQ's verbosity table describes.
//!
//! Level 0 is the default. Each `-v` adds one (verbose, debug, trace); each `-q` takes one
//! away: -1 hides info, -2 also hides warnings (and the program's own stdout, where the
//! binary honours it), -3 also silences subprocess stderr. Everything goes to stderr;
//! stdout is for data only.

use std::sync::atomic::{AtomicI32, Ordering};

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

/// Print an informational line (hidden by `-q`).
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { if $crate::log::enabled(0) { eprintln!($($arg)*); } };
}

/// Print a verbose line (`-v`).
#[macro_export]
macro_rules! verbose {
    ($($arg:tt)*) => { if $crate::log::enabled(1) { eprintln!($($arg)*); } };
}

/// Print a debug line (`-vv`).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { if $crate::log::enabled(2) { eprintln!($($arg)*); } };
}

/// Print a warning (hidden by `-qq`).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { if $crate::log::enabled(-1) { eprintln!("warning: {}", format!($($arg)*)); } };
}
