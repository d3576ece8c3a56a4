//! Export a model as a tar stream: deterministic (entries depth-first in byte order,
//! owner root:root, the recorded mtimes in whole seconds, `$SOURCE_DATE_EPOCH` or 0 where
//! none is recorded), with the exact recorded modes, hard links as tar
//! hard links and FIFOs as FIFOs; as a SquashFS file (that tar stream piped into
//! `tar2sqfs` or `mksquashfs -tar`; with squashfs-tools before 4.6 only, `mksquashfs` on a
//! temporary checkout, since their sqfstar can't lower zstd's slow level 15); and as gzip
//! compressed in parallel ([`ParGz`]).
//!
//! Invariant: the same model gives the same bytes, whatever the machine, the number of
//! cores or the time of day (only `$SOURCE_DATE_EPOCH` changes the fixed mtime of
//! entries without a recorded time).

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gix::ObjectId;
use rayon::prelude::*;

use super::git::GitError;
use super::model::{Dir, Node};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("can't write tar stream")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("refusing to export unsafe entry \"{path}\": {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("can't make SquashFS: none of tar2sqfs, mksquashfs or sqfstar found")]
    NoSquashTool,
    #[error("can't check out the image for mksquashfs")]
    Checkout(#[from] super::checkout::CheckoutError),
    #[error("can't write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("can't name \"{path}\" in a mksquashfs pseudo file (a newline in the name); install squashfs-tools-ng (tar2sqfs)")]
    PseudoName { path: String },
    #[error("can't run {tool}")]
    Spawn {
        tool: String,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed ({status}) writing {path}")]
    ToolFailed {
        tool: String,
        status: std::process::ExitStatus,
        path: PathBuf,
        /// Bytes free on the output's file system when the tool had failed (before the
        /// partial output was removed): tar2sqfs and mksquashfs say only "I/O error".
        free: Option<u64>,
    },
}

/// Below this many bytes free, a failed tool's file system counts as full.
const FULL_BELOW: u64 = 1 << 20;

impl ExportError {
    /// `tool` failed with `status` writing `out`.
    fn tool_failed(tool: &str, status: std::process::ExitStatus, out: &Path) -> ExportError {
        let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
        let free = nix::sys::statvfs::statvfs(dir.unwrap_or(Path::new(".")))
            .ok()
            .map(|v| v.blocks_available() * v.fragment_size());
        ExportError::ToolFailed {
            tool: tool.into(),
            status,
            path: out.to_path_buf(),
            free,
        }
    }
}

impl ExportError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ExportError::NoSquashTool => {
                Some("install squashfs-tools-ng (tar2sqfs) or squashfs-tools 4.5+ (Debian: apt-get install squashfs-tools-ng)".into())
            }
            ExportError::ToolFailed {
                tool,
                path,
                free: Some(free),
                ..
            } if *free < FULL_BELOW => Some(format!(
                "the file system of {} is full ({} KiB free when {tool} failed): make room and try again",
                path.parent().unwrap_or(path).display(),
                free >> 10
            )),
            _ => None,
        }
    }
}

/// The mtime of exported entries without a recorded time, and of archive members that are
/// not image files: `$SOURCE_DATE_EPOCH` if set, else 0.
pub fn fixed_mtime() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h
}

/// Choices for [`write_tar_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TarOptions {
    /// Clear setuid and setgid bits (push: the image may be run by a privileged runtime).
    pub clear_setid: bool,
    /// Leave out the `./` member for the root directory.
    pub omit_root_entry: bool,
    /// Name every member `./PATH` (a directory `./PATH/`, hard link targets `./PATH`), as
    /// `tar cf - .` in the image directory does (Charliecloud's ch-convert): `ch-convert`
    /// tar exports. Without it members are `PATH` but the root's, `./` (OCI layers, whose
    /// digests it keeps).
    pub dot_names: bool,
}

/// Write `root` as a tar stream (without the end-of-archive marker being skipped: the
/// builder is finished).
pub fn write_tar<W: Write>(repo: &gix::Repository, root: &Dir, out: W) -> Result<W, ExportError> {
    write_tar_with(
        repo,
        root,
        out,
        TarOptions {
            dot_names: true,
            ..TarOptions::default()
        },
    )
}

/// [`write_tar`] without the `./` member for the root directory (sqfstar warns about it;
/// the root's mode is passed to it separately).
pub fn write_tar_opts<W: Write>(
    repo: &gix::Repository,
    root: &Dir,
    out: W,
    root_entry: bool,
) -> Result<W, ExportError> {
    write_tar_with(
        repo,
        root,
        out,
        TarOptions {
            omit_root_entry: !root_entry,
            ..TarOptions::default()
        },
    )
}

/// [`write_tar`] with options.
pub fn write_tar_with<W: Write>(
    repo: &gix::Repository,
    root: &Dir,
    out: W,
    opts: TarOptions,
) -> Result<W, ExportError> {
    if let Some((path, reason)) = super::model::find_bad_entry(root) {
        return Err(ExportError::Unsafe {
            path: super::model::show(&path),
            reason,
        });
    }
    // The contents, in the order the walk below writes them, read ahead on every core.
    let mut wanted = Vec::new();
    let mut groups = std::collections::HashSet::new();
    root.walk(&mut |_, node| {
        if let Node::File(f) = node {
            if let Some(oid) = content_of(f, |g| !groups.insert(g)) {
                wanted.push(oid);
            }
        }
    });
    std::thread::scope(|scope| {
        let mut ahead = ReadAhead::start(scope, repo, wanted);
        write_entries(repo, root, out, opts, &mut ahead)
    })
}

/// Blob contents read ahead for a tar stream: a background thread reads them, in the order
/// the stream needs them, in batches of at most [`READ_AHEAD_BATCH`] bytes ([`next_batch`]) inflated on every
/// core (rayon), at most [`READ_AHEAD_DEPTH`] batches ahead of the writer. So a compressed
/// pack costs the stream little more than a stored one, and memory stays bounded: blobs
/// of [`super::git::STREAM_BLOB_MIN`] bytes or more are not read ahead but streamed by the
/// writer ([`super::git::open_blob`]).
struct ReadAhead {
    batches: std::sync::mpsc::Receiver<Result<Vec<Ahead>, GitError>>,
    current: std::vec::IntoIter<Ahead>,
}

/// One blob read ahead: its contents, or `None` for one the writer streams itself.
type Ahead = (ObjectId, Option<Vec<u8>>);

const READ_AHEAD_BATCH: u64 = 8 << 20;
const READ_AHEAD_DEPTH: usize = 2;

