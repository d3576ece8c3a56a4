//! Performing a plan: entering namespaces, writing ID maps, mounting SquashFS with FUSE, and
//! executing [`MountOp`]s. Every function here changes system state; the decisions were
//! made in [`super::plan`].

use super::error::RunError;
use super::plan::{IdMaps, IfMissing, MountOp};
use super::resolve::{resolve, ResolveError, Resolved};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use std::ffi::OsString;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const NONE: Option<&str> = None;

/// Enter new user and mount namespaces and map the IDs. The process must be
/// single-threaded (unshare(2): CLONE_NEWUSER fails with EINVAL otherwise).
pub fn containerize(maps: &IdMaps) -> Result<(), RunError> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| {
        let err = RunError::sys("can't init user+mount namespaces", e);
        if e == Errno::EPERM || e == Errno::ENOSPC {
            err.with_hint("unprivileged user namespaces may be disabled (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, or an AppArmor restriction)")
        } else {
            err
        }
    })?;
    write_proc("/proc/self/uid_map", &maps.uid_map)?;
    // user_namespaces(7): since Linux 3.19 setgroups must be denied before an
    // unprivileged process writes gid_map (CVE-2014-8989).
    write_proc("/proc/self/setgroups", maps.setgroups)?;
    write_proc("/proc/self/gid_map", &maps.gid_map)?;
    Ok(())
}

/// Become root of a new user namespace that maps only the invoking user and group (as
/// uid and gid 0), so that the process can read the user's own files and directories
/// whatever their modes (mode 0000 included) without changing them: `CAP_DAC_READ_SEARCH`
/// in a user namespace applies to inodes whose owner and group are mapped in it
/// (capabilities(7), user_namespaces(7)). Files of other users are read as before.
/// Returns false (and does nothing) when already root. The process must be
/// single-threaded; nothing else changes (no mount namespace, same files, same paths).
pub fn read_own_files_as_root() -> Result<bool, RunError> {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if euid == 0 {
        return Ok(false);
    }
    unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| RunError::sys("can't init user namespace", e))?;
    write_proc("/proc/self/uid_map", &format!("0 {euid} 1\n"))?;
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/gid_map", &format!("0 {egid} 1\n"))?;
    Ok(true)
}

fn write_proc(path: &str, text: &str) -> Result<(), RunError> {
    std::fs::write(path, text).map_err(|e| RunError::io(format!("can't write {path}"), &e))
}

/// Mount a SquashFS file at `mnt` with a FUSE connection we open and mount ourselves, served
/// by `squashfuse_ll` running in the background on `/dev/fd/N` (libfuse ≥ 3.3 accepts an
/// already-mounted FUSE fd as its mount point). Returns the daemon.
pub fn mount_squash(
    image: &Path,
    mnt: &Path,
    uid: u32,
    gid: u32,
) -> Result<std::process::Child, RunError> {
    let daemon = super::find_program("squashfuse_ll").ok_or_else(|| {
        RunError::sys(
            "can't start squashfuse_ll: not found in $PATH",
            Errno::ENOENT,
        )
        .with_hint("install squashfuse (squashfuse_ll), or convert the image to a directory")
    })?;
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse");
    let fuse = match fuse {
        Ok(f) => f,
        Err(e) => {
            return Err(RunError::io("can't open /dev/fuse", &e).with_hint(format!(
                "SquashFS images need FUSE; /dev/fuse must exist and be readable and writable by you \
                 (usually mode 0666); otherwise convert the image to a directory: ch-convert {} DIR",
                image.display()
            )))
        }
    };
    // std opens with O_CLOEXEC; clear it so the daemon inherits the descriptor.
    use std::os::fd::AsRawFd;
    let fd = fuse.as_raw_fd();
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| RunError::sys("can't clear close-on-exec on /dev/fuse", e))?;
    let opts = format!("fd={fd},rootmode=40000,user_id={uid},group_id={gid}");
    mount(
        Some("squashfuse"),
        mnt,
        Some("fuse.squashfuse_ll"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .map_err(|e| {
        RunError::sys(format!("can't mount FUSE at {}", mnt.display()), e).with_hint(format!(
            "this kernel or system does not let unprivileged users mount FUSE in a user \
             namespace (Linux 4.18+ is needed); convert the image to a directory: \
             ch-convert {} DIR",
            image.display()
        ))
    })?;
    // Found before it could be looked up through the unserved mount (a $PATH entry under
    // the mount point would hang the lookup).
    let mut cmd = std::process::Command::new(&daemon);
    cmd.arg("-f").arg(image).arg(format!("/dev/fd/{fd}"));
    cmd.stdin(std::process::Stdio::null());
    // Own process group: a terminal's ^C must not kill the filesystem under the command.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // A batch system's scancel signals every process of the job step, the daemon too: it
    // must keep serving the command until the command ends (then ch-run stops it with
    // SIGKILL), so that the job ends with the command's status, not a lost filesystem.
    {
        use nix::sys::signal::Signal;
        super::sys::ignore_across_exec(
            &mut cmd,
            &[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP],
        );
    }
    // If ch-run is killed outright, the daemon must not outlive it: the mount namespace
    // it keeps alive holds nothing else. (SIGKILL: it ignores SIGTERM.)
    super::sys::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGKILL);
    let child = cmd.spawn().map_err(|e| {
        RunError::io("can't start squashfuse_ll", &e)
            .with_hint("install squashfuse (squashfuse_ll), or convert the image to a directory")
    })?;
    drop(fuse); // only the daemon holds the connection now: if it dies, accesses fail
                // The first access waits for the daemon's FUSE_INIT; fails if it exits early.
    std::fs::metadata(mnt.join(".")).map_err(|e| {
        RunError::io(format!("can't access SquashFS mount {}", mnt.display()), &e).with_hint(
            "squashfuse_ll exited early (see its message above); is the image a valid SquashFS?",
        )
    })?;
    Ok(child)
}

