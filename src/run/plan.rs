//! Pure planning: user-namespace ID maps and the list of mount operations that assemble a
//! container. Nothing here touches the system; [`super::setup`] performs the plan.
//!
//! Invariants of a plan from [`mount_plan`]:
//! - the first op makes every mount private, so nothing propagates back to the host;
//! - the new root becomes a mount point (bind onto itself or an overlay) before anything is
//!   mounted under it;
//! - container-side destinations are container paths (absolute, as seen inside); the
//!   executor resolves them inside the new root and never lets them escape it;
//! - the last op is [`MountOp::PivotRoot`].

use std::path::{Path, PathBuf};

/// Contents for `/proc/self/{uid_map,setgroups,gid_map}`, written in that order
/// (`setgroups` must be `deny` before an unprivileged process may write `gid_map`; see
/// user_namespaces(7)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    pub uid_map: String,
    pub setgroups: &'static str,
    pub gid_map: String,
}

/// Map exactly one ID each: the invoking effective uid/gid to the requested container IDs.
pub fn id_maps(host_euid: u32, host_egid: u32, uid: u32, gid: u32) -> IdMaps {
    IdMaps {
        uid_map: format!("{uid} {host_euid} 1\n"),
        setgroups: "deny",
        gid_map: format!("{gid} {host_egid} 1\n"),
    }
}

/// How the image root is made writable (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Read-only bind of the image (default).
    ReadOnly,
    /// The image itself, read-write (`-w`).
    ReadWrite,
    /// A tmpfs-backed overlayfs layer that vanishes at exit (`-W`); optional tmpfs size.
    Fake { size: Option<String> },
    /// The image is the union of `lowers` (top first, at least two unless `upper` is
    /// given), written to `upper` (with its overlay work directory) or read-only without
    /// one. The builder runs RUN this way, so that the upper directory holds exactly what
    /// the command changed; `ch-run NAME` uses it to run an image from its layers.
    Layers {
        lowers: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
    },
    /// `-W` for an image stored as layers: the union of `lowers` (top first) under an
    /// upper directory in a tmpfs that vanishes at exit (optional tmpfs size), so that
    /// `ch-run -W NAME` needs no checkout of a built image.
    LayersFake {
        lowers: Vec<PathBuf>,
        size: Option<String>,
    },
}

impl WriteMode {
    pub fn writable(&self) -> bool {
        match self {
            WriteMode::ReadOnly => false,
            WriteMode::Layers { upper, .. } => upper.is_some(),
            _ => true,
        }
    }
}

/// What to do when a bind's container-side destination does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Error "can't bind: destination not found".
    Error,
    /// Error with this message.
    Refuse(&'static str),
    /// Skip this bind silently.
    Skip,
    /// Create an empty directory or file (matching the source), possibly with parents.
    Create,
    /// Like `Create`, but skip the bind if creating fails (optional files).
    TryCreate,
}

/// One step of container assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// `mount(NULL, "/", NULL, MS_REC|MS_PRIVATE)`.
    MakeRootPrivate,
    /// Recursive bind of a host directory onto itself, making it a mount point.
    BindSelf { path: PathBuf },
    /// `MS_REMOUNT|MS_BIND|MS_RDONLY` keeping the mount's existing flags (nosuid, nodev,
    /// noexec, atime flags are locked in a user namespace and must be repeated).
    RemountReadOnly { path: PathBuf },
    /// A tmpfs at a host path (staging) — used before the new root exists.
    TmpfsHost { path: PathBuf, options: String },
    /// `mkdir` at a host path (inside staging tmpfs).
    MkdirHost { path: PathBuf },
    /// An empty file at a host path (inside staging tmpfs).
    FileHost { path: PathBuf },
    /// Give host directory `to` the permissions and times of host directory `from`.
    CopyAttrsHost { from: PathBuf, to: PathBuf },
    /// Overlayfs with `userxattr` (unprivileged overlayfs, Linux 5.11+).
    Overlay {
        lower: PathBuf,
        upper: PathBuf,
        work: PathBuf,
        dst: PathBuf,
    },
    /// Overlayfs of several lower directories (top first), with an optional upper and
    /// work directory (read-only without).
    OverlayLayers {
        lowers: Vec<PathBuf>,
        upper: Option<(PathBuf, PathBuf)>,
        dst: PathBuf,
    },
    /// A tmpfs at a container path.
    Tmpfs {
        dst: PathBuf,
        options: String,
        if_missing: IfMissing,
    },
    /// Bind host `src` at container path `dst`.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        if_missing: IfMissing,
        src_optional: bool,
        /// Remount the bind read-only.
        read_only: bool,
    },
    /// Make `new_root` the root (`pivot_root(".", ".")`, detach the old root).
    PivotRoot { new_root: PathBuf },
}

/// One line for `-vv`.
impl std::fmt::Display for MountOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountOp::MakeRootPrivate => write!(f, "make / private (recursive)"),
            MountOp::BindSelf { path } => write!(f, "bind {} onto itself", path.display()),
            MountOp::RemountReadOnly { path } => write!(f, "remount {} read-only", path.display()),
            MountOp::TmpfsHost { path, options } => {
                write!(f, "tmpfs at host {} ({options})", path.display())
            }
            MountOp::MkdirHost { path } => write!(f, "mkdir {}", path.display()),
            MountOp::FileHost { path } => write!(f, "create empty file {}", path.display()),
            MountOp::CopyAttrsHost { from, to } => write!(
                f,
                "copy mode and times of {} to {}",
                from.display(),
                to.display()
            ),
            MountOp::Overlay {
                lower,
                upper,
                work,
                dst,
            } => write!(
                f,
                "overlay at {}: lower {}, upper {}, work {}",
                dst.display(),
                lower.display(),
                upper.display(),
                work.display()
            ),
            MountOp::OverlayLayers { lowers, upper, dst } => {
                let l: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
                write!(f, "overlay at {}: lower {}", dst.display(), l.join(":"))?;
                match upper {
                    Some((u, w)) => write!(f, ", upper {}, work {}", u.display(), w.display()),
                    None => write!(f, " (read-only)"),
                }
            }
            MountOp::Tmpfs { dst, options, .. } => {
                write!(f, "tmpfs at {} ({options})", dst.display())
            }
            MountOp::Bind {
                src,
                dst,
                if_missing,
                src_optional,
                read_only,
            } => {
                write!(f, "bind {} at {}", src.display(), dst.display())?;
                if *read_only {
                    write!(f, " read-only")?;
                }
                match (*src_optional, if_missing) {
                    (true, IfMissing::Skip) => write!(f, " if on the host and in the image")?,
                    (true, _) => write!(f, " if on the host")?,
                    (false, IfMissing::Skip) => write!(f, " if in the image")?,
                    _ => {}
                }
                match if_missing {
                    IfMissing::Create => write!(f, ", created if missing"),
                    IfMissing::TryCreate => write!(f, ", created if missing and possible"),
                    IfMissing::Error | IfMissing::Refuse(_) | IfMissing::Skip => Ok(()),
                }
            }
            MountOp::PivotRoot { new_root } => write!(f, "pivot_root to {}", new_root.display()),
        }
    }
}

