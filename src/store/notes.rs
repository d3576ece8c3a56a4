//! Provenance notes: git notes under `refs/notes/grove`, one blob per image commit, so
//! that `git notes --ref=grove show COMMIT` shows how an image was built and the notes
//! travel with the commits. Each note update is a commit (deterministic identity) whose
//! tree maps commit ids (hex, flat) to note blobs.
//!
//! A note's content is a [`Provenance`], JSON as docs/store-format.md describes; the build
//! writes it and `history` and `inspect` read it, all through that one type.

use gix::bstr::ByteSlice;
use gix::objs::tree::{Entry, EntryKind};
use gix::ObjectId;

use super::git::{self, git_err, Expect, GitError, RefUpdateError};

/// The notes ref.
pub const NOTES_REF: &str = "refs/notes/grove";

/// Version of the [`Provenance`] JSON this Grove writes. Version 2 added what a
/// provenance statement needs and a later reader can't recompute (the Dockerfile's
/// digest and path, the context files' digests, base manifest digests, the builder's
/// version, the build's times and invocation id); a version-1 note is still read (those
/// fields absent).
pub const PROVENANCE_VERSION: u32 = 2;

/// The oldest version of the [`Provenance`] JSON this Grove reads.
pub const PROVENANCE_VERSION_MIN: u32 = 1;

/// How an image was built: the note a build attaches to the image's commit
/// (docs/store-format.md, "Provenance notes"). Fields are declared in the order they are
/// written (alphabetical, as earlier versions wrote them), so an unchanged rebuild
/// writes the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    /// The base of each stage.
    pub bases: Vec<ProvenanceBase>,
    /// `--build-arg` values as given, but for the names in `build_args_redacted`.
    pub build_args: std::collections::BTreeMap<String, String>,
    /// `--build-arg` names given whose values are not stored: names that look like
    /// secrets and the proxy settings (`crate::provenance::redacted_arg`). Notes written
    /// before it existed hold those values in `build_args` (optional in version 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_args_redacted: Vec<String>,
    /// The Grove version that built the image (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder_version: Option<String>,
    /// How the build used the cache when it did not read it: `rebuild` (`--rebuild`:
    /// every step executed, the cache written) or `no-cache` (`--no-cache`: neither read
    /// nor written); absent when the cache was read, and in notes written before it was
    /// recorded (optional in version 2). Tells `history --why` that a step ran because the
    /// cache was not read, not because anything differed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// The image's commit id (hex).
    pub commit: String,
    /// blake3 (hex) over the content hashes of every COPY and ADD source set, in order.
    pub context_hash: String,
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Its name as given (`Dockerfile`, a path, `-`).
    pub dockerfile_name: String,
    /// Its path relative to the context when it is inside it, else as given (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_path: Option<String>,
    /// sha256 (hex) of the Dockerfile's bytes as read (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile_sha256: Option<String>,
    /// When the build ended, RFC 3339 UTC (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Root emulation of RUN: `seccomp`, `fakeroot` or `none` (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<String>,
    /// The image reference the build wrote.
    pub image: String,
    /// A unique id of the build (hex, version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<String>,
    /// `SOURCE_DATE_EPOCH` of the build, if any (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// When the build started, RFC 3339 UTC (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Every instruction that made a commit, in order.
    pub steps: Vec<ProvenanceStep>,
    /// [`PROVENANCE_VERSION`] (or an older version read).
    pub version: u32,
    /// Whether extended attributes were recorded (`--xattrs`, version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<bool>,
}

/// The base of one stage of a build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProvenanceBase {
    /// The base's commit id (hex).
    pub commit: String,
    /// The registry manifest digest (`sha256:HEX`) of a pulled base, as its pull recorded
    /// it (version 2; absent for other bases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The FROM image as written after substitution (`scratch`, a stage alias, a reference).
    pub image: String,
    /// Where a pulled base was pulled from (`HOST:PORT/REPO:TAG` or `HOST:PORT/REPO@sha256:HEX`),
    /// as its pull recorded it (optional in version 2; absent for other bases and in notes
    /// written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The stage's index, from 0.
    pub stage: usize,
}

