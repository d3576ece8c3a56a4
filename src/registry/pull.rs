//! Pull: manifest (through an index, by architecture), config and layers from a registry
//! into the store.
//!
//! Layers download in parallel into `STORAGE/dlcache/sha256-HEX` through a partial file
//! (`.partial.PID`), renamed into place only after its size and digest checked; a cached
//! layer is checked again before use, its size against the manifest's too. A digest the
//! manifest lists more than once downloads once (so one process never has two partial
//! files of the same name) and applies at each of its places. A layer whose transfer is
//! cut short (connection dropped, registry stalled) is asked for again,
//! [`super::client::ATTEMPTS`] times in all: the rest of it (`Range`) where the registry
//! serves ranges, else all of it, the digest always over the whole file. A Docker schema
//! 1 manifest ([`oci::schema1`]) brings its config along and declares no layer sizes,
//! which are asked of the registry. Layers then apply in order onto one model (whiteouts across
//! layers, see [`import::apply_layer`]), which becomes one commit. The image's ref moves
//! last, so a failed pull leaves the store's images as they were. The manifest digest is
//! kept in the config's annotations (`registry.manifest`): pulling a manifest already in
//! the store does no work, unless [`Settings::always_download`] asks for everything again
//! (layers in the download cache included). `scratch` is never asked of a registry: it is
//! the built-in empty image. [`pull_to_dir`] unpacks into a directory instead, through a
//! temporary store it removes.

use crate::error::{IoError, IoResultExt};
use gix::ObjectId;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::client::{Client, Fetched};
use super::{Arch, RegistryError, Remote, Settings};
use crate::oci::{self, ConfigDoc, Digest, Document, DocumentError, Manifest, Platform};
use crate::reference::Reference;
use crate::store::model::XattrPolicy;
use crate::store::{config, git, import, Dir, Expect, Layout, Store, WriteLock};
use crate::{info, verbose, warn};

/// Config annotation holding the pulled manifest's digest.
pub const MANIFEST_ANNOTATION: &str = "registry.manifest";
/// Config annotation holding where the image was pulled from.
pub const SOURCE_ANNOTATION: &str = "registry.source";

/// What a pull recorded in the config of the commit it wrote: the manifest digest
/// (`sha256:HEX`) and where it was pulled from ([`SOURCE_ANNOTATION`], `HOST:PORT/REPO:TAG`
/// or `HOST:PORT/REPO@sha256:HEX`; absent in an image pulled before it was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRecord {
    pub manifest: String,
    pub source: Option<String>,
}

/// The pull record of image `commit`, if a pull wrote the commit. An image built on a
/// pulled base starts from the base's config and so carries its annotations too; only a
/// commit without a parent (what [`pull`] writes) is the pulled image itself.
pub fn pull_record(
    repo: &gix::Repository,
    commit: ObjectId,
) -> Result<Option<PullRecord>, git::ReadError> {
    if git::image_trees(repo, commit)?.parent.is_some() {
        return Ok(None);
    }
    let cfg = git::read_config(repo, commit)?;
    let text = |k: &str| cfg.annotations.get(k).and_then(|v| v.as_str());
    Ok(text(MANIFEST_ANNOTATION).map(|m| PullRecord {
        manifest: m.to_string(),
        source: text(SOURCE_ANNOTATION).map(str::to_string),
    }))
}

/// At most this many layers download at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The image already had this manifest: nothing done.
    UpToDate(ObjectId),
    /// Another image in the store had this manifest: the name now points to it.
    Reused(ObjectId),
    /// Downloaded and stored.
    Pulled(ObjectId),
}

impl Outcome {
    pub fn commit(&self) -> ObjectId {
        match self {
            Outcome::UpToDate(c) | Outcome::Reused(c) | Outcome::Pulled(c) => *c,
        }
    }
}

