//! Import: a directory or a tarball (plain, gzip, zstd, xz, bzip2, lzma) into the model,
//! with file contents written to the object database in parallel.
//!
//! Checks (man page, FAQ): tar members with `..` or absolute paths are refused, as is a
//! member written through a symlink; device files and sockets are skipped with a warning;
//! a tarball whose members all sit under one top directory has that directory stripped.
//! Modes are recorded as FAQ 11.3.8 says (see [`kept_mode`]): directories at least
//! `rwx------`, files at least `rw-------`, setuid and setgid bits dropped, so that every
//! output of the store (checkout, directory, tar, SquashFS, OCI, push) agrees; the one
//! rule for archive members (import, pull, `ch-convert`, `ADD`) is [`skipped_member`].
//! Runs without the store lock: objects are content-addressed and
//! written atomically, so a killed import leaves at most unreferenced objects.

use super::pack::StoredBlob;
use crate::error::{IoError, IoResultExt};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use gix::ObjectId;
use rayon::prelude::*;

use super::git::{git_err, GitError};
use super::model::{self, Dir, File, Node, PathError, XattrPolicy};
use super::pack::{PackBuilder, PACK_MIN_OBJECTS};

/// Files at least this big are streamed into the object database instead of being read
/// into memory first.
const STREAM_THRESHOLD: u64 = 32 << 20;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{archive}: member {member}: {reason}")]
    Member {
        archive: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{archive}: member {member}")]
    MemberPath {
        archive: PathBuf,
        member: String,
        #[source]
        source: PathError,
    },
    #[error("{archive}: {} after member {after}", archive_failure(.source))]
    Archive {
        archive: PathBuf,
        after: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: directory is deeper than {max} levels", max = model::MAX_DEPTH)]
    TooDeep(PathBuf),
    #[error("{dir}: {path}: {reason}")]
    TooLong {
        dir: PathBuf,
        /// The path below `dir`, quoted short ([`model::show_short`]).
        path: String,
        reason: String,
    },
    #[error("{0}: not a directory or a tar archive")]
    Unknown(PathBuf),
    #[error("{0}: not a SquashFS file (bad magic number)")]
    NotSquash(PathBuf),
    #[error("can't run {tool} (is squashfs-tools installed?)")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed ({status}) reading {path}")]
    ToolFailed {
        tool: &'static str,
        status: std::process::ExitStatus,
        path: PathBuf,
    },
    #[error(transparent)]
    Git(#[from] GitError),
}

/// Warnings collected during an import (skipped members), for the caller to print.
pub type Warnings = Vec<String>;

/// The mode an imported, pulled or `ADD`-ed entry is given (FAQ 11.3.8): directories
/// raised to at least `rwx------` (a 0000 directory could not be deleted by the user who
/// owns it), other entries to at least `rw-------`; setuid and setgid bits dropped (the
/// files belong to whoever unpacks the image). The sticky bit is kept. Checkout applies
/// the same rule ([`super::checkout::Policy::Checkout`]).
pub fn kept_mode(is_dir: bool, mode: u32) -> u32 {
    let p = super::checkout::Policy::Checkout;
    if is_dir {
        p.dir_mode(mode & 0o7777)
    } else {
        p.file_mode(mode & 0o7777)
    }
}

/// The one rule for archive members shared by import, pull, `ch-convert` and `ADD`: the
/// warning to print when a member of this type is skipped (device files, which an
/// unprivileged user can't create, and types no image holds), `None` when it is kept
/// (regular files, directories, links, FIFOs and the headers tar reads itself).
pub fn skipped_member(kind: tar::EntryType, archive: &Path, member: &str) -> Option<String> {
    use tar::EntryType as T;
    // The name as it may be printed (escaping twice changes nothing).
    let member = crate::log::shown(member);
    match kind {
        T::Regular
        | T::Continuous
        | T::GNUSparse
        | T::Directory
        | T::Symlink
        | T::Link
        | T::Fifo
        | T::XGlobalHeader
        | T::XHeader
        | T::GNULongName
        | T::GNULongLink => None,
        T::Char | T::Block => Some(format!(
            "{}: skipping device file member {member}",
            archive.display()
        )),
        other => Some(format!(
            "{}: skipping member {member} of unsupported type {other:?}",
            archive.display()
        )),
    }
}

/// A read error of the tar reader, its text escaped ([`crate::log::shown`]) where it
/// needs it: the tar crate quotes header fields as they are (`numeric field was not a
/// number: ...`), any bytes an archive chose. A system error (it has an errno) and an
/// error with nothing to escape are kept as they are (their type is looked for along
/// the chain: an interrupted read, a full disk).
pub fn escaped_io(e: io::Error) -> io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    let mut text = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cur = c.source();
    }
    match crate::log::shown(&text) {
        std::borrow::Cow::Borrowed(_) => e,
        std::borrow::Cow::Owned(t) => io::Error::new(e.kind(), t),
    }
}

/// What went wrong reading an archive, as [`ImportError::Archive`] says it: a read
/// stopped by a signal ([`crate::interrupt`]) is not a damaged archive.
fn archive_failure(e: &io::Error) -> &'static str {
    if crate::interrupt::is_interrupted(e) {
        "stopped reading the archive"
    } else {
        "can't read archive (truncated or corrupt?)"
    }
}

/// Import a directory or tarball at `path` into a model.
pub fn import_path(
    ts: &gix::ThreadSafeRepository,
    path: &Path,
    xattrs: XattrPolicy,
) -> Result<(Dir, Warnings), ImportError> {
    let md = fs::metadata(path).at("stat", path)?;
    if md.is_dir() {
        // The user's own tree: never changed, not even for a moment (a killed import
        // would leave it changed); an unreadable entry is an error naming it.
        import_dir(ts, path, false, xattrs)
    } else if md.is_file() {
        import_tar(ts, path, xattrs)
    } else {
        Err(ImportError::Unknown(path.to_path_buf()))
    }
}

