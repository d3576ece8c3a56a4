//! Materialize a model as a directory, in parallel.
//!
//! Two policies: [`Policy::Checkout`] (what `ch-run` and builds use) raises minimum
//! permissions (directories u+rwx, files u+rw) and drops setuid and setgid bits, which
//! are recorded in the store but never applied; [`Policy::Exact`] (directory export)
//! reproduces the recorded modes, including 0000 directories. Ownership is the invoking
//! user's either way. The caller chooses an absent destination; it is created here.
//!
//! Recorded modification times are set on every entry, symlinks included
//! (`utimensat(AT_SYMLINK_NOFOLLOW)`), directories last and deepest first, after their
//! contents are written. Entries whose time is unknown (metadata version 1) keep the time
//! of the checkout.

use crate::error::{IoError, IoResultExt};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gix::ObjectId;
use rayon::prelude::*;

use super::git::GitError;
use super::model::{Dir, Mtime, Node};

/// How modes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Checkout,
    Exact,
}

impl Policy {
    pub fn file_mode(self, mode: u32) -> u32 {
        match self {
            Policy::Checkout => (mode | 0o600) & !0o6000,
            Policy::Exact => mode,
        }
    }
    pub fn dir_mode(self, mode: u32) -> u32 {
        match self {
            Policy::Checkout => (mode | 0o700) & !0o6000,
            Policy::Exact => mode,
        }
    }
}

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Git(#[from] GitError),
    /// An entry no checkout may create (the model is checked again here, whatever built
    /// it: the last line of defence against names that would leave the destination).
    #[error("refusing to check out unsafe entry \"{path}\": {reason}")]
    Unsafe { path: String, reason: &'static str },
}

struct FileJob {
    path: PathBuf,
    oid: ObjectId,
    mode: u32,
    time: Option<Mtime>,
    /// Its entry in the pool of shared files, when it is shared.
    entry: Option<PathBuf>,
}

/// What a checkout wrote: files written from the store's objects, and files linked from
/// the pool of shared files ([`materialize_shared`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub files: usize,
    pub linked: usize,
}