impl ReadAhead {
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        repo: &gix::Repository,
        wanted: Vec<ObjectId>,
    ) -> ReadAhead {
        let (tx, batches) = std::sync::mpsc::sync_channel(READ_AHEAD_DEPTH);
        let shared = repo.clone().into_sync();
        scope.spawn(move || {
            let repo = shared.to_thread_local();
            // With a fresh handle on a miss: this one lives for the whole export, and a
            // compaction can replace the packs meanwhile.
            let size = |id: ObjectId| super::git::blob_size(&repo, id);
            let mut rest = wanted.as_slice();
            while !rest.is_empty() {
                let sizes = match next_batch(rest.iter().map(|id| size(*id))) {
                    Ok(sizes) => sizes,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let (batch, later) = rest.split_at(sizes.len());
                rest = later;
                let read: Result<Vec<Ahead>, GitError> = batch
                    .par_iter()
                    .zip(sizes)
                    .map_init(
                        || shared.to_thread_local(),
                        |repo, (id, n)| {
                            if n >= super::git::STREAM_BLOB_MIN {
                                return Ok((*id, None));
                            }
                            super::git::read_blob(repo, *id).map(|data| (*id, Some(data)))
                        },
                    )
                    .collect();
                let failed = read.is_err();
                // The writer stopped (an error of its own): nothing more to read.
                if tx.send(read).is_err() || failed {
                    return;
                }
            }
        });
        ReadAhead {
            batches,
            current: Vec::new().into_iter(),
        }
    }

    /// The next blob's contents: a reader of `size` bytes.
    fn next(
        &mut self,
        repo: &gix::Repository,
        id: ObjectId,
    ) -> Result<(u64, Box<dyn io::Read + '_>), ExportError> {
        let item = match self.current.next() {
            Some(item) => item,
            None => {
                // The thread sends until every blob was read, or an error and stops.
                let batch = self
                    .batches
                    .recv()
                    .map_err(|_| io::Error::other(format!("blob {id} was not read ahead")))??;
                self.current = batch.into_iter();
                self.current
                    .next()
                    .ok_or_else(|| io::Error::other(format!("blob {id} was not read ahead")))?
            }
        };
        debug_assert_eq!(item.0, id, "blobs read ahead in the walk's order");
        match item.1 {
            Some(data) => Ok((data.len() as u64, Box::new(io::Cursor::new(data)))),
            None => {
                // Streamed: big blobs are never held whole (see git::open_blob).
                let blob = super::git::open_blob(repo, id)?;
                Ok((blob.size(), Box::new(blob)))
            }
        }
    }
}

/// The sizes of the blobs of the next batch, from the sizes of those left (looked up as
/// it goes, one past the batch at most): as many as hold [`READ_AHEAD_BATCH`] bytes read
/// ahead at most, and at least one (a blob of up to [`super::git::STREAM_BLOB_MIN`] bytes
/// alone); streamed blobs count nothing. So at most `READ_AHEAD_DEPTH + 2` batches are
/// in memory (queued, being read, being written): 32 MiB, or 64 MiB with big blobs.
fn next_batch<E>(sizes: impl Iterator<Item = Result<u64, E>>) -> Result<Vec<u64>, E> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for n in sizes {
        let n = n?;
        let ahead = if n >= super::git::STREAM_BLOB_MIN {
            0
        } else {
            n
        };
        if !batch.is_empty() && bytes + ahead > READ_AHEAD_BATCH {
            break;
        }
        batch.push(n);
        bytes += ahead;
    }
    Ok(batch)
}

/// The blob a tar stream carries as `f`'s contents, if any: none for an empty file, nor
/// for a hard link to a file written before (`seen(group)` says whether its group was,
/// and marks it written).
fn content_of(f: &super::model::File, seen: impl FnOnce(u32) -> bool) -> Option<ObjectId> {
    if f.link_group.is_some_and(seen) || f.oid == ObjectId::empty_blob(f.oid.kind()) {
        return None;
    }
    Some(f.oid)
}

/// The entries of [`write_tar_with`], with contents from `ahead`.
fn write_entries<W: Write>(
    repo: &gix::Repository,
    root: &Dir,
    out: W,
    opts: TarOptions,
    ahead: &mut ReadAhead,
) -> Result<W, ExportError> {
    let root_entry = !opts.omit_root_entry;
    let mask = if opts.clear_setid { !0o6000 } else { !0 };
    let header = |kind, mode: u32, size, mtime| header(kind, mode & mask, size, mtime);
    let fixed = fixed_mtime();
    // A time with nanoseconds, or before 1970, is kept exactly in a PAX `mtime` record
    // (the header holds whole seconds, never before the epoch): a tar export read back
    // gives the same image.
    let pax_time = |rel: &[u8]| -> Vec<(String, Vec<u8>)> {
        match root.times.get(rel) {
            Some(t) if t.nsec != 0 || t.sec < 0 => {
                vec![("mtime".to_string(), pax_time_value(t).into_bytes())]
            }
            _ => Vec::new(),
        }
    };
    let time_of = |rel: &[u8]| {
        root.times
            .get(rel)
            .map(|t| t.sec.max(0) as u64)
            .unwrap_or(fixed)
    };
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut primaries: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let mut result: Result<(), ExportError> = Ok(());
    // The root directory itself, as "./".
    if root_entry {
        let keys = pax_time(b"");
        if !keys.is_empty() {
            b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        let mut h = header(tar::EntryType::Directory, root.mode, 0, time_of(b""));
        b.append_data(&mut h, "./", io::empty())?;
    }
    let dot = opts.dot_names;
    root.walk(&mut |rel, node| {
        if result.is_err() {
            return;
        }
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes_compat(rel));
        let mtime = time_of(rel);
        // With `dot_names`, the member's name is written as given (tar-rs drops a
        // leading `./`).
        let named = |b: &mut tar::Builder<W>,
                     h: &mut tar::Header,
                     link: Option<&[u8]>,
                     data: &mut dyn io::Read|
         -> io::Result<()> {
            let name = [&b"./"[..], rel].concat();
            let link = link.map(|l| [&b"./"[..], l].concat());
            append_raw(b, h, &name, link.as_deref(), data)
        };
        let r: Result<(), ExportError> = (|| {
            // A SIGINT or SIGTERM (grove::interrupt) ends the export between entries.
            crate::interrupt::check()?;
            // Extended attributes, and a time with nanoseconds, go in one PAX header
            // before their entry.
            let mut keys: Vec<(String, Vec<u8>)> = pax_time(rel);
            if let Some(attrs) = root.xattrs.get(rel) {
                keys.extend(attrs.iter().map(|(n, v)| {
                    (
                        format!("SCHILY.xattr.{}", String::from_utf8_lossy(n)),
                        v.clone(),
                    )
                }));
            }
            if !keys.is_empty() {
                b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
            }
            match node {
                Node::Dir(d) => {
                    let mut h = header(tar::EntryType::Directory, d.mode, 0, mtime);
                    if dot {
                        // With a slash, as GNU tar names a directory.
                        let name = [&b"./"[..], rel, b"/"].concat();
                        append_raw(&mut b, &mut h, &name, None, &mut io::empty())?;
                    } else {
                        b.append_data(&mut h, path, io::empty())?;
                    }
                }
                Node::File(f) => {
                    if let Some(g) = f.link_group {
                        if let Some(primary) = primaries.get(&g) {
                            let mut h = header(tar::EntryType::Link, f.mode, 0, mtime);
                            if dot {
                                named(&mut b, &mut h, Some(primary), &mut io::empty())?;
                            } else {
                                b.append_link(
                                    &mut h,
                                    path,
                                    std::path::Path::new(std::ffi::OsStr::from_bytes_compat(
                                        primary,
                                    )),
                                )?;
                            }
                            return Ok(());
                        }
                        primaries.insert(g, rel.to_vec());
                    }
                    let (size, mut data): (u64, Box<dyn io::Read>) = match content_of(f, |_| false)
                    {
                        None => (0, Box::new(io::empty())),
                        Some(id) => ahead.next(repo, id)?,
                    };
                    crate::progress::file(size);
                    let mut h = header(tar::EntryType::Regular, f.mode, size, mtime);
                    if dot {
                        named(&mut b, &mut h, None, &mut data)?;
                    } else {
                        b.append_data(&mut h, path, data)?;
                    }
                }
                Node::Symlink { target } => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                    if dot {
                        // The target is the link's content, not a member name.
                        append_raw(
                            &mut b,
                            &mut h,
                            &[&b"./"[..], rel].concat(),
                            Some(target),
                            &mut io::empty(),
                        )?;
                    } else {
                        b.append_link(
                            &mut h,
                            path,
                            std::path::Path::new(std::ffi::OsStr::from_bytes_compat(target)),
                        )?;
                    }
                }
                Node::Fifo { mode } => {
                    let mut h = header(tar::EntryType::Fifo, *mode, 0, mtime);
                    if dot {
                        named(&mut b, &mut h, None, &mut io::empty())?;
                    } else {
                        b.append_data(&mut h, path, io::empty())?;
                    }
                }
            }
            Ok(())
        })();
        if r.is_err() {
            result = r;
        }
    });
    result?;
    Ok(b.into_inner()?)
}

