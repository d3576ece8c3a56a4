//! OCI image layouts (image-spec v1.1 "image layout") on disk: written from a model as one
//! gzip layer, read back layer by layer through [`super::import::apply_layer`]. Also reads
//! the `docker save` archive format (a `manifest.json` instead of `index.json`). The
//! documents themselves (config, manifest, index, digests, platforms) are [`crate::oci`]'s;
//! this module is the file-system glue: which files, opened how, written in what order.
//!
//! A layout read is untrusted: every file in it (`index.json`, blobs, `manifest.json` and
//! what it names) is opened without following symlinks, no directory on the way under the
//! layout may be a symlink, and only regular files are accepted (checked on the open
//! file), so a blob that is a symlink to `/dev/zero` or a host file, a FIFO or a device is
//! refused; JSON documents are read up to a bound ([`oci::MAX_MANIFEST`],
//! [`oci::MAX_CONFIG`]). A layer is hashed and unpacked through the same open file. The
//! layout is not expected to change while it is read.
//!
//! Written layouts are reproducible: the layer is the deterministic tar of
//! [`super::export::write_tar`] compressed by [`super::export::ParGz`] at a fixed level, the
//! JSON documents have sorted keys and no timestamps, and the archive form (`.tar`,
//! oci-archive) is a tar of the layout with fixed order, owner and mtime. Format notes:
//! docs/store-format.md ("OCI export").

use crate::error::{IoError, IoResultExt};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::config::ImageConfig;
use super::export::{self, ExportError, ParGz};
use super::import::{self, ImportError, Warnings, Whiteouts};
use super::model::{Dir, XattrPolicy};
use crate::oci::{self, ConfigDoc, Descriptor, Digest, Document, Hashing, Index, Manifest};

/// gzip level of written layers (part of the reproducibility contract: changing it changes
/// every digest).
pub const LAYER_GZIP_LEVEL: u32 = export::GZIP_LEVEL;

/// Why an OCI layout could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{path}: not an OCI image layout or docker archive: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: blob {digest} is corrupt (its content has digest {actual})")]
    Digest {
        path: PathBuf,
        digest: String,
        actual: String,
    },
    #[error(
        "can't unpack {archive} into {dir}: its files take {}{}, more than the {} free there",
        if *.exact { "" } else { "at least " },
        crate::progress::size(*.needed),
        crate::progress::size(*.free)
    )]
    NoSpace {
        archive: PathBuf,
        dir: PathBuf,
        /// Bytes of the archive's files (all of them, unless not `exact`: the archive
        /// could not be read to its end).
        needed: u64,
        exact: bool,
        /// Bytes free on `dir`'s file system before unpacking.
        free: u64,
    },
}

