//! The build context: `.dockerignore`, COPY source expansion, and content hashing of
//! sources with a stat cache.
//!
//! Sources are always relative to the context, even when written absolute, and must stay
//! inside it after top-level symlinks are followed. The content hash covers, for every
//! entry below each source (sorted): its relative path, type, permission bits, symlink
//! target, modification time (COPY keeps it, so it is part of the result) and a blake3
//! hash of file contents. A file edited and set back to its old mtime still changes the
//! hash, because the stat cache is keyed on ctime and inode too, which a user cannot set
//! back.

use crate::error::{IoError, IoResultExt};
use crate::glob::{Glob, Nfa, PathPattern, Subject};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Errors about the context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("no source files match: {0}")]
    NoMatch(String),
    /// A source without wildcards that is not in the context (Charliecloud's words).
    #[error("source file not found: {0}")]
    NotFound(String),
    /// No source, because `.dockerignore` excludes what the argument names (Charliecloud's
    /// words, as [`ContextError::NotFound`] and [`ContextError::NoMatch`]); the hint says
    /// which line excludes it, since Charliecloud ignores the file and copies it.
    #[error("{}: {arg}", if *.glob { "no source files match" } else { "source file not found" })]
    Excluded {
        arg: String,
        glob: bool,
        /// The first context path the argument names that is excluded.
        path: String,
        /// The ignore file, its line and that line's pattern.
        file: PathBuf,
        line: usize,
        pattern: String,
    },
    #[error("can't copy from outside context: {0}")]
    Outside(String),
    #[error("{}:{line}: {message}", path.display())]
    AtLine {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("can't read {}: {message}", path.display())]
    Unusable { path: PathBuf, message: String },
}

impl ContextError {
    /// Whether this is a wildcard source that matched nothing (or only excluded paths).
    /// Such a source is skipped when another source of the same step matched, as
    /// BuildKit allows empty wildcards (`COPY package.json yarn.lock* ./`); when no
    /// source matched, the step fails, as in Charliecloud.
    pub fn is_empty_wildcard(&self) -> bool {
        matches!(
            self,
            ContextError::NoMatch(_) | ContextError::Excluded { glob: true, .. }
        )
    }

    /// Advice for the user, if any (see [`crate::hint`]).
    pub fn hint(&self) -> Option<String> {
        match self {
            ContextError::Excluded {
                path,
                file,
                line,
                pattern,
                ..
            } => Some(format!(
                "{path} is excluded by {}:{line} ({pattern}): the build honours .dockerignore, \
                 as Docker does (Charliecloud ignores it)",
                file.display()
            )),
            _ => None,
        }
    }
}

/// Largest Dockerfile read (8 MiB).
pub const MAX_DOCKERFILE: u64 = 8 << 20;