/// One instruction of a build that made (or found) a commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProvenanceStep {
    /// The commit id (hex) the instruction gave.
    pub commit: String,
    /// The context files and downloads its sources read (COPY, ADD), with their digests
    /// (version 2; absent for other instructions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<ProvenanceFile>>,
    /// Whether it came from the build cache.
    pub hit: bool,
    /// The instruction as written.
    pub instruction: String,
    /// Its cache key (hex).
    pub key: String,
    /// Its number in the Dockerfile, from 1.
    pub n: usize,
    /// Its stage's index, from 0.
    pub stage: usize,
    /// For a step executed with the cache on: why it missed (what differed from the
    /// closest cache entry on the same parent). Absent for hits, and in notes of builds
    /// before Grove recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<Vec<String>>,
}

/// A file a COPY or ADD read (a regular file of the context, or an `ADD` download), or a
/// context file a RUN bind-mounted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProvenanceFile {
    /// The git blob id (hex) of its content: the id of the blob the step's commit holds.
    /// Absent for downloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_blob: Option<String>,
    /// Its path relative to the context, bytes outside printable ASCII escaped as in
    /// key-input records (`\xff`); absent for downloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// sha256 (hex) of its content.
    pub sha256: String,
    /// The URL of an `ADD` download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For a context file a RUN bind-mounted (`--mount=type=bind`) instead of copying:
    /// the mount's target in the container. Such a file is not in the step's commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

impl Provenance {
    /// The note's bytes: pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("provenance serializes");
        text.push(b'\n');
        text
    }

    /// Parse a note; `None` if it is not a provenance note Grove can read (another tool's
    /// note, or a later version).
    pub fn parse(bytes: &[u8]) -> Option<Provenance> {
        serde_json::from_slice::<Provenance>(bytes)
            .ok()
            .filter(|p| (PROVENANCE_VERSION_MIN..=PROVENANCE_VERSION).contains(&p.version))
    }
}

/// Version of the [`ImportNote`] JSON this Grove writes. Version 2 added pulls and
/// `ch-convert` into the store (entries without `path`, with `reference`, `manifest`,
/// `index`, `command`); a version-1 note is still read, and written back as version 2
/// when an entry is added.
pub const IMPORT_NOTE_VERSION: u32 = 2;

/// The oldest version of the [`ImportNote`] JSON this Grove reads.
pub const IMPORT_NOTE_VERSION_MIN: u32 = 1;

/// Where an imported image came from: the note `ch-image import`, `ch-image pull` and
/// `ch-convert` into the store attach to the image's commit (docs/store-format.md, "Import
/// notes"). One commit may be imported under several names (the same content), so the
/// note lists imports by image name; importing a name again replaces its entry. Not a
/// [`Provenance`]: readers of build notes ignore it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportNote {
    /// One per image name imported as this commit, in the order first imported.
    pub imports: Vec<ImportSource>,
    /// Always `import`: what tells this note from a build's.
    pub kind: String,
    /// [`IMPORT_NOTE_VERSION`] (or an older version read).
    pub version: u32,
}

