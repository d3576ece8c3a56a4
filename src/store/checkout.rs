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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
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

/// Where an entry goes: its path in the image, the index of its parent directory (in
/// the checkout's list of directories) and where its name starts in `rel`.
struct Loc {
    rel: Vec<u8>,
    dir: usize,
    name_at: usize,
}

impl Loc {
    fn name(&self) -> &[u8] {
        &self.rel[self.name_at..]
    }
    /// Its path below `dest`, for messages (possibly longer than the system takes).
    fn path(&self, dest: &Path) -> PathBuf {
        dest.join(std::ffi::OsStr::from_bytes(&self.rel))
    }
}

struct FileJob {
    loc: Loc,
    oid: ObjectId,
    mode: u32,
    time: Option<Mtime>,
    /// Its entry in the pool of shared files, when it is shared.
    entry: Option<PathBuf>,
}

/// Handles on a checkout's directories. Every name is created, linked, chmodded and timed
/// relative to a handle on its parent, opened from the destination's one name at a time
/// (`O_PATH | O_DIRECTORY | O_NOFOLLOW`): no path the system is handed is longer than a
/// name, so an image path of up to PATH_MAX checks out below a destination of any length,
/// and no symlink is followed on the way down, whatever the tree holds.
struct Handles<'a> {
    root: RawFd,
    dest: &'a Path,
    /// Each directory's path in the image, the root's (index 0) empty.
    rels: &'a [Vec<u8>],
}

/// One thread's handle on the directory it used last (entries come in tree order, so
/// siblings follow one another).
type Cached = Option<(usize, OwnedFd)>;

impl Handles<'_> {
    /// A handle on directory `idx`, valid until `cache` is used again.
    fn get(&self, cache: &mut Cached, idx: usize) -> Result<RawFd, IoError> {
        if idx == 0 {
            return Ok(self.root);
        }
        if let Some((i, fd)) = cache {
            if *i == idx {
                return Ok(fd.as_raw_fd());
            }
        }
        let target = &self.rels[idx];
        // Start from the cached directory when it is an ancestor.
        let (mut fd, at) = match cache.take() {
            Some((i, fd))
                if i != 0
                    && target.starts_with(&self.rels[i])
                    && target.get(self.rels[i].len()) == Some(&b'/') =>
            {
                (Some(fd), self.rels[i].len() + 1)
            }
            _ => (None, 0),
        };
        for name in target[at..].split(|b| *b == b'/') {
            let base = fd.as_ref().map_or(self.root, |f| f.as_raw_fd());
            fd = Some(open_dir(base, name).map_err(|e| {
                IoError::new(
                    "open directory",
                    self.dest.join(std::ffi::OsStr::from_bytes(target)),
                    e,
                )
            })?);
        }
        let fd = fd.expect("a directory below the root has a name");
        let raw = fd.as_raw_fd();
        *cache = Some((idx, fd));
        Ok(raw)
    }
}

