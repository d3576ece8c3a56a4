//! The image store: a storage directory holding a bare git repository (written through
//! gix), image checkouts and scratch space. Layout and formats: docs/store-format.md.
//!
//! Knows nothing of Dockerfiles: it stores trees, metadata and refs.
//!
//! Concurrency: writers (import, delete, undelete, builds) hold the exclusive `lock` file
//! ([`Store::lock`]); readers (list, ch-run by name) take no lock and see either the old or
//! the new state, because refs and checkout symlinks change by atomic rename.

pub mod checkout;
pub mod compaction;
pub mod config;
pub mod diff;
pub mod export;
pub mod git;
pub mod history;
pub mod import;
pub mod layer;
pub mod layout;
pub mod maint;
pub mod meta;
pub mod model;
pub mod notes;
pub mod oci;
pub mod pack;
pub mod pool;
pub mod stamp;

use crate::error::{IoError, IoResultExt};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::reference::Reference;
pub use config::ImageConfig;
pub use git::{Expect, GitError, ReadError};
pub use layout::Layout;
pub use model::{Dir, Node};

/// Content of the `version` file.
pub const STORAGE_VERSION: &str = "grove 2";

/// Ref namespace of images.
pub const IMAGE_REFS: &str = "refs/grove/img/";
/// Ref namespace of deleted images (for undelete).
pub const DELETED_REFS: &str = "refs/grove/deleted/";
/// Ref namespace of build-cache entries (key -> commit).
pub const CACHE_REFS: &str = "refs/grove/cache/";

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage directory seems invalid: {0}")]
    Invalid(PathBuf, &'static str),
    #[error(
        "storage directory {0}: unsupported version {1:?} (this Grove uses {STORAGE_VERSION:?})"
    )]
    Version(PathBuf, String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Import(#[from] import::ImportError),
    #[error(transparent)]
    Checkout(#[from] checkout::CheckoutError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error(transparent)]
    Oci(#[from] oci::OciError),
    #[error("no image named {0} in storage")]
    NoImage(String),
    /// Charliecloud's words, then the name.
    #[error("image not in cache: {0}")]
    NoDeleted(String),
    /// `reset` of a storage directory that does not exist (Charliecloud's words).
    #[error("{} not a builder storage", .0.display())]
    NotStorage(PathBuf),
    /// Charliecloud's words, then the name.
    #[error("image exists; will not overwrite: {0}")]
    Exists(String),
    #[error("image {name} changed while this command ran; try again")]
    Raced { name: String },
    #[error("refusing remote {0:?}: a remote must not be empty or start with '-' (it would be taken as an option)")]
    BadRemote(String),
    /// A fetch brought something that fails validation; no ref was moved.
    #[error("refusing fetch from {remote}: {refname}: {reason}")]
    Refused {
        remote: String,
        refname: String,
        reason: String,
    },
    #[error(transparent)]
    Stamp(#[from] stamp::StampError),
    /// An image to run from a storage directory its user can't write (the view's trees
    /// would have to be made, `source` the refused write lock).
    #[error("{name} is not checked out in {}, and checking it out writes there", storage.display())]
    NotCheckedOut {
        name: String,
        storage: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// A hint for the user, printed after the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::Invalid(p, _) => Some(format!(
                "Grove creates its storage directory itself: give -s (or $CH_IMAGE_STORAGE) a path that does not exist yet, not {}",
                p.display()
            )),
            StoreError::Version(..) => Some("use `ch-image reset` to start over with an empty store".into()),
            StoreError::NoImage(_) => Some("`ch-image list` shows the images in storage".into()),
            StoreError::NoDeleted(_) => {
                Some("`ch-image list --undeletable` shows the deleted images".into())
            }
            StoreError::Exists(n) => Some(format!(
                "delete it first (`ch-image delete {n}`) to undelete the deleted one"
            )),
            StoreError::Export(e) => e.hint(),
            StoreError::Stamp(e) => e.hint(),
            StoreError::NotCheckedOut { name, storage, .. } => Some(format!(
                "check it out once where the storage directory is writable (`ch-image -s {} checkout {name}`, or a first `ch-run {name}`) before making it read-only, or run a SquashFS file of it (`ch-convert {name} IMG.sqfs`)",
                storage.display()
            )),
            _ => None,
        }
    }
}

/// A failed ref update where the caller does not report races itself: the git error.
impl From<git::RefUpdateError> for StoreError {
    fn from(e: git::RefUpdateError) -> Self {
        StoreError::Git(e.into())
    }
}

/// Remove `*.lock` files below `dir` (best effort).
fn remove_lock_files(dir: &Path, min_age_secs: u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => remove_lock_files(&p, min_age_secs),
            Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "lock") => {
                let age = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok());
                if min_age_secs == 0 || age.is_some_and(|a| a.as_secs() >= min_age_secs) {
                    let _ = fs::remove_file(&p);
                }
            }
            _ => {}
        }
    }
}

/// `path` as an argument for another program: a relative path starting with `-` gets
/// `./` in front, so that it cannot be taken as an option.
pub fn path_arg(path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().starts_with(b"-") {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// Encode an image name (filename form) as one ref component: `.` that would make an
/// invalid ref (leading, doubled, or starting `.lock` at the end) becomes `=2e`; `=` is
/// not legal in image references, so the encoding is reversible.
pub fn ref_component(for_path: &str) -> String {
    let b = for_path.as_bytes();
    let mut out = String::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        let risky = c == b'.'
            && (i == 0 || b[i - 1] == b'.' || for_path[i..].eq_ignore_ascii_case(".lock"));
        if risky {
            out.push_str("=2e");
        } else {
            out.push(c as char);
        }
    }
    out
}

/// Reverse of [`ref_component`].
pub fn from_ref_component(c: &str) -> String {
    c.replace("=2e", ".")
}

/// A storage directory.
pub struct Store {
    root: PathBuf,
    layout: Layout,
    repo: gix::ThreadSafeRepository,
    xattrs: model::XattrPolicy,
}

/// The writer lock (shared among writers of different images, or exclusive); released
/// on drop.
pub struct WriteLock {
    _flock: nix::fcntl::Flock<fs::File>,
    /// Whether this is the exclusive (maintenance) lock.
    pub exclusive: bool,
}

impl WriteLock {
    /// A copy of the lock's descriptor without close-on-exec, for a child that must hold
    /// the lock as long as it runs, even after this process is gone (git maintenance):
    /// flock(2) locks belong to the open file, which the copy shares. Close it once the
    /// child is started, so that other children do not inherit it.
    pub fn inheritable(&self) -> io::Result<std::os::fd::OwnedFd> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use std::os::fd::AsRawFd;
        let copy = self._flock.try_clone()?;
        fcntl(copy.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).map_err(io::Error::from)?;
        Ok(copy.into())
    }
}

/// The lock of one image; released on drop.
pub struct ImageLock {
    _flock: nix::fcntl::Flock<fs::File>,
}