/// Mount overlayfs at `dst`: `lowers` top first, with an upper and work directory or
/// read-only without. `userxattr` makes it work in a user namespace (Linux 5.11+);
/// `volatile` skips the syncfs of the upper filesystem at unmount (overlayfs(5)), since
/// the upper directory is either thrown away (-W) or read right away by the builder.
fn overlay(
    lowers: &[PathBuf],
    upper: Option<(&PathBuf, &PathBuf)>,
    dst: &Path,
    hint: &str,
) -> Result<(), RunError> {
    let mut all: Vec<&PathBuf> = lowers.iter().collect();
    if let Some((u, w)) = upper {
        all.push(u);
        all.push(w);
    }
    for p in &all {
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains(':') {
            return Err(RunError::msg(format!(
                "can't overlay: path contains ',' or ':': {s}"
            )));
        }
    }
    let lower: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
    let mut opts = format!("lowerdir={}", lower.join(":"));
    if let Some((u, w)) = upper {
        opts.push_str(&format!(
            ",upperdir={},workdir={},userxattr,volatile",
            u.display(),
            w.display()
        ));
    } else {
        opts.push_str(",userxattr");
    }
    // mount(2) takes at most one page of options (overlayfs(5)).
    if opts.len() >= 4000 {
        return Err(
            RunError::msg(format!("can't overlay: too many layers ({})", lowers.len()))
                .with_hint("check the image out (ch-convert it to a directory) and run that"),
        );
    }
    mount(
        Some("overlay"),
        dst,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| RunError::sys("can't overlay", e).with_hint(hint))
}

