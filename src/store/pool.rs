//! The pool of checked-out files (`STORAGE/pool/`): checkouts share the inodes of the
//! files they have in common with earlier checkouts, by hard link, so that checking out
//! an image that differs by K files from one already checked out writes K files and links
//! the rest.
//!
//! A pool entry is one more name of a checkout's file: `pool/XX/OID.KEY`, where `XX` and
//! `OID` are the blob's object id (first two hex digits, then the rest) and `KEY` the
//! first 16 hex digits of a BLAKE3 hash of the file's path in the image, its mode as
//! checked out and its recorded time. Two checkouts share an inode only for the same path
//! with the same content, mode and time: a file's inode is shared between images, never
//! between two paths of one image, so a checkout's hard links are exactly the image's own
//! (and files with extended attributes or in a hard-link group are not pooled at all).
//!
//! Entries are made by linking a complete file (written, chmodded, timed) into the pool,
//! so a pool name never holds a partial file, whatever is killed when. Before a checkout
//! links an entry it checks the entry's type, mode and time against the name's (a file
//! edited by hand in some checkout moves its time, and such an entry is replaced, not
//! used); `ch-image fsck` hashes each entry's content against its object id. An entry no
//! checkout links any more (link count 1) is removed by garbage collection; a checkout
//! racing that removal writes its file instead (the link fails with ENOENT).

use crate::error::{IoError, IoResultExt};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use super::model::Mtime;

/// The pool directory of one storage directory.
#[derive(Debug, Clone)]
pub struct Pool {
    dir: PathBuf,
}

/// What [`Pool::link_to`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// `dest` is now a link to the pool's entry, of this many bytes.
    Yes(u64),
    /// No usable entry (none, a stale one removed, or the inode has as many links as the
    /// file system allows): write the file.
    No,
}

impl Pool {
    pub fn new(dir: impl Into<PathBuf>) -> Pool {
        Pool { dir: dir.into() }
    }

    /// The pool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Make the pool's 256 subdirectories unless the last one exists (so that adding an
    /// entry is one `link`). Failing is not an error: entries make their own.
    pub fn prepare(&self) {
        if self.dir.join("ff").is_dir() {
            return;
        }
        for b in 0..=255u8 {
            if fs::create_dir_all(self.dir.join(format!("{b:02x}"))).is_err() {
                return;
            }
        }
    }

    /// The entry of the file at `rel` (path in the image) with blob `oid`, checked-out
    /// `mode` and recorded `time`.
    pub fn entry(&self, rel: &[u8], oid: &ObjectId, mode: u32, time: Option<Mtime>) -> PathBuf {
        let hex = oid.to_string();
        self.dir
            .join(&hex[..2])
            .join(format!("{}.{}", &hex[2..], key(rel, mode, time)))
    }

