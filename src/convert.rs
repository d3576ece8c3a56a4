//! `ch-convert`: format inference (pure, unit-tested) and the conversion itself
//! ([`convert`]): read the input into a store's object database as a model (no ref),
//! then write it out in the output format. The binary only parses arguments, resolves
//! settings and reports errors.
//!
//! Only a conversion whose input or output is the `ch-image` format touches the storage
//! directory ([`Request::touches_store`]); any other reads its input into a store of its
//! own in a temporary directory ([`TempDir`]: `--tmp`, `$TMPDIR` or `/var/tmp`), so a
//! read-only, absent or unknown storage directory does not matter to it. The temporary
//! directory holds a lock while it lives; those of killed conversions (their lock free)
//! are removed by the next one ([`remove_dead_temp_dirs`]).
//!
//! Outputs to a path are written beside it (`.NAME.ch-convert.PID`) and renamed into
//! place, so a failed conversion leaves no partial output; an error in writing names the
//! output, then that staging path. An existing output is replaced (as Charliecloud's)
//! unless `--no-clobber`, a directory only if it looks like an image. SIGINT and SIGTERM
//! end a conversion through that same path ([`crate::interrupt`]), passed on to the
//! process group of a tool it waits for (`docker save`, `unsquashfs`). What a killed
//! (kill -9) conversion left beside the output (its process gone, unchanged for ten
//! minutes) is removed by the next conversion to the same output. Docker and Podman go
//! through their commands (`save`, `import`); image names handed to them never start
//! with `-`.

use crate::error::{IoError, IoResultExt};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::reference::{Reference, ReferenceError};
use crate::store::export::{self, ExportError, SquashComp};
use crate::store::layout::StorageDirError;
use crate::store::model::XattrPolicy;
use crate::store::{checkout, git, import, oci, Dir, ImageConfig, Store, StoreError};
use crate::{info, warn};

/// Image formats ch-convert knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    ChImage,
    Dir,
    Tar,
    Squash,
    /// An OCI image layout: a directory, or a tar of one (oci-archive) when the path
    /// ends in `.tar`.
    Oci,
    /// An image in Docker's storage, through the `docker` command.
    Docker,
    /// An image in Podman's storage, through the `podman` command.
    Podman,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "ch-image" => Format::ChImage,
            "dir" => Format::Dir,
            "tar" => Format::Tar,
            "squash" => Format::Squash,
            "oci" => Format::Oci,
            "docker" => Format::Docker,
            "podman" => Format::Podman,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::ChImage => "ch-image",
            Format::Dir => "dir",
            Format::Tar => "tar",
            Format::Squash => "squash",
            Format::Oci => "oci",
            Format::Docker => "docker",
            Format::Podman => "podman",
        }
    }

    /// The external command a format goes through, if any.
    pub fn tool(self) -> Option<&'static str> {
        match self {
            Format::Docker => Some("docker"),
            Format::Podman => Some("podman"),
            _ => None,
        }
    }

    /// Whether the format names an image in some storage rather than a path.
    pub fn is_named(self) -> bool {
        matches!(self, Format::ChImage | Format::Docker | Format::Podman)
    }
}

/// Whether an OCI path is the archive form (a tar of the layout).
pub fn oci_is_archive(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".tar")
}

/// Infer a format from an argument as Charliecloud does: SquashFS and tar by extension,
/// a directory if the argument is a path (starts with `/`, `./` or `../`), else an image
/// name in the store, even if a directory of that name exists in the working directory
/// (Charliecloud infers "against filenames, rather than file contents": the tutorial's
/// `ch-convert hello /var/tmp/hello.sqfs`, run beside a context directory `hello`, means
/// the image). An existing directory holding an `oci-layout` file is an OCI layout. Docker
/// and Podman are never inferred (their names look like store names), nor is the archive
/// form of OCI (it looks like a tarball).
pub fn infer(arg: &str) -> Format {
    if Path::new(arg).join("oci-layout").is_file() {
        return Format::Oci;
    }
    let lower = arg.to_ascii_lowercase();
    let ext = |e: &str| lower.ends_with(e);
    if ext(".sqfs") || ext(".squash") || ext(".squashfs") {
        return Format::Squash;
    }
    let tar_like = ext(".tar")
        || ext(".tgz")
        || ext(".txz")
        || ext(".tzst")
        || ext(".tbz2")
        || ext(".tbz")
        || tar_suffix(arg).is_some();
    if tar_like {
        return Format::Tar;
    }
    if arg.starts_with('/') || arg.starts_with("./") || arg.starts_with("../") {
        return Format::Dir;
    }
    Format::ChImage
}

/// Compression of a tar output, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

pub fn tar_compression(path: &str) -> TarCompression {
    let l = path.to_ascii_lowercase();
    if l.ends_with(".gz") || l.ends_with(".tgz") {
        TarCompression::Gzip
    } else if l.ends_with(".zst") || l.ends_with(".tzst") {
        TarCompression::Zstd
    } else if l.ends_with(".xz") || l.ends_with(".txz") {
        TarCompression::Xz
    } else if l.ends_with(".bz2") || l.ends_with(".tbz2") || l.ends_with(".tbz") {
        TarCompression::Bzip2
    } else {
        TarCompression::None
    }
}

/// The `SUFFIX` of a file named `NAME.tar.SUFFIX` (one to four characters, after the
/// name's last `.tar.`, any case), which [`infer`] takes for a tarball.
fn tar_suffix(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let i = name.to_ascii_lowercase().rfind(".tar.")?;
    let suffix = &name[i + 5..];
    (!suffix.is_empty() && suffix.len() <= 4).then_some(suffix)
}

/// The suffix of a tar output named `NAME.tar.SUFFIX` ([`tar_suffix`], without a dot)
/// whose compression Grove does not write (`x.tar.lz4`): written as a plain tar, the name
/// would lie about the content.
fn unknown_tar_suffix(path: &str) -> Option<&str> {
    tar_suffix(path).filter(|s| !s.contains('.') && tar_compression(path) == TarCompression::None)
}

