//! Progress of long operations (import, pull, push, export, build-cache push, fetch and
//! gc): a bar on a terminal, one summary line per phase otherwise.
//!
//! An operation runs as one or more [`Phase`]s. While a phase is active, code at any depth
//! reports what it did with [`items`] and [`bytes`] (a few relaxed atomic adds, whether or
//! not a phase is active): the hooks in the store and registry code are one line each and
//! no function signature carries a progress handle. Only one phase is active at a time; a
//! phase started while another is active is passive (its events count toward the outer
//! one, and it prints nothing).
//!
//! What is shown depends on the [`Mode`], chosen once by the binary
//! ([`Mode::choose`], from [`crate::cli::set_verbosity`]):
//! - [`Mode::Bars`] (standard error is a terminal, default verbosity, no `$CH_LOG_FILE`):
//!   a bar (bytes or items done of the total, rate, eta; a spinner when the total is not
//!   known) redrawn by a ticker thread, replaced at the end by the phase's line;
//! - [`Mode::Lines`] (not a terminal, or `-v`): only the phase's line, at info level;
//! - [`Mode::Off`] (`-q` and quieter): nothing.
//!
//! The line reads `OPERATION: VERB COUNTS in DURATION[ (RATE)]`, for example
//! `import: read 8,700 files, 170.3 MiB in 0.61 s (279.2 MiB/s)`: counts with thousands
//! separators, sizes in binary units ([`size`]), durations per [`duration`]. It goes
//! through the log ([`crate::info`]), so to standard error (or `$CH_LOG_FILE`), never to
//! standard output, and not at all with `-q`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (`-q`).
    Off = 0,
    /// One line per phase.
    Lines = 1,
    /// A bar while a phase runs, then its line.
    Bars = 2,
}

impl Mode {
    /// The mode for a log level, whether standard error is a terminal and whether the log
    /// goes to `$CH_LOG_FILE`. Bars never in verbose mode (their redraws would mix with
    /// the chatter) and never into a log file.
    pub fn choose(stderr_is_terminal: bool, level: i32, log_file: bool) -> Mode {
        if level < 0 {
            Mode::Off
        } else if stderr_is_terminal && level == 0 && !log_file {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Lines as u8);

/// Set the process-wide mode (the binaries do, once).
pub fn set_mode(m: Mode) {
    MODE.store(m as u8, Ordering::Relaxed);
}

/// The process-wide mode.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        0 => Mode::Off,
        2 => Mode::Bars,
        _ => Mode::Lines,
    }
}

/// Counters of the active phase. Reset when a phase starts.
static ITEMS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Totals (0: unknown).
static TOTAL_ITEMS: AtomicU64 = AtomicU64::new(0);
static TOTAL_BYTES: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The bar being drawn, so that log lines can be printed above it ([`suspend`]).
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Report `n` items (files, layers, objects, ...) done in the active phase.
pub fn items(n: u64) {
    ITEMS.fetch_add(n, Ordering::Relaxed);
}

/// The items counted in the active phase so far.
pub fn items_counted() -> u64 {
    ITEMS.load(Ordering::Relaxed)
}

/// Report `n` bytes done in the active phase.
pub fn bytes(n: u64) {
    BYTES.fetch_add(n, Ordering::Relaxed);
}

/// Take back `n` bytes reported done in the active phase ([`bytes`]): a transfer that
/// starts again from the start.
pub fn unbytes(n: u64) {
    let _ = BYTES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
        Some(b.saturating_sub(n))
    });
}

/// Report one file of `size` bytes done.
pub fn file(size: u64) {
    items(1);
    bytes(size);
}

/// Files and bytes of a tree as its exports count them: hard links after a group's first
/// file are links, not files. Bytes are 0 (unknown: the bar then counts files) for a tree
/// read back from the store, whose file sizes are not recorded in it.
pub fn tree_totals(root: &crate::store::Dir) -> (u64, u64) {
    use crate::store::model::Node;
    let (mut n, mut b) = (0, 0);
    let mut groups = std::collections::HashSet::new();
    root.walk(&mut |_, node| {
        if let Node::File(f) = node {
            if f.link_group.is_none_or(|g| groups.insert(g)) {
                n += 1;
                b += f.size;
            }
        }
    });
    (n, b)
}

/// Set the totals of the active phase, once they are known (0: unknown). Ignored when no
/// phase is active; inside a passive phase, sets the outer phase's totals.
pub fn set_totals(items: u64, bytes: u64) {
    if ACTIVE.load(Ordering::Relaxed) {
        TOTAL_ITEMS.store(items, Ordering::Relaxed);
        TOTAL_BYTES.store(bytes, Ordering::Relaxed);
    }
}