/// A user bind `SRC[:DST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    pub dst: PathBuf,
}

impl Bind {
    /// Parse `SRC[:DST]` as `-b` takes it; DST defaults to SRC. Paths are bytes, as
    /// Charliecloud's: they need not be UTF-8.
    pub fn parse(s: impl AsRef<std::ffi::OsStr>) -> Result<Bind, String> {
        use std::os::unix::ffi::OsStrExt;
        let s = s.as_ref().as_bytes();
        let (src, dst) = match s.iter().position(|&b| b == b':') {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => (s, s),
        };
        if src.is_empty() {
            return Err("--bind: no source provided".into());
        }
        if dst.is_empty() {
            return Err("--bind: no destination provided".into());
        }
        if !dst.starts_with(b"/") {
            return Err("--bind: destination must be absolute".into());
        }
        let (src, dst) = (
            Path::new(std::ffi::OsStr::from_bytes(src)),
            Path::new(std::ffi::OsStr::from_bytes(dst)),
        );
        if dst
            .components()
            .all(|c| matches!(c, std::path::Component::RootDir))
        {
            return Err("--bind: destination can't be /".into());
        }
        Ok(Bind {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
        })
    }
}

/// A mount of a builder's RUN (`RUN --mount`, see docs/dockerfile.md), done after the
/// system and user binds. `ch-image build` passes each to `ch-run` as the internal option
/// `--build-mount=` in the form [`BuildMount::to_arg`] writes and [`BuildMount::parse`]
/// reads: `bind:DST:SRC`, `bind-ro:DST:SRC` or `tmpfs:DST:OPTIONS` (DST holds no `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildMount {
    /// Bind host `src` at `dst`, read-only unless `writable`.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        writable: bool,
    },
    /// A tmpfs at `dst` with mount options `options`.
    Tmpfs { dst: PathBuf, options: String },
}

impl BuildMount {
    /// The container path mounted on.
    pub fn dst(&self) -> &Path {
        match self {
            BuildMount::Bind { dst, .. } | BuildMount::Tmpfs { dst, .. } => dst,
        }
    }

    /// The `--build-mount=` value.
    pub fn to_arg(&self) -> std::ffi::OsString {
        let mut s = std::ffi::OsString::new();
        match self {
            BuildMount::Bind { src, dst, writable } => {
                s.push(if *writable { "bind:" } else { "bind-ro:" });
                s.push(dst);
                s.push(":");
                s.push(src);
            }
            BuildMount::Tmpfs { dst, options } => {
                s.push("tmpfs:");
                s.push(dst);
                s.push(":");
                s.push(options);
            }
        }
        s
    }

    /// Parse a `--build-mount=` value.
    pub fn parse(s: &std::ffi::OsStr) -> Result<BuildMount, String> {
        use std::os::unix::ffi::OsStrExt;
        let b = s.as_bytes();
        let bad = || format!("--build-mount: invalid: {}", s.to_string_lossy());
        let mut parts = b.splitn(3, |c| *c == b':');
        let (kind, dst, rest) = match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(d), Some(r)) => (k, d, r),
            _ => return Err(bad()),
        };
        if !dst.starts_with(b"/") || dst == b"/" {
            return Err(format!(
                "--build-mount: destination must be absolute and not /: {}",
                s.to_string_lossy()
            ));
        }
        let dst = PathBuf::from(std::ffi::OsStr::from_bytes(dst));
        let path = |r: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(r));
        match kind {
            b"bind" | b"bind-ro" if !rest.is_empty() => Ok(BuildMount::Bind {
                src: path(rest),
                dst,
                writable: kind == b"bind",
            }),
            b"tmpfs" => Ok(BuildMount::Tmpfs {
                dst,
                options: String::from_utf8_lossy(rest).into_owned(),
            }),
            _ => Err(bad()),
        }
    }
}

/// Everything the mount plan depends on.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Host directory holding the image tree (directory image or SquashFS mount point).
    pub image: PathBuf,
    pub write: WriteMode,
    /// Host directory over which `-W` or a layered image mounts its staging tmpfs (see
    /// [`staging`]); empty when the write mode stages nothing.
    pub staging: PathBuf,
    /// Host directory bound at `/tmp` (`$TMPDIR` or `/tmp`) unless `private_tmp`.
    pub host_tmp: PathBuf,
    pub private_tmp: bool,
    /// `--home`: host home directory and user name.
    pub home: Option<(PathBuf, String)>,
    /// Generated passwd and group files, unless `--no-passwd`.
    pub passwd: Option<(PathBuf, PathBuf)>,
    pub binds: Vec<Bind>,
    /// The builder's RUN mounts, after the user binds.
    pub build_mounts: Vec<BuildMount>,
    /// `--ch-ssh`: host path of the ch-ssh program, bound read-only at
    /// [`CH_SSH_GUEST`].
    pub ch_ssh: Option<PathBuf>,
    /// Mount points the image's layers lack ([`WriteMode::Layers`] only): provided by an
    /// extra top lower directory in the staging tmpfs, so that nothing is created in the
    /// image or in the upper directory (a builder's RUN records only what the command
    /// changed).
    pub mount_points: MountPoints,
}