/// What `ch-convert` was asked to do, with its settings resolved.
#[derive(Debug, Clone)]
pub struct Request {
    pub input: String,
    pub output: String,
    /// `-i FMT`; inferred from the input if `None`.
    pub in_fmt: Option<String>,
    /// `-o FMT`; inferred from the output if `None`.
    pub out_fmt: Option<String>,
    /// `--no-clobber`: refuse an existing output, in Charliecloud's words ("not deleting
    /// per --no-clobber"); else it is replaced, as by Charliecloud.
    pub no_clobber: bool,
    /// `--compression ALG[:LEVEL]` (squash output only).
    pub compression: Option<String>,
    /// Print what would be done, do nothing.
    pub dry_run: bool,
    pub xattrs: XattrPolicy,
    /// The storage directory (for the `ch-image` format only), or why it can't be found;
    /// reported only when the conversion reads or writes the store
    /// ([`Request::touches_store`]; not for a dry run).
    pub storage: Result<PathBuf, StorageDirError>,
    /// `--tmp DIR`: where a conversion that does not touch the store keeps its
    /// temporary directory ([`TempDir`]); `None`: `$TMPDIR`, else `/var/tmp`, as
    /// Charliecloud's ch-convert.
    pub tmp: Option<PathBuf>,
}

impl Request {
    /// Whether the conversion reads or writes the storage directory: its input or its
    /// output is the `ch-image` format. Every other conversion (a directory to a
    /// tarball, SquashFS to a directory, ...) leaves the store alone, as Charliecloud's:
    /// it may be read-only, absent or impossible to find. An unknown format touches
    /// nothing (the conversion fails before).
    pub fn touches_store(&self) -> bool {
        [(&self.in_fmt, &self.input), (&self.out_fmt, &self.output)]
            .iter()
            .any(|(f, a)| matches!(fmt_arg(f, a), Ok(Format::ChImage)))
    }

    /// The directory [`TempDir`] is made in: `--tmp`, else `$TMPDIR` (if set and not
    /// empty), else `/var/tmp`.
    fn tmp_base(&self) -> PathBuf {
        self.tmp
            .clone()
            .or_else(|| {
                std::env::var_os("TMPDIR")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("/var/tmp"))
    }
}

/// The temporary directory of a conversion that does not touch the store:
/// `ch-convert.PID` (`.N` appended if that exists) under [`Request::tmp_base`], mode
/// 0700. It holds a store of its own (`store`), into whose objects the input is read (as
/// the store's objects hold an import's), and the input's scratch (`in`: a SquashFS
/// extracted by `unsquashfs`, an OCI archive unpacked, a `docker save`). Removed when
/// dropped, after a failure or a signal too.
///
/// It also holds `lock` ([`TEMP_LOCK`]), flock(2)ed exclusively from before it has that
/// name until the directory is removed: one that a conversion killed by kill -9 left
/// has its lock free, and the next conversion that makes a temporary directory there
/// removes it ([`remove_dead_temp_dirs`]). Locked, it is never touched, and neither is
/// anything without such a lock (Charliecloud's `ch-convert.XXXXXX`, another user's, one
/// of another host on a shared file system, an earlier Grove's).
struct TempDir {
    path: PathBuf,
    /// The flock of `path/lock`, released after the directory is removed (`None` where
    /// the file system does not lock: nothing removes the directory then but its owner).
    _lock: Option<nix::fcntl::Flock<fs::File>>,
}

/// The name of a temporary directory's lock file, and the first word of its one line:
/// `grove-ch-convert-lock 1 HOST PID` (format version, then the host and process that
/// made it; the host, so that a directory of another host on a shared file system is
/// left alone whatever flock says there).
const TEMP_LOCK: &str = "lock";
const TEMP_LOCK_MAGIC: &str = "grove-ch-convert-lock";

/// The host name, as the lock's line holds it (`?` if unknown).
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "?".into())
}

/// The line of a temporary directory's lock file, made by process `pid` on `host`.
fn temp_lock_line(host: &str, pid: u32) -> String {
    format!("{TEMP_LOCK_MAGIC} 1 {host} {pid}\n")
}

/// Whether `name` is a temporary directory's: `ch-convert.PID` or `ch-convert.PID.N`
/// (decimal numbers). Pure.
fn temp_dir_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix("ch-convert.").is_some_and(|rest| {
        let (pid, n) = rest.split_once('.').unwrap_or((rest, "0"));
        digits(pid) && digits(n)
    })
}

/// Whether a lock file's `line` says it was made on `host` by this format. Pure.
fn temp_lock_of(line: &str, host: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().collect();
    matches!(w.as_slice(), [TEMP_LOCK_MAGIC, "1", h, pid] if *h == host && pid.parse::<u32>().is_ok())
}

/// Remove the temporary directories under `base` of conversions that died (kill -9, a
/// crash, the node's power): named as [`temp_dir_name`] says, a directory (not a
/// symlink) of this user, holding a `lock` file of this host ([`temp_lock_of`]) that
/// can be flock(2)ed at once (its holder is gone: the lock of a live conversion is held
/// until its directory is removed). Each is removed holding that lock. Best effort:
/// what can't be read or removed stays, and so does everything else.
fn remove_dead_temp_dirs(base: &Path) {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = fs::read_dir(base) else { return };
    let uid = nix::unistd::geteuid().as_raw();
    let host = host_name();
    for e in rd.flatten() {
        if !temp_dir_name(&e.file_name().to_string_lossy()) {
            continue;
        }
        let dir = e.path();
        let Ok(md) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !md.is_dir() || md.uid() != uid {
            continue;
        }
        let lock_path = dir.join(TEMP_LOCK);
        // Not following a symlink: the lock is a file the conversion made.
        if !fs::symlink_metadata(&lock_path).is_ok_and(|m| m.is_file()) {
            if unborn_temp_dir(&dir, &md) {
                crate::verbose!(
                    "removing the temporary directory of a conversion that ended before it was locked: {}",
                    dir.display()
                );
                let _ = fs::remove_file(dir.join(format!("{TEMP_LOCK}.new")));
                let _ = fs::remove_dir(&dir);
            }
            continue;
        }
        let Ok(mut f) = fs::File::open(&lock_path) else {
            continue;
        };
        let mut line = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(&mut f, 256), &mut line);
        if !temp_lock_of(&line, &host) {
            continue;
        }
        let Ok(held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        crate::verbose!(
            "removing the temporary directory of a conversion that ended without removing it: {}",
            dir.display()
        );
        let _ = checkout::remove_tree(&dir);
        drop(held);
    }
}