/// Read a Dockerfile: `None` is standard input. A file must be a regular file (or a
/// pipe, as `-f <(...)` gives) and no larger than [`MAX_DOCKERFILE`]: `-f /dev/zero` is
/// refused instead of read until memory runs out. `label` names it in errors.
pub fn read_dockerfile(path: Option<&Path>, label: &str) -> Result<String, ContextError> {
    use std::os::unix::fs::FileTypeExt;
    let unusable = |message: String| ContextError::Unusable {
        path: PathBuf::from(label),
        message,
    };
    let reader: Box<dyn Read> = match path {
        None => Box::new(io::stdin().lock()),
        Some(p) => {
            let f = fs::File::open(p).at("read Dockerfile", p)?;
            let ft = f.metadata().at("stat Dockerfile", p)?.file_type();
            if !(ft.is_file() || ft.is_fifo()) {
                return Err(unusable("not a regular file".into()));
            }
            Box::new(f)
        }
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_DOCKERFILE + 1)
        .read_to_end(&mut bytes)
        .at("read Dockerfile", Path::new(label))?;
    if bytes.len() as u64 > MAX_DOCKERFILE {
        return Err(unusable(format!(
            "larger than {} MiB; a Dockerfile is not that big",
            MAX_DOCKERFILE >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let b = e.as_bytes();
        let line = b[..at].iter().filter(|c| **c == b'\n').count() + 1;
        ContextError::AtLine {
            path: PathBuf::from(label),
            line,
            message: format!("not valid UTF-8 (byte {:#04x})", b[at]),
        }
    })
}

/// Largest `.dockerignore` read (1 MiB).
pub const MAX_IGNORE_FILE: u64 = 1 << 20;

/// `.dockerignore` rules: the last matching pattern decides; `!` re-includes.
#[derive(Debug, Default, Clone)]
pub struct Ignore {
    rules: Vec<(bool, PathPattern)>,
    /// Each rule's line number in its file and the line as written (for messages).
    lines: Vec<(usize, String)>,
    /// The file the rules were read from (none for `COPY --exclude` patterns).
    file: Option<PathBuf>,
}

impl Ignore {
    /// Parse `.dockerignore` text as Docker's reader (moby `ignorefile.ReadAll`) does: a
    /// line is a comment only if `#` is its first character (`  # note` is the pattern
    /// `# note`); other lines are trimmed of blanks, and a line that is then empty is
    /// skipped. A leading byte order mark is not part of the first line, and CRLF line
    /// ends are read as LF. A `!` with no pattern after it (`!`, `! `, `!/`) is refused,
    /// as Docker refuses it (`illegal exclusion pattern: "!"`).
    pub fn parse(text: &str) -> Ignore {
        Ignore::parse_checked(text).unwrap_or_else(|_| Ignore::default())
    }

    /// [`Ignore::parse`], with the first refused line as `(line number, message)`.
    fn parse_checked(text: &str) -> Result<Ignore, (usize, String)> {
        let mut rules = Vec::new();
        let mut lines = Vec::new();
        // A UTF-8 byte order mark (Windows editors) is not part of the first pattern, as
        // Docker's reader trims it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            match rule(line) {
                Rule::Pattern(r) => {
                    rules.push(r);
                    lines.push((n + 1, line.to_string()));
                }
                Rule::Nothing => {}
                Rule::Bad(message) => return Err((n + 1, message)),
            }
        }
        Ok(Ignore {
            rules,
            lines,
            file: None,
        })
    }

    /// The patterns of `COPY --exclude` options, one each: `.dockerignore`'s syntax
    /// except that none is a comment (`--exclude=#draft` excludes `#draft`). A pattern
    /// Docker refuses is an error naming it.
    pub fn patterns<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Ignore, String> {
        let mut rules = Vec::new();
        let mut lines = Vec::new();
        for p in patterns {
            match rule(p.trim()) {
                Rule::Pattern(r) => {
                    rules.push(r);
                    lines.push((0, p.to_string()));
                }
                Rule::Nothing => {}
                Rule::Bad(message) => return Err(message),
            }
        }
        Ok(Ignore {
            rules,
            lines,
            file: None,
        })
    }

    /// Whether there are no rules (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Read `CONTEXT/.dockerignore` (none: no rules). Any problem is an error naming the
    /// file (and the line): silently dropping the rules would copy what they exclude.
    pub fn load(context: &Path) -> Result<Ignore, ContextError> {
        Ok(Ignore::load_file(&context.join(".dockerignore"))?.unwrap_or_default())
    }

    /// The rules for a build of `dockerfile` (`None`: read from standard input): as
    /// BuildKit, `DOCKERFILE.dockerignore` beside it if there is one (`app/Dockerfile`:
    /// `app/Dockerfile.dockerignore`), which then replaces `CONTEXT/.dockerignore`.
    pub fn load_for(context: &Path, dockerfile: Option<&Path>) -> Result<Ignore, ContextError> {
        if let Some(d) = dockerfile {
            let mut own = d.as_os_str().to_os_string();
            own.push(".dockerignore");
            if let Some(ig) = Ignore::load_file(Path::new(&own))? {
                return Ok(ig);
            }
        }
        Ignore::load(context)
    }

    /// Read one ignore file; `None` if there is none.
    fn load_file(p: &Path) -> Result<Option<Ignore>, ContextError> {
        use std::os::unix::fs::OpenOptionsExt;
        let p = p.to_path_buf();
        let f = match fs::OpenOptions::new()
            .read(true)
            // A FIFO must not block the build; it is refused below.
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(&p)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IoError::new("read", &p, e).into()),
        };
        let md = f.metadata().at("stat", &p)?;
        if !md.is_file() {
            return Err(ContextError::Unusable {
                path: p,
                message: "not a regular file".into(),
            });
        }
        let mut bytes = Vec::new();
        f.take(MAX_IGNORE_FILE + 1)
            .read_to_end(&mut bytes)
            .at("read", &p)?;
        if bytes.len() as u64 > MAX_IGNORE_FILE {
            return Err(ContextError::Unusable {
                path: p,
                message: format!("larger than {} MiB", MAX_IGNORE_FILE >> 20),
            });
        }
        Ignore::parse_bytes(&bytes)
            .map(|ig| {
                Some(Ignore {
                    file: Some(p.clone()),
                    ..ig
                })
            })
            .map_err(|(line, message)| ContextError::AtLine {
                path: p,
                line,
                message,
            })
    }

    /// Parse `.dockerignore` bytes; a line that is not UTF-8 (comments too) is an error
    /// `(line number, message)`: patterns are matched as text.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Ignore, (usize, String)> {
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if let Err(e) = std::str::from_utf8(line) {
                return Err((
                    i + 1,
                    format!(
                        "not valid UTF-8 (byte {:#04x} at column {})",
                        line[e.valid_up_to()],
                        e.valid_up_to() + 1
                    ),
                ));
            }
        }
        let text = std::str::from_utf8(bytes).map_err(|e| (0, e.to_string()))?;
        Ignore::parse_checked(text)
    }

    /// Whether `rel` (relative to the context, `/`-separated) is excluded. A path is
    /// excluded when it or one of its parents matches (Docker's rule).
    pub fn excluded(&self, rel: &str) -> bool {
        self.deciding_rule(rel).is_some()
    }

    /// The index of the rule that excludes `rel` (the last one matching it or a parent),
    /// `None` if it is not excluded.
    fn deciding_rule(&self, rel: &str) -> Option<usize> {
        if self.rules.is_empty() {
            return None;
        }
        let path = normal(rel);
        if path.is_empty() {
            return None;
        }
        // The last matching rule decides, so look from the end. One scratch state set
        // serves every rule: nothing is allocated per rule.
        let mut nfa = Nfa::default();
        let subject = Subject::new(&path);
        for (i, (neg, pat)) in self.rules.iter().enumerate().rev() {
            if pat.matches(&subject, &mut nfa) {
                return (!neg).then_some(i);
            }
        }
        None
    }

    /// Whether the excluded directory `rel` may hold paths that a `!` rule re-includes
    /// (`docs/` then `!docs/keep.md`): Docker walks such a directory and copies what is
    /// re-included (with the directories leading to it), so walkers descend into it and
    /// ask [`Ignore::excluded`] of each path below.
    pub fn may_reinclude_below(&self, rel: &str) -> bool {
        let dir = normal(rel);
        if dir.is_empty() {
            return self.rules.iter().any(|(neg, _)| *neg);
        }
        let below = format!("{dir}/");
        let mut nfa = Nfa::default();
        self.rules
            .iter()
            .any(|(neg, pat)| *neg && pat.could_match_below(&below, &mut nfa))
    }
}

/// `rel` without empty components (`a//b/` is `a/b`), as Docker's cleaned paths are.
fn normal(rel: &str) -> std::borrow::Cow<'_, str> {
    if rel.split('/').any(str::is_empty) {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        comps.join("/").into()
    } else {
        rel.into()
    }
}

/// What a pattern line is.
enum Rule {
    /// A rule: `!` (negation) and its components.
    Pattern((bool, PathPattern)),
    /// A pattern that matches no path: `/`, `.`, or one climbing out of the context
    /// (`../x`: the paths matched are inside it). Docker keeps them; they match nothing.
    Nothing,
    /// A pattern Docker refuses: `!` with nothing after it, a malformed class.
    Bad(String),
}

/// One pattern line (trimmed) as a rule, its pattern cleaned as Go's `filepath.Clean`
/// cleans it (Docker's reader and matcher do): `.` and empty components go, `..` takes
/// the component before it away, and a `..` with none before it stays, so that a pattern
/// climbing above the context matches nothing; a leading `/` changes nothing.
fn rule(line: &str) -> Rule {
    let (neg, pat) = match line.strip_prefix('!') {
        Some(p) => (true, p.trim()),
        None => (false, line),
    };
    let rooted = pat.starts_with('/');
    let mut comps: Vec<&str> = Vec::new();
    for c in pat.split('/') {
        match c {
            "" | "." => {}
            ".." => match comps.last() {
                Some(l) if *l != ".." => {
                    comps.pop();
                }
                _ if rooted => {}
                _ => comps.push(".."),
            },
            c => comps.push(c),
        }
    }
    if neg && (pat.is_empty() || rooted && comps.is_empty()) {
        // `!`, `!/`, `!/a/../..`: Go's `Clean` makes `!` of them, which Docker refuses.
        return Rule::Bad(format!(
            "illegal exclusion pattern: {line:?} (a `!` needs a pattern)"
        ));
    }
    if comps.is_empty() || comps.contains(&"..") {
        return Rule::Nothing;
    }
    for c in &comps {
        if let Err(e) = Glob::docker(c) {
            return Rule::Bad(e);
        }
    }
    Rule::Pattern((neg, PathPattern::compile(&comps.join("/"))))
}

fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// A source expanded from a COPY/ADD argument: its path relative to the context and the
/// real path on disk (top-level symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The relative path as text (lossy for non-UTF-8 names): for `.dockerignore` matching
    /// and messages.
    pub rel: String,
    /// The relative path as bytes: for the cache key and for the name copied.
    pub rel_bytes: Vec<u8>,
    pub real: PathBuf,
}