impl OciError {
    pub fn hint(&self) -> Option<String> {
        match self {
            OciError::NoSpace { .. } => Some(
                "make room there, or unpack the archive where there is room (tar -x) and \
                 convert that OCI layout directory, which is read where it is; a conversion \
                 to anything but ch-image unpacks under --tmp DIR (or $TMPDIR)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Bytes an archive's unpacking leaves free on the file system it unpacks into: a member
/// that would leave less stops it ([`unpack_archive`]), for the metadata of the files
/// written and whatever else writes there.
const UNPACK_RESERVE: u64 = 1 << 20;

/// Bytes free (for this user) on the file system of `dir`; `None` if statvfs(2) fails.
fn free_bytes(dir: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(dir)
        .ok()
        .map(|v| v.blocks_available() * v.fragment_size())
}

/// `root` without entries whose names start with `.wh.`: in an OCI layer such a name is a
/// whiteout, so readers would delete files instead of creating one. Returns the paths
/// dropped, for a warning.
pub fn without_whiteout_names(root: &Dir) -> (Dir, Vec<String>) {
    fn go(d: &mut Dir, prefix: &[u8], dropped: &mut Vec<String>) {
        d.children.retain(|name, node| {
            let mut p = prefix.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            if name.starts_with(b".wh.") {
                dropped.push(super::model::show(&p));
                return false;
            }
            if let super::model::Node::Dir(sub) = node {
                go(sub, &p, dropped);
            }
            true
        });
    }
    let mut out = root.clone();
    let mut dropped = Vec::new();
    go(&mut out, b"", &mut dropped);
    (out, dropped)
}

fn to_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("OCI document serializes")
}

/// The annotations of the manifest descriptor in a written `index.json`: `tag` as
/// `org.opencontainers.image.ref.name` (what skopeo and umoci select by, `oci:DIR:TAG`),
/// and the full image `name`, if known, as `io.containerd.image.name` (what `podman load`
/// and containerd name the loaded image after; without it Podman takes the tag for a
/// name, `localhost/latest:latest`). Pure.
pub fn index_annotations(tag: &str, name: Option<&str>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([(
        "org.opencontainers.image.ref.name".to_string(),
        tag.to_string(),
    )]);
    if let Some(n) = name {
        a.insert("io.containerd.image.name".into(), n.into());
    }
    a
}

/// The OCI form of an image, one layer: what `ch-convert IMAGE oci:DIR` writes and
/// `ch-image push` sends, so that both (and `ch-image inspect --provenance`) give an image
/// one manifest digest. Made by [`write_form`].
#[derive(Debug, Clone)]
pub struct OciForm {
    /// The gzip layer's digest and size.
    pub layer_digest: Digest,
    pub layer_size: u64,
    /// The config document's bytes.
    pub config: Vec<u8>,
    /// The manifest document's bytes (its digest is the image's digest).
    pub manifest: Vec<u8>,
    /// Names starting with `.wh.` left out of the layer (they are whiteouts in OCI layers).
    pub dropped: Vec<String>,
}

impl OciForm {
    /// The manifest's digest: the image's digest in OCI form.
    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }
}

/// History `created_by` of the one entry added to an image without history.
const FORM_CREATED_BY: &str = "grove";

/// Write the OCI form of `root` with config `cfg`: the layer (the deterministic tar of
/// [`export::write_tar_with`], setuid and setgid bits cleared, `.wh.` names left out,
/// compressed by [`ParGz`] at [`LAYER_GZIP_LEVEL`]) into `out`, and return `out` with the
/// documents. Pure but for `out`: the same image gives the same bytes everywhere.
pub fn write_form<W: Write>(
    repo: &gix::Repository,
    root: &Dir,
    cfg: &ImageConfig,
    out: W,
) -> Result<(W, OciForm), OciError> {
    let (root, dropped) = without_whiteout_names(root);
    // The layer: tar -> hash (diff_id) -> gzip -> hash (digest) -> out.
    let outer = Hashing::new(out);
    let inner = Hashing::new(ParGz::new(outer, LAYER_GZIP_LEVEL));
    let inner = export::write_tar_with(
        repo,
        &root,
        inner,
        export::TarOptions {
            clear_setid: true,
            ..export::TarOptions::default()
        },
    )?;
    let (gz, diff_id, _) = inner.finish();
    let outer = gz.finish().map_err(ExportError::Io)?;
    let (out, layer_digest, layer_size) = outer.finish();
    let config = ConfigDoc::from_image_config(cfg, diff_id.as_str(), FORM_CREATED_BY).to_bytes();
    let manifest = Manifest {
        config: Descriptor::new(oci::CONFIG, &Digest::of(&config), config.len() as u64),
        layers: vec![Descriptor::new(oci::LAYER_GZIP, &layer_digest, layer_size)],
        media_type: oci::MANIFEST.into(),
        schema_version: 2,
    };
    Ok((
        out,
        OciForm {
            layer_digest,
            layer_size,
            config,
            manifest: to_bytes(&manifest),
            dropped,
        },
    ))
}

/// The image's digest in OCI form ([`write_form`]), computed without writing the layer.
pub fn form_digest(
    repo: &gix::Repository,
    root: &Dir,
    cfg: &ImageConfig,
) -> Result<Digest, OciError> {
    let (_, form) = write_form(repo, root, cfg, io::sink())?;
    Ok(form.manifest_digest())
}

/// Write `root` with config `cfg` as an OCI image layout in the new directory `dir`, its
/// manifest annotated as [`index_annotations`] says: the image's [`write_form`].
pub fn write_layout(
    repo: &gix::Repository,
    root: &Dir,
    cfg: &ImageConfig,
    tag: &str,
    name: Option<&str>,
    dir: &Path,
) -> Result<(), OciError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).at("create directory", &blobs)?;
    let tmp = blobs.join(".layer.tmp");
    let f = fs::File::create(&tmp).at("create", &tmp)?;
    // A write that fails (a full disk) names the layer's file, not "the tar stream".
    let (mut file, form) = write_form(repo, root, cfg, io::BufWriter::with_capacity(1 << 20, f))
        .map_err(|e| match e {
            OciError::Export(ExportError::Io(source)) => OciError::Io(IoError {
                action: "write layer",
                path: tmp.clone(),
                source,
            }),
            e => e,
        })?;
    file.flush().at("write layer", &tmp)?;
    drop(file);
    let layer_path = dir.join(form.layer_digest.blob_path());
    fs::rename(&tmp, &layer_path).at("rename", &layer_path)?;