/// Import a SquashFS file: `unsquashfs` extracts it into `scratch` (a path that must not
/// exist, on a file system with room for the image), which is imported as a directory and
/// removed. Device files, which an unprivileged unsquashfs cannot create, are skipped with
/// a warning.
pub fn import_squash(
    ts: &gix::ThreadSafeRepository,
    path: &Path,
    scratch: &Path,
) -> Result<(Dir, Warnings), ImportError> {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .at("read", path)?;
    if &magic != b"hsqs" {
        return Err(ImportError::NotSquash(path.to_path_buf()));
    }
    if on_path("sqfs2tar") {
        return import_squash_stream(ts, path);
    }
    let mut cmd = std::process::Command::new("unsquashfs");
    cmd.args(["-no-xattrs", "-quiet", "-no-progress", "-d"])
        .arg(super::path_arg(scratch))
        .arg(super::path_arg(path))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let result = (|| {
        let out = output_watched(cmd).map_err(|source| ImportError::Spawn {
            tool: "unsquashfs",
            source,
        })?;
        // Stopped by a signal, unsquashfs's failure is not the news; what it extracted
        // goes below.
        crate::interrupt::check().at("extract into", scratch)?;
        let mut warnings = Vec::new();
        // Exit status 2: non-fatal errors (e.g. device files it may not create).
        match out.status.code() {
            Some(0) => {}
            Some(2) if scratch.is_dir() => warnings.push(format!(
                "unsquashfs skipped some files of {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            _ => {
                // Its messages quote the file's names: escaped (docs/security.md).
                crate::warn!(
                    "{}",
                    crate::log::shown(String::from_utf8_lossy(&out.stderr).trim())
                );
                return Err(ImportError::ToolFailed {
                    tool: "unsquashfs",
                    status: out.status,
                    path: path.to_path_buf(),
                });
            }
        }
        // Extracted with -no-xattrs: there are none to read.
        let (mut root, w) = import_dir(ts, scratch, true, XattrPolicy::Ignore)?;
        warnings.extend(w);
        // An unprivileged unsquashfs may clear special bits: take them from its listing,
        // then drop setuid and setgid as every import does (FAQ 11.3.8).
        let list = std::process::Command::new("unsquashfs")
            .arg("-lln")
            .arg(super::path_arg(path))
            .output()
            .map_err(|source| ImportError::Spawn {
                tool: "unsquashfs",
                source,
            })?;
        for (rel, mode) in special_modes(&list.stdout) {
            match root.get_mut(&rel) {
                Some(Node::File(f)) => f.mode = kept_mode(false, mode),
                Some(Node::Dir(d)) => d.mode = kept_mode(true, mode),
                _ => {}
            }
        }
        Ok((root, warnings))
    })();
    let _ = super::checkout::remove_tree(scratch);
    result
}

/// `cmd.output()` (its stderr piped), passing a signal received meanwhile
/// ([`crate::interrupt`]) on to the process: to its process group of its own where the
/// signal is handled here, so that what it started gets it too.
fn output_watched(mut cmd: std::process::Command) -> std::io::Result<std::process::Output> {
    let group = crate::interrupt::own_group(&mut cmd);
    let mut child = cmd.spawn()?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errs = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let status = crate::interrupt::wait_watched_maybe_group(&mut child, group)?;
    Ok(std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: errs.join().unwrap_or_default(),
    })
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// SquashFS through `sqfs2tar` (squashfs-tools-ng): its tar stream, root included, goes
/// straight into [`apply_layer`]; nothing is extracted and modes are kept exactly.
fn import_squash_stream(
    ts: &gix::ThreadSafeRepository,
    path: &Path,
) -> Result<(Dir, Warnings), ImportError> {
    let mut child = crate::interrupt::unblocked(&mut std::process::Command::new("sqfs2tar"))
        .args(["--root-becomes", ".", "--no-xattr"])
        .arg(super::path_arg(path))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| ImportError::Spawn {
            tool: "sqfs2tar",
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errs = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let mut root = Dir::new(0o755);
    let applied = apply_layer(
        ts,
        &mut root,
        BufReader::with_capacity(1 << 20, crate::progress::Reading(stdout)),
        path,
        Whiteouts::Keep,
        // Streamed with --no-xattr: there are none to read.
        XattrPolicy::Ignore,
    );
    // A signal (grove::interrupt) that came meanwhile is passed on to sqfs2tar.
    let status =
        crate::interrupt::wait_watched(&mut child).map_err(|source| ImportError::Spawn {
            tool: "sqfs2tar",
            source,
        })?;
    let stderr = String::from_utf8_lossy(&errs.join().unwrap_or_default())
        .trim()
        .to_string();
    // Stopped by a signal, the read says so: sqfs2tar's failure (its reader gone) is not
    // the news.
    let applied = match applied {
        Err(e) if crate::interrupt::signal().is_some() => return Err(e),
        a => a,
    };
    if !status.success() {
        if !stderr.is_empty() {
            crate::warn!("{}", crate::log::shown(&stderr));
        }
        return Err(ImportError::ToolFailed {
            tool: "sqfs2tar",
            status,
            path: path.to_path_buf(),
        });
    }
    let mut warnings = applied?;
    if !stderr.is_empty() {
        warnings.push(format!("sqfs2tar: {stderr}"));
    }
    Ok((root, warnings))
}

/// Entries of an `unsquashfs -lln` listing with setuid or setgid bits: (path relative to
/// the root, permission bits). Pure.
pub fn special_modes(listing: &[u8]) -> Vec<(Vec<u8>, u32)> {
    const ROOT: &[u8] = b" squashfs-root/";
    let mut out = Vec::new();
    for line in listing.split(|b| *b == b'\n') {
        if line.len() < 10 || !matches!(line[0], b'-' | b'd') {
            continue;
        }
        let perms = &line[1..10];
        if !matches!(perms[2], b's' | b'S') && !matches!(perms[5], b's' | b'S') {
            continue;
        }
        let Some(at) = line.windows(ROOT.len()).position(|w| w == ROOT) else {
            continue;
        };
        let mut mode = 0u32;
        for (i, c) in perms.iter().enumerate() {
            if matches!(c, b'r' | b'w' | b'x' | b's' | b't') {
                mode |= 1 << (8 - i);
            }
        }
        if matches!(perms[2], b's' | b'S') {
            mode |= 0o4000;
        }
        if matches!(perms[5], b's' | b'S') {
            mode |= 0o2000;
        }
        if matches!(perms[8], b't' | b'T') {
            mode |= 0o1000;
        }
        out.push((line[at + ROOT.len()..].to_vec(), mode));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Directories

struct PendingFile {
    rel: Vec<u8>,
    abs: PathBuf,
    mode: u32,
    size: u64,
    group: Option<u32>,
}

/// Modes changed temporarily to read 0000 files and directories of a scratch directory
/// (never of the user's source: `chmod` false); put back on drop, deepest first.
struct ModeRestore(Mutex<Vec<(PathBuf, u32)>>, bool);

impl Drop for ModeRestore {
    fn drop(&mut self) {
        let list = self.0.get_mut().map(std::mem::take).unwrap_or_default();
        for (p, mode) in list.into_iter().rev() {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(mode));
        }
    }
}

impl ModeRestore {
    fn raise(&self, path: &Path, mode: u32, need: u32) -> Result<(), ImportError> {
        if mode & need == need || !self.1 {
            return Ok(());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode | need))
            .at("make readable", path)?;
        self.0
            .lock()
            .expect("mode list lock")
            .push((path.to_path_buf(), mode));
        Ok(())
    }
}

fn import_dir(
    ts: &gix::ThreadSafeRepository,
    src: &Path,
    chmod: bool,
    xattrs_policy: XattrPolicy,
) -> Result<(Dir, Warnings), ImportError> {
    let restore = ModeRestore(Mutex::new(Vec::new()), chmod);
    let mut root = Dir::new(0o755);
    let top = fs::symlink_metadata(src).at("stat", src)?;
    root.times.set(b"", model::Mtime::of(&top));
    restore.raise(src, top.mode() & 0o7777, 0o500)?;
    let mut w = DirWalk {
        src,
        files: Vec::new(),
        inodes: HashMap::new(),
        warnings: Vec::new(),
        restore: &restore,
        xattrs_policy,
        xattrs: Default::default(),
        times: Default::default(),
    };
    w.walk(src, &[], &mut root)?;
    crate::progress::set_totals(w.files.len() as u64, w.files.iter().map(|f| f.size).sum());
    root.xattrs = std::mem::take(&mut w.xattrs);
    root.times.by_path.append(&mut w.times);

    // A group is paths of the image sharing an inode: a file whose other links are
    // outside the tree (a `cp -al` copy, a checkout sharing files with others) is no
    // group.
    let mut members: std::collections::HashMap<u32, usize> = Default::default();
    for g in w.files.iter().filter_map(|f| f.group) {
        *members.entry(g).or_default() += 1;
    }
    for f in &mut w.files {
        if f.group.is_some_and(|g| members[&g] < 2) {
            f.group = None;
        }
    }
    let oids = write_files(ts, &w.files, &restore)?;
    for (f, oid) in w.files.iter().zip(oids) {
        root.insert(
            &f.rel,
            Node::File(File {
                mode: kept_mode(false, f.mode),
                oid,
                size: f.size,
                link_group: f.group,
            }),
        )
        .expect("parents were inserted by the walk");
    }
    Ok((root, w.warnings))
}

/// What walking a source directory collects besides the tree itself.
struct DirWalk<'a> {
    /// The directory imported.
    src: &'a Path,
    files: Vec<PendingFile>,
    /// (device, inode) of multiply linked files -> link group.
    inodes: HashMap<(u64, u64), u32>,
    warnings: Warnings,
    restore: &'a ModeRestore,
    xattrs_policy: XattrPolicy,
    xattrs: super::model::Xattrs,
    /// Modification times by path (taken before anything below is read).
    times: std::collections::BTreeMap<Vec<u8>, model::Mtime>,
}

impl DirWalk<'_> {
    fn walk(&mut self, abs: &Path, rel: &[u8], dir: &mut Dir) -> Result<(), ImportError> {
        // A SIGINT or SIGTERM (grove::interrupt) stops the walk per directory.
        crate::interrupt::check().at("read directory", abs)?;
        let entries = model::read_dir_sorted(abs).at("read directory", abs)?;
        for name in entries {
            let p = abs.join(&name);
            let r = model::join_rel(rel, &name);
            // What a tarball's member is held to (a longer path could be stat(2)ed only
            // relative to a directory; the system's error would quote it whole).
            if r.len() >= model::MAX_PATH || name.len() > model::MAX_NAME {
                let comps: Vec<&[u8]> = r.split(|b| *b == b'/').collect();
                if let Some(reason) = model::too_long(&comps, false) {
                    return Err(ImportError::TooLong {
                        dir: self.src.to_path_buf(),
                        path: model::show_short(&r),
                        reason,
                    });
                }
            }
            let md = fs::symlink_metadata(&p).at("stat", &p)?;
            let mode = md.mode() & 0o7777;
            let ft = md.file_type();
            self.times.insert(r.clone(), model::Mtime::of(&md));
            if self.xattrs_policy.record() && !ft.is_symlink() {
                let mut x = model::read_xattrs(&p);
                x.retain(|(n, _)| model::is_image_xattr(n));
                if !x.is_empty() {
                    self.xattrs.insert(r.clone(), x);
                }
            }
            let key = name.as_bytes().to_vec();
            if ft.is_dir() {
                if r.split(|b| *b == b'/').count() > model::MAX_DEPTH {
                    return Err(ImportError::TooDeep(p));
                }
                self.restore.raise(&p, mode, 0o500)?;
                let mut sub = Dir::new(kept_mode(true, mode));
                self.walk(&p, &r, &mut sub)?;
                dir.children.insert(key, Node::Dir(sub));
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).at("read symlink", &p)?;
                dir.children.insert(
                    key,
                    Node::Symlink {
                        target: t.as_os_str().as_bytes().to_vec(),
                    },
                );
            } else if ft.is_file() {
                let group = if md.nlink() > 1 {
                    let next = self.inodes.len() as u32 + 1;
                    Some(*self.inodes.entry((md.dev(), md.ino())).or_insert(next))
                } else {
                    None
                };
                self.files.push(PendingFile {
                    rel: r,
                    abs: p,
                    mode,
                    size: md.len(),
                    group,
                });
            } else if ft.is_fifo() {
                dir.children.insert(
                    key,
                    Node::Fifo {
                        mode: kept_mode(false, mode),
                    },
                );
            } else if ft.is_socket() {
                self.warnings
                    .push(format!("skipping socket: {}", p.display()));
            } else {
                self.warnings
                    .push(format!("skipping device file: {}", p.display()));
            }
        }
        Ok(())
    }
}