/// Expand a source argument (glob allowed) against the context directory.
pub fn expand(context: &Path, arg: &str, ignore: &Ignore) -> Result<Vec<Source>, ContextError> {
    let rel = clean(arg.trim_start_matches('/'));
    if escapes(arg.trim_start_matches('/')) {
        return Err(ContextError::Outside(arg.to_string()));
    }
    let comps: Vec<&str> = if rel.is_empty() {
        vec![]
    } else {
        rel.split('/').collect()
    };
    let mut found: Vec<Vec<u8>> = Vec::new();
    glob_walk(context, Vec::new(), &comps, &mut found).at("read directory", context)?;
    // A pattern ending in `/` matches directories only (symlinks to them too), as
    // Python's glob, which Charliecloud's COPY uses (the man page: "Python glob
    // semantics"): `COPY src/*/ /x/` copies the contents of `src`'s directories, not its
    // files. BuildKit cleans the slash away and copies both.
    if has_glob(arg) && arg.ends_with('/') {
        found.retain(|raw| context.join(std::ffi::OsStr::from_bytes(raw)).is_dir());
    }
    found.sort();
    let canon_ctx = fs::canonicalize(context).at("resolve", context)?;
    let mut out = Vec::new();
    // The first path left out, and the rule that excludes it.
    let mut left_out: Option<(String, usize)> = None;
    for raw in found {
        let r = String::from_utf8_lossy(&raw).into_owned();
        if !r.is_empty() {
            if let Some(rule) = ignore.deciding_rule(&r) {
                if !(ignore.may_reinclude_below(&r)
                    && context.join(std::ffi::OsStr::from_bytes(&raw)).is_dir())
                {
                    left_out.get_or_insert((r, rule));
                    continue;
                }
            }
        }
        let p = if raw.is_empty() {
            context.to_path_buf()
        } else {
            context.join(std::ffi::OsStr::from_bytes(&raw))
        };
        let real = fs::canonicalize(&p).at("resolve", &p)?;
        if !real.starts_with(&canon_ctx) {
            return Err(ContextError::Outside(arg.to_string()));
        }
        out.push(Source {
            rel: r,
            rel_bytes: raw,
            real,
        });
    }
    if out.is_empty() {
        if let (Some((path, rule)), Some(file)) = (left_out, &ignore.file) {
            let (line, pattern) = ignore.lines[rule].clone();
            return Err(ContextError::Excluded {
                arg: arg.to_string(),
                glob: has_glob(arg),
                path,
                file: file.clone(),
                line,
                pattern,
            });
        }
        if arg.contains(['*', '?', '[']) {
            return Err(ContextError::NoMatch(arg.to_string()));
        }
        return Err(ContextError::NotFound(arg.to_string()));
    }
    Ok(out)
}

/// Whether a relative path climbs above its root with `..` (lexically; `a/../b` does not,
/// `../x` and `a/../../x` do). [`clean`] would silently clamp such a path to the root.
pub(crate) fn escapes(rel: &str) -> bool {
    let mut depth: usize = 0;
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

pub(crate) fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Relative paths (bytes: names need not be UTF-8) matching `comps` below `dir`. Globs
/// match a non-UTF-8 name in its lossy form.
fn glob_walk(
    dir: &Path,
    prefix: Vec<u8>,
    comps: &[&str],
    out: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    let Some((first, rest)) = comps.split_first() else {
        out.push(prefix);
        return Ok(());
    };
    let join = |name: &[u8]| {
        let mut p = prefix.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        p
    };
    if !has_glob(first) {
        let p = dir.join(first);
        if fs::symlink_metadata(&p).is_ok() {
            glob_walk(&p, join(first.as_bytes()), rest, out)?;
        }
        return Ok(());
    }
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(_) => return Ok(()),
    };
    let glob = Glob::python(first);
    for e in rd {
        let e = e?;
        let name = e.file_name();
        // Python glob semantics, as Charliecloud's man page states: a wildcard does not
        // match a leading dot unless the pattern component starts with one.
        if name.as_bytes().first() == Some(&b'.') && !first.starts_with('.') {
            continue;
        }
        if glob.matches(&name.to_string_lossy()) {
            glob_walk(&e.path(), join(name.as_bytes()), rest, out)?;
        }
    }
    Ok(())
}

/// Cached content hashes keyed by absolute path and the stat fields a user cannot fake
/// back (inode, size, mtime, ctime).
#[derive(Debug, Default)]
pub struct StatCache {
    entries: HashMap<PathBuf, (u64, u64, i64, i64, [u8; 32])>,
    /// Provenance digests ([`file_digests`]: sha256, git blob id) by path, with the same
    /// stat fields, so that an all-hit build reads no file for its provenance note.
    digests: HashMap<PathBuf, DigestEntry>,
    /// Paths whose entry (`entries`) or digests (`digests`) changed since the load: what
    /// [`StatCache::save`] appends.
    changed: Vec<PathBuf>,
    changed_digests: Vec<PathBuf>,
    /// Lines of the file as loaded, if it was a current-version file ([`save`] appends to
    /// such a file rather than rewriting it, while it is not much longer than its content).
    ///
    /// [`save`]: StatCache::save
    file_lines: Option<usize>,
}

/// A cached [`file_digests`] answer: inode, size, mtime, ctime (ns), sha256, git blob id.
type DigestEntry = (u64, u64, i64, i64, [u8; 32], gix::ObjectId);

/// Version 2 added the `D` lines (provenance digests); a version-1 cache is still read.
const STAT_CACHE_HEADER: &str = "grove-statcache 2";
const STAT_CACHE_HEADER_V1: &str = "grove-statcache 1";

impl StatCache {
    /// Load from `path`; a missing or unreadable cache is an empty one.
    pub fn load(path: &Path) -> StatCache {
        let mut c = StatCache::default();
        let Ok(text) = fs::read(path) else { return c };
        let mut lines = text.split(|b| *b == b'\n');
        let header = lines.next();
        if header != Some(STAT_CACHE_HEADER.as_bytes())
            && header != Some(STAT_CACHE_HEADER_V1.as_bytes())
        {
            return c;
        }
        let current = header == Some(STAT_CACHE_HEADER.as_bytes());
        let mut n = 0;
        let num = parse_i64;
        // About 100 bytes a line, half of them `D` lines.
        c.entries.reserve(text.len() / 200);
        c.digests.reserve(text.len() / 200);
        for line in lines {
            n += 1;
            if let Some(d) = line.strip_prefix(b"D ") {
                // D INO SIZE MTIME CTIME SHA256 BLOB PATH
                let f: Vec<&[u8]> = d.splitn(7, |b| *b == b' ').collect();
                if f.len() != 7 {
                    continue;
                }
                let (Some(ino), Some(size), Some(mt), Some(ct), Some(sha), Ok(blob)) = (
                    parse_u64(f[0]),
                    parse_u64(f[1]),
                    num(f[2]),
                    num(f[3]),
                    hex32(f[4]),
                    gix::ObjectId::from_hex(f[5]),
                ) else {
                    continue;
                };
                let p = PathBuf::from(std::ffi::OsStr::from_bytes(f[6]));
                c.digests.insert(p, (ino, size, mt, ct, sha, blob));
                continue;
            }
            let f: Vec<&[u8]> = line.splitn(6, |b| *b == b' ').collect();
            if f.len() != 6 {
                continue;
            }
            let (Some(ino), Some(size), Some(mt), Some(ct)) =
                (parse_u64(f[0]), parse_u64(f[1]), num(f[2]), num(f[3]))
            else {
                continue;
            };
            let Some(hash) = hex32(f[4]) else { continue };
            let p = PathBuf::from(std::ffi::OsStr::from_bytes(f[5]));
            c.entries.insert(p, (ino, size, mt, ct, hash));
        }
        c.file_lines = current.then_some(n);
        c
    }