/// Append the member `h` named `name` (and, for a link, with target `link`), both taken
/// byte for byte, then `data`: a name or target longer than its header field (100 bytes)
/// goes first in a GNU long-name (`L`) or long-link (`K`) member, as GNU tar and tar-rs
/// write them, the field holding its first 100 bytes.
fn append_raw<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: &mut dyn io::Read,
) -> io::Result<()> {
    fn long(
        b: &mut tar::Builder<impl Write>,
        kind: tar::EntryType,
        value: &[u8],
    ) -> io::Result<()> {
        let mut l = tar::Header::new_gnu();
        let gnu_name = b"././@LongLink";
        l.as_old_mut().name[..gnu_name.len()].copy_from_slice(gnu_name);
        l.set_mode(0o644);
        l.set_uid(0);
        l.set_gid(0);
        l.set_mtime(0);
        l.set_size(value.len() as u64 + 1);
        l.set_entry_type(kind);
        l.set_cksum();
        b.append(&l, io::Read::chain(value, &[0u8][..]))
    }
    let field = h.as_old().name.len();
    if name.len() > field {
        long(b, tar::EntryType::GNULongName, name)?;
    }
    if let Some(link) = link {
        if link.len() > field {
            long(b, tar::EntryType::GNULongLink, link)?;
        }
        let n = link.len().min(field);
        h.as_old_mut().linkname = [0; 100];
        h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
    }
    let n = name.len().min(field);
    h.as_old_mut().name = [0; 100];
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h.set_cksum();
    b.append(h, data)
}

/// A time as a PAX `mtime` value: `[-]SECONDS[.NNNNNNNNN]`, the fraction counting forward
/// from a positive time and back from a negative one (as tar readers take it).
pub(crate) fn pax_time_value(t: super::model::Mtime) -> String {
    match (t.sec < 0, t.nsec) {
        (_, 0) => t.sec.to_string(),
        (false, n) => format!("{}.{n:09}", t.sec),
        // -1 s + 0.25 s = -0.75 s
        (true, n) => {
            let whole = -(t.sec + 1);
            let frac = 1_000_000_000 - n;
            if whole == 0 {
                format!("-0.{frac:09}")
            } else {
                format!("-{whole}.{frac:09}")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Mount points

/// Directories ch-run binds onto or Charliecloud expects (Charliecloud's
/// `mount_points_ensure` list plus `/sys` and `/tmp`, which Grove's ch-run binds).
pub const MOUNT_DIRS: &[&str] = &[
    "bin", "dev", "etc", "mnt", "mnt/0", "mnt/1", "mnt/2", "mnt/3", "mnt/4", "mnt/5", "mnt/6",
    "mnt/7", "mnt/8", "mnt/9", "proc", "sys", "tmp", "usr",
];
/// Files ch-run binds the host's copies onto.
pub const MOUNT_FILES: &[&str] = &["etc/hosts", "etc/resolv.conf"];

/// `root` with the mount points of [`MOUNT_DIRS`] (empty, mode 0755) and [`MOUNT_FILES`]
/// (empty, mode 0644) added where nothing exists at that path. An existing entry of any
/// type, a symlink included, is left alone (it works as a bind target once the image is
/// mounted), and so is a path whose parent is not a directory. For read-only images
/// (SquashFS), where ch-run cannot create them.
pub fn with_mount_points(root: &Dir) -> Dir {
    let mut out = root.clone();
    let empty = ObjectId::empty_blob(gix::hash::Kind::Sha1);
    let entries = MOUNT_DIRS
        .iter()
        .map(|p| (p, true))
        .chain(MOUNT_FILES.iter().map(|p| (p, false)));
    for (path, is_dir) in entries {
        let p = path.as_bytes();
        if out.get(p).is_some() {
            continue;
        }
        let parent_ok = match p.iter().rposition(|b| *b == b'/') {
            None => true,
            Some(i) => matches!(out.get(&p[..i]), Some(Node::Dir(_))),
        };
        if !parent_ok {
            continue;
        }
        let node = if is_dir {
            Node::Dir(Dir::new(0o755))
        } else {
            Node::File(super::model::File {
                mode: 0o644,
                oid: empty,
                size: 0,
                link_group: None,
            })
        };
        out.insert(p, node).expect("parent is a directory");
    }
    out
}

// ---------------------------------------------------------------------------------------
// SquashFS

/// SquashFS compression algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SquashComp {
    Zstd,
    Gzip,
    Xz,
    Lz4,
}

impl SquashComp {
    pub fn parse(s: &str) -> Option<SquashComp> {
        Some(match s {
            "zstd" => SquashComp::Zstd,
            "gzip" => SquashComp::Gzip,
            "xz" => SquashComp::Xz,
            "lz4" => SquashComp::Lz4,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SquashComp::Zstd => "zstd",
            SquashComp::Gzip => "gzip",
            SquashComp::Xz => "xz",
            SquashComp::Lz4 => "lz4",
        }
    }
}

/// How to write a SquashFS file.
#[derive(Debug, Clone)]
pub struct SquashOptions {
    pub comp: SquashComp,
    /// Compression level; `None` for the tool's default (see [`DEFAULT_ZSTD_LEVEL`]).
    pub level: Option<u32>,
    /// Compressor threads (the output does not depend on it).
    pub processors: usize,
    /// The file system's creation time, and the time of entries the tar stream does not
    /// time (other entries keep the tar stream's times).
    pub mtime: u64,
    /// Mode of the root directory.
    pub root_mode: u32,
}

/// zstd level used when none is given: zstd's own default. As small as mksquashfs's gzip
/// output and about ten times faster to write than either tool's default (zstd 15, gzip 9).
/// Every tool but sqfstar applies it; sqfstar 4.5.1 takes no `-X` compressor option (it
/// reports the level as missing), which is why it is used only without mksquashfs.
pub const DEFAULT_ZSTD_LEVEL: u32 = 3;

/// Which program turns a tar stream into SquashFS, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SquashTool {
    /// `tar2sqfs` (squashfs-tools-ng): compression levels, reproducible, parallel.
    Tar2sqfs,
    /// `mksquashfs - OUT -tar` (squashfs-tools 4.6+): the tar stream, with levels.
    MksquashfsTar,
    /// `mksquashfs TREE OUT` on a temporary checkout (squashfs-tools before 4.6, which
    /// has no `-tar` and whose sqfstar can't lower zstd's level 15): exact modes come
    /// from a pseudo file, times from the checkout.
    MksquashfsDir,
    /// `sqfstar` alone (no mksquashfs): zstd at its level 15, slow.
    Sqfstar,
}

impl SquashTool {
    /// The program run, for messages.
    pub fn program(self) -> &'static str {
        match self {
            SquashTool::Tar2sqfs => "tar2sqfs",
            SquashTool::MksquashfsTar | SquashTool::MksquashfsDir => "mksquashfs",
            SquashTool::Sqfstar => "sqfstar",
        }
    }

    /// How the tool is fed, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            SquashTool::Tar2sqfs => "tar2sqfs (squashfs-tools-ng) reading the tar stream",
            SquashTool::MksquashfsTar => "mksquashfs -tar (squashfs-tools 4.6+) reading the tar stream",
            SquashTool::MksquashfsDir => {
                "mksquashfs (squashfs-tools before 4.6) on a temporary checkout"
            }
            SquashTool::Sqfstar => {
                "sqfstar reading the tar stream (no compression level: zstd at 15 is slow; install squashfs-tools-ng)"
            }
        }
    }
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// The version `mksquashfs -version` prints first ("mksquashfs version 4.5.1 (...)").
fn mksquashfs_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().nth(2)?;
    let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
    Some((it.next()??, it.next().flatten().unwrap_or(0)))
}

