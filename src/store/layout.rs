//! Where the storage directory is, and every path under it.
//!
//! [`storage_dir`] is the one place that decides which directory is the storage directory
//! (`-s DIR`, else `$CH_IMAGE_STORAGE`, else `/var/tmp/$USER.grove`); [`Layout`] is the one
//! place that spells a name under it (`version`, `lock`, `repo.git/`, `img/`, `checkouts/`,
//! `layers/`, `stamps/`, `views/`, `locks/`, `tmp/`, `dlcache/`, `statcache/`, `cachemounts/`,
//! `pool/`). docs/store-format.md
//! lists the same paths; a change here is a change of the storage layout and of that
//! document.
//!
//! Pure: nothing here touches the file system; [`storage_dir`] takes the environment and
//! the current directory as arguments so that the rules are unit-tested.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Directories a new storage directory is created with (the others appear on first use).
pub const CREATED_DIRS: [&str; 3] = [IMG, CHECKOUTS, TMP];

const VERSION: &str = "version";
const LOCK: &str = "lock";
const LOCKS: &str = "locks";
/// Prefix of the cache-key locks in `locks/` (`=` is in no image's ref component).
pub const CACHE_KEY_LOCK_PREFIX: &str = "=key=";
const REPO: &str = "repo.git";
const IMG: &str = "img";
const CHECKOUTS: &str = "checkouts";
const LAYERS: &str = "layers";
const STAMPS: &str = "stamps";
const VIEWS: &str = "views";
const TMP: &str = "tmp";
const DLCACHE: &str = "dlcache";
const STATCACHE: &str = "statcache";
const CACHE_MOUNTS: &str = "cachemounts";
const POOL: &str = "pool";