    /// Write back what changed since the load: appended to the loaded file while it stays
    /// within twice its content (later lines win; a line torn by a kill does not parse
    /// and is skipped, since each append starts with a newline), else rewritten whole and
    /// renamed into place. So a build that changed K files writes K lines, not the cache.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let changes = self.changed.len() + self.changed_digests.len();
        if changes == 0 {
            return Ok(());
        }
        let live = self.entries.len() + self.digests.len();
        if let Some(lines) = self.file_lines {
            if lines + changes <= 2 * live + 64 {
                let mut out = Vec::with_capacity(changes * 140 + 1);
                out.push(b'\n');
                for k in &self.changed {
                    if let Some(e) = self.entries.get(k) {
                        entry_line(&mut out, k, e);
                    }
                }
                for k in &self.changed_digests {
                    if let Some(d) = self.digests.get(k) {
                        digest_line(&mut out, k, d);
                    }
                }
                if out.len() == 1 {
                    // Only paths a line can't hold (a newline in the name): nothing kept.
                    return Ok(());
                }
                let appended = fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(&out));
                if appended.is_ok() {
                    return Ok(());
                }
                // Gone or unwritable: write it whole below.
            }
        }
        let mut out = Vec::with_capacity(live * 140);
        out.extend_from_slice(STAT_CACHE_HEADER.as_bytes());
        out.push(b'\n');
        let mut keys: Vec<&PathBuf> = self.entries.keys().collect();
        keys.sort();
        for k in keys {
            entry_line(&mut out, k, &self.entries[k]);
        }
        let mut keys: Vec<&PathBuf> = self.digests.keys().collect();
        keys.sort();
        for k in keys {
            digest_line(&mut out, k, &self.digests[k]);
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        fs::write(&tmp, out)?;
        fs::rename(&tmp, path)
    }

    /// The cached provenance digests ([`file_digests`]) of `p`, if its stat fields are
    /// still `md`'s.
    pub fn cached_digests(&self, p: &Path, md: &fs::Metadata) -> Option<([u8; 32], gix::ObjectId)> {
        let (ino, size, mt, ct, sha, blob) = self.digests.get(p)?;
        (*ino == md.ino() && *size == md.len() && *mt == mtime_ns(md) && *ct == ctime_ns(md))
            .then_some((*sha, *blob))
    }

    /// Remember the provenance digests of `p`, read while it had metadata `md`.
    pub fn remember_digests(
        &mut self,
        p: &Path,
        md: &fs::Metadata,
        sha: [u8; 32],
        blob: gix::ObjectId,
    ) {
        self.digests.insert(
            p.to_path_buf(),
            (md.ino(), md.len(), mtime_ns(md), ctime_ns(md), sha, blob),
        );
        self.changed_digests.push(p.to_path_buf());
    }

    /// Take the entries of `other` (a cache [`warm`] filled), keeping this cache's where
    /// both have one for a path: each entry is checked against the file's stat fields when
    /// used, so any of them is right for the file it describes.
    pub fn merge(&mut self, other: StatCache) {
        for (p, e) in other.entries {
            if let std::collections::hash_map::Entry::Vacant(v) = self.entries.entry(p) {
                self.changed.push(v.key().clone());
                v.insert(e);
            }
        }
        for (p, e) in other.digests {
            if let std::collections::hash_map::Entry::Vacant(v) = self.digests.entry(p) {
                self.changed_digests.push(v.key().clone());
                v.insert(e);
            }
        }
    }

    fn lookup(&self, p: &Path, md: &fs::Metadata) -> Option<[u8; 32]> {
        let (ino, size, mt, ct, h) = self.entries.get(p)?;
        (*ino == md.ino() && *size == md.len() && *mt == mtime_ns(md) && *ct == ctime_ns(md))
            .then_some(*h)
    }
}

fn mtime_ns(md: &fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

fn ctime_ns(md: &fs::Metadata) -> i64 {
    md.ctime() * 1_000_000_000 + md.ctime_nsec()
}

fn push_hex(out: &mut Vec<u8>, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for x in b {
        out.push(DIGITS[usize::from(x >> 4)]);
        out.push(DIGITS[usize::from(x & 15)]);
    }
}

/// `INO SIZE MTIME CTIME BLAKE3 PATH` (docs/cache-keys.md, "Stat cache"); nothing for a
/// path holding a newline (one entry is one line).
fn entry_line(out: &mut Vec<u8>, p: &Path, e: &(u64, u64, i64, i64, [u8; 32])) {
    let p = p.as_os_str().as_bytes();
    if p.contains(&b'\n') {
        return;
    }
    let (ino, size, mt, ct, h) = e;
    let _ = write!(out, "{ino} {size} {mt} {ct} ");
    push_hex(out, h);
    out.push(b' ');
    out.extend_from_slice(p);
    out.push(b'\n');
}

/// `D INO SIZE MTIME CTIME SHA256 GITBLOB PATH`.
fn digest_line(out: &mut Vec<u8>, p: &Path, d: &DigestEntry) {
    let p = p.as_os_str().as_bytes();
    if p.contains(&b'\n') {
        return;
    }
    let (ino, size, mt, ct, sha, blob) = d;
    let _ = write!(out, "D {ino} {size} {mt} {ct} ");
    push_hex(out, sha);
    let _ = write!(out, " {blob} ");
    out.extend_from_slice(p);
    out.push(b'\n');
}

fn hex32(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// A decimal `u64` (digits only), as the stat cache writes inode numbers and sizes.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// A decimal `i64` (an optional `-`, then digits only), as the stat cache writes times.
fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, b),
    };
    let v = i64::try_from(parse_u64(digits)?).ok()?;
    Some(if neg { -v } else { v })
}

