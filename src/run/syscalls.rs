//! The system calls that perform a mount plan, behind the [`Syscalls`] trait:
//! [`super::setup::apply`] makes every call through it, [`Host`] makes them for real, and
//! unit tests use a recording fake to check that a plan is applied in order and that a
//! failure part-way stops there and names the failing step.
//!
//! The methods are the kernel's operations, not decisions: what to mount where, what to
//! create and when to give up are decided in [`super::setup`] and [`super::plan`]. No
//! `unsafe` here (it lives only in [`super::sys`]).

use super::error::RunError;
use super::resolve::{resolve, ResolveError, Resolved};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::FsFlags;
use std::ffi::{OsStr, OsString};
use std::path::Path;

/// What performing a mount plan asks of the system.
pub trait Syscalls {
    /// mount(2).
    fn mount(
        &mut self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> Result<(), Errno>;
    /// The flags of the mount holding `path` (statvfs(3)).
    fn mount_flags(&mut self, path: &Path) -> Result<FsFlags, Errno>;
    /// mkdir(2) with mode 0755; an existing entry is not an error.
    fn mkdir(&mut self, path: &Path) -> Result<(), Errno>;
    /// An empty file (mode 0644) unless an entry exists there.
    fn touch(&mut self, path: &Path) -> Result<(), Errno>;
    /// `Some(is a directory)` if `path` exists (following symlinks), else `None`.
    fn is_dir(&mut self, path: &Path) -> Option<bool>;
    /// Resolve container path `dst` inside host directory `root` ([`resolve`]).
    fn resolve(&mut self, root: &Path, dst: &Path) -> Result<Resolved, ResolveError>;
    /// Give `to` the permission bits, access and modification times of `from`.
    fn copy_attrs(&mut self, from: &Path, to: &Path) -> Result<(), RunError>;
    /// The names in directory `dir`.
    fn list(&mut self, dir: &Path) -> Result<Vec<OsString>, RunError>;
    /// symlink(2): a link at `link` pointing to `target`.
    fn symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno>;
    /// The permission bits of `path` (following symlinks), if it exists.
    fn mode(&mut self, path: &Path) -> Option<u32>;
    /// chmod(2).
    fn chmod(&mut self, path: &Path, mode: u32) -> Result<(), Errno>;
    /// chdir(2).
    fn chdir(&mut self, path: &Path) -> Result<(), Errno>;
    /// pivot_root(2).
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    /// umount2(2) with `MNT_DETACH`.
    fn umount_detach(&mut self, path: &Path) -> Result<(), Errno>;
}

/// The real system.
pub struct Host;

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Syscalls for Host {
    fn mount(
        &mut self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&OsStr>,
    ) -> Result<(), Errno> {
        nix::mount::mount(src, dst, fstype, flags, data)
    }

    fn mount_flags(&mut self, path: &Path) -> Result<FsFlags, Errno> {
        nix::sys::statvfs::statvfs(path).map(|s| s.flags())
    }

    fn mkdir(&mut self, path: &Path) -> Result<(), Errno> {
        match nix::unistd::mkdir(path, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn touch(&mut self, path: &Path) -> Result<(), Errno> {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(errno(&e)),
        }
    }

    fn is_dir(&mut self, path: &Path) -> Option<bool> {
        std::fs::metadata(path).ok().map(|m| m.is_dir())
    }

    fn resolve(&mut self, root: &Path, dst: &Path) -> Result<Resolved, ResolveError> {
        resolve(root, dst)
    }

    fn copy_attrs(&mut self, from: &Path, to: &Path) -> Result<(), RunError> {
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

    fn list(&mut self, dir: &Path) -> Result<Vec<OsString>, RunError> {
        let err = |e: std::io::Error| RunError::io(format!("can't list: {}", dir.display()), &e);
        std::fs::read_dir(dir)
            .map_err(err)?
            .map(|ent| ent.map(|e| e.file_name()).map_err(err))
            .collect()
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> Result<(), Errno> {
        std::os::unix::fs::symlink(target, link).map_err(|e| errno(&e))
    }

    fn mode(&mut self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    fn chmod(&mut self, path: &Path, mode: u32) -> Result<(), Errno> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| errno(&e))
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn umount_detach(&mut self, path: &Path) -> Result<(), Errno> {
        nix::mount::umount2(path, MntFlags::MNT_DETACH)
    }
}
