//! OCI image layouts (image-spec v1.1 "image layout"): written from a model as one gzip
//! layer, read back layer by layer through [`super::import::apply_layer`]. Also reads the
//! `docker save` archive format (a `manifest.json` instead of `index.json`).
//!
//! A layout read is untrusted: every file in it (`index.json`, blobs, `manifest.json` and
//! what it names) is opened without following symlinks, no directory on the way under the
//! layout may be a symlink, and only regular files are accepted (checked on the open
//! file), so a blob that is a symlink to `/dev/zero` or a host file, a FIFO or a device is
//! refused; JSON documents are read up to a bound ([`MAX_MANIFEST`], [`MAX_CONFIG`]). A
//! layer is hashed and unpacked through the same open file. The layout is not expected to
//! change while it is read.
//!
//! Written layouts are reproducible: the layer is the deterministic tar of
//! [`super::export::write_tar`] compressed by [`super::export::ParGz`] at a fixed level, the
//! JSON documents have sorted keys and no timestamps, and the archive form (`.tar`,
//! oci-archive) is a tar of the layout with fixed order, owner and mtime. Format notes:
//! docs/store-format.md ("OCI export").

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::config::{History, ImageConfig};
use super::export::{self, ExportError, ParGz};
use super::import::{self, ImportError, Warnings, Whiteouts};
use super::model::{Dir, XattrPolicy};

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// gzip level of written layers (part of the reproducibility contract: changing it changes
/// every digest).
pub const LAYER_GZIP_LEVEL: u32 = export::GZIP_LEVEL;