    let put = |data: &[u8]| -> Result<(Digest, u64), OciError> {
        let d = Digest::of(data);
        let p = dir.join(d.blob_path());
        fs::write(&p, data).at("write", &p)?;
        Ok((d, data.len() as u64))
    };
    put(&form.config)?;
    let (man_digest, man_size) = put(&form.manifest)?;
    let index = Index {
        manifests: vec![Descriptor {
            annotations: index_annotations(tag, name),
            ..Descriptor::new(oci::MANIFEST, &man_digest, man_size)
        }],
        media_type: oci::INDEX.into(),
        schema_version: 2,
    };
    let p = dir.join("index.json");
    fs::write(&p, to_bytes(&index)).at("write", &p)?;
    let p = dir.join("oci-layout");
    fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).at("write", &p)?;
    Ok(())
}

/// Tar the layout directory `dir` (as written by [`write_layout`]: regular files and
/// directories) into `out`, deterministically: names sorted, root-owned, fixed mtime.
pub fn write_archive(dir: &Path, out: &Path) -> Result<(), OciError> {
    let f = fs::File::create(out).at("create", out)?;
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, f));
    let mtime = export::fixed_mtime();
    fn add<W: Write>(
        b: &mut tar::Builder<W>,
        abs: &Path,
        rel: &Path,
        mtime: u64,
    ) -> Result<(), OciError> {
        let mut names: Vec<_> = fs::read_dir(abs)
            .at("read directory", abs)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .at("read directory", abs)?;
        names.sort();
        for n in names {
            let (a, r) = (abs.join(&n), rel.join(&n));
            let md = fs::metadata(&a).at("stat", &a)?;
            let mut h = tar::Header::new_ustar();
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            if md.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, &r, io::empty())
                    .at("write archive member", &a)?;
                add(b, &a, &r, mtime)?;
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(md.len());
                let f = fs::File::open(&a).at("open", &a)?;
                b.append_data(&mut h, &r, f)
                    .at("write archive member", &a)?;
            }
        }
        Ok(())
    }
    add(&mut b, dir, Path::new(""), mtime)?;
    let mut w = b.into_inner().at("write", out)?;
    w.flush().at("write", out)?;
    Ok(())
}