/// How long a temporary directory may stay without its `lock` before it counts as left
/// by a conversion killed between making it and locking it (a few system calls: a live
/// conversion is never in that state for more than moments).
const UNBORN_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether `dir` (of this user, named as [`temp_dir_name`] says, `md` its metadata) is a
/// temporary directory whose conversion died before locking it: it holds nothing but,
/// perhaps, a `lock.new` file of this user that no one holds a lock on, and neither has
/// changed for [`UNBORN_TEMP_AGE`]. Anything else in it (Charliecloud's or another
/// user's work, a directory still being filled) keeps it.
fn unborn_temp_dir(dir: &Path, md: &fs::Metadata) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::MetadataExt;
    let old = |m: &fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= UNBORN_TEMP_AGE)
    };
    if !old(md) {
        return false;
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    let new_name = format!("{TEMP_LOCK}.new");
    for e in rd {
        let Ok(e) = e else { return false };
        if e.file_name().to_str() != Some(new_name.as_str()) {
            return false;
        }
        let Ok(m) = e.metadata() else { return false };
        if !m.is_file() || m.uid() != md.uid() || !old(&m) {
            return false;
        }
        let Ok(f) = fs::File::open(e.path()) else {
            return false;
        };
        if Flock::lock(f, FlockArg::LockExclusiveNonblock).is_err() {
            return false;
        }
    }
    true
}

impl TempDir {
    fn create(base: &Path) -> Result<TempDir, ConvertError> {
        use std::os::unix::fs::DirBuilderExt;
        remove_dead_temp_dirs(base);
        let pid = std::process::id();
        let mut n = 0;
        let path = loop {
            let path = match n {
                0 => base.join(format!("ch-convert.{pid}")),
                _ => base.join(format!("ch-convert.{pid}.{n}")),
            };
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(source) => return Err(ConvertError::TempDir { path, source }),
            }
        };
        let mut temp = TempDir { path, _lock: None };
        temp._lock = temp.lock().map_err(|source| ConvertError::TempDir {
            path: temp.path.clone(),
            source,
        })?;
        Ok(temp)
    }

    /// Make the directory's `lock`, locked: written and flock(2)ed as `lock.new`, then
    /// renamed, so that a `lock` is always held while its conversion lives. `None` if the
    /// file system does not lock (no `lock` then: nothing else removes the directory).
    fn lock(&self) -> std::io::Result<Option<nix::fcntl::Flock<fs::File>>> {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::OpenOptionsExt;
        let new = self.path.join(format!("{TEMP_LOCK}.new"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&new)?;
        f.write_all(temp_lock_line(&host_name(), std::process::id()).as_bytes())?;
        let held = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((_, errno)) => {
                crate::verbose!(
                    "can't lock {} ({errno}): a kill -9 of this conversion would leave {}",
                    new.display(),
                    self.path.display()
                );
                fs::remove_file(&new)?;
                return Ok(None);
            }
        };
        fs::rename(&new, self.path.join(TEMP_LOCK))?;
        Ok(Some(held))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // The lock (a field) is released after this: the directory is gone by then.
        let _ = checkout::remove_tree(&self.path);
    }
}