/// The paths of one storage directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The storage directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `version`: the storage layout version ([`super::STORAGE_VERSION`]).
    pub fn version_file(&self) -> PathBuf {
        self.root.join(VERSION)
    }

    /// `lock`: the flock(2) of writers, maintenance and containers run by name.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK)
    }

    /// `locks/`: one lock file per image being written.
    pub fn image_locks(&self) -> PathBuf {
        self.root.join(LOCKS)
    }

    /// `locks/COMPONENT.lock`: the lock of the image whose ref component (see
    /// [`super::ref_component`]) is `component`.
    pub fn image_lock(&self, component: &str) -> PathBuf {
        self.image_locks().join(format!("{component}.lock"))
    }

    /// `locks/=checkout=COMMIT.lock`: the lock of the writer making the checkout of a
    /// commit (`=` is in no image's ref component, so no image lock has this name).
    pub fn checkout_lock(&self, commit: &gix::ObjectId) -> PathBuf {
        self.image_locks().join(format!("=checkout={commit}.lock"))
    }

    /// `locks/=key=KEY.lock`: held by the build executing the step of cache key `KEY`
    /// (hex) until its entry is written; another build missing the same key waits, then
    /// finds the entry. Removed by a writer that locks the storage alone.
    pub fn cache_key_lock(&self, key_hex: &str) -> PathBuf {
        self.image_locks()
            .join(format!("{CACHE_KEY_LOCK_PREFIX}{key_hex}.lock"))
    }

    /// `repo.git/`: the bare git repository.
    pub fn repo(&self) -> PathBuf {
        self.root.join(REPO)
    }

    /// `repo.git/config`.
    pub fn repo_config(&self) -> PathBuf {
        self.repo().join("config")
    }

    /// `repo.git/objects/`.
    pub fn objects(&self) -> PathBuf {
        self.repo().join("objects")
    }

    /// `repo.git/refs/`.
    pub fn refs(&self) -> PathBuf {
        self.repo().join("refs")
    }

    /// `repo.git/packed-refs.lock`: left by a writer killed while packing refs.
    pub fn packed_refs_lock(&self) -> PathBuf {
        self.repo().join("packed-refs.lock")
    }

    /// The lock files git's maintenance (gc, repack) takes in `repo.git/`: left by a git
    /// killed while holding them, each fails every later `git gc` ("File exists").
    pub fn git_maintenance_locks(&self) -> [PathBuf; 4] {
        let info = self.objects().join("info");
        [
            info.join("commit-graph.lock"),
            info.join("commit-graphs/commit-graph-chain.lock"),
            info.join("multi-pack-index.lock"),
            self.repo().join("gc.pid"),
        ]
    }

    /// `img/`: one symlink per image.
    pub fn images(&self) -> PathBuf {
        self.root.join(IMG)
    }

    /// `img/NAME`: the checkout link of the image whose filename form (`/` as `%`, `:` as
    /// `+`, [`crate::reference::Reference::for_path`]) is `for_path`; what `ch-run NAME`
    /// runs.
    pub fn image_link(&self, for_path: &str) -> PathBuf {
        self.images().join(for_path)
    }

    /// `checkouts/`.
    pub fn checkouts(&self) -> PathBuf {
        self.root.join(CHECKOUTS)
    }

    /// `checkouts/COMMIT`: the checkout of a commit.
    pub fn checkout(&self, commit: &gix::ObjectId) -> PathBuf {
        self.checkouts().join(commit.to_string())
    }

    /// `../checkouts/DIR`, the target of an `img/NAME` link to checkout directory `DIR`
    /// (relative, so the storage directory can move).
    pub fn image_link_target(checkout_name: &OsStr) -> PathBuf {
        Path::new("..").join(CHECKOUTS).join(checkout_name)
    }

    /// `layers/`.
    pub fn layers(&self) -> PathBuf {
        self.root.join(LAYERS)
    }

    /// `layers/COMMIT`: a build's kept overlay layer of a commit.
    pub fn layer(&self, commit: &gix::ObjectId) -> PathBuf {
        self.layers().join(commit.to_string())
    }

    /// `layers/COMMIT.base`: the base layers of a delta layer (docs/store-format.md).
    pub fn layer_bases(&self, commit: &gix::ObjectId) -> PathBuf {
        super::layer::bases_file(&self.layers(), *commit)
    }

    /// `stamps/`.
    pub fn stamps(&self) -> PathBuf {
        self.root.join(STAMPS)
    }

    /// `views/`: marks of the checkouts that are the bottom of a view.
    pub fn views(&self) -> PathBuf {
        self.root.join(VIEWS)
    }

    /// `views/COMMIT`: an empty file marking `checkouts/COMMIT` as the bottom of a view
    /// (kept while its commit is reachable, though no image's link names it).
    pub fn view_mark(&self, commit: &gix::ObjectId) -> PathBuf {
        self.views().join(commit.to_string())
    }

    /// `stamps/KIND-NAME`: the stamp of tree `KIND/NAME` (`checkouts/C` or `layers/C`).
    pub fn stamp(&self, kind: &str, name: &str) -> PathBuf {
        self.stamps().join(format!("{kind}-{name}"))
    }

    /// The stamp of a tree directly below the storage directory's `checkouts/` or
    /// `layers/` (the storage directory being its grandparent).
    pub fn stamp_of(dir: &Path) -> PathBuf {
        let name = |p: Option<&Path>| {
            p.and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let storage = dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"));
        Layout::new(storage).stamp(&name(dir.parent()), &name(Some(dir)))
    }

    /// `tmp/`: scratch space of writers.
    pub fn tmp(&self) -> PathBuf {
        self.root.join(TMP)
    }

    /// `tmp/TAG.PID.N`: a scratch entry of process `pid`.
    pub fn scratch(&self, tag: &str, pid: u32, n: usize) -> PathBuf {
        self.tmp().join(format!("{tag}.{pid}.{n}"))
    }

    /// `dlcache/`: downloaded registry layers.
    pub fn dlcache(&self) -> PathBuf {
        self.root.join(DLCACHE)
    }

    /// `dlcache/sha256-HEX`: a downloaded layer, named by its digest.
    pub fn dl_layer(&self, hex: &str) -> PathBuf {
        self.dlcache().join(format!("sha256-{hex}"))
    }

    /// `dlcache/sha256-HEX.partial.PID`: the download of a layer in progress by process
    /// `pid`; [`Layout::dl_partial_prefix`] is its name without the pid.
    pub fn dl_partial(&self, hex: &str, pid: u32) -> PathBuf {
        self.dlcache()
            .join(format!("{}{pid}", Self::dl_partial_prefix(hex)))
    }

    /// `sha256-HEX.partial.`: the name of a partial download of layer HEX, less the pid.
    pub fn dl_partial_prefix(hex: &str) -> String {
        format!("sha256-{hex}.partial.")
    }

    /// `statcache/`.
    pub fn statcache(&self) -> PathBuf {
        self.root.join(STATCACHE)
    }

    /// `statcache/HASH.txt`: the content-hash cache of build context `context` (an
    /// absolute, canonical path), named by the BLAKE3 hash of the path.
    pub fn stat_cache(&self, context: &Path) -> PathBuf {
        let h = blake3::hash(context.as_os_str().as_encoded_bytes());
        self.statcache().join(format!("{}.txt", h.to_hex()))
    }

    /// `pool/`: files shared by checkouts (hard links; [`super::pool`]).
    pub fn pool(&self) -> PathBuf {
        self.root.join(POOL)
    }

    /// `cachemounts/`: the directories of `RUN --mount=type=cache`.
    pub fn cache_mounts(&self) -> PathBuf {
        self.root.join(CACHE_MOUNTS)
    }

    /// `cachemounts/HASH/`: the cache mount whose id hashes to `hash` ([`Layout::cache_mount_name`]).
    pub fn cache_mount(&self, hash: &str) -> PathBuf {
        self.cache_mounts().join(hash)
    }

    /// `cachemounts/HASH.lock`: the flock(2) of a cache mount's users; its modification
    /// time is the mount's last use, its content the mount's id.
    pub fn cache_mount_lock(&self, hash: &str) -> PathBuf {
        self.cache_mounts().join(format!("{hash}.lock"))
    }

    /// The name of the cache mount with id `id`: the first 32 hex digits of the BLAKE3
    /// hash of the id (ids are free text, paths often).
    pub fn cache_mount_name(id: &str) -> String {
        blake3::hash(id.as_bytes()).to_hex()[..32].to_string()
    }

    /// Every name directly under the storage directory that Grove writes, for checks and
    /// documentation.
    pub fn top_level_names() -> [&'static str; 14] {
        [
            VERSION,
            LOCK,
            LOCKS,
            REPO,
            IMG,
            CHECKOUTS,
            LAYERS,
            STAMPS,
            VIEWS,
            TMP,
            DLCACHE,
            STATCACHE,
            CACHE_MOUNTS,
            POOL,
        ]
    }
}