/// One import of a commit (fields in the order written: alphabetical).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportSource {
    /// The command that imported: `ch-image import`, `ch-image pull`, `ch-convert`
    /// (version 2; absent in version-1 notes, all of `ch-image import`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The image reference the import wrote.
    pub image: String,
    /// When, RFC 3339 UTC (whole seconds).
    pub imported: String,
    /// The digest (`sha256:HEX`) of the image index a pull went through to its manifest
    /// (version 2; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// What was read: `tarball` (any file: a tar archive, compressed or not), `directory`,
    /// `squashfs`, `oci` (an OCI layout or an archive of one), `registry` (a pull),
    /// `docker`, `podman` (their storage, through `save`).
    pub kind: String,
    /// The manifest digest (`sha256:HEX`): the registry's of a pull, the layout's of an
    /// OCI input (version 2; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The path as given on the command line (UTF-8 as is; other bytes escaped, `\xff`);
    /// absent for a pull, Docker and Podman (version 2: required in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What a pull asked the registry for, `HOST:PORT/REPO:TAG` (or `@sha256:HEX`), or
    /// the image name given to Docker or Podman (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// sha256 (hex) of the file's bytes as read; absent for a directory, a pull, Docker
    /// and Podman.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl ImportNote {
    /// The note's bytes: pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("import note serializes");
        text.push(b'\n');
        text
    }

    /// Parse a note; `None` if it is not an import note of a version Grove reads (a
    /// version-1 note must have every entry's `path`).
    pub fn parse(bytes: &[u8]) -> Option<ImportNote> {
        serde_json::from_slice::<ImportNote>(bytes)
            .ok()
            .filter(|n| {
                n.kind == "import"
                    && (IMPORT_NOTE_VERSION_MIN..=IMPORT_NOTE_VERSION).contains(&n.version)
                    && (n.version > 1 || n.imports.iter().all(|i| i.path.is_some()))
            })
    }
}

impl ImportSource {
    /// Where from, without the name and time: `tarball PATH, sha256:HEX`, `registry
    /// REFERENCE, manifest sha256:HEX, index sha256:HEX`. With `short`, digests cut to 12
    /// hex digits and no commas (`history`'s form: `tarball PATH sha256:HEX12`).
    pub fn source(&self, short: bool) -> String {
        let cut = |d: &str| -> String {
            let hex = d.strip_prefix("sha256:").unwrap_or(d);
            match short {
                // A fetched note's digest may be any text: cut only at a character.
                true => format!("sha256:{}", hex.get(..12).unwrap_or(hex)),
                false => format!("sha256:{hex}"),
            }
        };
        let mut head = self.kind.clone();
        if let Some(p) = self.path.as_ref().or(self.reference.as_ref()) {
            head.push(' ');
            head.push_str(p);
        }
        let mut digests = Vec::new();
        if let Some(d) = &self.sha256 {
            digests.push(cut(d));
        }
        if let Some(d) = &self.manifest {
            digests.push(format!("manifest {}", cut(d)));
        }
        if let Some(d) = &self.index {
            digests.push(format!("index {}", cut(d)));
        }
        match (digests.is_empty(), short) {
            (true, _) => head,
            (false, true) => format!("{head} {}", digests.join(" ")),
            (false, false) => format!("{head}, {}", digests.join(", ")),
        }
    }

    /// In words, as `inspect` shows it: `tarball PATH, sha256:HEX as NAME at TIME`, then
    /// ` by COMMAND` when the entry records it.
    pub fn describe(&self) -> String {
        let by = self
            .command
            .as_ref()
            .map(|c| format!(" by {c}"))
            .unwrap_or_default();
        format!(
            "{} as {} at {}{by}",
            self.source(false),
            self.image,
            self.imported
        )
    }
}

/// The import note of `commit`, if it has one Grove can read.
pub fn import_note(
    repo: &gix::Repository,
    commit: ObjectId,
) -> Result<Option<ImportNote>, GitError> {
    Ok(get(repo, commit)?.and_then(|n| ImportNote::parse(&n)))
}

/// The sha256 of a file being imported, for its import note: read on a thread of its
/// own beside the import (the second read mostly from the page cache).
pub struct FileDigest(Option<std::thread::JoinHandle<Result<String, crate::error::IoError>>>);

impl FileDigest {
    /// Start hashing `path`, if given (a directory or a named image has no digest).
    pub fn start(path: Option<&std::path::Path>) -> FileDigest {
        use crate::error::IoResultExt;
        FileDigest(path.map(|p| {
            let p = p.to_path_buf();
            std::thread::spawn(move || {
                std::fs::File::open(&p)
                    .and_then(crate::oci::digest::hash_reader)
                    .map(|(d, _)| d.hex().to_string())
                    .at("read", &p)
            })
        }))
    }