/// Errors of a conversion.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("unknown format: {0}")]
    UnknownFormat(String),
    #[error("input and output formats must be different: both {0}")]
    SameFormat(&'static str),
    #[error("format {format}: the {tool} command is not installed (not found on $PATH)")]
    NoTool {
        format: &'static str,
        tool: &'static str,
    },
    #[error("--compression applies to squash output only; tar compression follows the output's extension")]
    CompressionNotSquash,
    #[error("tar output: unknown compression .{0} (.tar, .tar.gz, .tar.zst, .tar.xz or .tar.bz2)")]
    TarSuffix(String),
    #[error("invalid compression level in {0}: want ALG:NUMBER")]
    BadLevel(String),
    #[error("unknown SquashFS compression: {0} (zstd, gzip, xz, lz4)")]
    BadCompression(String),
    #[error("exists but does not appear to be an image: {}", .0.display())]
    NotAnImage(PathBuf),
    /// A failure to write the output the user named, which is written beside it under
    /// another name first (`staged`) and renamed into place.
    #[error("can't write {} (staged as {})", .output.display(), .staged.display())]
    Output {
        output: PathBuf,
        staged: PathBuf,
        #[source]
        source: Box<ConvertError>,
    },
    #[error("temporary directory {} is inside the input {input}", .temp.display())]
    TempInInput { temp: PathBuf, input: String },
    /// The temporary directory of a conversion that does not touch the store.
    #[error("can't create temporary directory {}", .path.display())]
    TempDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bare name is an image in storage, as in Charliecloud, even where a directory of
    /// that name exists; the hint says how to name the directory.
    #[error("no image named {name} in storage")]
    NoImageButDirectory { name: String, dir: String },
    #[error("exists in ch-image storage, not deleting per --no-clobber: {0}")]
    NoClobberInStorage(String),
    #[error("exists, not deleting per --no-clobber: {}", .0.display())]
    NoClobber(PathBuf),
    #[error("image name must not start with '-' (it would be an option of {tool}): {name}")]
    DashName { tool: &'static str, name: String },
    #[error("can't run {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} save {input} failed ({status})")]
    SaveFailed {
        tool: &'static str,
        input: String,
        status: std::process::ExitStatus,
    },
    #[error("{tool} import failed ({status})")]
    ImportFailed {
        tool: &'static str,
        status: std::process::ExitStatus,
    },
    #[error("can't read {input}")]
    Read {
        input: String,
        #[source]
        source: Box<ConvertError>,
    },
    #[error("can't read {input} from {tool}")]
    ReadTool {
        input: String,
        tool: &'static str,
        #[source]
        source: Box<ConvertError>,
    },
    #[error("can't convert {input}")]
    Convert {
        input: String,
        #[source]
        source: StoreError,
    },
    #[error("can't send the image to {tool}")]
    SendTo {
        tool: &'static str,
        #[source]
        source: Box<ConvertError>,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("can't rename {} to {}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageDirError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ReadImage(#[from] crate::store::ReadError),
    #[error(transparent)]
    Git(#[from] crate::store::GitError),
    #[error(transparent)]
    Import(#[from] import::ImportError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Checkout(#[from] checkout::CheckoutError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Write(#[from] std::io::Error),
}

impl ConvertError {
    /// A hint for the user, from the error this one wraps.
    pub fn hint(&self) -> Option<String> {
        match self {
            ConvertError::Read { source, .. }
            | ConvertError::ReadTool { source, .. }
            | ConvertError::SendTo { source, .. }
            | ConvertError::Output { source, .. } => source.hint(),
            ConvertError::Convert { source, .. } | ConvertError::Store(source) => source.hint(),
            ConvertError::Export(e) => e.hint(),
            ConvertError::Oci(e) => e.hint(),
            ConvertError::Reference(e) => e.hint(),
            ConvertError::TempDir { .. } | ConvertError::TempInInput { .. } => {
                Some("give ch-convert another directory with --tmp DIR (or $TMPDIR)".into())
            }
            ConvertError::NoImageButDirectory { dir, .. } => Some(format!(
                "{dir} is a directory here, but a name without / is an image in storage (as \
                 in Charliecloud); to convert the directory, write ./{dir} or give -i dir"
            )),
            _ => None,
        }
    }

    fn read(input: &str) -> impl FnOnce(ConvertError) -> ConvertError + '_ {
        move |e| ConvertError::Read {
            input: input.to_string(),
            source: Box::new(e),
        }
    }
}

fn fmt_arg(given: &Option<String>, arg: &str) -> Result<Format, ConvertError> {
    match given {
        Some(f) => Format::parse(f).ok_or_else(|| ConvertError::UnknownFormat(f.clone())),
        None => Ok(infer(arg)),
    }
}

/// SquashFS compression and level from `--compression ALG[:LEVEL]`.
fn squash_compression(
    given: Option<&str>,
    fout: Format,
) -> Result<(SquashComp, Option<u32>), ConvertError> {
    let Some(c) = given else {
        return Ok((SquashComp::Zstd, None));
    };
    if fout != Format::Squash {
        return Err(ConvertError::CompressionNotSquash);
    }
    let (alg, level) = match c.split_once(':') {
        Some((a, l)) => (
            a,
            Some(
                l.parse::<u32>()
                    .map_err(|_| ConvertError::BadLevel(c.to_string()))?,
            ),
        ),
        None => (c, None),
    };
    let alg = SquashComp::parse(alg).ok_or_else(|| ConvertError::BadCompression(alg.into()))?;
    Ok((alg, level))
}

/// A path next to `out` for writing before the final rename.
fn staging(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.ch-convert.{}", std::process::id()))
}

/// A scratch path beside the staging path `tmp`, named after it and `what` (`in`,
/// `layout`): it keeps the PID, so conversions to the same output at once don't share
/// it. (`Path::with_extension` would replace the PID.)
fn staging_sibling(tmp: &Path, what: &str) -> PathBuf {
    let mut name = tmp.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}"));
    tmp.with_file_name(name)
}

/// The process a staging name's part after `.NAME.ch-convert.` belongs to: `PID`,
/// `PID.in` or `PID.layout` give `Some(Some(PID))`; `in` and `layout` alone (what
/// earlier versions named their scratch, with no PID) give `Some(None)`;
/// anything else `None` (not a staging name). Pure.
fn staging_owner(rest: &str) -> Option<Option<u32>> {
    let pid = rest
        .strip_suffix(".in")
        .or_else(|| rest.strip_suffix(".layout"))
        .unwrap_or(rest);
    match pid {
        "in" | "layout" => Some(None),
        _ => pid.parse::<u32>().ok().map(Some),
    }
}

/// Remove what conversions to `out` killed (kill -9) before their rename left beside it:
/// `.NAME.ch-convert.PID` (and its `.PID.in` and `.PID.layout` siblings) whose
/// process is gone and that nothing changed for ten minutes (the age keeps the output of
/// a live conversion on another host of a shared file system, whose PID means nothing
/// here). Best effort: what can't be removed stays.
fn remove_stale_staging(out: &Path) {
    const MIN_AGE_SECS: u64 = 600;
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!(".{name}.ch-convert.");
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(&prefix) else {
            continue;
        };
        let dead = match staging_owner(rest) {
            None => continue,
            Some(None) => true,
            Some(Some(p)) => !Path::new(&format!("/proc/{p}")).exists(),
        };
        let old = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a.as_secs() >= MIN_AGE_SECS);
        if dead && old {
            let _ = checkout::remove_tree(&e.path());
        }
    }
}

/// Whether `prog` is an executable on `$PATH`.
fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// An image read from the input: its files, config, tag and, for named inputs, its full
/// name.
struct Input {
    root: Dir,
    cfg: ImageConfig,
    tag: String,
    name: Option<String>,
    /// The manifest digest of an OCI layout (or Docker's or Podman's save), for the
    /// import note of a conversion into the store.
    manifest: Option<String>,
}

fn full_name(name: &str) -> Option<String> {
    Reference::parse(name)
        .ok()
        .map(|r| r.with_default_tag().to_string())
}

fn tag_of(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.with_default_tag().tag.unwrap_or_else(|| "latest".into()))
        .unwrap_or_else(|_| "latest".into())
}

/// Print an input's warnings (they quote member names of a tarball or SquashFS file, and
/// unsquashfs's or sqfs2tar's messages about them): escaped, as docs/security.md says.
fn warn_all(w: Vec<String>) {
    for w in w {
        warn!("{}", crate::log::shown(&w));
    }
}