/// Take `n` bytes off the active phase's total (work that turned out not to be needed,
/// such as a layer already downloaded).
pub fn skip_bytes(n: u64) {
    if ACTIVE.load(Ordering::Relaxed) {
        let _ = TOTAL_BYTES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
            Some(t.saturating_sub(n))
        });
    }
}

/// Run `f` (which writes to standard error) with the bar, if one is drawn, cleared
/// first and redrawn after, so that log lines don't mix with it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = BAR.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(b) => b.suspend(f),
        None => f(),
    }
}

/// A reader that reports the bytes read through it ([`bytes`]), and fails once a
/// SIGINT or SIGTERM has come ([`crate::interrupt::check`]): what reads an archive or a
/// tool's output through it stops there.
pub struct Reading<R>(pub R);

impl<R: std::io::Read> std::io::Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        crate::interrupt::check()?;
        let n = self.0.read(buf)?;
        bytes(n as u64);
        Ok(n)
    }
}

/// Follow the standard error of a git command run with `--progress`: its transfer lines
/// (`Writing objects: 45% (9/20), 1.20 MiB | ...`, `Receiving objects`, `Unpacking
/// objects`) count toward the active phase as objects and bytes; the other lines are
/// returned (for an error message).
pub fn follow_git(mut stderr: impl std::io::Read) -> String {
    let base = ITEMS.load(Ordering::Relaxed);
    let (mut done, mut sent) = (0u64, 0u64);
    let mut other = String::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    let mut line = |l: &[u8]| {
        let l = String::from_utf8_lossy(l);
        match git_transfer(&l) {
            Some(t) => {
                items(t.done.saturating_sub(done));
                done = done.max(t.done);
                if ACTIVE.load(Ordering::Relaxed) {
                    TOTAL_ITEMS.store(base + t.total, Ordering::Relaxed);
                }
                if let Some(b) = t.bytes {
                    bytes(b.saturating_sub(sent));
                    sent = sent.max(b);
                }
            }
            None if git_chatter(&l) => {}
            None => {
                other.push_str(l.trim_end());
                other.push('\n');
            }
        }
    };
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &c in &buf[..n] {
            if c == b'\r' || c == b'\n' {
                if !pending.is_empty() {
                    line(&pending);
                    pending.clear();
                }
            } else {
                pending.push(c);
            }
        }
    }
    if !pending.is_empty() {
        line(&pending);
    }
    other
}

/// One transfer progress line of git.
#[derive(Debug, PartialEq, Eq)]
pub struct GitTransfer {
    pub done: u64,
    pub total: u64,
    /// Bytes so far, when the line says.
    pub bytes: Option<u64>,
}

/// Parse `[remote: ]Writing|Receiving|Unpacking objects: P% (DONE/TOTAL)[, SIZE UNIT | RATE][, done.]`.
pub fn git_transfer(line: &str) -> Option<GitTransfer> {
    let rest = [
        "Writing objects:",
        "Receiving objects:",
        "Unpacking objects:",
    ]
    .iter()
    .find_map(|p| line.trim_start().strip_prefix(p))?;
    let (_, rest) = rest.split_once('(')?;
    let (counts, rest) = rest.split_once(')')?;
    let (done, total) = counts.split_once('/')?;
    let bytes = rest
        .strip_prefix(", ")
        .and_then(|r| r.split('|').next())
        .and_then(|r| {
            let mut w = r.split_whitespace();
            let v: f64 = w.next()?.parse().ok()?;
            let mul = match w.next()? {
                "bytes" | "byte" => 1.0,
                "KiB" => 1024.0,
                "MiB" => 1024.0 * 1024.0,
                "GiB" => 1024.0 * 1024.0 * 1024.0,
                _ => return None,
            };
            Some((v * mul) as u64)
        });
    Some(GitTransfer {
        done: done.trim().parse().ok()?,
        total: total.trim().parse().ok()?,
        bytes,
    })
}