/// Why an OCI layout could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("can't {action}: {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> OciError + 'p {
    move |source| OciError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Largest `index.json`, `manifest.json`, index or manifest read from a layout (as from a
/// registry).
pub const MAX_MANIFEST: u64 = 16 << 20;
/// Largest image config read from a layout (as from a registry).
pub const MAX_CONFIG: u64 = 64 << 20;

/// The OCI name of the host architecture (Go's GOARCH spelling).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// The image's history as it must read in an OCI config whose files are all in one
/// layer: tools that add layers on top (Buildah, Podman) check that the non-empty
/// entries count the layers (`rootfs.diff_ids`). Every entry of `cfg.history` is kept,
/// in order, marked `empty_layer` except the last one that made a layer in Grove, which
/// stands for the single layer; with no such entry, one entry created by `fallback` is
/// appended. Pure.
pub fn layer_history(cfg: &ImageConfig, fallback: &str) -> Vec<History> {
    let mut out: Vec<History> = cfg
        .history
        .iter()
        .map(|h| History {
            created_by: h.created_by.clone(),
            empty_layer: true,
        })
        .collect();
    match cfg.history.iter().rposition(|h| !h.empty_layer) {
        Some(i) => out[i].empty_layer = false,
        None => out.push(History {
            created_by: fallback.to_string(),
            empty_layer: false,
        }),
    }
    out
}

/// `arch` (Grove's spelling, `arm64/v8`) as the OCI config's `architecture` and
/// `variant` (`arm64`, `v8`).
pub fn split_arch(arch: &str) -> (&str, Option<&str>) {
    match arch.split_once('/') {
        Some((a, v)) if !v.is_empty() => (a, Some(v)),
        Some((a, _)) => (a, None),
        None => (arch, None),
    }
}

/// The OCI image config document for `cfg` with one layer of uncompressed digest
/// `diff_id`. Pure; keys sorted, no timestamps. The history has one non-empty entry
/// ([`layer_history`]).
pub fn config_document(cfg: &ImageConfig, diff_id: &str) -> Value {
    let mut c = serde_json::Map::new();
    if !cfg.env.is_empty() {
        c.insert(
            "Env".into(),
            json!(cfg
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()),
        );
    }
    if let Some(cmd) = &cfg.cmd {
        c.insert("Cmd".into(), json!(cmd));
    }
    if let Some(ep) = &cfg.entrypoint {
        c.insert("Entrypoint".into(), json!(ep));
    }
    if !cfg.cwd.is_empty() {
        c.insert("WorkingDir".into(), json!(cfg.cwd));
    }
    if !cfg.labels.is_empty() {
        c.insert("Labels".into(), json!(cfg.labels));
    }
    if cfg.shell != ["/bin/sh", "-c"] {
        c.insert("Shell".into(), json!(cfg.shell));
    }
    let history: Vec<Value> = layer_history(cfg, "grove ch-convert")
        .iter()
        .map(|h| {
            let mut e = json!({"created_by": h.created_by});
            if h.empty_layer {
                e["empty_layer"] = json!(true);
            }
            e
        })
        .collect();
    let (arch, variant) = split_arch(cfg.arch.as_deref().unwrap_or(host_arch()));
    let mut doc = json!({
        "architecture": arch,
        "os": "linux",
        "config": Value::Object(c),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": history,
    });
    if let Some(v) = variant {
        doc["variant"] = json!(v);
    }
    doc
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

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON value serializes")
}

/// The annotations of the manifest descriptor in a written `index.json`: `tag` as
/// `org.opencontainers.image.ref.name` (what skopeo and umoci select by, `oci:DIR:TAG`),
/// and the full image `name`, if known, as `io.containerd.image.name` (what `podman load`
/// and containerd name the loaded image after; without it Podman takes the tag for a
/// name, `localhost/latest:latest`). Pure.
pub fn index_annotations(tag: &str, name: Option<&str>) -> Value {
    let mut a = json!({"org.opencontainers.image.ref.name": tag});
    if let Some(n) = name {
        a["io.containerd.image.name"] = json!(n);
    }
    a
}

/// Write `root` with config `cfg` as an OCI image layout in the new directory `dir`, its
/// manifest annotated as [`index_annotations`] says.
pub fn write_layout(
    repo: &gix::Repository,
    root: &Dir,
    cfg: &ImageConfig,
    tag: &str,
    name: Option<&str>,
    dir: &Path,
) -> Result<(), OciError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io_err("create directory", &blobs))?;
    // The layer: tar -> hash (diff_id) -> gzip -> hash (digest) -> file.
    let tmp = blobs.join(".layer.tmp");
    let f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    let outer = Hashing {
        inner: io::BufWriter::with_capacity(1 << 20, f),
        hash: Sha256::new(),
        len: 0,
    };
    let inner = Hashing {
        inner: ParGz::new(outer, LAYER_GZIP_LEVEL),
        hash: Sha256::new(),
        len: 0,
    };
    let inner = export::write_tar(repo, root, inner)?;
    let diff_id = format!("sha256:{}", hex(&inner.hash.finalize()));
    let mut outer = inner.inner.finish().map_err(io_err("write layer", &tmp))?;
    outer.flush().map_err(io_err("write layer", &tmp))?;
    let layer_digest = format!("sha256:{}", hex(&outer.hash.finalize()));
    let layer_size = outer.len;
    drop(outer.inner);
    let layer_path = blobs.join(&layer_digest["sha256:".len()..]);
    fs::rename(&tmp, &layer_path).map_err(io_err("rename", &layer_path))?;

    let put = |data: &[u8]| -> Result<(String, u64), OciError> {
        let d = sha256_digest(data);
        let p = blobs.join(&d["sha256:".len()..]);
        fs::write(&p, data).map_err(io_err("write", &p))?;
        Ok((d, data.len() as u64))
    };
    let (cfg_digest, cfg_size) = put(&to_bytes(&config_document(cfg, &diff_id)))?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
    });
    let (man_digest, man_size) = put(&to_bytes(&manifest))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": man_digest,
            "size": man_size,
            "annotations": index_annotations(tag, name),
        }],
    });
    let p = dir.join("index.json");
    fs::write(&p, to_bytes(&index)).map_err(io_err("write", &p))?;
    let p = dir.join("oci-layout");
    fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err("write", &p))?;
    Ok(())
}

