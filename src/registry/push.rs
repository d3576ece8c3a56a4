//! Push: an image as one gzipped layer (the store's deterministic tar export: owner
//! root:root, setuid/setgid cleared, as Charliecloud's man page says), an OCI config and
//! an OCI manifest. Blobs the registry already has are not uploaded again.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use sha2::Digest as _;

use super::client::{Body, Client};
use super::manifest::{self, Descriptor, Manifest};
use super::{RegistryError, Remote, Settings};
use crate::info;
use crate::reference::Reference;
use crate::store::export::{write_tar_with, TarOptions};
use crate::store::{import, Dir, ImageConfig, Store, WriteLock};

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

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
    fs::create_dir_all(&tmp).map_err(|source| RegistryError::Io {
        action: "create directory",
        path: tmp.clone(),
        source,
    })?;
    let result = (|| {
        let layer_path = tmp.join("layer.tar.gz");
        let f = fs::File::create(&layer_path).map_err(|source| RegistryError::Io {
            action: "create",
            path: layer_path.clone(),
            source,
        })?;
        let compressed = HashingWriter {
            inner: io::BufWriter::with_capacity(1 << 20, f),
            hasher: sha2::Sha256::new(),
            count: 0,
        };
        let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::new(6));
        let plain = HashingWriter {
            inner: gz,
            hasher: sha2::Sha256::new(),
            count: 0,
        };
        let plain = write_tar_with(
            &store.repo(),
            &root,
            plain,
            TarOptions {
                clear_setid: true,
                ..TarOptions::default()
            },
        )?;
        let diff_id = format!("sha256:{}", hex::encode(plain.hasher.finalize()));
        let mut compressed = plain
            .inner
            .finish()
            .map_err(crate::store::export::ExportError::Io)?;
        compressed
            .flush()
            .map_err(crate::store::export::ExportError::Io)?;
        let layer_digest = format!("sha256:{}", hex::encode(compressed.hasher.finalize()));
        let layer_size = compressed.count;
        drop(compressed.inner);

        let mut oci = manifest::from_image_config(&cfg, vec![diff_id]);
        // The image's own history, consistent with the one layer pushed (as ch-convert
        // writes it), so Buildah and Podman can build on it.
        oci.history = crate::store::oci::layer_history(&cfg, "grove ch-image push")
            .into_iter()
            .map(|h| manifest::OciHistory {
                created_by: Some(h.created_by),
                empty_layer: h.empty_layer,
            })
            .collect();
        let cfg_bytes = serde_json::to_vec(&oci).expect("config serializes");
        let cfg_digest = manifest::sha256_digest(&cfg_bytes);
        let m = Manifest {
            schema_version: 2,
            media_type: manifest::OCI_MANIFEST.into(),
            config: Descriptor {
                media_type: manifest::OCI_CONFIG.into(),
                digest: cfg_digest.clone(),
                size: cfg_bytes.len() as u64,
                platform: None,
            },
            layers: vec![Descriptor {
                media_type: manifest::OCI_LAYER_GZIP.into(),
                digest: layer_digest.clone(),
                size: layer_size,
                platform: None,
            }],
        };
        let m_bytes = serde_json::to_vec(&m).expect("manifest serializes");

        let client = Client::new(remote.clone(), settings, true)?;
        client.login()?;
        let short = |d: &str| d.trim_start_matches("sha256:")[..7].to_string();
        if client.has_blob(&layer_digest)? {
            info!("layer 1/1: {}: already present", short(&layer_digest));
        } else {
            info!(
                "layer 1/1: {}: not present, uploading",
                short(&layer_digest)
            );
            client.upload_blob(&layer_digest, Body::File(&layer_path))?;
        }
        if client.has_blob(&cfg_digest)? {
            info!("config: {}: already present", short(&cfg_digest));
        } else {
            info!("config: {}: not present, uploading", short(&cfg_digest));
            client.upload_blob(&cfg_digest, Body::Bytes(&cfg_bytes))?;
        }
        info!("manifest: uploading");
        let tag = if remote.version.starts_with("sha256:") {
            manifest::sha256_digest(&m_bytes)
        } else {
            remote.version.clone()
        };
        client.put_manifest(&tag, manifest::OCI_MANIFEST, &m_bytes)?;
        Ok(manifest::sha256_digest(&m_bytes))
    })();
    let _ = crate::store::checkout::remove_tree(&tmp);
    if result.is_ok() {
        info!("done");
    }
    result
}
