//! Log levels shared by all binaries, as the FAQ's verbosity table describes.
//!
//! Level 0 is the default. Each `-v` adds one (verbose, debug, trace); each `-q` takes one
//! away: -1 hides info, -2 also hides warnings (and the program's own stdout, where the
//! binary honours it), -3 also silences subprocess stderr. Everything goes to stderr;
//! stdout is for data only.
//!
//! ch-image and ch-convert also honour, as Charliecloud's man page describes,
//! `$CH_LOG_FILE` (chatter, warnings and errors appended to that file instead of stderr)
//! and `$CH_LOG_FESTOON` (each line prefixed with the PID and a UTC timestamp):
//! [`init_from_env`].

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

static LEVEL: AtomicI32 = AtomicI32::new(0);

/// `$CH_LOG_FILE`, opened for appending, if set.
static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();

/// `$CH_LOG_FESTOON` was set.
static FESTOON: AtomicBool = AtomicBool::new(false);

/// Read `$CH_LOG_FILE` and `$CH_LOG_FESTOON`. Returns whether a log file is in use (the
/// caller then turns verbose mode on, as Charliecloud does). A log file that can't be
/// opened is an error naming it.
pub fn init_from_env() -> std::io::Result<bool> {
    FESTOON.store(
        std::env::var_os("CH_LOG_FESTOON").is_some(),
        Ordering::Relaxed,
    );
    let Some(path) = std::env::var_os("CH_LOG_FILE").filter(|p| !p.is_empty()) else {
        return Ok(false);
    };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "can't open $CH_LOG_FILE: {}: {e}",
                    std::path::Path::new(&path).display()
                ),
            )
        })?;
    let _ = FILE.set(Some(Mutex::new(f)));
    Ok(true)
}

/// Text that others may have written (a note or commit fetched with `build-cache fetch`,
/// a pulled image's config, a tarball's member names, a Dockerfile's lines), made safe to
/// print on one line of the terminal or the log: control characters but tab (C0, DEL, C1:
/// a newline would forge a line, an escape sequence move the cursor or recolour the
/// terminal) and the bidirectional-override characters become `\u{..}` escapes.
/// Backslashes stay (a Dockerfile's line continuations), so the form is for reading, not
/// for parsing back. Every read command's text output (`inspect`, `history`, `list`,
/// `verify`, `build-cache --tree` and `--dot`, `fsck`) passes what it did not make itself
/// through this (as `image::shown`), and so do the member names an import's messages
/// give; `diff` has its own reversible form (`image::diff_path`) for the same characters.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write as _;
    let bad = |c: char| c != '\t' && not_shown(c);
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match bad(c) {
            true => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            false => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `c` is a character that [`shown`] escapes (tab aside): a control character
/// (C0, DEL, C1) or a bidirectional-override or -isolate character.
pub fn not_shown(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Most characters of text from a user or a file that an error message quotes
/// ([`short`]).
pub const QUOTED_MAX: usize = 64;

/// Text a message quotes, kept short (a pattern or name refused for its length may be
/// megabytes): `render(text)` if it has at most [`QUOTED_MAX`] characters, else `render`
/// of its first [`QUOTED_MAX`], then `… ` and `length(n)`, `n` its count of characters
/// (`length` says it: `(70 characters)`, `(300 bytes)`).
pub fn short(
    text: &str,
    render: impl Fn(&str) -> String,
    length: impl FnOnce(usize) -> String,
) -> String {
    match text.char_indices().nth(QUOTED_MAX) {
        None => render(text),
        Some((cut, _)) => format!("{}… {}", render(&text[..cut]), length(text.chars().count())),
    }
}

/// `text` in double quotes, escaped as `{:?}` escapes it, as an error quotes a pattern:
/// [`short`], its length in characters.
pub fn quoted_short(text: &str) -> String {
    short(text, |s| format!("{s:?}"), |n| format!("({n} characters)"))
}

/// Write one finished line (no newline) to the log: the `$CH_LOG_FILE` if set, else
/// stderr; with `$CH_LOG_FESTOON`, prefixed with `PID TIMESTAMP  ` as Charliecloud does.
pub fn write_line(line: &str) {
    let text = if FESTOON.load(Ordering::Relaxed) {
        format!(
            "{:5} {}  {line}\n",
            std::process::id(),
            timestamp(std::time::SystemTime::now())
        )
    } else {
        format!("{line}\n")
    };
    if let Some(Some(f)) = FILE.get() {
        if let Ok(mut f) = f.lock() {
            let _ = f.write_all(text.as_bytes());
            return;
        }
    }
    // Above the progress bar, if one is drawn.
    crate::progress::suspend(|| {
        let _ = std::io::stderr().write_all(text.as_bytes());
    });
}

/// `YYYY-MM-DDTHH:MM:SS.mmm` in UTC (Charliecloud prints local time; Grove has no time
/// zone database and prints UTC).
fn timestamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (year, month, day, h, m, s) = civil(d.as_secs() as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}",
        d.subsec_millis()
    )
}