/// Find a program that makes SquashFS, fastest first: tar2sqfs, mksquashfs 4.6+ on the
/// tar stream, older mksquashfs on a checkout, sqfstar.
pub fn find_squash_tool() -> Result<SquashTool, ExportError> {
    if on_path("tar2sqfs") {
        return Ok(SquashTool::Tar2sqfs);
    }
    if on_path("mksquashfs") {
        let out = Command::new("mksquashfs").arg("-version").output();
        if let Ok(o) = out {
            let version = mksquashfs_version(&String::from_utf8_lossy(&o.stdout));
            if matches!(version, Some(v) if v >= (4, 6)) {
                return Ok(SquashTool::MksquashfsTar);
            }
            if version.is_some() {
                return Ok(SquashTool::MksquashfsDir);
            }
        }
    }
    if on_path("sqfstar") {
        return Ok(SquashTool::Sqfstar);
    }
    Err(ExportError::NoSquashTool)
}

/// Program, arguments and environment that read a tar stream on stdin and write SquashFS
/// to `out` reproducibly: the tar stream's times, root-owned, no xattrs, the given root
/// mode. tar2sqfs takes the root's time from the `./` member and gets the creation time
/// `o.mtime`. sqfstar 4.5.1 ignores `-root-time` (the root gets the time of the run), so
/// sqfstar and mksquashfs get `SOURCE_DATE_EPOCH=latest` instead, which they use for the
/// root and the creation time and to clamp later times (there are none): `latest` is the
/// latest time of the tar stream. mksquashfs on a checkout takes every time, the root's
/// too, from the checkout and gets the creation time `o.mtime`.
pub fn squash_command(
    tool: SquashTool,
    out: &Path,
    o: &SquashOptions,
    latest: u64,
) -> (&'static str, Vec<OsString>, Vec<(&'static str, String)>) {
    let mut args: Vec<OsString> = Vec::new();
    if tool == SquashTool::Tar2sqfs {
        // Times are the tar stream's (tar2sqfs 1.1+ keeps them unless `--no-keep-time`); the superblock time is 0 or
        // $SOURCE_DATE_EPOCH; the `./` member gives the root's mode and time.
        let level = match (o.comp, o.level) {
            (_, Some(l)) => Some(l),
            (SquashComp::Zstd, None) => Some(DEFAULT_ZSTD_LEVEL),
            _ => None,
        };
        let mut a: Vec<String> = vec![
            "--quiet".into(),
            "--compressor".into(),
            o.comp.name().into(),
        ];
        if let Some(l) = level {
            a.push("--comp-extra".into());
            a.push(format!("level={l}"));
        }
        a.extend([
            "--num-jobs".into(),
            o.processors.max(1).to_string(),
            "--no-xattr".into(),
            "--no-skip".into(),
            "--defaults".into(),
            format!(
                "uid=0,gid=0,mode={:o},mtime={}",
                o.root_mode & 0o7777,
                o.mtime
            ),
        ]);
        args.extend(a.into_iter().map(OsString::from));
        args.push(super::path_arg(out).into());
        return ("tar2sqfs", args, Vec::new());
    }
    let prog = tool.program();
    if tool == SquashTool::MksquashfsTar {
        args.push("-".into());
    }
    let mut opts: Vec<String> = vec!["-comp".into(), o.comp.name().into()];
    let level = match (o.comp, o.level) {
        (_, Some(l)) => Some(l),
        (SquashComp::Zstd, None) => Some(DEFAULT_ZSTD_LEVEL),
        _ => None,
    };
    // sqfstar 4.5.1 takes no compressor option (see DEFAULT_ZSTD_LEVEL).
    if let Some(l) = level.filter(|_| tool != SquashTool::Sqfstar) {
        opts.extend(["-Xcompression-level".into(), l.to_string()]);
    }
    opts.extend([
        "-root-mode".into(),
        format!("{:o}", o.root_mode & 0o7777),
        "-all-root".into(),
        "-no-xattrs".into(),
        "-processors".into(),
        o.processors.max(1).to_string(),
        "-quiet".into(),
        "-no-progress".into(),
    ]);
    match tool {
        SquashTool::Tar2sqfs => unreachable!("handled above"),
        SquashTool::Sqfstar => {
            args.extend(opts.into_iter().map(OsString::from));
            args.push(super::path_arg(out).into());
        }
        SquashTool::MksquashfsTar => {
            args.push(super::path_arg(out).into());
            args.push("-tar".into());
            args.push("-noappend".into());
            args.extend(opts.into_iter().map(OsString::from));
        }
        SquashTool::MksquashfsDir => {
            // The caller prepends the tree and appends `-pf PSEUDO` (see write_squash);
            // times, the root's too, come from the checkout, the creation time is
            // `o.mtime` as with tar2sqfs.
            args.push(super::path_arg(out).into());
            args.push("-noappend".into());
            args.extend(opts.into_iter().map(OsString::from));
            args.extend(["-mkfs-time".into(), o.mtime.to_string().into()]);
            return (prog, args, Vec::new());
        }
    }
    (prog, args, vec![("SOURCE_DATE_EPOCH", latest.to_string())])
}