/// Mount points an image made of layers lacks (see [`missing_mount_points`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountPoints {
    /// Top-level directories (`dev`, `proc`, ...).
    pub dirs: Vec<String>,
    /// Empty files in `etc` (`hosts`, `resolv.conf`).
    pub etc_files: Vec<String>,
    /// The image's `/etc` (host path in the topmost layer holding it), whose mode and times
    /// the extra lower's `etc` takes, since the topmost layer gives a merged directory's
    /// attributes; `None` if the image has no `/etc`.
    pub etc_like: Option<PathBuf>,
    /// Mount points of [`BuildMount`]s and the directories above them, parents first
    /// (see [`build_mount_points`]).
    pub paths: Vec<MountPointPath>,
}

/// One entry of the extra lower directory for a [`BuildMount`]'s destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPointPath {
    /// Relative, `/`-separated.
    pub rel: String,
    /// A directory, else an empty file.
    pub dir: bool,
    /// The image's directory at `rel` (host path in the topmost layer holding it), whose
    /// mode and times the entry takes, so that the merged directory keeps them; `None`
    /// for a path the image lacks.
    pub like: Option<PathBuf>,
}

impl MountPoints {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.etc_files.is_empty() && self.paths.is_empty()
    }
}

/// The entries an extra top lower directory needs so that every destination in `dsts`
/// (container paths, each with whether the mount is a directory) exists in the union of
/// `lowers` without being created in the image or in the upper directory: the missing
/// destination and the missing directories above it, plus the existing directories above
/// them (which take their image attributes). A destination whose path meets a symlink or
/// a non-directory in the image is left out (the executor creates it as for any bind).
pub fn build_mount_points(lowers: &[PathBuf], dsts: &[(PathBuf, bool)]) -> Vec<MountPointPath> {
    let mut out: std::collections::BTreeMap<String, MountPointPath> = Default::default();
    'dsts: for (dst, is_dir) in dsts {
        let comps: Vec<String> = dst
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let mut wanted: Vec<MountPointPath> = Vec::new();
        for i in 0..comps.len() {
            let rel = comps[..=i].join("/");
            let last = i + 1 == comps.len();
            match union_lookup(lowers, &rel) {
                Some(p) => {
                    let dir = std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
                    if last {
                        // The destination exists: nothing to provide.
                        continue 'dsts;
                    }
                    if !dir {
                        continue 'dsts;
                    }
                    wanted.push(MountPointPath {
                        rel,
                        dir: true,
                        like: Some(p),
                    });
                }
                None => {
                    for (j, _) in comps.iter().enumerate().skip(i) {
                        let last = j + 1 == comps.len();
                        wanted.push(MountPointPath {
                            rel: comps[..=j].join("/"),
                            dir: !last || *is_dir,
                            like: None,
                        });
                    }
                    break;
                }
            }
        }
        for w in wanted {
            out.entry(w.rel.clone()).or_insert(w);
        }
    }
    out.into_values().collect()
}

/// Top-level directories a container mounts on: `/dev`, `/proc`, `/sys` (bound), `/tmp`
/// (bound, or a tmpfs) and, with `--home`, `/home` (a tmpfs).
pub fn mount_dirs(home: bool) -> Vec<&'static str> {
    let mut v = vec!["dev", "proc", "sys", "tmp"];
    if home {
        v.push("home");
    }
    v
}

/// Files in `/etc` the host's copies are bound onto; a writable image gets them.
pub const ETC_MOUNT_FILES: &[&str] = &["hosts", "resolv.conf"];

/// The host path of `rel` (relative, `/`-separated) in the union of `lowers` (top first),
/// as overlayfs shows it: the topmost layer holding it, unless a layer above deletes it
/// (a character device 0/0 or a file with `user.overlay.whiteout`) or hides it (an opaque
/// directory, `user.overlay.opaque=y`, or a non-directory on the way).
pub fn union_lookup(lowers: &[PathBuf], rel: &str) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    'layers: for l in lowers {
        let mut p = l.clone();
        for (i, c) in parts.iter().enumerate() {
            p.push(c);
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue 'layers;
            };
            let ft = md.file_type();
            let whiteout = (ft.is_char_device() && md.rdev() == 0)
                || (ft.is_file()
                    && md.len() == 0
                    && xattr::get(&p, "user.overlay.whiteout").is_ok_and(|v| v.is_some()));
            if whiteout {
                return None;
            }
            if i + 1 == parts.len() {
                return Some(p);
            }
            if !ft.is_dir() {
                return None;
            }
            let opaque = xattr::get(&p, "user.overlay.opaque")
                .ok()
                .flatten()
                .is_some_and(|v| v == b"y");
            if opaque {
                // This layer's directory hides the ones below: look no further down.
                let mut q = p.clone();
                for c in &parts[i + 1..] {
                    q.push(c);
                }
                return std::fs::symlink_metadata(&q).is_ok().then_some(q);
            }
        }
    }
    None
}

/// The mount points the union of `lowers` lacks: of `dirs`, those missing at the top
/// level; with `files`, [`ETC_MOUNT_FILES`] missing from an `/etc` that is a directory or
/// missing (an `/etc` of another type, a symlink, is left alone).
pub fn missing_mount_points(lowers: &[PathBuf], dirs: &[&str], files: bool) -> MountPoints {
    let mut mp = MountPoints {
        dirs: dirs
            .iter()
            .filter(|d| union_lookup(lowers, d).is_none())
            .map(|d| d.to_string())
            .collect(),
        ..MountPoints::default()
    };
    if files {
        let etc = union_lookup(lowers, "etc");
        let etc_is_dir = etc
            .as_ref()
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        if etc.is_none() || etc_is_dir {
            mp.etc_files = ETC_MOUNT_FILES
                .iter()
                .filter(|f| union_lookup(lowers, &format!("etc/{f}")).is_none())
                .map(|f| f.to_string())
                .collect();
            if !mp.etc_files.is_empty() {
                mp.etc_like = etc;
            }
        }
    }
    mp
}