impl Store {
    /// Open the storage directory at `root`, creating it if it does not exist. An existing
    /// directory that is not a Grove store is refused.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        match fs::symlink_metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::create(root)?,
            Err(e) => return Err(IoError::new("stat", root, e).into()),
            Ok(_) => {}
        }
        Self::open_existing(root)
    }

    /// Open an existing store without creating one.
    pub fn open_existing(root: &Path) -> Result<Store, StoreError> {
        let layout = Layout::new(root);
        let vpath = layout.version_file();
        let version = match fs::read_to_string(&vpath) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Invalid(root.to_path_buf(), "no version file"));
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(StoreError::Invalid(root.to_path_buf(), "not a directory"));
            }
            Err(e) => return Err(IoError::new("read", &vpath, e).into()),
        };
        let version = version.trim_end();
        if version != STORAGE_VERSION {
            if version.chars().all(|c| c.is_ascii_digit()) {
                return Err(StoreError::Invalid(
                    root.to_path_buf(),
                    "it looks like Charliecloud's storage, not Grove's",
                ));
            }
            return Err(StoreError::Version(root.to_path_buf(), version.to_string()));
        }
        let repo = gix::open_opts(layout.repo(), gix::open::Options::isolated()).map_err(
            git::git_err(format!("open repository in {}", root.display())),
        )?;
        Ok(Store {
            root: root.to_path_buf(),
            layout,
            repo: repo.into_sync(),
            xattrs: model::XattrPolicy::Ignore,
        })
    }

    /// Create a store atomically: build it in a sibling directory, then rename.
    fn create(root: &Path) -> Result<(), StoreError> {
        let parent = root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent).at("create directory", parent)?;
        let name = root.file_name().ok_or(StoreError::Invalid(
            root.to_path_buf(),
            "no final path component",
        ))?;
        let tmp = parent.join(format!(
            ".{}.creating.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = checkout::remove_tree(&tmp);
        fs::create_dir(&tmp).at("create directory", &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).at("chmod", &tmp)?;
        let new = Layout::new(&tmp);
        for d in layout::CREATED_DIRS {
            fs::create_dir(tmp.join(d)).at("create directory", &tmp)?;
        }
        fs::write(new.lock_file(), b"").at("create", &tmp)?;
        let repo = gix::init_bare(new.repo()).map_err(git::git_err("initialize repository"))?;
        drop(repo);
        // Loose objects compressed fast: imports are bound by compression otherwise.
        let cfg = new.repo_config();
        let mut text = fs::read_to_string(&cfg).at("read", &cfg)?;
        text.push_str("[core]\n\tlooseCompression = 1\n[gc]\n\tauto = 0\n");
        fs::write(&cfg, text).at("write", &cfg)?;
        fs::write(new.version_file(), format!("{STORAGE_VERSION}\n")).at("write", &tmp)?;
        match fs::rename(&tmp, root) {
            Ok(()) => Ok(()),
            // Someone else created it at the same time: use theirs.
            Err(_) if Layout::new(root).version_file().exists() => {
                let _ = checkout::remove_tree(&tmp);
                Ok(())
            }
            Err(e) => Err(IoError::new("create storage directory", root, e).into()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This store with imports, builds and pulls through it recording extended attributes
    /// or not (`--xattrs`; the default is not).
    pub fn with_xattrs(mut self, xattrs: model::XattrPolicy) -> Store {
        self.xattrs = xattrs;
        self
    }

    /// Whether operations through this store record extended attributes.
    pub fn xattrs(&self) -> model::XattrPolicy {
        self.xattrs
    }

    /// The paths under the storage directory.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A thread-local repository handle.
    pub fn repo(&self) -> gix::Repository {
        self.repo.to_thread_local()
    }

    pub fn thread_safe(&self) -> &gix::ThreadSafeRepository {
        &self.repo
    }

    /// Take the writer lock, shared with other writers of other images (each writer also
    /// takes [`Store::lock_image`] for the image it changes). When no other writer is
    /// active, first clean up after killed writers and remove unused checkouts.
    pub fn lock(&self) -> Result<WriteLock, StoreError> {
        use nix::fcntl::{Flock, FlockArg};
        match Flock::lock(
            open_lock_file(&self.layout)?,
            FlockArg::LockExclusiveNonblock,
        ) {
            Ok(l) => {
                self.cleanup(true);
                let _ = self.prune_unlinked_checkouts();
                l.relock(FlockArg::LockShared).map_err(|e| {
                    StoreError::Io(IoError {
                        action: "lock",
                        path: self.layout.lock_file(),
                        source: e.into(),
                    })
                })?;
                Ok(WriteLock {
                    _flock: l,
                    exclusive: false,
                })
            }
            Err((f, _)) => {
                let l = flock(&self.layout, f, false)?;
                self.cleanup(false);
                Ok(WriteLock {
                    _flock: l,
                    exclusive: false,
                })
            }
        }
    }

    /// A shared lock on the storage for a container run by name, held until the process
    /// exits: the descriptor is left open and survives `execve` (no close-on-exec), so the
    /// container's command keeps holding it after ch-run replaces itself. Until the last
    /// process holding it exits, writers do not remove checkouts (they do so only when
    /// they can lock alone) and maintenance (gc, reset) waits. Take it before resolving
    /// the image name. Returns the descriptor's number.
    pub fn run_lease(&self) -> Result<std::os::fd::RawFd, StoreError> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use std::os::fd::AsRawFd;
        let path = self.layout.lock_file();
        let f = fs::File::open(&path).at("open", &path)?;
        let held = flock(&self.layout, f, false)?;
        let fd = held.as_raw_fd();
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| {
            StoreError::Io(IoError {
                action: "lock",
                path,
                source: e.into(),
            })
        })?;
        // Never closed (closing would release the lock): it lives as long as the process
        // and what it execs.
        std::mem::forget(held);
        Ok(fd)
    }

    /// After a command failed: remove the packs and big loose objects it wrote that
    /// nothing can use ([`pack::reclaim_written`]), so that a command that failed on a
    /// full disk leaves the space it found. Only when no other writer, container or
    /// maintenance holds the lock (tried once, never waited for): otherwise they stay
    /// for `build-cache --gc`. Call it with every lock of this process released. Returns
    /// the files removed and their bytes.
    pub fn reclaim_failed_writes(root: &Path) -> (usize, u64) {
        use nix::fcntl::{Flock, FlockArg};
        if !pack::wrote_reclaimable() {
            return (0, 0);
        }
        let layout = Layout::new(root);
        let Ok(f) = fs::File::open(layout.lock_file()) else {
            return (0, 0);
        };
        let Ok(held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
            return (0, 0);
        };
        let out = pack::reclaim_written(&layout.objects());
        drop(held);
        out
    }

    /// Take the writer lock exclusively (maintenance: gc, cache reset).
    pub fn lock_exclusive(&self) -> Result<WriteLock, StoreError> {
        let l = flock(&self.layout, open_lock_file(&self.layout)?, true)?;
        self.cleanup(true);
        Ok(WriteLock {
            _flock: l,
            exclusive: true,
        })
    }

    /// Take the lock of one image, so that two writers of the same image run one after
    /// the other (writers of different images run at once). Released on drop.
    pub fn lock_image(&self, _lock: &WriteLock, name: &Reference) -> Result<ImageLock, StoreError> {
        let path = self.layout.image_lock(&ref_component(&name.for_path()));
        self.lock_in_locks_dir(&path, || {
            crate::info!("waiting for another writer of image {name}")
        })
    }

    /// Take the lock of the checkout of `commit` ([`Layout::checkout_lock`]), waiting
    /// for the writer that holds it. Released on drop.
    fn lock_checkout(&self, commit: &ObjectId) -> Result<ImageLock, StoreError> {
        let path = self.layout.checkout_lock(commit);
        self.lock_in_locks_dir(&path, || {
            crate::verbose!(
                "waiting for another checkout of {}",
                &commit.to_string()[..12]
            )
        })
    }

    /// Take the lock of cache key `key_hex` ([`Layout::cache_key_lock`]), waiting
    /// (interruptibly) for the build that holds it; `on_wait` says so. A build takes it on
    /// a miss and holds it until the step's entry is written, so that two builds missing
    /// the same step run it once: the second, once it has the lock, looks the key up
    /// again and finds the entry. Released on drop. May run in parallel with anything.
    pub fn lock_cache_key(
        &self,
        _lock: &WriteLock,
        key_hex: &str,
        on_wait: impl FnOnce(),
    ) -> Result<ImageLock, StoreError> {
        self.lock_in_locks_dir(&self.layout.cache_key_lock(key_hex), on_wait)
    }

    /// Lock `path`, a file in [`Layout::image_locks`] made if missing, exclusively;
    /// `on_wait` says whom it waits for when another process holds it.
    fn lock_in_locks_dir(
        &self,
        path: &Path,
        on_wait: impl FnOnce(),
    ) -> Result<ImageLock, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.layout.image_locks();
        fs::create_dir_all(&dir).at("create directory", &dir)?;
        let mut on_wait = Some(on_wait);
        loop {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .at("open", path)?;
            let l = lock_or_wait(f, path, true, || {
                if let Some(w) = on_wait.take() {
                    w()
                }
            })?;
            // Removed (or removed and made again) while this process waited: the lock
            // is the file's at `path` now ([`Store::prune_checkout_locks`]).
            let md = l.metadata().at("stat", path)?;
            match fs::symlink_metadata(path) {
                Ok(now) if now.dev() == md.dev() && now.ino() == md.ino() => {
                    return Ok(ImageLock { _flock: l })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(IoError::new("stat", path, e).into()),
            }
        }
    }

    /// Remove what killed writers left. With `alone` (no other writer holds the lock),
    /// everything in `tmp/` and every ref lock file goes; otherwise only scratch entries of
    /// dead processes and files too old to belong to a live writer.
    fn cleanup(&self, alone: bool) {
        // Temporary pack files of dead writers (lock-free conversions may be writing one
        // right now) and loose-object temporary files too old to be a live writer's.
        for (path, _) in self.leftovers(600) {
            let _ = fs::remove_file(path);
        }
        let tmp = self.layout.tmp();
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                if alone || !scratch_writer_alive(&e.file_name().to_string_lossy()) {
                    let _ = checkout::remove_tree(&e.path());
                }
            }
        }
        // Lock files of a killed git gc or repack would fail every later gc. Only
        // maintenance runs those, holding the lock exclusively (and its git holds it on
        // after a kill): a process that locks alone knows none runs.
        if alone {
            for p in self.layout.git_maintenance_locks() {
                let _ = fs::remove_file(p);
            }
            // One cache-key lock file is made per step a build ran; only builds, which
            // hold the storage lock, hold them.
            if let Ok(rd) = fs::read_dir(self.layout.image_locks()) {
                for e in rd.flatten() {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    if n.starts_with(layout::CACHE_KEY_LOCK_PREFIX) && n.ends_with(".lock") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        // Ref lock files left by a killed writer would fail every later update of their
        // ref. Live writers hold them for milliseconds.
        remove_lock_files(&self.layout.refs(), if alone { 0 } else { 60 });
        let pr = self.layout.packed_refs_lock();
        if alone
            || fs::metadata(&pr)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a.as_secs() > 60)
        {
            let _ = fs::remove_file(pr);
        }
    }

    /// Temporary files that killed or failed writers left in the repository: Grove's
    /// temporary packs (`objects/pack/tmp_grove_PID_N.*`) whose process is gone, and
    /// git's and gix's temporary files (`objects/pack/tmp_*`, `objects/.tmp*`,
    /// `objects/XX/.tmp*`) older than `min_age_secs`, and lock files of git maintenance
    /// ([`Layout::git_maintenance_locks`]) older than that. With a reason each, for fsck.
    pub fn leftovers(&self, min_age_secs: u64) -> Vec<(PathBuf, &'static str)> {
        let objects = self.layout.objects();
        let age_ok = |p: &Path| {
            fs::symlink_metadata(p)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a.as_secs() >= min_age_secs)
        };
        let mut out = Vec::new();
        let mut dirs = vec![objects.clone(), objects.join("pack")];
        if let Ok(rd) = fs::read_dir(&objects) {
            for e in rd.flatten() {
                let n = e.file_name();
                if n.len() == 2 && e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
        for d in dirs {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let p = e.path();
                if let Some(rest) = name.strip_prefix("tmp_grove_") {
                    let pid = rest.split('_').next().and_then(|p| p.parse::<u32>().ok());
                    if !pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
                        out.push((p, "temporary pack of a writer that is gone"));
                    }
                } else if (name.starts_with("tmp_") || name.starts_with(".tmp")) && age_ok(&p) {
                    out.push((p, "temporary object file of a writer that is gone"));
                }
            }
        }
        for p in self.layout.git_maintenance_locks() {
            if p.exists() && age_ok(&p) {
                out.push((p, "lock file of a git gc or repack that is gone"));
            }
        }
        out.sort();
        out
    }

    /// A fresh scratch path under `tmp/` (not created). Only valid while locked.
    pub fn scratch_path(&self, tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.layout.scratch(tag, std::process::id(), n)
    }

    fn image_ref(name: &Reference) -> String {
        format!("{IMAGE_REFS}{}", ref_component(&name.for_path()))
    }

    /// The commit an image name points to.
    pub fn image(&self, name: &Reference) -> Result<Option<ObjectId>, StoreError> {
        Ok(git::get_ref(&self.repo(), &Self::image_ref(name))?)
    }

    /// Like [`Store::image`], but a missing image is an error.
    pub fn require_image(&self, name: &Reference) -> Result<ObjectId, StoreError> {
        self.image(name)?
            .ok_or_else(|| StoreError::NoImage(name.to_string()))
    }

    /// An image commit given by its id (`ch-image checkout --commit`): `NoImage` unless
    /// `hex` names a commit of this store whose trees are an image's.
    pub fn image_commit(&self, hex: &str) -> Result<ObjectId, StoreError> {
        let id = ObjectId::from_hex(hex.as_bytes())
            .map_err(|_| StoreError::NoImage(format!("commit {hex}")))?;
        git::image_trees(&self.repo(), id)
            .map_err(|_| StoreError::NoImage(format!("commit {hex}")))?;
        Ok(id)
    }

    /// All images, sorted by name.
    pub fn list(&self) -> Result<Vec<(String, ObjectId)>, StoreError> {
        self.list_under(IMAGE_REFS)
    }

    /// Deleted images that `undelete` can restore, sorted by name.
    pub fn list_deleted(&self) -> Result<Vec<(String, ObjectId)>, StoreError> {
        self.list_under(DELETED_REFS)
    }

    fn list_under(&self, namespace: &str) -> Result<Vec<(String, ObjectId)>, StoreError> {
        let refs = git::list_refs(&self.repo(), namespace)?;
        Ok(refs
            .into_iter()
            .map(|(c, id)| {
                (
                    from_ref_component(&c).replace('%', "/").replace('+', ":"),
                    id,
                )
            })
            .collect())
    }

    /// Point `name` at `commit` (the ref must still be at `expect`), then make its
    /// checkout current. Requires the lock.
    pub fn set_image(
        &self,
        _lock: &WriteLock,
        name: &Reference,
        commit: ObjectId,
        expect: Expect,
    ) -> Result<PathBuf, StoreError> {
        self.set_image_from(_lock, name, commit, expect, None)
    }

    /// [`Store::set_image`], checking out from `model` (the commit's tree, in hand) rather
    /// than reading it back from the repository.
    pub fn set_image_from(
        &self,
        _lock: &WriteLock,
        name: &Reference,
        commit: ObjectId,
        expect: Expect,
        model: Option<&Dir>,
    ) -> Result<PathBuf, StoreError> {
        let dir = self.checkout_from(_lock, commit, model)?;
        git::update_refs(
            &self.repo(),
            &[(Self::image_ref(name), Some(commit), expect)],
        )
        .map_err(|e| self.raced(name, e))?;
        self.link_checkout(name, &dir)?;
        self.prune_checkouts(_lock)?;
        Ok(dir)
    }

    fn raced(&self, name: &Reference, e: git::RefUpdateError) -> StoreError {
        match e {
            git::RefUpdateError::Raced(_) => StoreError::Raced {
                name: name.to_string(),
            },
            git::RefUpdateError::Git(e) => StoreError::Git(e),
        }
    }

    /// Directory of the checkout of `commit`, creating it if needed. Requires the lock.
    pub fn checkout(&self, lock: &WriteLock, commit: ObjectId) -> Result<PathBuf, StoreError> {
        self.checkout_from(lock, commit, None)
    }

    fn checkout_from(
        &self,
        _lock: &WriteLock,
        commit: ObjectId,
        model: Option<&Dir>,
    ) -> Result<PathBuf, StoreError> {
        let dir = self.layout.checkout(&commit);
        if dir.is_dir() {
            return Ok(dir);
        }
        // One writer makes a commit's checkout at a time: the ranks of a job that start
        // an image with no checkout yet wait for the first one's, then use it (before,
        // each wrote a whole checkout of its own and all but one were thrown away).
        let _one = self.lock_checkout(&commit)?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let t = std::time::Instant::now();
        let read;
        let root = match model {
            Some(m) => m,
            None => {
                read = git::read_image(&self.repo(), commit)?.0;
                &read
            }
        };
        let tmp = self.scratch_path("checkout");
        let pool = pool::Pool::new(self.layout.pool());
        let written = match checkout::materialize_shared(&self.repo, root, &tmp, &pool) {
            Ok(w) => w,
            Err(e) => {
                // A failed writer removes what it wrote (the pool entries it made that
                // nothing else links went already).
                let _ = checkout::remove_tree(&tmp);
                return Err(e.into());
            }
        };
        crate::verbose!(
            "checked out {} in {:.2}s: wrote {} files, linked {} from the pool",
            &commit.to_string()[..12],
            t.elapsed().as_secs_f64(),
            written.files,
            written.linked
        );
        if let Err(e) = fs::rename(&tmp, &dir) {
            // Another writer checked the same commit out meanwhile: use theirs.
            let _ = checkout::remove_tree(&tmp);
            if !dir.is_dir() {
                return Err(IoError::new("rename checkout into place", &dir, e).into());
            }
        }
        stamp::record(&dir)?;
        Ok(dir)
    }

    /// Check a checkout or kept layer (`checkouts/C`, `layers/C`) against its stamp,
    /// reading the files whose inodes changed since it was stamped (see
    /// [`stamp::verify`]). Uses threads. Returns whether the tree is kept: a copy that
    /// is not what Grove made ([`stamp::StampError::Unfaithful`]: the storage directory
    /// was copied or restored by a tool that lost something) is only a cache of the git
    /// objects, so it is removed, with a warning, and `false` returned: the caller makes
    /// its view again. In a read-only storage directory that is the error. Another
    /// process (a RUN, `ch-run` of the same image) may check the same copy at once and
    /// remove it, or remove it and check it out again, under this check: a tree that is
    /// gone or another inode once the check failed is not this check's to judge or
    /// remove, and `false` is returned too. `read_only`: the caller holds no write lock
    /// (a read-only storage directory): a tree that is whole but for write permissions
    /// taken away (`chmod -R a-w`) is used as it is; with the lock it is made again, as
    /// one that lost times or modes in place ([`stamp::StampError::Altered`]) is.
    pub fn verify_tree(&self, dir: &Path, read_only: bool) -> Result<bool, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let ino = match fs::symlink_metadata(dir) {
            Ok(m) => m.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(IoError::new("stat", dir, e).into()),
        };
        let replaced = || fs::symlink_metadata(dir).map_or(true, |m| m.ino() != ino);
        // `checkouts/` or `layers/` made read-only (`chmod -R a-w` of them) under a
        // storage directory that is not: no tree there can be replaced either.
        let read_only = read_only
            || dir
                .parent()
                .is_some_and(|p| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_err());
        let pool = pool::Pool::new(self.layout.pool());
        let is_layer = dir.parent() == Some(self.layout.layers().as_path());
        // A kept layer whose commit is gone: the base layer of a delta layer, which gc
        // keeps after the cache entry that made it went (and git's gc its commit). It
        // can't be checked against its commit when its stamp can't vouch for it.
        let gone = std::cell::Cell::new(false);
        let commit = || {
            let err = |msg: String| stamp::StampError::Commit {
                dir: dir.to_path_buf(),
                msg,
            };
            let id = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok())
                .ok_or_else(|| err("not named by a commit id".into()))?;
            let repo = self.repo();
            git::read_image(&repo, id).map(|(m, _)| m).map_err(|e| {
                if is_layer && repo.find_header(id).is_err() {
                    gone.set(true);
                    return err(format!(
                        "{e} (a delta layer's base layer whose commit a gc before session \
                         32 removed: it can't be checked where its stamp does not vouch for \
                         it, as in a copied store, one made read-only with chmod, or one \
                         stamped by a grove older than stamps of version 3)"
                    ));
                }
                err(e.to_string())
            })
        };
        // What a layer lies on: its parent's tree, and a delta layer's base layers (all
        // of them there, else no view uses it).
        let below = || {
            let err = |msg: String| stamp::StampError::Commit {
                dir: dir.to_path_buf(),
                msg,
            };
            let id = match dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok())
            {
                Some(id) if dir.parent() == Some(self.layout.layers().as_path()) => id,
                _ => return Ok(None),
            };
            let Ok(bases) = layer::read_bases(&self.layout.layers(), id) else {
                return Ok(None);
            };
            let bases: Vec<PathBuf> = bases.iter().map(|b| self.layout.layer(b)).collect();
            if !bases.iter().all(|b| b.is_dir()) {
                return Ok(None);
            }
            let repo = self.repo();
            let parent = git::image_trees(&repo, id)
                .map_err(|e| err(e.to_string()))?
                .parent;
            match parent {
                Some(p) => git::read_image(&repo, p)
                    .map(|(m, _)| Some(stamp::Below { parent: m, bases }))
                    .map_err(|e| err(e.to_string())),
                None => Ok(None),
            }
        };
        let r = stamp::verify(dir, &pool, commit, below, read_only);
        match r {
            Ok(()) => Ok(true),
            Err(_) if replaced() => Ok(false),
            // Only a cache of what the delta layers over it and the git objects hold: the
            // view is made again without it (a checkout of the delta layer's commit).
            Err(
                e @ (stamp::StampError::Unfaithful { .. }
                | stamp::StampError::Altered { .. }
                | stamp::StampError::Commit { .. }),
            ) if !read_only && (gone.get() || !matches!(e, stamp::StampError::Commit { .. })) => {
                match self.discard_tree(dir, ino) {
                    Ok(true) => {
                        crate::warn!("{e}; removed it: grove makes it again from the git objects");
                        Ok(false)
                    }
                    Ok(false) => Ok(false),
                    Err(re) => {
                        crate::verbose!("can't remove {}: {re}", dir.display());
                        Err(e.into())
                    }
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Remove a checkout or kept layer with its stamp (and a delta layer's list of
    /// bases): renamed out of the way first, so that no reader finds half of it. Only
    /// the tree whose top directory is inode `ino`: `false` when another process removed
    /// it first (and perhaps made it again, which is then put back).
    fn discard_tree(&self, dir: &Path, ino: u64) -> Result<bool, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let gone = self.scratch_path("discard");
        match fs::rename(dir, &gone) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            r => r.at("rename out of the way", dir)?,
        }
        if fs::symlink_metadata(&gone).at("stat", &gone)?.ino() != ino {
            // Made again by another process since the check: theirs, and whole.
            if fs::rename(&gone, dir).is_err() {
                checkout::remove_tree(&gone).at("remove", &gone)?;
            }
            return Ok(false);
        }
        let _ = fs::remove_file(stamp::stamp_path(dir));
        let is_layer = dir.parent() == Some(self.layout.layers().as_path());
        if let (true, Some(id)) = (
            is_layer,
            dir.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok()),
        ) {
            let _ = fs::remove_file(self.layout.layer_bases(&id));
        }
        checkout::remove_tree(&gone).at("remove", &gone)?;
        Ok(true)
    }

    /// [`Store::view`], each directory checked against its stamp first
    /// ([`Store::verify_tree`], in parallel); when a copy that is not Grove's was removed,
    /// the view is made again without it.
    pub fn view_verified(
        &self,
        lock: &WriteLock,
        commit: ObjectId,
    ) -> Result<Vec<PathBuf>, StoreError> {
        use rayon::prelude::*;
        loop {
            let dirs = self.view(lock, commit)?;
            let kept = dirs
                .par_iter()
                .map(|d| self.verify_tree(d, false))
                .collect::<Result<Vec<bool>, StoreError>>()?;
            // Each pass removes a tree, and the trees a view makes are stamped as made:
            // this ends.
            if kept.into_iter().all(|k| k) {
                return Ok(dirs);
            }
        }
    }

    /// Path of an image's checkout link (`img/NAME`, filename form), as ch-run looks it up.
    pub fn checkout_link(&self, name: &Reference) -> PathBuf {
        self.layout.image_link(&name.for_path())
    }

    fn link_checkout(&self, name: &Reference, dir: &Path) -> Result<(), StoreError> {
        let link = self.checkout_link(name);
        let rel = Layout::image_link_target(dir.file_name().expect("checkout dir has a name"));
        let tmp = self.scratch_path("link");
        std::os::unix::fs::symlink(&rel, &tmp).at("create symlink", &tmp)?;
        fs::rename(&tmp, &link).at("rename symlink into place", &link)?;
        Ok(())
    }

    /// Remove checkouts that no image links to and no view mark keeps, if `lock` is
    /// exclusive (with other writers about, an unlinked checkout may be a build's view).
    pub fn prune_checkouts(&self, lock: &WriteLock) -> Result<(), StoreError> {
        if lock.exclusive {
            self.prune_unlinked_checkouts()?;
        }
        Ok(())
    }

    /// Names in `checkouts/` that an image's link (`img/NAME`) points to.
    fn linked_checkouts(&self) -> Result<std::collections::HashSet<OsString>, StoreError> {
        let img = self.layout.images();
        let mut live = std::collections::HashSet::new();
        for e in fs::read_dir(&img).at("read directory", &img)?.flatten() {
            if let Ok(t) = fs::read_link(e.path()) {
                if let Some(n) = t.file_name() {
                    live.insert(n.to_os_string());
                }
            }
        }
        Ok(live)
    }

    /// Remove the checkouts that no image links to and no view mark (`views/C`, see
    /// [`Store::view`]) keeps. Callers hold the lock alone; first the marks go that keep
    /// nothing ([`Store::drop_idle_view_marks`]).
    fn prune_unlinked_checkouts(&self) -> Result<(), StoreError> {
        let live = self.linked_checkouts()?;
        // Kept marks keep checkouts: a failure here (an object that can't be read) only
        // leaves some that could go.
        if let Err(e) = self.drop_idle_view_marks(&live) {
            crate::verbose!("can't tell which view marks keep nothing: {e}");
        }
        let co = self.layout.checkouts();
        let views = self.layout.views();
        let mut removed = false;
        for e in fs::read_dir(&co).at("read directory", &co)?.flatten() {
            if !live.contains(&e.file_name()) && !views.join(e.file_name()).exists() {
                // Move aside first so a half-removed checkout is never mistaken for whole.
                let tmp = self.scratch_path("prune");
                if fs::rename(e.path(), &tmp).is_ok() {
                    let _ = checkout::remove_tree(&tmp);
                    removed = true;
                }
            }
        }
        // The pool's files only the removed checkouts used (callers hold the lock alone,
        // so no checkout is linking meanwhile).
        if removed {
            pool::Pool::new(self.layout.pool()).prune()?;
        }
        self.prune_checkout_locks();
        Ok(())
    }

    /// Remove the view marks (`views/C`) that keep nothing: those whose checkout is gone
    /// (removed by hand, or a checkout that failed), and those of an unlinked checkout
    /// (not in `linked`) whose commit no image reaches any more (its images deleted or
    /// rebuilt), so that the pruning that follows removes the checkout, as gc would. The
    /// commits of the images are walked only when such a mark exists, and only until
    /// every marked commit is found. Callers hold the storage lock alone (no build is
    /// between a view's mark and its checkout).
    fn drop_idle_view_marks(
        &self,
        linked: &std::collections::HashSet<OsString>,
    ) -> Result<(), StoreError> {
        let dir = self.layout.views();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(IoError::new("read directory", &dir, e).into()),
        };
        let mut unlinked = std::collections::HashMap::new();
        for e in rd.flatten() {
            let name = e.file_name();
            let id = name
                .to_str()
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok());
            match id {
                Some(id) if self.layout.checkout(&id).is_dir() => {
                    if !linked.contains(&name) {
                        unlinked.insert(id, e.path());
                    }
                }
                _ => {
                    crate::debug!(
                        "removing a view mark that keeps nothing: {}",
                        e.path().display()
                    );
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        if unlinked.is_empty() {
            return Ok(());
        }
        let repo = self.repo();
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<ObjectId> = self.list()?.into_iter().map(|(_, c)| c).collect();
        while let Some(c) = todo.pop() {
            if !seen.insert(c) {
                continue;
            }
            unlinked.remove(&c);
            if unlinked.is_empty() {
                return Ok(());
            }
            if let Some(p) = git::image_trees(&repo, c)?.parent {
                todo.push(p);
            }
        }
        for (id, mark) in unlinked {
            crate::verbose!("no image reaches {id} any more: removing its view mark");
            let _ = fs::remove_file(mark);
        }
        Ok(())
    }

    /// Remove the lock files (`locks/=checkout=C.lock`) of commits that have no checkout:
    /// one is left per commit ever checked out otherwise. Callers hold the storage lock
    /// alone (one pruner at a time). A file is removed only while this process holds its
    /// flock (tried, never waited for: a writer making that checkout keeps it), and a
    /// process that locks one checks afterwards that the path still names the inode it
    /// locked, else locks the new file ([`Store::lock_in_locks_dir`]): a process that
    /// opened the file before it was removed never holds a lock nobody else can see.
    fn prune_checkout_locks(&self) {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::MetadataExt;
        let dir = self.layout.image_locks();
        let Ok(rd) = fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("=checkout="))
                .and_then(|n| n.strip_suffix(".lock"))
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok())
            else {
                continue;
            };
            let (path, checkout) = (e.path(), self.layout.checkout(&id));
            if checkout.exists() {
                continue;
            }
            let Ok(f) = fs::File::open(&path) else {
                continue;
            };
            let Ok(held) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            let same = match (held.metadata(), fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if same && !checkout.exists() {
                crate::verbose!(
                    "removing the lock of a checkout that is gone: {}",
                    path.display()
                );
                let _ = fs::remove_file(&path);
            }
            drop(held);
        }
    }

    /// Point `name` at `commit` without checking it out: `img/NAME` then links to a
    /// checkout that may not exist yet, and runners use [`Store::view`]. Requires the lock.
    pub fn set_image_lazy(
        &self,
        _lock: &WriteLock,
        name: &Reference,
        commit: ObjectId,
        expect: Expect,
    ) -> Result<(), StoreError> {
        git::update_refs(
            &self.repo(),
            &[(Self::image_ref(name), Some(commit), expect)],
        )
        .map_err(|e| self.raced(name, e))?;
        let dir = self.layout.checkout(&commit);
        self.link_checkout(name, &dir)?;
        Ok(())
    }

    /// The commit a build-cache key maps to (one ref read).
    pub fn cache_get(&self, key_hex: &str) -> Result<Option<ObjectId>, StoreError> {
        Ok(git::get_ref(
            &self.repo(),
            &format!("{CACHE_REFS}{key_hex}"),
        )?)
    }

    /// Record a build-cache entry.
    pub fn cache_put(
        &self,
        _lock: &WriteLock,
        key_hex: &str,
        commit: ObjectId,
    ) -> Result<(), StoreError> {
        Ok(git::update_refs(
            &self.repo(),
            &[(format!("{CACHE_REFS}{key_hex}"), Some(commit), Expect::Any)],
        )?)
    }

    /// Keep `upper` (an overlay upper directory or a populated layer) as the layer of
    /// `commit`. An existing layer for the same commit wins (same content by definition).
    pub fn keep_layer(
        &self,
        lock: &WriteLock,
        upper: &Path,
        commit: ObjectId,
    ) -> Result<(), StoreError> {
        self.keep_layer_on(lock, upper, commit, &[])
    }

    /// [`Store::keep_layer`] for a delta layer (docs/store-format.md, "Delta layers"):
    /// `upper` shows what the step changed over the layers `bases` (top first) rather
    /// than over its parent. The bases file is in place before the layer is (a kill
    /// between the two leaves a bases file without a layer, which nothing reads; a full
    /// layer kept later under a stale bases file still shows the same tree, since a delta
    /// is only made when it covers every path of its bases).
    pub fn keep_layer_on(
        &self,
        _lock: &WriteLock,
        upper: &Path,
        commit: ObjectId,
        bases: &[ObjectId],
    ) -> Result<(), StoreError> {
        let dir = self.layout.layers();
        fs::create_dir_all(&dir).at("create directory", &dir)?;
        let dest = self.layout.layer(&commit);
        if dest.exists() {
            return Ok(());
        }
        if !bases.is_empty() {
            let file = self.layout.layer_bases(&commit);
            let tmp = self.scratch_path("bases");
            fs::write(&tmp, layer::bases_text(bases)).at("write", &tmp)?;
            fs::rename(&tmp, &file).at("rename into place", &file)?;
        }
        fs::rename(upper, &dest).at("keep layer", &dest)?;
        Ok(stamp::record(&dest)?)
    }

    /// Lower directories (top first) whose union shows `commit`'s files. Uses existing
    /// checkouts and layers; when they do not reach down to a checkout, checks out the
    /// first commit below the kept layers (or `commit`, when the layers would not fit in
    /// one overlay mount). When `commit` is an image's and that first commit is no
    /// image's (a step between two of the image's, below a kept layer whose own layer is
    /// gone, or the parent of a last step that changed no file), checks out `commit`
    /// instead: a checkout no `img/` link names is removed by the next writer that locks
    /// alone ([`Store::prune_checkouts`]), and each run after that would write it again,
    /// as large as the image, where the image's own checkout lasts.
    ///
    /// A checkout at the bottom of a view is marked (`views/C`) when it is another
    /// commit's than `commit` (layers lie on it) or no `img/` link names it: pruning keeps
    /// it while an image reaches its commit (then the first writer that locks alone, or
    /// gc, drops the mark), as kept layers are. Steps fetched from another store's cache
    /// have no layers, so the bottom of a RUN's view over them is such a checkout (the
    /// step below the first one that runs); unmarked, the next writer that locked the
    /// store alone removed it, and every build that ran a step checked it out again. A
    /// base image's checkout under an image's layers is marked too: deleting the base
    /// (its link) removed it, and the next run of the image checked it out again.
    /// `ch-run NAME` marks the views it finds ready ([`Store::mark_view_bottom`]).
    pub fn view(&self, lock: &WriteLock, commit: ObjectId) -> Result<Vec<PathBuf>, StoreError> {
        let mut linked = None;
        let mut is_linked = |c: ObjectId| -> Result<bool, StoreError> {
            if linked.is_none() {
                linked = Some(self.linked_checkouts()?);
            }
            Ok(linked
                .as_ref()
                .is_some_and(|l| l.contains(OsStr::new(&c.to_string()))))
        };
        match self.view_of(commit)? {
            layer::View::Ready(v) => {
                if let Some(bottom) = v.last().and_then(|d| self.checkout_commit(d)) {
                    if !self.layout.view_mark(&bottom).exists()
                        && (bottom != commit || !is_linked(bottom)?)
                    {
                        self.mark_view(bottom)?;
                    }
                }
                Ok(v)
            }
            layer::View::Base { mut lowers, base } => {
                if base != commit && is_linked(commit)? && !is_linked(base)? {
                    crate::verbose!(
                        "checking out {commit}: {base} below its {} kept layers is no image's",
                        lowers.len()
                    );
                    return Ok(vec![self.checkout(lock, commit)?]);
                }
                if !lowers.is_empty() {
                    crate::verbose!(
                        "checking out {base} below {} kept layers of {commit}",
                        lowers.len()
                    );
                }
                // Marked before it is made: no writer prunes while this one holds the
                // lock, and a mark without its checkout is harmless.
                if base != commit || !is_linked(base)? {
                    self.mark_view(base)?;
                }
                lowers.push(self.checkout(lock, base)?);
                Ok(lowers)
            }
        }
    }

    /// The commit of `dir` if it is a checkout (`checkouts/C`) of this store.
    fn checkout_commit(&self, dir: &Path) -> Option<ObjectId> {
        if dir.parent() != Some(self.layout.checkouts().as_path()) {
            return None;
        }
        ObjectId::from_hex(dir.file_name()?.as_encoded_bytes()).ok()
    }

    /// Mark `checkouts/<commit>` as the bottom of a view (`views/<commit>`, an empty
    /// file): [`Store::prune_checkouts`] keeps it.
    fn mark_view(&self, commit: ObjectId) -> Result<(), StoreError> {
        let dir = self.layout.views();
        fs::create_dir_all(&dir).at("create directory", &dir)?;
        let mark = self.layout.view_mark(&commit);
        crate::debug!(
            "marking checkouts/{commit} as the bottom of a view: {}",
            mark.display()
        );
        fs::File::create(&mark).at("create", &mark)?;
        Ok(())
    }

    /// Mark the checkout at the bottom of `dirs`, a view of `commit` found ready
    /// ([`Store::view_existing`]), as [`Store::view`] marks the views it makes: when
    /// layers lie on it and its mark is missing. For `ch-run NAME`, which holds the run
    /// lease ([`Store::run_lease`]): no writer prunes meanwhile. Costs one `stat` when
    /// the mark is there. Best effort: a read-only storage directory gets no mark, and
    /// says nothing.
    pub fn mark_view_bottom(&self, commit: ObjectId, dirs: &[PathBuf]) {
        let Some(bottom) = dirs.last().and_then(|d| self.checkout_commit(d)) else {
            return;
        };
        if bottom == commit || self.layout.view_mark(&bottom).exists() {
            return;
        }
        if let Err(e) = self.mark_view(bottom) {
            crate::debug!("no view mark for checkouts/{bottom}: {e}");
        }
    }

    /// Remove the view marks (`views/C`) of the commits not in `live`, so that pruning
    /// removes their checkouts. Requires the lock alone.
    pub fn unmark_views(
        &self,
        lock: &WriteLock,
        live: &std::collections::HashSet<ObjectId>,
    ) -> Result<(), StoreError> {
        if !lock.exclusive {
            return Ok(());
        }
        let dir = self.layout.views();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(IoError::new("read directory", &dir, e).into()),
        };
        for e in rd.flatten() {
            let keep = e
                .file_name()
                .to_str()
                .and_then(|n| ObjectId::from_hex(n.as_bytes()).ok())
                .is_some_and(|id| live.contains(&id));
            if !keep {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Like [`Store::view`] but never writes: `None` if a checkout would be needed.
    pub fn view_existing(&self, commit: ObjectId) -> Result<Option<Vec<PathBuf>>, StoreError> {
        Ok(match self.view_of(commit)? {
            layer::View::Ready(v) => Some(v),
            layer::View::Base { .. } => None,
        })
    }

    fn view_of(&self, commit: ObjectId) -> Result<layer::View, StoreError> {
        let repo = self.repo();
        layer::view(
            &self.layout.checkouts(),
            &self.layout.layers(),
            commit,
            |c| {
                let t = git::image_trees(&repo, c)?;
                Ok(match t.parent {
                    Some(p) => {
                        let pt = git::image_trees(&repo, p)?;
                        Some((p, pt.rootfs == t.rootfs && pt.meta == t.meta))
                    }
                    None => None,
                })
            },
        )
    }

    /// Import a directory or tarball as image `name`, its config made by `config` from
    /// the tree read (with what the caller wants back besides). Returns the commit, the
    /// import's warnings and `config`'s extra.
    pub fn import<N>(
        &self,
        lock: &WriteLock,
        path: &Path,
        name: &Reference,
        config: impl FnOnce(&Dir) -> Result<(ImageConfig, N), StoreError>,
    ) -> Result<(ObjectId, import::Warnings, N), StoreError> {
        let _image_lock = self.lock_image(lock, name)?;
        let t = std::time::Instant::now();
        let (root, warnings) = import::import_path(&self.repo, path, self.xattrs)?;
        crate::verbose!(
            "read and stored {} entries in {:.2}s",
            root.count(),
            t.elapsed().as_secs_f64()
        );
        let (cfg, notes) = config(&root)?;
        let commit = self.import_model(lock, root, cfg, name)?;
        Ok((commit, warnings, notes))
    }

    /// Commit an imported model with config `cfg` (plus an import history entry) as image
    /// `name`. Returns the commit.
    pub fn import_model(
        &self,
        lock: &WriteLock,
        mut root: Dir,
        mut cfg: ImageConfig,
        name: &Reference,
    ) -> Result<ObjectId, StoreError> {
        cfg.history.push(config::History {
            created_by: "ch-image import".into(),
            empty_layer: false,
        });
        // An image converted with a config (OCI, Docker, Podman) gets its environment as
        // /ch/environment, as a pull does; a plain tarball or directory has no config.
        if !cfg.env.is_empty() {
            git::put_environment_file(&self.repo(), &mut root, &cfg)?;
        }
        let t = std::time::Instant::now();
        let commit = git::write_image_commit(&self.repo(), &mut root, &cfg, None, "IMPORT")?;
        crate::verbose!(
            "committed {} in {:.2}s",
            &commit.to_string()[..12],
            t.elapsed().as_secs_f64()
        );
        // No checkout: it is made on first use (`ch-run NAME`, a build's first RUN,
        // `ch-image checkout`), as after a pull; export and `FROM` read the objects.
        let old = self.image(name)?;
        self.set_image_lazy(lock, name, commit, Expect::from_current(old))?;
        self.prune_checkouts(lock)?;
        Ok(commit)
    }

    /// Delete images; a deleted image can be brought back with [`Store::undelete`].
    pub fn delete(&self, lock: &WriteLock, name: &Reference) -> Result<(), StoreError> {
        let _image_lock = self.lock_image(lock, name)?;
        let commit = self.require_image(name)?;
        let comp = ref_component(&name.for_path());
        git::update_refs(
            &self.repo(),
            &[
                (Self::image_ref(name), None, Expect::Is(commit)),
                (format!("{DELETED_REFS}{comp}"), Some(commit), Expect::Any),
            ],
        )
        .map_err(|e| self.raced(name, e))?;
        let link = self.checkout_link(name);
        match fs::remove_file(&link) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(IoError::new("remove", &link, e).into())
            }
            _ => {}
        }
        self.prune_checkouts(lock)
    }

    /// Bring back a deleted image.
    pub fn undelete(&self, lock: &WriteLock, name: &Reference) -> Result<ObjectId, StoreError> {
        let _image_lock = self.lock_image(lock, name)?;
        if self.image(name)?.is_some() {
            return Err(StoreError::Exists(name.to_string()));
        }
        let del = format!("{DELETED_REFS}{}", ref_component(&name.for_path()));
        let commit = git::get_ref(&self.repo(), &del)?
            .ok_or_else(|| StoreError::NoDeleted(name.to_string()))?;
        // Both refs in one transaction (a kill leaves one or the other), before the
        // checkout: an image whose checkout does not fit (a full disk) is back all the
        // same, checked out on first use as after an import, so a delete on a full disk
        // can be taken back there.
        git::update_refs(
            &self.repo(),
            &[
                (Self::image_ref(name), Some(commit), Expect::Absent),
                (del, None, Expect::Is(commit)),
            ],
        )
        .map_err(|e| self.raced(name, e))?;
        let dir = match self.checkout(lock, commit) {
            Ok(dir) => dir,
            Err(e) => {
                crate::warn!(
                    "undeleted image {name} not checked out (done on its first use): {}",
                    maint::chain(&e)
                );
                self.layout.checkout(&commit)
            }
        };
        self.link_checkout(name, &dir)?;
        Ok(commit)
    }

    /// Read an image's tree and config.
    pub fn read(&self, commit: ObjectId) -> Result<(Dir, ImageConfig), StoreError> {
        Ok(git::read_image(&self.repo(), commit)?)
    }

    /// Delete the whole storage directory (after checking it is a Grove store). One that
    /// does not exist is an error, as Charliecloud's `reset`: nothing is created.
    pub fn reset(root: &Path) -> Result<(), StoreError> {
        match fs::symlink_metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotStorage(root.to_path_buf()))
            }
            _ => {}
        }
        let lock = match Store::open_existing(root) {
            Ok(store) => store.lock_exclusive()?,
            // A store of another Grove version (`grove 1`): the error's hint sends the user
            // here. Only its lock file is read (the same in every version): no cleanup. A
            // version file of anything else is no sign of a store to delete.
            Err(StoreError::Version(_, v)) if v.starts_with("grove ") => {
                let layout = Layout::new(root);
                WriteLock {
                    _flock: flock(&layout, open_lock_file(&layout)?, true)?,
                    exclusive: true,
                }
            }
            Err(e) => return Err(e),
        };
        let tmp = root.with_file_name(format!(
            ".{}.reset.{}",
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        fs::rename(root, &tmp).at("move storage directory aside", root)?;
        drop(lock);
        Ok(checkout::remove_tree(&tmp).at("remove", &tmp)?)
    }
}