/// A handle on the directory `name` of `dir`, not following a symlink.
fn open_dir(dir: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    crate::run::sys::openat_owned(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Read the directory `rel` (`/`-separated, relative to `root`, a leading `/` ignored):
/// by its path when the system takes it, else through a handle opened one name at a time
/// from `root` (a checkout's paths may be longer than PATH_MAX).
pub fn read_dir_below(root: &Path, rel: &[u8]) -> io::Result<fs::ReadDir> {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    let path = root.join(std::ffi::OsStr::from_bytes(rel));
    if path.as_os_str().len() < PATH_MAX {
        return fs::read_dir(path);
    }
    let mut fd = open_dir(libc::AT_FDCWD, root.as_os_str().as_bytes())?;
    for name in rel.split(|b| *b == b'/').filter(|n| !n.is_empty()) {
        fd = open_dir(fd.as_raw_fd(), name)?;
    }
    fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The longest path the system takes, with its NUL (Linux's `PATH_MAX`).
const PATH_MAX: usize = 4096;

/// Set the access and modification times of `name` in `dir` (not following a symlink).
fn set_time_at(dir: RawFd, name: &[u8], t: Mtime) -> io::Result<()> {
    let ts = nix::sys::time::TimeSpec::new(t.sec, t.nsec as _);
    nix::sys::stat::utimensat(
        Some(dir),
        name,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// chmod `name` in `dir` (never a symlink here: symlinks are not chmodded).
fn chmod_at(dir: RawFd, name: &[u8], mode: u32) -> io::Result<()> {
    nix::sys::stat::fchmodat(
        Some(dir),
        name,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(io::Error::from)
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
    // The pool entries this checkout made (entry, device and inode of its file): taken
    // back if it fails, before the caller removes `dest`, so that a failed checkout leaves
    // no entry nothing links.
    let adopted = std::sync::Mutex::new(Vec::new());
    let r = materialize_into(ts, root, dest, policy, pool, &adopted);
    if let (Err(_), Some(pool)) = (&r, pool) {
        for (entry, dev, ino) in adopted.into_inner().unwrap_or_default() {
            pool.unadopt(&entry, dev, ino);
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
    adopted: &std::sync::Mutex<Vec<(PathBuf, u64, u64)>>,
) -> Result<Written, CheckoutError> {
    use nix::sys::stat::Mode;
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
    let root_fd = open_dir(libc::AT_FDCWD, dest.as_os_str().as_bytes())
        .map_err(|e| IoError::new("open directory", dest, e))?;
    let times = &root.times;
    // Directories (path in the image, mode, time, where) with their depth; created level
    // by level below, in parallel. The root is index 0.
    let mut rels: Vec<Vec<u8>> = vec![Vec::new()];
    let mut dirs: Vec<(u32, Option<Mtime>, Option<Loc>)> = vec![(root.mode, times.get(b""), None)];
    let mut index: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    index.insert(Vec::new(), 0);
    let mut depths: Vec<usize> = vec![0];
    // Symlinks, FIFOs and hard links (other than a group's first file) with their times.
    let mut other_times: Vec<(usize, Mtime)> = Vec::new();
    let mut others: Vec<Loc> = Vec::new();
    let mut files = Vec::new();
    let mut links: Vec<(usize, usize)> = Vec::new();
    let mut symlinks = Vec::new();
    let mut fifos = Vec::new();
    // A hard-link group's first file: its index in `others`.
    let mut primaries: std::collections::HashMap<u32, usize> = Default::default();
    root.walk(&mut |rel, node| {
        let name_at = rel.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
        let parent = if name_at == 0 {
            0
        } else {
            *index
                .get(&rel[..name_at - 1])
                .expect("a tree's walk reaches a directory before its entries")
        };
        let loc = Loc {
            rel: rel.to_vec(),
            dir: parent,
            name_at,
        };
        // Symlinks, FIFOs and hard links keep their place (and time) in `others`.
        let mut other = |others: &mut Vec<Loc>, loc: Loc| {
            others.push(loc);
            if let Some(t) = times.get(rel) {
                other_times.push((others.len() - 1, t));
            }
            others.len() - 1
        };
        match node {
            Node::Dir(d) => {
                depths.push(rel.iter().filter(|b| **b == b'/').count() + 1);
                index.insert(rel.to_vec(), rels.len());
                rels.push(rel.to_vec());
                dirs.push((d.mode, times.get(rel), Some(loc)));
            }
            Node::File(f) => match f.link_group.map(|g| (g, primaries.get(&g).copied())) {
                Some((_, Some(primary))) => {
                    let i = other(&mut others, loc);
                    links.push((primary, i))
                }
                other_group => {
                    if let Some((g, None)) = other_group {
                        // The group's first file is written as any file; `others`
                        // keeps where it is for its links (its time is the file's own).
                        others.push(Loc {
                            rel: rel.to_vec(),
                            dir: parent,
                            name_at,
                        });
                        primaries.insert(g, others.len() - 1);
                    }
                    let mode = policy.file_mode(f.mode);
                    let time = times.get(rel);
                    // Hard-link groups are the image's own inodes, and extended
                    // attributes are set after the files: neither is shared.
                    let entry = pool
                        .filter(|_| f.link_group.is_none() && !root.xattrs.contains_key(rel))
                        .map(|pool| pool.entry(rel, &f.oid, mode, time));
                    files.push(FileJob {
                        loc,
                        oid: f.oid,
                        mode,
                        time,
                        entry,
                    });
                }
            },
            Node::Symlink { target } => {
                let i = other(&mut others, loc);
                symlinks.push((i, target.clone()))
            }
            Node::Fifo { mode } => {
                let i = other(&mut others, loc);
                fifos.push((i, policy.file_mode(*mode)))
            }
        }
    });
    let h = Handles {
        root: root_fd.as_raw_fd(),
        dest,
        rels: &rels,
    };
    let at = |loc: &Loc, action: &'static str| {
        let p = loc.path(dest);
        move |e: io::Error| IoError::new(action, p, e)
    };
    let nix_at = |loc: &Loc, action: &'static str| {
        let p = loc.path(dest);
        move |e: nix::errno::Errno| IoError::new(action, p, e.into())
    };
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
        level
            .par_iter()
            .try_for_each_init(Cached::default, |cache, i| -> Result<(), IoError> {
                let (mode, _, loc) = &dirs[*i];
                let loc = loc.as_ref().expect("only the root has no place");
                let m = if dir_direct(*mode) {
                    policy.dir_mode(*mode) & 0o7777
                } else {
                    0o700
                };
                let dir = h.get(cache, loc.dir)?;
                nix::sys::stat::mkdirat(Some(dir), loc.name(), Mode::from_bits_truncate(m))
                    .map_err(nix_at(loc, "create directory"))
            })?;
    }
    let linked = std::sync::atomic::AtomicUsize::new(0);
    files.par_iter().try_for_each_init(
        || (ts.to_thread_local(), Cached::default()),
        |(repo, cache), job| -> Result<(), CheckoutError> {
            let loc = &job.loc;
            crate::interrupt::check().map_err(at(loc, "create file"))?;
            let dir = h.get(cache, loc.dir)?;
            if let (Some(pool), Some(entry)) = (pool, &job.entry) {
                if let super::pool::Linked::Yes(size) =
                    pool.link_to(entry, dir, loc.name(), job.mode, job.time)?
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
            use nix::fcntl::OFlag;
            let fd = crate::run::sys::openat_owned(
                dir,
                loc.name(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(if direct { job.mode } else { 0o600 }),
            )
            .map_err(nix_at(loc, "create file"))?;
            let mut f = fs::File::from(fd);
            write_blob(blob, &mut f).map_err(at(loc, "write file"))?;
            if !direct || job.mode & 0o7000 != 0 {
                f.set_permissions(fs::Permissions::from_mode(job.mode))
                    .map_err(at(loc, "chmod"))?;
            }
            if let Some(t) = job.time {
                let ts = nix::sys::time::TimeSpec::new(t.sec, t.nsec as _);
                nix::sys::stat::futimens(f.as_raw_fd(), &ts, &ts)
                    .map_err(nix_at(loc, "set time of"))?;
            }
            // Complete: only now may the pool name it.
            if let (Some(pool), Some(entry)) = (pool, &job.entry) {
                if pool.adopt(dir, loc.name(), entry) {
                    use std::os::unix::fs::MetadataExt;
                    let md = f.metadata().map_err(at(loc, "stat"))?;
                    adopted.lock().expect("adopted entries lock").push((
                        entry.clone(),
                        md.dev(),
                        md.ino(),
                    ));
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
    symlinks
        .par_iter()
        .try_for_each_init(Cached::default, |cache, (i, target)| {
            let loc = &others[*i];
            let dir = h.get(cache, loc.dir)?;
            nix::unistd::symlinkat(target.as_slice(), Some(dir), loc.name())
                .map_err(nix_at(loc, "create symlink"))
        })?;
    let (mut from, mut to) = (Cached::default(), Cached::default());
    for (primary, i) in &links {
        let (p, loc) = (&others[*primary], &others[*i]);
        let pdir = h.get(&mut from, p.dir)?;
        let dir = h.get(&mut to, loc.dir)?;
        nix::unistd::linkat(
            Some(pdir),
            Path::new(std::ffi::OsStr::from_bytes(p.name())),
            Some(dir),
            Path::new(std::ffi::OsStr::from_bytes(loc.name())),
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(nix_at(loc, "create hard link"))?;
    }
    for (i, mode) in &fifos {
        let loc = &others[*i];
        let dir = h.get(&mut to, loc.dir)?;
        nix::sys::stat::mknodat(
            Some(dir),
            loc.name(),
            nix::sys::stat::SFlag::S_IFIFO,
            Mode::from_bits_truncate(*mode),
            0,
        )
        .map_err(nix_at(loc, "create fifo"))?;
        chmod_at(dir, loc.name(), *mode).map_err(at(loc, "chmod"))?;
    }
    // Extended attributes (user namespace; setting one needs write permission on the
    // file, so add it for the moment where it is missing).
    for (rel, attrs) in &root.xattrs {
        let loc = if rel.is_empty() {
            None
        } else {
            let name_at = rel.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
            let dir = if name_at == 0 {
                0
            } else {
                match index.get(&rel[..name_at - 1]) {
                    Some(d) => *d,
                    None => continue,
                }
            };
            Some(Loc {
                rel: rel.clone(),
                dir,
                name_at,
            })
        };
        let p = dest.join(std::ffi::OsStr::from_bytes(rel));
        // The root by its path; an entry by its name in its directory's handle.
        let (dir, name): (RawFd, &[u8]) = match &loc {
            Some(loc) => (h.get(&mut to, loc.dir)?, loc.name()),
            None => (libc::AT_FDCWD, dest.as_os_str().as_bytes()),
        };
        let Ok(st) =
            nix::sys::stat::fstatat(Some(dir), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            continue;
        }
        let mode = st.st_mode & 0o7777;
        let raise = mode & 0o200 == 0;
        if raise {
            chmod_at(dir, name, mode | 0o200).map_err(|e| IoError::new("chmod", &p, e))?;
        }
        // By its path when the system takes it, else through the handle of its directory.
        let via = if loc.is_none() || p.as_os_str().len() < PATH_MAX {
            p.clone()
        } else {
            PathBuf::from(format!("/proc/self/fd/{dir}")).join(std::ffi::OsStr::from_bytes(name))
        };
        for (n, value) in attrs {
            xattr::set(&via, std::ffi::OsStr::from_bytes(n), value)
                .map_err(|e| IoError::new("set extended attribute", &p, e))?;
        }
        if raise {
            chmod_at(dir, name, mode).map_err(|e| IoError::new("chmod", &p, e))?;
        }
    }
    // Times of symlinks, FIFOs and hard links (a hard link's time is its inode's: the
    // group's paths carry the same time), before any directory is closed by its mode.
    other_times
        .par_iter()
        .try_for_each_init(Cached::default, |cache, (i, t)| {
            let loc = &others[*i];
            let dir = h.get(cache, loc.dir)?;
            set_time_at(dir, loc.name(), *t).map_err(at(loc, "set time of"))
        })?;
    // Deepest first, so that a 0000 directory does not stop us from reaching its children;
    // each directory's time after its contents are complete.
    for (mode, time, loc) in dirs.iter().rev() {
        let Some(loc) = loc else {
            // The root, by its path (once its mode may deny us its handle's names): made
            // by create_dir (umask applied), its mode is always set.
            fs::set_permissions(dest, fs::Permissions::from_mode(policy.dir_mode(*mode)))
                .at("chmod", dest)?;
            if let Some(t) = time {
                set_time(dest, *t).at("set time of", dest)?;
            }
            continue;
        };
        let dir = h.get(&mut to, loc.dir)?;
        if !dir_direct(*mode) {
            chmod_at(dir, loc.name(), policy.dir_mode(*mode)).map_err(at(loc, "chmod"))?;
        }
        if let Some(t) = time {
            set_time_at(dir, loc.name(), *t).map_err(at(loc, "set time of"))?;
        }
    }
    Ok(written)
}

/// The size of the blocks [`write_blob`] leaves as holes when they hold only zeros (the
/// block size of most file systems; a file system with bigger blocks allocates the
/// partial ones, which is only less sparse).
pub const HOLE_BLOCK: usize = 4096;

/// Copy `blob` into the new file `f`, whole blocks of zeros ([`HOLE_BLOCK`], at offsets
/// that are multiples of it) left as holes, as `cp --sparse=auto` and `tar -S` make them:
/// a file of zeros takes no room in a checkout, whether it came sparse or not. A big blob
/// is copied in 256 KiB pieces, at most one held in memory besides what
/// [`super::git::open_blob`] holds.
pub fn write_blob(mut blob: super::git::BlobReader, f: &mut fs::File) -> io::Result<()> {
    use std::io::Read;
    let size = blob.size();
    let mut w = Sparse { f, skip: 0 };
    if size < super::git::STREAM_BLOB_MIN {
        let mut data = Vec::with_capacity(size as usize);
        blob.read_to_end(&mut data)?;
        w.write(&data)?;
    } else {
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
            w.write(&buf[..filled])?;
        }
    }
    w.finish(size)
}

/// A file written from its start, whole zero blocks skipped (see [`write_blob`]). Every
/// piece but the last must be a multiple of [`HOLE_BLOCK`] long.
struct Sparse<'a> {
    f: &'a mut fs::File,
    /// Zeros not written yet, to be skipped before the next data.
    skip: u64,
}

impl Sparse<'_> {
    fn write(&mut self, piece: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        // Only files of a block or more can hold a hole: one write for the rest.
        if piece.len() < HOLE_BLOCK && self.skip == 0 {
            return self.f.write_all(piece);
        }
        let mut rest = piece;
        while !rest.is_empty() {
            // The data blocks up to the next block of zeros, in one write.
            let mut data = 0;
            while data < rest.len() {
                let end = (data + HOLE_BLOCK).min(rest.len());
                if end - data == HOLE_BLOCK && is_zero(&rest[data..end]) {
                    break;
                }
                data = end;
            }
            if data > 0 {
                if self.skip > 0 {
                    self.f.seek(SeekFrom::Current(self.skip as i64))?;
                    self.skip = 0;
                }
                self.f.write_all(&rest[..data])?;
                rest = &rest[data..];
            }
            // The blocks of zeros that follow.
            let mut zeros = 0;
            while rest.len() - zeros >= HOLE_BLOCK && is_zero(&rest[zeros..zeros + HOLE_BLOCK]) {
                zeros += HOLE_BLOCK;
            }
            self.skip += zeros as u64;
            rest = &rest[zeros..];
        }
        Ok(())
    }

    /// Give the file its `size`, the zeros at its end a hole.
    fn finish(self, size: u64) -> io::Result<()> {
        if self.skip > 0 {
            self.f.set_len(size)?;
        }
        Ok(())
    }
}

/// Whether `block` is all zeros: a test in pieces of 64 bytes (which the compiler makes
/// wide), so that a block of data is told from one of zeros in its first piece or so.
fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |a, b| a | b) == 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// `pieces` written through [`Sparse`] into a new file: its content and the bytes
    /// its blocks take.
    fn sparse(pieces: &[&[u8]]) -> (Vec<u8>, u64) {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        let mut f = fs::File::create(&p).expect("create");
        let size = pieces.iter().map(|p| p.len() as u64).sum();
        let mut w = Sparse { f: &mut f, skip: 0 };
        for piece in pieces {
            w.write(piece).expect("write");
        }
        w.finish(size).expect("finish");
        drop(f);
        let md = fs::metadata(&p).expect("stat");
        (fs::read(&p).expect("read"), md.blocks() * 512)
    }

    #[test]
    fn whole_blocks_of_zeros_become_holes_and_the_content_is_kept() {
        let b = HOLE_BLOCK;
        let data = |n: usize| (0..n).map(|i| (i % 251) as u8 + 1).collect::<Vec<u8>>();
        let mut mixed = data(5000);
        mixed.resize(5000 + (1 << 20), 0);
        mixed.extend(data(100));
        let mut zeros_then_data = vec![0u8; 3 * b];
        zeros_then_data.extend(data(10));
        let cases: Vec<(Vec<u8>, u64)> = vec![
            (vec![0u8; 1 << 20], 0),
            (mixed.clone(), 3 * b as u64),
            (zeros_then_data, b as u64),
            (vec![0u8; b - 1], b as u64),
            (data(3 * b + 7), 4 * b as u64),
            (Vec::new(), 0),
        ];
        for (content, most) in cases {
            // Whole, and in pieces of two blocks (as streamed blobs are, in 256 KiB).
            let pieces: Vec<&[u8]> = content.chunks(2 * b).collect();
            for (got, used) in [sparse(&[&content]), sparse(&pieces)] {
                assert!(got == content, "{} bytes read back differ", content.len());
                assert!(used <= most, "{} bytes take {used}", content.len());
            }
        }
    }
}