    /// The digest in hex, once read; `None` if none was started.
    pub fn finish(self) -> Result<Option<String>, crate::error::IoError> {
        self.0
            .map(|h| h.join().expect("the hashing thread does not panic"))
            .transpose()
    }
}

/// Record `src` in the import note of `commit`: replaces the entry of the same image
/// name, keeps the others. (A build note is never on an import's commit: builds note only
/// commits their steps made, and those have parents.)
pub fn add_import(
    repo: &gix::Repository,
    commit: ObjectId,
    src: ImportSource,
) -> Result<(), GitError> {
    let mut note = import_note(repo, commit)?.unwrap_or(ImportNote {
        imports: Vec::new(),
        kind: "import".into(),
        version: IMPORT_NOTE_VERSION,
    });
    note.version = IMPORT_NOTE_VERSION;
    match note.imports.iter_mut().find(|i| i.image == src.image) {
        Some(i) => *i = src,
        None => note.imports.push(src),
    }
    set(repo, commit, &note.to_bytes())
}

/// Record a pull of `image` from `reference` (`HOST:PORT/REPO:TAG`) that gave `commit`:
/// the registry manifest digest `manifest` and the index digest `index` if the pull went
/// through one. Writes nothing when the note already has this image's entry for the same
/// reference and digests (a pull that found the image up to date keeps the time of the
/// pull that recorded it).
pub fn record_pull(
    repo: &gix::Repository,
    commit: ObjectId,
    image: &str,
    reference: &str,
    manifest: &str,
    index: Option<&str>,
) -> Result<(), GitError> {
    let same = |i: &ImportSource| {
        i.image == image
            && i.kind == "registry"
            && i.reference.as_deref() == Some(reference)
            && i.manifest.as_deref() == Some(manifest)
            && i.index.as_deref() == index
    };
    if import_note(repo, commit)?.is_some_and(|n| n.imports.iter().any(same)) {
        return Ok(());
    }
    add_import(
        repo,
        commit,
        ImportSource {
            command: Some("ch-image pull".into()),
            image: image.to_string(),
            imported: crate::provenance::rfc3339(std::time::SystemTime::now()),
            index: index.map(str::to_string),
            kind: "registry".into(),
            manifest: Some(manifest.to_string()),
            reference: Some(reference.to_string()),
            ..Default::default()
        },
    )
}

/// The provenance note of `commit`, if it has one Grove can read.
pub fn provenance(
    repo: &gix::Repository,
    commit: ObjectId,
) -> Result<Option<Provenance>, GitError> {
    Ok(get(repo, commit)?.and_then(|n| Provenance::parse(&n)))
}

/// The note attached to `commit`, if any.
pub fn get(repo: &gix::Repository, commit: ObjectId) -> Result<Option<Vec<u8>>, GitError> {
    let Some(tip) = git::get_ref(repo, NOTES_REF)? else {
        return Ok(None);
    };
    let c = repo
        .find_commit(tip)
        .map_err(git_err("find notes commit"))?;
    let tree_id = c.tree_id().map_err(git_err("read notes tree"))?.detach();
    let name = commit.to_string();
    let found = git::with_tree(repo, tree_id, |t| {
        t.entries
            .iter()
            .find(|e| e.filename.as_bytes() == name.as_bytes())
            .map(|e| e.oid.to_owned())
    })?;
    let Some(id) = found else {
        return Ok(None);
    };
    git::read_bounded(repo, commit, "provenance note blob", id, MAX_NOTE)
        .map(Some)
        .map_err(|e| GitError {
            action: format!("read the note of commit {commit}"),
            source: Box::new(e),
        })
}