/// Read and store files in parallel; hard-linked files are read once per inode.
fn write_files(
    ts: &gix::ThreadSafeRepository,
    files: &[PendingFile],
    restore: &ModeRestore,
) -> Result<Vec<ObjectId>, ImportError> {
    let mut first_of_group: HashMap<u32, usize> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        if let Some(g) = f.group {
            first_of_group.entry(g).or_insert(i);
        }
    }
    let pack = (files.len() >= PACK_MIN_OBJECTS).then(|| PackBuilder::stored(&objects_dir(ts)));
    let oids: Vec<Option<ObjectId>> = files
        .par_iter()
        .enumerate()
        .map_init(
            || repo_for_writing(ts),
            |repo, (i, f)| {
                crate::progress::items(1);
                crate::progress::bytes(f.size);
                if let Some(g) = f.group {
                    if first_of_group[&g] != i {
                        return Ok(None);
                    }
                }
                // A SIGINT or SIGTERM (grove::interrupt) stops the reading per file.
                crate::interrupt::check().at("read", &f.abs)?;
                restore.raise(&f.abs, f.mode, 0o400)?;
                let mut file = fs::File::open(&f.abs).at("open", &f.abs)?;
                store_reader(repo, &mut file, f.size, pack.as_ref())
                    .map(Some)
                    .map_err(|e| match e {
                        StoreReadError::Io(source) => ImportError::Io(IoError {
                            action: "read",
                            path: f.abs.clone(),
                            source,
                        }),
                        StoreReadError::Git(g) => ImportError::Git(g),
                    })
            },
        )
        .collect::<Result<_, _>>()?;
    if let Some(p) = pack {
        p.finish().at("write pack", objects_dir(ts))?;
    }
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        out.push(match (oids[i], f.group) {
            (Some(id), _) => id,
            (None, Some(g)) => oids[first_of_group[&g]].expect("first of group was stored"),
            (None, None) => unreachable!("only later group members are skipped"),
        });
    }
    Ok(out)
}