/// Read the input image into the store's object database (no ref) as a model.
fn read_input(
    store: &Store,
    fin: Format,
    input: &str,
    scratch: &Path,
) -> Result<Input, ConvertError> {
    let ts = store.thread_safe();
    let xattrs = store.xattrs();
    let path = Path::new(input);
    let anonymous = |root, cfg| Input {
        root,
        cfg,
        tag: "latest".into(),
        name: None,
        manifest: None,
    };
    Ok(match fin {
        Format::ChImage => {
            let name = Reference::parse(input)?.with_default_tag();
            let commit = match store.require_image(&name) {
                Err(StoreError::NoImage(_)) if path.is_dir() => {
                    return Err(ConvertError::NoImageButDirectory {
                        name: name.to_string(),
                        dir: input.to_string(),
                    })
                }
                r => r?,
            };
            let (root, cfg) = git::read_image(&store.repo(), commit)?;
            Input {
                root,
                cfg,
                tag: tag_of(input),
                name: Some(name.to_string()),
                manifest: None,
            }
        }
        Format::Dir | Format::Tar => {
            let (mut root, w) = import::import_path(ts, path, xattrs)
                .map_err(ConvertError::from)
                .map_err(ConvertError::read(input))?;
            warn_all(w);
            if fin == Format::Tar {
                empty_dev(&mut root);
            }
            anonymous(root, ImageConfig::default())
        }
        Format::Squash => {
            let (root, w) = import::import_squash(ts, path, scratch)
                .map_err(ConvertError::from)
                .map_err(ConvertError::read(input))?;
            warn_all(w);
            anonymous(root, ImageConfig::default())
        }
        Format::Oci => {
            let ((root, cfg, w), manifest) = (|| {
                let md = fs::metadata(path).map_err(ConvertError::Write)?;
                let read = |dir: &Path| {
                    let m = oci::layout_manifest(dir)?;
                    oci::read_layout(ts, dir, xattrs).map(|r| (r, m))
                };
                Ok::<_, ConvertError>(if md.is_dir() {
                    read(path)?
                } else {
                    let r = oci::unpack_archive(path, scratch).and_then(|()| read(scratch));
                    let _ = checkout::remove_tree(scratch);
                    r?
                })
            })()
            .map_err(ConvertError::read(input))?;
            warn_all(w);
            Input {
                root,
                cfg,
                tag: "latest".into(),
                name: None,
                manifest,
            }
        }
        Format::Docker | Format::Podman => {
            let tool = fin.tool().expect("docker and podman have tools");
            fs::create_dir_all(scratch).at("create", scratch)?;
            let archive = scratch.join("image.tar");
            if input.starts_with('-') {
                return Err(ConvertError::DashName {
                    tool,
                    name: input.to_string(),
                });
            }
            let mut cmd = Command::new(tool);
            cmd.arg("save");
            if fin == Format::Podman {
                cmd.args(["--format", "oci-archive"]);
            }
            cmd.arg("-o").arg(&archive).arg(input);
            let r = (|| -> Result<Input, ConvertError> {
                let spawn = |source| ConvertError::Spawn { tool, source };
                // In a process group of its own when a signal is handled here, so that
                // SIGINT or SIGTERM reaches the tool and what it started (the signal
                // thread passes it on; grove::interrupt).
                let group = crate::interrupt::own_group(&mut cmd);
                let mut child = cmd.spawn().map_err(spawn)?;
                let status =
                    crate::interrupt::wait_watched_maybe_group(&mut child, group).map_err(spawn)?;
                // Stopped by a signal, the tool's failure is not the news.
                crate::interrupt::check()?;
                if !status.success() {
                    return Err(ConvertError::SaveFailed {
                        tool,
                        input: input.to_string(),
                        status,
                    });
                }
                let layout = scratch.join("layout");
                oci::unpack_archive(&archive, &layout)?;
                fs::remove_file(&archive).ok();
                let manifest = oci::layout_manifest(&layout)?;
                let (root, cfg, w) = oci::read_layout(ts, &layout, xattrs)?;
                warn_all(w);
                Ok(Input {
                    root,
                    cfg,
                    tag: tag_of(input),
                    name: full_name(input),
                    manifest,
                })
            })();
            let _ = checkout::remove_tree(scratch);
            r.map_err(|e| ConvertError::ReadTool {
                input: input.to_string(),
                tool,
                source: Box::new(e),
            })?
        }
    })
}

/// The import note's entry of a conversion of `input` (format `fin`) into the store as
/// `name` (docs/store-format.md, "Import notes").
fn converted(
    fin: Format,
    input: &str,
    name: &Reference,
    sha256: Option<String>,
    manifest: Option<String>,
) -> crate::store::notes::ImportSource {
    let kind = match fin {
        Format::Tar => "tarball",
        Format::Dir => "directory",
        Format::Squash => "squashfs",
        f => f.name(),
    };
    let (path, reference) = match fin.is_named() {
        true => (None, Some(input.to_string())),
        false => (Some(input.to_string()), None),
    };
    crate::store::notes::ImportSource {
        command: Some("ch-convert".into()),
        image: name.to_string(),
        imported: crate::provenance::rfc3339(std::time::SystemTime::now()),
        kind: kind.into(),
        manifest,
        path,
        reference,
        sha256,
        ..Default::default()
    }
}

/// `TOOL import` the image as NAME, with its config as `--change` instructions.
fn write_dockman(
    store: &Store,
    tool: &'static str,
    img: &Input,
    name: &str,
) -> Result<(), ConvertError> {
    if name.starts_with('-') {
        return Err(ConvertError::DashName {
            tool,
            name: name.to_string(),
        });
    }
    let mut cmd = Command::new(tool);
    cmd.arg("import");
    for (k, v) in &img.cfg.env {
        cmd.arg("--change").arg(format!("ENV {k}={v}"));
    }
    if img.cfg.cwd != "/" {
        cmd.arg("--change").arg(format!("WORKDIR {}", img.cfg.cwd));
    }
    if let Some(c) = &img.cfg.cmd {
        cmd.arg("--change")
            .arg(format!("CMD {}", serde_json::to_string(c)?));
    }
    if let Some(e) = &img.cfg.entrypoint {
        cmd.arg("--change")
            .arg(format!("ENTRYPOINT {}", serde_json::to_string(e)?));
    }
    cmd.arg("-")
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    crate::interrupt::unblocked(&mut cmd);
    let spawn = |source| ConvertError::Spawn { tool, source };
    let mut child = cmd.spawn().map_err(spawn)?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let written = export::write_tar(&store.repo(), &img.root, std::io::BufWriter::new(stdin))
        .map_err(ConvertError::from)
        .and_then(|mut w| Ok(w.flush()?));
    let status = child.wait().map_err(spawn)?;
    if !status.success() {
        return Err(ConvertError::ImportFailed { tool, status });
    }
    written.map_err(|e| ConvertError::SendTo {
        tool,
        source: Box::new(e),
    })
}

