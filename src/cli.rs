//! Helpers shared by the binaries: settings resolution and error rendering.

/// Whether extended attributes are recorded: `--xattrs` or a non-empty `$CH_XATTRS`, unless
/// `--no-xattrs` (the last of the two options wins; clap has already applied that).
pub fn xattrs_setting(xattrs: bool, no_xattrs: bool) -> crate::store::model::XattrPolicy {
    let env = std::env::var_os("CH_XATTRS").is_some_and(|v| !v.is_empty());
    crate::store::model::XattrPolicy::from_flag(!no_xattrs && (xattrs || env))
}

/// Parse the command line as Charliecloud's tools do (argp, argparse): a repeated option's
/// last value wins, in every subcommand, instead of being a usage error. Exits on a usage
/// error, or after printing help or the version.
pub fn parse_last_wins<T: clap::Parser>() -> T {
    let mut cmd = last_wins(T::command());
    let matches = cmd.get_matches_mut();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit())
}

/// `cmd` with `args_override_self`, a global setting: subcommands inherit it.
pub fn last_wins(cmd: clap::Command) -> clap::Command {
    cmd.args_override_self(true)
}

/// Print an error chain as `error: ...`, its causes, and the first hint the chain's error
/// types give ([`crate::hint::find`]), to `$CH_LOG_FILE` if set, else stderr. Takes any
/// error (the binaries pass `&*anyhow_error`).
pub fn report(err: &(dyn std::error::Error + 'static)) {
    let eprintln = |s: String| crate::log::write_line(&s);
    eprintln(format!("error: {err}"));
    let mut cause = err.source();
    while let Some(c) = cause {
        eprintln(format!("  caused by: {c}"));
        cause = c.source();
    }
    if let Some(h) = crate::hint::find(err) {
        eprintln(format!("hint: {h}"));
    }
}

/// After a command failed: remove the objects it wrote into storage directory `storage`
/// that nothing can use ([`crate::store::Store::reclaim_failed_writes`]), and say so. A
/// command that failed on a full disk thus leaves the space it found.
pub fn reclaim_after_failure(storage: Option<&std::path::Path>) {
    let Some(storage) = storage else { return };
    let (files, bytes) = crate::store::Store::reclaim_failed_writes(storage);
    if files > 0 {
        crate::info!(
            "removed the {files} object file(s) ({:.1} MiB) this command had written to {}",
            bytes as f64 / (1 << 20) as f64,
            storage.display()
        );
    }
}

/// Why an error happened in storage directory `storage`, when the user can't write it (a
/// read-only file system, or no write permission) and the error is a refused write
/// somewhere in the chain (`EROFS`, `EACCES`, `EPERM`): the message to put above it.
pub fn read_only_storage(
    e: &(dyn std::error::Error + 'static),
    storage: &std::path::Path,
) -> Option<String> {
    let mut denied = false;
    let mut cur = Some(e);
    while let Some(c) = cur {
        denied |= c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|n| [libc::EROFS, libc::EACCES, libc::EPERM].contains(&n));
        cur = c.source();
    }
    if !denied || !storage.is_dir() {
        return None;
    }
    let read_only_fs = nix::sys::statvfs::statvfs(storage)
        .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    if read_only_fs {
        Some(format!(
            "storage directory is on a read-only file system: {}",
            storage.display()
        ))
    } else if nix::unistd::access(storage, nix::unistd::AccessFlags::W_OK).is_err() {
        Some(format!(
            "storage directory is read-only (not writable by you): {}",
            storage.display()
        ))
    } else {
        None
    }
}

/// Verbosity from repeated -v and -q counts, after reading `$CH_LOG_FILE` and
/// `$CH_LOG_FESTOON` ([`crate::log::init_from_env`]): a log file implies `-v` when no `-v`
/// was given, as Charliecloud's man page says. Also picks how progress is shown
/// ([`crate::progress::Mode::choose`]).
pub fn set_verbosity(verbose: u8, quiet: u8) -> std::io::Result<()> {
    let file = crate::log::init_from_env()?;
    let verbose = if file { verbose.max(1) } else { verbose };
    crate::log::set_level(i32::from(verbose) - i32::from(quiet));
    use std::io::IsTerminal;
    crate::progress::set_mode(crate::progress::Mode::choose(
        std::io::stderr().is_terminal(),
        crate::log::level(),
        file,
    ));
    Ok(())
}

/// Exit status when standard output is a closed pipe: 141, what a shell reports for a
/// program killed by SIGPIPE (128 + 13), so `tool | head -1` behaves as with `ls` or `cat`
/// (and `set -o pipefail` scripts see the same failure) but quietly, with no message.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Write `text` to standard output as data. At `-qq` and quieter nothing is written (the
/// FAQ's table: "-qq also suppresses stdout for the program"). A closed pipe ends the
/// program quietly with [`EXIT_BROKEN_PIPE`]; another write error ends it with status 1
/// and a message. Never panics, unlike `println!`.
pub fn write_stdout(text: &str) {
    write_stdout_bytes(text.as_bytes())
}

/// [`write_stdout`] for bytes that need not be text (paths).
pub fn write_stdout_bytes(bytes: &[u8]) {
    use std::io::Write;
    if crate::log::level() <= -2 {
        return;
    }
    let mut so = std::io::stdout().lock();
    match so.write_all(bytes).and_then(|()| so.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(EXIT_BROKEN_PIPE)
        }
        Err(e) => {
            crate::log::write_line(&format!("error: can't write to standard output: {e}"));
            std::process::exit(1)
        }
    }
}