/// The image manifest for the wanted architecture, its digest, and what the registry
/// offers (architectures of an index; `None` for an architecture-unaware image).
pub struct Resolved {
    pub manifest: Manifest,
    pub digest: String,
    pub archs: Option<Vec<String>>,
    /// Digest of the index the manifest was selected from; `None` without one.
    pub index: Option<String>,
    /// The config of a Docker schema 1 manifest ([`oci::schema1`]), which has no config
    /// blob; its `manifest` then lists the layers with size 0, unknown until asked for.
    pub schema1: Option<ConfigDoc>,
}

/// The image manifest standing for a schema 1 manifest `m`: its layers in order, sizes
/// unknown (0), no config blob.
fn from_schema1(m: &oci::Schema1) -> Manifest {
    let none = oci::Descriptor::new("", &Digest::of(b""), 0);
    Manifest {
        config: oci::Descriptor {
            digest: String::new(),
            ..none.clone()
        },
        layers: m
            .layers
            .iter()
            .map(|d| oci::Descriptor {
                digest: d.clone(),
                media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
                ..none.clone()
            })
            .collect(),
        media_type: oci::DOCKER_V1.into(),
        schema_version: 1,
    }
}

/// Fetch the manifest `client.remote` names, going through an index by `arch`. `None` if
/// the registry has no such image.
pub fn resolve(client: &Client, arch: &Arch) -> Result<Option<Resolved>, RegistryError> {
    let version = client.remote.version.clone();
    verbose!("manifest: downloading {}", client.remote);
    let Some((doc, _, digest)) = client.manifest(&version, None)? else {
        return Ok(None);
    };
    match doc {
        Fetched::Doc(Document::Manifest(m)) => Ok(Some(Resolved {
            manifest: m,
            digest,
            archs: None,
            index: None,
            schema1: None,
        })),
        Fetched::Schema1(m) => Ok(Some(Resolved {
            manifest: from_schema1(&m),
            digest,
            archs: None,
            index: None,
            schema1: Some(m.config),
        })),
        Fetched::Doc(Document::Index(idx)) => {
            let index = digest;
            let archs = super::index_archs(&idx);
            let wanted = arch.wanted();
            let d = match &wanted {
                Some(w) => idx.select(w),
                None => idx.first_known(),
            }
            .cloned()
            .ok_or_else(|| RegistryError::NoArch {
                wanted: wanted.unwrap_or_else(|| "yolo".into()),
                available: archs.clone(),
            })?;
            verbose!("manifest list: selected {}", d.digest);
            let Some((doc, _, digest)) = client.manifest(&d.digest, Some(d.size))? else {
                return Err(RegistryError::NotFound(format!(
                    "{} (manifest {} listed in its index)",
                    client.remote, d.digest
                )));
            };
            match doc {
                Fetched::Doc(Document::Manifest(m)) => Ok(Some(Resolved {
                    manifest: m,
                    digest,
                    archs: Some(archs),
                    index: Some(index),
                    schema1: None,
                })),
                Fetched::Schema1(m) => Ok(Some(Resolved {
                    manifest: from_schema1(&m),
                    digest,
                    archs: Some(archs),
                    index: Some(index),
                    schema1: Some(m.config),
                })),
                Fetched::Doc(Document::Index(_)) => {
                    Err(DocumentError::Unsupported("index inside an index".into()).into())
                }
            }
        }
    }
}