/// Every note: the commit it annotates and its blob, in the notes tree's order. Entries
/// not named by a commit id (another tool's) are left out.
pub fn list(repo: &gix::Repository) -> Result<Vec<(ObjectId, ObjectId)>, GitError> {
    let Some(tip) = git::get_ref(repo, NOTES_REF)? else {
        return Ok(Vec::new());
    };
    Ok(entries_of(repo, tip)?
        .into_iter()
        .filter(|e| e.mode.is_blob())
        .filter_map(|e| Some((ObjectId::from_hex(e.filename.as_bytes()).ok()?, e.oid)))
        .collect())
}

/// The first build note with a step that made or found `step`: the image's commit, the
/// note, and the step's index in it. `None` when no note has one. Tries the notes of
/// `step` itself and of the image commits in `hints` first (the image a `NAME~N` or
/// `TAG_stageN` names: one note read); else reads every note until one names the commit
/// (by commit id order), each searched for the id before it is parsed.
pub fn note_with_step(
    repo: &gix::Repository,
    step: ObjectId,
    hints: &[ObjectId],
) -> Result<Option<(ObjectId, Provenance, usize)>, GitError> {
    let hex = step.to_string();
    let names = |b: &[u8]| -> Option<(Provenance, usize)> {
        b.find(hex.as_bytes())?;
        let p = Provenance::parse(b)?;
        let i = p.steps.iter().position(|s| s.commit == hex)?;
        Some((p, i))
    };
    for &c in std::iter::once(&step).chain(hints) {
        if let Some((p, i)) = get(repo, c).ok().flatten().and_then(|b| names(&b)) {
            return Ok(Some((c, p, i)));
        }
    }
    for (commit, blob) in list(repo)? {
        let Ok(b) = git::read_bounded(repo, commit, "provenance note blob", blob, MAX_NOTE) else {
            continue;
        };
        if let Some((p, i)) = names(&b) {
            return Ok(Some((commit, p, i)));
        }
    }
    Ok(None)
}

/// Most bytes of a note Grove reads (a note lists every context file a build read, about
/// 150 bytes each: over a million files).
pub const MAX_NOTE: u64 = 256 << 20;

/// Check the notes of notes commit `tip` (fetched from a remote) that the local notes
/// don't have, before any is read or merged: each must be a blob named by a commit id,
/// of at most [`MAX_NOTE`] bytes. Reads headers only.
pub fn check_fetched(repo: &gix::Repository, tip: ObjectId) -> Result<(), git::ReadError> {
    let local: std::collections::HashSet<ObjectId> = match git::get_ref(repo, NOTES_REF)? {
        Some(t) => entries_of(repo, t)?.into_iter().map(|e| e.oid).collect(),
        None => Default::default(),
    };
    for e in entries_of(repo, tip)? {
        if local.contains(&e.oid) {
            continue;
        }
        let bad = |reason| git::ReadError::BadEntry {
            commit: tip,
            entry: super::model::show(e.filename.as_ref()),
            reason,
        };
        let Ok(commit) = ObjectId::from_hex(e.filename.as_bytes()) else {
            return Err(bad("note not named by a commit id"));
        };
        if !e.mode.is_blob() {
            return Err(bad("note is not a blob"));
        }
        git::check_size(repo, commit, "provenance note blob", e.oid, MAX_NOTE)?;
    }
    Ok(())
}

/// The entries of the notes tree of notes commit `tip`.
fn entries_of(repo: &gix::Repository, tip: ObjectId) -> Result<Vec<Entry>, GitError> {
    let c = repo
        .find_commit(tip)
        .map_err(git_err("find notes commit"))?;
    let tree_id = c.tree_id().map_err(git_err("read notes tree"))?.detach();
    git::with_tree(repo, tree_id, |t| {
        t.entries
            .iter()
            .map(|e| Entry {
                mode: e.mode,
                filename: e.filename.to_owned(),
                oid: e.oid.to_owned(),
            })
            .collect()
    })
}