/// Open the storage lock file of `layout` (it must exist).
fn open_lock_file(layout: &Layout) -> Result<fs::File, StoreError> {
    let path = layout.lock_file();
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .at("open", &path)
        .map_err(StoreError::from)
}

/// Lock `file`, the storage lock file of `layout`, shared or exclusively; says so when it
/// has to wait.
fn flock(
    layout: &Layout,
    file: fs::File,
    exclusive: bool,
) -> Result<nix::fcntl::Flock<fs::File>, StoreError> {
    lock_or_wait(file, &layout.lock_file(), exclusive, || {
        crate::info!(
            "waiting for lock on storage directory {} (held by another ch-image, or \
             by a container run by name)",
            layout.root().display()
        )
    })
}

/// Lock `file` (opened from `path`), shared or exclusively: at once if no other process
/// holds it, else after calling `on_wait` (to say whom it waits for), waiting as long as
/// it takes or until a handled signal comes ([`crate::interrupt::lock_waiting`]).
fn lock_or_wait(
    file: fs::File,
    path: &Path,
    exclusive: bool,
    on_wait: impl FnOnce(),
) -> Result<nix::fcntl::Flock<fs::File>, StoreError> {
    use nix::fcntl::{Flock, FlockArg};
    let nb = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    match Flock::lock(file, nb) {
        Ok(l) => Ok(l),
        Err((f, _)) => {
            on_wait();
            crate::interrupt::lock_waiting(f, exclusive).map_err(|source| {
                StoreError::Io(IoError {
                    action: "lock",
                    path: path.to_path_buf(),
                    source,
                })
            })
        }
    }
}