/// Tar the layout directory `dir` (as written by [`write_layout`]: regular files and
/// directories) into `out`, deterministically: names sorted, root-owned, fixed mtime.
pub fn write_archive(dir: &Path, out: &Path) -> Result<(), OciError> {
    let f = fs::File::create(out).map_err(io_err("create", out))?;
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, f));
    let mtime = export::fixed_mtime();
    fn add<W: Write>(
        b: &mut tar::Builder<W>,
        abs: &Path,
        rel: &Path,
        mtime: u64,
    ) -> Result<(), OciError> {
        let mut names: Vec<_> = fs::read_dir(abs)
            .map_err(io_err("read directory", abs))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err("read directory", abs))?;
        names.sort();
        for n in names {
            let (a, r) = (abs.join(&n), rel.join(&n));
            let md = fs::metadata(&a).map_err(io_err("stat", &a))?;
            let mut h = tar::Header::new_ustar();
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            if md.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, &r, io::empty())
                    .map_err(io_err("write archive member", &a))?;
                add(b, &a, &r, mtime)?;
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(md.len());
                let f = fs::File::open(&a).map_err(io_err("open", &a))?;
                b.append_data(&mut h, &r, f)
                    .map_err(io_err("write archive member", &a))?;
            }
        }
        Ok(())
    }
    add(&mut b, dir, Path::new(""), mtime)?;
    let mut w = b.into_inner().map_err(io_err("write", out))?;
    w.flush().map_err(io_err("write", out))?;
    Ok(())
}

/// Unpack an archive (oci-archive or `docker save` output) into the new directory `dir`:
/// regular files and directories only, no member outside `dir`.
pub fn unpack_archive(archive: &Path, dir: &Path) -> Result<(), OciError> {
    let reader = import::open_archive(archive)?;
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let mut ar = tar::Archive::new(reader);
    let corrupt = |source| OciError::Io {
        action: "read archive (truncated or corrupt?)",
        path: archive.to_path_buf(),
        source,
    };
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(OciError::Invalid {
                path: archive.to_path_buf(),
                reason: format!("member {} leaves the archive", path.display()),
            });
        }
        let dest = dir.join(&path);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&dest).map_err(io_err("create directory", &dest))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).map_err(io_err("create directory", p))?;
                }
                let mut f = fs::File::create(&dest).map_err(io_err("create", &dest))?;
                io::copy(&mut entry, &mut f).map_err(corrupt)?;
            }
            // Docker's legacy layout has symlinked layer directories; blobs are files.
            _ => {}
        }
    }
    Ok(())
}

