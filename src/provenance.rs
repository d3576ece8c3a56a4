//! Provenance others can verify: an image's build note (`refs/notes/grove`,
//! [`crate::store::notes::Provenance`]) rendered as an in-toto Statement v1 with a SLSA
//! Provenance v1 predicate (`ch-image inspect --provenance`), and the check of such a
//! statement against the store (`ch-image verify`). docs/provenance.md is the format's
//! specification (it is the document [`BUILD_TYPE`] names).
//!
//! The statement is a pure function of the store: of the image's commit, its note, and the
//! commits the note names. Nothing in it depends on the storage directory or on when it is
//! rendered, so two stores that built the same inputs give the same statement but for the
//! build's times and invocation id. Verification renders the statement again from the
//! store, recomputing what the store can tell (the image's OCI manifest digest, local base
//! images' digests, the Dockerfile's digest from its text, each context file's presence
//! in its step's commit with its sha256) and compares claim by claim.
//!
//! Depends on the store (notes, commits, the OCI form) only; knows nothing of the build
//! but the note's fields.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use gix::ObjectId;
use serde_json::{json, Map, Value};

use crate::store::model::{Dir, Node};
use crate::store::notes::{self, Provenance, ProvenanceBase};
use crate::store::{git, oci, Store};

/// The in-toto Statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA Provenance v1 predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// Grove's build type: a Dockerfile build by `ch-image build`, as docs/provenance.md
/// ("Build type") specifies its parameters and dependencies.
pub const BUILD_TYPE: &str = "urn:grove:build-type:ch-image-build:v1";
/// The builder: Grove's `ch-image build` on the machine that ran it (docs/provenance.md,
/// "Builder").
pub const BUILDER_ID: &str = "urn:grove:builder:ch-image";

/// Build arguments whose name contains one of these words (any case) may hold secrets:
/// their values are left out of notes, statements and `inspect` ([`redacted_arg`]).
const SECRET_WORDS: &[&str] = &["SECRET", "PASSWORD", "PASSWD", "TOKEN", "CREDENTIAL"];

/// Build arguments with one of these as a whole `_`-separated word (any case) may hold
/// secrets too, unless a word is `PUBLIC` (`PUBLIC_KEY`): the words of BuildKit's
/// `SecretsUsedInArgOrEnv` check that [`SECRET_WORDS`] does not already cover (`API_KEY`,
/// `NPM_AUTH`, `SSH_KEY`).
const SECRET_NAME_WORDS: &[&str] = &["KEY", "APIKEY", "AUTH", "PWORD"];

/// Errors of rendering or checking a statement.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("{0}: no build provenance note (only an image a ch-image build wrote has one, not its intermediate states; imported and pulled images have none)")]
    NoNote(String),
    /// No build note, and what the store tells of why (an import, a lone `FROM` of
    /// another image, an earlier state of a build); `hint` points to the note there is.
    #[error("{spec}: no build provenance note: {why}")]
    NoNoteBecause {
        spec: String,
        why: String,
        hint: String,
    },
    #[error("{image}: can't compute the image's OCI digest")]
    Oci {
        image: String,
        #[source]
        source: oci::OciError,
    },
    #[error("can't read blob {blob}")]
    Blob {
        blob: ObjectId,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Read(#[from] git::ReadError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ProvenanceError {
    /// A hint for the user: where the note this image lacks can be read.
    pub fn hint(&self) -> Option<String> {
        match self {
            ProvenanceError::NoNoteBecause { hint, .. } => Some(hint.clone()),
            _ => None,
        }
    }
}

/// sha256 of `data` in lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// A path (bytes) as a statement names it: as it is when it is UTF-8, else with every
/// byte outside printable ASCII (and `\`) escaped (`\xff`), as key-input records write
/// names.
pub fn path_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// `t` as RFC 3339 in UTC, whole seconds (`2024-05-01T12:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (y, m, d, h, mi, s) = crate::log::civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A build's invocation id: unique per build (its start time in nanoseconds, the process
/// and the image's commit, hashed), 32 hex digits.
pub fn invocation_id(started: SystemTime, commit: ObjectId) -> String {
    let ns = started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&ns.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(commit.as_bytes());
    h.finalize().to_hex()[..32].to_string()
}

/// Whether a build argument's name looks like a secret's: it contains one of
/// [`SECRET_WORDS`], or has one of [`SECRET_NAME_WORDS`] as a `_`-separated word and no
/// word `PUBLIC` (any case).
pub fn secret_looking(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if SECRET_WORDS.iter().any(|w| upper.contains(w)) {
        return true;
    }
    let words: Vec<&str> = upper.split('_').collect();
    !words.contains(&"PUBLIC") && words.iter().any(|w| SECRET_NAME_WORDS.contains(w))
}

/// Whether a build argument's value is left out of notes, statements and `inspect` (a
/// secret-looking name, or a proxy setting of the host, which may hold credentials).
pub fn redacted_arg(name: &str) -> bool {
    secret_looking(name) || crate::build::plan::MAGIC_ARGS.contains(&name)
}

/// Move the values of `note`'s build arguments that [`redacted_arg`] names out of it,
/// keeping their names in `build_args_redacted` (sorted, once each): what a build stores,
/// and what `inspect` shows of a note written before values were left out.
pub fn redact_note(note: &mut Provenance) {
    let names: Vec<String> = note
        .build_args
        .keys()
        .filter(|k| redacted_arg(k))
        .cloned()
        .collect();
    for k in names {
        note.build_args.remove(&k);
        note.build_args_redacted.push(k);
    }
    note.build_args_redacted.sort();
    note.build_args_redacted.dedup();
}

/// What the store tells about one base of a build, for its statement entry.
struct BaseDigests {
    /// `sha256` of the base's manifest: the registry's for a pulled base, else the
    /// digest of the base's OCI form; `None` if the store can't tell (the commit is gone).
    sha256: Option<String>,
    /// Where a pulled base was pulled from, as its pull recorded it
    /// (`HOST:PORT/REPO:TAG`); `None` for other bases.
    source: Option<String>,
}

/// A pulled base's registry reference, parsed from what its pull recorded
/// (`HOST:PORT/REPO:TAG` or `HOST:PORT/REPO@sha256:HEX`, see
/// [`crate::registry::Remote`]'s display).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PulledFrom {
    /// `HOST` or `HOST:PORT` (the port left out when it is 443); `docker.io` for Docker
    /// Hub.
    registry: String,
    /// Repository path components (`library`, `alpine`).
    repo: Vec<String>,
    tag: Option<String>,
    /// `sha256:HEX` when it was pulled by digest.
    digest: Option<String>,
}