/// Why the storage directory can't be found.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StorageDirError {
    #[error("$CH_IMAGE_STORAGE: not absolute path: {}", .0.display())]
    RelativeVariable(PathBuf),
    #[error("can't find storage directory: $USER not set")]
    NoUser,
}

/// Whether a relative `$CH_IMAGE_STORAGE` is refused (`ch-image`, `ch-convert`: "must be
/// absolute path", as Charliecloud's ch-image) or taken relative to the current directory
/// (`ch-run`, as Charliecloud's, which uses the variable as given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelativeVariable {
    Refuse,
    Allow,
}

/// The storage directory: `option` (`-s DIR`), else `variable` (`$CH_IMAGE_STORAGE`, empty
/// counts as unset), else `/var/tmp/$USER.grove` for `user` (`None` or empty: an error). A
/// relative path is made absolute against `cwd`. Written as Charliecloud's (Python's
/// `pathlib`) writes it: no trailing `/`, no `//` or `/./` (`..` stays: it may cross a
/// symlink).
pub fn storage_dir(
    option: Option<&Path>,
    variable: Option<&OsStr>,
    user: Option<&str>,
    cwd: &Path,
    relative: RelativeVariable,
) -> Result<PathBuf, StorageDirError> {
    let p = match (option, variable.filter(|v| !v.is_empty())) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(v)) => {
            let p = PathBuf::from(v);
            if !p.is_absolute() && relative == RelativeVariable::Refuse {
                return Err(StorageDirError::RelativeVariable(p));
            }
            p
        }
        (None, None) => default_storage(user)?,
    };
    let p = if p.is_absolute() { p } else { cwd.join(p) };
    Ok(p.components().collect())
}

/// The default storage directory of `user`: `/var/tmp/USER.grove`.
pub fn default_storage(user: Option<&str>) -> Result<PathBuf, StorageDirError> {
    match user.filter(|u| !u.is_empty()) {
        Some(u) => Ok(PathBuf::from(format!("/var/tmp/{u}.grove"))),
        None => Err(StorageDirError::NoUser),
    }
}

/// [`storage_dir`] with the process's `$CH_IMAGE_STORAGE`, `$USER` and current directory.
pub fn storage_dir_from_env(
    option: Option<&Path>,
    relative: RelativeVariable,
) -> Result<PathBuf, StorageDirError> {
    let user = std::env::var("USER").ok();
    storage_dir_for_user(option, user.as_deref(), relative)
}