/// Progress chatter of git that is no error: counting, compressing, totals, and any
/// progress line of git's maintenance (`Building bitmaps: 100% (3/3), done.`,
/// `Writing commit graph:  45% (9/20)`, `Indexing objects: 12`): a capitalized title,
/// `:`, then a count (git pads percentages with spaces). git's errors and warnings (`fatal:`, `error:`, `warning:`) are
/// lowercase and stay.
fn git_chatter(line: &str) -> bool {
    let l = line.trim();
    let l = l.strip_prefix("remote:").map(str::trim).unwrap_or(l);
    let counted = l.split_once(": ").is_some_and(|(title, rest)| {
        title.starts_with(|c: char| c.is_ascii_uppercase())
            && title.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
            && rest.trim_start().starts_with(|c: char| c.is_ascii_digit())
    });
    l.is_empty()
        || counted
        || [
            "Enumerating objects:",
            "Counting objects:",
            "Compressing objects:",
            "Resolving deltas:",
            "Delta compression",
            "Total ",
        ]
        .iter()
        .any(|p| l.starts_with(p))
}

/// One phase of an operation. Prints its line when [`Phase::finish`]ed; dropped without
/// finishing (an error), it clears its bar and prints nothing.
pub struct Phase {
    /// `None`: passive (another phase is active, or the mode is off).
    live: Option<Live>,
}

struct Live {
    operation: String,
    verb: &'static str,
    noun: &'static str,
    start: Instant,
    ticker: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Phase {
    /// Start phase `verb` of `operation`, counting items called `noun` (singular,
    /// regular plural: "file", "layer", "object", "blob").
    pub fn start(operation: &str, verb: &'static str, noun: &'static str) -> Phase {
        Phase::start_with(operation, verb, noun, (0, 0))
    }

    /// [`Phase::start`] with the totals known up front (items, bytes; 0: unknown), so
    /// that the bar is right from its first drawing.
    pub fn start_with(
        operation: &str,
        verb: &'static str,
        noun: &'static str,
        (total_items, total_bytes): (u64, u64),
    ) -> Phase {
        let m = mode();
        if m == Mode::Off
            || ACTIVE
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return Phase { live: None };
        }
        for c in [&ITEMS, &BYTES] {
            c.store(0, Ordering::Relaxed);
        }
        TOTAL_ITEMS.store(total_items, Ordering::Relaxed);
        TOTAL_BYTES.store(total_bytes, Ordering::Relaxed);
        let ticker = (m == Mode::Bars).then(|| {
            // Styled before it has a target: nothing is drawn in the default style.
            let bar = indicatif::ProgressBar::hidden().with_prefix(format!("{operation}: {verb}"));
            let mut shown = "";
            draw(&bar, noun, &mut shown);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(10));
            if let Ok(mut b) = BAR.lock() {
                *b = Some(bar.clone());
            }
            let (tx, rx) = mpsc::channel::<()>();
            let h = std::thread::spawn(move || loop {
                draw(&bar, noun, &mut shown);
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => {
                        bar.finish_and_clear();
                        break;
                    }
                }
            });
            (tx, h)
        });
        Phase {
            live: Some(Live {
                operation: operation.to_string(),
                verb,
                noun,
                start: Instant::now(),
                ticker,
            }),
        }
    }

    /// End the phase and print its line; `extra` counts (e.g. "3 layers") come before
    /// the items and bytes counted. Items are left out when none were counted and
    /// `noun` is empty.
    pub fn finish(self, extra: &[String]) {
        self.finish_with(extra, true)
    }

    /// [`Phase::finish`], leaving out the items counted when `items` is false (they were
    /// shown on the bar, but `extra` says what the line should: gc counts the objects git
    /// writes, and reports the objects it removed).
    pub fn finish_with(mut self, extra: &[String], items: bool) {
        let Some(live) = self.live.take() else {
            return;
        };
        let elapsed = live.start.elapsed();
        stop(live.ticker);
        ACTIVE.store(false, Ordering::SeqCst);
        let line = summary(
            &live.operation,
            live.verb,
            extra,
            (items && !live.noun.is_empty()).then(|| (ITEMS.load(Ordering::Relaxed), live.noun)),
            BYTES.load(Ordering::Relaxed),
            elapsed,
        );
        crate::info!("{line}");
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            stop(live.ticker);
            ACTIVE.store(false, Ordering::SeqCst);
        }
    }
}

fn stop(ticker: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>) {
    if let Some((tx, h)) = ticker {
        let _ = tx.send(());
        let _ = h.join();
        if let Ok(mut b) = BAR.lock() {
            *b = None;
        }
    }
}

