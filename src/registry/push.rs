//! Push: an image as one gzipped layer (the store's deterministic tar export: owner
//! root:root, setuid/setgid cleared, as Charliecloud's man page says), an OCI config and
//! an OCI manifest. Blobs the registry already has are not uploaded again.

use crate::error::IoResultExt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::client::{Body, Client};
use super::{RegistryError, Remote, Settings};
use crate::info;
use crate::oci::{self, ConfigDoc, Descriptor, Digest, Hashing, Manifest};
use crate::reference::Reference;
use crate::store::export::{write_tar_with, TarOptions};
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
            info!("image path:      {}", d.display());
            let (root, warnings) = import::import_path(store.thread_safe(), d, store.xattrs())?;
            for w in warnings {
                crate::warn!("{w}");
            }
            (root, ImageConfig::default())
        }
    };
    let remote = Remote::resolve(dest);
    info!("pushing image:   {dest}");
    info!("layer 1/1: preparing");
    let tmp = store.scratch_path("push");
    fs::create_dir_all(&tmp).at("create directory", &tmp)?;
    let result = (|| {
        let layer_path = tmp.join("layer.tar.gz");
        let f = fs::File::create(&layer_path).at("create", &layer_path)?;
        let compressed = Hashing::new(io::BufWriter::with_capacity(1 << 20, f));
        let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::new(6));
        let plain = Hashing::new(gz);
        let totals = crate::progress::tree_totals(&root);
        let phase = crate::progress::Phase::start_with("push", "packed", "file", totals);
        let plain = write_tar_with(
            &store.repo(),
            &root,
            plain,
            TarOptions {
                clear_setid: true,
                ..TarOptions::default()
            },
        )?;
        let (gz, diff_id, _) = plain.finish();
        let mut compressed = gz.finish().map_err(crate::store::export::ExportError::Io)?;
        compressed
            .flush()
            .map_err(crate::store::export::ExportError::Io)?;
        let (file, layer_digest, layer_size) = compressed.finish();
        drop(file);
        phase.finish(&[]);

        // The same config `ch-convert -o oci` writes: the image's own history, consistent
        // with the one layer pushed, so Buildah and Podman can build on it.
        let cfg_bytes =
            ConfigDoc::from_image_config(&cfg, diff_id.as_str(), "grove ch-image push").to_bytes();
        let cfg_digest = Digest::of(&cfg_bytes);
        let m = Manifest {
            config: Descriptor::new(oci::CONFIG, &cfg_digest, cfg_bytes.len() as u64),
            layers: vec![Descriptor::new(oci::LAYER_GZIP, &layer_digest, layer_size)],
            media_type: oci::MANIFEST.into(),
            schema_version: 2,
        };
        let m_bytes = serde_json::to_vec(&m).expect("manifest serializes");
        let (layer_digest, cfg_digest) = (layer_digest.to_string(), cfg_digest.to_string());

        let client = Client::new(remote.clone(), settings, true)?;
        client.login()?;
        let short = |d: &str| d.trim_start_matches("sha256:")[..7].to_string();
        let phase = crate::progress::Phase::start("push", "uploaded", "blob");
        if client.has_blob(&layer_digest)? {
            info!("layer 1/1: {}: already present", short(&layer_digest));
        } else {
            info!(
                "layer 1/1: {}: not present, uploading",
                short(&layer_digest)
            );
            crate::progress::set_totals(0, layer_size);
            client.upload_blob(&layer_digest, Body::File(&layer_path))?;
            crate::progress::items(1);
        }
        if client.has_blob(&cfg_digest)? {
            info!("config: {}: already present", short(&cfg_digest));
        } else {
            info!("config: {}: not present, uploading", short(&cfg_digest));
            client.upload_blob(&cfg_digest, Body::Bytes(&cfg_bytes))?;
            crate::progress::items(1);
            crate::progress::bytes(cfg_bytes.len() as u64);
        }
        info!("manifest: uploading");
        let tag = if remote.version.starts_with("sha256:") {
            Digest::of(&m_bytes).to_string()
        } else {
            remote.version.clone()
        };
        client.put_manifest(&tag, oci::MANIFEST, &m_bytes)?;
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