/// Where `--ch-ssh` binds ch-ssh in the container.
pub const CH_SSH_GUEST: &str = "/usr/bin/ch-ssh";

/// Host files bound at the same path when present on the host and in the image.
pub const OPTIONAL_HOST_FILES: &[&str] = &["/etc/hosts", "/etc/resolv.conf", "/etc/machine-id"];

/// Host directories required both on the host and in the image.
pub const REQUIRED_HOST_DIRS: &[&str] = &["/dev", "/proc", "/sys"];

/// Host directories a plan may mount its staging tmpfs over, in order of preference; not
/// `/tmp`, which is bound into the container.
pub const STAGING_CANDIDATES: &[&str] = &["/mnt", "/srv", "/media", "/opt", "/boot"];

/// Pick a host directory for `-W`'s staging tmpfs that does not contain the image (the
/// tmpfs would hide the overlay's lower layer).
pub fn staging_dir(image: &Path, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    staging_avoiding(&[image], exists)
}

/// The first existing [`STAGING_CANDIDATES`] entry that holds none of `used`.
fn staging_avoiding(used: &[&Path], exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    STAGING_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|d| exists(d) && !used.iter().any(|u| u.starts_with(d)))
}

/// The staging directory a write mode needs (see [`PlanInput::staging`]): for `-W`, one
/// that does not hold the image; for layers, one that holds none of the lower, upper and
/// work directories (the tmpfs would hide them); `None` for modes that stage nothing. The
/// error is the message when no candidate fits.
pub fn staging(
    write: &WriteMode,
    image: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Result<Option<PathBuf>, &'static str> {
    match write {
        WriteMode::Fake { .. } => staging_dir(image, exists)
            .map(Some)
            .ok_or("--write-fake: no host directory to stage the overlay"),
        WriteMode::LayersFake { lowers, .. } => {
            let used: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
            staging_avoiding(&used, exists)
                .map(Some)
                .ok_or("--write-fake: no host directory to stage the image layers")
        }
        WriteMode::Layers { lowers, upper } => {
            let mut used: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
            if let Some((u, w)) = upper {
                used.push(u);
                used.push(w);
            }
            staging_avoiding(&used, exists)
                .map(Some)
                .ok_or("no host directory to stage the image layers")
        }
        WriteMode::ReadOnly | WriteMode::ReadWrite => Ok(None),
    }
}

/// Where a SquashFS image is mounted: `-m DIR` as given, else `/var/tmp/$USER.ch/mnt`
/// (Charliecloud's default), which the caller creates. The flag says it is the default.
pub fn squash_mount_point(requested: Option<&Path>, user: &str) -> (PathBuf, bool) {
    match requested {
        Some(m) => (m.to_path_buf(), false),
        None => (PathBuf::from(format!("/var/tmp/{user}.ch/mnt")), true),
    }
}

/// Why mount point `shown` (canonical: `real`) can't serve a SquashFS image, if it can't:
/// whatever is under it is hidden once FUSE is mounted there, so it must hold neither the
/// image (canonical path; the daemon would wait on its own mount for ever) nor `tmp`, the
/// `$TMPDIR` the generated passwd files are written to (as given, and canonical).
pub fn squash_mount_conflict(
    shown: &Path,
    real: &Path,
    image: &Path,
    tmp: Option<(&Path, &Path)>,
) -> Option<String> {
    if image.starts_with(real) {
        return Some(format!(
            "--mount: {} contains the image; choose a mount point outside it",
            shown.display()
        ));
    }
    match tmp {
        Some((tmp, tmp_real)) if tmp_real.starts_with(real) => Some(format!(
            "--mount: {} would hide $TMPDIR ({}); choose another mount point",
            shown.display(),
            tmp.display()
        )),
        _ => None,
    }
}

/// The new root's host path for a plan input.
pub fn new_root(input: &PlanInput) -> PathBuf {
    match input.write {
        WriteMode::Fake { .. } | WriteMode::Layers { .. } | WriteMode::LayersFake { .. } => {
            input.staging.join("merged")
        }
        _ => input.image.clone(),
    }
}