/// Execute mount operations. `root` is the new root's host path (container paths resolve
/// inside it). `ranch`: a writable host directory of ours (the `-W` staging tmpfs) where
/// directories that cannot be written are rebuilt as symlink ranches (FAQ 11.3.3).
pub fn apply(ops: &[MountOp], root: &Path, ranch: Option<&Path>) -> Result<(), RunError> {
    let mut mk = Maker {
        bound: Vec::new(),
        ranch: ranch.map(Path::to_path_buf),
        ranches: 0,
    };
    for op in ops {
        crate::debug!("mount: {op}");
        match op {
            MountOp::MakeRootPrivate => {
                mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
                    .map_err(|e| RunError::sys("can't make / private", e))?;
            }
            MountOp::BindSelf { path } => {
                mount(
                    Some(path.as_path()),
                    path.as_path(),
                    NONE,
                    MsFlags::MS_REC | MsFlags::MS_BIND,
                    NONE,
                )
                .map_err(|e| {
                    RunError::sys(format!("can't bind {} on itself", path.display()), e)
                })?;
            }
            MountOp::RemountReadOnly { path } => {
                // FAQ 11.2.2's wording.
                remount_ro(path, "can't re-mount image read-only (is it on NFS?)")?
            }
            MountOp::TmpfsHost { path, options } => {
                mount(
                    Some("tmpfs"),
                    path.as_path(),
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some(options.as_str()),
                )
                .map_err(|e| {
                    RunError::sys(format!("can't mount tmpfs at {}", path.display()), e)
                })?;
            }
            MountOp::MkdirHost { path } => mkdir(path)?,
            MountOp::FileHost { path } => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(|e| RunError::io(format!("can't create: {}", path.display()), &e))?;
            }
            MountOp::CopyAttrsHost { from, to } => copy_attrs(from, to)?,
            MountOp::Overlay {
                lower,
                upper,
                work,
                dst,
            } => overlay(
                std::slice::from_ref(lower),
                Some((upper, work)),
                dst,
                "--write-fake needs unprivileged overlayfs (Linux 5.11 or later)",
            )?,
            MountOp::OverlayLayers { lowers, upper, dst } => overlay(
                lowers,
                upper.as_ref().map(|(u, w)| (u, w)),
                dst,
                "running from layers needs unprivileged overlayfs (Linux 5.11 or later)",
            )?,
            MountOp::Tmpfs {
                dst,
                options,
                if_missing,
            } => {
                let Some(host) = destination(root, dst, *if_missing, true, &mut mk)? else {
                    continue;
                };
                mount(
                    Some("tmpfs"),
                    host.as_path(),
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some(options.as_str()),
                )
                .map_err(|e| {
                    RunError::sys(format!("can't mount tmpfs at {}", host.display()), e)
                })?;
            }
            MountOp::Bind {
                src,
                dst,
                if_missing,
                src_optional,
                read_only,
            } => {
                let md = match std::fs::metadata(src) {
                    Ok(m) => m,
                    Err(_) if *src_optional => continue,
                    Err(_) => {
                        return Err(RunError::msg(format!(
                            "can't bind: source not found: {}",
                            src.display()
                        )))
                    }
                };
                let Some(host) = destination(root, dst, *if_missing, md.is_dir(), &mut mk)? else {
                    continue;
                };
                mount(
                    Some(src.as_path()),
                    host.as_path(),
                    NONE,
                    MsFlags::MS_REC | MsFlags::MS_BIND,
                    NONE,
                )
                .map_err(|e| {
                    RunError::sys(
                        format!("can't bind {} to {}", src.display(), host.display()),
                        e,
                    )
                })?;
                if *read_only {
                    remount_ro(
                        &host,
                        &format!("can't re-mount read-only: {}", host.display()),
                    )?;
                }
                mk.bound.push(host);
            }
            MountOp::PivotRoot { new_root } => pivot(new_root)?,
        }
    }
    Ok(())
}

/// Resolve a container destination inside `root`, creating it when allowed. `None`: skip.
fn destination(
    root: &Path,
    dst: &Path,
    if_missing: IfMissing,
    want_dir: bool,
    mk: &mut Maker,
) -> Result<Option<PathBuf>, RunError> {
    let shown = || root.join(dst.strip_prefix("/").unwrap_or(dst));
    match resolve(root, dst) {
        Ok(Resolved::Exists(p)) => Ok(Some(p)),
        Ok(Resolved::Missing { existing, rest }) => match if_missing {
            IfMissing::Skip => Ok(None),
            IfMissing::Refuse(why) => Err(RunError::msg(why)),
            IfMissing::Error => Err(RunError::msg(format!(
                "can't bind: destination not found: {}",
                shown().display()
            ))),
            IfMissing::Create => mk.create_under(&existing, &rest, want_dir).map(Some),
            IfMissing::TryCreate => Ok(mk.create_under(&existing, &rest, want_dir).ok()),
        },
        Err(ResolveError::TooManyLinks) => Err(RunError::sys(
            format!("can't resolve destination: {}", shown().display()),
            Errno::ELOOP,
        )),
        Err(ResolveError::NotDir(p)) => Err(RunError::sys(
            format!("can't resolve destination: {}", p.display()),
            Errno::ENOTDIR,
        )),
        Err(ResolveError::Io(p, e)) => Err(RunError::sys(
            format!("can't resolve destination: {}", p.display()),
            Errno::from_raw(e),
        )),
    }
}

/// Creates missing mount points.
struct Maker {
    /// Host paths of binds done so far: mount points are never created under them.
    bound: Vec<PathBuf>,
    /// Where to build symlink ranches (`-W` only).
    ranch: Option<PathBuf>,
    ranches: usize,
}

impl Maker {
    /// Create the missing components `rest` under existing directory `existing`; the last
    /// is a directory if `want_dir`, else an empty file. Refuses to create anything inside
    /// an earlier bind mount (that would write to the host).
    fn create_under(
        &mut self,
        existing: &Path,
        rest: &[OsString],
        want_dir: bool,
    ) -> Result<PathBuf, RunError> {
        let mut p = existing.to_path_buf();
        for (i, c) in rest.iter().enumerate() {
            let parent = p.clone();
            p.push(c);
            if let Some(b) = self.bound.iter().find(|b| p.starts_with(b)) {
                return Err(RunError::msg(format!(
                    "can't mkdir: {} under existing bind-mount {}",
                    p.display(),
                    b.display()
                )));
            }
            let file = i + 1 == rest.len() && !want_dir;
            let mut r = create_one(&p, file);
            if let Err(Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::EOVERFLOW) = r {
                if self.ranch.is_some() {
                    self.ranch(&parent)?;
                    r = create_one(&p, file);
                }
            }
            if let Err(e) = r {
                let what = if file {
                    "can't create file"
                } else {
                    "can't mkdir"
                };
                return Err(RunError::sys(format!("{what}: {}", p.display()), e));
            }
        }
        Ok(p)
    }