/// Whether the file at `path` is an uncompressed tar holding an OCI image layout at its
/// top (`oci-layout` and `index.json` members). Reads member headers only, seeking past
/// data; false for anything it cannot read.
pub fn is_oci_archive(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let mut ar = tar::Archive::new(f);
    let Ok(entries) = ar.entries_with_seek() else {
        return false;
    };
    let (mut layout, mut index) = (false, false);
    for e in entries {
        let Ok(e) = e else {
            return false;
        };
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
    let mut ar = tar::Archive::new(f);
    let Ok(entries) = ar.entries_with_seek() else {
        return false;
    };
    for e in entries {
        let Ok(mut e) = e else {
            return false;
        };
        let p = e.path_bytes();
        if p.strip_prefix(b"./").unwrap_or(&p) != b"manifest.json" {
            continue;
        }
        let mut data = Vec::new();
        if (&mut e).take(MAX_MANIFEST).read_to_end(&mut data).is_err() {
            return false;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&data) else {
            return false;
        };
        return v[0]["Config"].is_string() && v[0]["Layers"].is_array();
    }
    false
}

fn invalid(path: &Path, reason: impl Into<String>) -> OciError {
    OciError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Path of blob `digest` in a layout, relative to it; refuses digests that are not sha256
/// hex.
fn blob_path(digest: &str) -> Result<PathBuf, String> {
    match digest.split_once(':') {
        Some(("sha256", h)) if h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()) => {
            Ok(Path::new("blobs/sha256").join(h))
        }
        _ => Err(format!("unsupported digest {digest:?}")),
    }
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

/// Open the file `rel` (relative, as checked by [`safe_join`] or [`blob_path`]) of layout
/// `dir` for reading, refusing symlinks on the way (each directory under `dir` checked with
/// lstat, the file opened with `O_NOFOLLOW`) and anything but a regular file (checked with
/// fstat on the open file; `O_NONBLOCK` so that opening a FIFO does not wait for a writer).
fn open_in_layout(dir: &Path, rel: &Path) -> Result<fs::File, OciError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let path = dir.join(rel);
    let not = |what: &str| invalid(dir, format!("{}: {what}", rel.display()));
    let parts: Vec<_> = rel
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let mut cur = dir.to_path_buf();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        cur.push(c);
        let m = fs::symlink_metadata(&cur).map_err(io_err("stat", &cur))?;
        if !m.is_dir() {
            let sub = cur.strip_prefix(dir).unwrap_or(&cur).display().to_string();
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
                io_err("open", &path)(e)
            }
        })?;
    let t = f.metadata().map_err(io_err("stat", &path))?.file_type();
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
fn verify(dir: &Path, path: &Path, f: &mut fs::File, digest: &str) -> Result<(), OciError> {
    use std::io::Seek;
    f.rewind().map_err(io_err("seek", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let actual = format!("sha256:{}", hex(&h.finalize()));
    if actual != digest {
        return Err(OciError::Digest {
            path: dir.to_path_buf(),
            digest: digest.into(),
            actual,
        });
    }
    f.rewind().map_err(io_err("seek", path))?;
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
        .map_err(io_err("read", path))?;
    if data.len() as u64 > limit {
        return Err(invalid(
            dir,
            format!(
                "{}: larger than {limit} bytes",
                path.strip_prefix(dir).unwrap_or(path).display()
            ),
        ));
    }
    Ok(data)
}

/// Read JSON file `rel` of layout `dir` (no symlinks, regular file, at most `limit` bytes).
fn read_json(dir: &Path, rel: &Path, limit: u64) -> Result<Value, OciError> {
    let mut f = open_in_layout(dir, rel)?;
    let path = dir.join(rel);
    let data = read_bounded(dir, &path, &mut f, limit)?;
    parse_json(dir, &path, &data)
}

fn parse_json(dir: &Path, path: &Path, data: &[u8]) -> Result<Value, OciError> {
    serde_json::from_slice(data).map_err(|e| {
        invalid(
            dir,
            format!(
                "{}: invalid JSON: {e}",
                path.strip_prefix(dir).unwrap_or(path).display()
            ),
        )
    })
}

fn read_blob_json(dir: &Path, digest: &str, limit: u64) -> Result<Value, OciError> {
    let rel = blob_path(digest).map_err(|reason| invalid(dir, reason))?;
    let p = dir.join(&rel);
    let mut f = open_in_layout(dir, &rel)?;
    if f.metadata().map_err(io_err("stat", &p))?.len() > limit {
        return Err(invalid(
            dir,
            format!("{}: larger than {limit} bytes", rel.display()),
        ));
    }
    verify(dir, &p, &mut f, digest)?;
    let data = read_bounded(dir, &p, &mut f, limit)?;
    parse_json(dir, &p, &data)
}

fn str_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(String::from))
        .collect()
}

/// Pick the manifest for this host from an index (descending into nested indexes):
/// the only one, else the first whose platform is linux and the host architecture, else
/// the first.
fn pick_manifest(dir: &Path, index: &Value, depth: u32) -> Result<Value, OciError> {
    let list = index["manifests"]
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| invalid(dir, "index has no manifests"))?;
    let chosen = list
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch())
        .unwrap_or(&list[0]);
    let digest = chosen["digest"]
        .as_str()
        .ok_or_else(|| invalid(dir, "manifest descriptor without digest"))?;
    let doc = read_blob_json(dir, digest, MAX_MANIFEST)?;
    let mt = doc["mediaType"].as_str().or(chosen["mediaType"].as_str());
    if matches!(mt, Some(MEDIA_INDEX) | Some(DOCKER_MANIFEST_LIST))
        || doc.get("manifests").is_some()
    {
        if depth > 4 {
            return Err(invalid(dir, "indexes nested too deep"));
        }
        return pick_manifest(dir, &doc, depth + 1);
    }
    Ok(doc)
}