/// The ordered list of mount operations that assemble the container.
pub fn mount_plan(input: &PlanInput) -> Vec<MountOp> {
    let mut ops = vec![MountOp::MakeRootPrivate];
    let root = new_root(input);
    let create = if input.write.writable() {
        IfMissing::Create
    } else {
        IfMissing::Error
    };
    let create_or_skip = if input.write.writable() {
        IfMissing::TryCreate
    } else {
        IfMissing::Skip
    };
    match &input.write {
        WriteMode::ReadOnly => {
            ops.push(MountOp::BindSelf { path: root.clone() });
            ops.push(MountOp::RemountReadOnly { path: root.clone() });
        }
        WriteMode::ReadWrite => ops.push(MountOp::BindSelf { path: root.clone() }),
        WriteMode::Fake { size } | WriteMode::LayersFake { size, .. } => {
            let mut options = String::from("mode=0755");
            if let Some(s) = size {
                options.push_str(",size=");
                options.push_str(s);
            }
            ops.push(MountOp::TmpfsHost {
                path: input.staging.clone(),
                options,
            });
            for d in ["upper", "work", "merged"] {
                ops.push(MountOp::MkdirHost {
                    path: input.staging.join(d),
                });
            }
            let (upper, work) = (input.staging.join("upper"), input.staging.join("work"));
            ops.push(match &input.write {
                // -W over an image stored as layers: the layers are the lower directories.
                WriteMode::LayersFake { lowers, .. } => MountOp::OverlayLayers {
                    lowers: lowers.clone(),
                    upper: Some((upper, work)),
                    dst: root.clone(),
                },
                _ => MountOp::Overlay {
                    lower: input.image.clone(),
                    upper,
                    work,
                    dst: root.clone(),
                },
            });
        }
        WriteMode::Layers { lowers, upper } => {
            ops.push(MountOp::TmpfsHost {
                path: input.staging.clone(),
                options: "mode=0755".into(),
            });
            ops.push(MountOp::MkdirHost { path: root.clone() });
            let mut lowers = lowers.clone();
            let mp = &input.mount_points;
            if !mp.is_empty() {
                let points = input.staging.join("points");
                ops.push(MountOp::MkdirHost {
                    path: points.clone(),
                });
                for d in &mp.dirs {
                    ops.push(MountOp::MkdirHost {
                        path: points.join(d),
                    });
                }
                if !mp.etc_files.is_empty() {
                    let etc = points.join("etc");
                    ops.push(MountOp::MkdirHost { path: etc.clone() });
                    for f in &mp.etc_files {
                        ops.push(MountOp::FileHost { path: etc.join(f) });
                    }
                    if let Some(like) = &mp.etc_like {
                        ops.push(MountOp::CopyAttrsHost {
                            from: like.clone(),
                            to: etc,
                        });
                    }
                }
                for p in &mp.paths {
                    let path = points.join(&p.rel);
                    ops.push(if p.dir {
                        MountOp::MkdirHost { path }
                    } else {
                        MountOp::FileHost { path }
                    });
                }
                // Deepest first: creating an entry changes its parent's time.
                for p in mp.paths.iter().rev() {
                    if let Some(like) = &p.like {
                        ops.push(MountOp::CopyAttrsHost {
                            from: like.clone(),
                            to: points.join(&p.rel),
                        });
                    }
                }
                lowers.insert(0, points);
            }
            ops.push(MountOp::OverlayLayers {
                lowers,
                upper: upper.clone(),
                dst: root.clone(),
            });
        }
    }
    // -W's mount points vanish with its tmpfs upper directory; layers get theirs from
    // `mount_points`; other images must have them.
    let required = if matches!(
        input.write,
        WriteMode::Fake { .. } | WriteMode::LayersFake { .. }
    ) {
        IfMissing::Create
    } else {
        IfMissing::Error
    };
    for d in REQUIRED_HOST_DIRS {
        ops.push(MountOp::Bind {
            src: d.into(),
            dst: d.into(),
            if_missing: required,
            src_optional: false,
            read_only: false,
        });
    }
    for f in OPTIONAL_HOST_FILES {
        // /etc/hosts and /etc/resolv.conf are created in writable images; machine-id only
        // bound where the image has one.
        let if_missing = if *f == "/etc/machine-id" {
            IfMissing::Skip
        } else {
            create_or_skip
        };
        ops.push(MountOp::Bind {
            src: f.into(),
            dst: f.into(),
            if_missing,
            src_optional: true,
            read_only: false,
        });
    }
    if let Some((passwd, group)) = &input.passwd {
        ops.push(MountOp::Bind {
            src: passwd.clone(),
            dst: "/etc/passwd".into(),
            if_missing: create_or_skip,
            src_optional: false,
            read_only: false,
        });
        ops.push(MountOp::Bind {
            src: group.clone(),
            dst: "/etc/group".into(),
            if_missing: create_or_skip,
            src_optional: false,
            read_only: false,
        });
    }
    if input.private_tmp {
        ops.push(MountOp::Tmpfs {
            dst: "/tmp".into(),
            options: "mode=1777".into(),
            if_missing: create,
        });
    } else {
        ops.push(MountOp::Bind {
            src: input.host_tmp.clone(),
            dst: "/tmp".into(),
            if_missing: create,
            src_optional: false,
            read_only: false,
        });
    }
    if let Some((home, user)) = &input.home {
        ops.push(MountOp::Tmpfs {
            dst: "/home".into(),
            options: "mode=0755".into(),
            if_missing: create,
        });
        ops.push(MountOp::Bind {
            src: home.clone(),
            dst: PathBuf::from("/home").join(user),
            if_missing: IfMissing::Create,
            src_optional: false,
            read_only: false,
        });
    }
    if let Some(prog) = &input.ch_ssh {
        ops.push(MountOp::Bind {
            src: prog.clone(),
            dst: CH_SSH_GUEST.into(),
            if_missing: if input.write.writable() {
                IfMissing::Create
            } else {
                IfMissing::Refuse("--ch-ssh: /usr/bin/ch-ssh not in image")
            },
            src_optional: false,
            read_only: true,
        });
    }
    // User binds always try to create a missing destination: in a read-only image that
    // fails with EROFS ("can't mkdir: ...: Read-only file system"), as in Charliecloud.
    for b in &input.binds {
        ops.push(MountOp::Bind {
            src: b.src.clone(),
            dst: b.dst.clone(),
            if_missing: IfMissing::Create,
            src_optional: false,
            read_only: false,
        });
    }
    // The builder's RUN mounts: their mount points come from `mount_points` (else they
    // are created as a user bind's are).
    for m in &input.build_mounts {
        ops.push(match m {
            BuildMount::Bind { src, dst, writable } => MountOp::Bind {
                src: src.clone(),
                dst: dst.clone(),
                if_missing: IfMissing::Create,
                src_optional: false,
                read_only: !writable,
            },
            BuildMount::Tmpfs { dst, options } => MountOp::Tmpfs {
                dst: dst.clone(),
                options: options.clone(),
                if_missing: IfMissing::Create,
            },
        });
    }
    ops.push(MountOp::PivotRoot { new_root: root });
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(write: WriteMode) -> PlanInput {
        PlanInput {
            image: "/img".into(),
            write,
            staging: "/mnt".into(),
            host_tmp: "/tmp".into(),
            private_tmp: false,
            home: None,
            passwd: Some(("/tmp/p".into(), "/tmp/g".into())),
            binds: vec![],
            build_mounts: vec![],
            ch_ssh: None,
            mount_points: MountPoints::default(),
        }
    }

    #[test]
    fn ch_ssh_is_bound_read_only_and_created_only_in_writable_images() {
        let ch_ssh = |write| {
            let mut i = input(write);
            i.ch_ssh = Some("/opt/grove/bin/ch-ssh".into());
            mount_plan(&i)
                .into_iter()
                .find(
                    |op| matches!(op, MountOp::Bind { dst, .. } if dst == Path::new(CH_SSH_GUEST)),
                )
                .expect("a bind at /usr/bin/ch-ssh")
        };
        assert_eq!(
            ch_ssh(WriteMode::ReadOnly),
            MountOp::Bind {
                src: "/opt/grove/bin/ch-ssh".into(),
                dst: "/usr/bin/ch-ssh".into(),
                if_missing: IfMissing::Refuse("--ch-ssh: /usr/bin/ch-ssh not in image"),
                src_optional: false,
                read_only: true,
            }
        );
        assert!(matches!(
            ch_ssh(WriteMode::Fake { size: None }),
            MountOp::Bind {
                if_missing: IfMissing::Create,
                read_only: true,
                ..
            }
        ));
        assert!(!mount_plan(&input(WriteMode::ReadOnly))
            .iter()
            .any(|op| matches!(op, MountOp::Bind { dst, .. } if dst == Path::new(CH_SSH_GUEST))));
    }

    #[test]
    fn mount_ops_display_as_one_readable_line() {
        let ops = mount_plan(&input(WriteMode::ReadOnly));
        let lines: Vec<String> = ops.iter().map(ToString::to_string).collect();
        assert_eq!(lines[0], "make / private (recursive)");
        assert_eq!(lines[1], "bind /img onto itself");
        assert_eq!(lines[2], "remount /img read-only");
        assert!(
            lines.contains(&"bind /dev at /dev".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"bind /etc/hosts at /etc/hosts if on the host and in the image".to_string()
            ),
            "{lines:?}"
        );
        assert_eq!(lines.last().map(String::as_str), Some("pivot_root to /img"));
        let w = mount_plan(&input(WriteMode::Fake {
            size: Some("1g".into()),
        }));
        let w: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert!(
            w.contains(&"tmpfs at host /mnt (mode=0755,size=1g)".to_string()),
            "{w:?}"
        );
        assert!(
            w.contains(
                &"overlay at /mnt/merged: lower /img, upper /mnt/upper, work /mnt/work".to_string()
            ),
            "{w:?}"
        );
    }

    #[test]
    fn id_maps_map_only_the_invoking_ids() {
        let m = id_maps(1000, 100, 0, 0);
        assert_eq!(m.uid_map, "0 1000 1\n");
        assert_eq!(m.gid_map, "0 100 1\n");
        assert_eq!(m.setgroups, "deny");
        assert_eq!(id_maps(1000, 100, 1000, 100).uid_map, "1000 1000 1\n");
    }

    #[test]
    fn read_only_plan_binds_then_remounts_read_only_and_pivots_last() {
        let ops = mount_plan(&input(WriteMode::ReadOnly));
        assert_eq!(ops[0], MountOp::MakeRootPrivate);
        assert_eq!(
            ops[1],
            MountOp::BindSelf {
                path: "/img".into()
            }
        );
        assert_eq!(
            ops[2],
            MountOp::RemountReadOnly {
                path: "/img".into()
            }
        );
        assert_eq!(
            ops.last(),
            Some(&MountOp::PivotRoot {
                new_root: "/img".into()
            })
        );
        // No system op creates anything in a read-only image.
        for op in &ops {
            if let MountOp::Bind {
                dst, if_missing, ..
            } = op
            {
                assert!(
                    !matches!(if_missing, IfMissing::Create | IfMissing::TryCreate),
                    "{dst:?}"
                );
            }
        }
    }

    #[test]
    fn missing_mount_points_follow_overlay_whiteouts_and_skip_a_non_directory_etc() {
        let t = tempfile::tempdir().expect("tempdir");
        let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
        for d in ["dev", "proc", "etc"] {
            std::fs::create_dir_all(bottom.join(d)).expect("mkdir");
        }
        std::fs::write(bottom.join("etc/hosts"), "").expect("write");
        std::fs::create_dir_all(&top).expect("mkdir");
        // The top layer deletes /proc (an xattr whiteout, as unprivileged overlayfs makes).
        std::fs::write(top.join("proc"), "").expect("write");
        let lowers = vec![top.clone(), bottom.clone()];
        let whiteouts = xattr::set(top.join("proc"), "user.overlay.whiteout", b"y").is_ok();
        let mp = missing_mount_points(&lowers, &mount_dirs(false), true);
        let mut want = vec!["sys", "tmp"];
        if whiteouts {
            want.insert(0, "proc");
        }
        assert_eq!(mp.dirs, want);
        assert_eq!(mp.etc_files, vec!["resolv.conf".to_string()]);
        assert_eq!(mp.etc_like, Some(bottom.join("etc")));
        assert!(missing_mount_points(&lowers, &["dev"], false).is_empty());
        // An /etc that is a symlink is left alone.
        let other = t.path().join("other");
        std::fs::create_dir_all(&other).expect("mkdir");
        std::os::unix::fs::symlink("usr/etc", other.join("etc")).expect("symlink");
        let mp = missing_mount_points(&[other], &[], true);
        assert!(mp.etc_files.is_empty() && mp.etc_like.is_none());
    }

    #[test]
    fn build_mounts_round_trip_through_their_ch_run_argument() {
        for m in [
            BuildMount::Bind {
                src: "/s/cachemounts/ab".into(),
                dst: "/var/cache/apt".into(),
                writable: true,
            },
            BuildMount::Bind {
                src: "/ctx/with:colon".into(),
                dst: "/src".into(),
                writable: false,
            },
            BuildMount::Tmpfs {
                dst: "/t".into(),
                options: "mode=1777,size=1m".into(),
            },
        ] {
            assert_eq!(BuildMount::parse(&m.to_arg()), Ok(m.clone()));
        }
        assert_eq!(
            BuildMount::parse(std::ffi::OsStr::new("bind-ro:/a:/b")),
            Ok(BuildMount::Bind {
                src: "/b".into(),
                dst: "/a".into(),
                writable: false
            })
        );
        for bad in ["bind:/a:", "bind:rel:/b", "tmpfs:/", "nfs:/a:/b", "bind"] {
            assert!(
                BuildMount::parse(std::ffi::OsStr::new(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn build_mounts_come_after_user_binds_read_only_unless_writable() {
        let mut i = input(WriteMode::ReadWrite);
        i.binds
            .push(Bind::parse("/data:/mnt/0").expect("valid bind"));
        i.build_mounts = vec![
            BuildMount::Bind {
                src: "/ctx".into(),
                dst: "/src".into(),
                writable: false,
            },
            BuildMount::Tmpfs {
                dst: "/t".into(),
                options: "mode=1777".into(),
            },
        ];
        let ops = mount_plan(&i);
        let n = ops.len();
        assert!(matches!(&ops[n - 4], MountOp::Bind { dst, .. } if dst == Path::new("/mnt/0")));
        assert!(
            matches!(&ops[n - 3], MountOp::Bind { dst, read_only: true, .. } if dst == Path::new("/src"))
        );
        assert!(matches!(&ops[n - 2], MountOp::Tmpfs { dst, .. } if dst == Path::new("/t")));
    }

    #[test]
    fn build_mount_points_provide_missing_targets_and_keep_existing_parents_attributes() {
        let d = tempfile::tempdir().expect("tempdir");
        let l = d.path().join("layer");
        std::fs::create_dir_all(l.join("var/cache")).expect("mkdir");
        std::fs::create_dir_all(l.join("etc")).expect("mkdir");
        std::os::unix::fs::symlink("/elsewhere", l.join("link")).expect("symlink");
        let lowers = vec![l.clone()];
        let p = build_mount_points(
            &lowers,
            &[
                ("/var/cache/apt".into(), true),
                ("/run/secrets/tok".into(), false),
                ("/var/cache".into(), true),
                ("/link/x".into(), true),
            ],
        );
        let got: Vec<(&str, bool, bool)> = p
            .iter()
            .map(|m| (m.rel.as_str(), m.dir, m.like.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                ("run", true, false),
                ("run/secrets", true, false),
                ("run/secrets/tok", false, false),
                ("var", true, true),
                ("var/cache", true, true),
                ("var/cache/apt", true, false),
            ]
        );
        assert_eq!(p[3].like.as_deref(), Some(l.join("var").as_path()));
        // With the extra lower in the plan: created, then attributes copied deepest first.
        let mut i = input(WriteMode::Layers {
            lowers: lowers.clone(),
            upper: Some(("/s/u".into(), "/s/w".into())),
        });
        i.mount_points.paths = p;
        let ops = mount_plan(&i);
        let pos = |op: &MountOp| ops.iter().position(|o| o == op).expect("op in plan");
        let file = pos(&MountOp::FileHost {
            path: "/mnt/points/run/secrets/tok".into(),
        });
        let var = pos(&MountOp::CopyAttrsHost {
            from: l.join("var"),
            to: "/mnt/points/var".into(),
        });
        let cache = pos(&MountOp::CopyAttrsHost {
            from: l.join("var/cache"),
            to: "/mnt/points/var/cache".into(),
        });
        assert!(file < cache && cache < var, "{ops:?}");
    }

    #[test]
    fn layers_plan_puts_missing_mount_points_in_a_top_lower_on_staging() {
        let mut i = input(WriteMode::Layers {
            lowers: vec!["/s/c".into()],
            upper: Some(("/s/u".into(), "/s/w".into())),
        });
        i.mount_points = MountPoints {
            dirs: vec!["dev".into()],
            etc_files: vec!["hosts".into()],
            etc_like: Some("/s/c/etc".into()),
            ..MountPoints::default()
        };
        let ops = mount_plan(&i);
        for op in [
            MountOp::MkdirHost {
                path: "/mnt/points/dev".into(),
            },
            MountOp::FileHost {
                path: "/mnt/points/etc/hosts".into(),
            },
            MountOp::CopyAttrsHost {
                from: "/s/c/etc".into(),
                to: "/mnt/points/etc".into(),
            },
            MountOp::OverlayLayers {
                lowers: vec!["/mnt/points".into(), "/s/c".into()],
                upper: Some(("/s/u".into(), "/s/w".into())),
                dst: "/mnt/merged".into(),
            },
        ] {
            assert!(ops.contains(&op), "{op} not in {ops:?}");
        }
    }

    #[test]
    fn write_plan_never_remounts_read_only() {
        let ops = mount_plan(&input(WriteMode::ReadWrite));
        assert!(!ops
            .iter()
            .any(|o| matches!(o, MountOp::RemountReadOnly { .. })));
    }

    #[test]
    fn write_fake_plan_stages_overlay_on_tmpfs() {
        let ops = mount_plan(&input(WriteMode::Fake {
            size: Some("1g".into()),
        }));
        assert_eq!(
            ops[1],
            MountOp::TmpfsHost {
                path: "/mnt".into(),
                options: "mode=0755,size=1g".into()
            }
        );
        assert!(ops.contains(&MountOp::Overlay {
            lower: "/img".into(),
            upper: "/mnt/upper".into(),
            work: "/mnt/work".into(),
            dst: "/mnt/merged".into()
        }));
        assert_eq!(
            ops.last(),
            Some(&MountOp::PivotRoot {
                new_root: "/mnt/merged".into()
            })
        );
    }

    #[test]
    fn layers_plan_mounts_the_union_on_staging_and_is_writable_only_with_upper() {
        let lowers = vec![
            PathBuf::from("/s/layers/b"),
            PathBuf::from("/s/checkouts/a"),
        ];
        let upper = Some((PathBuf::from("/s/tmp/u"), PathBuf::from("/s/tmp/w")));
        let w = WriteMode::Layers {
            lowers: lowers.clone(),
            upper: upper.clone(),
        };
        assert!(w.writable());
        let ops = mount_plan(&input(w));
        assert!(ops.contains(&MountOp::OverlayLayers {
            lowers: lowers.clone(),
            upper,
            dst: "/mnt/merged".into()
        }));
        assert_eq!(
            ops.last(),
            Some(&MountOp::PivotRoot {
                new_root: "/mnt/merged".into()
            })
        );
        let ro = WriteMode::Layers {
            lowers,
            upper: None,
        };
        assert!(!ro.writable());
    }

    #[test]
    fn system_binds_come_before_user_binds() {
        let mut i = input(WriteMode::ReadOnly);
        i.binds
            .push(Bind::parse("/data:/mnt/0").expect("valid bind"));
        let ops = mount_plan(&i);
        let pos = |d: &str| {
            ops.iter()
                .position(|o| matches!(o, MountOp::Bind { dst, .. } if dst == Path::new(d)))
                .expect("present")
        };
        assert!(pos("/dev") < pos("/tmp"));
        assert!(pos("/etc/passwd") < pos("/mnt/0"));
        assert!(pos("/tmp") < pos("/mnt/0"));
    }

    #[test]
    fn private_tmp_is_a_tmpfs_not_a_bind() {
        let mut i = input(WriteMode::ReadOnly);
        i.private_tmp = true;
        let ops = mount_plan(&i);
        assert!(ops
            .iter()
            .any(|o| matches!(o, MountOp::Tmpfs { dst, .. } if dst == Path::new("/tmp"))));
        assert!(!ops
            .iter()
            .any(|o| matches!(o, MountOp::Bind { dst, .. } if dst == Path::new("/tmp"))));
    }

    #[test]
    fn no_passwd_plan_leaves_image_files() {
        let mut i = input(WriteMode::ReadOnly);
        i.passwd = None;
        let ops = mount_plan(&i);
        assert!(!ops
            .iter()
            .any(|o| matches!(o, MountOp::Bind { dst, .. } if dst == Path::new("/etc/passwd"))));
    }

    #[test]
    fn home_overmounts_tmpfs_then_binds_home() {
        let mut i = input(WriteMode::ReadOnly);
        i.home = Some(("/home/alice".into(), "alice".into()));
        let ops = mount_plan(&i);
        let t = ops
            .iter()
            .position(|o| matches!(o, MountOp::Tmpfs { dst, .. } if dst == Path::new("/home")));
        let b = ops.iter().position(
            |o| matches!(o, MountOp::Bind { dst, if_missing: IfMissing::Create, .. } if dst == Path::new("/home/alice")),
        );
        assert!(t.expect("tmpfs") < b.expect("bind"));
    }

    #[test]
    fn bind_parse_defaults_and_refuses_root() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            Bind::parse("/a").expect("ok"),
            Bind {
                src: "/a".into(),
                dst: "/a".into()
            }
        );
        assert_eq!(Bind::parse("/a:/b").expect("ok").dst, PathBuf::from("/b"));
        assert_eq!(
            Bind::parse("/a:/").unwrap_err(),
            "--bind: destination can't be /"
        );
        assert_eq!(
            Bind::parse("/a://").unwrap_err(),
            "--bind: destination can't be /"
        );
        assert!(Bind::parse(":/b").is_err());
        let odd = Bind::parse(std::ffi::OsStr::from_bytes(b"/d\xff:/mnt/\xfe")).expect("bytes");
        assert_eq!(odd.src.as_os_str().as_bytes(), b"/d\xff");
        assert_eq!(odd.dst.as_os_str().as_bytes(), b"/mnt/\xfe");
        for relative in ["/a:mnt", "data", "./d:./d"] {
            assert_eq!(
                Bind::parse(relative).unwrap_err(),
                "--bind: destination must be absolute",
                "{relative}"
            );
        }
    }

    #[test]
    fn staging_holds_nothing_the_overlay_reads_and_is_none_without_overlay() {
        let all = |_: &Path| true;
        let img = Path::new("/mnt/images/x");
        assert_eq!(
            staging(&WriteMode::Fake { size: None }, img, all),
            Ok(Some(PathBuf::from("/srv")))
        );
        assert_eq!(staging(&WriteMode::ReadOnly, img, all), Ok(None));
        assert_eq!(staging(&WriteMode::ReadWrite, img, all), Ok(None));
        let layers = WriteMode::Layers {
            lowers: vec!["/mnt/l1".into(), "/srv/l0".into()],
            upper: Some(("/media/u".into(), "/opt/w".into())),
        };
        assert_eq!(
            staging(&layers, Path::new("/mnt/l1"), all),
            Ok(Some(PathBuf::from("/boot")))
        );
        let only_mnt = |p: &Path| p == Path::new("/mnt");
        assert_eq!(
            staging(&layers, Path::new("/mnt/l1"), only_mnt),
            Err("no host directory to stage the image layers")
        );
        assert_eq!(
            staging(&WriteMode::Fake { size: None }, img, only_mnt),
            Err("--write-fake: no host directory to stage the overlay")
        );
    }

    #[test]
    fn squash_mount_point_defaults_per_user_and_must_hide_nothing_needed() {
        assert_eq!(
            squash_mount_point(None, "alice"),
            (PathBuf::from("/var/tmp/alice.ch/mnt"), true)
        );
        assert_eq!(
            squash_mount_point(Some(Path::new("/m")), "alice"),
            (PathBuf::from("/m"), false)
        );
        let p = Path::new;
        assert_eq!(
            squash_mount_conflict(p("m"), p("/w/m"), p("/w/m/img.sqfs"), None).as_deref(),
            Some("--mount: m contains the image; choose a mount point outside it")
        );
        assert_eq!(
            squash_mount_conflict(
                p("/w/m"),
                p("/w/m"),
                p("/i.sqfs"),
                Some((p("t"), p("/w/m/t")))
            )
            .as_deref(),
            Some("--mount: /w/m would hide $TMPDIR (t); choose another mount point")
        );
        assert_eq!(
            squash_mount_conflict(
                p("/w/m"),
                p("/w/m"),
                p("/w/mi.sqfs"),
                Some((p("/tmp"), p("/tmp")))
            ),
            None
        );
    }

    #[test]
    fn staging_avoids_image_location() {
        let all = |_: &Path| true;
        assert_eq!(
            staging_dir(Path::new("/var/tmp/img"), all),
            Some("/mnt".into())
        );
        assert_eq!(staging_dir(Path::new("/mnt/img"), all), Some("/srv".into()));
    }
}