/// Unpack an archive (oci-archive or `docker save` output) into the new directory `dir`:
/// regular files and directories only, no member outside `dir`.
///
/// An archive may be compressed (zstd, gzip, …) and unpack to many times its size, and
/// `dir` is usually on a temporary file system: a plain tar whose files would leave less
/// than [`UNPACK_RESERVE`] free there is refused before anything is written (its headers
/// say what they take); otherwise a member that would (or a write that finds the disk
/// full) stops the unpacking. Either is [`OciError::NoSpace`], which says how much the
/// archive's files take in all (the rest of the headers are read for it, skipping data)
/// and how much was free.
/// The caller removes `dir`. SIGINT and SIGTERM stop it per member and per MiB written.
pub fn unpack_archive(archive: &Path, dir: &Path) -> Result<(), OciError> {
    let reader = import::open_archive(archive)?;
    fs::create_dir_all(dir).at("create directory", dir)?;
    let free_before = free_bytes(dir);
    // A plain tar says what its files take from its headers alone: one that can't fit
    // is refused before anything is written.
    if let (Some(free), Some(total)) = (free_before, plain_tar_bytes(archive)) {
        if total.saturating_add(UNPACK_RESERVE) > free {
            return Err(OciError::NoSpace {
                archive: archive.to_path_buf(),
                dir: dir.to_path_buf(),
                needed: total,
                exact: true,
                free,
            });
        }
    }
    let (reader, budget) = import::HeaderBounded::new(reader);
    let mut ar = tar::Archive::new(reader);
    let corrupt = |source| {
        OciError::Io(IoError {
            action: "read archive (truncated or corrupt?)",
            path: archive.to_path_buf(),
            source: import::escaped_io(source),
        })
    };
    // Bytes of the members unpacked so far.
    let mut unpacked = 0u64;
    let mut entries = ar.entries().map_err(corrupt)?;
    while let Some(entry) = entries.next() {
        crate::interrupt::check().at("unpack", archive)?;
        let mut entry = entry.map_err(corrupt)?;
        budget.member(&entry);
        let path = entry.path().map_err(corrupt)?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(OciError::Invalid {
                path: archive.to_path_buf(),
                reason: format!("member {} leaves the archive", shown_path(&path)),
            });
        }
        let dest = dir.join(&path);
        // Out of room: what all the archive's files take, this one and the rest included.
        let no_space = |size: u64, entries: &mut tar::Entries<'_, _>| {
            let (rest, exact) = member_bytes(entries);
            OciError::NoSpace {
                archive: archive.to_path_buf(),
                dir: dir.to_path_buf(),
                needed: unpacked + size + rest,
                exact,
                free: free_before.unwrap_or(0),
            }
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&dest).at("create directory", &dest)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                if free_bytes(dir).is_some_and(|f| size.saturating_add(UNPACK_RESERVE) > f) {
                    drop(entry);
                    return Err(no_space(size, &mut entries));
                }
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).at("create directory", p)?;
                }
                let mut f = fs::File::create(&dest).at("create", &dest)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = entry.read(&mut buf).map_err(corrupt)?;
                    if n == 0 {
                        break;
                    }
                    if let Err(source) = f.write_all(&buf[..n]) {
                        if source.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) {
                            drop(entry);
                            return Err(no_space(size, &mut entries));
                        }
                        return Err(OciError::Io(IoError {
                            action: "write",
                            path: dest.clone(),
                            source,
                        }));
                    }
                    crate::interrupt::check().at("unpack", archive)?;
                }
                unpacked += size;
            }
            // Docker's legacy layout has symlinked layer directories; blobs are files.
            _ => {}
        }
    }
    Ok(())
}

/// What the regular members of `archive` take, if it is a plain (uncompressed) ustar or
/// GNU tar, from its headers alone (seeking past the data); `None` for a compressed
/// archive or one that can't be read so (the unpacking then counts as it goes).
fn plain_tar_bytes(archive: &Path) -> Option<u64> {
    use std::io::Seek;
    let mut f = fs::File::open(archive).ok()?;
    let mut head = [0u8; 512];
    f.read_exact(&mut head).ok()?;
    if &head[257..262] != b"ustar" {
        return None;
    }
    f.rewind().ok()?;
    let (f, budget) = import::HeaderBounded::new(f);
    let mut ar = tar::Archive::new(f);
    let mut n = 0u64;
    for e in ar.entries_with_seek().ok()? {
        let e = e.ok()?;
        budget.member(&e);
        if matches!(
            e.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            n = n.saturating_add(e.size());
        }
    }
    Some(n)
}