/// Hash the regular files of `sources` ahead of the step that copies them: their blake3
/// content hashes and provenance digests ([`file_digests`]), those `known` lacks, into a
/// new cache for [`StatCache::merge`]. A build runs this while a RUN's command runs (the
/// build waits for it and the command seldom keeps both cores busy), so that the COPY
/// after it finds its files hashed: a cold build of the bench's Dockerfile hashed its
/// 50 MB file three ways (0.08 to 0.15 s) after the RUN, on the critical path.
/// Entries are keyed by the stat fields seen before the file is read, as the step's own
/// pass does: a file changed since is hashed again. Errors are left to the step.
/// Returns the new cache and the number of files it read.
pub fn warm(sources: &[Source], ignore: &Ignore, known: &StatCache) -> (StatCache, usize) {
    let mut entries = Vec::new();
    for s in sources {
        let Ok(md) = fs::metadata(&s.real) else {
            continue;
        };
        let is_dir = md.is_dir();
        entries.push((s.rel_bytes.clone(), s.real.clone(), md));
        if is_dir && walk_sorted(&s.real, &s.rel_bytes, ignore, &mut entries).is_err() {
            break;
        }
    }
    let mut out = StatCache::default();
    let mut read = 0;
    for (_, p, md) in entries.iter().filter(|(_, _, md)| md.is_file()) {
        let (hashed, digested) = (
            known.lookup(p, md).is_some(),
            known.cached_digests(p, md).is_some(),
        );
        read += usize::from(!hashed || !digested);
        if !hashed {
            if let Ok(h) = hash_file(p) {
                out.entries.insert(
                    p.clone(),
                    (md.ino(), md.len(), mtime_ns(md), ctime_ns(md), h),
                );
            }
        }
        if !digested {
            if let Ok((sha, blob)) = file_digests(p) {
                out.remember_digests(p, md, sha, blob);
            }
        }
    }
    (out, read)
}

/// Hash a file's contents with blake3.
pub fn hash_file(p: &Path) -> io::Result<[u8; 32]> {
    let mut f = fs::File::open(p)?;
    let mut h = blake3::Hasher::new();
    let len = f.metadata()?.len();
    if len > (16 << 20) {
        h.update_mmap_rayon(p)?;
    } else {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(*h.finalize().as_bytes())
}

/// Content hash of a set of sources (see the module doc), using and updating `cache`.
/// With `xattrs` (`--xattrs`: COPY keeps them), every file's and directory's `user.*`
/// extended attributes are hashed too; without it the hash is as if there were none.
pub fn hash_sources(
    sources: &[Source],
    ignore: &Ignore,
    cache: &mut StatCache,
    xattrs: bool,
) -> Result<[u8; 32], ContextError> {
    hash_sources_with(sources, ignore, cache, xattrs, None)
}

/// [`hash_sources`], and with `manifest` each entry's relative path and the blake3 hash of
/// the bytes it adds to the whole (type, mode, times, link target, attributes, content):
/// what `--explain` compares (docs/cache-keys.md, "Key-input records"). The whole hash is
/// the same either way.
pub fn hash_sources_with(
    sources: &[Source],
    ignore: &Ignore,
    cache: &mut StatCache,
    xattrs: bool,
    manifest: Option<&mut Vec<(Vec<u8>, [u8; 32])>>,
) -> Result<[u8; 32], ContextError> {
    hash_sources_listing(
        sources,
        ignore,
        cache,
        xattrs,
        manifest,
        None,
        &|_| false,
        None,
    )
}

/// A regular file of a source set: its relative path, its path on disk and its metadata
/// as the walk found them.
pub type RegularFile = (Vec<u8>, PathBuf, fs::Metadata);

/// [`hash_sources_with`], and with `files` the regular files walked, in walk order (what a
/// build's provenance records digests of, without walking again). A directory source for
/// which `bare_top` is true adds only its name, its type and (with `xattrs`) its extended
/// attributes, not its mode and time: its contents go into a directory the image already
/// has, which keeps its own mode and time (docs/cache-keys.md, `copy-dir-top`), so the
/// context directory's time, which every file added at its top changes, is no key input
/// of `COPY . /app/` then. With `clamp` (the build's `SOURCE_DATE_EPOCH`, which the
/// commit clamps every time to), a time later than it is hashed as `clamp` seconds: what
/// the copy's result holds, so that a checkout made later (another CI runner's clone)
/// gives the same key.
#[allow(clippy::too_many_arguments)]
pub fn hash_sources_listing(
    sources: &[Source],
    ignore: &Ignore,
    cache: &mut StatCache,
    xattrs: bool,
    mut manifest: Option<&mut Vec<(Vec<u8>, [u8; 32])>>,
    files: Option<&mut Vec<RegularFile>>,
    bare_top: &dyn Fn(&Source) -> bool,
    clamp: Option<i64>,
) -> Result<[u8; 32], ContextError> {
    // Gather entries first (sequential walk), hash files in parallel, then fold in order.
    let mut entries: Vec<(Vec<u8>, PathBuf, fs::Metadata)> = Vec::new();
    // Indices of the entries that are bare tops.
    let mut bare = std::collections::HashSet::new();
    for s in sources {
        let md = fs::metadata(&s.real).at("stat", &s.real)?;
        if md.is_dir() && bare_top(s) {
            bare.insert(entries.len());
        }
        entries.push((s.rel_bytes.clone(), s.real.clone(), md.clone()));
        if md.is_dir() {
            walk_sorted(&s.real, &s.rel_bytes, ignore, &mut entries)?;
        }
    }
    let hashes: Vec<Option<[u8; 32]>> = entries
        .par_iter()
        .map(|(_, p, md)| -> Result<Option<[u8; 32]>, ContextError> {
            if !md.is_file() {
                return Ok(None);
            }
            if let Some(h) = cache.lookup(p, md) {
                return Ok(Some(h));
            }
            Ok(Some(hash_file(p).at("read", p)?))
        })
        .collect::<Result<_, _>>()?;
    let mut whole = blake3::Hasher::new();
    for (i, ((rel, p, md), fh)) in entries.iter().zip(hashes).enumerate() {
        // Per entry too only when a manifest is asked for (a miss).
        let mut h = Tee {
            whole: &mut whole,
            one: manifest.as_ref().map(|_| blake3::Hasher::new()),
        };
        // Names as bytes: two non-UTF-8 names must not hash alike.
        h.update(&(rel.len() as u64).to_le_bytes());
        h.update(rel);
        let ft = md.file_type();
        let kind: u8 = if ft.is_dir() {
            b'd'
        } else if ft.is_symlink() {
            b'l'
        } else if ft.is_file() {
            b'f'
        } else {
            b'o'
        };
        h.update(&[kind]);
        if !bare.contains(&i) {
            let (sec, nsec) = entry_time(md, clamp);
            h.update(&(md.mode() & 0o7777).to_le_bytes());
            h.update(&sec.to_le_bytes());
            h.update(&nsec.to_le_bytes());
        }
        if ft.is_symlink() {
            let t = fs::read_link(p).at("read symlink", p)?;
            h.update(&(t.as_os_str().len() as u64).to_le_bytes());
            h.update(t.as_os_str().as_bytes());
        }
        if xattrs && (ft.is_file() || ft.is_dir()) {
            let x = crate::store::model::read_xattrs(p);
            h.update(&(x.len() as u64).to_le_bytes());
            for (n, v) in &x {
                h.update(&(n.len() as u64).to_le_bytes());
                h.update(n);
                h.update(&(v.len() as u64).to_le_bytes());
                h.update(v);
            }
        }
        if let Some(fh) = fh {
            h.update(&fh);
            if cache.lookup(p, md) != Some(fh) {
                cache.entries.insert(
                    p.clone(),
                    (md.ino(), md.len(), mtime_ns(md), ctime_ns(md), fh),
                );
                cache.changed.push(p.clone());
            }
        }
        if let (Some(one), Some(m)) = (h.one, manifest.as_deref_mut()) {
            m.push((rel.clone(), *one.finalize().as_bytes()));
        }
    }
    if let Some(files) = files {
        files.extend(entries.into_iter().filter(|(_, _, md)| md.is_file()));
    }
    Ok(*whole.finalize().as_bytes())
}

/// The modification time an entry's hash holds: seconds and nanoseconds, or, later than
/// `clamp` seconds, `clamp` seconds (what the commit makes of it).
pub fn entry_time(md: &fs::Metadata, clamp: Option<i64>) -> (i64, u32) {
    match clamp {
        Some(max) if md.mtime() > max => (max, 0),
        _ => (md.mtime(), md.mtime_nsec() as u32),
    }
}

/// Bytes into the whole hash and, for a manifest, into one entry's hash.
struct Tee<'a> {
    whole: &'a mut blake3::Hasher,
    one: Option<blake3::Hasher>,
}