impl PulledFrom {
    fn parse(source: &str) -> Option<PulledFrom> {
        let (hostport, rest) = source.split_once('/')?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
            _ => (hostport, "443"),
        };
        let (repo, tag, digest) = match rest.split_once('@') {
            Some((r, d)) => (r, None, Some(d.to_string())),
            None => match rest.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, Some(t.to_string()), None),
                _ => (rest, None, None),
            },
        };
        let repo: Vec<String> = repo.split('/').map(str::to_string).collect();
        if host.is_empty() || repo.iter().any(String::is_empty) {
            return None;
        }
        let docker_hub = [crate::registry::DOCKER_HUB, "docker.io", "index.docker.io"]
            .contains(&host)
            && port == "443";
        let registry = match (docker_hub, port) {
            (true, _) => "docker.io".to_string(),
            (false, "443") => host.to_string(),
            (false, p) => format!("{host}:{p}"),
        };
        Some(PulledFrom {
            registry,
            repo,
            tag,
            digest,
        })
    }

    /// The package URL of the image (purl type `docker`), as BuildKit writes a base image's
    /// `uri`: the namespace is the registry and the repository's path but for its last
    /// component, left out for Docker Hub's `library/` images as Docker's short names do;
    /// the version is the tag; a digest reference gives a `digest` qualifier.
    fn purl(&self) -> String {
        let mut ns: Vec<&str> = Vec::new();
        let (name, path) = self.repo.split_last().expect("parse gives a repository");
        if self.registry != "docker.io" {
            ns.push(&self.registry);
        }
        if !(self.registry == "docker.io" && path == ["library"]) {
            ns.extend(path.iter().map(String::as_str));
        }
        let mut p = String::from("pkg:docker/");
        for c in ns {
            p.push_str(&purl_escape(c));
            p.push('/');
        }
        p.push_str(&purl_escape(name));
        if let Some(t) = &self.tag {
            p.push('@');
            p.push_str(&purl_escape(t));
        }
        if let Some(d) = &self.digest {
            p.push_str("?digest=");
            p.push_str(&purl_escape(d));
        }
        p
    }

    /// The reference pinned to the manifest `sha256` (hex), as `docker pull` and
    /// `skopeo copy docker://` take it: `HOST[:PORT]/REPO:TAG@sha256:HEX`.
    fn pinned(&self, sha256: &str) -> String {
        let tag = self.tag.as_ref().map_or(String::new(), |t| format!(":{t}"));
        format!(
            "{}/{}{tag}@sha256:{sha256}",
            self.registry,
            self.repo.join("/")
        )
    }
}