/// `println!` for data on standard output, through [`write_stdout`]: quiet on a closed
/// pipe, silent at `-qq`.
#[macro_export]
macro_rules! dataln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Shell-style glob match supporting `*`, `?` and `[...]` (for image name globs and
/// `.dockerignore` patterns). Every token but `*` matches one character, so on a mismatch
/// only the last `*` needs to take one more character: time `O(|pattern| * |text|)`.
/// (Backtracking into every `*` took time exponential in their number: `a*a*…*b` of 16
/// stars against a name of 60 `a`s held a build for minutes. Looking for the `]` of each
/// `[` anew at every try took `O(|pattern|)` per token: `*` and 10,000 `[` in a
/// `.dockerignore` took 9 ms per file name of 255 characters, 1 s for a name of `[`s.)
pub fn glob_match(pattern: &str, text: &str) -> bool {
    /// Whether the one-character token at `p[0]` matches `c`, and its length; `close` is
    /// the offset in `p` of the first `]` after `p[0]`, if any.
    fn token(p: &[char], close: Option<usize>, c: char) -> (bool, usize) {
        match p[0] {
            '?' => (true, 1),
            '[' => {
                let Some(end) = close.filter(|e| *e > 1) else {
                    return (c == '[', 1);
                };
                let (neg, set) = match p[1] {
                    '!' | '^' => (true, &p[2..end]),
                    _ => (false, &p[1..end]),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                (hit != neg, end + 1)
            }
            x => (x == c, 1),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // next_close[i]: index of the first `]` at or after `i`.
    let mut next_close = vec![None; p.len() + 1];
    for i in (0..p.len()).rev() {
        next_close[i] = if p[i] == ']' {
            Some(i)
        } else {
            next_close[i + 1]
        };
    }
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
            continue;
        }
        if pi < p.len() {
            let close = next_close[pi + 1].map(|i| i - pi);
            let (hit, len) = token(&p[pi..], close, t[ti]);
            if hit {
                pi += len;
                ti += 1;
                continue;
            }
        }
        match star {
            Some((s, at)) => {
                star = Some((s, at + 1));
                pi = s + 1;
                ti = at + 1;
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether the second argument of `ch-image pull` is a directory to unpack into (the
/// seed man page's `IMAGE_DIR`) rather than a destination reference (`DEST_REF`, 0.38's
/// form): it is a path when it can't be a reference, i.e. it starts with `/` or `.`
/// (`/tmp/x`, `./x`, `../x`) or ends with `/` (`x/`). Anything else is a reference, as in
/// Charliecloud 0.38, even if a directory of that name exists.
pub fn is_image_dir_argument(arg: &str) -> bool {
    arg.starts_with('/') || arg.starts_with('.') || arg.ends_with('/')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn pull_destination_is_a_directory_only_when_it_reads_as_a_path() {
        use super::is_image_dir_argument as dir;
        assert!(dir("/tmp/buster"));
        assert!(dir("./buster"));
        assert!(dir("../buster"));
        assert!(dir("."));
        assert!(dir("buster/"));
        assert!(!dir("buster"));
        assert!(!dir("foo/bar:1.0"));
        assert!(!dir("example.com:5000/foo"));
    }

    #[test]
    fn globs_match_like_the_shell() {
        assert!(glob_match("foo*", "foo:latest"));
        assert!(glob_match("*:1.?", "a:1.0"));
        assert!(!glob_match("*:1.?", "a:1.10"));
        assert!(glob_match("[ab]x", "bx"));
        assert!(!glob_match("[!ab]x", "bx"));
        assert!(glob_match("a[0-9]", "a7"));
    }

    /// The backtracking matcher glob_match replaced, as the reference.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| reference(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && reference(&p[1..], &t[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']').filter(|e| *e > 1) else {
                    return !t.is_empty() && t[0] == '[' && reference(&p[1..], &t[1..]);
                };
                let (neg, set) = match p[1] {
                    '!' | '^' => (true, &p[2..end]),
                    _ => (false, &p[1..end]),
                };
                let Some(&c) = t.first() else { return false };
                let hit = set.contains(&c);
                hit != neg && reference(&p[end + 1..], &t[1..])
            }
            Some(c) => t.first() == Some(c) && reference(&p[1..], &t[1..]),
        }
    }

    #[test]
    fn glob_match_agrees_with_backtracking_and_takes_polynomial_time() {
        let tokens = ["a", "b", "*", "?", "[ab]", "[!a]", "[", "]"];
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = patterns
                .iter()
                .flat_map(|p| tokens.iter().map(move |t| format!("{p}{t}")))
                .collect();
            patterns.extend(longer);
        }
        patterns.sort();
        patterns.dedup();
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| ["a", "b", "["].iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        texts.sort();
        texts.dedup();
        for p in &patterns {
            let pc: Vec<char> = p.chars().collect();
            for t in &texts {
                let tc: Vec<char> = t.chars().collect();
                assert_eq!(glob_match(p, t), reference(&pc, &tc), "{p:?} {t:?}");
            }
        }
        // 16 stars against 200 characters: C(216, 16) ways to backtrack. The bounds of 1 s
        // below are ~100 times what was measured (debug build, load 6.5, session 35):
        // 0.06 ms here, 11 ms for the brackets.
        let start = std::time::Instant::now();
        assert!(!glob_match(
            &format!("{}b", "a*".repeat(16)),
            &"a".repeat(200)
        ));
        assert!(glob_match(
            &format!("{}a", "a*".repeat(16)),
            &"a".repeat(200)
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // A `[` with no `]` after it is a literal `[`; finding that anew at every try made
        // this take O(|pattern| * |text|^2): minutes.
        let start = std::time::Instant::now();
        assert!(!glob_match(
            &format!("*{}", "[".repeat(10_000)),
            &format!("{}x", "[".repeat(999))
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod last_wins_tests {
    use clap::{FromArgMatches, Parser, Subcommand};

    #[derive(Parser, Debug)]
    struct Top {
        #[arg(short, long, global = true)]
        storage: Option<String>,
        #[arg(short, action = clap::ArgAction::Count)]
        verbose: u8,
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(Subcommand, Debug)]
    enum Sub {
        Build {
            #[arg(short)]
            tag: Option<String>,
            #[arg(long = "build-arg")]
            build_arg: Vec<String>,
        },
    }

    fn parse(args: &[&str]) -> Result<Top, clap::Error> {
        let m = super::last_wins(<Top as clap::CommandFactory>::command())
            .try_get_matches_from(args)?;
        Top::from_arg_matches(&m)
    }

    #[test]
    fn repeated_options_take_the_last_value_in_subcommands_too() {
        let t = parse(&[
            "x",
            "-s",
            "a",
            "-v",
            "-v",
            "-s",
            "b",
            "build",
            "-t",
            "one",
            "-t",
            "two",
            "--build-arg",
            "A=1",
            "--build-arg",
            "B=2",
        ])
        .expect("parse");
        assert_eq!(t.storage.as_deref(), Some("b"));
        assert_eq!(t.verbose, 2);
        let Sub::Build { tag, build_arg } = t.cmd;
        assert_eq!(tag.as_deref(), Some("two"));
        assert_eq!(build_arg, ["A=1", "B=2"]);
        // Without the setting, clap refuses the repetition.
        let plain = <Top as clap::CommandFactory>::command()
            .try_get_matches_from(["x", "build", "-t", "one", "-t", "two"]);
        assert!(plain.is_err());
    }
}