/// [`storage_dir`] with the process's `$CH_IMAGE_STORAGE` and current directory, for a user
/// found by the caller (ch-run falls back to the passwd entry when `$USER` is unset).
pub fn storage_dir_for_user(
    option: Option<&Path>,
    user: Option<&str>,
    relative: RelativeVariable,
) -> Result<PathBuf, StorageDirError> {
    let variable = std::env::var_os("CH_IMAGE_STORAGE");
    // Only needed for a relative path; `/` if the current directory is gone.
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    storage_dir(option, variable.as_deref(), user, &cwd, relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        option: Option<&str>,
        variable: Option<&str>,
        user: Option<&str>,
        relative: RelativeVariable,
    ) -> Result<PathBuf, StorageDirError> {
        storage_dir(
            option.map(Path::new),
            variable.map(OsStr::new),
            user,
            Path::new("/work"),
            relative,
        )
    }

    #[test]
    fn storage_is_option_then_variable_then_var_tmp_user() {
        let r = RelativeVariable::Refuse;
        assert_eq!(
            resolve(Some("/a"), Some("/b"), Some("u"), r),
            Ok(PathBuf::from("/a"))
        );
        assert_eq!(
            resolve(None, Some("/b"), Some("u"), r),
            Ok(PathBuf::from("/b"))
        );
        assert_eq!(
            resolve(None, None, Some("alice"), r),
            Ok(PathBuf::from("/var/tmp/alice.grove"))
        );
    }

    // As Charliecloud (pathlib): `CH_IMAGE_STORAGE=/d/x/ ch-image storage-path` gave
    // `/d/x/` where Charliecloud gives `/d/x`.
    #[test]
    fn storage_path_is_written_without_trailing_double_or_dot_slashes() {
        // Compared as strings: `Path`'s own equality ignores these differences.
        let r = RelativeVariable::Refuse;
        let text = |p: Result<PathBuf, StorageDirError>| p.map(PathBuf::into_os_string);
        for (given, want) in [
            ("/d/x/", "/d/x"),
            ("//d//x", "/d/x"),
            ("/d/./x/.", "/d/x"),
            ("/d/../x", "/d/../x"),
        ] {
            for (option, variable) in [(Some(given), None), (None, Some(given))] {
                assert_eq!(
                    text(resolve(option, variable, Some("u"), r)),
                    Ok(want.into()),
                    "{given}"
                );
            }
        }
        assert_eq!(
            text(resolve(Some("./st/"), None, None, r)),
            Ok("/work/st".into())
        );
    }

    #[test]
    fn empty_variable_counts_as_unset() {
        assert_eq!(
            resolve(None, Some(""), Some("u"), RelativeVariable::Refuse),
            Ok(PathBuf::from("/var/tmp/u.grove"))
        );
    }

    #[test]
    fn relative_option_is_made_absolute_against_the_current_directory() {
        assert_eq!(
            resolve(Some("st"), Some("/b"), None, RelativeVariable::Refuse),
            Ok(PathBuf::from("/work/st"))
        );
    }

    #[test]
    fn relative_variable_is_refused_by_ch_image_and_taken_by_ch_run() {
        assert_eq!(
            resolve(None, Some("rel/st"), Some("u"), RelativeVariable::Refuse),
            Err(StorageDirError::RelativeVariable(PathBuf::from("rel/st")))
        );
        assert_eq!(
            resolve(None, Some("rel/st"), Some("u"), RelativeVariable::Allow),
            Ok(PathBuf::from("/work/rel/st"))
        );
        // The option is never refused: it is a path the user typed.
        assert!(resolve(Some("rel"), None, None, RelativeVariable::Refuse).is_ok());
    }

    #[test]
    fn no_user_and_nothing_else_is_an_error_naming_user() {
        for user in [None, Some("")] {
            let e = resolve(None, None, user, RelativeVariable::Refuse).unwrap_err();
            assert_eq!(e, StorageDirError::NoUser);
            assert!(e.to_string().contains("$USER"), "{e}");
        }
    }

    #[test]
    fn layout_spells_every_path_under_the_root() {
        let l = Layout::new("/s");
        let c = gix::ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").expect("hex");
        let [graph, chain, midx, gc_pid] = l.git_maintenance_locks();
        let cases: [(PathBuf, &str); 30] = [
            (graph, "/s/repo.git/objects/info/commit-graph.lock"),
            (
                chain,
                "/s/repo.git/objects/info/commit-graphs/commit-graph-chain.lock",
            ),
            (midx, "/s/repo.git/objects/info/multi-pack-index.lock"),
            (gc_pid, "/s/repo.git/gc.pid"),
            (l.cache_mounts(), "/s/cachemounts"),
            (l.cache_mount("ab"), "/s/cachemounts/ab"),
            (l.cache_mount_lock("ab"), "/s/cachemounts/ab.lock"),
            (l.version_file(), "/s/version"),
            (l.lock_file(), "/s/lock"),
            (l.image_locks(), "/s/locks"),
            (l.image_lock("alpine+3.17"), "/s/locks/alpine+3.17.lock"),
            (
                l.checkout_lock(&c),
                "/s/locks/=checkout=0123456789abcdef0123456789abcdef01234567.lock",
            ),
            (l.repo(), "/s/repo.git"),
            (l.repo_config(), "/s/repo.git/config"),
            (l.objects(), "/s/repo.git/objects"),
            (l.refs(), "/s/repo.git/refs"),
            (l.packed_refs_lock(), "/s/repo.git/packed-refs.lock"),
            (l.image_link("a%b+1"), "/s/img/a%b+1"),
            (
                l.checkout(&c),
                "/s/checkouts/0123456789abcdef0123456789abcdef01234567",
            ),
            (
                l.layer(&c),
                "/s/layers/0123456789abcdef0123456789abcdef01234567",
            ),
            (l.stamp("layers", "abc"), "/s/stamps/layers-abc"),
            (
                l.view_mark(&c),
                "/s/views/0123456789abcdef0123456789abcdef01234567",
            ),
            (l.scratch("checkout", 42, 7), "/s/tmp/checkout.42.7"),
            (l.dlcache(), "/s/dlcache"),
            (l.dl_layer("ab12"), "/s/dlcache/sha256-ab12"),
            (l.dl_partial("ab12", 9), "/s/dlcache/sha256-ab12.partial.9"),
            (l.statcache(), "/s/statcache"),
            (l.images(), "/s/img"),
            (l.checkouts(), "/s/checkouts"),
            (l.stamps(), "/s/stamps"),
        ];
        for (got, want) in cases {
            assert_eq!(got, Path::new(want));
        }
        assert_eq!(
            Layout::image_link_target(OsStr::new("abc")),
            Path::new("../checkouts/abc")
        );
        // Every top-level name is one of the documented ones, and they are distinct.
        let mut names = Layout::top_level_names().to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Layout::top_level_names().len());
    }

    #[test]
    fn store_format_document_lists_every_top_level_path() {
        let doc = include_str!("../../docs/store-format.md");
        let section = doc
            .split("### Paths under the storage directory")
            .nth(1)
            .and_then(|s| s.split("```").nth(1))
            .expect("docs/store-format.md has the paths section with a listing");
        let listed: Vec<&str> = section
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_whitespace().next())
            .map(|p| p.split('/').next().unwrap_or(p))
            .collect();
        let mut want = Layout::top_level_names().to_vec();
        want.sort();
        let mut got = listed.clone();
        got.sort();
        got.dedup();
        assert_eq!(got, want, "listing: {listed:?}");
    }

    #[test]
    fn stamp_of_a_tree_is_in_its_storage_directorys_stamps() {
        assert_eq!(
            Layout::stamp_of(Path::new("/s/checkouts/abc")),
            Path::new("/s/stamps/checkouts-abc")
        );
        assert_eq!(
            Layout::stamp_of(Path::new("/s/layers/abc")),
            Path::new("/s/stamps/layers-abc")
        );
    }

    #[test]
    fn stat_cache_is_named_by_the_context_path() {
        let l = Layout::new("/s");
        let a = l.stat_cache(Path::new("/ctx/a"));
        let b = l.stat_cache(Path::new("/ctx/b"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/s/statcache")));
        assert_eq!(
            a.file_name().and_then(|n| n.to_str()).map(str::len),
            Some(64 + 4)
        );
        // The same name as before Layout existed: existing stat caches stay valid.
        assert_eq!(
            a,
            Path::new("/s/statcache").join(format!("{}.txt", blake3::hash(b"/ctx/a").to_hex()))
        );
    }
}