/// Percent-encode `s` for a package URL component: every byte but ASCII letters, digits,
/// `-._~` and `:` (which the purl specification leaves unencoded).
fn purl_escape(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// Whether stage `i`'s base is an earlier stage of the same build (`FROM stage`): its
/// commit is that stage's last state. Such a base is no dependency of its own.
fn is_stage_base(note: &Provenance, base: &ProvenanceBase) -> bool {
    note.bases.iter().filter(|b| b.stage < base.stage).any(|b| {
        let last = note
            .steps
            .iter()
            .rev()
            .find(|s| s.stage == b.stage)
            .map_or(b.commit.as_str(), |s| s.commit.as_str());
        last == base.commit
    })
}

/// The digests of base `b`. While its commit is in the store, the commit tells: the
/// manifest digest its pull recorded (only a commit a pull wrote, see
/// [`crate::registry::pull::pull_record`]), else the digest of its OCI form computed from
/// the commit. When the commit is gone, what the note recorded. Where a pulled base came
/// from is the note's record only, so that a statement of a note written before it was
/// recorded renders (and verifies) as it did.
fn base_digests(store: &Store, b: &ProvenanceBase) -> Result<BaseDigests, ProvenanceError> {
    let repo = store.repo();
    let commit = ObjectId::from_hex(b.commit.as_bytes())
        .ok()
        .filter(|c| repo.find_object(*c).is_ok());
    let Some(commit) = commit else {
        return Ok(BaseDigests {
            sha256: b
                .digest
                .as_deref()
                .and_then(|d| d.strip_prefix("sha256:"))
                .map(str::to_string),
            source: b.source.clone().filter(|_| b.digest.is_some()),
        });
    };
    if let Some(p) = crate::registry::pull::pull_record(&repo, commit)? {
        return Ok(BaseDigests {
            sha256: p.manifest.strip_prefix("sha256:").map(str::to_string),
            source: b.source.clone(),
        });
    }
    let (root, cfg) = store.read(commit)?;
    let d = oci::form_digest(&repo, &root, &cfg).map_err(|source| ProvenanceError::Oci {
        image: b.image.clone(),
        source,
    })?;
    Ok(BaseDigests {
        sha256: Some(d.hex().to_string()),
        source: None,
    })
}

/// The image `commit`'s digest in OCI form: the manifest digest `ch-convert -o oci IMAGE DIR`
/// writes and `ch-image push` sends.
pub fn image_digest(
    store: &Store,
    commit: ObjectId,
    name: &str,
) -> Result<String, ProvenanceError> {
    let (root, cfg) = store.read(commit)?;
    let d =
        oci::form_digest(&store.repo(), &root, &cfg).map_err(|source| ProvenanceError::Oci {
            image: name.to_string(),
            source,
        })?;
    Ok(d.hex().to_string())
}

/// The build note of `commit`, or the error naming `spec` and saying why it has none.
/// When `spec` names an image whose commit another image's build wrote (a build of only
/// `FROM other` gives its base's commit and writes no note), says on standard error whose
/// build the note is of.
fn note_of(store: &Store, commit: ObjectId, spec: &str) -> Result<Provenance, ProvenanceError> {
    let repo = store.repo();
    let name = image_name(store, commit, spec)?;
    match notes::provenance(&repo, commit)? {
        Some(n) => {
            if let Some(name) = name.filter(|m| *m != n.image) {
                crate::info!(
                    "{spec}: the statement is of the build of {} ({name} has no note of its \
                     own: a build of only `FROM {}` gives its base's commit and writes no note)",
                    n.image,
                    crate::image::list_name(&n.image)
                );
            }
            Ok(n)
        }
        None => Err(no_note(store, commit, spec, name.as_deref(), false)?),
    }
}

/// The image `spec` names (`NAME:TAG`), if it is an image's name (not a commit id or
/// `NAME~N`) whose commit is `commit`.
pub fn image_name(
    store: &Store,
    commit: ObjectId,
    spec: &str,
) -> Result<Option<String>, ProvenanceError> {
    let Ok(r) = crate::reference::Reference::parse(spec) else {
        return Ok(None);
    };
    let r = r.with_default_tag();
    Ok((store.image(&r)? == Some(commit)).then(|| r.to_string()))
}

/// The image commits whose build notes most likely record the state `spec` names: the
/// image `NAME` of `NAME~N`, and `TAG` of a stage's image `TAG_stageN` (`foo_stage0`,
/// `foo:1.0_stage0`), so that finding the note reads one note, not every note
/// ([`notes::note_with_step`]).
pub fn note_hints(store: &Store, spec: &str) -> Vec<ObjectId> {
    let base = spec.rsplit_once('~').map_or(spec, |(b, _)| b);
    let unstaged = |s: &str| -> Option<String> {
        let (head, n) = s.rsplit_once("_stage")?;
        n.chars()
            .all(|c| c.is_ascii_digit())
            .then(|| head.to_string())
    };
    let mut names = vec![base.to_string()];
    // `foo_stage0` or `foo_stage0:latest`; `foo:1.0_stage0`.
    let (name, tag) = match base.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (base, None),
    };
    if let Some(n) = unstaged(name) {
        names.push(match tag {
            Some(t) => format!("{n}:{t}"),
            None => n,
        });
    }
    if let Some(t) = tag.and_then(unstaged) {
        names.push(format!("{name}:{t}"));
    }
    names
        .iter()
        .filter_map(|n| crate::reference::Reference::parse(n).ok())
        .filter_map(|r| store.image(&r.with_default_tag()).ok().flatten())
        .collect()
}