/// The latest time a tar stream of `root` holds (see [`write_tar`]): the latest recorded
/// time, and `fixed` when an entry has none.
fn latest_time(root: &Dir, fixed: u64) -> u64 {
    let t = &root.times;
    let recorded = t
        .by_path
        .values()
        .chain(t.default.iter())
        .map(|m| m.sec.max(0) as u64)
        .max();
    match (recorded, t.default) {
        (Some(r), Some(_)) => r,
        (Some(r), None) => r.max(fixed),
        (None, _) => fixed,
    }
}

/// Write `root` as a SquashFS file at `out` (which must not exist): the tar stream of
/// [`write_tar`] is piped into sqfstar, so nothing is checked out. Mount points are not
/// added here: pass [`with_mount_points`]'s result.
pub fn write_squash(
    repo: &gix::Repository,
    root: &Dir,
    out: &Path,
    o: &SquashOptions,
) -> Result<(), ExportError> {
    let tool = find_squash_tool()?;
    crate::verbose!(
        "squashfs: {}, {}{}",
        tool.describe(),
        o.comp.name(),
        match (tool, o.comp, o.level) {
            (SquashTool::Sqfstar, _, _) => String::new(),
            (_, _, Some(l)) => format!(" level {l}"),
            (_, SquashComp::Zstd, None) => format!(" level {DEFAULT_ZSTD_LEVEL}"),
            _ => String::new(),
        }
    );
    let (prog, args, env) = squash_command(tool, out, o, latest_time(root, o.mtime));
    if tool == SquashTool::MksquashfsDir {
        return squash_from_checkout(repo, root, out, o.mtime, args, env);
    }
    let mut child = crate::interrupt::unblocked(&mut Command::new(prog))
        .args(&args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|source| ExportError::Spawn {
            tool: prog.into(),
            source,
        })?;
    let stdin = child.stdin.take().expect("stdin is piped");
    // sqfstar warns about a `./` member; tar2sqfs takes the root's metadata from it.
    let root_entry = tool == SquashTool::Tar2sqfs;
    let written = write_tar_opts(
        repo,
        root,
        io::BufWriter::with_capacity(1 << 20, stdin),
        root_entry,
    )
    .and_then(|mut w| w.flush().map_err(ExportError::Io));
    // A signal (grove::interrupt) that came meanwhile is passed on to the tool.
    let status =
        crate::interrupt::wait_watched(&mut child).map_err(|source| ExportError::Spawn {
            tool: prog.into(),
            source,
        })?;
    // Stopped by a signal, the tool's failure (its input stopped short) is not the news.
    let stopped = |source| ExportError::Write {
        path: out.to_path_buf(),
        source,
    };
    crate::interrupt::check().map_err(stopped)?;
    if let Err(e) = written {
        if status.success() {
            return Err(e);
        }
    }
    if !status.success() {
        return Err(ExportError::tool_failed(prog, status, out));
    }
    Ok(())
}

/// `path` with `suffix` appended to its last component.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `root` with the times a tar stream of it carries (see [`write_tar`]): whole seconds, none
/// before 1970, `fixed` where none is recorded; so that a checkout of it has them.
fn tar_times(root: &Dir, fixed: u64) -> Dir {
    let mut tree = root.clone();
    let whole = |t: super::model::Mtime| super::model::Mtime {
        sec: t.sec.max(0),
        nsec: 0,
    };
    for t in tree.times.by_path.values_mut() {
        *t = whole(*t);
    }
    tree.times.default = Some(
        tree.times
            .default
            .map(whole)
            .unwrap_or(super::model::Mtime {
                sec: i64::try_from(fixed).unwrap_or(i64::MAX),
                nsec: 0,
            }),
    );
    tree
}

/// A mksquashfs pseudo file (squashfs-tools 4.5) giving every entry whose recorded mode a
/// checkout does not apply (setuid and setgid bits, modes below `rw-------` or
/// `rwx------`) its exact mode, owned by root. Names are written with backslash escapes.
pub fn pseudo_modes(root: &Dir) -> Result<Vec<u8>, ExportError> {
    let p = super::checkout::Policy::Checkout;
    let mut out = Vec::new();
    let mut err = None;
    root.walk(&mut |rel, node| {
        let (mode, applied) = match node {
            Node::Dir(d) => (d.mode & 0o7777, p.dir_mode(d.mode & 0o7777)),
            Node::File(f) => (f.mode & 0o7777, p.file_mode(f.mode & 0o7777)),
            Node::Fifo { mode } => (mode & 0o7777, p.file_mode(mode & 0o7777)),
            Node::Symlink { .. } => return,
        };
        if mode == applied || err.is_some() {
            return;
        }
        if rel.contains(&b'\n') {
            err = Some(ExportError::PseudoName {
                path: super::model::show(rel),
            });
            return;
        }
        for &b in rel {
            if b.is_ascii_whitespace() || b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(format!(" m {mode:o} 0 0\n").as_bytes());
    });
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Prefix of the private directories holding temporary checkouts on a tmpfs
/// ([`scratch_on_tmpfs`]): `grove-sqfs.PID.N`.
const TMPFS_SCRATCH: &str = "grove-sqfs.";

/// File systems where a temporary checkout for mksquashfs goes when one has room: a
/// checkout there costs no disk inode allocation or writeback (the Debian image: 0.65 s on
/// /dev/shm against 2 to 5 s on ext4 on the project's machine).
pub(crate) fn tmpfs_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d));
    }
    v.push(PathBuf::from("/dev/shm"));
    v
}