/// Pull `src` into the store as `dest`. Requires the lock (held throughout).
pub fn pull(
    store: &Store,
    lock: &WriteLock,
    src: &Reference,
    dest: &Reference,
    settings: &Settings,
) -> Result<Outcome, RegistryError> {
    let remote = Remote::resolve(src);
    info!("pulling image:    {src}");
    if dest != src {
        // Charliecloud's second line when the image is stored under another name (its
        // tutorial's `pull …/hello:latest hello.2`).
        info!("destination:      {dest}");
    }
    // Always, as Charliecloud (its tutorial shows it under `pulling image:`).
    info!(
        "requesting arch:  {}",
        settings.arch.wanted().as_deref().unwrap_or("yolo")
    );
    let old = store.image(dest)?;
    if is_scratch(src) {
        return pull_scratch(store, lock, dest, old);
    }
    let client = Client::new(remote.clone(), settings, false)?;
    client.login()?;
    let res = resolve(&client, &settings.arch)?
        .ok_or_else(|| RegistryError::NotFound(remote.to_string()))?;

    // Where `dest` came from, in the commit's import note (docs/store-format.md).
    let noted = |c: ObjectId| -> Result<ObjectId, RegistryError> {
        let (r, m, i) = (remote.to_string(), &res.digest, res.index.as_deref());
        crate::store::notes::record_pull(&store.repo(), c, &dest.to_string(), &r, m, i)?;
        Ok(c)
    };
    // Up to date, or the same manifest already stored under another name?
    let has_manifest = |commit: ObjectId| -> Result<bool, RegistryError> {
        Ok(pull_record(&store.repo(), commit)?.is_some_and(|p| p.manifest == res.digest))
    };
    if let Some(c) = old.filter(|_| !settings.always_download) {
        if has_manifest(c)? {
            info!("image up to date: {dest} ({})", res.digest);
            return Ok(Outcome::UpToDate(noted(c)?));
        }
    }
    for (_, c) in store.list()? {
        if settings.always_download {
            break;
        }
        if Some(c) != old && has_manifest(c)? {
            store.set_image_lazy(lock, dest, c, Expect::from_current(old))?;
            info!("image already in storage with manifest {}", res.digest);
            return Ok(Outcome::Reused(noted(c)?));
        }
    }

    let mut manifest = res.manifest.clone();
    let doc = match &res.schema1 {
        Some(cfg) => {
            // As Charliecloud 0.31 (which only says "no config; manifest schema version
            // 1"); the config is the top layer's v1 JSON. The layers' sizes, which the
            // manifest does not declare, are the registry's (HEAD), so that their
            // downloads are bounded as any other's.
            warn!(
                "{remote}: the manifest is Docker schema 1 (deprecated): no config blob, \
                 the config is the top layer's history entry"
            );
            // Once per digest: schema 1 images repeat their empty layer many times.
            let mut sizes = std::collections::HashMap::new();
            for d in manifest.layers.iter_mut() {
                d.size = match sizes.get(&d.digest) {
                    Some(n) => *n,
                    None => *sizes
                        .entry(d.digest.clone())
                        .or_insert(client.blob_size(&d.digest)?),
                };
            }
            cfg.clone()
        }
        None => {
            let m = &manifest;
            // Layer sizes and repeats are checked before anything is downloaded.
            distinct_layers(&m.layers)?;
            verbose!("config: downloading {}", m.config.digest);
            let cfg_bytes =
                client.blob_bytes("config", &m.config.digest, m.config.size, oci::MAX_CONFIG)?;
            ConfigDoc::parse(&cfg_bytes)?
        }
    };
    let m = &manifest;
    distinct_layers(&m.layers)?;
    if let Some(w) = settings.arch.wanted() {
        let img = doc.platform();
        if res.archs.is_none() && !doc.architecture.is_empty() && !Platform::parse(&w).matches(&img)
        {
            warn!(
                "image architecture {} may not match requested {w}",
                super::escape(&img.to_string())
            );
        }
    }

    let phase = crate::progress::Phase::start("pull", "downloaded", "layer");
    let paths = download_layers(store, &client, m, settings)?;
    phase.finish(&[]);

    info!("flattening image");
    let phase = crate::progress::Phase::start_with(
        "pull",
        "unpacked",
        "file",
        (0, m.layers.iter().map(|d| d.size).sum()),
    );
    let ts = store.thread_safe();
    let mut root = Dir::new(0o755);
    let n = paths.len();
    for (i, (d, p)) in m.layers.iter().zip(&paths).enumerate() {
        verbose!("layer {}/{n}: {}: extracting", i + 1, short(&d.digest));
        let layer_err = |source| RegistryError::Layer {
            layer: format!("{}/{n} ({})", i + 1, d.digest),
            source,
        };
        let reader = import::open_archive(p).map_err(layer_err)?;
        let warnings = import::apply_layer(
            ts,
            &mut root,
            reader,
            p,
            import::Whiteouts::Apply,
            store.xattrs(),
        )
        .map_err(layer_err)?;
        for w in warnings {
            warn!("{}", crate::log::shown(&w));
        }
    }
    phase.finish(&[format!("{n} layer{}", if n == 1 { "" } else { "s" })]);
    let mut cfg = doc.to_image_config();
    cfg.annotations.insert(
        MANIFEST_ANNOTATION.into(),
        serde_json::Value::String(res.digest.clone()),
    );
    cfg.annotations.insert(
        SOURCE_ANNOTATION.into(),
        serde_json::Value::String(remote.to_string()),
    );
    if cfg.history.is_empty() {
        cfg.history.push(config::History {
            created_by: format!("ch-image pull {src}"),
            empty_layer: false,
        });
    }
    // As Charliecloud: the config's environment becomes /ch/environment, which
    // `ch-run --set-env` reads. An image without one gets no file, so that a push and a
    // pull give back the same tree.
    if !cfg.env.is_empty() {
        git::put_environment_file(&store.repo(), &mut root, &cfg)?;
    }
    let commit = git::write_image_commit(
        &store.repo(),
        &mut root,
        &cfg,
        None,
        &format!("PULL {remote}"),
    )?;
    // The checkout is made on first use (ch-run NAME, or a build's first RUN): a pull for
    // a build whose steps all hit never needs one.
    store.set_image_lazy(lock, dest, commit, Expect::from_current(old))?;
    if let Some(a) = &cfg.arch {
        info!("image arch: {}", super::escape(a));
    }
    info!("done");
    Ok(Outcome::Pulled(noted(commit)?))
}