/// Write `img` to `tmp` in format `fout` (a path format); `output` is the name the user
/// gave (its extension picks tar compression and the OCI archive form).
fn write_path(
    store: &Store,
    img: &Input,
    fout: Format,
    output: &str,
    tmp: &Path,
    (comp, level): (SquashComp, Option<u32>),
) -> Result<(), ConvertError> {
    let repo = store.repo();
    let root = &img.root;
    match fout {
        Format::Dir => {
            checkout::materialize(store.thread_safe(), root, tmp, checkout::Policy::Exact)?;
            add_mount_points(tmp)?;
        }
        Format::Tar => {
            let f = fs::File::create(tmp).at("create", tmp)?;
            let w = std::io::BufWriter::with_capacity(1 << 20, f);
            let write = || -> Result<(), ExportError> {
                let mut w = match tar_compression(output) {
                    TarCompression::None => export::write_tar(&repo, root, w)?,
                    TarCompression::Gzip => {
                        export::write_tar(&repo, root, export::ParGz::new(w, export::GZIP_LEVEL))?
                            .finish()?
                    }
                    TarCompression::Zstd => {
                        let mut z = zstd::stream::write::Encoder::new(w, 3)?;
                        z.multithread(
                            std::thread::available_parallelism()
                                .map(|n| n.get() as u32)
                                .unwrap_or(1),
                        )?;
                        export::write_tar(&repo, root, z)?.finish()?
                    }
                    TarCompression::Xz => {
                        export::write_tar(&repo, root, xz2::write::XzEncoder::new(w, 6))?
                            .finish()?
                    }
                    // bzip2(1)'s default level.
                    TarCompression::Bzip2 => export::write_tar(
                        &repo,
                        root,
                        bzip2::write::BzEncoder::new(w, bzip2::Compression::best()),
                    )?
                    .finish()?,
                };
                w.flush()?;
                w.get_ref().sync_all().ok();
                Ok(())
            };
            // A write that fails (a full disk) names the file it wrote (the caller names
            // the output above it).
            write().map_err(|e| match e {
                ExportError::Io(source) => ExportError::Write {
                    path: tmp.to_path_buf(),
                    source,
                },
                e => e,
            })?;
        }
        Format::Squash => {
            let with_mounts = export::with_mount_points(root);
            let opts = export::SquashOptions {
                comp,
                level,
                processors: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                mtime: export::fixed_mtime(),
                root_mode: root.mode,
            };
            export::write_squash(&repo, &with_mounts, tmp, &opts)?;
        }
        Format::Oci => {
            let (root, dropped) = oci::without_whiteout_names(root);
            for p in dropped {
                warn!(
                    "OCI layers can't hold names starting with .wh. (whiteouts): leaving out {p}"
                );
            }
            let root = &root;
            if oci_is_archive(output) {
                let layout = staging_sibling(tmp, "layout");
                let r = oci::write_layout(
                    &repo,
                    root,
                    &img.cfg,
                    &img.tag,
                    img.name.as_deref(),
                    &layout,
                )
                .and_then(|()| oci::write_archive(&layout, tmp));
                let _ = checkout::remove_tree(&layout);
                r?;
            } else {
                oci::write_layout(&repo, root, &img.cfg, &img.tag, img.name.as_deref(), tmp)?;
            }
        }
        Format::ChImage | Format::Docker | Format::Podman => {
            unreachable!("named outputs are not written to a path")
        }
    }
    Ok(())
}

/// Whether the existing directory `dir` may be replaced by an output: it is empty, or it
/// looks like an image (has `bin`, `dev` and `usr` directories, Charliecloud's test).
fn replaceable_dir(dir: &Path) -> bool {
    let empty = fs::read_dir(dir)
        .map(|mut r| r.next().is_none())
        .unwrap_or(false);
    empty || ["bin", "dev", "usr"].iter().all(|d| dir.join(d).is_dir())
}

/// Leave out what a tarball holds under `/dev` (keeping the directory), as Charliecloud's
/// ch-convert does (its issue #157): `docker export` and hand-made tarballs carry device
/// nodes and stray files there, and ch-run mounts the host's `/dev` over it anyway.
fn empty_dev(root: &mut Dir) {
    let names: Vec<Vec<u8>> = match root.get(b"dev") {
        Some(crate::store::model::Node::Dir(d)) => d.children.keys().cloned().collect(),
        _ => return,
    };
    for n in names {
        let mut p = b"dev/".to_vec();
        p.extend_from_slice(&n);
        crate::verbose!("leaving out /{}", String::from_utf8_lossy(&p));
        let _ = root.remove(&p);
    }
}

/// Add to the directory image at `dir` the mount points ch-run needs where nothing is at
/// that path (not following symlinks), as Charliecloud's `dir_fixup`: the directories of
/// [`export::MOUNT_DIRS`] (`/mnt/0`-`/mnt/9` for `-b SRC:/mnt/N`, `/dev`, `/proc`, ...,
/// mode 0755) and the empty files of [`export::MOUNT_FILES`] (`/etc/hosts`,
/// `/etc/resolv.conf`, mode 0644). A path whose parent is not a real directory (a symlink,
/// a file) is left alone. The parents keep their times.
fn add_mount_points(dir: &Path) -> Result<(), ConvertError> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    let entries = export::MOUNT_DIRS
        .iter()
        .map(|p| (p, true))
        .chain(export::MOUNT_FILES.iter().map(|p| (p, false)));
    for (rel, is_dir) in entries {
        let path = dir.join(rel);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let parent = path.parent().expect("a mount point has a parent");
        let Ok(pmd) = fs::symlink_metadata(parent) else {
            continue;
        };
        if !pmd.is_dir() {
            continue;
        }
        if is_dir {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&path)
                .at("create mount point", &path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).at("chmod", &path)?;
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
                .at("create mount point", &path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).at("chmod", &path)?;
        }
        let (atime, mtime) = (
            TimeSpec::new(pmd.atime(), pmd.atime_nsec()),
            TimeSpec::new(pmd.mtime(), pmd.mtime_nsec()),
        );
        utimensat(
            None,
            parent,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(std::io::Error::from)
        .at("set times of", parent)?;
    }
    Ok(())
}

