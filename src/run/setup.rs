//! Performing a plan: entering namespaces, writing ID maps, mounting SquashFS with FUSE, and
//! executing [`MountOp`]s. Every function here changes system state; the decisions were
//! made in [`super::plan`]. [`apply_with`] makes its system calls through
//! [`Syscalls`], so that unit tests can check it with a recording fake.

use super::error::RunError;
use super::plan::{IdMaps, IfMissing, MountOp};
use super::resolve::{ResolveError, Resolved};
use super::syscalls::{Host, Syscalls};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statvfs::FsFlags;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

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

/// Enter a new network namespace with only the loopback interface, up (`RUN
/// --network=none`). Call after [`containerize`]: the namespace belongs to the new user
/// namespace, whose root may configure it.
pub fn isolate_network() -> Result<(), RunError> {
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| RunError::sys("can't init network namespace", e))?;
    super::sys::loopback_up().map_err(|e| RunError::sys("can't bring up loopback interface lo", e))
}

/// Become root of a new user namespace that maps only the invoking user and group (as
/// uid and gid 0), so that the process can read the user's own files and directories
/// whatever their modes (mode 0000 included) without changing them: `CAP_DAC_READ_SEARCH`
/// in a user namespace applies to inodes whose owner and group are mapped in it
/// (capabilities(7), user_namespaces(7)). Files of other users are read as before.
/// Only `CAP_DAC_READ_SEARCH` is kept, and programs it executes get none: writes are
/// checked against the user's permissions as before. Returns false (and does nothing) when already root. The
/// process must be single-threaded; nothing else changes (no mount namespace, same
/// files, same paths).
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
    // Root of the namespace has every capability over the user's inodes, writes
    // included: without this, an import of a directory wrote into a storage directory
    // its owner had made read-only (`chmod -R a-w`), where every other command is
    // refused. Reading is all that is wanted, by the tools it runs too: they would get
    // every capability back at exec (a SquashFS tool wrote its output into a directory
    // the user had made read-only, where ch-convert could then neither rename nor
    // remove it).
    super::sys::no_capabilities_for_root_on_exec()
        .map_err(|e| RunError::sys("can't drop capabilities", e))?;
    super::sys::keep_only_capability(CAP_DAC_READ_SEARCH)
        .map_err(|e| RunError::sys("can't drop capabilities", e))?;
    Ok(true)
}

/// capabilities(7): bypass read permission checks of files and directories.
const CAP_DAC_READ_SEARCH: u32 = 2;

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
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        // The FUSE device is character device 10:229 (Documentation/admin-guide/
        // devices.txt); anything else there (a /dev/null bound over it) is not FUSE,
        // whatever the kernel allows.
        let why = match fuse.metadata() {
            Ok(m) if !m.file_type().is_char_device() || m.rdev() != libc::makedev(10, 229) => {
                "/dev/fuse is not the FUSE device (character device 10:229): ask the \
                 system's administrator"
            }
            _ => {
                "this kernel or system does not let unprivileged users mount FUSE in a user \
                 namespace (Linux 4.18+ is needed)"
            }
        };
        RunError::sys(format!("can't mount FUSE at {}", mnt.display()), e).with_hint(format!(
            "{why}; convert the image to a directory: ch-convert {} DIR",
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
    sys: &mut impl Syscalls,
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
    // The paths as they are: bytes, not necessarily UTF-8 (a lossy copy names another
    // directory: "can't overlay: No such file or directory").
    let mut opts = OsString::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            opts.push(":");
        }
        opts.push(l);
    }
    if let Some((u, w)) = upper {
        for (key, p) in [(",upperdir=", u), (",workdir=", w)] {
            opts.push(key);
            opts.push(p);
        }
        opts.push(",userxattr,volatile");
    } else {
        opts.push(",userxattr");
    }
    // mount(2) takes at most one page of options (overlayfs(5)).
    if opts.len() >= 4000 {
        return Err(
            RunError::msg(format!("can't overlay: too many layers ({})", lowers.len()))
                .with_hint("check the image out (ch-convert it to a directory) and run that"),
        );
    }
    sys.mount(
        Some(Path::new("overlay")),
        dst,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_os_str()),
    )
    .map_err(|e| RunError::sys("can't overlay", e).with_hint(hint))
}