/// Whether `r` names Charliecloud's built-in empty image (`scratch`, also `scratch:latest`),
/// which is never looked up in a registry, whatever the registry settings.
pub fn is_scratch(r: &Reference) -> bool {
    r.host.is_none()
        && r.path.is_empty()
        && r.name == "scratch"
        && r.digest.is_none()
        && r.tag.as_deref().is_none_or(|t| t == "latest")
}

/// The empty image from the internal library (as Charliecloud's `manifests_internal`):
/// an empty tree and config, stored as `dest`.
fn pull_scratch(
    store: &Store,
    lock: &WriteLock,
    dest: &Reference,
    old: Option<ObjectId>,
) -> Result<Outcome, RegistryError> {
    verbose!("manifest: using internal library");
    let mut root = Dir::new(0o755);
    let mut cfg = config::ImageConfig::default();
    cfg.annotations.insert(
        SOURCE_ANNOTATION.into(),
        serde_json::Value::String("internal library: scratch".into()),
    );
    cfg.history.push(config::History {
        created_by: "ch-image pull scratch".into(),
        empty_layer: false,
    });
    git::put_environment_file(&store.repo(), &mut root, &cfg)?;
    let commit = git::write_image_commit(&store.repo(), &mut root, &cfg, None, "PULL scratch")?;
    if old == Some(commit) {
        info!("image up to date: {dest}");
        return Ok(Outcome::UpToDate(commit));
    }
    store.set_image_lazy(lock, dest, commit, Expect::from_current(old))?;
    info!("done");
    Ok(Outcome::Pulled(commit))
}