/// Set the access and modification times of `path` (not following a symlink) to `t`.
pub fn set_time(path: &Path, t: Mtime) -> io::Result<()> {
    let ts = nix::sys::time::TimeSpec::new(t.sec, t.nsec as _);
    nix::sys::stat::utimensat(
        None,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// The process umask (read by setting and restoring it; call before threads start
/// creating files).
fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

/// Write `root` into the new directory `dest`, every file a file of its own (exports,
/// scratch trees: anything a user or another program may write to).
pub fn materialize(
    ts: &gix::ThreadSafeRepository,
    root: &Dir,
    dest: &Path,
    policy: Policy,
) -> Result<(), CheckoutError> {
    materialize_with(ts, root, dest, policy, None).map(|_| ())
}

/// Write `root` into the new directory `dest` as a checkout ([`Policy::Checkout`]) whose
/// files are shared with `pool` (see [`super::pool`]): a file the pool has is linked, one
/// it lacks is written and added to it. Only for trees nothing writes to (the store's
/// checkouts: `ch-run NAME` mounts them read-only, builds use them as overlay lower
/// directories).
pub fn materialize_shared(
    ts: &gix::ThreadSafeRepository,
    root: &Dir,
    dest: &Path,
    pool: &super::pool::Pool,
) -> Result<Written, CheckoutError> {
    pool.prepare();
    materialize_with(ts, root, dest, Policy::Checkout, Some(pool))
}

fn materialize_with(
    ts: &gix::ThreadSafeRepository,
    root: &Dir,
    dest: &Path,
    policy: Policy,
    pool: Option<&super::pool::Pool>,
) -> Result<Written, CheckoutError> {
    // The pool entries this checkout made (entry, file): taken back if it fails, before
    // the caller removes `dest`, so that a failed checkout leaves no entry nothing links.
    let adopted = std::sync::Mutex::new(Vec::new());
    let r = materialize_into(ts, root, dest, policy, pool, &adopted);
    if let (Err(_), Some(pool)) = (&r, pool) {
        for (entry, file) in adopted.into_inner().unwrap_or_default() {
            pool.unadopt(&file, &entry);
        }
    }
    r
}

fn materialize_into(
    ts: &gix::ThreadSafeRepository,
    root: &Dir,
    dest: &Path,
    policy: Policy,
    pool: Option<&super::pool::Pool>,
    adopted: &std::sync::Mutex<Vec<(PathBuf, PathBuf)>>,
) -> Result<Written, CheckoutError> {
    if let Some((path, reason)) = super::model::find_bad_entry(root) {
        return Err(CheckoutError::Unsafe {
            path: super::model::show(&path),
            reason,
        });
    }
    for rel in root.xattrs.keys() {
        let reason = match root.get(rel) {
            None => "extended attribute of a path not in the image",
            Some(Node::Symlink { .. }) => "extended attribute of a symlink",
            Some(_) => continue,
        };
        return Err(CheckoutError::Unsafe {
            path: super::model::show(rel),
            reason,
        });
    }
    let umask = current_umask();
    fs::create_dir(dest).at("create directory", dest)?;
    let times = &root.times;
    // Directories with their depth; created level by level below, in parallel.
    let mut dirs: Vec<(PathBuf, u32, Option<Mtime>)> =
        vec![(dest.to_path_buf(), root.mode, times.get(b""))];
    let mut depths: Vec<usize> = vec![0];
    // Symlinks, FIFOs and hard links (other than a group's first file) with their times.
    let mut other_times: Vec<(PathBuf, Mtime)> = Vec::new();
    let mut files = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut symlinks = Vec::new();
    let mut fifos = Vec::new();
    let mut primaries: std::collections::HashMap<u32, PathBuf> = Default::default();
    root.walk(&mut |rel, node| {
        let p = dest.join(std::ffi::OsStr::from_bytes(rel));
        match node {
            Node::Dir(d) => {
                depths.push(rel.iter().filter(|b| **b == b'/').count() + 1);
                dirs.push((p, d.mode, times.get(rel)));
            }
            Node::File(f) => match f.link_group.map(|g| (g, primaries.get(&g).cloned())) {
                Some((_, Some(primary))) => {
                    if let Some(t) = times.get(rel) {
                        other_times.push((p.clone(), t));
                    }
                    links.push((primary, p))
                }
                other => {
                    if let Some((g, None)) = other {
                        primaries.insert(g, p.clone());
                    }
                    let mode = policy.file_mode(f.mode);
                    let time = times.get(rel);
                    // Hard-link groups are the image's own inodes, and extended
                    // attributes are set after the files: neither is shared.
                    let entry = pool
                        .filter(|_| f.link_group.is_none() && !root.xattrs.contains_key(rel))
                        .map(|pool| pool.entry(rel, &f.oid, mode, time));
                    files.push(FileJob {
                        path: p,
                        oid: f.oid,
                        mode,
                        time,
                        entry,
                    });
                }
            },
            Node::Symlink { target } => {
                if let Some(t) = times.get(rel) {
                    other_times.push((p.clone(), t));
                }
                symlinks.push((p, target.clone()))
            }
            Node::Fifo { mode } => {
                if let Some(t) = times.get(rel) {
                    other_times.push((p.clone(), t));
                }
                fifos.push((p, policy.file_mode(*mode)))
            }
        }
    });
    // A directory is made with its final mode when the umask leaves it alone and it lets
    // its owner in (always so for checkouts), else owner-only and fixed at the end.
    let dir_direct = |mode: u32| {
        let m = policy.dir_mode(mode) & 0o7777;
        m & 0o700 == 0o700 && m & 0o6000 == 0 && m & !umask == m
    };
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for (i, d) in depths.iter().enumerate().skip(1) {
        if levels.len() < *d {
            levels.resize_with(*d, Vec::new);
        }
        levels[d - 1].push(i);
    }
    // Shallower levels first: every parent exists before its children are made.
    for level in &levels {
        level.par_iter().try_for_each(|i| {
            let (p, mode, _) = &dirs[*i];
            let m = if dir_direct(*mode) {
                policy.dir_mode(*mode) & 0o7777
            } else {
                0o700
            };
            fs::DirBuilder::new()
                .mode(m)
                .create(p)
                .at("create directory", p)
        })?;
    }
    let linked = std::sync::atomic::AtomicUsize::new(0);
    files.par_iter().try_for_each_init(
        || ts.to_thread_local(),
        |repo, job| -> Result<(), CheckoutError> {
            crate::interrupt::check().at("create file", &job.path)?;
            if let (Some(pool), Some(entry)) = (pool, &job.entry) {
                if let super::pool::Linked::Yes(size) =
                    pool.link_to(entry, &job.path, job.mode, job.time)?
                {
                    crate::progress::file(size);
                    linked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
            }
            let blob = super::git::open_blob(repo, job.oid)?;
            crate::progress::file(blob.size());
            // Create with the final mode when the umask leaves it alone (the common
            // case); else fix it with chmod. The creating open needs owner write.
            let direct = job.mode & 0o7777 & !umask == job.mode && job.mode & 0o200 != 0;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if direct { job.mode } else { 0o600 })
                .open(&job.path)
                .at("create file", &job.path)?;
            write_blob(blob, &mut f).at("write file", &job.path)?;
            if !direct || job.mode & 0o7000 != 0 {
                fs::set_permissions(&job.path, fs::Permissions::from_mode(job.mode))
                    .at("chmod", &job.path)?;
            }
            if let Some(t) = job.time {
                let ts = nix::sys::time::TimeSpec::new(t.sec, t.nsec as _);
                nix::sys::stat::futimens(std::os::fd::AsRawFd::as_raw_fd(&f), &ts, &ts)
                    .map_err(|e| IoError::new("set time of", &job.path, e.into()))?;
            }
            // Complete: only now may the pool name it.
            if let (Some(pool), Some(entry)) = (pool, &job.entry) {
                if pool.adopt(&job.path, entry) {
                    adopted
                        .lock()
                        .expect("adopted entries lock")
                        .push((entry.clone(), job.path.clone()));
                }
            }
            Ok(())
        },
    )?;
    let linked = linked.into_inner();
    let written = Written {
        files: files.len() - linked,
        linked,
    };
    symlinks.par_iter().try_for_each(|(p, target)| {
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), p).at("create symlink", p)
    })?;
    for (primary, p) in &links {
        fs::hard_link(primary, p).at("create hard link", p)?;
    }
    for (p, mode) in &fifos {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(*mode)).map_err(|e| {
            CheckoutError::Io(IoError {
                action: "create fifo",
                path: p.clone(),
                source: e.into(),
            })
        })?;
        fs::set_permissions(p, fs::Permissions::from_mode(*mode)).at("chmod", p)?;
    }
    // Extended attributes (user namespace; setting one needs write permission on the
    // file, so add it for the moment where it is missing).
    for (rel, attrs) in &root.xattrs {
        let p = dest.join(std::ffi::OsStr::from_bytes(rel));
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.file_type().is_symlink() {
            continue;
        }
        let mode = md.permissions().mode() & 0o7777;
        let raise = mode & 0o200 == 0;
        if raise {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode | 0o200)).at("chmod", &p)?;
        }
        for (name, value) in attrs {
            xattr::set(&p, std::ffi::OsStr::from_bytes(name), value)
                .at("set extended attribute", &p)?;
        }
        if raise {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).at("chmod", &p)?;
        }
    }
    // Times of symlinks, FIFOs and hard links (a hard link's time is its inode's: the
    // group's paths carry the same time), before any directory is closed by its mode.
    other_times
        .par_iter()
        .try_for_each(|(p, t)| set_time(p, *t).at("set time of", p))?;
    // Deepest first, so that a 0000 directory does not stop us from reaching its children;
    // each directory's time after its contents are complete.
    for (i, (p, mode, time)) in dirs.iter().enumerate().rev() {
        // The root was made by create_dir (umask applied): always set.
        if i == 0 || !dir_direct(*mode) {
            fs::set_permissions(p, fs::Permissions::from_mode(policy.dir_mode(*mode)))
                .at("chmod", p)?;
        }
        if let Some(t) = time {
            set_time(p, *t).at("set time of", p)?;
        }
    }
    Ok(written)
}

/// Copy `blob` into the new file `f` in 256 KiB pieces; a piece of zeros in a big blob
/// becomes a hole (sparse files stay sparse). At most one piece is held in memory besides
/// what [`super::git::open_blob`] holds.
pub fn write_blob(mut blob: super::git::BlobReader, f: &mut fs::File) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let size = blob.size();
    if size < super::git::STREAM_BLOB_MIN {
        let mut data = Vec::with_capacity(size as usize);
        blob.read_to_end(&mut data)?;
        return f.write_all(&data);
    }
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match blob.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        if buf[..filled].iter().all(|b| *b == 0) {
            f.seek(SeekFrom::Current(filled as i64))?;
        } else {
            f.write_all(&buf[..filled])?;
        }
    }
    f.set_len(size)
}

/// Remove a directory tree that may contain directories without write or search
/// permission (as exact exports can).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    fn open_up(p: &Path) -> io::Result<()> {
        let md = fs::symlink_metadata(p)?;
        if md.is_dir() {
            fs::set_permissions(p, fs::Permissions::from_mode(0o700))?;
            for e in fs::read_dir(p)? {
                open_up(&e?.path())?;
            }
        }
        Ok(())
    }
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(md) if !md.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up(path)?;
    fs::remove_dir_all(path)
}