/// Why `commit` (named `spec`, the image `name` if it is one) has no build note, as far
/// as the store tells: its import note names other images (a lone `FROM` of one of them
/// gave its commit), or this one (an import); a build note names it as a step (an
/// earlier state; not looked for when the caller has, `scanned`); else the generic
/// [`ProvenanceError::NoNote`].
pub fn no_note(
    store: &Store,
    commit: ObjectId,
    spec: &str,
    name: Option<&str>,
    scanned: bool,
) -> Result<ProvenanceError, ProvenanceError> {
    let repo = store.repo();
    let short = &commit.to_string()[..12];
    if let Some(first) = notes::import_note(&repo, commit)?.and_then(|n| {
        let mine = n
            .imports
            .iter()
            .find(|i| Some(i.image.as_str()) == name)
            .cloned();
        mine.map(|m| (true, m))
            .or(n.imports.into_iter().next().map(|f| (false, f)))
    }) {
        return Ok(match first {
            // The import of this name, or the first of a commit id.
            (mine, i) if mine || name.is_none() => ProvenanceError::NoNoteBecause {
                spec: spec.into(),
                why: format!(
                    "it was {}, not built ({})",
                    match (i.kind.as_str(), i.command.as_deref()) {
                        ("registry", _) => "pulled",
                        (_, Some("ch-convert")) => "converted",
                        _ => "imported",
                    },
                    crate::image::shown(&i.describe())
                ),
                hint: format!("`ch-image inspect {spec}` shows its import note"),
            },
            (_, i) => {
                let other = crate::image::shown(crate::image::list_name(&i.image));
                ProvenanceError::NoNoteBecause {
                    spec: spec.into(),
                    why: format!(
                        "its commit ({short}) is {other}'s, which a build of only `FROM {other}` \
                         gives, and such a build writes no note, so as not to replace its \
                         base's; that commit has an import note ({})",
                        crate::image::shown(&i.describe())
                    ),
                    hint: format!("`ch-image inspect {spec}` shows the import note"),
                }
            }
        });
    }
    let found = match scanned {
        true => None,
        false => notes::note_with_step(&repo, commit, &note_hints(store, spec))?,
    };
    if let Some((image, p, i)) = found {
        let step = &p.steps[i];
        let img = image.to_string();
        let current = match crate::reference::Reference::parse(&p.image) {
            Ok(r) => store.image(&r)?,
            Err(_) => None,
        };
        let target = match current {
            Some(c) if c == image => crate::image::list_name(&p.image).to_string(),
            _ => img[..12].to_string(),
        };
        return Ok(ProvenanceError::NoNoteBecause {
            spec: spec.into(),
            why: format!(
                "it is an intermediate state, step {} ({}) of the build of {} (commit {}), \
                 whose note is on that image's commit only",
                step.n,
                crate::image::shown(step.instruction.lines().next().unwrap_or("")),
                crate::image::shown(&p.image),
                &img[..12]
            ),
            hint: format!("`ch-image inspect --provenance {target}` gives that build's statement"),
        });
    }
    Ok(ProvenanceError::NoNote(spec.into()))
}

/// The statement of the image `commit` (named `spec` on the command line), as a JSON
/// value. See docs/provenance.md for every field.
pub fn statement(store: &Store, commit: ObjectId, spec: &str) -> Result<Value, ProvenanceError> {
    let note = note_of(store, commit, spec)?;
    let digest = image_digest(store, commit, &note.image)?;
    render(store, &note, &digest)
}

/// Render `note` with the image's OCI digest `digest` (hex).
fn render(store: &Store, note: &Provenance, digest: &str) -> Result<Value, ProvenanceError> {
    let mut external = Map::new();
    // The digest of the text the note holds (which a version-2 note also records; `verify`
    // checks the two agree).
    let dockerfile_sha = sha256_hex(note.dockerfile.as_bytes());
    external.insert(
        "dockerfile".into(),
        json!({
            "path": note.dockerfile_path.clone().unwrap_or_else(|| note.dockerfile_name.clone()),
            "digest": { "sha256": dockerfile_sha },
        }),
    );
    let mut args = note.clone();
    redact_note(&mut args);
    external.insert(
        "buildArgs".into(),
        Value::Object(
            args.build_args
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    );
    if !args.build_args_redacted.is_empty() {
        external.insert(
            "buildArgsRedacted".into(),
            Value::Array(
                args.build_args_redacted
                    .into_iter()
                    .map(Value::String)
                    .collect(),
            ),
        );
    }
    external.insert("tag".into(), Value::String(note.image.clone()));
    if let Some(e) = note.source_date_epoch {
        external.insert("sourceDateEpoch".into(), json!(e));
    }
    let mut internal = Map::new();
    if let Some(f) = &note.force {
        internal.insert("force".into(), Value::String(f.clone()));
    }
    if let Some(x) = note.xattrs {
        internal.insert("xattrs".into(), Value::Bool(x));
    }
    internal.insert("noteVersion".into(), json!(note.version));

    let mut deps = Vec::new();
    for b in &note.bases {
        if b.image.eq_ignore_ascii_case("scratch") || is_stage_base(note, b) {
            continue;
        }
        let mut digest = Map::new();
        digest.insert("gitCommit".into(), Value::String(b.commit.clone()));
        let found = base_digests(store, b)?;
        let mut annotations = Map::new();
        annotations.insert("grove.kind".into(), json!("base"));
        annotations.insert("grove.stage".into(), json!(b.stage));
        let mut d = Map::new();
        d.insert("name".into(), Value::String(b.image.clone()));
        // A pulled base: where from, as a package URL (as BuildKit names its bases) and as
        // a reference pinned to the manifest digest.
        if let (Some(from), Some(sha)) = (
            found.source.as_deref().and_then(PulledFrom::parse),
            &found.sha256,
        ) {
            d.insert("uri".into(), Value::String(from.purl()));
            annotations.insert("grove.reference".into(), Value::String(from.pinned(sha)));
        }
        if let Some(s) = found.sha256 {
            digest.insert("sha256".into(), Value::String(s));
        }
        d.insert("digest".into(), Value::Object(digest));
        d.insert("annotations".into(), Value::Object(annotations));
        deps.push(Value::Object(d));
    }
    for s in &note.steps {
        for f in s.files.iter().flatten() {
            let mut digest = Map::new();
            digest.insert("sha256".into(), Value::String(f.sha256.clone()));
            if let Some(g) = &f.git_blob {
                digest.insert("gitBlob".into(), Value::String(g.clone()));
            }
            let mut d = Map::new();
            match (&f.path, &f.url) {
                (_, Some(u)) => {
                    d.insert("uri".into(), Value::String(u.clone()));
                    d.insert("digest".into(), Value::Object(digest));
                    d.insert(
                        "annotations".into(),
                        json!({ "grove.kind": "download", "grove.instruction": s.n }),
                    );
                }
                (p, None) => {
                    d.insert("name".into(), Value::String(p.clone().unwrap_or_default()));
                    d.insert("digest".into(), Value::Object(digest));
                    // A file a RUN bind-mounted shaped the image without being copied
                    // into it: its own kind, with the mount's target.
                    let annotations = match &f.mount {
                        Some(t) => json!({
                            "grove.kind": "mount",
                            "grove.instruction": s.n,
                            "grove.mount": t,
                        }),
                        None => json!({ "grove.kind": "context", "grove.instruction": s.n }),
                    };
                    d.insert("annotations".into(), annotations);
                }
            }
            deps.push(Value::Object(d));
        }
    }

    let mut builder = Map::new();
    builder.insert("id".into(), Value::String(BUILDER_ID.into()));
    if let Some(v) = &note.builder_version {
        builder.insert("version".into(), json!({ "grove": v }));
    }
    let mut run = Map::new();
    run.insert("builder".into(), Value::Object(builder));
    let mut meta = Map::new();
    if let Some(i) = &note.invocation {
        meta.insert("invocationId".into(), Value::String(i.clone()));
    }
    if let Some(t) = &note.started {
        meta.insert("startedOn".into(), Value::String(t.clone()));
    }
    if let Some(t) = &note.finished {
        meta.insert("finishedOn".into(), Value::String(t.clone()));
    }
    if !meta.is_empty() {
        run.insert("metadata".into(), Value::Object(meta));
    }
    run.insert(
        "byproducts".into(),
        json!([{ "name": "grove-commit", "digest": { "gitCommit": note.commit } }]),
    );
    Ok(json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": note.image, "digest": { "sha256": digest } }],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": deps,
            },
            "runDetails": run,
        },
    }))
}