/// Pull `src` and unpack it into the directory `dir` (the seed man page's
/// `pull IMAGE_REF IMAGE_DIR`), keeping no copy in any storage directory: the pull goes
/// through a temporary store beside `dir`, removed afterwards (downloads included). The
/// image is written as a checkout is (permissions raised, setuid and setgid bits
/// dropped), ready for `ch-run DIR`. An existing `dir` is replaced if it is empty or
/// looks like an image (has `bin`, `dev` and `usr` directories, Charliecloud's test);
/// anything else there is refused.
pub fn pull_to_dir(
    src: &Reference,
    dir: &Path,
    settings: &Settings,
    xattrs: XattrPolicy,
) -> Result<(), RegistryError> {
    let replace = match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(IoError::new("stat", dir, e).into()),
        Ok(md) if !md.is_dir() => {
            return Err(RegistryError::Io(IoError {
                action: "unpack into",
                path: dir.to_path_buf(),
                source: io::Error::other("exists and is not a directory"),
            }))
        }
        Ok(_) => {
            let empty = fs::read_dir(dir)
                .at("read directory", dir)?
                .next()
                .is_none();
            let image = ["bin", "dev", "usr"].iter().all(|d| dir.join(d).is_dir());
            if !empty && !image {
                return Err(RegistryError::Io(IoError {
                    action: "unpack into",
                    path: dir.to_path_buf(),
                    source: io::Error::other("exists but does not appear to be an image"),
                }));
            }
            true
        }
    };
    let name = dir.file_name().ok_or_else(|| {
        RegistryError::Io(IoError {
            action: "unpack into",
            path: dir.to_path_buf(),
            source: io::Error::other("no final path component"),
        })
    })?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).at("create directory", parent)?;
    let work = parent.join(format!(
        ".{}.grove-pull.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = crate::store::checkout::remove_tree(&work);
    let result = (|| -> Result<(), RegistryError> {
        info!("unpacking into:   {}", dir.display());
        let store = Store::open(&work.join("storage"))?.with_xattrs(xattrs);
        let lock = store.lock()?;
        let commit = pull(&store, &lock, src, src, settings)?.commit();
        let (root, _) = store.read(commit)?;
        let staged = work.join("image");
        let totals = crate::progress::tree_totals(&root);
        let phase = crate::progress::Phase::start_with("pull", "wrote", "file", totals);
        crate::store::checkout::materialize(
            store.thread_safe(),
            &root,
            &staged,
            crate::store::checkout::Policy::Checkout,
        )
        .map_err(|e| RegistryError::Store(e.into()))?;
        phase.finish(&[]);
        if replace {
            verbose!("replacing existing image: {}", dir.display());
            crate::store::checkout::remove_tree(dir).at("remove", dir)?;
        }
        Ok(fs::rename(&staged, dir).at("rename into place", dir)?)
    })();
    let _ = crate::store::checkout::remove_tree(&work);
    result
}

fn short(digest: &str) -> &str {
    let h = digest.strip_prefix("sha256:").unwrap_or(digest);
    &h[..h.len().min(7)]
}

/// Removes a partial download unless disarmed.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Remove partial downloads of this blob left by processes that no longer run (a killed
/// pull); a partial of a live process is left alone.
fn remove_stale_partials(layout: &Layout, hex: &str) {
    let prefix = Layout::dl_partial_prefix(hex);
    let Ok(rd) = fs::read_dir(layout.dlcache()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Check a file's sha256.
fn file_digest(path: &Path) -> Result<Digest, RegistryError> {
    let f = fs::File::open(path).at("open", path)?;
    Ok(oci::hash_reader(f).at("read", path)?.0)
}

/// The layers to download: each distinct digest once, at its first place (index into
/// `layers`). Refuses a declared size above [`super::MAX_LAYER_SIZE`] and a digest listed
/// with two different sizes, before anything is downloaded.
fn distinct_layers(
    layers: &[oci::Descriptor],
) -> Result<Vec<(usize, &oci::Descriptor)>, RegistryError> {
    let n = layers.len();
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut jobs = Vec::new();
    for (i, d) in layers.iter().enumerate() {
        let what = || format!("layer {}/{n} ({})", i + 1, d.digest);
        if d.size > super::MAX_LAYER_SIZE {
            return Err(RegistryError::TooBig {
                what: format!("{} (declared {} bytes)", what(), d.size),
                limit: super::MAX_LAYER_SIZE,
                var: "a fixed limit",
            });
        }
        match first.get(d.digest.as_str()) {
            Some(&j) if layers[j].size != d.size => {
                return Err(RegistryError::Size {
                    what: format!("{} (also layer {}/{n})", what(), j + 1),
                    expected: layers[j].size,
                    actual: d.size,
                })
            }
            Some(_) => {}
            None => {
                first.insert(&d.digest, i);
                jobs.push((i, d));
            }
        }
    }
    Ok(jobs)
}

/// Download every layer (in parallel) into the download cache; returns their paths, one
/// per entry of the manifest.
fn download_layers(
    store: &Store,
    client: &Client,
    m: &Manifest,
    settings: &Settings,
) -> Result<Vec<PathBuf>, RegistryError> {
    let cache = store.layout().dlcache();
    let jobs = distinct_layers(&m.layers)?;
    fs::create_dir_all(&cache).at("create directory", &cache)?;
    crate::progress::set_totals(0, jobs.iter().map(|(_, d)| d.size).sum());
    let n = m.layers.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(usize, PathBuf), RegistryError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PARALLEL_DOWNLOADS.min(n.max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some((i, d)) = jobs.get(j) else { break };
                        let r = download_one(
                            store.layout(),
                            client,
                            d,
                            (*i, n),
                            settings.always_download,
                        )
                        .map(|p| (*i, p));
                        let failed = r.is_err();
                        out.push(r);
                        if failed {
                            // Stop the others early: take every remaining job.
                            next.store(usize::MAX / 2, std::sync::atomic::Ordering::SeqCst);
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("download thread panicked"))
            .collect()
    });
    let mut by_digest = std::collections::HashMap::new();
    for r in results {
        let (i, p) = r?;
        by_digest.insert(m.layers[i].digest.as_str(), p);
    }
    let paths: Vec<PathBuf> = m
        .layers
        .iter()
        .map(|d| {
            by_digest
                .get(d.digest.as_str())
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    if paths.iter().any(|p| p.as_os_str().is_empty()) {
        return Err(RegistryError::Download {
            what: "layers".into(),
            source: io::Error::other("download stopped"),
        });
    }
    Ok(paths)
}

fn download_one(
    layout: &Layout,
    client: &Client,
    d: &oci::Descriptor,
    (i, n): (usize, usize),
    always: bool,
) -> Result<PathBuf, RegistryError> {
    let digest = Digest::parse(&d.digest).map_err(|source| DocumentError::BadDigest {
        what: "layer",
        source,
    })?;
    let hex = digest.hex();
    let what = format!("layer {}/{n} ({})", i + 1, d.digest);
    let dest = layout.dl_layer(hex);
    if dest.exists() && !always {
        if file_digest(&dest)? == digest {
            // The content is right; the manifest must say its size too.
            let len = fs::metadata(&dest).at("stat", &dest)?.len();
            if len != d.size {
                return Err(RegistryError::Size {
                    what: format!("{what}: size declared by the manifest"),
                    expected: d.size,
                    actual: len,
                });
            }
            verbose!(
                "layer {}/{n}: {}: using existing file",
                i + 1,
                short(&d.digest)
            );
            // Its use, for `build-cache --gc --keep-storage` (most recently used kept).
            let _ = fs::File::options()
                .write(true)
                .open(&dest)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            crate::progress::skip_bytes(d.size);
            return Ok(dest);
        }
        warn!("{what}: cached file is corrupt; downloading again");
        fs::remove_file(&dest).at("remove", &dest)?;
    }
    verbose!("layer {}/{n}: {}: downloading", i + 1, short(&d.digest));
    remove_stale_partials(layout, hex);
    let part = layout.dl_partial(hex, std::process::id());
    let guard = Partial(Some(part.clone()));
    let mut attempt = 1;
    // Bytes already in the partial file, to ask for the rest of (0: from the start).
    let mut resume = 0;
    loop {
        let mut ranges = false;
        match fetch_layer(client, d, &digest, &part, &what, resume, &mut ranges) {
            Ok(()) => break,
            Err(e) if attempt < super::client::ATTEMPTS && cut_short(&e) => {
                // What the cut transfer wrote is kept, and the rest asked for (a registry
                // that answers with the whole blob again gets it written from the start).
                resume = fs::metadata(&part).map_or(0, |m| m.len());
                let delay = std::time::Duration::from_secs(1 << (attempt - 1));
                attempt += 1;
                let how = if ranges && resume > 0 {
                    format!("resuming it from byte {resume} of {}", d.size)
                } else {
                    "downloading it again".to_string()
                };
                warn!(
                    "{}; {how} in {} s (attempt {attempt} of {})",
                    e.full_message(),
                    delay.as_secs(),
                    super::client::ATTEMPTS
                );
                let until = std::time::Instant::now() + delay;
                while std::time::Instant::now() < until {
                    crate::interrupt::check().at("download into", &part)?;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            Err(e) => return Err(e),
        }
    }
    fs::rename(&part, &dest).at("rename into place", &dest)?;
    crate::progress::items(1);
    let mut guard = guard;
    guard.0 = None;
    Ok(dest)
}

/// The first byte, last byte and total size a `Content-Range: bytes FIRST-LAST/TOTAL`
/// header says (`None` for a total of `*`); `None` if malformed.
fn content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, last.trim().parse().ok()?, total))
}

/// Download layer `d` into the file `part` and check its size and `digest`; `what` names
/// it in errors. With `resume` bytes of it already in `part` (a cut download's), only the
/// rest is asked for (`Range`); the registry's 206 is appended to them, and its 200 (the
/// whole blob) written from the start. The digest is always that of the whole file, the
/// bytes kept read again. `ranges` is set if the registry said it serves ranges
/// (`Accept-Ranges: bytes`).
fn fetch_layer(
    client: &Client,
    d: &oci::Descriptor,
    digest: &Digest,
    part: &Path,
    what: &str,
    resume: u64,
    ranges: &mut bool,
) -> Result<(), RegistryError> {
    let kept = fs::metadata(part).map_or(0, |m| m.len());
    let mut offset = if resume > 0 && resume == kept && resume < d.size {
        resume
    } else {
        // Written again from the start: not counted twice.
        crate::progress::unbytes(resume);
        0
    };
    let url = client.url(&format!("blobs/{}", d.digest));
    let (mut resp, mut deadline) =
        client
            .blob_from(&d.digest, d.size, offset)
            .map_err(|e| match e {
                // A foreign layer (a Windows base layer, say) is often not in the registry; its
                // manifest names other places, which Grove does not fetch from.
                RegistryError::Status {
                    action,
                    url,
                    status: 404,
                    ..
                } if !d.urls.is_empty() => RegistryError::Status {
                    action,
                    url,
                    status: 404,
                    detail: Some(format!(
                "blob not found; it is a foreign layer ({}) the manifest says to fetch from {}, \
                 and Grove fetches layers only from the registry",
                super::escape(&d.media_type),
                d.urls
                    .iter()
                    .map(|u| super::escape(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
                },
                e => e,
            })?;
    let header = |resp: &super::client::Response, name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    *ranges = header(&resp, "accept-ranges").is_some_and(|v| v.trim() == "bytes");
    if offset > 0 {
        let status = resp.status().as_u16();
        let range = header(&resp, "content-range");
        let fits = range
            .as_deref()
            .and_then(content_range)
            .is_some_and(|(a, b, n)| {
                a == offset && b.checked_add(1) == Some(d.size) && n.is_none_or(|n| n == d.size)
            });
        if status != 206 || !fits {
            info!(
                "{what}: the registry answered HTTP {status}{} to a request for bytes \
                 {offset} on; downloading it from the start",
                range
                    .map(|r| format!(" (Content-Range: {})", super::escape(&r)))
                    .unwrap_or_default()
            );
            crate::progress::unbytes(offset);
            offset = 0;
            if status == 206 {
                drop(resp);
                (resp, deadline) = client.blob(&d.digest, d.size)?;
            }
        } else {
            verbose!("{what}: resuming from byte {offset}");
        }
    }
    let rest = d.size - offset;
    let announced = super::client::content_length(&resp);
    if announced.is_some_and(|n| n > rest) {
        return Err(RegistryError::Longer {
            what: what.to_string(),
            declared: d.size,
            sent: announced.map(|n| n.saturating_add(offset)),
        });
    }
    // Never read more than the manifest promised (plus one byte to notice excess; sizes
    // are bounded by MAX_LAYER_SIZE, so this does not wrap). The bytes kept come first,
    // for the digest.
    let body = resp.into_body().into_reader().take(rest.saturating_add(1));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(offset == 0)
        .open(part)
        .at("create", part)?;
    let kept: Box<dyn Read> = if offset > 0 {
        f.seek(io::SeekFrom::Start(offset)).at("seek in", part)?;
        Box::new(fs::File::open(part).at("open", part)?.take(offset))
    } else {
        Box::new(io::empty())
    };
    let mut hr = oci::Hashing::new(kept.chain(body));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        crate::interrupt::check().at("download into", part)?;
        // A read of the chain never spans both parts: below `offset`, the bytes kept.
        let from_file = hr.len() < offset;
        let k = match hr.read(&mut buf) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if from_file => return Err(IoError::new("read", part, e).into()),
            Err(e) => {
                let got = (
                    hr.len(),
                    announced.map(|n| n.saturating_add(offset)).or(Some(d.size)),
                );
                return Err(deadline.body("get blob", &url, what, got, e));
            }
        };
        if k == 0 {
            break;
        }
        if from_file {
            continue;
        }
        crate::progress::bytes(k as u64);
        if deadline.passed() {
            return Err(deadline.error("get blob", &url));
        }
        f.write_all(&buf[..k]).at("write", part)?;
    }
    f.flush().at("write", part)?;
    drop(f);
    let (_, actual, count) = hr.finish();
    if count > d.size {
        return Err(RegistryError::Longer {
            what: what.to_string(),
            declared: d.size,
            sent: None,
        });
    }
    if count != d.size {
        return Err(RegistryError::Size {
            what: what.to_string(),
            expected: d.size,
            actual: count,
        });
    }
    if actual != *digest {
        return Err(RegistryError::Digest {
            what: what.to_string(),
            expected: d.digest.clone(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Whether a layer download failed because its transfer was cut short (the connection
/// reset or closed mid-body, or the registry stopped sending): worth another try, from
/// the start, as Docker does. Not a refusal (size, digest), a deadline or a signal.
fn cut_short(e: &RegistryError) -> bool {
    match e {
        RegistryError::Stalled { .. } => true,
        RegistryError::Download { source, .. } => matches!(
            source.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        ),
        RegistryError::Size {
            expected, actual, ..
        } => actual < expected,
        _ => false,
    }
}

/// What the registry offers for a reference, for `ch-image list IMAGE`.
pub struct RemoteInfo {
    pub remote: Remote,
    /// Architectures of an index; `None` for an architecture-unaware image.
    pub archs: Option<Vec<String>>,
    /// Digest of the tag's manifest or index; `None` for `scratch`, which has none.
    pub digest: Option<String>,
}

/// Look `src` up in its registry without downloading layers. `None` if not there.
pub fn remote_info(
    src: &Reference,
    settings: &Settings,
) -> Result<Option<RemoteInfo>, RegistryError> {
    let remote = Remote::resolve(src);
    if is_scratch(src) {
        // Built in, as for pull, and offered for the architecture asked for (Charliecloud's
        // internal manifest library: "available remotely: yes", arch-aware).
        return Ok(Some(RemoteInfo {
            remote,
            archs: Some(vec![settings
                .arch
                .wanted()
                .unwrap_or_else(crate::oci::host_arch)]),
            digest: None,
        }));
    }
    let client = Client::new(remote.clone(), settings, false)?;
    let Some((doc, _, digest)) = client.manifest(&remote.version, None)? else {
        return Ok(None);
    };
    let archs = match doc {
        Fetched::Doc(Document::Index(idx)) => Some(super::index_archs(&idx)),
        Fetched::Doc(Document::Manifest(_)) | Fetched::Schema1(_) => None,
    };
    Ok(Some(RemoteInfo {
        remote,
        archs,
        digest: Some(digest),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_read_and_malformed_ones_are_none() {
        assert_eq!(
            content_range("bytes 100-1088432/1088433"),
            Some((100, 1088432, Some(1088433)))
        );
        assert_eq!(content_range(" bytes 0-0/*"), Some((0, 0, None)));
        for bad in [
            "",
            "bytes */100",
            "items 1-2/3",
            "bytes 1-/3",
            "bytes 1-2",
            "bytes 1-18446744073709551616/3",
        ] {
            assert_eq!(content_range(bad), None, "{bad:?}");
        }
    }
}