/// Write a notes commit with `entries` and `parents`, and move the notes ref from `tip`
/// to it.
fn commit(
    repo: &gix::Repository,
    mut entries: Vec<Entry>,
    parents: Vec<ObjectId>,
    tip: Option<ObjectId>,
    message: String,
) -> Result<(), RefUpdateError> {
    entries.sort();
    let tree = repo
        .write_object(gix::objs::Tree { entries })
        .map_err(git_err("write notes tree"))?
        .detach();
    let c = gix::objs::Commit {
        tree,
        parents: parents.into(),
        author: git::signature(),
        committer: git::signature(),
        encoding: None,
        message: message.into(),
        extra_headers: Vec::new(),
    };
    let id = repo
        .write_object(&c)
        .map_err(git_err("write notes commit"))?
        .detach();
    git::update_refs(
        repo,
        &[(NOTES_REF.to_string(), Some(id), Expect::from_current(tip))],
    )
}

/// Run `attempt` (which reads the notes ref and moves it with a compare-and-swap) until
/// it succeeds or the ref stops moving: another process (a concurrent build, a fetch)
/// may update the notes between our read and our write, and losing its note or ours
/// would be wrong.
fn retry(
    repo: &gix::Repository,
    mut attempt: impl FnMut() -> Result<(), RefUpdateError>,
) -> Result<(), GitError> {
    let mut tries = 0;
    loop {
        let before = git::get_ref(repo, NOTES_REF)?;
        match attempt() {
            Ok(()) => return Ok(()),
            Err(e) => {
                tries += 1;
                let after = git::get_ref(repo, NOTES_REF)?;
                // The ref moved (or its lock was busy): try again, a bounded number of times.
                let moved = matches!(e, RefUpdateError::Raced(_)) || before != after;
                if tries >= 50 || (!moved && tries >= 5) {
                    return Err(e.into());
                }
                std::thread::sleep(std::time::Duration::from_millis(5 * tries));
            }
        }
    }
}

/// Attach `data` as the note of `commit`, replacing an older note.
pub fn set(repo: &gix::Repository, commit_id: ObjectId, data: &[u8]) -> Result<(), GitError> {
    let blob = repo
        .write_blob(data)
        .map_err(git_err("write note"))?
        .detach();
    let name = commit_id.to_string();
    retry(repo, || {
        let tip = git::get_ref(repo, NOTES_REF)?;
        let mut entries = match tip {
            Some(t) => entries_of(repo, t)?,
            None => Vec::new(),
        };
        entries.retain(|e| e.filename.as_bytes() != name.as_bytes());
        entries.push(Entry {
            mode: EntryKind::Blob.into(),
            filename: name.clone().into(),
            oid: blob,
        });
        commit(
            repo,
            entries,
            tip.into_iter().collect(),
            tip,
            format!("Notes for {commit_id}\n"),
        )
    })
}

/// Merge the notes commit `other` (fetched from a remote) into the local notes: the
/// union of both, the local note winning for a commit annotated on both sides. Fast-
/// forwards when the local notes add nothing.
pub fn merge(repo: &gix::Repository, other: ObjectId) -> Result<(), GitError> {
    retry(repo, || {
        let tip = git::get_ref(repo, NOTES_REF)?;
        let Some(local) = tip else {
            return git::update_refs(
                repo,
                &[(NOTES_REF.to_string(), Some(other), Expect::Absent)],
            );
        };
        if local == other {
            return Ok(());
        }
        let mine = entries_of(repo, local)?;
        let theirs = entries_of(repo, other)?;
        let have: std::collections::HashSet<&[u8]> =
            mine.iter().map(|e| e.filename.as_bytes()).collect();
        let extra: Vec<Entry> = theirs
            .iter()
            .filter(|e| !have.contains(e.filename.as_bytes()))
            .cloned()
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let theirs_names: std::collections::HashMap<&[u8], ObjectId> = theirs
            .iter()
            .map(|e| (e.filename.as_bytes(), e.oid))
            .collect();
        if mine
            .iter()
            .all(|e| theirs_names.get(e.filename.as_bytes()) == Some(&e.oid))
        {
            // Everything local is in theirs: take theirs as is.
            return git::update_refs(
                repo,
                &[(NOTES_REF.to_string(), Some(other), Expect::Is(local))],
            );
        }
        let mut entries = mine.clone();
        entries.extend(extra);
        commit(
            repo,
            entries,
            vec![local, other],
            Some(local),
            "Merge notes\n".to_string(),
        )
    })
}

