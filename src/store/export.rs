//! Export a model as a tar stream: deterministic (entries depth-first in byte order,
//! owner root:root, one fixed mtime), with the exact recorded modes, hard links as tar
//! hard links and FIFOs as FIFOs.

use std::io::{self, Write};

use super::git::{git_err, GitError};
use super::model::{Dir, Node};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("can't write tar stream")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Git(#[from] GitError),
}

/// The mtime of every exported entry: `$SOURCE_DATE_EPOCH` if set, else 0.
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
}

/// Write `root` as a tar stream (without the end-of-archive marker being skipped: the
/// builder is finished).
pub fn write_tar<W: Write>(repo: &gix::Repository, root: &Dir, out: W) -> Result<W, ExportError> {
    write_tar_with(repo, root, out, TarOptions::default())
}

/// [`write_tar`] with options.
pub fn write_tar_with<W: Write>(
    repo: &gix::Repository,
    root: &Dir,
    out: W,
    opts: TarOptions,
) -> Result<W, ExportError> {
    let mask = if opts.clear_setid { !0o6000 } else { !0 };
    let header = |kind, mode: u32, size, mtime| header(kind, mode & mask, size, mtime);
    let mtime = fixed_mtime();
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    let mut primaries: std::collections::HashMap<u32, Vec<u8>> = Default::default();
    let mut result: Result<(), ExportError> = Ok(());
    // The root directory itself, as "./".
    let mut h = header(tar::EntryType::Directory, root.mode, 0, mtime);
    b.append_data(&mut h, "./", io::empty())?;
    root.walk(&mut |rel, node| {
        if result.is_err() {
            return;
        }
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes_compat(rel));
        let r: Result<(), ExportError> = (|| {
            match node {
                Node::Dir(d) => {
                    let mut h = header(tar::EntryType::Directory, d.mode, 0, mtime);
                    b.append_data(&mut h, path, io::empty())?;
                }
                Node::File(f) => {
                    if let Some(g) = f.link_group {
                        if let Some(primary) = primaries.get(&g) {
                            let mut h = header(tar::EntryType::Link, f.mode, 0, mtime);
                            b.append_link(
                                &mut h,
                                path,
                                std::path::Path::new(std::ffi::OsStr::from_bytes_compat(primary)),
                            )?;
                            return Ok(());
                        }
                        primaries.insert(g, rel.to_vec());
                    }
                    let blob = repo
                        .find_blob(f.oid)
                        .map_err(git_err(format!("read blob {}", f.oid)))?;
                    let mut h = header(
                        tar::EntryType::Regular,
                        f.mode,
                        blob.data.len() as u64,
                        mtime,
                    );
                    b.append_data(&mut h, path, blob.data.as_slice())?;
                }
                Node::Symlink { target } => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                    b.append_link(
                        &mut h,
                        path,
                        std::path::Path::new(std::ffi::OsStr::from_bytes_compat(target)),
                    )?;
                }
                Node::Fifo { mode } => {
                    let mut h = header(tar::EntryType::Fifo, *mode, 0, mtime);
                    b.append_data(&mut h, path, io::empty())?;
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

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}