/// Bytes of the regular members left in `entries` (headers read, data skipped), and
/// whether that is all of them (false if the archive could not be read to its end, or a
/// signal stopped the count).
fn member_bytes<R: Read>(entries: &mut tar::Entries<'_, R>) -> (u64, bool) {
    let mut n = 0u64;
    for e in entries {
        if crate::interrupt::check().is_err() {
            return (n, false);
        }
        let Ok(e) = e else { return (n, false) };
        if matches!(
            e.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            n = n.saturating_add(e.size());
        }
    }
    (n, true)
}

/// Whether the file at `path` is an uncompressed tar holding an OCI image layout at its
/// top (`oci-layout` and `index.json` members). Reads member headers only, seeking past
/// data; false for anything it cannot read.
pub fn is_oci_archive(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let (f, budget) = import::HeaderBounded::new(f);
    let mut ar = tar::Archive::new(f);
    let Ok(entries) = ar.entries_with_seek() else {
        return false;
    };
    let (mut layout, mut index) = (false, false);
    for e in entries {
        let Ok(e) = e else {
            return false;
        };
        budget.member(&e);
        let p = e.path_bytes();
        let p = p.strip_prefix(b"./").unwrap_or(&p);
        layout |= p == b"oci-layout";
        index |= p == b"index.json";
        if layout && index {
            return true;
        }
    }
    false
}

/// Whether the file at `path` is an uncompressed `docker save` archive (also what
/// `podman save --format docker-archive` writes): a top-level `manifest.json` member
/// holding a list whose first entry names a `Config` and `Layers`. A root filesystem
/// tarball has no such member. False for anything it cannot read.
pub fn is_docker_archive(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let (f, budget) = import::HeaderBounded::new(f);
    let mut ar = tar::Archive::new(f);
    let Ok(entries) = ar.entries_with_seek() else {
        return false;
    };
    for e in entries {
        let Ok(mut e) = e else {
            return false;
        };
        budget.member(&e);
        let p = e.path_bytes();
        if p.strip_prefix(b"./").unwrap_or(&p) != b"manifest.json" {
            continue;
        }
        let mut data = Vec::new();
        if (&mut e)
            .take(oci::MAX_MANIFEST)
            .read_to_end(&mut data)
            .is_err()
        {
            return false;
        }
        return serde_json::from_slice::<Vec<DockerSaveEntry>>(&data).is_ok_and(|v| !v.is_empty());
    }
    false
}

/// A path a layout or archive names (any bytes), as messages show it (`log::shown`).
fn shown_path(p: &Path) -> String {
    crate::log::shown(&p.to_string_lossy()).into_owned()
}