    /// Replace directory `dir`, which we cannot write, by a writable one (FAQ 11.3.3): a
    /// new directory in the staging tmpfs holds the old one bound at `.orig` and a symlink
    /// `NAME -> .orig/NAME` per entry, and is bound over `dir`.
    fn ranch(&mut self, dir: &Path) -> Result<(), RunError> {
        let Some(base) = &self.ranch else {
            return Ok(());
        };
        let new = base.join(format!("ranch.{}", self.ranches));
        self.ranches += 1;
        mkdir(base)?;
        mkdir(&new)?;
        let orig = new.join(".orig");
        mkdir(&orig)?;
        crate::verbose!("symlink ranch for {}", dir.display());
        mount(
            Some(dir),
            orig.as_path(),
            NONE,
            MsFlags::MS_REC | MsFlags::MS_BIND,
            NONE,
        )
        .map_err(|e| RunError::sys(format!("can't bind {} for ranch", dir.display()), e))?;
        let entries = std::fs::read_dir(dir)
            .map_err(|e| RunError::io(format!("can't list: {}", dir.display()), &e))?;
        for ent in entries {
            let ent =
                ent.map_err(|e| RunError::io(format!("can't list: {}", dir.display()), &e))?;
            let name = ent.file_name();
            std::os::unix::fs::symlink(Path::new(".orig").join(&name), new.join(&name)).map_err(
                |e| RunError::io(format!("can't symlink in ranch: {}", new.display()), &e),
            )?;
        }
        if let Ok(md) = std::fs::metadata(&orig) {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::Permissions::from_mode(md.permissions().mode() & 0o7777 | 0o200);
            let _ = std::fs::set_permissions(&new, mode);
        }
        mount(
            Some(new.as_path()),
            dir,
            NONE,
            MsFlags::MS_REC | MsFlags::MS_BIND,
            NONE,
        )
        .map_err(|e| RunError::sys(format!("can't overmount {}", dir.display()), e))?;
        Ok(())
    }
}

fn create_one(p: &Path, file: bool) -> Result<(), Errno> {
    if file {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(p)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    } else {
        match nix::unistd::mkdir(p, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Give `to` the permission bits, access and modification times of `from`.
fn copy_attrs(from: &Path, to: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::symlink_metadata(from)
        .map_err(|e| RunError::io(format!("can't stat: {}", from.display()), &e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| RunError::io(format!("can't chmod: {}", to.display()), &e))?;
    let ts = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::utimensat(
        None,
        to,
        &ts(md.atime(), md.atime_nsec()),
        &ts(md.mtime(), md.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| RunError::sys(format!("can't set times: {}", to.display()), e))
}

fn mkdir(p: &Path) -> Result<(), RunError> {
    match nix::unistd::mkdir(p, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(RunError::sys(format!("can't mkdir: {}", p.display()), e)),
    }
}

/// Remount a bind read-only, repeating the flags the kernel locks in a user namespace
/// (mount_namespaces(7): nosuid, nodev, noexec and atime flags of a mount inherited from a
/// more privileged namespace cannot be cleared; a remount that omits them gets EPERM).
/// `what` is the error message on failure.
fn remount_ro(path: &Path, what: &str) -> Result<(), RunError> {
    let st = statvfs(path)
        .map_err(|e| RunError::sys(format!("can't statvfs: {}", path.display()), e))?;
    let f = st.flags();
    if f.contains(FsFlags::ST_RDONLY) {
        // Already read-only (e.g. SquashFS, a read-only bind): nothing to do.
        return Ok(());
    }
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (s, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_SYNCHRONOUS, MsFlags::MS_SYNCHRONOUS),
        (FsFlags::ST_MANDLOCK, MsFlags::MS_MANDLOCK),
    ] {
        if f.contains(s) {
            flags |= m;
        }
    }
    mount(NONE, path, NONE, flags, NONE).map_err(|e| RunError::sys(what, e))
}

/// pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves the
/// new root (pivot_root(2), "NOTES").
fn pivot(new_root: &Path) -> Result<(), RunError> {
    nix::unistd::chdir(new_root).map_err(|e| {
        RunError::sys(
            format!("can't chdir into new root: {}", new_root.display()),
            e,
        )
    })?;
    nix::unistd::pivot_root(".", ".").map_err(|e| RunError::sys("can't pivot_root(2)", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| RunError::sys("can't detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| RunError::sys("can't chdir to /", e))?;
    Ok(())
}