/// Keep only the notes of commits for which `keep` is true, as a fresh notes history (one
/// parentless commit: the history of notes would keep old commits alive). One atomic ref
/// update, so an interrupted gc loses no note.
pub fn retain(repo: &gix::Repository, keep: impl Fn(ObjectId) -> bool) -> Result<(), GitError> {
    retry(repo, || {
        let Some(tip) = git::get_ref(repo, NOTES_REF)? else {
            return Ok(());
        };
        let entries: Vec<Entry> = entries_of(repo, tip)?
            .into_iter()
            .filter(|e| ObjectId::from_hex(e.filename.as_bytes()).is_ok_and(&keep))
            .collect();
        if entries.is_empty() {
            return git::update_refs(repo, &[(NOTES_REF.to_string(), None, Expect::Is(tip))]);
        }
        commit(repo, entries, Vec::new(), Some(tip), "Notes\n".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_import_notes_are_read_and_a_later_version_or_a_v1_without_path_is_not() {
        let v1 = br#"{"imports":[{"image":"a:latest","imported":"2026-12-07T08:52:59Z",
            "kind":"tarball","path":"a.tar","sha256":"abcdef0123456789"}],
            "kind":"import","version":1}"#;
        let n = ImportNote::parse(v1).expect("version 1 reads");
        assert_eq!(n.imports[0].path.as_deref(), Some("a.tar"));
        assert_eq!(
            n.imports[0].source(true),
            "tarball a.tar sha256:abcdef012345"
        );
        let text = String::from_utf8_lossy(v1);
        assert!(
            ImportNote::parse(text.replace("\"version\":1", "\"version\":3").as_bytes()).is_none()
        );
        let no_path = text.replace("\"path\":\"a.tar\",", "");
        assert!(ImportNote::parse(no_path.as_bytes()).is_none());
        assert!(
            ImportNote::parse(no_path.replace("\"version\":1", "\"version\":2").as_bytes())
                .is_some()
        );
        let pulled = ImportSource {
            command: Some("ch-image pull".into()),
            image: "p:latest".into(),
            imported: "2026-12-07T09:00:00Z".into(),
            index: Some("sha256:1111111111111111".into()),
            kind: "registry".into(),
            manifest: Some("sha256:2222222222222222".into()),
            reference: Some("h:5000/r:1".into()),
            ..Default::default()
        };
        assert_eq!(
            pulled.describe(),
            "registry h:5000/r:1, manifest sha256:2222222222222222, index \
             sha256:1111111111111111 as p:latest at 2026-12-07T09:00:00Z by ch-image pull"
        );
    }

    #[test]
    fn version_1_notes_are_read_and_later_versions_are_not() {
        let v1 = br#"{"bases":[{"commit":"c0","image":"busybox","stage":0}],
            "build_args":{"A":"1"},"commit":"c1","context_hash":"h",
            "dockerfile":"FROM busybox\n","dockerfile_name":"Dockerfile","image":"x:latest",
            "steps":[{"commit":"c1","hit":false,"instruction":"RUN true","key":"k","n":2,
            "stage":0}],"version":1}"#;
        let p = Provenance::parse(v1).expect("version 1 reads");
        assert_eq!(p.version, 1);
        assert_eq!(p.dockerfile_sha256, None);
        assert_eq!(p.steps[0].files, None);
        assert_eq!(p.bases[0].digest, None);
        // Written back, a version-1 note keeps its bytes' fields (no new ones appear).
        let text = String::from_utf8(p.to_bytes()).expect("utf-8");
        assert!(!text.contains("started"), "{text}");
        let later = String::from_utf8_lossy(v1).replace("\"version\":1", "\"version\":3");
        assert!(Provenance::parse(later.as_bytes()).is_none());
    }
}