/// How one claim of a statement compares with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Match,
    /// What differs, in words.
    Mismatch(String),
    /// Why the store can't tell.
    NotCheckable(String),
}

/// One claim and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The statement field, as a JSON path (`predicate.runDetails.builder.id`).
    pub field: String,
    pub verdict: Verdict,
}

/// Show a JSON value briefly for a message.
fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "absent".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => v.to_string(),
    }
}

/// Compare `got` with `want` (both may be absent).
fn compare(field: &str, want: Option<&Value>, got: Option<&Value>) -> Claim {
    let verdict = if want == got {
        Verdict::Match
    } else {
        Verdict::Mismatch(format!(
            "statement has {}, store has {}",
            show(got),
            show(want)
        ))
    };
    Claim {
        field: field.into(),
        verdict,
    }
}

/// Compare the keys of object `want` with those of `got` one by one; keys only in `got`
/// are mismatches (unexpected), as SLSA asks verifiers of external parameters.
fn compare_object(claims: &mut Vec<Claim>, path: &str, want: Option<&Value>, got: Option<&Value>) {
    let empty = Map::new();
    let w = want.and_then(Value::as_object).unwrap_or(&empty);
    let g = got.and_then(Value::as_object).unwrap_or(&empty);
    if got.is_some_and(|g| !g.is_object()) {
        claims.push(Claim {
            field: path.into(),
            verdict: Verdict::Mismatch(format!("statement has {}, not an object", show(got))),
        });
        return;
    }
    for (k, v) in w {
        claims.push(compare(&format!("{path}.{k}"), Some(v), g.get(k)));
    }
    for (k, v) in g {
        if !w.contains_key(k) {
            claims.push(Claim {
                field: format!("{path}.{k}"),
                verdict: Verdict::Mismatch(format!(
                    "statement has {}, the store's build record has no such field",
                    show(Some(v))
                )),
            });
        }
    }
}

/// Compare two DigestSets: every algorithm the statement gives must be one the store
/// computes, with the same value, and at least one must be given.
fn compare_digests(field: &str, want: Option<&Value>, got: Option<&Value>) -> Claim {
    let empty = Map::new();
    let w = want.and_then(Value::as_object).unwrap_or(&empty);
    let g = got.and_then(Value::as_object).unwrap_or(&empty);
    let mut problems = Vec::new();
    for (k, v) in g {
        match w.get(k) {
            Some(x) if x == v => {}
            Some(x) => problems.push(format!(
                "{k}: statement has {}, store has {}",
                show(Some(v)),
                show(Some(x))
            )),
            None => problems.push(format!(
                "{k}: statement has {}, store has no {k} digest",
                show(Some(v))
            )),
        }
    }
    if g.is_empty() {
        problems.push("statement gives no digest".into());
    }
    Claim {
        field: field.into(),
        verdict: if problems.is_empty() {
            Verdict::Match
        } else {
            Verdict::Mismatch(problems.join("; "))
        },
    }
}