/// Whether the process that made scratch entry `name` (`TAG.PID.N`, under `tmp/`) is
/// still running.
pub(crate) fn scratch_writer_alive(name: &str) -> bool {
    name.split('.')
        .nth(1)
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_starting_with_a_dash_are_never_options() {
        assert_eq!(path_arg(Path::new("-x.sqfs")), Path::new("./-x.sqfs"));
        assert_eq!(path_arg(Path::new("/abs/-x")), Path::new("/abs/-x"));
        assert_eq!(path_arg(Path::new("a/-x")), Path::new("a/-x"));
    }

    #[test]
    fn ref_components_are_valid_and_reversible() {
        for name in [
            ".x+latest",
            "a..b+1",
            "foo+x.lock",
            "alpine+3.17",
            "localhost+5000%a%b+1.0",
        ] {
            let c = ref_component(name);
            assert!(
                !c.starts_with('.') && !c.contains("..") && !c.ends_with(".lock"),
                "{c}"
            );
            let full = format!("{IMAGE_REFS}{c}");
            let parsed: Result<gix::refs::FullName, _> = full.as_str().try_into();
            assert!(parsed.is_ok(), "{full}");
            assert_eq!(from_ref_component(&c), name);
        }
        assert_eq!(ref_component("alpine+3.17"), "alpine+3.17");
    }
}
