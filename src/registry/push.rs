//! Push: an image in its OCI form ([`crate::store::oci::write_form`], the one
//! `ch-convert -o oci` writes, so both give the same manifest digest): one gzipped layer
//! (the store's deterministic tar export: owner root:root, setuid/setgid cleared, as
//! Charliecloud's man page says), an OCI config and an OCI manifest. Blobs the registry
//! already has are not uploaded again. An upload step answered with a server error or cut
//! off is tried again as a pull's GET is, a blob's from a new upload session
//! ([`Client::upload_blob`], [`Client::put_manifest`]); the failed session is deleted on
//! the registry (`DELETE` of its location, best effort, after a signal too).
//!
//! SIGINT and SIGTERM end a push through its error path (crate::interrupt): the export is
//! checked per buffer written, a transfer is cut off at once, the temporary export is
//! removed. A push that fails once it has reached the registry says which of its blobs
//! the registry has: they stay there (the registry's state is not ours to undo), and a
//! new push skips them.

use crate::error::IoResultExt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::client::{Body, Client};
use super::{RegistryError, Remote, Settings};
use crate::info;
use crate::oci::{self, Digest};
use crate::reference::Reference;
use crate::store::{import, Dir, ImageConfig, Store, WriteLock};

/// What to push: an image in the store, or an unpacked image directory.
pub enum Source<'a> {
    Image(&'a Reference),
    Dir(&'a Path),
}

/// Push `source` to `dest`. Requires the lock (for scratch space).
pub fn push(
    store: &Store,
    _lock: &WriteLock,
    source: Source<'_>,
    dest: &Reference,
    settings: &Settings,
) -> Result<String, RegistryError> {
    let (root, cfg): (Dir, ImageConfig) = match source {
        Source::Image(r) => {
            let c = store.require_image(r)?;
            store.read(c)?
        }
        Source::Dir(d) => {
            let (root, warnings) = import::import_path(store.thread_safe(), d, store.xattrs())?;
            for w in warnings {
                crate::warn!("{w}");
            }
            (root, ImageConfig::default())
        }
    };
    let remote = Remote::resolve(dest);
    info!("layer 1/1: preparing");
    let tmp = store.scratch_path("push");
    fs::create_dir_all(&tmp).at("create directory", &tmp)?;
    let result = (|| {
        let layer_path = tmp.join("layer.tar.gz");
        let f = fs::File::create(&layer_path).at("create", &layer_path)?;
        let totals = crate::progress::tree_totals(&root);
        let phase = crate::progress::Phase::start_with("push", "packed", "file", totals);
        // The image's OCI form, as `ch-convert -o oci` writes it: the same manifest digest.
        let (mut file, form) = crate::store::oci::write_form(
            &store.repo(),
            &root,
            &cfg,
            io::BufWriter::with_capacity(1 << 20, Stoppable(f)),
        )?;
        file.flush().at("write", &layer_path)?;
        drop(file);
        phase.finish(&[]);
        for p in &form.dropped {
            crate::warn!(
                "OCI layers can't hold names starting with .wh. (whiteouts): leaving out {p}"
            );
        }
        let cfg_bytes = form.config;
        let m_bytes = form.manifest;
        let cfg_digest = Digest::of(&cfg_bytes);
        let (layer_digest, layer_size) = (form.layer_digest, form.layer_size);
        let (layer_digest, cfg_digest) = (layer_digest.to_string(), cfg_digest.to_string());

        let client = Client::new(remote.clone(), settings, true)?;
        // What the registry has of this image, for the error of a push that stops.
        let mut has: Vec<String> = Vec::new();
        let incomplete = |has: &[String], e: RegistryError| RegistryError::PushIncomplete {
            dest: remote.to_string(),
            done: if has.is_empty() {
                "the registry has none of its blobs yet".into()
            } else {
                format!(
                    "the registry has {} (kept there; pushing again uploads only what is missing)",
                    has.join(" and ")
                )
            },
            source: Box::new(e),
        };
        client.login().map_err(|e| incomplete(&has, e))?;
        let short = |d: &str| d.trim_start_matches("sha256:")[..7].to_string();
        let phase = crate::progress::Phase::start("push", "uploaded", "blob");
        // Charliecloud's lines, which its tests compare between pushes of one image.
        info!(
            "layer 1/1: {}: checking if already in repository",
            short(&layer_digest)
        );
        if client
            .has_blob(&layer_digest)
            .map_err(|e| incomplete(&has, e))?
        {
            info!("layer 1/1: {}: already present", short(&layer_digest));
        } else {
            info!(
                "layer 1/1: {}: not present, uploading",
                short(&layer_digest)
            );
            crate::progress::set_totals(0, layer_size);
            client
                .upload_blob(&layer_digest, Body::File(&layer_path))
                .map_err(|e| incomplete(&has, e))?;
            crate::progress::items(1);
        }
        has.push(format!("the layer {layer_digest}"));
        info!(
            "config: {}: checking if already in repository",
            short(&cfg_digest)
        );
        if client
            .has_blob(&cfg_digest)
            .map_err(|e| incomplete(&has, e))?
        {
            info!("config: {}: already present", short(&cfg_digest));
        } else {
            info!("config: {}: not present, uploading", short(&cfg_digest));
            client
                .upload_blob(&cfg_digest, Body::Bytes(&cfg_bytes))
                .map_err(|e| incomplete(&has, e))?;
            crate::progress::items(1);
            crate::progress::bytes(cfg_bytes.len() as u64);
        }
        has.push(format!("the config {cfg_digest}"));
        info!("manifest: uploading");
        let tag = if remote.version.starts_with("sha256:") {
            Digest::of(&m_bytes).to_string()
        } else {
            remote.version.clone()
        };
        client
            .put_manifest(&tag, oci::MANIFEST, &m_bytes)
            .map_err(|e| incomplete(&has, e))?;
        crate::progress::bytes(m_bytes.len() as u64);
        phase.finish(&[]);
        Ok(Digest::of(&m_bytes).to_string())
    })();
    let _ = crate::store::checkout::remove_tree(&tmp);
    if result.is_ok() {
        info!("done");
    }
    result
}

/// A writer that fails once SIGINT or SIGTERM came (crate::interrupt), for the export a
/// push makes before it uploads: behind a 1 MiB buffer, so checked per buffer written.
struct Stoppable<W>(W);

impl<W: Write> Write for Stoppable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::interrupt::check()?;
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