impl Tee<'_> {
    fn update(&mut self, b: &[u8]) {
        self.whole.update(b);
        if let Some(o) = &mut self.one {
            o.update(b);
        }
    }
}

fn walk_sorted(
    dir: &Path,
    rel: &[u8],
    ignore: &Ignore,
    out: &mut Vec<(Vec<u8>, PathBuf, fs::Metadata)>,
) -> Result<(), ContextError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .at("read directory", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .at("read directory", dir)?;
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(n.as_bytes());
        let rs = String::from_utf8_lossy(&r);
        if ignore.excluded(&rs) {
            // An excluded directory is still walked for what a `!` rule re-includes; if
            // something is, the copy makes the directory with its mode and time, so the
            // directory's own entry is part of the key too.
            if ignore.may_reinclude_below(&rs) {
                if let Some(md) = fs::symlink_metadata(&p).ok().filter(|m| m.is_dir()) {
                    let mut below = Vec::new();
                    walk_sorted(&p, &r, ignore, &mut below)?;
                    if !below.is_empty() {
                        out.push((r.clone(), p.clone(), md));
                        out.append(&mut below);
                    }
                }
            }
            continue;
        }
        let md = fs::symlink_metadata(&p).at("stat", &p)?;
        let is_dir = md.is_dir();
        out.push((r.clone(), p.clone(), md));
        if is_dir {
            walk_sorted(&p, &r, ignore, out)?;
        }
    }
    Ok(())
}