/// The identity of a resolved dependency: its kind, stage or instruction, and name or URI
/// (a base's by its stage and name only: its URI is a claim checked apart).
fn dep_key(d: &Value) -> String {
    let a = &d["annotations"];
    let uri = match a["grove.kind"].as_str() {
        Some("base") => "",
        _ => d["uri"].as_str().unwrap_or(""),
    };
    format!(
        "{} {} {} {}",
        a["grove.kind"].as_str().unwrap_or("?"),
        a["grove.stage"]
            .as_u64()
            .or(a["grove.instruction"].as_u64())
            .map_or("?".into(), |n| n.to_string()),
        d["name"].as_str().unwrap_or(""),
        uri
    )
}

/// A dependency for messages: `base busybox (stage 0)`, `context file a.txt
/// (instruction 3)`.
fn dep_label(d: &Value) -> String {
    let a = &d["annotations"];
    let name = d["name"].as_str().or(d["uri"].as_str()).unwrap_or("?");
    match a["grove.kind"].as_str() {
        Some("base") => format!("base {name} (stage {})", a["grove.stage"]),
        Some("context") => format!(
            "context file {name} (instruction {})",
            a["grove.instruction"]
        ),
        Some("download") => format!("download {name} (instruction {})", a["grove.instruction"]),
        Some("mount") => format!(
            "bind-mounted context file {name} (instruction {})",
            a["grove.instruction"]
        ),
        _ => format!("dependency {name}"),
    }
}

/// Every file blob id of `root`, recursively.
fn blobs_of(root: &Dir, out: &mut HashSet<ObjectId>) {
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for n in d.children.values() {
            match n {
                Node::Dir(sub) => stack.push(sub),
                Node::File(f) => {
                    out.insert(f.oid);
                }
                _ => {}
            }
        }
    }
}

/// Check the note's record of a context file against the step's commit: the commit holds
/// a file whose blob is the recorded `gitBlob`, and that blob's sha256 is the recorded one.
fn check_in_commit(
    store: &Store,
    trees: &mut BTreeMap<String, HashSet<ObjectId>>,
    step_commit: &str,
    want: &Value,
) -> Result<Option<String>, ProvenanceError> {
    let (Some(blob), Some(sha)) = (
        want["digest"]["gitBlob"].as_str(),
        want["digest"]["sha256"].as_str(),
    ) else {
        return Ok(None);
    };
    let Ok(commit) = ObjectId::from_hex(step_commit.as_bytes()) else {
        return Ok(Some(format!(
            "the build record names a bad commit {step_commit}"
        )));
    };
    if !trees.contains_key(step_commit) {
        let mut set = HashSet::new();
        if store.repo().find_object(commit).is_ok() {
            let (root, _) = store.read(commit)?;
            blobs_of(&root, &mut set);
        }
        trees.insert(step_commit.to_string(), set);
    }
    let Ok(id) = ObjectId::from_hex(blob.as_bytes()) else {
        return Ok(Some(format!("the build record names a bad blob id {blob}")));
    };
    if !trees[step_commit].contains(&id) {
        return Ok(Some(format!(
            "the step's commit {} holds no file with blob {blob}",
            &step_commit[..12.min(step_commit.len())]
        )));
    }
    // Streamed: a context file may be big, and the commit may come from a remote.
    let mut r = git::open_blob(&store.repo(), id)?;
    let mut h = sha2::Sha256::default();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut r, &mut buf)
            .map_err(|source| ProvenanceError::Blob { blob: id, source })?;
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut h, &buf[..n]);
    }
    let actual = hex::encode(sha2::Digest::finalize(h));
    if actual != sha {
        return Ok(Some(format!(
            "blob {blob} in the step's commit has sha256 {actual}, the build record {sha}"
        )));
    }
    Ok(None)
}