/// Read the input as the phase `convert: read` ([`crate::progress`]); an image in
/// storage is only looked up, with no phase.
fn read_phase(
    fin: Format,
    read: impl FnOnce() -> Result<Input, ConvertError>,
) -> Result<Input, ConvertError> {
    if fin == Format::ChImage {
        return read();
    }
    let phase = crate::progress::Phase::start("convert", "read", "file");
    let img = read()?;
    phase.finish(&[]);
    Ok(img)
}

/// Write the output as the phase `convert: wrote`, its totals known from the model.
fn write_phase(
    img: &Input,
    write: impl FnOnce() -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    let totals = crate::progress::tree_totals(&img.root);
    let phase = crate::progress::Phase::start_with("convert", "wrote", "file", totals);
    write()?;
    phase.finish(&[]);
    Ok(())
}

/// Convert `req.input` to `req.output`: check the request (formats, tools, compression)
/// first, log the plan, then (unless a dry run) read and write.
pub fn convert(req: &Request) -> Result<(), ConvertError> {
    let mut fin = fmt_arg(&req.in_fmt, &req.input)?;
    // A plain tarball that holds an OCI layout is an oci-archive; one that holds a
    // `docker save` manifest is a docker-archive, read the same way.
    if req.in_fmt.is_none()
        && fin == Format::Tar
        && tar_compression(&req.input) == TarCompression::None
        && (oci::is_oci_archive(Path::new(&req.input))
            || oci::is_docker_archive(Path::new(&req.input)))
    {
        fin = Format::Oci;
    }
    let fout = fmt_arg(&req.out_fmt, &req.output)?;
    if fin == Format::Dir && fout.tool().is_none() {
        // Read the user's 0000 files and directories without changing their modes (not
        // when docker or podman run later: they must see the user as the user).
        if let Err(e) = crate::run::setup::read_own_files_as_root() {
            crate::verbose!("reading as the user only: {}", e.report());
        }
    }
    // From here on a SIGINT or SIGTERM is received (if the binary handles them:
    // grove::interrupt); the namespace above needed a single thread.
    if let Err(e) = crate::interrupt::listen() {
        warn!("can't handle SIGINT and SIGTERM: {e}");
    }
    if fin == fout {
        return Err(ConvertError::SameFormat(fin.name()));
    }
    for f in [fin, fout] {
        if let Some(tool) = f.tool() {
            if !on_path(tool) {
                return Err(ConvertError::NoTool {
                    format: f.name(),
                    tool,
                });
            }
        }
    }
    if fout == Format::Tar {
        if let Some(suffix) = unknown_tar_suffix(&req.output) {
            return Err(ConvertError::TarSuffix(suffix.to_string()));
        }
    }
    let compression = squash_compression(req.compression.as_deref(), fout)?;
    if fout == Format::Squash {
        export::find_squash_tool()?;
    }
    info!("input:   {:<9} {}", fin.name(), req.input);
    info!("output:  {:<9} {}", fout.name(), req.output);
    if req.dry_run {
        return Ok(());
    }
    if fout == Format::ChImage {
        return convert_into_store(req, fin);
    }
    // The store is read for an image in it; any other input goes into the objects of a
    // store of the conversion's own, in its temporary directory, and the storage
    // directory is left alone (it may be read-only, absent, or not found at all).
    let (store, temp) = if fin == Format::ChImage {
        let storage = req.storage.clone()?;
        (Store::open(&storage)?.with_xattrs(req.xattrs), None)
    } else {
        let base = req.tmp_base();
        // A directory input must not hold the temporary directory: it would be read
        // while the input's files are written there.
        if fin == Format::Dir {
            if let (Ok(i), Ok(b)) = (fs::canonicalize(&req.input), fs::canonicalize(&base)) {
                if b.starts_with(&i) {
                    return Err(ConvertError::TempInInput {
                        temp: base,
                        input: req.input.clone(),
                    });
                }
            }
        }
        let temp = TempDir::create(&base)?;
        crate::verbose!("temporary directory: {}", temp.path.display());
        let store = Store::open(&temp.path.join("store"))?.with_xattrs(req.xattrs);
        (store, Some(temp))
    };
    // The input's scratch (unused for an image in storage).
    let scratch = temp.as_ref().map(|t| t.path.join("in")).unwrap_or_default();
    if let Some(tool) = fout.tool() {
        let img = read_phase(fin, || read_input(&store, fin, &req.input, &scratch))?;
        return write_phase(&img, || write_dockman(&store, tool, &img, &req.output));
    }

    let out = PathBuf::from(&req.output);
    if let Ok(md) = fs::symlink_metadata(&out) {
        if req.no_clobber {
            return Err(ConvertError::NoClobber(out));
        }
        // As Charliecloud's ch-convert (and `ch-image pull REF DIR`): a directory is
        // replaced only if it is empty or looks like an image, so that a mistyped output
        // never deletes a directory of other files.
        if md.is_dir() && !replaceable_dir(&out) {
            return Err(ConvertError::NotAnImage(out));
        }
    }
    remove_stale_staging(&out);
    let tmp = staging(&out);
    let img = read_phase(fin, || read_input(&store, fin, &req.input, &scratch))?;
    // What fails from here on is about the output: the error names it, then the
    // staging path.
    let output_err = |e: ConvertError| ConvertError::Output {
        output: out.clone(),
        staged: tmp.clone(),
        source: Box::new(e),
    };
    if let Err(e) = write_phase(&img, || {
        write_path(&store, &img, fout, &req.output, &tmp, compression)
    }) {
        let _ = checkout::remove_tree(&tmp);
        return Err(output_err(e));
    }
    if fs::symlink_metadata(&out).is_ok() {
        if let Err(e) = checkout::remove_tree(&out).at("replace", &out) {
            let _ = checkout::remove_tree(&tmp);
            return Err(output_err(e.into()));
        }
    }
    let renamed = fs::rename(&tmp, &out).map_err(|source| ConvertError::Rename {
        from: tmp.clone(),
        to: out.clone(),
        source,
    });
    if renamed.is_err() {
        let _ = checkout::remove_tree(&tmp);
    }
    drop(temp);
    renamed
}