    /// Link `name` (absent) in the directory `dir` (a handle: see
    /// [`super::checkout`]) to `entry` if the entry exists and still has the `mode` and
    /// `time` its name stands for; a stale entry is removed.
    pub fn link_to(
        &self,
        entry: &Path,
        dir: RawFd,
        name: &[u8],
        mode: u32,
        time: Option<Mtime>,
    ) -> Result<Linked, IoError> {
        let md = match fs::symlink_metadata(entry) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Linked::No),
            Err(e) => return Err(IoError::new("stat", entry, e)),
        };
        if !matches_entry(&md, mode, time) {
            crate::verbose!(
                "pool entry changed since it was made, replacing it: {}",
                entry.display()
            );
            match fs::remove_file(entry) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(IoError::new("remove", entry, e))
                }
                _ => return Ok(Linked::No),
            }
        }
        match link(None, entry, Some(dir), Path::new(OsStr::from_bytes(name))) {
            Ok(()) => Ok(Linked::Yes(md.size())),
            // Removed by a garbage collection meanwhile, the inode at the file system's
            // link limit (ext4: 65,000), or a file system without hard links: the
            // checkout writes a file of its own.
            Err(e) => {
                crate::debug!("not linking {}: {e}", entry.display());
                Ok(Linked::No)
            }
        }
    }

    /// Add the complete file `name` of the directory `dir` (a handle) to the pool as
    /// `entry`. An entry made meanwhile by another checkout wins (same content by its
    /// name); failing to add is not an error of the checkout (the file is then simply not
    /// shared). Returns whether this call made the entry.
    pub fn adopt(&self, dir: RawFd, name: &[u8], entry: &Path) -> bool {
        let name = Path::new(OsStr::from_bytes(name));
        match link(Some(dir), name, None, entry) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => entry.parent().is_some_and(|p| {
                fs::create_dir_all(p).is_ok() && link(Some(dir), name, None, entry).is_ok()
            }),
            Err(_) => false,
        }
    }

    /// Take back what [`Pool::adopt`] made for a checkout that failed, before its scratch
    /// tree goes: `entry`, if it is still the inode `ino` of device `dev` (the checkout's
    /// file) and nothing else links it (two links: the entry and that file), so that the
    /// failed checkout leaves no entry that nothing links. An entry another checkout
    /// linked meanwhile stays.
    pub fn unadopt(&self, entry: &Path, dev: u64, ino: u64) {
        let Ok(e) = fs::symlink_metadata(entry) else {
            return;
        };
        if (dev, ino) == (e.dev(), e.ino()) && e.nlink() <= 2 {
            let _ = fs::remove_file(entry);
        }
    }

    /// Remove the entries no checkout links any more (link count 1). Returns how many.
    /// Requires the exclusive lock (no checkout is being made).
    pub fn prune(&self) -> Result<usize, IoError> {
        let mut n = 0;
        for (path, md) in self.entries()? {
            if md.nlink() <= 1 {
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(IoError::new("remove", &path, e))
                    }
                    _ => n += 1,
                }
            }
        }
        for sub in read_dir_if_any(&self.dir)? {
            let _ = fs::remove_dir(sub.path());
        }
        Ok(n)
    }

    /// Every entry with its metadata (none when there is no pool yet).
    pub fn entries(&self) -> Result<Vec<(PathBuf, fs::Metadata)>, IoError> {
        let mut out = Vec::new();
        for sub in read_dir_if_any(&self.dir)? {
            let p = sub.path();
            for e in fs::read_dir(&p).at("read directory", &p)? {
                let e = e.at("read directory", &p)?;
                let md = e.metadata().at("stat", e.path())?;
                out.push((e.path(), md));
            }
        }
        Ok(out)
    }
}

/// `linkat(2)` of `from` (relative to `from_dir`, the working directory if none) as `to`,
/// not following a symlink.
fn link(from_dir: Option<RawFd>, from: &Path, to_dir: Option<RawFd>, to: &Path) -> io::Result<()> {
    nix::unistd::linkat(from_dir, from, to_dir, to, nix::fcntl::AtFlags::empty())
        .map_err(io::Error::from)
}

fn read_dir_if_any(dir: &Path) -> Result<Vec<fs::DirEntry>, IoError> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        r => r
            .at("read directory", dir)?
            .collect::<Result<Vec<_>, _>>()
            .at("read directory", dir),
    }
}

/// The object id an entry's name stands for (`XX/OID.KEY`), if it is one.
pub fn entry_oid(path: &Path) -> Option<ObjectId> {
    let sub = path.parent()?.file_name()?.to_str()?;
    let name = path.file_name()?.to_str()?;
    let (rest, key) = name.split_once('.')?;
    if key.len() != 16 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    ObjectId::from_hex(format!("{sub}{rest}").as_bytes()).ok()
}

/// The part of an entry's name that is not its object id.
fn key(rel: &[u8], mode: u32, time: Option<Mtime>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"grove-pool 1\0");
    h.update(&(rel.len() as u64).to_le_bytes());
    h.update(rel);
    h.update(&mode.to_le_bytes());
    match time {
        Some(t) => {
            h.update(&[1]);
            h.update(&t.sec.to_le_bytes());
            h.update(&t.nsec.to_le_bytes());
        }
        None => {
            h.update(&[0]);
        }
    }
    h.finalize().to_hex()[..16].to_string()
}