/// Check `given` (a statement read from a file) against image `commit` (named `spec`):
/// one claim per field the statement makes or the store expects.
pub fn verify(
    store: &Store,
    commit: ObjectId,
    spec: &str,
    given: &Value,
) -> Result<Vec<Claim>, ProvenanceError> {
    let note = note_of(store, commit, spec)?;
    let digest = image_digest(store, commit, spec)?;
    let want = render(store, &note, &digest)?;
    let mut claims = Vec::new();
    for f in ["_type", "predicateType"] {
        claims.push(compare(f, want.get(f), given.get(f)));
    }
    // The subject: the image's OCI digest, recomputed from its commit.
    let ws = &want["subject"][0];
    match given["subject"].as_array().map(Vec::as_slice) {
        Some([gs]) => {
            claims.push(compare("subject[0].name", ws.get("name"), gs.get("name")));
            claims.push(compare_digests(
                "subject[0].digest",
                ws.get("digest"),
                gs.get("digest"),
            ));
        }
        _ => claims.push(Claim {
            field: "subject".into(),
            verdict: Verdict::Mismatch(format!(
                "statement has {}, expected one subject (the image)",
                show(given.get("subject"))
            )),
        }),
    }
    let wd = &want["predicate"]["buildDefinition"];
    let gd = &given["predicate"]["buildDefinition"];
    claims.push(compare(
        "predicate.buildDefinition.buildType",
        wd.get("buildType"),
        gd.get("buildType"),
    ));
    if let Some(recorded) = &note.dockerfile_sha256 {
        if *recorded != sha256_hex(note.dockerfile.as_bytes()) {
            claims.push(Claim {
                field: "predicate.buildDefinition.externalParameters.dockerfile".into(),
                verdict: Verdict::Mismatch(format!(
                    "the build record's Dockerfile text does not have its recorded sha256 {recorded}"
                )),
            });
        }
    }
    compare_object(
        &mut claims,
        "predicate.buildDefinition.externalParameters",
        wd.get("externalParameters"),
        gd.get("externalParameters"),
    );
    compare_object(
        &mut claims,
        "predicate.buildDefinition.internalParameters",
        wd.get("internalParameters"),
        gd.get("internalParameters"),
    );
    // Dependencies, matched by kind, stage or instruction, and name.
    let path = "predicate.buildDefinition.resolvedDependencies";
    let empty = Vec::new();
    let wdeps = wd["resolvedDependencies"].as_array().unwrap_or(&empty);
    let gdeps = gd["resolvedDependencies"].as_array().unwrap_or(&empty);
    // Entries with the same key (a file named twice by one COPY) pair up in order.
    let mut given_by_key: BTreeMap<String, std::collections::VecDeque<(usize, &Value)>> =
        BTreeMap::new();
    for (i, d) in gdeps.iter().enumerate() {
        given_by_key
            .entry(dep_key(d))
            .or_default()
            .push_back((i, d));
    }
    let mut seen = HashSet::new();
    let mut trees = BTreeMap::new();
    for w in wdeps {
        let key = dep_key(w);
        let label = dep_label(w);
        let Some((i, g)) = given_by_key.get_mut(&key).and_then(|q| q.pop_front()) else {
            claims.push(Claim {
                field: format!("{path} ({label})"),
                verdict: Verdict::Mismatch("missing from the statement".into()),
            });
            continue;
        };
        seen.insert(i);
        let field = format!("{path}[{i}] ({label})");
        let mut c = compare_digests(&field, w.get("digest"), g.get("digest"));
        if w["annotations"]["grove.kind"] == "base" && w["digest"].get("sha256").is_none() {
            if let (Verdict::Mismatch(_), Some(gd)) = (&c.verdict, g.get("digest")) {
                // The base's commit is gone: only its commit id can be compared.
                c = if gd.get("gitCommit") == w["digest"].get("gitCommit") {
                    Claim {
                        field,
                        verdict: Verdict::NotCheckable(
                            "the base's commit is not in this store; its gitCommit matches".into(),
                        ),
                    }
                } else {
                    c
                };
            }
        }
        if w["annotations"]["grove.kind"] == "base" {
            // Where a pulled base came from: the store knows it from the pull's record.
            for (k, wv, gv) in [
                ("uri", w.get("uri"), g.get("uri")),
                (
                    "annotations.grove.reference",
                    w["annotations"].get("grove.reference"),
                    g["annotations"].get("grove.reference"),
                ),
            ] {
                if wv.is_some() || gv.is_some() {
                    claims.push(compare(&format!("{path}[{i}].{k} ({label})"), wv, gv));
                }
            }
        }
        if c.verdict == Verdict::Match && w["annotations"]["grove.kind"] == "context" {
            let n = w["annotations"]["grove.instruction"].as_u64();
            let step = note.steps.iter().find(|s| Some(s.n as u64) == n);
            if let Some(s) = step {
                if let Some(problem) = check_in_commit(store, &mut trees, &s.commit, w)? {
                    c.verdict = Verdict::Mismatch(problem);
                }
            }
        }
        claims.push(c);
    }
    for (i, g) in gdeps.iter().enumerate() {
        if !seen.contains(&i) {
            claims.push(Claim {
                field: format!("{path}[{i}] ({})", dep_label(g)),
                verdict: Verdict::Mismatch("not in the image's build record".into()),
            });
        }
    }
    let wr = &want["predicate"]["runDetails"];
    let gr = &given["predicate"]["runDetails"];
    claims.push(compare(
        "predicate.runDetails.builder.id",
        wr["builder"].get("id"),
        gr["builder"].get("id"),
    ));
    if wr["builder"].get("version").is_some() {
        compare_object(
            &mut claims,
            "predicate.runDetails.builder.version",
            wr["builder"].get("version"),
            gr["builder"].get("version"),
        );
    } else {
        claims.push(Claim {
            field: "predicate.runDetails.builder.version".into(),
            verdict: Verdict::NotCheckable(
                "the build record (a version-1 note) has no builder version".into(),
            ),
        });
    }
    // The store keeps the record of the image's last build: a statement of an earlier
    // build of the same image (another invocation) can't be checked for its times.
    let other_build = match (
        wr["metadata"].get("invocationId"),
        gr["metadata"].get("invocationId"),
    ) {
        (Some(w), Some(g)) if w != g => Some(format!(
            "the store's record is of another build of this image (invocation {}, started {})",
            show(Some(w)),
            show(wr["metadata"].get("startedOn"))
        )),
        _ => None,
    };
    for k in ["invocationId", "startedOn", "finishedOn"] {
        let field = format!("predicate.runDetails.metadata.{k}");
        match wr["metadata"].get(k) {
            Some(_) if other_build.is_some() => claims.push(Claim {
                field,
                verdict: Verdict::NotCheckable(other_build.clone().unwrap_or_default()),
            }),
            Some(w) => claims.push(compare(&field, Some(w), gr["metadata"].get(k))),
            None => claims.push(Claim {
                field,
                verdict: Verdict::NotCheckable(
                    "the build record (a version-1 note) has no times".into(),
                ),
            }),
        }
    }
    claims.push(compare(
        "predicate.runDetails.byproducts",
        wr.get("byproducts"),
        gr.get("byproducts"),
    ));
    Ok(claims)
}