/// Execute mount operations on the real system (see [`apply_with`]).
pub fn apply(ops: &[MountOp], root: &Path, ranch: Option<&Path>) -> Result<(), RunError> {
    apply_with(&mut Host, ops, root, ranch)
}

/// Execute mount operations in order through `sys`, stopping at the first that fails and
/// returning its error (which names the operation and its paths; `-v` also logs its
/// number). `root` is the new root's host path (container paths resolve inside it).
/// `ranch`: a writable host directory of ours (the `-W` staging tmpfs) where directories
/// that cannot be written are rebuilt as symlink ranches (FAQ 11.3.3).
pub fn apply_with(
    sys: &mut impl Syscalls,
    ops: &[MountOp],
    root: &Path,
    ranch: Option<&Path>,
) -> Result<(), RunError> {
    let mut mk = Maker {
        bound: Vec::new(),
        ranch: ranch.map(Path::to_path_buf),
        ranches: 0,
    };
    for (i, op) in ops.iter().enumerate() {
        crate::debug!("mount: {op}");
        if let Err(e) = apply_one(sys, op, root, &mut mk) {
            crate::verbose!("mount: step {} of {} failed: {op}", i + 1, ops.len());
            return Err(e);
        }
    }
    Ok(())
}

fn apply_one(
    sys: &mut impl Syscalls,
    op: &MountOp,
    root: &Path,
    mk: &mut Maker,
) -> Result<(), RunError> {
    match op {
        MountOp::MakeRootPrivate => {
            sys.mount(
                None,
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )
            .map_err(|e| RunError::sys("can't make / private", e))?;
        }
        MountOp::BindSelf { path } => {
            sys.mount(
                Some(path.as_path()),
                path.as_path(),
                None,
                MsFlags::MS_REC | MsFlags::MS_BIND,
                None,
            )
            .map_err(|e| RunError::sys(format!("can't bind {} on itself", path.display()), e))?;
        }
        MountOp::RemountReadOnly { path } => {
            // FAQ 11.2.2's wording.
            remount_ro(sys, path, "can't re-mount image read-only (is it on NFS?)")?
        }
        MountOp::TmpfsHost { path, options } => {
            sys.mount(
                Some(Path::new("tmpfs")),
                path.as_path(),
                Some("tmpfs"),
                MsFlags::empty(),
                Some(OsStr::new(options)),
            )
            .map_err(|e| RunError::sys(format!("can't mount tmpfs at {}", path.display()), e))?;
        }
        MountOp::MkdirHost { path } => mkdir(sys, path)?,
        MountOp::FileHost { path } => sys
            .touch(path)
            .map_err(|e| RunError::sys(format!("can't create: {}", path.display()), e))?,
        MountOp::CopyAttrsHost { from, to } => sys.copy_attrs(from, to)?,
        MountOp::Overlay {
            lower,
            upper,
            work,
            dst,
        } => overlay(
            sys,
            std::slice::from_ref(lower),
            Some((upper, work)),
            dst,
            "--write-fake needs unprivileged overlayfs (Linux 5.11 or later)",
        )?,
        MountOp::OverlayLayers { lowers, upper, dst } => overlay(
            sys,
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
            let Some(host) = destination(sys, root, dst, *if_missing, true, mk)? else {
                return Ok(());
            };
            sys.mount(
                Some(Path::new("tmpfs")),
                host.as_path(),
                Some("tmpfs"),
                MsFlags::empty(),
                Some(OsStr::new(options)),
            )
            .map_err(|e| RunError::sys(format!("can't mount tmpfs at {}", host.display()), e))?;
        }
        MountOp::Bind {
            src,
            dst,
            if_missing,
            src_optional,
            read_only,
        } => {
            let is_dir = match sys.is_dir(src) {
                Some(d) => d,
                None if *src_optional => return Ok(()),
                None => {
                    return Err(RunError::msg(format!(
                        "can't bind: source not found: {}",
                        src.display()
                    )))
                }
            };
            let Some(host) = destination(sys, root, dst, *if_missing, is_dir, mk)? else {
                return Ok(());
            };
            sys.mount(
                Some(src.as_path()),
                host.as_path(),
                None,
                MsFlags::MS_REC | MsFlags::MS_BIND,
                None,
            )
            .map_err(|e| {
                RunError::sys(
                    format!("can't bind {} to {}", src.display(), host.display()),
                    e,
                )
            })?;
            if *read_only {
                remount_ro(
                    sys,
                    &host,
                    &format!("can't re-mount read-only: {}", host.display()),
                )?;
            }
            mk.bound.push(host);
        }
        MountOp::PivotRoot { new_root } => pivot(sys, new_root)?,
    }
    Ok(())
}