/// Available memory in bytes (`MemAvailable` of /proc/meminfo), if known.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Whether `dir` is on a tmpfs (memory only, never written to disk).
pub(crate) fn is_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Whether `dir` is a tmpfs with `need` bytes free.
fn tmpfs_with_room(dir: &Path, need: u64) -> bool {
    is_tmpfs(dir)
        && nix::sys::statvfs::statvfs(dir).is_ok_and(
            // fsblkcnt_t and c_ulong are u32 on 32-bit targets.
            #[allow(clippy::unnecessary_cast)]
            |v| (v.blocks_available() as u64).saturating_mul(v.fragment_size() as u64) >= need,
        )
}

/// Remove temporary checkouts in `base` that exports killed before their cleanup left
/// (their process is gone); a tmpfs holds them in memory until reboot otherwise.
fn remove_dead_scratch(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::getuid().as_raw();
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TMPFS_SCRATCH)
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = e.metadata().is_ok_and(|m| m.uid() == uid && m.is_dir());
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = super::checkout::remove_tree(&e.path());
        }
    }
}

/// A new private directory (mode 0700) on a tmpfs with room for `size` bytes of file
/// contents (twice that free, and as much memory available), for a temporary checkout;
/// `None` when there is none. Leftovers of killed exports there are removed first.
fn scratch_on_tmpfs(size: u64) -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let need = size.saturating_mul(2).saturating_add(64 << 20);
    if mem_available().is_some_and(|m| m < need) {
        return None;
    }
    for base in tmpfs_candidates() {
        if !tmpfs_with_room(&base, need) {
            continue;
        }
        remove_dead_scratch(&base);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("{TMPFS_SCRATCH}{}.{seq}", std::process::id()));
        if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
            return Some(dir);
        }
    }
    None
}

/// Total size of the regular files of `root` (hard links counted once per path).
fn content_size(root: &Dir) -> u64 {
    let mut n = 0u64;
    root.walk(&mut |_, node| {
        if let Node::File(f) = node {
            n = n.saturating_add(f.size);
        }
    });
    n
}