/// The report of `verify`: one line per claim, `match`, `mismatch` or `not checkable`,
/// the field, and for the last two what differs or why.
///
/// A field names the statement's keys and a dependency's name, and a reason quotes its
/// values (the statement is any file, a note any fetched text): both are [`shown`], so a
/// newline can't forge a `match` line and an escape sequence never reaches the terminal.
pub fn report(claims: &[Claim]) -> String {
    use crate::image::shown;
    let mut o = String::new();
    for c in claims {
        let field = shown(&c.field);
        let _ = match &c.verdict {
            Verdict::Match => writeln!(o, "match          {field}"),
            Verdict::Mismatch(why) => writeln!(o, "mismatch       {field}: {}", shown(why)),
            Verdict::NotCheckable(why) => {
                writeln!(o, "not checkable  {field}: {}", shown(why))
            }
        };
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn secret_and_proxy_build_args_are_left_out() {
        assert!(redacted_arg("MY_SECRET"));
        assert!(redacted_arg("github_token"));
        assert!(redacted_arg("DB_Password"));
        assert!(redacted_arg("HTTPS_PROXY"));
        assert!(!redacted_arg("VERSION"));
        // BuildKit's SecretsUsedInArgOrEnv words, whole words only, PUBLIC exempt.
        for n in [
            "API_KEY",
            "ssh_key",
            "NPM_AUTH",
            "apikey",
            "KEY",
            "DB_PWORD",
            "AUTH_HEADER",
        ] {
            assert!(redacted_arg(n), "{n}");
        }
        for n in ["PUBLIC_KEY", "KEYBOARD", "AUTHOR", "MONKEY", "API-KEY"] {
            assert!(!redacted_arg(n), "{n}");
        }
    }

    #[test]
    fn pulled_bases_get_the_package_url_buildkit_writes() {
        let purl = |s: &str| PulledFrom::parse(s).map(|p| p.purl());
        assert_eq!(
            purl("registry-1.docker.io:443/library/alpine:3.19").as_deref(),
            Some("pkg:docker/alpine@3.19")
        );
        assert_eq!(
            purl("registry-1.docker.io:443/user/app:1").as_deref(),
            Some("pkg:docker/user/app@1")
        );
        assert_eq!(
            purl("127.0.0.1:5000/prov/base:1").as_deref(),
            Some("pkg:docker/127.0.0.1:5000/prov/base@1")
        );
        assert_eq!(
            purl("ghcr.io:443/o/r/img@sha256:ab").as_deref(),
            Some("pkg:docker/ghcr.io/o/r/img?digest=sha256:ab")
        );
        assert_eq!(purl("internal library: scratch"), None);
        assert_eq!(purl("host:443//x:1"), None);
        let p = PulledFrom::parse("127.0.0.1:5000/prov/base:1").unwrap();
        assert_eq!(p.pinned("ab"), "127.0.0.1:5000/prov/base:1@sha256:ab");
        let p = PulledFrom::parse("registry-1.docker.io:443/library/alpine:3").unwrap();
        assert_eq!(p.pinned("cd"), "docker.io/library/alpine:3@sha256:cd");
    }

    #[test]
    fn redacting_a_note_moves_secret_and_proxy_values_out_and_keeps_names_once() {
        let text = br#"{"bases":[],"build_args":{"API_TOKEN":"t","V":"1","http_proxy":"p"},
            "build_args_redacted":["DB_PASSWORD"],"commit":"c1","context_hash":"h",
            "dockerfile":"FROM scratch\n","dockerfile_name":"Dockerfile","image":"x:latest",
            "steps":[],"version":2}"#;
        let mut n = Provenance::parse(text).expect("note");
        redact_note(&mut n);
        assert_eq!(
            n.build_args.into_iter().collect::<Vec<_>>(),
            [("V".to_string(), "1".to_string())]
        );
        assert_eq!(
            n.build_args_redacted,
            ["API_TOKEN", "DB_PASSWORD", "http_proxy"]
        );
    }

    #[test]
    fn extra_external_parameters_are_mismatches() {
        let mut claims = Vec::new();
        let want = json!({"a": "1"});
        let got = json!({"a": "1", "b": "2"});
        compare_object(&mut claims, "p", Some(&want), Some(&got));
        assert_eq!(claims[0].verdict, Verdict::Match);
        assert_eq!(claims[1].field, "p.b");
        assert!(matches!(claims[1].verdict, Verdict::Mismatch(_)));
    }
}