/// Redraw the bar from the counters: on bytes when their total is known, else on items
/// when theirs is, else a spinner. `shown`: the template in use.
fn draw(bar: &indicatif::ProgressBar, noun: &str, shown: &mut &'static str) {
    let (n, b) = (ITEMS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    let (tn, tb) = (
        TOTAL_ITEMS.load(Ordering::Relaxed),
        TOTAL_BYTES.load(Ordering::Relaxed),
    );
    let items_text = |n: u64| {
        if noun.is_empty() {
            String::new()
        } else if tn > 0 {
            format!("{}/{} {}", count(n), count(tn), plural(tn, noun))
        } else {
            format!("{} {}", count(n), plural(n, noun))
        }
    };
    let (template, len, pos, msg) = if tb > 0 {
        (
            "{prefix} [{wide_bar}] {bytes}/{total_bytes} {msg} {bytes_per_sec} eta {eta}",
            tb,
            b.min(tb),
            items_text(n),
        )
    } else if tn > 0 {
        (
            "{prefix} [{wide_bar}] {msg} eta {eta}",
            tn,
            n.min(tn),
            format!("{}, {}", items_text(n), size(b)),
        )
    } else {
        (
            "{prefix} {spinner} {msg} {elapsed}",
            0,
            0,
            // Nothing counted (a gc): the spinner and the time alone.
            if noun.is_empty() && b == 0 {
                String::new()
            } else {
                format!("{}, {}", items_text(n), size(b))
            },
        )
    };
    if *shown != template {
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        *shown = template;
    }
    if len > 0 {
        bar.set_length(len);
        bar.set_position(pos);
    } else {
        bar.tick();
    }
    bar.set_message(msg.trim_start_matches(", ").to_string());
}

/// `noun` for `n` of them: "1 file", "2 files" (regular plurals only).
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    }
}