/// Year, month, day, hour, minute and second in UTC of `secs` seconds since the epoch
/// (negative before it): Howard Hinnant's civil-from-days algorithm.
pub(crate) fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, sod / 3600, sod % 3600 / 60, sod % 60)
}

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
    let text = format_line(kind, &msg, file, line);
    if kind == "warning: " {
        if let Ok(mut k) = KEPT.lock() {
            if let Some(kept) = k.as_mut() {
                // Charliecloud keeps the first 4 KiB of warnings.
                if kept.iter().map(|l: &String| l.len() + 1).sum::<usize>() + text.len() < 4096 {
                    kept.push(text.clone());
                }
            }
        }
    }
    write_line(&text);
}

/// Warnings kept to be printed again at exit ([`keep_warnings`]).
static KEPT: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// Keep the warnings printed from now on (the first 4 KiB of them), so that
/// [`reprint_warnings`] prints them again at exit, as Charliecloud's ch-run does: they
/// would otherwise scroll away above the command's output.
pub fn keep_warnings() {
    if let Ok(mut k) = KEPT.lock() {
        k.get_or_insert_with(Vec::new);
    }
}

/// Print the kept warnings again, after `PROGRAM[PID]: warning: reprinting first N
/// warning(s)`; nothing if there were none.
pub fn reprint_warnings() {
    let kept = match KEPT.lock() {
        Ok(mut k) => k.as_mut().map(std::mem::take).unwrap_or_default(),
        Err(_) => return,
    };
    if kept.is_empty() {
        return;
    }
    let prefix = STYLE
        .get()
        .map(|s| format!("{}[{}]: ", s.program, std::process::id()))
        .unwrap_or_default();
    write_line(&format!(
        "{prefix}warning: reprinting first {} warning(s)",
        kept.len()
    ));
    for l in kept {
        write_line(&l);
    }
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

/// Print a trace line (`-vvv`).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log_at!(3, "", $($arg)*) };
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
    fn shown_escapes_controls_and_bidi_overrides_once() {
        let raw = "a\tb\u{1b}[31m\nc\r\u{7f}\u{9b}\u{202e}\u{2066}d\\e é";
        let once = shown(raw);
        assert_eq!(
            once,
            "a\tb\\u{1b}[31m\\u{a}c\\u{d}\\u{7f}\\u{9b}\\u{202e}\\u{2066}d\\e é"
        );
        // Escaping what is escaped changes nothing (import escapes a member's name, and
        // the warning made from it escapes it again).
        assert_eq!(shown(&once), once);
        assert!(matches!(shown("plain é\t"), std::borrow::Cow::Borrowed(_)));
    }

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
    fn festoon_timestamps_are_utc_with_milliseconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123");
        assert_eq!(timestamp(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000");
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