/// The repository's objects directory.
pub fn objects_dir(ts: &gix::ThreadSafeRepository) -> PathBuf {
    ts.to_thread_local().path().join("objects")
}

/// A thread-local repository handle for bulk writes (no pack refresh on misses).
pub fn repo_for_writing(ts: &gix::ThreadSafeRepository) -> gix::Repository {
    let mut r = ts.to_thread_local();
    r.objects.refresh_never();
    r
}

enum StoreReadError {
    Io(io::Error),
    Git(GitError),
}

/// Store `size` bytes from `reader` as a blob.
fn store_reader(
    repo: &gix::Repository,
    reader: &mut dyn Read,
    size: u64,
    pack: Option<&PackBuilder>,
) -> Result<ObjectId, StoreReadError> {
    if size >= STREAM_THRESHOLD {
        // Compressed in pieces on all cores, incompressible pieces stored as they are.
        let mut limited = reader.take(size);
        return super::pack::write_loose_stream(repo, &mut limited, size)
            .map_err(StoreReadError::Io);
    }
    let mut buf = Vec::with_capacity(size as usize);
    reader
        .take(size)
        .read_to_end(&mut buf)
        .map_err(StoreReadError::Io)?;
    if buf.len() as u64 != size {
        return Err(StoreReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while reading",
        )));
    }
    if let Some(p) = pack {
        return p.add(repo, &buf).map_err(StoreReadError::Io);
    }
    repo.write_blob(&buf)
        .map(|id| id.detach())
        .map_err(|e| StoreReadError::Git(git_err("write blob")(e)))
}

// ---------------------------------------------------------------------------------------
// Tarballs

/// Most bytes the tar reader may read between the end of one member's data and the start
/// of the next one's: the member's header block and, before it, its GNU long name and
/// long link records, PAX records and sparse map, which the tar crate reads whole into
/// memory. Legitimate ones are a few KiB (a path of 1024 components of 255 bytes is 261
/// KiB; PAX `SCHILY.xattr` values are at most 64 KiB each). Without the bound a 1.5 MiB
/// gzip of a GNU long name record of 1.5 GiB made `ch-image import` use 11 GB of memory.
pub const MAX_MEMBER_HEADERS: u64 = 16 << 20;

/// A reader for [`tar::Archive`] that fails with an error once more than
/// [`MAX_MEMBER_HEADERS`] bytes lie between one member's data and the next member's:
/// give every member the archive yields to [`HeaderBudget::member`] before reading it.
pub struct HeaderBounded<R> {
    inner: R,
    budget: HeaderBudget,
}

/// The shared position and limit of a [`HeaderBounded`] reader.
#[derive(Clone)]
pub struct HeaderBudget(
    std::sync::Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
);

impl<R: Read> HeaderBounded<R> {
    /// Wrap `inner`, the stream the tar reader reads directly (no buffering between).
    pub fn new(inner: R) -> (Self, HeaderBudget) {
        let budget = HeaderBudget(std::sync::Arc::new((
            0.into(),
            (MAX_MEMBER_HEADERS + 512).into(),
        )));
        (
            HeaderBounded {
                inner,
                budget: budget.clone(),
            },
            budget,
        )
    }
}

impl HeaderBudget {
    /// Allow reading `member`'s data, its padding and the next member's headers: call
    /// it with each member the archive yields, before anything else reads the stream.
    pub fn member<R: Read>(&self, member: &tar::Entry<'_, R>) {
        use std::sync::atomic::Ordering::SeqCst;
        // What the member takes in the stream: the PAX size when there is one (the tar
        // crate's `size`), the stored blocks of a GNU sparse file (its `size` is the
        // size it expands to).
        let stored = if member.header().entry_type().is_gnu_sparse() {
            member.header().entry_size().unwrap_or(0)
        } else {
            member.size()
        };
        let padded = stored.saturating_add(511) & !511;
        let pos = self.0 .0.load(SeqCst);
        self.0 .1.store(
            pos.saturating_add(padded)
                .saturating_add(MAX_MEMBER_HEADERS),
            SeqCst,
        );
    }
}

/// Seeking (how `entries_with_seek` skips data) moves the position the limit is held to.
impl<R: io::Seek> io::Seek for HeaderBounded<R> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(to)?;
        self.budget
            .0
             .0
            .store(at, std::sync::atomic::Ordering::SeqCst);
        Ok(at)
    }
}

impl<R: Read> Read for HeaderBounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        let (pos, limit) = (self.budget.0 .0.load(SeqCst), self.budget.0 .1.load(SeqCst));
        if pos >= limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more than {MAX_MEMBER_HEADERS} bytes of headers before a member \
                     (GNU long name or link records, PAX records): refused"
                ),
            ));
        }
        let room = usize::try_from(limit - pos).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        let got = self.inner.read(&mut buf[..n])?;
        self.budget.0 .0.fetch_add(got as u64, SeqCst);
        Ok(got)
    }
}

/// Open a possibly compressed archive, sniffing the compression from its magic bytes.
pub fn open_archive(path: &Path) -> Result<Box<dyn Read + Send>, ImportError> {
    let f = crate::progress::Reading(fs::File::open(path).at("open", path)?);
    let mut r = BufReader::with_capacity(1 << 20, f);
    let head = r.fill_buf().at("read", path)?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(ThreadedReader::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ThreadedReader::new(
            zstd::stream::read::Decoder::with_buffer(r).at("read zstd", path)?,
        ))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(ThreadedReader::new(
            xz2::read::XzDecoder::new_multi_decoder(r),
        ))
    } else if head.starts_with(b"BZh") {
        // Multi-stream, as pbzip2 and lbzip2 write.
        Box::new(ThreadedReader::new(bzip2::read::MultiBzDecoder::new(r)))
    } else if is_lzma_alone(&head) {
        let stream = xz2::stream::Stream::new_lzma_decoder(u64::MAX)
            .map_err(io::Error::other)
            .at("read lzma", path)?;
        Box::new(ThreadedReader::new(xz2::bufread::XzDecoder::new_stream(
            r, stream,
        )))
    } else {
        Box::new(r)
    })
}