/// Resolve a container destination inside `root`, creating it when allowed. `None`: skip.
fn destination(
    sys: &mut impl Syscalls,
    root: &Path,
    dst: &Path,
    if_missing: IfMissing,
    want_dir: bool,
    mk: &mut Maker,
) -> Result<Option<PathBuf>, RunError> {
    let shown = || root.join(dst.strip_prefix("/").unwrap_or(dst));
    // A destination whose `..` climbs above the image, or that resolves to the image root
    // itself (`/..`, a symlink `../..`), is refused in Charliecloud's words; a bind there
    // would replace the whole image.
    if let Some(outside) = climbs_out(root, dst) {
        return Err(RunError::msg(outside_message(sys, root, &outside)));
    }
    match sys.resolve(root, dst) {
        Ok(Resolved::Exists(p)) if p == root => {
            let host = std::fs::canonicalize(shown()).unwrap_or_else(|_| shown());
            Err(RunError::msg(format!(
                "can't bind: {} not subdirectory of {}",
                host.display(),
                root.display()
            )))
        }
        Ok(Resolved::Exists(p)) => Ok(Some(p)),
        Ok(Resolved::Missing { existing, rest }) => match if_missing {
            IfMissing::Skip => Ok(None),
            IfMissing::Refuse(why) => Err(RunError::msg(why)),
            IfMissing::Error => Err(RunError::msg(format!(
                "can't bind: destination not found: {}",
                shown().display()
            ))),
            IfMissing::Create => mk
                .create_under(sys, &existing, &rest, want_dir)
                .map(Some)
                .map_err(|e| match e.errno() {
                    // Charliecloud's message names the host path (for an image run by
                    // name, a checkout in the storage directory): say what to do.
                    Some(Errno::EROFS) if e.hint().is_none() => e.with_hint(format!(
                        "the image is read-only and has no {0}: bind to a directory it has \
                         (-b SRC:/mnt), make {0} in the image (RUN mkdir -p {0}), or add -W \
                         (a writable tmpfs over the image, discarded at exit)",
                        dst.display()
                    )),
                    _ => e,
                }),
            IfMissing::TryCreate => Ok(mk.create_under(sys, &existing, &rest, want_dir).ok()),
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

/// The host path `dst` names, taken lexically from `root`, if one of its `..` components
/// climbs above `root`. Pure.
fn climbs_out(root: &Path, dst: &Path) -> Option<PathBuf> {
    let mut depth = 0usize;
    let mut out = false;
    for c in dst.components() {
        match c {
            std::path::Component::Normal(_) => depth += 1,
            std::path::Component::ParentDir if depth == 0 => out = true,
            std::path::Component::ParentDir => depth -= 1,
            _ => {}
        }
    }
    if !out {
        return None;
    }
    let mut p = root.to_path_buf();
    for c in dst.components() {
        match c {
            std::path::Component::Normal(n) => p.push(n),
            std::path::Component::ParentDir => {
                p.pop();
            }
            _ => {}
        }
    }
    Some(p)
}

/// Charliecloud's message for a destination outside the image: "can't bind: PATH not
/// subdirectory of IMAGE" when PATH exists, else "can't mkdir: FIRST not subdirectory of
/// IMAGE" naming the first missing directory on the way.
fn outside_message(sys: &mut impl Syscalls, root: &Path, outside: &Path) -> String {
    if sys.is_dir(outside).is_some() {
        return format!(
            "can't bind: {} not subdirectory of {}",
            outside.display(),
            root.display()
        );
    }
    let mut first = outside.to_path_buf();
    for a in outside.ancestors().skip(1) {
        if sys.is_dir(a).is_some() {
            break;
        }
        first = a.to_path_buf();
    }
    format!(
        "can't mkdir: {} not subdirectory of {}",
        first.display(),
        root.display()
    )
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
        sys: &mut impl Syscalls,
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
            let mut r = if file { sys.touch(&p) } else { sys.mkdir(&p) };
            if let Err(Errno::EACCES | Errno::EPERM | Errno::EROFS | Errno::EOVERFLOW) = r {
                if self.ranch.is_some() {
                    self.ranch(sys, &parent)?;
                    r = if file { sys.touch(&p) } else { sys.mkdir(&p) };
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
    fn ranch(&mut self, sys: &mut impl Syscalls, dir: &Path) -> Result<(), RunError> {
        let Some(base) = &self.ranch else {
            return Ok(());
        };
        let new = base.join(format!("ranch.{}", self.ranches));
        self.ranches += 1;
        mkdir(sys, base)?;
        mkdir(sys, &new)?;
        let orig = new.join(".orig");
        mkdir(sys, &orig)?;
        crate::verbose!("symlink ranch for {}", dir.display());
        sys.mount(
            Some(dir),
            orig.as_path(),
            None,
            MsFlags::MS_REC | MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| RunError::sys(format!("can't bind {} for ranch", dir.display()), e))?;
        for name in sys.list(dir)? {
            sys.symlink(&Path::new(".orig").join(&name), &new.join(&name))
                .map_err(|e| {
                    RunError::sys(format!("can't symlink in ranch: {}", new.display()), e)
                })?;
        }
        if let Some(mode) = sys.mode(&orig) {
            let _ = sys.chmod(&new, mode | 0o200);
        }
        sys.mount(
            Some(new.as_path()),
            dir,
            None,
            MsFlags::MS_REC | MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| RunError::sys(format!("can't overmount {}", dir.display()), e))?;
        Ok(())
    }
}

fn mkdir(sys: &mut impl Syscalls, p: &Path) -> Result<(), RunError> {
    sys.mkdir(p)
        .map_err(|e| RunError::sys(format!("can't mkdir: {}", p.display()), e))
}

/// The flags a read-only remount of a mount with statvfs flags `f` must pass: the
/// kernel locks nosuid, nodev, noexec and the atime flags of a mount inherited from a more
/// privileged namespace (mount_namespaces(7)); a remount that omits them gets EPERM.
fn remount_ro_flags(f: FsFlags) -> MsFlags {
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
    flags
}

/// Remount a bind read-only, repeating the flags the kernel locks (see
/// [`remount_ro_flags`]). `what` is the error message on failure.
fn remount_ro(sys: &mut impl Syscalls, path: &Path, what: &str) -> Result<(), RunError> {
    let f = sys
        .mount_flags(path)
        .map_err(|e| RunError::sys(format!("can't statvfs: {}", path.display()), e))?;
    if f.contains(FsFlags::ST_RDONLY) {
        // Already read-only (e.g. SquashFS, a read-only bind): nothing to do.
        return Ok(());
    }
    sys.mount(None, path, None, remount_ro_flags(f), None)
        .map_err(|e| RunError::sys(what, e))
}

/// pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves the
/// new root (pivot_root(2), "NOTES").
fn pivot(sys: &mut impl Syscalls, new_root: &Path) -> Result<(), RunError> {
    sys.chdir(new_root).map_err(|e| {
        RunError::sys(
            format!("can't chdir into new root: {}", new_root.display()),
            e,
        )
    })?;
    let here = Path::new(".");
    sys.pivot_root(here, here)
        .map_err(|e| RunError::sys("can't pivot_root(2)", e))?;
    sys.umount_detach(here)
        .map_err(|e| RunError::sys("can't detach old root", e))?;
    sys.chdir(Path::new("/"))
        .map_err(|e| RunError::sys("can't chdir to /", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn bind_destination_climbing_above_the_image_is_named_lexically() {
        let root = Path::new("/img/dir/chtest");
        assert_eq!(climbs_out(root, Path::new("/mnt/0")), None);
        assert_eq!(climbs_out(root, Path::new("/mnt/../etc")), None);
        assert_eq!(
            climbs_out(root, Path::new("/..")),
            Some(PathBuf::from("/img/dir"))
        );
        assert_eq!(
            climbs_out(root, Path::new("/../doesnotexist/a")),
            Some(PathBuf::from("/img/dir/doesnotexist/a"))
        );
        assert_eq!(
            climbs_out(root, Path::new("/mnt/../../x")),
            Some(PathBuf::from("/img/dir/x"))
        );
    }

    /// One mount(2) call as the fake records it.
    fn m(
        src: Option<&str>,
        dst: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> String {
        format!(
            "mount {} {dst} {} {flags:?} {}",
            src.unwrap_or("-"),
            fstype.unwrap_or("-"),
            data.unwrap_or("-")
        )
    }

    /// A system that records the calls that change it, knows which host paths exist, and
    /// fails the first call whose record starts with `fail`.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        /// Host path to whether it is a directory.
        exists: BTreeMap<PathBuf, bool>,
        /// Mounts whose statvfs flags are asked for: their flags (default: none).
        flags: BTreeMap<PathBuf, FsFlags>,
        fail: Option<(String, Errno)>,
    }

    impl Fake {
        fn with(dirs: &[&str], files: &[&str]) -> Fake {
            let mut f = Fake::default();
            for d in dirs {
                f.exists.insert(PathBuf::from(d), true);
            }
            for p in files {
                f.exists.insert(PathBuf::from(p), false);
            }
            f
        }

        fn call(&mut self, c: String) -> Result<(), Errno> {
            let failed = self
                .fail
                .as_ref()
                .filter(|(prefix, _)| c.starts_with(prefix.as_str()))
                .map(|(_, e)| *e);
            self.calls.push(c);
            match failed {
                Some(e) => {
                    self.fail = None;
                    Err(e)
                }
                None => Ok(()),
            }
        }
    }

    impl Syscalls for Fake {
        fn mount(
            &mut self,
            src: Option<&Path>,
            dst: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&OsStr>,
        ) -> Result<(), Errno> {
            let src = src.map(|s| s.display().to_string());
            let data = data.map(|d| d.to_string_lossy());
            self.call(m(
                src.as_deref(),
                &dst.display().to_string(),
                fstype,
                flags,
                data.as_deref(),
            ))
        }
        fn mount_flags(&mut self, path: &Path) -> Result<FsFlags, Errno> {
            self.call(format!("statvfs {}", path.display()))?;
            Ok(self.flags.get(path).copied().unwrap_or(FsFlags::empty()))
        }
        fn mkdir(&mut self, path: &Path) -> Result<(), Errno> {
            self.call(format!("mkdir {}", path.display()))?;
            self.exists.insert(path.to_path_buf(), true);
            Ok(())
        }
        fn touch(&mut self, path: &Path) -> Result<(), Errno> {
            self.call(format!("touch {}", path.display()))?;
            self.exists.entry(path.to_path_buf()).or_insert(false);
            Ok(())
        }
        fn is_dir(&mut self, path: &Path) -> Option<bool> {
            self.exists.get(path).copied()
        }
        fn resolve(&mut self, root: &Path, dst: &Path) -> Result<Resolved, ResolveError> {
            // No symlinks in the fake: the longest existing prefix.
            let rel: Vec<OsString> = dst
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n.to_os_string()),
                    _ => None,
                })
                .collect();
            let mut existing = root.to_path_buf();
            for (i, c) in rel.iter().enumerate() {
                let next = existing.join(c);
                if !self.exists.contains_key(&next) {
                    return Ok(Resolved::Missing {
                        existing,
                        rest: rel[i..].to_vec(),
                    });
                }
                existing = next;
            }
            Ok(Resolved::Exists(existing))
        }
        fn copy_attrs(&mut self, from: &Path, to: &Path) -> Result<(), RunError> {
            self.call(format!("copy_attrs {} {}", from.display(), to.display()))
                .map_err(|e| RunError::sys("can't copy attributes", e))
        }
        fn list(&mut self, dir: &Path) -> Result<Vec<OsString>, RunError> {
            Ok(self
                .exists
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
                .collect())
        }
        fn symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno> {
            self.call(format!("symlink {} {}", target.display(), link.display()))
        }
        fn mode(&mut self, path: &Path) -> Option<u32> {
            self.exists.contains_key(path).then_some(0o555)
        }
        fn chmod(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
            self.call(format!("chmod {} {mode:o}", path.display()))
        }
        fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
            self.call(format!("chdir {}", path.display()))
        }
        fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
            self.call(format!(
                "pivot_root {} {}",
                new_root.display(),
                put_old.display()
            ))
        }
        fn umount_detach(&mut self, path: &Path) -> Result<(), Errno> {
            self.call(format!("umount_detach {}", path.display()))
        }
    }

    fn bind(src: &str, dst: &str, if_missing: IfMissing, read_only: bool) -> MountOp {
        MountOp::Bind {
            src: src.into(),
            dst: dst.into(),
            if_missing,
            src_optional: false,
            read_only,
        }
    }

    /// A small read-only plan: root made a read-only mount point, a system bind, a
    /// tmpfs, a user bind whose mount point is created, then pivot_root.
    fn plan() -> Vec<MountOp> {
        vec![
            MountOp::MakeRootPrivate,
            MountOp::BindSelf {
                path: "/img".into(),
            },
            MountOp::RemountReadOnly {
                path: "/img".into(),
            },
            bind("/dev", "/dev", IfMissing::Error, false),
            MountOp::Tmpfs {
                dst: "/tmp".into(),
                options: "mode=1777".into(),
                if_missing: IfMissing::Error,
            },
            bind("/data", "/mnt/data", IfMissing::Create, true),
            MountOp::PivotRoot {
                new_root: "/img".into(),
            },
        ]
    }

    fn system() -> Fake {
        let mut f = Fake::with(
            &["/img", "/img/dev", "/img/tmp", "/img/mnt", "/dev", "/data"],
            &[],
        );
        f.flags.insert(
            "/img".into(),
            FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_RELATIME,
        );
        f
    }

    #[test]
    fn a_plan_is_applied_in_order_ending_with_pivot_root() {
        let mut f = system();
        apply_with(&mut f, &plan(), Path::new("/img"), None).expect("apply");
        let rec = MsFlags::MS_REC;
        let bind = MsFlags::MS_REC | MsFlags::MS_BIND;
        let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        assert_eq!(
            f.calls,
            vec![
                m(None, "/", None, rec | MsFlags::MS_PRIVATE, None),
                m(Some("/img"), "/img", None, bind, None),
                "statvfs /img".to_string(),
                // The flags the kernel locks are repeated (mount_namespaces(7)).
                m(
                    None,
                    "/img",
                    None,
                    ro | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME,
                    None
                ),
                m(Some("/dev"), "/img/dev", None, bind, None),
                m(
                    Some("tmpfs"),
                    "/img/tmp",
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some("mode=1777")
                ),
                "mkdir /img/mnt/data".to_string(),
                m(Some("/data"), "/img/mnt/data", None, bind, None),
                "statvfs /img/mnt/data".to_string(),
                m(None, "/img/mnt/data", None, ro, None),
                "chdir /img".to_string(),
                "pivot_root . .".to_string(),
                "umount_detach .".to_string(),
                "chdir /".to_string(),
            ]
        );
    }

    #[test]
    fn a_failure_part_way_stops_there_and_names_the_step() {
        let mut f = system();
        f.fail = Some(("mount /dev /img/dev".into(), Errno::EACCES));
        let e = apply_with(&mut f, &plan(), Path::new("/img"), None).expect_err("fails");
        assert_eq!(e.message(), "can't bind /dev to /img/dev");
        assert_eq!(e.errno(), Some(Errno::EACCES));
        // Nothing after the failing call: no tmpfs, no pivot_root.
        assert!(
            f.calls
                .last()
                .expect("calls")
                .starts_with("mount /dev /img/dev"),
            "{:?}",
            f.calls
        );
        assert_eq!(f.calls.len(), 5, "{:?}", f.calls);

        // A failing mkdir of a mount point names the path it could not create.
        let mut f = system();
        f.fail = Some(("mkdir /img/mnt/data".into(), Errno::EROFS));
        let e = apply_with(&mut f, &plan(), Path::new("/img"), None).expect_err("fails");
        assert_eq!(e.message(), "can't mkdir: /img/mnt/data");
        assert_eq!(
            f.calls.last().map(String::as_str),
            Some("mkdir /img/mnt/data")
        );

        // So does a missing destination, before any call is made for it.
        let mut f = system();
        f.exists.remove(Path::new("/img/dev"));
        let e = apply_with(&mut f, &plan(), Path::new("/img"), None).expect_err("fails");
        assert_eq!(e.message(), "can't bind: destination not found: /img/dev");
        assert_eq!(f.calls.len(), 4, "{:?}", f.calls);
    }

    #[test]
    fn read_only_mounts_are_not_remounted_and_optional_sources_are_skipped() {
        let mut f = system();
        f.flags.insert("/img".into(), FsFlags::ST_RDONLY);
        let ops = [
            MountOp::RemountReadOnly {
                path: "/img".into(),
            },
            MountOp::Bind {
                src: "/nonexistent".into(),
                dst: "/etc/x".into(),
                if_missing: IfMissing::Skip,
                src_optional: true,
                read_only: false,
            },
        ];
        apply_with(&mut f, &ops, Path::new("/img"), None).expect("apply");
        assert_eq!(f.calls, vec!["statvfs /img".to_string()]);
    }

    #[test]
    fn mount_points_are_never_created_inside_an_earlier_bind() {
        let mut f = system();
        let ops = [
            bind("/data", "/mnt", IfMissing::Error, false),
            bind("/data", "/mnt/inner", IfMissing::Create, false),
        ];
        let e = apply_with(&mut f, &ops, Path::new("/img"), None).expect_err("refused");
        assert_eq!(
            e.message(),
            "can't mkdir: /img/mnt/inner under existing bind-mount /img/mnt"
        );
        assert!(
            !f.calls.iter().any(|c| c.starts_with("mkdir")),
            "{:?}",
            f.calls
        );
    }

    #[test]
    fn an_unwritable_directory_becomes_a_symlink_ranch_with_write_fake() {
        let mut f = Fake::with(&["/st", "/st/merged", "/st/merged/opt", "/data"], &[]);
        f.exists.insert("/st/merged/opt/tool".into(), false);
        f.fail = Some(("mkdir /st/merged/opt/new".into(), Errno::EACCES));
        let ops = [bind("/data", "/opt/new", IfMissing::Create, false)];
        apply_with(
            &mut f,
            &ops,
            Path::new("/st/merged"),
            Some(Path::new("/st/ranch")),
        )
        .expect("apply");
        let bind = MsFlags::MS_REC | MsFlags::MS_BIND;
        assert_eq!(
            f.calls,
            vec![
                "mkdir /st/merged/opt/new".to_string(),
                "mkdir /st/ranch".to_string(),
                "mkdir /st/ranch/ranch.0".to_string(),
                "mkdir /st/ranch/ranch.0/.orig".to_string(),
                m(
                    Some("/st/merged/opt"),
                    "/st/ranch/ranch.0/.orig",
                    None,
                    bind,
                    None
                ),
                "symlink .orig/tool /st/ranch/ranch.0/tool".to_string(),
                "chmod /st/ranch/ranch.0 755".to_string(),
                m(
                    Some("/st/ranch/ranch.0"),
                    "/st/merged/opt",
                    None,
                    bind,
                    None
                ),
                "mkdir /st/merged/opt/new".to_string(),
                m(Some("/data"), "/st/merged/opt/new", None, bind, None),
            ]
        );
    }
}