/// Whether an entry still is what its name says: a regular file of `mode` (permission
/// and set-id bits) and, where one is recorded, modification time `time`.
fn matches_entry(md: &fs::Metadata, mode: u32, time: Option<Mtime>) -> bool {
    md.file_type().is_file()
        && md.mode() & 0o7777 == mode & 0o7777
        && time.is_none_or(|t| md.mtime() == t.sec && md.mtime_nsec() == i64::from(t.nsec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn oid(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.as_bytes()).expect("oid")
    }

    #[test]
    fn entry_names_separate_paths_modes_and_times_of_one_blob() {
        let pool = Pool::new("/s/pool");
        let id = oid("0123456789abcdef0123456789abcdef01234567");
        let t = Some(Mtime::new(1_700_000_000, 5));
        let e = pool.entry(b"usr/bin/a", &id, 0o755, t);
        assert!(e.starts_with("/s/pool/01"));
        assert_eq!(entry_oid(&e), Some(id));
        let others = [
            pool.entry(b"usr/bin/b", &id, 0o755, t),
            pool.entry(b"usr/bin/a", &id, 0o644, t),
            pool.entry(b"usr/bin/a", &id, 0o755, Some(Mtime::new(1_700_000_000, 6))),
            pool.entry(b"usr/bin/a", &id, 0o755, None),
        ];
        for o in &others {
            assert_ne!(o, &e);
        }
        assert_eq!(pool.entry(b"usr/bin/a", &id, 0o755, t), e, "stable");
        assert_eq!(
            entry_oid(Path::new("/s/pool/01/xyz.0123456789abcdef")),
            None
        );
        assert_eq!(
            entry_oid(Path::new(
                "/s/pool/01/23456789abcdef0123456789abcdef01234567.short"
            )),
            None
        );
    }

    #[test]
    fn link_to_uses_a_good_entry_and_replaces_a_changed_one() {
        let t = tempfile::tempdir().expect("tempdir");
        let pool = Pool::new(t.path().join("pool"));
        let id = oid("0123456789abcdef0123456789abcdef01234567");
        let time = Mtime::new(1_600_000_000, 0);
        let entry = pool.entry(b"f", &id, 0o644, Some(time));
        let a = t.path().join("a");
        let dir = fs::File::open(t.path()).expect("open dir");
        let d = std::os::fd::AsRawFd::as_raw_fd(&dir);
        assert_eq!(
            pool.link_to(&entry, d, b"a", 0o644, Some(time))
                .expect("link"),
            Linked::No,
            "no entry yet"
        );
        fs::write(&a, b"data").expect("write");
        fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).expect("chmod");
        crate::store::checkout::set_time(&a, time).expect("time");
        assert!(pool.adopt(d, b"a", &entry));
        let b = t.path().join("b");
        assert_eq!(
            pool.link_to(&entry, d, b"b", 0o644, Some(time))
                .expect("link"),
            Linked::Yes(4)
        );
        assert_eq!(
            fs::metadata(&a).expect("a").ino(),
            fs::metadata(&b).expect("b").ino()
        );
        assert_eq!(pool.prune().expect("prune"), 0, "still linked");
        // Edited by hand through a checkout: the time moved, the entry is dropped.
        fs::write(&b, b"edit").expect("edit");
        let c = t.path().join("c");
        assert_eq!(
            pool.link_to(&entry, d, b"c", 0o644, Some(time))
                .expect("link"),
            Linked::No
        );
        assert!(!entry.exists());
        assert!(!c.exists());
    }

    #[test]
    fn prune_removes_entries_nothing_else_links() {
        let t = tempfile::tempdir().expect("tempdir");
        let pool = Pool::new(t.path().join("pool"));
        let id = oid("0123456789abcdef0123456789abcdef01234567");
        let entry = pool.entry(b"f", &id, 0o644, None);
        let a = t.path().join("a");
        fs::write(&a, b"x").expect("write");
        let dir = fs::File::open(t.path()).expect("open dir");
        assert!(pool.adopt(std::os::fd::AsRawFd::as_raw_fd(&dir), b"a", &entry));
        assert_eq!(pool.entries().expect("entries").len(), 1);
        fs::remove_file(&a).expect("rm");
        assert_eq!(pool.prune().expect("prune"), 1);
        assert!(pool.entries().expect("entries").is_empty());
        assert!(
            !entry.parent().expect("sub").exists(),
            "empty subdirectory removed"
        );
    }
}