/// A count with thousands separators: `8,700`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size in binary units, one decimal above bytes: `512 B`, `1.5 KiB`, `170.3 MiB`.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    // Round first, so that 1023.96 KiB reads 1.0 MiB, not 1024.0 KiB.
    while (v * 10.0).round() / 10.0 >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A rate: `size` per second; `None` when it would mean nothing (no bytes, or a duration
/// under a millisecond).
pub fn rate(bytes: u64, d: Duration) -> Option<String> {
    let s = d.as_secs_f64();
    (bytes > 0 && s >= 0.001).then(|| format!("{}/s", size((bytes as f64 / s) as u64)))
}

/// A duration: `0.61 s` under 10 s, `12.3 s` under a minute, `2 min 05 s` above.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 9.995 {
        format!("{s:.2} s")
    } else if s < 59.95 {
        format!("{s:.1} s")
    } else {
        let whole = d.as_secs() + u64::from(d.subsec_millis() >= 500);
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// A phase's line: `OPERATION: VERB COUNTS in DURATION[ (RATE)]`.
pub fn summary(
    operation: &str,
    verb: &str,
    extra: &[String],
    items: Option<(u64, &str)>,
    bytes: u64,
    elapsed: Duration,
) -> String {
    let mut parts: Vec<String> = extra.to_vec();
    if let Some((n, noun)) = items {
        parts.push(format!("{} {}", count(n), plural(n, noun)));
    }
    if bytes > 0 {
        parts.push(size(bytes));
    }
    let mut line = format!("{operation}: {verb}");
    if !parts.is_empty() {
        line.push(' ');
        line.push_str(&parts.join(", "));
    }
    line.push_str(&format!(" in {}", duration(elapsed)));
    if let Some(r) = rate(bytes, elapsed) {
        line.push_str(&format!(" ({r})"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(8700), "8,700");
        assert_eq!(count(1_234_567), "1,234,567");
    }

    #[test]
    fn sizes_use_binary_units_with_one_decimal() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(170 * 1024 * 1024 + 300 * 1024), "170.3 MiB");
        // Rounding never gives 1024.0 of a unit.
        assert_eq!(size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
        assert_eq!(size(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn durations_keep_two_significant_decimals_then_minutes() {
        assert_eq!(duration(Duration::from_millis(0)), "0.00 s");
        assert_eq!(duration(Duration::from_millis(610)), "0.61 s");
        assert_eq!(duration(Duration::from_millis(9994)), "9.99 s");
        assert_eq!(duration(Duration::from_millis(9996)), "10.0 s");
        assert_eq!(duration(Duration::from_millis(12_345)), "12.3 s");
        assert_eq!(duration(Duration::from_millis(59_960)), "1 min 00 s");
        assert_eq!(duration(Duration::from_millis(125_400)), "2 min 05 s");
        assert_eq!(duration(Duration::from_secs(3600)), "60 min 00 s");
    }

    #[test]
    fn rates_are_sizes_per_second_and_absent_when_meaningless() {
        assert_eq!(
            rate(100 << 20, Duration::from_millis(500)).as_deref(),
            Some("200.0 MiB/s")
        );
        assert_eq!(rate(0, Duration::from_secs(1)), None);
        assert_eq!(rate(100, Duration::from_micros(10)), None);
    }

    #[test]
    fn summary_lines_read_operation_verb_counts_time_rate() {
        assert_eq!(
            summary(
                "import",
                "read",
                &[],
                Some((8700, "file")),
                170 << 20,
                Duration::from_millis(610)
            ),
            "import: read 8,700 files, 170.0 MiB in 0.61 s (278.7 MiB/s)"
        );
        assert_eq!(
            summary(
                "push",
                "uploaded",
                &[],
                Some((1, "blob")),
                0,
                Duration::from_millis(1200)
            ),
            "push: uploaded 1 blob in 1.20 s"
        );
        assert_eq!(
            summary(
                "pull",
                "unpacked",
                &["3 layers".into()],
                Some((12, "file")),
                2048,
                Duration::from_secs(2)
            ),
            "pull: unpacked 3 layers, 12 files, 2.0 KiB in 2.00 s (1.0 KiB/s)"
        );
        assert_eq!(
            summary("gc", "done", &[], None, 0, Duration::from_millis(40)),
            "gc: done in 0.04 s"
        );
    }

    #[test]
    fn git_transfer_lines_give_objects_and_bytes() {
        assert_eq!(
            git_transfer("Writing objects: 100% (202/202), 7.19 KiB | 736.00 KiB/s, done."),
            Some(GitTransfer {
                done: 202,
                total: 202,
                bytes: Some(7362)
            })
        );
        assert_eq!(
            git_transfer("Receiving objects:  45% (9/20)"),
            Some(GitTransfer {
                done: 9,
                total: 20,
                bytes: None
            })
        );
        assert_eq!(
            git_transfer("Unpacking objects: 100% (3/3), 250 bytes | 250.00 KiB/s, done."),
            Some(GitTransfer {
                done: 3,
                total: 3,
                bytes: Some(250)
            })
        );
        assert_eq!(git_transfer("Counting objects:  10% (2/20)"), None);
        assert_eq!(git_transfer("fatal: no such remote"), None);
        assert!(git_chatter(
            "remote: Enumerating objects: 205, done.        "
        ));
        assert!(!git_chatter("error: failed to push some refs"));
        // Maintenance progress (gc, repack, commit-graph): chatter, not the failure.
        for l in [
            "Building bitmaps: 100% (3/3), done.",
            "Writing commit graph:  45% (9/20)",
            "Computing commit graph generation numbers: 100% (4/4), done.",
            "Indexing objects: 12",
            "Expanding reachable commits in commit graph: 7, done.",
        ] {
            assert!(git_chatter(l), "{l}");
        }
        for l in [
            "fatal: Unable to create '/s/repo.git/commit-graph.lock': File exists.",
            "warning: There are too many unreachable loose objects",
            "error: pack-objects died of signal 9",
            "Another git process seems to be running in this repository, e.g.",
        ] {
            assert!(!git_chatter(l), "{l}");
        }
    }

    #[test]
    fn following_git_keeps_its_messages_and_counts_its_transfers() {
        // No phase is active in unit tests: the counters move, nothing is drawn.
        let before = ITEMS.load(Ordering::Relaxed);
        let err = b"Enumerating objects: 4, done.\nWriting objects:  33% (1/3)\rWriting objects: 100% (3/3)\rWriting objects: 100% (3/3), 237 bytes | 237.00 KiB/s, done.\nTotal 3 (delta 1)\nerror: failed to push some refs to 'x'\n";
        let other = follow_git(&err[..]);
        assert_eq!(other, "error: failed to push some refs to 'x'\n");
        assert!(ITEMS.load(Ordering::Relaxed) >= before + 3);
    }

    #[test]
    fn bars_only_on_a_terminal_at_the_default_level_without_a_log_file() {
        assert_eq!(Mode::choose(true, 0, false), Mode::Bars);
        assert_eq!(Mode::choose(false, 0, false), Mode::Lines);
        assert_eq!(Mode::choose(true, 1, false), Mode::Lines);
        assert_eq!(Mode::choose(true, 0, true), Mode::Lines);
        assert_eq!(Mode::choose(true, -1, false), Mode::Off);
        assert_eq!(Mode::choose(false, -2, false), Mode::Off);
    }
}