/// [`convert`] into the store: read the input into its objects, holding the writer lock,
/// and make the image.
fn convert_into_store(req: &Request, fin: Format) -> Result<(), ConvertError> {
    let storage = req.storage.clone()?;
    let store = Store::open(&storage)?.with_xattrs(req.xattrs);
    let name = Reference::parse(&req.output)?.with_default_tag();
    if store.image(&name)?.is_some() && req.no_clobber {
        return Err(ConvertError::NoClobberInStorage(req.output.clone()));
    }
    let lock = store.lock()?;
    let scratch = store.scratch_path("convert");
    // A file's digest for the import note, read beside the conversion (as import's).
    let path = Path::new(&req.input);
    let digest =
        crate::store::notes::FileDigest::start((!fin.is_named() && path.is_file()).then_some(path));
    let img = read_phase(fin, || read_input(&store, fin, &req.input, &scratch))?;
    let manifest = img.manifest.clone();
    let commit = store
        .import_model(&lock, img.root, img.cfg, &name)
        .map_err(|source| ConvertError::Convert {
            input: req.input.clone(),
            source,
        })?;
    let sha256 = digest.finish()?;
    crate::store::notes::add_import(
        &store.repo(),
        commit,
        converted(fin, &req.input, &name, sha256, manifest),
    )?;
    drop(lock);
    // The input's files went into stored packs, as an import's: compress them in the
    // background with the ch-image beside this program (store::compaction).
    if let Ok(exe) = std::env::current_exe() {
        crate::store::compaction::start_in_background(&storage, &exe.with_file_name("ch-image"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pid_named_temp_dirs_with_this_host_s_lock_are_candidates() {
        for ok in ["ch-convert.1", "ch-convert.4242", "ch-convert.4242.3"] {
            assert!(temp_dir_name(ok), "{ok}");
        }
        // Charliecloud's mktemp names, staging names, and near misses.
        for no in [
            "ch-convert.",
            "ch-convert.aB3xYz",
            "ch-convert.12.",
            "ch-convert.12.x",
            "ch-convert.1.2.3",
            ".out.tar.ch-convert.12",
            "ch-convert.-1",
            "xch-convert.12",
        ] {
            assert!(!temp_dir_name(no), "{no}");
        }
        let line = temp_lock_line("node1", 77);
        assert_eq!(line, "grove-ch-convert-lock 1 node1 77\n");
        assert!(temp_lock_of(&line, "node1"));
        assert!(!temp_lock_of(&line, "node2"));
        for bad in [
            "",
            "grove-ch-convert-lock 2 node1 77",
            "grove-ch-convert-lock 1 node1",
            "grove-ch-convert-lock 1 node1 x",
            "something else 1 node1 77",
        ] {
            assert!(!temp_lock_of(bad, "node1"), "{bad:?}");
        }
    }

    #[test]
    fn scratch_beside_the_staging_path_keeps_its_pid_and_is_recognised_as_stale() {
        let tmp = staging(Path::new("/out/img.tar"));
        let pid = std::process::id();
        assert_eq!(
            staging_sibling(&tmp, "in"),
            PathBuf::from(format!("/out/.img.tar.ch-convert.{pid}.in"))
        );
        assert_eq!(staging_owner(&format!("{pid}")), Some(Some(pid)));
        assert_eq!(staging_owner(&format!("{pid}.in")), Some(Some(pid)));
        assert_eq!(staging_owner(&format!("{pid}.layout")), Some(Some(pid)));
        assert_eq!(staging_owner("in"), Some(None));
        assert_eq!(staging_owner("layout"), Some(None));
        assert_eq!(staging_owner("12.tmp"), None);
        assert_eq!(staging_owner("x"), None);
    }

    #[test]
    fn formats_are_inferred_like_charliecloud() {
        assert_eq!(infer("foo.sqfs"), Format::Squash);
        assert_eq!(infer("foo.tar.gz"), Format::Tar);
        assert_eq!(infer("foo.tgz"), Format::Tar);
        assert_eq!(infer("foo.tar.zst"), Format::Tar);
        assert_eq!(infer("/tmp/foo"), Format::Dir);
        assert_eq!(infer("./foo"), Format::Dir);
        assert_eq!(infer("foo:latest"), Format::ChImage);
        assert_eq!(infer("debian"), Format::ChImage);
        // By name only: `src` is a directory in the crate root, where unit tests run.
        assert!(Path::new("src").is_dir());
        assert_eq!(infer("src"), Format::ChImage);
        assert_eq!(infer("../foo"), Format::Dir);
    }

    #[test]
    fn tar_compression_follows_the_extension() {
        assert_eq!(tar_compression("a.tar.gz"), TarCompression::Gzip);
        assert_eq!(tar_compression("a.tar.zst"), TarCompression::Zstd);
        assert_eq!(tar_compression("a.tar"), TarCompression::None);
        assert_eq!(tar_compression("a.tar.bz2"), TarCompression::Bzip2);
        assert_eq!(tar_compression("a.tbz2"), TarCompression::Bzip2);
        assert_eq!(infer("a.tbz2"), Format::Tar);
        assert_eq!(unknown_tar_suffix("a.tar.lz4"), Some("lz4"));
        assert_eq!(unknown_tar_suffix("a.tar.bz2"), None);
        assert_eq!(unknown_tar_suffix("a.tar"), None);
        assert_eq!(unknown_tar_suffix("my.tar.d/img"), None);
        assert_eq!(unknown_tar_suffix("a.tar.backup"), None);
    }
}