/// A file's content digests as provenance names them: sha256 and the git blob id (SHA-1,
/// `blob LEN\0` and the bytes: what `git hash-object` gives, and the id the file's blob
/// has in the store). Read once, in pieces.
pub fn file_digests(p: &Path) -> io::Result<([u8; 32], gix::ObjectId)> {
    use sha2::Digest as _;
    let mut f = fs::File::open(p)?;
    let len = f.metadata()?.len();
    let mut sha = sha2::Sha256::new();
    let mut git = gix::hash::hasher(gix::hash::Kind::Sha1);
    git.update(format!("blob {len}\0").as_bytes());
    // A big file's two digests are computed side by side (on two threads): 50 MB took
    // 60 ms for both in one thread here.
    let big = len >= 4 << 20;
    let mut buf = vec![0u8; if big { 1 << 20 } else { 1 << 16 }];
    let mut seen = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        seen += n as u64;
        let b = &buf[..n];
        if big {
            rayon::join(|| sha.update(b), || git.update(b));
        } else {
            sha.update(b);
            git.update(b);
        }
    }
    if seen != len {
        return Err(io::Error::other(format!(
            "file changed size while read ({len} bytes, then {seen})"
        )));
    }
    let blob = git
        .try_finalize()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(sha.finalize().as_slice());
    Ok((out, blob))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_digests_are_sha256_and_the_git_blob_id() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("hello");
        fs::write(&p, b"Hello").expect("write");
        let (sha, blob) = file_digests(&p).expect("digests");
        // The in-toto DigestSet spec's example: `printf Hello | git hash-object --stdin`.
        assert_eq!(blob.to_string(), "5ab2f8a4323abafb10abb68657d9d39f1a775057");
        let mut text = Vec::new();
        push_hex(&mut text, &sha);
        assert_eq!(
            text,
            b"185f8db32271fe25f561a6fc938b2e264306ec304eda518007d1764826381969"
        );
    }

    #[test]
    fn big_file_digests_computed_side_by_side_equal_the_one_pass_ones() {
        use sha2::Digest as _;
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("big");
        // Over the 4 MiB mark, and not a whole number of 1 MiB reads.
        let data: Vec<u8> = (0..(5 << 20) + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        fs::write(&p, &data).expect("write");
        let (sha, blob) = file_digests(&p).expect("digests");
        assert_eq!(sha.as_slice(), sha2::Sha256::digest(&data).as_slice());
        let want =
            gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data).unwrap();
        assert_eq!(blob, want);
    }

    #[test]
    fn dockerignore_last_match_wins_and_parents_exclude() {
        let ig = Ignore::parse("# comment\n*.log\n!keep.log\nbuild\n**/tmp\n");
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("keep.log"));
        assert!(ig.excluded("build/x/y"));
        assert!(ig.excluded("deep/er/tmp/z"));
        assert!(!ig.excluded("src/main.rs"));
    }

    #[test]
    fn dockerignore_byte_order_mark_and_crlf_are_not_part_of_patterns() {
        let ig = Ignore::parse("\u{feff}first\r\n*.log\r\n");
        assert!(ig.excluded("first"));
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("keep"));
    }

    #[test]
    fn non_utf8_names_hash_as_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let hash_with = |last: u8| {
            let name = [b'a', last];
            let d = dir.path().join(format!("d{last}"));
            fs::create_dir(&d).unwrap();
            fs::write(d.join(std::ffi::OsStr::from_bytes(&name)), b"x").unwrap();
            let src = vec![Source {
                rel: String::new(),
                rel_bytes: Vec::new(),
                real: d,
            }];
            hash_sources(&src, &Ignore::default(), &mut StatCache::default(), false).unwrap()
        };
        assert_ne!(hash_with(0xff), hash_with(0xfe));
    }

    #[test]
    fn excluded_directories_are_walked_only_for_what_a_negation_may_reinclude() {
        let ig = Ignore::parse("docs/\n!docs/keep.md\nbuild\n!**/*.keep\nvendor\n");
        assert!(ig.excluded("docs"));
        assert!(!ig.excluded("docs/keep.md"));
        assert!(ig.may_reinclude_below("docs"));
        let only_docs = Ignore::parse("docs/\n!docs/keep.md\n");
        assert!(only_docs.may_reinclude_below("docs"));
        assert!(!only_docs.may_reinclude_below("docs/sub"));
        // `!**/*.keep` may match below any directory.
        assert!(ig.may_reinclude_below("build"));
        assert!(!ig.excluded("build/x/a.keep"));
        let ig = Ignore::parse("vendor\n!src/*.c\n");
        assert!(!ig.may_reinclude_below("vendor"));
        assert!(ig.may_reinclude_below("src"));
        assert!(!Ignore::parse("vendor\n").may_reinclude_below("vendor"));
    }

    /// Docker's reader (moby `ignorefile.ReadAll`, then `patternmatcher.New`).
    #[test]
    fn dockerignore_lines_are_read_as_dockers_reader_reads_them() {
        // Only `#` in the first column starts a comment; other lines are trimmed.
        let ig = Ignore::parse("  # note\n#real\n\t a.log \r\n");
        assert!(ig.excluded("# note"));
        assert!(!ig.excluded("#real") && !ig.excluded("real"));
        assert!(ig.excluded("a.log"));
        // A byte order mark before a comment: still a comment.
        assert!(Ignore::parse("\u{feff}#x\n").is_empty());
        assert!(Ignore::parse("\u{feff} #x\n").excluded("#x"));
        // `!` then blanks then the pattern.
        let ig = Ignore::parse("*.log\n!  keep.log\n");
        assert!(ig.excluded("a.log") && !ig.excluded("keep.log"));
        // `/`, `.` and patterns climbing out of the context match nothing; a leading `/`
        // (even `/..`) is the context.
        for none in [
            "/\n",
            ".\n",
            "./\n",
            "../f\n",
            "a/../../f\n",
            "!.\n",
            "!..\n",
        ] {
            let ig = Ignore::parse(none);
            assert!(!ig.excluded("f") && !ig.excluded("a/f"), "{none:?}");
        }
        assert!(Ignore::parse("/../f\n").excluded("f"));
        assert!(Ignore::parse("a/../f\n").excluded("f"));
        // A `!` with no pattern is refused, naming its line.
        for bare in ["!", "! ", "!/", "! //", "!/a/../.."] {
            let (line, msg) = Ignore::parse_bytes(format!("x\n{bare}\n").as_bytes()).unwrap_err();
            assert_eq!(line, 2, "{bare:?}");
            assert!(msg.starts_with("illegal exclusion pattern"), "{msg}");
        }
    }
    #[test]
    fn double_star_within_a_component_follows_dockers_patternmatcher() {
        // Worked out from moby/patternmatcher `Pattern.compile` and `match`: `**` is
        // `(.*/)?` (`.*` at the end after a wildcard), `**/` eats its slash, a literal
        // then a final `**` is a prefix test, and a leading `**` then a literal a suffix
        // test; the path or one of its parents must match.
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "a**b",
                &["ab", "a/x/b", "ax/b", "a/b", "ab/c"],
                &["axb", "a/xb", "a"],
            ),
            (
                "**.log",
                &["a.log", "x/y.log", ".log", "a.log/z"],
                &["a.logx", "log"],
            ),
            ("**foo", &["foo", "xfoo", "a/bfoo"], &["foox", "fo"]),
            ("**/a", &["a", "x/a", "x/y/a/z"], &["xa", "ab"]),
            ("**", &["a", "a/b", ".x"], &[]),
            (
                "x/**y",
                &["x/y", "x/a/b/y", "x/y/z"],
                &["x/ay", "xy", "x/a/by"],
            ),
            ("x/**", &["x/a", "x/a/b"], &["x", "xa"]),
            ("x**", &["x", "xa", "x/b"], &["ax"]),
            ("a/**/b", &["a/b", "a/x/y/b"], &["ab", "a/xb"]),
            ("*.c**", &["a.c", "a.cx", "b.c/z"], &["a/b.c", "a.x"]),
            ("**a*", &["a", "x/ab", "ab"], &["ba", "b"]),
            ("**a**", &["a", "ab", "x/a/y", "x/ab"], &["b", "ba", "ba/x"]),
            ("a\\**", &["a*", "a*bc"], &["ab", "a"]),
            ("a[^x]b", &["ayb", "a/b"], &["axb", "ab"]),
            ("a**z", &["az", "a/b/z"], &["a\n/z", "abz"]),
            ("**/z", &["a\nb/z", "z"], &["az"]),
            ("!x", &[], &[]),
        ];
        for (pat, yes, no) in cases {
            let ig = Ignore::parse(&format!("{pat}\n"));
            for p in *yes {
                assert!(ig.excluded(p), "{pat:?} should exclude {p:?}");
            }
            for p in *no {
                assert!(!ig.excluded(p), "{pat:?} should not exclude {p:?}");
            }
        }
        // Re-inclusion below an excluded directory is looked for through `**` too.
        let ig = Ignore::parse("d\n!d/**.keep\n!e**/x\n");
        assert!(ig.may_reinclude_below("d"));
        assert!(ig.may_reinclude_below("e/f"));
        assert!(!ig.may_reinclude_below("f"));
        assert!(!ig.excluded("d/a/.keep") && ig.excluded("d/a/b.keep"));
    }

    #[test]
    fn ignore_file_errors_name_the_line() {
        assert_eq!(
            Ignore::parse_bytes(b"ok\n# caf\xe9\n").unwrap_err(),
            (2, "not valid UTF-8 (byte 0xe9 at column 6)".to_string())
        );
        assert!(Ignore::parse_bytes(b"*.log\n").unwrap().excluded("a.log"));
        // A component Go's syntax refuses (crate::glob has the cases).
        let (line, msg) = Ignore::parse_bytes(b"ok\nsrc/[z-a]\n").unwrap_err();
        assert_eq!(line, 2);
        assert_eq!(msg, "syntax error in pattern \"[z-a]\"");
        assert!(Ignore::patterns(["["]).is_err());
    }

    #[test]
    fn stat_cache_numbers_and_digests_parse_strictly() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(
            parse_i64(b"-1700000000123456789"),
            Some(-1_700_000_000_123_456_789)
        );
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b"1a",
            b" 1",
            b"9223372036854775808",
            b"1.5",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
        // Inode numbers of 2^63 and above (some FUSE, NFS and overlay file systems).
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"9223372036854775808"), Some(1 << 63));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        let h = "00ff10Ab".repeat(8);
        let mut want = [0u8; 32];
        for (i, w) in want.iter_mut().enumerate() {
            *w = [0x00, 0xff, 0x10, 0xab][i % 4];
        }
        assert_eq!(hex32(h.as_bytes()), Some(want));
        assert_eq!(hex32(&h.as_bytes()[1..]), None);
        assert_eq!(hex32("g".repeat(64).as_bytes()), None);
    }

    #[test]
    fn stat_cache_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"hello").unwrap();
        let mut c = StatCache::default();
        let src = vec![Source {
            rel: "f".into(),
            rel_bytes: b"f".to_vec(),
            real: f.clone(),
        }];
        let h1 = hash_sources(&src, &Ignore::default(), &mut c, false).unwrap();
        let cp = dir.path().join("cache");
        c.save(&cp).unwrap();
        let mut c2 = StatCache::load(&cp);
        assert_eq!(c2.entries.len(), 1);
        assert_eq!(
            hash_sources(&src, &Ignore::default(), &mut c2, false).unwrap(),
            h1
        );
    }

    #[test]
    fn stat_cache_appends_what_changed_and_rewrites_when_the_file_grows_past_twice_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        for i in 0..100 {
            fs::write(ctx.join(format!("f{i}")), format!("{i}")).unwrap();
        }
        let src = vec![Source {
            rel: "ctx".into(),
            rel_bytes: b"ctx".to_vec(),
            real: ctx.clone(),
        }];
        let cp = dir.path().join("cache");
        let hash = |c: &mut StatCache| hash_sources(&src, &Ignore::default(), c, false).unwrap();
        let mut c = StatCache::load(&cp);
        let h0 = hash(&mut c);
        c.save(&cp).unwrap();
        let whole = fs::read(&cp).unwrap();
        assert_eq!(
            whole
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count(),
            101
        );
        // Nothing changed: the file is not touched.
        let mut c = StatCache::load(&cp);
        assert_eq!(hash(&mut c), h0);
        c.save(&cp).unwrap();
        assert_eq!(fs::read(&cp).unwrap(), whole);
        // One file changed: one line appended (after a newline), the rest kept as it was.
        fs::write(ctx.join("f7"), b"changed").unwrap();
        let mut c = StatCache::load(&cp);
        let h1 = hash(&mut c);
        assert_ne!(h1, h0);
        c.save(&cp).unwrap();
        let after = fs::read(&cp).unwrap();
        assert!(after.starts_with(&whole));
        let tail = &after[whole.len()..];
        assert!(
            tail.starts_with(b"\n") && tail.ends_with(b"/f7\n"),
            "{tail:?}"
        );
        assert_eq!(tail.iter().filter(|b| **b == b'\n').count(), 2);
        // The later line wins: the changed file is not read again.
        let mut c = StatCache::load(&cp);
        assert_eq!(hash(&mut c), h1);
        assert!(c.changed.is_empty());
        // A torn last line (a writer killed mid-append) is skipped, and the next append
        // starts on a line of its own.
        let mut torn = after.clone();
        torn.extend_from_slice(b"123 5 1 1 00ab");
        fs::write(&cp, &torn).unwrap();
        fs::write(ctx.join("f8"), b"changed too").unwrap();
        let mut c = StatCache::load(&cp);
        let h2 = hash(&mut c);
        c.save(&cp).unwrap();
        let mut c = StatCache::load(&cp);
        assert_eq!(hash(&mut c), h2);
        assert!(c.changed.is_empty(), "{:?}", c.changed);
        // Appends stop once the file would hold more than twice its content (plus 64
        // lines): then it is rewritten whole, one line per path again.
        for round in 0..200 {
            fs::write(
                ctx.join(format!("f{}", round % 100)),
                format!("round {round}"),
            )
            .unwrap();
            let mut c = StatCache::load(&cp);
            hash(&mut c);
            c.save(&cp).unwrap();
        }
        let text = fs::read(&cp).unwrap();
        let lines = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        assert!(lines <= 2 * 100 + 64 + 2, "{lines} lines");
        let mut c = StatCache::load(&cp);
        let h3 = hash(&mut c);
        assert!(c.changed.is_empty());
        assert_eq!(h3, hash(&mut StatCache::default()));
    }

    #[test]
    fn stat_cache_keeps_provenance_digests_and_reads_version_1() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"Hello").unwrap();
        let src = vec![Source {
            rel: "f".into(),
            rel_bytes: b"f".to_vec(),
            real: f.clone(),
        }];
        let mut c = StatCache::default();
        let mut found = Vec::new();
        hash_sources_listing(
            &src,
            &Ignore::default(),
            &mut c,
            false,
            None,
            Some(&mut found),
            &|_| false,
            None,
        )
        .unwrap();
        assert_eq!(found.len(), 1);
        let (_, real, md) = &found[0];
        assert!(c.cached_digests(real, md).is_none());
        let (sha, blob) = file_digests(real).unwrap();
        c.remember_digests(real, md, sha, blob);
        let cp = dir.path().join("cache");
        c.save(&cp).unwrap();
        let text = fs::read_to_string(&cp).unwrap();
        assert!(text.starts_with("grove-statcache 2\n"), "{text}");
        let c2 = StatCache::load(&cp);
        assert_eq!(c2.cached_digests(real, md), Some((sha, blob)));
        // A changed file is not answered from the cache.
        fs::write(&f, b"Hellp").unwrap();
        let md2 = fs::metadata(&f).unwrap();
        assert!(c2.cached_digests(&f, &md2).is_none());
        // A version-1 cache (no digests) is still read.
        let v1 = text
            .replace("grove-statcache 2", "grove-statcache 1")
            .lines()
            .filter(|l| !l.starts_with("D "))
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(&cp, v1).unwrap();
        let c3 = StatCache::load(&cp);
        assert_eq!(c3.entries.len(), 1);
        assert!(c3.digests.is_empty());
    }

    #[test]
    fn content_change_with_mtime_reset_changes_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"aaaa").unwrap();
        let mtime = fs::metadata(&f).unwrap().modified().unwrap();
        let mut c = StatCache::default();
        let src = vec![Source {
            rel: "f".into(),
            rel_bytes: b"f".to_vec(),
            real: f.clone(),
        }];
        let h1 = hash_sources(&src, &Ignore::default(), &mut c, false).unwrap();
        fs::write(&f, b"bbbb").unwrap();
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_ne!(
            hash_sources(&src, &Ignore::default(), &mut c, false).unwrap(),
            h1
        );
    }

    #[test]
    fn sources_outside_the_context_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        std::os::unix::fs::symlink("/etc", ctx.join("out")).unwrap();
        assert!(matches!(
            expand(&ctx, "out", &Ignore::default()),
            Err(ContextError::Outside(_))
        ));
        // `..` above the context is refused, even when the clamped path exists.
        fs::write(ctx.join("x"), b"").unwrap();
        for arg in ["../x", "/../x", "a/../../x"] {
            assert!(
                matches!(
                    expand(&ctx, arg, &Ignore::default()),
                    Err(ContextError::Outside(_))
                ),
                "{arg}"
            );
        }
        assert_eq!(
            expand(&ctx, "out/../x", &Ignore::default()).unwrap()[0].rel,
            "x"
        );
        fs::write(ctx.join("a.txt"), b"").unwrap();
        fs::write(ctx.join("b.txt"), b"").unwrap();
        let got = expand(&ctx, "/*.txt", &Ignore::default()).unwrap();
        assert_eq!(
            got.iter().map(|s| s.rel.as_str()).collect::<Vec<_>>(),
            ["a.txt", "b.txt"]
        );
    }
}