fn invalid(path: &Path, reason: impl Into<String>) -> OciError {
    OciError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// An entry of a `docker save` archive's `manifest.json` (a list of them; the first is
/// read).
#[derive(Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Blob `digest` of layout `dir`: the digest checked, and its path relative to `dir`.
fn blob(dir: &Path, digest: &str) -> Result<(Digest, PathBuf), OciError> {
    let d = Digest::parse(digest).map_err(|e| invalid(dir, e.to_string()))?;
    let rel = d.blob_path();
    Ok((d, rel))
}

/// Open a layer (already checked by [`open_in_layout`] and, with a digest, verified)
/// for unpacking, through the same open file: `/proc/self/fd/N` names the very file
/// checked, whatever happens to the path since.
fn open_layer(f: &fs::File, path: &Path) -> Result<Box<dyn Read + Send>, OciError> {
    use std::os::fd::AsRawFd;
    let via_fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    let p = if via_fd.exists() {
        via_fd
    } else {
        path.to_path_buf()
    };
    Ok(import::open_archive(&p)?)
}

/// Open the file `rel` (relative, as checked by [`safe_join`] or [`blob`]) of layout
/// `dir` for reading, refusing symlinks on the way (each directory under `dir` checked with
/// lstat, the file opened with `O_NOFOLLOW`) and anything but a regular file (checked with
/// fstat on the open file; `O_NONBLOCK` so that opening a FIFO does not wait for a writer).
fn open_in_layout(dir: &Path, rel: &Path) -> Result<fs::File, OciError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let path = dir.join(rel);
    let not = |what: &str| invalid(dir, format!("{}: {what}", shown_path(rel)));
    let parts: Vec<_> = rel
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let mut cur = dir.to_path_buf();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        cur.push(c);
        let m = fs::symlink_metadata(&cur).at("stat", &cur)?;
        if !m.is_dir() {
            let sub = shown_path(cur.strip_prefix(dir).unwrap_or(&cur));
            return Err(invalid(
                dir,
                format!(
                    "{sub}: not a directory{} (symlinks in a layout are not followed)",
                    if m.file_type().is_symlink() {
                        " but a symlink"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                not("a symlink, not a regular file (symlinks in a layout are not followed)")
            } else {
                IoError::new("open", &path, e).into()
            }
        })?;
    let t = f.metadata().at("stat", &path)?.file_type();
    if !t.is_file() {
        let kind = if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_dir() {
            "a directory"
        } else {
            "special"
        };
        return Err(not(&format!("{kind}, not a regular file")));
    }
    Ok(f)
}

/// Hash the open file `f` (at `path`) from its start; an error if it does not match
/// `digest`. Leaves `f` at its start again.
fn verify(dir: &Path, path: &Path, f: &mut fs::File, digest: &Digest) -> Result<(), OciError> {
    use std::io::Seek;
    f.rewind().at("seek", path)?;
    let (actual, _) = oci::hash_reader(&mut *f).at("read", path)?;
    if actual != *digest {
        return Err(OciError::Digest {
            path: dir.to_path_buf(),
            digest: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    f.rewind().at("seek", path)?;
    Ok(())
}

/// Read the rest of the open file `f` (at `path`), at most `limit` bytes.
fn read_bounded(
    dir: &Path,
    path: &Path,
    f: &mut fs::File,
    limit: u64,
) -> Result<Vec<u8>, OciError> {
    let mut data = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .at("read", path)?;
    if data.len() as u64 > limit {
        return Err(invalid(
            dir,
            format!(
                "{}: larger than {limit} bytes",
                shown_path(path.strip_prefix(dir).unwrap_or(path))
            ),
        ));
    }
    Ok(data)
}

/// Read file `rel` of layout `dir` (no symlinks, regular file, at most `limit` bytes).
fn read_file(dir: &Path, rel: &Path, limit: u64) -> Result<Vec<u8>, OciError> {
    let mut f = open_in_layout(dir, rel)?;
    read_bounded(dir, &dir.join(rel), &mut f, limit)
}

/// `data`, file `rel` of layout `dir`, as a document of type `T`.
fn parse_json<T: DeserializeOwned>(dir: &Path, rel: &Path, data: &[u8]) -> Result<T, OciError> {
    serde_json::from_slice(data)
        .map_err(|e| invalid(dir, format!("{}: invalid JSON: {e}", shown_path(rel))))
}

/// Blob `digest` of layout `dir`, verified, at most `limit` bytes.
fn read_blob(dir: &Path, digest: &str, limit: u64) -> Result<(PathBuf, Vec<u8>), OciError> {
    let (digest, rel) = blob(dir, digest)?;
    let p = dir.join(&rel);
    let mut f = open_in_layout(dir, &rel)?;
    if f.metadata().at("stat", &p)?.len() > limit {
        return Err(invalid(
            dir,
            format!("{}: larger than {limit} bytes", rel.display()),
        ));
    }
    verify(dir, &p, &mut f, &digest)?;
    let data = read_bounded(dir, &p, &mut f, limit)?;
    Ok((rel, data))
}

/// Pick the manifest for this host from an index (descending into nested indexes):
/// [`Index::select_or_first`] with the host's architecture.
fn pick_manifest(dir: &Path, index: &Index, depth: u32) -> Result<(Manifest, String), OciError> {
    let chosen = index
        .select_or_first(&oci::host_arch())
        .ok_or_else(|| invalid(dir, "index has no manifests"))?;
    let (rel, data) = read_blob(dir, &chosen.digest, oci::MAX_MANIFEST)?;
    match Document::parse(&chosen.media_type, &data)
        .map_err(|e| invalid(dir, format!("{}: {}", rel.display(), error_chain(&e))))?
    {
        Document::Manifest(m) => Ok((m, chosen.digest.clone())),
        Document::Index(_) if depth > 4 => Err(invalid(dir, "indexes nested too deep")),
        Document::Index(i) => pick_manifest(dir, &i, depth + 1),
    }
}

/// The digest (`sha256:HEX`) of the manifest [`read_layout`] reads from layout directory
/// `dir`; `None` for an unpacked `docker save` archive, which has no manifest digest.
pub fn layout_manifest(dir: &Path) -> Result<Option<String>, OciError> {
    if dir.join("index.json").symlink_metadata().is_err() {
        return Ok(None);
    }
    let rel = Path::new("index.json");
    let index: Index = parse_json(dir, rel, &read_file(dir, rel, oci::MAX_MANIFEST)?)?;
    Ok(Some(pick_manifest(dir, &index, 0)?.1))
}

/// An error and its causes, `: `-separated, for a reason text.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// The stored metadata of an image whose config document is `data` (file `rel` of `dir`).
fn image_config(dir: &Path, rel: &Path, data: &[u8]) -> Result<ImageConfig, OciError> {
    Ok(parse_json::<ConfigDoc>(dir, rel, data)?.to_image_config())
}

/// Read the image in layout directory `dir` (an OCI image layout, or an unpacked
/// `docker save` archive): its layers applied bottom first, and its config.
pub fn read_layout(
    ts: &gix::ThreadSafeRepository,
    dir: &Path,
    xattrs: XattrPolicy,
) -> Result<(Dir, ImageConfig, Warnings), OciError> {
    let (config_digest, layers): (String, Vec<(PathBuf, Option<Digest>)>) =
        if dir.join("index.json").symlink_metadata().is_ok() {
            let rel = Path::new("index.json");
            let index: Index = parse_json(dir, rel, &read_file(dir, rel, oci::MAX_MANIFEST)?)?;
            let (manifest, _) = pick_manifest(dir, &index, 0)?;
            let mut layers = Vec::new();
            for l in &manifest.layers {
                let (d, rel) = blob(dir, &l.digest)?;
                layers.push((rel, Some(d)));
            }
            (manifest.config.digest, layers)
        } else if dir.join("manifest.json").symlink_metadata().is_ok() {
            // Legacy `docker save`: [{"Config": "x.json", "Layers": ["y/layer.tar"]}].
            let rel = Path::new("manifest.json");
            let entries: Vec<DockerSaveEntry> =
                parse_json(dir, rel, &read_file(dir, rel, oci::MAX_MANIFEST)?)?;
            let first = entries
                .first()
                .ok_or_else(|| invalid(dir, "manifest.json lists no image"))?;
            if first.layers.len() > oci::MAX_LAYERS {
                return Err(invalid(
                    dir,
                    format!(
                        "manifest.json: {}",
                        oci::DocumentError::TooManyLayers {
                            n: first.layers.len(),
                            max: oci::MAX_LAYERS
                        }
                    ),
                ));
            }
            let cfg_rel = safe_join(dir, &first.config)?;
            let cfg = image_config(dir, &cfg_rel, &read_file(dir, &cfg_rel, oci::MAX_CONFIG)?)?;
            let mut root = Dir::new(0o755);
            let mut warnings = Vec::new();
            for l in &first.layers {
                let rel = safe_join(dir, l)?;
                let p = dir.join(&rel);
                let f = open_in_layout(dir, &rel)?;
                let r = open_layer(&f, &p)?;
                warnings.extend(import::apply_layer(
                    ts,
                    &mut root,
                    r,
                    &p,
                    Whiteouts::Apply,
                    xattrs,
                )?);
            }
            return Ok((root, cfg, warnings));
        } else {
            return Err(invalid(dir, "no index.json or manifest.json"));
        };
    let (cfg_rel, cfg_data) = read_blob(dir, &config_digest, oci::MAX_CONFIG)?;
    let cfg = image_config(dir, &cfg_rel, &cfg_data)?;
    let mut root = Dir::new(0o755);
    let mut warnings = Vec::new();
    for (rel, digest) in layers {
        let p = dir.join(&rel);
        let mut f = open_in_layout(dir, &rel)?;
        if let Some(d) = digest {
            verify(dir, &p, &mut f, &d)?;
        }
        let r = open_layer(&f, &p)?;
        warnings.extend(import::apply_layer(
            ts,
            &mut root,
            r,
            &p,
            Whiteouts::Apply,
            xattrs,
        )?);
    }
    Ok((root, cfg, warnings))
}

/// `rel` as a path relative to layout `dir`, refused if it leaves it.
fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, OciError> {
    let p = Path::new(rel);
    if p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && p.components().any(|c| matches!(c, Component::Normal(_)))
    {
        Ok(p.to_path_buf())
    } else {
        Err(invalid(dir, format!("path {rel:?} leaves the archive")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_the_image_for_podman() {
        let a = index_annotations("1.0", Some("bb:1.0"));
        assert_eq!(a["org.opencontainers.image.ref.name"], "1.0");
        assert_eq!(a["io.containerd.image.name"], "bb:1.0");
        assert!(!index_annotations("1.0", None).contains_key("io.containerd.image.name"));
    }

    #[test]
    fn whiteout_names_are_left_out_of_layers() {
        let mut d = Dir::new(0o755);
        d.insert(b"a/.wh.x", super::super::model::Node::Fifo { mode: 0o644 })
            .unwrap();
        d.insert(b"a/y", super::super::model::Node::Fifo { mode: 0o644 })
            .unwrap();
        let (out, dropped) = without_whiteout_names(&d);
        assert_eq!(dropped, ["a/.wh.x"]);
        assert!(out.get(b"a/y").is_some() && out.get(b"a/.wh.x").is_none());
    }

    #[test]
    fn docker_save_manifest_of_more_than_max_layers_is_refused_before_reading_a_layer() {
        let repo = tempfile::tempdir().expect("tempdir");
        gix::init_bare(repo.path()).expect("init");
        let ts = gix::open(repo.path()).expect("open").into_sync();
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = br#"{"architecture":"amd64","os":"linux","config":{}}"#;
        std::fs::write(dir.path().join("c.json"), cfg).expect("write config");
        let empty = tar::Builder::new(Vec::new()).into_inner().expect("tar");
        std::fs::write(dir.path().join("l.tar"), empty).expect("write layer");
        let manifest = |n: usize| {
            let layers = vec!["l.tar"; n];
            serde_json::json!([{"Config": "c.json", "Layers": layers}]).to_string()
        };
        let m = dir.path().join("manifest.json");
        std::fs::write(&m, manifest(oci::MAX_LAYERS)).expect("write manifest");
        read_layout(&ts, dir.path(), XattrPolicy::default()).expect("at the bound");
        std::fs::write(&m, manifest(oci::MAX_LAYERS + 1)).expect("write manifest");
        let e = read_layout(&ts, dir.path(), XattrPolicy::default())
            .map(|_| ())
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("manifest.json: image manifest lists 1025 layers"),
            "{e}"
        );
    }

    #[test]
    fn bad_digests_are_refused() {
        let dir = Path::new("/l");
        assert!(blob(dir, "sha256:../../etc/passwd").is_err());
        assert!(blob(dir, "md5:00").is_err());
        let h = "a".repeat(64);
        assert_eq!(
            blob(dir, &format!("sha256:{h}")).unwrap().1,
            Path::new("blobs/sha256").join(h)
        );
    }
}