/// Fill an [`ImageConfig`] from an OCI (or Docker) image config document.
pub fn image_config(doc: &Value) -> ImageConfig {
    let mut cfg = ImageConfig::default();
    let c = &doc["config"];
    if let Some(env) = str_list(&c["Env"]) {
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            cfg.set_env(k, v);
        }
    }
    if let Some(wd) = c["WorkingDir"].as_str().filter(|s| !s.is_empty()) {
        cfg.cwd = wd.to_string();
    }
    cfg.cmd = str_list(&c["Cmd"]);
    cfg.entrypoint = str_list(&c["Entrypoint"]);
    if let Some(sh) = str_list(&c["Shell"]).filter(|s| !s.is_empty()) {
        cfg.shell = sh;
    }
    if let Some(labels) = c["Labels"].as_object() {
        cfg.labels = labels
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect::<BTreeMap<_, _>>();
    }
    cfg.arch = doc["architecture"].as_str().map(|a| {
        match doc["variant"].as_str().filter(|v| !v.is_empty()) {
            Some(v) => format!("{a}/{v}"),
            None => a.to_string(),
        }
    });
    if let Some(h) = doc["history"].as_array() {
        cfg.history = h
            .iter()
            .map(|e| History {
                created_by: e["created_by"].as_str().unwrap_or("").to_string(),
                empty_layer: e["empty_layer"].as_bool().unwrap_or(false),
            })
            .collect();
    }
    cfg
}