/// Whether `head` starts like a legacy `.lzma` file (`xz --format=lzma`, LZMA-Alone),
/// which has no magic number: the properties byte of `lzma`'s default settings (0x5D,
/// as file(1) checks), a dictionary size of 2^n or 2^n + 2^(n-1) bytes whose low two
/// bytes are zero (as liblzma writes for every preset; not 0, which a plain tar whose
/// first member is named `]` would give), and an uncompressed size that is unknown (all
/// ones) or below 256 TiB. Charliecloud reads such tarballs (Python's tarfile); Docker's
/// ADD does not.
pub fn is_lzma_alone(head: &[u8]) -> bool {
    let Some(h) = head.get(..13) else {
        return false;
    };
    let dict = u32::from_le_bytes(h[1..5].try_into().expect("4 bytes"));
    let size = u64::from_le_bytes(h[5..13].try_into().expect("8 bytes"));
    let dict_ok =
        dict != 0 && (dict.is_power_of_two() || (dict % 3 == 0 && (dict / 3).is_power_of_two()));
    h[0] == 0x5D && dict & 0xFFFF == 0 && dict_ok && (size == u64::MAX || size < 1 << 48)
}

/// Decompresses on its own thread, so that decompression overlaps tar parsing and hashing.
/// Chunks go through a small bounded channel; an error is passed on to the reader.
struct ThreadedReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ThreadedReader {
    fn new<R: Read + Send + 'static>(mut inner: R) -> ThreadedReader {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
        std::thread::spawn(move || loop {
            let mut chunk = vec![0u8; 1 << 20];
            let mut filled = 0;
            // Fill the chunk (decoders return short reads).
            let r = loop {
                match inner.read(&mut chunk[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == chunk.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            chunk.truncate(filled);
            let end = filled == 0;
            match r {
                Ok(()) => {
                    // A closed channel means the consumer stopped: stop too.
                    if tx.send(Ok(chunk)).is_err() || end {
                        return;
                    }
                }
                Err(e) => {
                    // What was decoded before the error comes first, so the reader names
                    // the right member.
                    if filled > 0 && tx.send(Ok(chunk)).is_err() {
                        return;
                    }
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        });
        ThreadedReader {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ThreadedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            crate::interrupt::check()?;
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    if chunk.is_empty() {
                        self.done = true;
                    }
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => return Err(io::Error::other("decompression thread ended")),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes blobs on the rayon pool while the caller keeps reading the archive. Object ids
/// are computed on the pool too: the model first gets a placeholder id per file, which
/// [`BackgroundWriter::fix_ids`] replaces once all writes are done.
struct BackgroundWriter<'a> {
    ts: &'a gix::ThreadSafeRepository,
    /// The archive read, for errors.
    archive: PathBuf,
    in_flight: AtomicUsize,
    error: Mutex<Option<ImportError>>,
    pack: PackBuilder,
    /// Placeholder id -> real id.
    ids: Mutex<HashMap<ObjectId, ObjectId>>,
    next: std::sync::atomic::AtomicU64,
}

const IN_FLIGHT_LIMIT: usize = 256 << 20;

impl<'a> BackgroundWriter<'a> {
    fn pack_dir(&self) -> PathBuf {
        objects_dir(self.ts).join("pack")
    }

    fn new(ts: &'a gix::ThreadSafeRepository, archive: &Path) -> BackgroundWriter<'a> {
        BackgroundWriter {
            ts,
            archive: archive.to_path_buf(),
            in_flight: AtomicUsize::new(0),
            error: Mutex::new(None),
            pack: PackBuilder::stored(&objects_dir(ts)),
            ids: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A placeholder id: a prefix no SHA-1 output is expected to have, and a counter.
    fn placeholder(&self) -> ObjectId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut b = [0u8; 20];
        b[..12].copy_from_slice(b"grove-pendin");
        b[12..].copy_from_slice(&n.to_be_bytes());
        ObjectId::from_bytes_or_panic(&b)
    }

    /// Replace placeholder ids in `dir` by the real ones.
    fn fix_ids(&self, dir: &mut Dir) {
        let ids = self.ids.lock().expect("id map");
        fn go(d: &mut Dir, ids: &HashMap<ObjectId, ObjectId>) {
            for n in d.children.values_mut() {
                match n {
                    Node::File(f) => {
                        if let Some(real) = ids.get(&f.oid) {
                            f.oid = *real;
                        }
                    }
                    Node::Dir(sub) => go(sub, ids),
                    _ => {}
                }
            }
        }
        if !ids.is_empty() {
            go(dir, &ids);
        }
    }

    /// Hash and store `blob`, the contents of archive member `member`, on the pool.
    fn submit<'s>(&'s self, scope: &rayon::Scope<'s>, blob: StoredBlob, member: &str) -> ObjectId {
        let placeholder = self.placeholder();
        while self.in_flight.load(Ordering::Acquire) > IN_FLIGHT_LIMIT {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let len = blob.size();
        self.in_flight.fetch_add(len, Ordering::AcqRel);
        let member = member.to_string();
        scope.spawn(move |_| {
            let repo = repo_for_writing(self.ts);
            let id = match blob.oid() {
                Ok(id) => id,
                // A SHA-1 collision attack (as git, the hash detects them).
                Err(e) => {
                    *self.error.lock().expect("error slot") = Some(ImportError::Member {
                        archive: self.archive.clone(),
                        member,
                        reason: e.to_string(),
                    });
                    self.in_flight.fetch_sub(len, Ordering::AcqRel);
                    return;
                }
            };
            self.ids.lock().expect("id map").insert(placeholder, id);
            if let Err(e) = self.pack.add_stored(&repo, id, blob) {
                *self.error.lock().expect("error slot") = Some(ImportError::Io(IoError {
                    action: "write pack",
                    path: self.pack_dir(),
                    source: e,
                }));
            }
            self.in_flight.fetch_sub(len, Ordering::AcqRel);
        });
        placeholder
    }
}

/// Whether [`apply_layer`] treats `.wh.` names as OCI whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// A plain tarball: `.wh.` names are ordinary files.
    Keep,
    /// An image layer: `.wh.NAME` deletes `NAME` from the layers below, `.wh..wh..opq`
    /// empties its directory of everything the layers below put there.
    Apply,
}

/// Apply one tar stream (already decompressed) onto `root`, as a layer of an image: each
/// member replaces what was at its path (a directory merges with a directory), file
/// contents go to the object database on the rayon pool, and with [`Whiteouts::Apply`]
/// the OCI whiteouts of the image-spec's layer section delete lower entries. `label` names
/// the stream in errors. The same checks as a tarball import hold: `..`, absolute paths and
/// paths through symlinks are refused, device files are skipped with a warning.
///
/// Registry pull and `ch-convert` (OCI layouts, `docker save` archives) share this
/// function; apply layers bottom first. On error `root` may hold part of the layer.
pub fn apply_layer(
    ts: &gix::ThreadSafeRepository,
    root: &mut Dir,
    reader: impl Read + Send,
    label: &Path,
    whiteouts: Whiteouts,
    xattrs: XattrPolicy,
) -> Result<Warnings, ImportError> {
    apply_layer_shaped(ts, root, reader, label, whiteouts, xattrs).map(|(w, _)| w)
}

/// How a tar stream's members were laid out, for the single-top-directory rule.
struct Shape {
    /// A member named the root itself (`./`, as `tar -C DIR -cf X .` writes).
    saw_root: bool,
    /// First components of the members (at most two kept), skipped members included.
    tops: std::collections::BTreeSet<Vec<u8>>,
}

fn apply_layer_shaped(
    ts: &gix::ThreadSafeRepository,
    root: &mut Dir,
    reader: impl Read + Send,
    label: &Path,
    whiteouts: Whiteouts,
    xattrs: XattrPolicy,
) -> Result<(Warnings, Shape), ImportError> {
    let writer = BackgroundWriter::new(ts, label);
    let repo = repo_for_writing(ts);
    let mut warnings = Vec::new();
    let mut group_of: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut next_group = 1u32;
    root.walk(&mut |_, n| {
        if let Node::File(File {
            link_group: Some(g),
            ..
        }) = n
        {
            next_group = next_group.max(g + 1);
        }
    });
    let layered = whiteouts == Whiteouts::Apply;
    // Paths this layer put in place, with their ancestors: what an opaque whiteout keeps.
    let mut added: HashSet<Vec<u8>> = HashSet::new();
    // A member naming the root itself (`./`, as `tar -C DIR -cf X .` writes) says the
    // archive's top level is the image root: nothing is stripped then.
    let mut saw_root = false;
    // First components of all members, skipped ones included: a skipped device file at
    // the top level still means the archive has more than one top entry.
    let mut tops: std::collections::BTreeSet<Vec<u8>> = Default::default();
    let archive_path = label.to_path_buf();
    let result: Result<(), ImportError> = rayon::in_place_scope(|scope| {
        let (reader, budget) = HeaderBounded::new(reader);
        let mut ar = tar::Archive::new(reader);
        let mut last = String::from("(none: first member)");
        let entries = ar.entries().map_err(|source| ImportError::Archive {
            archive: archive_path.clone(),
            after: last.clone(),
            source: escaped_io(source),
        })?;
        let mut members = 0usize;
        for entry in entries {
            let mut entry = entry.map_err(|source| ImportError::Archive {
                archive: archive_path.clone(),
                after: last.clone(),
                source: escaped_io(source),
            })?;
            budget.member(&entry);
            // An image holds at most MAX_ENTRIES entries; refuse an archive of more
            // members before its model takes gigabytes (empty members are 512 bytes of
            // zeros in the stream: a 100 MiB gzip names millions).
            members += 1;
            if members > super::git::MAX_ENTRIES {
                return Err(ImportError::Archive {
                    archive: archive_path.clone(),
                    after: last.clone(),
                    source: io::Error::other(format!(
                        "more than {} members, more than an image holds",
                        super::git::MAX_ENTRIES
                    )),
                });
            }
            let raw = entry.path_bytes().into_owned();
            // Messages name the member; a name of megabytes is cut short, and control
            // characters are escaped (a newline would forge a line of the message, an
            // escape sequence reach the terminal).
            let member = if raw.len() > 4096 {
                format!(
                    "{}… ({} bytes)",
                    crate::log::shown(&model::show(&raw[..4096])),
                    raw.len()
                )
            } else {
                crate::log::shown(&model::show(&raw)).into_owned()
            };
            let bad = |reason: &str| ImportError::Member {
                archive: archive_path.clone(),
                member: member.clone(),
                reason: reason.to_string(),
            };
            let mpath = |source| ImportError::MemberPath {
                archive: archive_path.clone(),
                member: member.clone(),
                source,
            };
            let kind = entry.header().entry_type();
            let mode = kept_mode(
                kind.is_dir(),
                entry
                    .header()
                    .mode()
                    .map_err(|_| bad("invalid mode field"))?,
            );
            let mtime = member_time(&mut entry).ok_or_else(|| bad("invalid mtime field"))?;
            let comps = match model::components(&raw) {
                Ok(c) => c,
                Err(PathError::Empty) if kind.is_dir() => {
                    root.mode = mode;
                    root.times.set(b"", mtime);
                    saw_root = true;
                    last = member;
                    continue;
                }
                Err(e) => return Err(mpath(e)),
            };
            // Names and paths a file system can hold; a layer's whiteout `.wh.NAME` names
            // NAME (checked with the whiteout below). The member is quoted short: it may
            // be kilobytes.
            let whiteout = layered && comps[comps.len() - 1].starts_with(b".wh.");
            if let Some(why) = model::too_long(&comps, whiteout) {
                return Err(ImportError::Member {
                    archive: archive_path.clone(),
                    member: model::show_short(&raw),
                    reason: why,
                });
            }
            let rel = comps.join(&b'/');
            if tops.len() < 2 {
                tops.insert(comps[0].to_vec());
            }
            if let Some(w) = skipped_member(kind, &archive_path, &member) {
                warnings.push(w);
                last = member;
                continue;
            }
            if layered {
                let name = comps[comps.len() - 1];
                if let Some(target) = name.strip_prefix(b".wh.") {
                    let parent = &comps[..comps.len() - 1];
                    // `.wh.` and `.wh..` would name the directory itself, `.wh...` its
                    // parent: a whiteout names one entry of its directory.
                    if target != b".wh..opq" {
                        if let Some(why) = model::bad_name(target) {
                            return Err(bad(&format!("invalid whiteout: {why}")));
                        }
                    }
                    if target == b".wh..opq" {
                        let dir = if parent.is_empty() {
                            Some(&mut *root)
                        } else {
                            match root.get_mut(&parent.join(&b'/')) {
                                Some(Node::Dir(d)) => Some(d),
                                _ => None,
                            }
                        };
                        if let Some(d) = dir {
                            keep_only_added(d, &parent.join(&b'/'), &added);
                        }
                    } else {
                        let mut victim = parent.join(&b'/');
                        if !victim.is_empty() {
                            victim.push(b'/');
                        }
                        victim.extend_from_slice(target);
                        root.remove(&victim).map_err(mpath)?;
                        group_of.remove(&victim);
                    }
                    last = member;
                    continue;
                }
                let mut prefix = Vec::with_capacity(rel.len());
                for (k, c) in comps.iter().enumerate() {
                    if k > 0 {
                        prefix.push(b'/');
                    }
                    prefix.extend_from_slice(c);
                    added.insert(prefix.clone());
                }
            }
            // Extended attributes from PAX headers (`SCHILY.xattr.user.*`), with --xattrs.
            if xattrs.record() {
                let mut x: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                if let Ok(Some(exts)) = entry.pax_extensions() {
                    for e in exts.flatten() {
                        if let Some(n) = e.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                            if model::is_image_xattr(n) {
                                x.push((n.to_vec(), e.value_bytes().to_vec()));
                            }
                        }
                    }
                }
                if x.is_empty() {
                    root.xattrs.remove(&rel);
                } else {
                    x.sort();
                    root.xattrs.insert(rel.clone(), x);
                }
            }
            use tar::EntryType as T;
            match kind {
                T::Regular | T::Continuous | T::GNUSparse => {
                    let size = entry.size();
                    crate::progress::items(1);
                    let oid = if size >= STREAM_THRESHOLD {
                        store_reader(&repo, &mut entry, size, None).map_err(|e| match e {
                            StoreReadError::Io(source) => ImportError::Archive {
                                archive: archive_path.clone(),
                                after: member.clone(),
                                source: escaped_io(source),
                            },
                            StoreReadError::Git(g) => ImportError::Git(g),
                        })?
                    } else {
                        let blob = match StoredBlob::read(&mut entry, size as usize) {
                            Ok(b) => b,
                            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                return Err(bad("truncated data"))
                            }
                            Err(source) => {
                                return Err(ImportError::Archive {
                                    archive: archive_path.clone(),
                                    after: member.clone(),
                                    source: escaped_io(source),
                                })
                            }
                        };
                        writer.submit(scope, blob, &member)
                    };
                    group_of.remove(&rel);
                    root.insert(
                        &rel,
                        Node::File(File {
                            mode,
                            oid,
                            size,
                            link_group: None,
                        }),
                    )
                    .map_err(mpath)?;
                }
                T::Directory => root
                    .insert(&rel, Node::Dir(Dir::new(mode)))
                    .map_err(mpath)?,
                T::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| bad("symlink without target"))?
                        .into_owned();
                    // What a checkout can write and what reading the tree back accepts.
                    if target.len() as u64 > super::git::MAX_SYMLINK_TARGET {
                        return Err(bad(&format!(
                            "symlink target is {} bytes, longer than {} (PATH_MAX)",
                            target.len(),
                            super::git::MAX_SYMLINK_TARGET
                        )));
                    }
                    if target.contains(&0) {
                        return Err(bad("symlink target contains a NUL byte"));
                    }
                    root.insert(&rel, Node::Symlink { target }).map_err(mpath)?;
                }
                T::Link => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| bad("hard link without target"))?
                        .into_owned();
                    let tcomps = model::components(&target).map_err(|e| {
                        bad(&format!(
                            "hard link target {}: {e}",
                            crate::log::shown(&model::show(&target))
                        ))
                    })?;
                    let trel = tcomps.join(&b'/');
                    let g = match (group_of.get(&trel), root.get(&trel)) {
                        (Some(g), _) => *g,
                        // A link to a file of a lower layer that is already linked.
                        (
                            None,
                            Some(Node::File(File {
                                link_group: Some(g),
                                ..
                            })),
                        ) => *g,
                        _ => {
                            let g = next_group;
                            next_group += 1;
                            g
                        }
                    };
                    let file = match root.get(&trel) {
                        Some(Node::File(f)) => File {
                            link_group: Some(g),
                            ..f.clone()
                        },
                        _ => {
                            return Err(bad(&format!(
                                "hard link target is not an earlier regular file: {}",
                                crate::log::shown(&model::show(&target))
                            )))
                        }
                    };
                    group_of.insert(trel.clone(), g);
                    group_of.insert(rel.clone(), g);
                    root.insert(&trel, Node::File(file.clone()))
                        .map_err(mpath)?;
                    root.insert(&rel, Node::File(file)).map_err(mpath)?;
                }
                T::Fifo => root.insert(&rel, Node::Fifo { mode }).map_err(mpath)?,
                // Skipped above ([`skipped_member`]), or headers tar reads itself.
                _ => {}
            }
            // After the entry is in place (an insert drops the times of what it replaces).
            if matches!(
                kind,
                T::Regular
                    | T::Continuous
                    | T::GNUSparse
                    | T::Directory
                    | T::Symlink
                    | T::Link
                    | T::Fifo
            ) {
                root.times.set(&rel, mtime);
            }
            last = member;
        }
        Ok(())
    });
    result?;
    let pack_dir = writer.pack_dir();
    writer.fix_ids(root);
    if let Some(e) = writer.error.into_inner().expect("error slot") {
        return Err(e);
    }
    writer.pack.finish().at("write pack", pack_dir)?;
    Ok((warnings, Shape { saw_root, tops }))
}

/// A member's modification time in whole seconds: the PAX `mtime` record when there is
/// one (a negative time too; a fraction is dropped), else the header's. `None`
/// for a field that is not a number.
fn member_time<R: Read>(entry: &mut tar::Entry<R>) -> Option<model::Mtime> {
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for e in exts.flatten() {
            if e.key_bytes() == b"mtime" {
                if let Some(t) = std::str::from_utf8(e.value_bytes())
                    .ok()
                    .and_then(parse_pax_time)
                {
                    // Whole seconds, as every input (see `Mtime::of`): the second the
                    // time falls in.
                    return Some(model::Mtime::new(t.sec, 0));
                }
            }
        }
    }
    let secs = entry.header().mtime().ok()?;
    Some(model::Mtime::new(i64::try_from(secs).ok()?, 0))
}