/// Write SquashFS with mksquashfs before 4.6 from a temporary checkout of `root` (removed
/// after): times as the tar stream has them, exact modes from a pseudo file. The checkout
/// goes to a tmpfs when one has room ([`scratch_on_tmpfs`]), else beside `out`. `args`
/// and `env` come from [`squash_command`].
fn squash_from_checkout(
    repo: &gix::Repository,
    root: &Dir,
    out: &Path,
    fixed: u64,
    args: Vec<OsString>,
    env: Vec<(&'static str, String)>,
) -> Result<(), ExportError> {
    let scratch = scratch_on_tmpfs(content_size(root));
    let tree_dir = match &scratch {
        Some(d) => d.join("tree"),
        None => with_suffix(out, ".tree"),
    };
    let pseudo = with_suffix(out, ".pseudo");
    let result = (|| {
        let tree = tar_times(root, fixed);
        let modes = pseudo_modes(&tree)?;
        std::fs::write(&pseudo, &modes).map_err(|source| ExportError::Write {
            path: pseudo.clone(),
            source,
        })?;
        // Added entries (mount points) are empty files: the checkout reads their blob.
        repo.write_blob(b"")
            .map_err(super::git::git_err("write the empty blob"))?;
        let t = std::time::Instant::now();
        let ts = repo.clone().into_sync();
        super::checkout::materialize(&ts, &tree, &tree_dir, super::checkout::Policy::Checkout)?;
        crate::verbose!(
            "checked out for mksquashfs into {} in {:.2}s",
            tree_dir.display(),
            t.elapsed().as_secs_f64()
        );
        let status = crate::interrupt::unblocked(&mut Command::new("mksquashfs"))
            .arg(super::path_arg(&tree_dir))
            .args(&args)
            .arg("-pf")
            .arg(super::path_arg(&pseudo))
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            // A signal (grove::interrupt) that comes meanwhile is passed on to it.
            .and_then(|mut c| crate::interrupt::wait_watched(&mut c))
            .map_err(|source| ExportError::Spawn {
                tool: "mksquashfs".into(),
                source,
            })?;
        crate::interrupt::check().map_err(|source| ExportError::Write {
            path: out.to_path_buf(),
            source,
        })?;
        if !status.success() {
            return Err(ExportError::tool_failed("mksquashfs", status, out));
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&pseudo);
    match &scratch {
        Some(d) => {
            let _ = super::checkout::remove_tree(d);
        }
        None if tree_dir.exists() => {
            let _ = super::checkout::remove_tree(&tree_dir);
        }
        None => {}
    }
    result
}

// ---------------------------------------------------------------------------------------
// Parallel gzip

/// gzip level of every gzip Grove writes (tar.gz exports, OCI layers). Part of the
/// reproducibility contract: changing it changes every digest. Level 4 is within 2% of
/// level 6's size at half its CPU time.
pub const GZIP_LEVEL: u32 = 4;

/// Size of the chunks [`ParGz`] compresses independently.
const GZ_CHUNK: usize = 1 << 20;

/// A gzip writer that compresses 1 MiB chunks on the rayon pool, as pigz does: each chunk is
/// a raw deflate stream ended by a sync flush (the last one finished), the chunks are
/// concatenated in order under one gzip header (no name, mtime 0, OS unknown) and a trailer
/// with the combined CRC. The output depends only on the input and the level, never on the
/// number of threads. One batch compresses in the background while the caller fills the
/// next.
pub struct ParGz<W: Write> {
    out: W,
    level: u32,
    buf: Vec<u8>,
    pending: Vec<Vec<u8>>,
    running: Option<std::thread::JoinHandle<io::Result<Vec<Vec<u8>>>>>,
    crc: crc32fast::Hasher,
    len: u64,
    started: bool,
}

fn deflate_chunk(chunk: &[u8], level: u32, finish: bool) -> io::Result<Vec<u8>> {
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(chunk.len() / 2 + 1024);
    let flush = if finish {
        flate2::FlushCompress::Finish
    } else {
        flate2::FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let status = c
            .compress_vec(&chunk[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        if c.total_in() as usize == chunk.len()
            && (status == flate2::Status::StreamEnd || (!finish && out.len() < out.capacity()))
        {
            return Ok(out);
        }
    }
}

impl<W: Write> ParGz<W> {
    pub fn new(out: W, level: u32) -> ParGz<W> {
        ParGz {
            out,
            level,
            buf: Vec::with_capacity(GZ_CHUNK),
            pending: Vec::new(),
            running: None,
            crc: crc32fast::Hasher::new(),
            len: 0,
            started: false,
        }
    }

    fn batch() -> usize {
        rayon::current_num_threads().max(1) * 4
    }

    /// Wait for the batch in the background, if any, and write it out.
    fn drain(&mut self) -> io::Result<()> {
        if let Some(h) = self.running.take() {
            let parts = h
                .join()
                .map_err(|_| io::Error::other("gzip compressor thread panicked"))??;
            for p in parts {
                self.out.write_all(&p)?;
            }
        }
        Ok(())
    }

    fn compress(&mut self, last: bool) -> io::Result<()> {
        if !self.started {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown).
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
            self.started = true;
        }
        self.drain()?;
        let chunks = std::mem::take(&mut self.pending);
        let level = self.level;
        let work = move || -> io::Result<Vec<Vec<u8>>> {
            let n = chunks.len();
            chunks
                .par_iter()
                .enumerate()
                .map(|(i, chunk)| deflate_chunk(chunk, level, last && i + 1 == n))
                .collect()
        };
        if last {
            for p in work()? {
                self.out.write_all(&p)?;
            }
        } else {
            self.running = Some(std::thread::spawn(work));
        }
        Ok(())
    }

    /// Write the rest and the trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let b = std::mem::take(&mut self.buf);
        self.pending.push(b);
        self.compress(true)?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.len as u32).to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(GZ_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.len += n as u64;
        if self.buf.len() == GZ_CHUNK {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(GZ_CHUNK));
            self.pending.push(full);
            if self.pending.len() >= Self::batch() {
                self.compress(false)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A tree for the read-ahead tests: `n` files of 64 KiB (distinct), one streamed blob
    /// in the middle, an empty file and a hard-link pair; with their expected contents in
    /// the order a tar stream holds them (links and empty files have none).
    fn read_ahead_tree(repo: &gix::Repository, n: usize) -> (Dir, Vec<(String, Vec<u8>)>) {
        use super::super::model::File;
        let mut root = Dir::new(0o755);
        let mut expected = Vec::new();
        let mut add = |path: String, data: Vec<u8>, group: Option<u32>| {
            let oid = repo.write_blob(&data).expect("write blob").detach();
            let node = Node::File(File {
                mode: 0o644,
                oid,
                size: 0,
                link_group: group,
            });
            root.insert(path.as_bytes(), node).expect("insert");
            expected.push((path, data));
        };
        for i in 0..n {
            let data: Vec<u8> = (0..64 * 1024).map(|j| ((i * 7 + j) % 251) as u8).collect();
            add(format!("f{i:04}"), data, None);
        }
        add(
            format!("f{:04}.big", n / 2),
            vec![3; super::super::git::STREAM_BLOB_MIN as usize + 1],
            None,
        );
        add("g/a".into(), b"linked\n".to_vec(), Some(1));
        add("g/b".into(), b"linked\n".to_vec(), Some(1));
        add("g/empty".into(), Vec::new(), None);
        expected.sort();
        (root, expected)
    }

    #[test]
    fn a_read_ahead_batch_holds_8_mib_at_most_unless_one_blob_is_bigger() {
        const M: u64 = 1 << 20;
        let big = super::super::git::STREAM_BLOB_MIN;
        let len = |sizes: &[u64]| {
            next_batch(sizes.iter().map(|n| Ok::<_, ()>(*n)))
                .unwrap()
                .len()
        };
        assert_eq!(len(&[5 * M, 5 * M]), 1);
        assert_eq!(len(&[7 * M, M, M]), 2);
        // Not 16 MiB in one batch: the blob that would pass 8 MiB starts the next.
        assert_eq!(len(&[M, 15 * M]), 1);
        assert_eq!(len(&[15 * M, M]), 1);
        // Streamed blobs are not read ahead.
        assert_eq!(len(&[big, 8 * M, big + 1, 1]), 3);
        assert_eq!(len(&[1; 100]), 100);
        assert_eq!(len(&[]), 0);
        // A failed lookup fails the batch.
        let failed = next_batch([Ok(1), Err("gone"), Ok(2)].into_iter());
        assert_eq!(failed, Err("gone"));
    }

    #[test]
    fn contents_read_ahead_come_out_in_order_across_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = gix::init_bare(dir.path()).expect("init");
        // More than READ_AHEAD_DEPTH + 1 batches, so the reader waits for the writer.
        let n = (READ_AHEAD_BATCH as usize * (READ_AHEAD_DEPTH + 3)) / (64 * 1024);
        let (root, expected) = read_ahead_tree(&repo, n);
        let tar = write_tar(&repo, &root, Vec::new()).expect("export");
        let mut got = Vec::new();
        for e in tar::Archive::new(tar.as_slice())
            .entries()
            .expect("entries")
        {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            // Members are named as `tar cf - .` in the image directory names them.
            let path = path
                .strip_prefix("./")
                .unwrap_or_else(|| panic!("{path:?} is not named ./PATH"))
                .to_string();
            let kind = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            if kind == tar::EntryType::Link {
                assert_eq!(path, "g/b");
                assert_eq!(
                    e.link_name().expect("link").unwrap().to_str(),
                    Some("./g/a")
                );
                data = b"linked\n".to_vec();
            }
            if kind != tar::EntryType::Directory {
                got.push((path, data));
            }
        }
        assert_eq!(got.len(), expected.len());
        for (g, x) in got.iter().zip(&expected) {
            assert!(g == x, "{} holds other bytes than {}", g.0, x.0);
        }
    }

    /// A writer that fails once `room` bytes were written, as a pipe whose reader left.
    #[derive(Debug)]
    struct Closes {
        room: usize,
    }

    impl Write for Closes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_closed_early_ends_the_export_and_its_reader_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = gix::init_bare(dir.path()).expect("init");
        let n = (READ_AHEAD_BATCH as usize * (READ_AHEAD_DEPTH + 3)) / (64 * 1024);
        let (root, _) = read_ahead_tree(&repo, n);
        // Returns (the reader thread is joined) with the writer's error.
        let err = write_tar(&repo, &root, Closes { room: 100_000 }).unwrap_err();
        assert!(
            matches!(&err, ExportError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe),
            "{err:?}"
        );
    }

    #[test]
    fn a_blob_missing_from_the_store_fails_the_export_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = gix::init_bare(dir.path()).expect("init");
        let n = (READ_AHEAD_BATCH as usize * 2) / (64 * 1024);
        let (mut root, expected) = read_ahead_tree(&repo, n);
        // A file late in the stream whose blob is not in the store.
        let missing = ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap();
        let last = expected
            .iter()
            .map(|(p, _)| p)
            .filter(|p| p.starts_with('f'))
            .max()
            .unwrap();
        let node = Node::File(super::super::model::File {
            mode: 0o644,
            oid: missing,
            size: 0,
            link_group: None,
        });
        root.insert(format!("{last}x").as_bytes(), node)
            .expect("insert");
        let err = write_tar(&repo, &root, Vec::new()).unwrap_err();
        let text = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(
            text.contains("1111111111111111111111111111111111111111"),
            "{text}"
        );
    }

    #[test]
    fn parallel_gzip_decompresses_to_the_input() {
        for len in [
            0usize,
            1,
            GZ_CHUNK - 1,
            GZ_CHUNK,
            3 * GZ_CHUNK + 17,
            40 * GZ_CHUNK + 5,
        ] {
            let data: Vec<u8> = (0..len)
                .map(|i| ((i * 7919) % 251) as u8 ^ (i / 1000) as u8)
                .collect();
            let mut gz = ParGz::new(Vec::new(), 6);
            for piece in data.chunks(100_003) {
                gz.write_all(piece).unwrap();
            }
            let out = gz.finish().unwrap();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "length {len}");
            assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        }
    }

    #[test]
    fn parallel_gzip_output_does_not_depend_on_thread_count() {
        let data: Vec<u8> = (0..9 * GZ_CHUNK).map(|i| (i % 13) as u8).collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut gz = ParGz::new(Vec::new(), 6);
                gz.write_all(&data).unwrap();
                gz.finish().unwrap()
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn mount_points_are_added_only_where_nothing_exists() {
        let mut root = Dir::new(0o755);
        root.insert(
            b"etc",
            Node::Symlink {
                target: b"/x".to_vec(),
            },
        )
        .unwrap();
        root.insert(b"tmp", Node::Dir(Dir::new(0o1777))).unwrap();
        let out = with_mount_points(&root);
        assert!(matches!(out.get(b"etc"), Some(Node::Symlink { .. })));
        assert!(out.get(b"etc/hosts").is_none());
        assert!(matches!(out.get(b"tmp"), Some(Node::Dir(d)) if d.mode == 0o1777));
        assert!(matches!(out.get(b"proc"), Some(Node::Dir(d)) if d.mode == 0o755));
        assert!(matches!(out.get(b"mnt/9"), Some(Node::Dir(_))));
        let mut plain = Dir::new(0o755);
        plain.insert(b"etc", Node::Dir(Dir::new(0o755))).unwrap();
        let out = with_mount_points(&plain);
        assert!(matches!(out.get(b"etc/resolv.conf"), Some(Node::File(f)) if f.mode == 0o644));
    }

    #[test]
    fn pax_times_read_back_exactly() {
        use crate::store::model::Mtime;
        for t in [
            Mtime::new(5, 0),
            Mtime::new(1700000000, 123456789),
            Mtime::new(-1, 250_000_000),
            Mtime::new(-2, 0),
            Mtime::new(-3, 1),
        ] {
            let v = pax_time_value(t);
            assert_eq!(crate::store::import::parse_pax_time(&v), Some(t), "{v}");
        }
        assert_eq!(pax_time_value(Mtime::new(-1, 250_000_000)), "-0.750000000");
    }

    #[test]
    fn squash_command_is_reproducible_and_rooted() {
        let o = SquashOptions {
            comp: SquashComp::Zstd,
            level: None,
            processors: 4,
            mtime: 0,
            root_mode: 0o755,
        };
        let (prog, args, env) = squash_command(SquashTool::Sqfstar, Path::new("/x.sqfs"), &o, 7);
        assert_eq!(prog, "sqfstar");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in ["-all-root", "-no-xattrs", "-root-mode"] {
            assert!(args.contains(&want.to_string()), "{want} in {args:?}");
        }
        // sqfstar 4.5.1 refuses compressor options.
        assert!(
            !args.contains(&"-Xcompression-level".to_string()),
            "{args:?}"
        );
        // The tar stream's times are kept: no -all-time; the creation and root time are
        // the latest time, through SOURCE_DATE_EPOCH (which excludes -mkfs-time).
        for not in ["-all-time", "-mkfs-time", "-root-time"] {
            assert!(!args.contains(&not.to_string()), "{not} in {args:?}");
        }
        assert_eq!(env, vec![("SOURCE_DATE_EPOCH", "7".to_string())]);
        assert_eq!(args.last().map(String::as_str), Some("/x.sqfs"));
        let (prog, args, _) =
            squash_command(SquashTool::MksquashfsTar, Path::new("/x.sqfs"), &o, 0);
        assert_eq!(prog, "mksquashfs");
        assert_eq!(
            args[..4],
            ["-", "/x.sqfs", "-tar", "-noappend"].map(OsString::from)
        );
        let (prog, args, env) =
            squash_command(SquashTool::MksquashfsDir, Path::new("/x.sqfs"), &o, 7);
        assert_eq!(prog, "mksquashfs");
        assert!(env.is_empty(), "{env:?}");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[..2], ["/x.sqfs", "-noappend"]);
        let level = args.iter().position(|a| a == "-Xcompression-level");
        assert_eq!(level.map(|i| args[i + 1].as_str()), Some("3"), "{args:?}");
        assert_eq!(args[args.len() - 2..], ["-mkfs-time", "0"]);
        let (prog, args, env) = squash_command(SquashTool::Tar2sqfs, Path::new("/x.sqfs"), &o, 0);
        assert!(env.is_empty());
        assert_eq!(prog, "tar2sqfs");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"level=3".to_string()), "{args:?}");
        assert!(!args.contains(&"--no-keep-time".to_string()), "{args:?}");
        assert!(
            args.contains(&"uid=0,gid=0,mode=755,mtime=0".to_string()),
            "{args:?}"
        );
    }

    #[test]
    fn mksquashfs_version_is_read_from_its_banner() {
        assert_eq!(
            mksquashfs_version("mksquashfs version 4.5.1 (2022/03/17)\ncopyright"),
            Some((4, 5))
        );
        assert_eq!(
            mksquashfs_version("mksquashfs version 4.6 (2023/03/25)"),
            Some((4, 6))
        );
        assert_eq!(mksquashfs_version("garbage"), None);
    }

    #[test]
    fn pseudo_file_restores_modes_a_checkout_raises() {
        use super::super::model::File;
        let mut root = Dir {
            mode: 0o755,
            ..Dir::default()
        };
        let file = |mode| {
            Node::File(File {
                mode,
                oid: ObjectId::empty_blob(gix::hash::Kind::Sha1),
                size: 0,
                link_group: None,
            })
        };
        root.children.insert(b"plain".to_vec(), file(0o644));
        root.children.insert(b"su id".to_vec(), file(0o4755));
        root.children.insert(
            b"locked".to_vec(),
            Node::Dir(Dir {
                mode: 0,
                ..Dir::default()
            }),
        );
        let text = String::from_utf8(pseudo_modes(&root).expect("pseudo")).expect("utf-8");
        assert_eq!(text, "locked m 0 0 0\nsu\\ id m 4755 0 0\n");
        root.children.insert(b"new\nline".to_vec(), file(0));
        assert!(matches!(
            pseudo_modes(&root),
            Err(ExportError::PseudoName { .. })
        ));
    }
}