/// Read the image in layout directory `dir` (an OCI image layout, or an unpacked
/// `docker save` archive): its layers applied bottom first, and its config.
pub fn read_layout(
    ts: &gix::ThreadSafeRepository,
    dir: &Path,
    xattrs: XattrPolicy,
) -> Result<(Dir, ImageConfig, Warnings), OciError> {
    let (config_digest, layers): (String, Vec<(PathBuf, Option<String>)>) =
        if dir.join("index.json").symlink_metadata().is_ok() {
            let index = read_json(dir, Path::new("index.json"), MAX_MANIFEST)?;
            let manifest = pick_manifest(dir, &index, 0)?;
            let cd = manifest["config"]["digest"]
                .as_str()
                .ok_or_else(|| invalid(dir, "manifest without config"))?
                .to_string();
            let mut layers = Vec::new();
            for l in manifest["layers"]
                .as_array()
                .ok_or_else(|| invalid(dir, "manifest without layers"))?
            {
                let d = l["digest"]
                    .as_str()
                    .ok_or_else(|| invalid(dir, "layer without digest"))?;
                layers.push((
                    blob_path(d).map_err(|reason| invalid(dir, reason))?,
                    Some(d.to_string()),
                ));
            }
            (cd, layers)
        } else if dir.join("manifest.json").symlink_metadata().is_ok() {
            // Legacy `docker save`: [{"Config": "x.json", "Layers": ["y/layer.tar"]}].
            let m = read_json(dir, Path::new("manifest.json"), MAX_MANIFEST)?;
            let first = &m[0];
            let cfg_path = first["Config"]
                .as_str()
                .ok_or_else(|| invalid(dir, "manifest.json without Config"))?;
            let cfg = read_json(dir, &safe_join(dir, cfg_path)?, MAX_CONFIG)?;
            let cfg = image_config(&cfg);
            let mut root = Dir::new(0o755);
            let mut warnings = Vec::new();
            for l in str_list(&first["Layers"])
                .ok_or_else(|| invalid(dir, "manifest.json without Layers"))?
            {
                let rel = safe_join(dir, &l)?;
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
    let cfg = image_config(&read_blob_json(dir, &config_digest, MAX_CONFIG)?);
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
    fn config_document_maps_the_image_config() {
        let mut cfg = ImageConfig::default();
        cfg.set_env("PATH", "/bin");
        cfg.cmd = Some(vec!["sh".into()]);
        cfg.cwd = "/work".into();
        cfg.labels.insert("a".into(), "b".into());
        cfg.arch = Some("arm64".into());
        let doc = config_document(&cfg, "sha256:00");
        assert_eq!(doc["architecture"], "arm64");
        assert_eq!(doc["os"], "linux");
        assert_eq!(doc["config"]["Env"][0], "PATH=/bin");
        assert_eq!(doc["rootfs"]["diff_ids"][0], "sha256:00");
        assert!(doc.get("created").is_none());
        let back = image_config(&doc);
        assert_eq!(back.env, cfg.env);
        assert_eq!(back.cmd, cfg.cmd);
        assert_eq!(back.cwd, cfg.cwd);
        assert_eq!(back.labels, cfg.labels);
        assert_eq!(back.arch, cfg.arch);
    }

    fn hist(entries: &[(&str, bool)]) -> Vec<History> {
        entries
            .iter()
            .map(|(c, e)| History {
                created_by: c.to_string(),
                empty_layer: *e,
            })
            .collect()
    }

    #[test]
    fn history_has_one_non_empty_entry_for_the_one_layer() {
        let cfg = ImageConfig {
            history: hist(&[
                ("ch-image import", false),
                ("ENV A=1", true),
                ("RUN a", false),
                ("RUN b", false),
                ("CMD x", true),
            ]),
            ..Default::default()
        };
        assert_eq!(
            layer_history(&cfg, "fb"),
            hist(&[
                ("ch-image import", true),
                ("ENV A=1", true),
                ("RUN a", true),
                ("RUN b", false),
                ("CMD x", true),
            ])
        );
        let doc = config_document(&cfg, "sha256:00");
        let h = doc["history"].as_array().expect("history");
        let non_empty = h.iter().filter(|e| e["empty_layer"] != true).count();
        assert_eq!(
            non_empty,
            doc["rootfs"]["diff_ids"].as_array().unwrap().len()
        );
        assert_eq!(h[3]["created_by"], "RUN b");
        assert!(h[3].get("empty_layer").is_none());
    }

    #[test]
    fn history_without_a_layer_entry_gets_one() {
        let mut cfg = ImageConfig::default();
        assert_eq!(layer_history(&cfg, "fb"), hist(&[("fb", false)]));
        cfg.history = hist(&[("ENV A=1", true)]);
        assert_eq!(
            layer_history(&cfg, "fb"),
            hist(&[("ENV A=1", true), ("fb", false)])
        );
    }

    #[test]
    fn architecture_variant_is_a_separate_field() {
        let mut cfg = ImageConfig {
            arch: Some("arm64/v8".into()),
            ..Default::default()
        };
        let doc = config_document(&cfg, "sha256:00");
        assert_eq!(doc["architecture"], "arm64");
        assert_eq!(doc["variant"], "v8");
        assert_eq!(image_config(&doc).arch.as_deref(), Some("arm64/v8"));
        cfg.arch = Some("amd64".into());
        assert!(config_document(&cfg, "sha256:00").get("variant").is_none());
    }

    #[test]
    fn index_names_the_image_for_podman() {
        let a = index_annotations("1.0", Some("bb:1.0"));
        assert_eq!(a["org.opencontainers.image.ref.name"], "1.0");
        assert_eq!(a["io.containerd.image.name"], "bb:1.0");
        assert!(index_annotations("1.0", None)
            .get("io.containerd.image.name")
            .is_none());
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
    fn bad_digests_are_refused() {
        assert!(blob_path("sha256:../../etc/passwd").is_err());
        assert!(blob_path("md5:00").is_err());
        assert!(blob_path(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}