/// A PAX time (`[-]SECONDS[.FRACTION]`) as seconds and nanoseconds (the fraction cut to
/// nanoseconds; a negative time's fraction counts back from its seconds).
pub(crate) fn parse_pax_time(s: &str) -> Option<model::Mtime> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sec: i64 = whole.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, n) => model::Mtime::new(sec, n),
        (true, 0) => model::Mtime::new(-sec, 0),
        (true, n) => model::Mtime::new(-sec - 1, 1_000_000_000 - n),
    })
}

/// Opaque whiteout: drop from `dir` (at `path`) everything not in `added`, recursively.
fn keep_only_added(dir: &mut Dir, path: &[u8], added: &HashSet<Vec<u8>>) {
    dir.children.retain(|name, node| {
        let mut p = path.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        if !added.contains(&p) {
            return false;
        }
        if let Node::Dir(d) = node {
            keep_only_added(d, &p, added);
        }
        true
    });
}

fn import_tar(
    ts: &gix::ThreadSafeRepository,
    path: &Path,
    xattrs: XattrPolicy,
) -> Result<(Dir, Warnings), ImportError> {
    let reader = open_archive(path)?;
    crate::progress::set_totals(0, fs::metadata(path).map(|m| m.len()).unwrap_or(0));
    let mut root = Dir::new(0o755);
    let (warnings, shape) =
        apply_layer_shaped(ts, &mut root, reader, path, Whiteouts::Keep, xattrs)?;
    // A single top directory is the image root (FAQ: tarballs with one top directory),
    // unless the archive has a member for the root itself.
    if !shape.saw_root && shape.tops.len() == 1 && root.children.len() == 1 {
        if let Some((_, Node::Dir(_))) = root.children.iter().next() {
            let (top, node) = root.children.pop_first().expect("one child");
            if let Node::Dir(mut d) = node {
                // Extended attributes move with the new root, their paths shortened.
                let mut prefix = top.clone();
                prefix.push(b'/');
                d.xattrs = std::mem::take(&mut root.xattrs)
                    .into_iter()
                    .filter_map(|(p, x)| {
                        p.strip_prefix(prefix.as_slice())
                            .map(|rest| (rest.to_vec(), x))
                    })
                    .collect();
                d.times = root.times.subtree(&top);
                root = d;
            }
        }
    }
    Ok((root, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lzma_alone_headers_are_told_from_other_starts() {
        // `xz --format=lzma` at its default preset: properties 0x5D, 8 MiB dictionary,
        // size unknown.
        let mut h = vec![0x5D, 0, 0, 0x80, 0];
        h.extend([0xFF; 8]);
        assert!(is_lzma_alone(&h));
        let mut sized = h.clone();
        sized[5..13].copy_from_slice(&10240u64.to_le_bytes());
        assert!(is_lzma_alone(&sized));
        assert!(!is_lzma_alone(&h[..12]));
        let mut other = h.clone();
        other[0] = 0x5E;
        assert!(!is_lzma_alone(&other));
        let mut huge = h.clone();
        huge[5..13].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(!is_lzma_alone(&huge));
        assert!(!is_lzma_alone(b"ustar\0 plain tar data"));
        // A plain tar whose first member is named `]`.
        let mut tar = vec![0u8; 512];
        tar[0] = b']';
        assert!(!is_lzma_alone(&tar));
        // 12 MiB (2^23 + 2^22) is a dictionary size liblzma writes, 10 MiB is not.
        let mut d12 = h.clone();
        d12[1..5].copy_from_slice(&(12u32 << 20).to_le_bytes());
        assert!(is_lzma_alone(&d12));
        d12[1..5].copy_from_slice(&(10u32 << 20).to_le_bytes());
        assert!(!is_lzma_alone(&d12));
    }

    fn repo() -> (tempfile::TempDir, gix::ThreadSafeRepository) {
        let t = tempfile::tempdir().expect("tempdir");
        let r = gix::init_bare(t.path().join("r.git")).expect("init");
        (t, r.into_sync())
    }

    enum M<'a> {
        F(&'a str, &'a [u8]),
        D(&'a str),
        L(&'a str, &'a str),
    }

    fn tarball(members: &[M]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match m {
                M::F(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                M::D(p) => {
                    h.set_mode(0o755);
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    b.append_data(&mut h, p, io::empty()).unwrap();
                }
                M::L(p, t) => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Link);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn apply(ts: &gix::ThreadSafeRepository, root: &mut Dir, members: &[M], w: Whiteouts) {
        let data = tarball(members);
        apply_layer(
            ts,
            root,
            &data[..],
            Path::new("layer"),
            w,
            XattrPolicy::Ignore,
        )
        .expect("apply");
    }

    fn names(root: &Dir) -> Vec<String> {
        let mut v = Vec::new();
        root.walk(&mut |p, _| v.push(model::show(p)));
        v
    }

    #[test]
    fn special_modes_come_from_the_listing() {
        let l = b"drwxr-xr-x 0/0 151 1970-01-01 00:00 squashfs-root\n\
-rwsr-xr-x 0/0 1982256 1970-01-01 00:00 squashfs-root/bin/su do\n\
drwxrwsr-T 0/0 3 1970-01-01 00:00 squashfs-root/g\n\
-rw-r--r-- 0/0 3 1970-01-01 00:00 squashfs-root/plain\n";
        assert_eq!(
            special_modes(l),
            vec![(b"bin/su do".to_vec(), 0o4755), (b"g".to_vec(), 0o3774)]
        );
    }

    #[test]
    fn whiteout_deletes_a_lower_entry() {
        let (_t, ts) = repo();
        let mut root = Dir::new(0o755);
        apply(
            &ts,
            &mut root,
            &[M::D("a"), M::F("a/x", b"1"), M::F("a/y", b"2")],
            Whiteouts::Apply,
        );
        apply(&ts, &mut root, &[M::F("a/.wh.x", b"")], Whiteouts::Apply);
        assert_eq!(names(&root), ["a", "a/y"]);
    }

    #[test]
    fn opaque_whiteout_keeps_only_this_layers_entries() {
        let (_t, ts) = repo();
        let mut root = Dir::new(0o755);
        apply(
            &ts,
            &mut root,
            &[
                M::D("a"),
                M::F("a/x", b"1"),
                M::D("a/d"),
                M::F("a/d/old", b"2"),
                M::F("b", b"3"),
            ],
            Whiteouts::Apply,
        );
        apply(
            &ts,
            &mut root,
            &[
                M::D("a"),
                M::F("a/d/new", b"4"),
                M::F("a/.wh..wh..opq", b""),
                M::F("a/z", b"5"),
            ],
            Whiteouts::Apply,
        );
        assert_eq!(names(&root), ["a", "a/d", "a/d/new", "a/z", "b"]);
    }

    #[test]
    fn whiteouts_naming_their_own_directory_are_invalid() {
        let (_t, ts) = repo();
        for bad in ["a/.wh.", "a/.wh..", "a/.wh..."] {
            let mut root = Dir::new(0o755);
            apply(
                &ts,
                &mut root,
                &[M::D("a"), M::F("a/x", b"1")],
                Whiteouts::Apply,
            );
            let data = tarball(&[M::F(bad, b"")]);
            let err = apply_layer(
                &ts,
                &mut root,
                &data[..],
                Path::new("l"),
                Whiteouts::Apply,
                XattrPolicy::Ignore,
            )
            .expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
            assert_eq!(names(&root), ["a", "a/x"], "{bad}");
        }
    }

    #[test]
    fn whiteout_names_are_plain_files_in_a_plain_tarball() {
        let (_t, ts) = repo();
        let mut root = Dir::new(0o755);
        apply(
            &ts,
            &mut root,
            &[M::F("x", b"1"), M::F(".wh.x", b"")],
            Whiteouts::Keep,
        );
        assert_eq!(names(&root), [".wh.x", "x"]);
    }

    #[test]
    fn hard_link_to_a_lower_layer_joins_its_group() {
        let (_t, ts) = repo();
        let mut root = Dir::new(0o755);
        apply(
            &ts,
            &mut root,
            &[M::F("a", b"1"), M::L("b", "a")],
            Whiteouts::Apply,
        );
        apply(
            &ts,
            &mut root,
            &[M::F("n", b"2"), M::L("m", "n"), M::L("c", "a")],
            Whiteouts::Apply,
        );
        let group = |p: &[u8]| match root.get(p) {
            Some(Node::File(f)) => f.link_group,
            other => panic!("{other:?}"),
        };
        assert!(group(b"a").is_some());
        assert_eq!(group(b"a"), group(b"b"));
        assert_eq!(group(b"a"), group(b"c"));
        assert_eq!(group(b"m"), group(b"n"));
        assert_ne!(group(b"a"), group(b"n"));
    }
}
