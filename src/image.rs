//! `ch-image`'s operations above the store: naming image states (`IMAGE`, `IMAGE~N`, a
//! commit id), the text of `history`, `diff`, `inspect` and `pull --parse-only`, deleting
//! by glob (with a build's intermediate stages), and preparing a build from its command
//! line (the Dockerfile from a file or standard input, the inferred tag, build arguments,
//! the stat cache's place). The binary parses arguments, resolves settings, calls one of
//! these and prints what it returns.
//!
//! Text is returned as a `String` ending in a newline per line (the binary writes it to
//! standard output as data); progress goes to the log.

use crate::error::{IoError, IoResultExt};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::build::exec::{self, BuildOptions, CacheMode, Force};
use crate::glob::Glob;
use crate::reference::{Reference, ReferenceError};
use crate::registry::{RegistryError, Settings};
use crate::store::model::XattrPolicy;
use crate::store::{Store, StoreError, WriteLock};
use crate::{info, warn};

/// Errors of ch-image's operations.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("bad ~N in {spec}")]
    BadBack {
        spec: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("no image or commit: {name}")]
    NoState {
        name: String,
        /// The name of a deleted image by that name, which `undelete` restores.
        deleted: Option<String>,
    },
    #[error("no image or commit: {name}")]
    NoCommit {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{spec} is not an image commit: it names {}", .objects.join(", "))]
    NotACommit { spec: String, objects: Vec<String> },
    #[error("commit id prefix {spec} is ambiguous: {}", .candidates.join("; "))]
    AmbiguousCommit {
        spec: String,
        candidates: Vec<String>,
    },
    #[error("{0}: history is shorter")]
    ShortHistory(String),
    #[error("{0}: no build provenance note readable here, can't tell why its steps ran")]
    NoProvenance(String),
    #[error("unable to delete {0} invalid image(s)")]
    DeleteFailed(usize),
    #[error("can't pull {src} into {}", .dir.display())]
    PullInto {
        src: String,
        dir: PathBuf,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("can't pull {src}")]
    Pull {
        src: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("can't push {dest}")]
    Push {
        dest: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("can't import: not found: {}", .0.display())]
    ImportMissing(PathBuf),
    #[error("can't import {}", .path.display())]
    Import {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("store has {count} problem(s): {}", .storage.display())]
    Fsck { count: usize, storage: PathBuf },
    #[error("build-cache: unknown action: {0} (push REMOTE or fetch REMOTE)")]
    UnknownAction(String),
    #[error(
        "-f FILE can't be used when the context is - (the Dockerfile is read from standard input)"
    )]
    FileWithStdin,
    #[error("-t NAME is needed when the Dockerfile is read from standard input (context -)")]
    TagWithStdin,
    #[error("context must be a directory: {}", .0.display())]
    ContextNotDir(PathBuf),
    #[error("$CH_IMAGE_CACHE: invalid value: {0} (enabled, disabled or rebuild)")]
    CacheVariable(String),
    #[error("--force: invalid mode: {0}")]
    ForceMode(String),
    #[error("--build-arg: {0}: no value and not in environment")]
    BuildArgUnset(String),
    #[error("--keep-storage: invalid size: {0} (bytes, or a number with K, M, G or T)")]
    Size(String),
    #[error(transparent)]
    Secret(#[from] crate::build::mount::MountError),
    /// A `-b SRC[:DST]` refused by [`crate::run::Bind::parse`].
    #[error("{0}")]
    Bind(String),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] crate::store::ReadError),
    #[error(transparent)]
    Git(#[from] crate::store::GitError),
    #[error(transparent)]
    Build(#[from] exec::BuildError),
    #[error(transparent)]
    Context(#[from] crate::build::context::ContextError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Provenance(#[from] crate::provenance::ProvenanceError),
    #[error("{}: not a JSON statement", .path.display())]
    Statement {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("statement {} does not match {image}: {count} claim(s) differ: {}", .path.display(), .fields.join(", "))]
    Unverified {
        path: PathBuf,
        image: String,
        count: usize,
        fields: Vec<String>,
    },
}

impl ImageError {
    /// A hint for the user, from the error this one wraps.
    pub fn hint(&self) -> Option<String> {
        match self {
            ImageError::Store(e) | ImageError::Import { source: e, .. } => e.hint(),
            ImageError::Pull { source, .. }
            | ImageError::PullInto { source, .. }
            | ImageError::Push { source, .. } => source.hint(),
            ImageError::Provenance(e) => e.hint(),
            ImageError::Reference(e) => e.hint(),
            ImageError::NoState {
                deleted: Some(name),
                ..
            } => Some(format!(
                "{} was deleted; `ch-image undelete {}` restores it",
                list_name(name),
                list_name(name)
            )),
            ImageError::AmbiguousCommit { .. } => {
                Some("give more digits of the commit id".to_string())
            }
            _ => None,
        }
    }
}

/// An image name with the default tag (`latest`) if it has none.
pub fn parse_ref(s: &str) -> Result<Reference, ReferenceError> {
    Ok(Reference::parse(s)?.with_default_tag())
}

/// `writeln!` into a String (cannot fail).
macro_rules! outln {
    ($o:ident, $($t:tt)*) => {{
        let _ = writeln!($o, $($t)*);
    }};
}

/// Resolve `IMAGE`, `IMAGE~N` (N states before) or a commit id (a prefix of at least four
/// hex digits) to a commit.
pub fn resolve_state(store: &Store, spec: &str) -> Result<ObjectId, ImageError> {
    let (base, back) = match spec.rsplit_once('~') {
        Some((b, n)) => (
            b,
            n.parse::<usize>().map_err(|source| ImageError::BadBack {
                spec: spec.to_string(),
                source,
            })?,
        ),
        None => (spec, 0),
    };
    let repo = store.repo();
    let mut commit = match Reference::parse(base)
        .ok()
        .map(Reference::with_default_tag)
        .and_then(|r| store.image(&r).ok().flatten())
    {
        Some(c) => c,
        None if (4..=40).contains(&base.len()) && base.chars().all(|c| c.is_ascii_hexdigit()) => {
            commit_by_prefix(&repo, base)?
        }
        None => {
            let deleted = Reference::parse(base).ok().and_then(|r| {
                let r = r.with_default_tag().to_string();
                let gone = store.list_deleted().ok()?;
                gone.into_iter().find(|(n, _)| *n == r).map(|(n, _)| n)
            });
            return Err(ImageError::NoState {
                name: base.to_string(),
                deleted,
            });
        }
    };
    for _ in 0..back {
        commit = crate::store::git::image_trees(&repo, commit)?
            .parent
            .ok_or_else(|| ImageError::ShortHistory(spec.to_string()))?;
    }
    Ok(commit)
}

/// The commit whose id starts with `hex` (4 to 40 hex digits). As git does where it wants
/// a commit (`git log PREFIX`), objects of other kinds sharing the prefix are not
/// candidates; a prefix that names only such objects, or several commits, is an error
/// that says so.
fn commit_by_prefix(repo: &gix::Repository, hex: &str) -> Result<ObjectId, ImageError> {
    let no_commit = |source: Box<dyn std::error::Error + Send + Sync>| ImageError::NoCommit {
        name: hex.to_string(),
        source,
    };
    let prefix = gix::hash::Prefix::from_hex(hex).map_err(|e| no_commit(Box::new(e)))?;
    let mut found = std::collections::HashSet::new();
    repo.objects
        .lookup_prefix(prefix, Some(&mut found))
        .map_err(|e| no_commit(Box::new(e)))?;
    let mut commits = Vec::new();
    let mut others = Vec::new();
    for id in found {
        let kind = repo
            .find_header(id)
            .map_err(|e| no_commit(Box::new(e)))?
            .kind();
        if kind == gix::object::Kind::Commit {
            commits.push(id);
        } else {
            others.push((id, kind));
        }
    }
    commits.sort();
    others.sort();
    match (commits.as_slice(), others.as_slice()) {
        ([c], _) => Ok(*c),
        ([], []) => Err(ImageError::NoState {
            name: hex.to_string(),
            deleted: None,
        }),
        ([], o) => Err(ImageError::NotACommit {
            spec: hex.to_string(),
            objects: o.iter().map(|(id, k)| format!("{id} ({k})")).collect(),
        }),
        (cs, _) => Err(ImageError::AmbiguousCommit {
            spec: hex.to_string(),
            candidates: cs
                .iter()
                .map(|c| {
                    let first = repo
                        .find_commit(*c)
                        .ok()
                        .and_then(|m| {
                            m.message_raw_sloppy()
                                .to_string()
                                .lines()
                                .next()
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    format!("{} {}", &c.to_string()[..12], shown(&first))
                })
                .collect(),
        }),
    }
}

/// A size change for people: `+12`, `-1.5k`, `+3.0M`, `+1.2G`.
pub fn human(n: i64) -> String {
    let a = n.unsigned_abs() as f64;
    let sign = if n < 0 { "-" } else { "+" };
    if a >= 1e9 {
        format!("{sign}{:.1}G", a / 1e9)
    } else if a >= 1e6 {
        format!("{sign}{:.1}M", a / 1e6)
    } else if a >= 1e3 {
        format!("{sign}{:.1}k", a / 1e3)
    } else {
        format!("{sign}{a}")
    }
}

use crate::log::not_shown;
pub use crate::log::shown;

/// The first `n` characters of `s` (a commit id or digest for a short column): `s` may
/// come from a fetched note or commit message and hold anything, where cutting at byte
/// `n` could split a character (and panic).
fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// An image name as listed: Charliecloud shows an image built with `-t foo` as `foo`;
/// Grove stores it as `foo:latest` and drops the default tag for display.
pub fn list_name(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// `ch-image history`: one line per state, oldest first, or JSON.
pub fn history(store: &Store, spec: &str, json: bool) -> Result<String, ImageError> {
    let mut o = String::new();
    let commit = resolve_state(store, spec)?;
    let steps = crate::store::history::history(&store.repo(), commit)?;
    if json {
        outln!(o, "{}", serde_json::to_string_pretty(&steps)?);
        return Ok(o);
    }
    // The columns, named once (data follows; `--json` gives the same with field names).
    outln!(
        o,
        "{:<12} {:<12} {:<4} {:<6} {:<8} {:<8} {:>7}  INSTRUCTION",
        "COMMIT",
        "KEY",
        "HIT",
        "+ADDED",
        "~CHANGED",
        "-REMOVED",
        "SIZE"
    );
    for s in steps {
        let hit = match s.hit {
            Some(true) => "hit ",
            Some(false) => "run ",
            None => "    ",
        };
        // A fetched commit's message may say anything after `grove-cache-key: `.
        let key = s
            .key
            .as_deref()
            .map(|k| shown(first_chars(k, 12)))
            .unwrap_or("-".into());
        // An import: where from (`--json`: `imported`, in full).
        let from = s
            .imported
            .iter()
            .flatten()
            .map(|i| shown(&i.source(true)).into_owned())
            .collect::<Vec<_>>();
        let from = match from.is_empty() {
            true => String::new(),
            false => format!(" ({})", from.join("; ")),
        };
        // Each count under its column's name (`+287   ~0       -0`).
        outln!(
            o,
            "{} {key:<12} {hit} {:<6} {:<8} {:<8} {:>7}  {}{from}",
            &s.commit[..12],
            format!("+{}", s.added),
            format!("~{}", s.modified),
            format!("-{}", s.removed),
            human(s.size_delta),
            shown(&s.instruction)
        );
    }
    Ok(o)
}

/// One step of `history --why`.
#[derive(Debug, serde::Serialize)]
struct WhyStep {
    n: usize,
    /// Its stage's index, from 0.
    stage: usize,
    instruction: String,
    commit: String,
    hit: bool,
    /// Why it was executed; empty for hits.
    why: Vec<String>,
}

/// `ch-image history --why IMAGE`: per step of the image's last build, hit, or why it was
/// executed: as recorded when it ran (what differed from the closest cache entry on the
/// same parent then, or the `--rebuild` or `--no-cache` the build ran with); for an older
/// note without either, compared with the entries on the same parent now.
pub fn history_why(store: &Store, spec: &str, json: bool) -> Result<String, ImageError> {
    use crate::build::why;
    let mut o = String::new();
    let commit = resolve_state(store, spec)?;
    let repo = store.repo();
    // Whether the note was cut at an earlier state's step (stages after it not shown).
    let mut cut = false;
    let note = match crate::store::notes::provenance(&repo, commit)? {
        Some(n) => n,
        // An intermediate state (`NAME~N`, a stage's image `TAG_stageN`): the steps up to
        // it of the build whose note names it.
        None => match crate::store::notes::note_with_step(
            &repo,
            commit,
            &crate::provenance::note_hints(store, spec),
        )? {
            Some((image, mut n, i)) => {
                info!(
                    "{spec}: from the build note of {} ({}), its steps up to {}",
                    shown(&n.image),
                    &image.to_string()[..12],
                    n.steps[i].n
                );
                cut = i + 1 < n.steps.len();
                n.steps.truncate(i + 1);
                n
            }
            // Say why, as `inspect --provenance` does (an import, a lone `FROM`).
            None => {
                return Err(
                    match crate::provenance::no_note(
                        store,
                        commit,
                        spec,
                        crate::provenance::image_name(store, commit, spec)?.as_deref(),
                        true,
                    )? {
                        crate::provenance::ProvenanceError::NoNote(_) => {
                            ImageError::NoProvenance(spec.to_string())
                        }
                        e => e.into(),
                    },
                )
            }
        },
    };
    let stages = StageLabels::of(&note);
    let mut siblings = why::Siblings::new(store.layout().clone());
    // A build that did not read the cache executed every step for that reason: comparing
    // with the entries now would name differences that did not make it run.
    let not_read = note.cache.as_deref().map(|c| {
        CacheMode::why_executed(c)
            .map(str::to_string)
            .unwrap_or_else(|| format!("cache not read ({c})"))
    });
    let mut out = Vec::new();
    for s in note.steps {
        let reasons = match (s.hit, s.why, &not_read) {
            (true, _, _) => Vec::new(),
            (false, Some(w), _) => w,
            (false, None, Some(r)) => vec![r.clone()],
            (false, None, None) => {
                let heredocs = why::heredocs_of(&note.dockerfile, s.n).unwrap_or_default();
                why_now(&repo, &mut siblings, spec, &s.commit, &heredocs)?
            }
        };
        out.push(WhyStep {
            n: s.n,
            stage: s.stage,
            instruction: s.instruction.lines().next().unwrap_or("").to_string(),
            commit: s.commit,
            hit: s.hit,
            why: reasons,
        });
    }
    if json {
        outln!(o, "{}", serde_json::to_string_pretty(&out)?);
        return Ok(o);
    }
    // In a multi-stage build, a line before each stage's steps: the stage as `inspect`
    // labels its base line, and its base (a stage with no step of its own shows too).
    let mut next = 0;
    let headers = |o: &mut String, from: usize, upto: usize| {
        for st in from..=upto {
            let base = note
                .bases
                .iter()
                .find(|b| b.stage == st)
                .map(|b| format!(": {} ({})", b.image, first_chars(&b.commit, 12)))
                .unwrap_or_default();
            outln!(o, "{}", shown(&format!("{}{base}", stages.label(st))));
        }
    };
    for s in out {
        if stages.multi() && s.stage >= next {
            headers(&mut o, next, s.stage);
            next = s.stage + 1;
        }
        let status = if s.hit { "hit" } else { "run" };
        outln!(o, "{:>3} {status} {}", s.n, shown(&s.instruction));
        for w in s.why {
            outln!(o, "        why: {}", shown(&w));
        }
    }
    // Stages after the last step (a last stage that only names an earlier one).
    if stages.multi() && !cut && stages.last >= next {
        headers(&mut o, next, stages.last);
    }
    Ok(o)
}

/// Why the executed step `commit` ran, for a note that did not record it (a build with
/// the cache off or `--rebuild`, or by an older Grove): compared with the other entries on
/// its parent as they are now. `heredocs`: the step's, for a RUN (to name a changed body).
fn why_now(
    repo: &gix::Repository,
    siblings: &mut crate::build::why::Siblings,
    spec: &str,
    commit: &str,
    heredocs: &[crate::build::dockerfile::Heredoc],
) -> Result<Vec<String>, ImageError> {
    use crate::build::why;
    let id = ObjectId::from_hex(commit.as_bytes())
        .map_err(|_| ImageError::NoProvenance(spec.to_string()))?;
    let trees = crate::store::git::image_trees(repo, id)?;
    let parent = trees.parent;
    let record = crate::store::git::key_inputs_of(repo, id)?
        .and_then(|b| why::Record::parse(&b))
        .map(|r| why::Record {
            kind: Some(why::keyword(trees.message.lines().next().unwrap_or(""))),
            ..r
        });
    let (Some(p), Some(r)) = (parent, record) else {
        return Ok(vec![
            "not recorded (a step made by an older Grove)".to_string()
        ]);
    };
    // An entry with the step's own key: the step ran because the build did not read the
    // cache, not because anything differed.
    if let Some(key) = crate::store::history::key_of(&trees.message) {
        for c in siblings.of(repo, p)? {
            if c == id {
                continue;
            }
            let same = repo.find_commit(c).is_ok_and(|m| {
                crate::store::history::key_of(&m.message_raw_sloppy().to_string()).as_ref()
                    == Some(&key)
            });
            if same {
                return Ok(vec![format!(
                    "cache entry {} has the same key: the build did not read the cache \
                     (--no-cache or --rebuild) (compared now)",
                    &c.to_string()[..12]
                )]);
            }
        }
    }
    Ok(match why::closest(repo, siblings, p, &r, Some(id), None)? {
        Some((entry, w)) => {
            let w = if r.kind.as_deref() == Some("RUN") {
                let h: Vec<_> = heredocs.iter().collect();
                why::explain_heredocs(repo, entry, &h, w)?
            } else {
                w
            };
            w.into_iter()
                .map(|x| format!("{x} (compared now)"))
                .collect()
        }
        None => vec!["no other entry for this parent".to_string()],
    })
}

/// A path as `diff` prints it, one per line: `/` and the name as it is when it is UTF-8
/// without `\` or a character [`shown`] escapes (control characters, bidirectional
/// overrides); else every byte outside printable ASCII, `\` and quotes escaped (`\n`,
/// `\\`, `\xff`, `\xe2\x80\xae`), so that a name holding a newline stays on its line,
/// one holding U+202E does not reverse the rest of it, and two names never print alike (a
/// lossy conversion printed both `x\xff` and `x\xfe` as `x\u{fffd}`).
fn diff_path(p: &[u8]) -> String {
    match std::str::from_utf8(p) {
        Ok(s) if !s.chars().any(|c| not_shown(c) || c == '\\') => format!("/{s}"),
        _ => format!("/{}", p.escape_ascii()),
    }
}

/// `ch-image diff A B`: changed paths, or totals with `stat`.
pub fn diff(store: &Store, a: &str, b: &str, stat: bool, json: bool) -> Result<String, ImageError> {
    let mut o = String::new();
    let ca = resolve_state(store, a)?;
    let cb = resolve_state(store, b)?;
    let entries = crate::store::diff::diff_commits(&store.repo(), Some(ca), cb, stat)?;
    if json {
        let v = if stat {
            let s = crate::store::diff::stat(&entries);
            serde_json::json!({
                "added": s.added,
                "changed": s.modified,
                "removed": s.removed,
                "size_delta": s.size_delta,
            })
        } else {
            serde_json::Value::Array(
                entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "change": e.change.letter().to_string(),
                            "path": diff_path(&e.path),
                        })
                    })
                    .collect(),
            )
        };
        outln!(o, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(o);
    }
    if stat {
        let s = crate::store::diff::stat(&entries);
        outln!(
            o,
            "{} added, {} changed, {} removed, size {}",
            s.added,
            s.modified,
            s.removed,
            human(s.size_delta)
        );
    } else {
        for e in entries {
            outln!(o, "{} {}", e.change.letter(), diff_path(&e.path));
        }
    }
    Ok(o)
}

/// How `inspect` and `history --why` name the stages of a multi-stage build: `stage 1
/// (AS two, the image): `, from the note's bases and steps and its Dockerfile's `AS`
/// names; empty for a single-stage build, whose lines carry no label.
struct StageLabels {
    /// The `AS` name of each stage (from the note's Dockerfile), by index.
    aliases: Vec<Option<String>>,
    /// The last stage's index: the image's.
    last: usize,
}

impl StageLabels {
    fn of(n: &crate::store::notes::Provenance) -> StageLabels {
        let stages = n
            .steps
            .iter()
            .map(|s| s.stage)
            .chain(n.bases.iter().map(|b| b.stage));
        let last = stages.max().unwrap_or(0);
        let aliases = crate::build::dockerfile::parse(&n.dockerfile, "note")
            .map(|df| {
                df.instructions
                    .iter()
                    .filter_map(|i| match &i.kind {
                        crate::build::dockerfile::InstrKind::From { alias, .. } => {
                            Some(alias.clone())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        StageLabels { aliases, last }
    }

    /// Whether the build had more than one stage.
    fn multi(&self) -> bool {
        self.last > 0
    }

    /// `stage N (AS NAME, the image)`.
    fn label(&self, stage: usize) -> String {
        let mut what: Vec<String> = self
            .aliases
            .get(stage)
            .cloned()
            .flatten()
            .map(|a| format!("AS {a}"))
            .into_iter()
            .collect();
        if stage == self.last {
            what.push("the image".into());
        }
        match what.is_empty() {
            true => format!("stage {stage}"),
            false => format!("stage {stage} ({})", what.join(", ")),
        }
    }

    /// The label and `: ` for a multi-stage build, else nothing.
    fn prefix(&self, stage: usize) -> String {
        match self.multi() {
            true => format!("{}: ", self.label(stage)),
            false => String::new(),
        }
    }
}

/// `ch-image inspect`: an image state's config and provenance, as text or JSON.
pub fn inspect(store: &Store, spec: &str, json: bool) -> Result<String, ImageError> {
    let mut o = String::new();
    let commit = resolve_state(store, spec)?;
    let repo = store.repo();
    let cfg = crate::store::git::read_config(&repo, commit)?;
    // Secret-looking build argument values are not shown (nor stored, by a build since
    // they were left out; an older note may hold them).
    let note = crate::store::notes::provenance(&repo, commit)?.map(|mut n| {
        crate::provenance::redact_note(&mut n);
        n
    });
    let imports = imports_named(&store.repo(), spec, commit)?;
    if json {
        let mut v =
            serde_json::json!({ "commit": commit.to_string(), "config": cfg, "provenance": note });
        if !imports.is_empty() {
            v["imported"] = serde_json::to_value(&imports)?;
        }
        // Per stage, where its imported or pulled base came from.
        let mut bases = Vec::new();
        for b in note.iter().flat_map(|n| &n.bases) {
            let i = base_imports(&repo, b)?;
            if !i.is_empty() {
                bases.push(serde_json::json!({ "stage": b.stage, "imported": i }));
            }
        }
        if !bases.is_empty() {
            v["bases_imported"] = serde_json::Value::Array(bases);
        }
        outln!(o, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(o);
    }
    outln!(o, "commit:       {commit}");
    for i in &imports {
        outln!(o, "imported:     {}", shown(&i.describe()));
    }
    outln!(o, "cwd:          {}", shown(&cfg.cwd));
    for (k, v) in &cfg.env {
        outln!(o, "env:          {}={}", shown(k), shown(v));
    }
    if let Some(c) = &cfg.cmd {
        // JSON escapes C0 controls; DEL, C1 and bidirectional overrides it keeps.
        outln!(o, "cmd:          {}", shown(&serde_json::to_string(c)?));
    }
    if let Some(e) = &cfg.entrypoint {
        outln!(o, "entrypoint:   {}", shown(&serde_json::to_string(e)?));
    }
    outln!(
        o,
        "shell:        {}",
        shown(&serde_json::to_string(&cfg.shell)?)
    );
    for (k, v) in &cfg.labels {
        outln!(o, "label:        {}={}", shown(k), shown(v));
    }
    if let Some(a) = &cfg.arch {
        outln!(o, "arch:         {}", shown(a));
    }
    // A pulled image's source and manifest digest (`registry.source`, `registry.manifest`).
    for (k, v) in &cfg.annotations {
        let v = match v.as_str() {
            Some(v) => shown(v).into_owned(),
            None => shown(&v.to_string()).into_owned(),
        };
        outln!(o, "annotation:   {}={v}", shown(k));
    }
    if let Some(n) = note {
        let stages = StageLabels::of(&n);
        for b in &n.bases {
            // The prefix names the stage's `AS` alias, from the note's Dockerfile.
            let stage = shown(&stages.prefix(b.stage)).into_owned();
            let mut line = format!(
                "base:         {stage}{} ({})",
                shown(&b.image),
                shown(&b.commit)
            );
            if let Some(src) = &b.source {
                let _ = write!(line, " pulled from {}", shown(src));
            }
            if let Some(d) = &b.digest {
                let _ = write!(line, " manifest {}", shown(d));
            }
            outln!(o, "{line}");
            // Where an imported or pulled base came from (its import note), which the
            // base's name may no longer give.
            for i in base_imports(&repo, b)? {
                outln!(o, "base from:    {}", shown(&i.describe()));
            }
        }
        for (k, v) in &n.build_args {
            outln!(o, "build arg:    {}={}", shown(k), shown(v));
        }
        for k in &n.build_args_redacted {
            outln!(
                o,
                "build arg:    {} (value not stored: it may be a secret)",
                shown(k)
            );
        }
        // Every string of a note may come from a remote (`build-cache fetch`).
        outln!(o, "context hash: {}", shown(&n.context_hash));
        if let Some(v) = &n.builder_version {
            outln!(o, "builder:      grove {}", shown(v));
        }
        if let (Some(s), Some(f)) = (&n.started, &n.finished) {
            let (s, f) = (shown(s), shown(f));
            match &n.invocation {
                Some(i) => outln!(o, "built:        {s} to {f} (invocation {})", shown(i)),
                None => outln!(o, "built:        {s} to {f}"),
            }
        }
        if let Some(t) = n.source_date_epoch {
            outln!(o, "SOURCE_DATE_EPOCH: {t}");
        }
        if let Some(f) = &n.force {
            outln!(o, "force:        {}", shown(f));
        }
        if let Some(d) = &n.dockerfile_sha256 {
            outln!(o, "dockerfile:   sha256:{}", shown(d));
        }
        outln!(o, "dockerfile ({}):", shown(&n.dockerfile_name));
        for l in n.dockerfile.lines() {
            outln!(o, "  {}", shown(l));
        }
    }
    Ok(o)
}

/// The import note's entries of base `b`'s commit: the one of the name the build gave,
/// if the note has it, else all; none for a base without an import note (a built image,
/// an earlier stage, `scratch`).
fn base_imports(
    repo: &gix::Repository,
    b: &crate::store::notes::ProvenanceBase,
) -> Result<Vec<crate::store::notes::ImportSource>, ImageError> {
    match ObjectId::from_hex(b.commit.as_bytes()) {
        Ok(commit) => imports_named(repo, &b.image, commit),
        Err(_) => Ok(Vec::new()),
    }
}

/// The imports of `commit` its import note records (`ch-image import`, a pull, a
/// conversion): the one of the image `spec` names if it has one, else all (a commit id,
/// `NAME~N`, or another name imported as the same content); none without a note.
fn imports_named(
    repo: &gix::Repository,
    spec: &str,
    commit: ObjectId,
) -> Result<Vec<crate::store::notes::ImportSource>, ImageError> {
    let Some(note) = crate::store::notes::import_note(repo, commit)? else {
        return Ok(Vec::new());
    };
    let name = Reference::parse(spec)
        .ok()
        .map(|r| r.with_default_tag().to_string());
    let mine: Vec<_> = note
        .imports
        .iter()
        .filter(|i| Some(&i.image) == name.as_ref())
        .cloned()
        .collect();
    Ok(if mine.is_empty() { note.imports } else { mine })
}

/// `ch-image inspect --provenance IMAGE`: the image's build provenance as an in-toto
/// Statement v1 with a SLSA Provenance v1 predicate (docs/provenance.md), pretty JSON.
pub fn inspect_provenance(store: &Store, spec: &str) -> Result<String, ImageError> {
    let commit = resolve_state(store, spec)?;
    let v = crate::provenance::statement(store, commit, spec)?;
    let mut o = serde_json::to_string_pretty(&v)?;
    o.push('\n');
    Ok(o)
}

/// What `ch-image verify` found: the report (one line per claim) and the claims that
/// differ.
#[derive(Debug, Clone)]
pub struct Verification {
    pub report: String,
    /// The fields of the claims that are mismatches.
    pub differing: Vec<String>,
    path: PathBuf,
    image: String,
}

impl Verification {
    /// Success if no claim differs, else the error naming the fields that do.
    pub fn check(self) -> Result<(), ImageError> {
        if self.differing.is_empty() {
            return Ok(());
        }
        Err(ImageError::Unverified {
            path: self.path,
            image: self.image,
            count: self.differing.len(),
            fields: self.differing,
        })
    }
}

/// `ch-image verify IMAGE STATEMENT`: check the statement in file `path` against the
/// store, claim by claim (match, mismatch, not checkable).
pub fn verify(store: &Store, spec: &str, path: &Path) -> Result<Verification, ImageError> {
    let commit = resolve_state(store, spec)?;
    let text = std::fs::read(path).at("read statement", path)?;
    let given: serde_json::Value =
        serde_json::from_slice(&text).map_err(|source| ImageError::Statement {
            path: path.to_path_buf(),
            source,
        })?;
    let claims = crate::provenance::verify(store, commit, spec, &given)?;
    let differing = claims
        .iter()
        .filter(|c| matches!(c.verdict, crate::provenance::Verdict::Mismatch(_)))
        .map(|c| shown(&c.field).into_owned())
        .collect();
    Ok(Verification {
        report: crate::provenance::report(&claims),
        differing,
        path: path.to_path_buf(),
        image: spec.to_string(),
    })
}

/// The reference parse report of `pull --parse-only`, in Charliecloud's words (its
/// `Reference.as_verbose_str`): the reference as given, no defaults added.
pub fn parse_report(text: &str) -> Result<String, ImageError> {
    let r = Reference::parse(text)?;
    let q = |x: Option<&str>| x.map_or("None".to_string(), |v| format!("'{v}'"));
    let path = r
        .path
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut o = String::new();
    outln!(o, "as string:    {r}");
    outln!(o, "for filename: {}", r.for_path());
    outln!(o, "fields:");
    outln!(o, "  host    {}", q(r.host.as_deref()));
    outln!(
        o,
        "  port    {}",
        r.port.map_or("None".to_string(), |p| p.to_string())
    );
    outln!(o, "  path    [{path}]");
    outln!(o, "  name    {}", q(Some(&r.name)));
    outln!(o, "  tag     {}", q(r.tag.as_deref()));
    outln!(o, "  digest  {}", q(r.digest.as_deref()));
    Ok(o)
}

/// The glob of the intermediate stage images of `g` (a name or glob given to `delete`):
/// `foo` and `foo:latest` give `foo_stage[0-9]*:latest`, `foo:1.0` gives
/// `foo:1.0_stage[0-9]*` (names made by `build::exec::stage_name`).
pub fn stage_pattern(g: &str) -> String {
    let after_slash = g.rfind('/').map_or(0, |i| i + 1);
    match g[after_slash..].rfind(':').map(|i| i + after_slash) {
        Some(i) if &g[i + 1..] == "latest" => format!("{}_stage[0-9]*:latest", &g[..i]),
        Some(_) => format!("{g}_stage[0-9]*"),
        None => format!("{g}_stage[0-9]*:latest"),
    }
}

/// The names among `all` that `delete g` removes. As in Charliecloud, `g` is a glob read
/// as Python's `fnmatch` reads it ([`Glob::python`]: `[!a]` negates, `[^a]` is `^` or
/// `a`), and the build's intermediate stages go along (`g_stage[0-9]*`, and
/// [`stage_pattern`]). A name matches as `list` shows it ([`list_name`]: `foo`, as
/// Charliecloud stores an image built with `-t foo`, so `?` and `fo?` match it) or as
/// Grove stores it (`foo:latest`, so `foo:*` and `foo:latest` match it too).
pub fn delete_matches<'a>(g: &str, all: &'a [(String, ObjectId)]) -> Vec<&'a String> {
    let globs = [
        Glob::python(g),
        Glob::python(&format!("{g}_stage[0-9]*")),
        Glob::python(&stage_pattern(g)),
    ];
    all.iter()
        .map(|(n, _)| n)
        .filter(|n| {
            globs
                .iter()
                .any(|glob| glob.matches(n) || glob.matches(list_name(n)))
        })
        .collect()
}

/// `ch-image delete GLOB...`: delete the images each glob matches (listed once, before
/// the first deletion), saying each before it goes, as Charliecloud (`deleting image:
/// NAME`, named as `list` names it). A glob matching nothing is an error line of its
/// own; the other globs are still deleted, and the command then fails with the count.
pub fn delete(store: &Store, lock: &WriteLock, globs: &[String]) -> Result<(), ImageError> {
    let all = store.list()?;
    let mut failed = 0;
    for g in globs {
        let matches = delete_matches(g, &all);
        if matches.is_empty() {
            crate::log::write_line(&format!("error: no matching image, can't delete: {g}"));
            failed += 1;
            continue;
        }
        for m in matches {
            crate::info!("deleting image: {}", shown(list_name(m)));
            store.delete(lock, &parse_ref(m)?)?;
        }
    }
    if failed > 0 {
        return Err(ImageError::DeleteFailed(failed));
    }
    Ok(())
}

/// `ch-image pull SRC [DEST]`: into storage as DEST (default SRC), or, when DEST reads as a
/// path ([`crate::cli::is_image_dir_argument`]), unpacked into that directory without
/// touching storage.
pub fn pull(
    open: impl FnOnce() -> Result<Store, StoreError>,
    src: &str,
    dest: Option<&str>,
    settings: &Settings,
    xattrs: XattrPolicy,
) -> Result<(), ImageError> {
    let src = parse_ref(src)?;
    if let Some(d) = dest.filter(|d| crate::cli::is_image_dir_argument(d)) {
        let dir = PathBuf::from(d);
        return crate::registry::pull::pull_to_dir(&src, &dir, settings, xattrs).map_err(
            |source| ImageError::PullInto {
                src: src.to_string(),
                dir,
                source: Box::new(source),
            },
        );
    }
    let dest = match dest {
        Some(d) => parse_ref(d)?,
        None => src.clone(),
    };
    let store = open()?;
    let lock = store.lock()?;
    let t = std::time::Instant::now();
    let out =
        crate::registry::pull::pull(&store, &lock, &src, &dest, settings).map_err(|source| {
            ImageError::Pull {
                src: src.to_string(),
                source: Box::new(source),
            }
        })?;
    crate::verbose!(
        "pulled {dest} ({}) in {:.2}s",
        &out.commit().to_string()[..12],
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `ch-image push [--image DIR] SRC [DEST]`.
pub fn push(
    open: impl FnOnce() -> Result<Store, StoreError>,
    dir: Option<&Path>,
    src: &str,
    dest: Option<&str>,
    settings: &Settings,
) -> Result<(), ImageError> {
    use crate::registry::push::Source;
    // Charliecloud's lines, in its order: the source, the directory of `--image`, the
    // destination if one was given.
    let src = parse_ref(src)?;
    info!("pushing image:   {src}");
    if let Some(d) = dir {
        info!("image path:      {}", d.display());
    }
    let dest = match dest {
        Some(d) => {
            let d = parse_ref(d)?;
            info!("destination:     {d}");
            d
        }
        None => src.clone(),
    };
    let store = open()?;
    let lock = store.lock()?;
    let source = match dir {
        Some(d) => Source::Dir(d),
        None => Source::Image(&src),
    };
    crate::registry::push::push(&store, &lock, source, &dest, settings).map_err(|source| {
        ImageError::Push {
            dest: dest.to_string(),
            source: Box::new(source),
        }
    })?;
    Ok(())
}

/// `ch-image import PATH NAME`: a directory or tarball as an image.
pub fn import(
    open: impl FnOnce() -> Result<Store, StoreError>,
    path: &Path,
    name: &str,
) -> Result<(), ImageError> {
    let name = parse_ref(name)?;
    if !path.exists() {
        return Err(ImageError::ImportMissing(path.to_path_buf()));
    }
    if path.is_dir() {
        // Read the user's 0000 files and directories without changing their modes.
        if let Err(e) = crate::run::setup::read_own_files_as_root() {
            crate::verbose!("reading as the user only: {}", e.report());
        }
    }
    // A thread of its own: after the namespace (unshare refuses a threaded process).
    if let Err(e) = crate::interrupt::listen() {
        crate::warn!("can't handle SIGINT and SIGTERM: {e}");
    }
    let store = open()?;
    let lock = store.lock()?;
    info!("importing: {}", path.display());
    let t = std::time::Instant::now();
    // The file's digest for the import note, read beside the import.
    let is_dir = path.is_dir();
    let digest = crate::store::notes::FileDigest::start((!is_dir).then_some(path));
    let phase = crate::progress::Phase::start("import", "read", "file");
    let (commit, warnings, notes) = store
        .import(&lock, path, &name, |root| imported_config(&store, root))
        .map_err(|source| ImageError::Import {
            path: path.to_path_buf(),
            source,
        })?;
    phase.finish(&[]);
    let sha256 = digest.finish()?;
    crate::store::notes::add_import(
        &store.repo(),
        commit,
        crate::store::notes::ImportSource {
            command: Some("ch-image import".into()),
            image: name.to_string(),
            imported: crate::provenance::rfc3339(std::time::SystemTime::now()),
            kind: if is_dir { "directory" } else { "tarball" }.to_string(),
            path: Some(crate::provenance::path_text(
                path.as_os_str().as_encoded_bytes(),
            )),
            sha256,
            ..Default::default()
        },
    )?;
    // Warnings name a tarball's members (escaped where they are made) or a directory's
    // files (skipped sockets and devices), notes quote its `/ch/metadata.json`.
    for w in &warnings {
        warn!("{}", shown(w));
    }
    for n in &notes {
        warn!("{}: {}", path.display(), shown(n));
    }
    info!(
        "imported: {name} ({}) in {:.2}s",
        &commit.to_string()[..12],
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The config of an imported tree: from Charliecloud's metadata file
/// (`/ch/metadata.json`, which Charliecloud's storage and its exports carry) when the tree
/// has one, so that an image exported by Charliecloud keeps its ENV, WORKDIR, SHELL and
/// labels for builds on it, as when Charliecloud imports it; else the default. Also
/// returns what was wrong with the metadata file (it is then ignored).
fn imported_config(
    store: &Store,
    root: &crate::store::Dir,
) -> Result<(crate::store::ImageConfig, Vec<String>), StoreError> {
    let mut notes = Vec::new();
    let cfg = match root.get(b"ch/metadata.json") {
        Some(crate::store::model::Node::File(f)) => {
            let text = crate::store::git::read_blob(&store.repo(), f.oid)?;
            match charliecloud_metadata(&text) {
                Ok(cfg) => {
                    crate::verbose!("metadata: from /ch/metadata.json");
                    cfg
                }
                Err(e) => {
                    notes.push(format!("ignoring /ch/metadata.json: {e}"));
                    crate::store::ImageConfig::default()
                }
            }
        }
        _ => crate::store::ImageConfig::default(),
    };
    Ok((cfg, notes))
}

/// An image config from Charliecloud's `metadata.json`: `arch`, `cwd`, `env` (an object
/// of strings), `labels` and `shell`; absent keys keep their defaults, other keys
/// (`history`, `volumes`, `arg`) are not kept.
fn charliecloud_metadata(text: &[u8]) -> Result<crate::store::ImageConfig, String> {
    let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let mut cfg = crate::store::ImageConfig::default();
    let strings = |key: &str| -> Result<Vec<(String, String)>, String> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(serde_json::Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(format!("{key}: {k}: not a string")),
                })
                .collect(),
            Some(_) => Err(format!("{key}: not an object")),
        }
    };
    cfg.env = strings("env")?;
    cfg.labels = strings("labels")?.into_iter().collect();
    match obj.get("arch") {
        Some(serde_json::Value::String(a)) if !a.is_empty() => cfg.arch = Some(a.clone()),
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::String(_)) => {}
        Some(_) => return Err("arch: not a string".into()),
    }
    match obj.get("cwd") {
        Some(serde_json::Value::String(c)) if c.starts_with('/') => cfg.cwd = c.clone(),
        None | Some(serde_json::Value::Null) => {}
        Some(_) => return Err("cwd: not an absolute path".into()),
    }
    match obj.get("shell") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(a)) if !a.is_empty() => {
            cfg.shell = a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("shell: not a list of strings")?;
        }
        Some(_) => return Err("shell: not a list of strings".into()),
    }
    Ok(cfg)
}

/// `ch-image list`: one image per line (`NAME`, or `NAME<TAB>COMMIT` with `long`), or a
/// JSON array of `{"name", "ref", "commit"}` with `json`.
pub fn list(store: &Store, long: bool, json: bool) -> Result<String, ImageError> {
    render_list(store.list()?, long, json)
}

/// `ch-image list --undeletable`: the deleted images `undelete` can restore, in the
/// same forms as [`list`].
pub fn list_undeletable(store: &Store, long: bool, json: bool) -> Result<String, ImageError> {
    render_list(store.list_deleted()?, long, json)
}

fn render_list(
    mut images: Vec<(String, ObjectId)>,
    long: bool,
    json: bool,
) -> Result<String, ImageError> {
    // Charliecloud's order: its image directories' names sorted, that is the listed names
    // in filename form (`alpine` before `alpine:3.17` and `alpine/x`).
    images.sort_by_cached_key(|(name, _)| crate::reference::path_form(list_name(name)));
    let mut o = String::new();
    if json {
        let v: Vec<serde_json::Value> = images
            .iter()
            .map(|(name, commit)| {
                serde_json::json!({
                    "name": list_name(name),
                    "ref": name,
                    "commit": commit.to_string(),
                })
            })
            .collect();
        outln!(o, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(o);
    }
    // Names come from the refs: what a fetch or `ch-image` stores is a valid reference,
    // but git plumbing (or a fetch by git itself) can name a ref with any bytes git takes
    // (C1 controls, bidirectional overrides, in UTF-8).
    for (name, commit) in images {
        if long {
            // Grove's own format, with commits: the full name.
            outln!(o, "{}\t{commit}", shown(&name));
        } else {
            outln!(o, "{}", shown(list_name(&name)));
        }
    }
    Ok(o)
}

/// `ch-image list NAME`: what storage and the registry know of an image, written to
/// standard output as it is learned (the registry is asked last).
pub fn list_details(store: &Store, name: &str, settings: &Settings) -> Result<(), ImageError> {
    let name = parse_ref(name)?;
    let host_arch = crate::oci::host_arch;
    crate::dataln!("details of image:    {name}");
    match store.image(&name)? {
        Some(commit) => {
            let (_, cfg) = store.read(commit)?;
            crate::dataln!("in local storage:    yes");
            crate::dataln!("commit:              {commit}");
            crate::dataln!(
                "checkout:            {}",
                store.checkout_link(&name).display()
            );
            if let Some(a) = cfg.arch {
                // A pulled config's, or an imported `/ch/metadata.json`'s.
                crate::dataln!("architecture:        {}", shown(&a));
            }
        }
        None => crate::dataln!("in local storage:    no"),
    }
    let remote = crate::registry::Remote::resolve(&name);
    crate::dataln!("full remote ref:     {remote}");
    match crate::registry::pull::remote_info(&name, settings) {
        Ok(Some(info)) => {
            crate::dataln!("available remotely:  yes");
            if let Some(d) = &info.digest {
                crate::dataln!("remote digest:       {}", shown(d));
            }
            match info.archs {
                Some(a) => {
                    let archs = if a.is_empty() {
                        // A manifest list of other systems' images only (Windows).
                        warn!("no valid architectures found");
                        "none".to_string()
                    } else {
                        a.join(" ")
                    };
                    crate::dataln!("remote arch-aware:   yes");
                    crate::dataln!("host architecture:   {}", host_arch());
                    crate::dataln!("archs available:     {archs}");
                }
                None => {
                    crate::dataln!("remote arch-aware:   no");
                    crate::dataln!("host architecture:   {}", host_arch());
                    crate::dataln!("archs available:     unknown");
                }
            }
        }
        Ok(None) => {
            // Every line Charliecloud prints, so scripts (and 50_ch-image.bats 'ch-image
            // list') find the same keys as for an image the registry has.
            crate::dataln!("available remotely:  no");
            crate::dataln!("remote arch-aware:   n/a");
            crate::dataln!("host architecture:   {}", host_arch());
            crate::dataln!("archs available:     n/a");
        }
        Err(e) => {
            crate::dataln!("available remotely:  unknown");
            warn!("can't query registry: {}", e.full_message());
        }
    }
    Ok(())
}

/// `ch-image list --json NAME`: what [`list_details`] prints, as one JSON object: `name`,
/// `local` (`commit`, `checkout`, `architecture`, or `null` when not in storage),
/// `remote_ref` and `remote` (`digest`, `arch_aware`, `archs`; `null` when the registry
/// doesn't have it; `{"error": ...}` when it could not be asked, also warned about).
pub fn list_details_json(
    store: &Store,
    name: &str,
    settings: &Settings,
) -> Result<String, ImageError> {
    let name = parse_ref(name)?;
    let local = match store.image(&name)? {
        Some(commit) => {
            let (_, cfg) = store.read(commit)?;
            serde_json::json!({
                "commit": commit.to_string(),
                "checkout": store.checkout_link(&name),
                "architecture": cfg.arch,
            })
        }
        None => serde_json::Value::Null,
    };
    let remote = crate::registry::Remote::resolve(&name);
    let remote_info = match crate::registry::pull::remote_info(&name, settings) {
        Ok(Some(info)) => serde_json::json!({
            "digest": info.digest,
            "arch_aware": info.archs.is_some(),
            "archs": info.archs,
        }),
        Ok(None) => serde_json::Value::Null,
        Err(e) => {
            warn!("can't query registry: {}", e.full_message());
            serde_json::json!({ "error": e.full_message() })
        }
    };
    let v = serde_json::json!({
        "name": name.to_string(),
        "local": local,
        "remote_ref": remote.to_string(),
        "host_architecture": crate::oci::host_arch(),
        "remote": remote_info,
    });
    let mut o = String::new();
    outln!(o, "{}", serde_json::to_string_pretty(&v)?);
    Ok(o)
}

/// `ch-image fsck --json`: `{"ok": BOOL, "problems": [...]}` on standard output; any
/// problem is also an error, as with [`fsck`].
pub fn fsck_json(store: &Store) -> Result<String, ImageError> {
    let report = crate::store::maint::fsck(store)?;
    let problems = &report.problems;
    let leftovers: Vec<_> = report
        .leftovers
        .iter()
        .map(|(path, what)| serde_json::json!({ "path": path, "what": what }))
        .collect();
    let v = serde_json::json!({
        "ok": problems.is_empty(),
        "problems": problems,
        "leftovers": leftovers,
    });
    let mut o = String::new();
    outln!(o, "{}", serde_json::to_string_pretty(&v)?);
    if !problems.is_empty() {
        crate::cli::write_stdout(&o);
        return Err(ImageError::Fsck {
            count: problems.len(),
            storage: store.root().to_path_buf(),
        });
    }
    fsck_leftovers(&report.leftovers);
    info!("store ok: {}", store.root().display());
    Ok(o)
}

/// Say what writers that are gone left (not damage), one line each on standard error.
fn fsck_leftovers(leftovers: &[(String, &'static str)]) {
    for (path, what) in leftovers {
        info!(
            "{}: {what}; not damage: the next writer that runs alone, or \
             `ch-image build-cache --gc`, removes it",
            shown(path)
        );
    }
}

/// `ch-image fsck`: the problems found, one per line on standard output; any problem
/// is also an error. What writers that are gone left is said on standard error and is
/// not a problem.
pub fn fsck(store: &Store) -> Result<(), ImageError> {
    let report = crate::store::maint::fsck(store)?;
    // A problem names refs, entries and what git fsck said of a fetched object: one line
    // each, whatever they hold.
    for p in &report.problems {
        crate::dataln!("{}", shown(p));
    }
    fsck_leftovers(&report.leftovers);
    if !report.problems.is_empty() {
        return Err(ImageError::Fsck {
            count: report.problems.len(),
            storage: store.root().to_path_buf(),
        });
    }
    info!("store ok: {}", store.root().display());
    Ok(())
}

/// `ch-image build-cache`: what the options ask for.
#[derive(Debug, Clone, Default)]
pub struct BuildCacheRequest {
    pub reset: bool,
    pub gc: bool,
    pub tree: bool,
    /// The graph in Graphviz dot on standard output (`--dot`).
    pub dot: bool,
    /// `--dot=PATH`: the graph written to `PATH.gv`, and rendered to `PATH.pdf` when
    /// Graphviz's `dot` is installed (Charliecloud's file names).
    pub dot_file: Option<PathBuf>,
    /// `push REMOTE` or `fetch REMOTE`, else empty.
    pub action: Vec<String>,
    /// The summary as JSON (after the graphs, if asked for too).
    pub json: bool,
    /// `--keep-storage SIZE`: with `gc`, keep the most recently used cache mounts and
    /// materialized trees (checkouts, layers) up to this many bytes in all, removing the
    /// others (else `gc` removes every cache mount and keeps the trees).
    pub keep_storage: Option<u64>,
    /// `--compact`: compress the packs imports and pulls stored uncompressed (what they
    /// start in the background), waiting for one already running. `gc` does it too.
    pub compact: bool,
    /// The compaction lock is held by a descriptor inherited from the command that
    /// started this one in the background (`--background`).
    pub compact_lock_inherited: bool,
}

/// `build-cache --dot=PATH`: `dot` to `PATH.gv`, then `PATH.pdf` by Graphviz's `dot` if
/// installed (a warning if not, or if it fails: the DOT file is what Grove makes).
fn write_dot_files(base: &Path, dot: &str) -> Result<(), ImageError> {
    let with_ext = |ext: &str| {
        let mut p = base.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (gv, pdf) = (with_ext(".gv"), with_ext(".pdf"));
    crate::verbose!("writing {}", gv.display());
    std::fs::write(&gv, dot).at("write", &gv)?;
    let Some(graphviz) = crate::run::find_program("dot") else {
        warn!(
            "not writing {}: Graphviz's dot not found (render {} with it)",
            pdf.display(),
            gv.display()
        );
        return Ok(());
    };
    crate::verbose!("writing {}", pdf.display());
    let mut out_opt = std::ffi::OsString::from("-o");
    out_opt.push(&pdf);
    match std::process::Command::new(&graphviz)
        .arg("-Tpdf")
        .arg(out_opt)
        .arg(&gv)
        .stdin(std::process::Stdio::null())
        .status()
    {
        Ok(st) if st.success() => {}
        Ok(st) => warn!("not writing {}: {} {st}", pdf.display(), graphviz.display()),
        Err(e) => warn!(
            "not writing {}: can't run {}: {e}",
            pdf.display(),
            graphviz.display()
        ),
    }
    Ok(())
}

/// A size as `--keep-storage` takes it: bytes, or a number (decimals allowed) with a
/// binary suffix `K`, `M`, `G` or `T` (any case, optionally followed by `B` or `iB`), as
/// BuildKit's `--keep-storage`.
pub fn parse_size(s: &str) -> Result<u64, ImageError> {
    let bad = || ImageError::Size(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let bytes = v * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `ch-image build-cache`: share through a git remote (`push`/`fetch REMOTE`), or reset
/// and collect garbage as asked, then return the graphs asked for and a summary.
pub fn build_cache(store: &Store, a: &BuildCacheRequest) -> Result<String, ImageError> {
    use crate::store::maint;
    let mut o = String::new();
    match a
        .action
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["push", remote] => {
            let lock = store.lock()?;
            let phase = crate::progress::Phase::start("build-cache push", "transferred", "object");
            maint::push(store, &lock, remote)?;
            phase.finish(&[]);
            info!("pushed images and cache to {remote}");
            return Ok(o);
        }
        ["fetch", remote] => {
            let lock = store.lock()?;
            let phase = crate::progress::Phase::start("build-cache fetch", "transferred", "object");
            maint::fetch(store, &lock, remote)?;
            phase.finish(&[]);
            info!("fetched images and cache from {remote}");
            return Ok(o);
        }
        [] => {}
        other => return Err(ImageError::UnknownAction(other.join(" "))),
    }
    if a.reset {
        // Charliecloud's words (55_cache.bats, 'reset', looks for both); the images stay.
        // Said once the lock is held: a storage directory the user can't write refuses
        // it, and nothing is deleted.
        let lock = store.lock_exclusive()?;
        info!("deleting build cache");
        maint::reset_cache(store, &lock)?;
        info!("initializing empty build cache (images kept)");
    }
    if a.gc {
        let lock = store.lock_exclusive()?;
        // The bar follows the objects git's repack writes; the line says what was removed.
        let phase = crate::progress::Phase::start("build-cache gc", "removed", "object");
        let before = maint::summary(store)?;
        let deleted = store.list_deleted()?.len() as u64;
        maint::gc(store, &lock)?;
        let m = maint::gc_storage(store, &lock, a.keep_storage)?;
        let after = maint::summary(store)?;
        let mut counts = gc_counts(&before, deleted, &after);
        let repacked = crate::progress::items_counted();
        if repacked > 0 {
            counts.push(format!(
                "repacked {} object{}",
                crate::progress::count(repacked),
                if repacked == 1 { "" } else { "s" }
            ));
        }
        phase.finish_with(&counts, false);
        for (what, c) in [
            ("cache mounts", m.mounts),
            ("downloaded layers", m.downloads),
            ("materialized trees", m.trees),
        ] {
            if c.removed > 0 || c.kept > 0 {
                let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                info!(
                    "{what}: removed {} ({:.1} MiB), kept {} ({:.1} MiB)",
                    c.removed,
                    mib(c.removed_bytes),
                    c.kept,
                    mib(c.kept_bytes)
                );
            }
        }
        info!("garbage collected");
    } else if a.compact {
        let lock = store.lock()?;
        let c = crate::store::compaction::compact(store, &lock, a.compact_lock_inherited)?;
        if c.packs > 0 {
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            info!(
                "compacted {} stored pack{} ({} objects): {:.1} MiB to {:.1} MiB",
                c.packs,
                if c.packs == 1 { "" } else { "s" },
                c.objects,
                mib(c.before),
                mib(c.after)
            );
        }
        if a.compact_lock_inherited {
            // In the background: no summary (nobody reads it), and the lock goes with
            // the process as soon as possible, so that the next command can start one.
            return Ok(o);
        }
    }
    if a.tree {
        o.push_str(&maint::render_tree(&shown_graph(store)?));
    }
    if a.dot {
        o.push_str(&maint::render_dot(&shown_graph(store)?));
    }
    if let Some(base) = &a.dot_file {
        write_dot_files(base, &maint::render_dot(&shown_graph(store)?))?;
    }
    let s = maint::summary(store)?;
    if a.json {
        let v = serde_json::json!({
            "images": s.images,
            "cache_entries": s.cache_entries,
            "commits": s.commits,
            "objects": s.objects,
            "disk_used_bytes": s.bytes,
        });
        outln!(o, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(o);
    }
    outln!(o, "images:        {}", s.images);
    outln!(o, "cache entries: {}", s.cache_entries);
    outln!(o, "commits:       {}", s.commits);
    outln!(o, "objects:       {}", s.objects);
    outln!(
        o,
        "disk used:     {:.1} MiB",
        s.bytes as f64 / (1 << 20) as f64
    );
    Ok(o)
}

/// The build graph of `build-cache --tree` and `--dot`, its text made safe to print
/// ([`shown`]): a node's subject is the first line of its commit's message, the
/// instruction as written in a Dockerfile (or anything, in a fetched commit), and its
/// image names come from refs.
fn shown_graph(
    store: &Store,
) -> Result<std::collections::BTreeMap<ObjectId, crate::store::maint::GraphNode>, ImageError> {
    let mut g = crate::store::maint::graph(store)?;
    for n in g.values_mut() {
        if let std::borrow::Cow::Owned(s) = shown(&n.subject) {
            n.subject = s;
        }
        for i in &mut n.images {
            if let std::borrow::Cow::Owned(s) = shown(i) {
                *i = s;
            }
        }
    }
    Ok(g)
}

/// What a gc removed, for its progress line: `3 cache entries`, `1 deleted image`,
/// `200 objects`, `freed 12.3 MiB` (every deleted image goes; objects and disk use are
/// compared before and after).
fn gc_counts(
    before: &crate::store::maint::Summary,
    deleted: u64,
    after: &crate::store::maint::Summary,
) -> Vec<String> {
    use crate::progress::{count, size};
    let less = |b: u64, a: u64| b.saturating_sub(a);
    let entries = less(before.cache_entries as u64, after.cache_entries as u64);
    let objects = less(before.objects, after.objects);
    let s = |n: u64| if n == 1 { "" } else { "s" };
    vec![
        format!(
            "{} cache entr{}",
            count(entries),
            if entries == 1 { "y" } else { "ies" }
        ),
        format!("{} deleted image{}", count(deleted), s(deleted)),
        format!("{} object{}", count(objects), s(objects)),
        format!("freed {}", size(less(before.bytes, after.bytes))),
    ]
}

/// The tag Charliecloud infers: `Dockerfile.EXT` gives EXT, `NAME.df` or
/// `NAME.dockerfile` gives NAME, else the context directory's name; lowercased, with
/// characters that can't be in a reference removed.
pub fn infer_tag(file: Option<&Path>, context: &Path) -> String {
    let from_file = file
        .and_then(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| {
            if let Some(ext) = n.strip_prefix("Dockerfile.") {
                Some(ext.to_string())
            } else {
                n.strip_suffix(".df")
                    .or_else(|| n.strip_suffix(".dockerfile"))
                    .map(str::to_string)
            }
        });
    let base = from_file.unwrap_or_else(|| {
        let abs = std::fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
        abs.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into())
    });
    let t: String = base
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
        .collect();
    if t.is_empty() {
        "root".into()
    } else {
        t
    }
}

/// The cache mode from `--no-cache`, `--rebuild`, `--cache` (at most one, clap checks),
/// else `$CH_IMAGE_CACHE` (`variable`), else enabled.
pub fn cache_mode(
    no_cache: bool,
    rebuild: bool,
    cache: bool,
    variable: Option<&str>,
) -> Result<CacheMode, ImageError> {
    Ok(if no_cache {
        CacheMode::Disabled
    } else if rebuild {
        CacheMode::Rebuild
    } else if cache {
        CacheMode::Enabled
    } else {
        match variable {
            None | Some("") | Some("enabled") => CacheMode::Enabled,
            Some("disabled") => CacheMode::Disabled,
            Some("rebuild") => CacheMode::Rebuild,
            Some(o) => return Err(ImageError::CacheVariable(o.to_string())),
        }
    })
}

/// Build arguments from `--build-arg KEY[=VALUE]`: a KEY without a value takes it from
/// `lookup` (the environment).
pub fn build_args(
    given: &[String],
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ImageError> {
    given
        .iter()
        .map(|b| match b.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => lookup(b)
                .map(|v| (b.clone(), v))
                .ok_or_else(|| ImageError::BuildArgUnset(b.clone())),
        })
        .collect()
}

/// `ch-image build`, as given on the command line (settings already resolved).
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Context directory, or `-`: the Dockerfile on standard input, no context.
    pub context: PathBuf,
    pub tag: Option<String>,
    /// `-f FILE` (`-` for standard input).
    pub file: Option<PathBuf>,
    pub build_args: Vec<(String, String)>,
    pub dry_run: bool,
    pub parse_only: bool,
    pub binds: Vec<String>,
    /// `--force[=MODE]`.
    pub force: Option<String>,
    pub cache: CacheMode,
    /// The `ch-run` that executes RUN.
    pub ch_run: PathBuf,
    /// Registry settings for base images a `FROM` pulls.
    pub registry: crate::registry::Settings,
    /// `--explain`: say why each step missed.
    pub explain: bool,
    /// `--secret` values (`id=ID,src=FILE` or `id=ID,env=VAR`).
    pub secrets: Vec<String>,
    /// `--extend` (hidden): FROM may name the output image (ch-fromhost).
    pub extend: bool,
}

/// A directory removed (if empty) when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// `ch-image build`: read the Dockerfile, check the request, then (unless `parse_only`)
/// build into `store` (opened when needed, with `open`), logging the result.
pub fn build(
    open: impl FnOnce() -> Result<Store, StoreError>,
    layout: &crate::store::Layout,
    mut a: BuildRequest,
) -> Result<(), ImageError> {
    use crate::build::context::read_dockerfile;
    // `build -t foo -` (FAQ 11.4.9): the Dockerfile on standard input, no context; an
    // empty directory stands in for it, and a COPY of context files says there is none.
    let _empty_context;
    let no_context = a.context.as_os_str() == "-";
    if no_context {
        // `-f -` says again where the Dockerfile comes from, as Charliecloud accepts it;
        // another file would be read instead of standard input, which is refused.
        if a.file.as_ref().is_some_and(|f| f.as_os_str() != "-") {
            return Err(ImageError::FileWithStdin);
        }
        if a.tag.is_none() {
            return Err(ImageError::TagWithStdin);
        }
        a.file = Some(PathBuf::from("-"));
        let d = std::env::temp_dir().join(format!("grove-no-context.{}", std::process::id()));
        std::fs::create_dir(&d).at("create empty context directory", &d)?;
        a.context = d.clone();
        _empty_context = RemoveOnDrop(d);
    }
    // As Charliecloud: the tag is inferred (and said), then the context checked, then the
    // Dockerfile read.
    let tag_text = match a.tag.clone() {
        Some(t) => t,
        None => {
            let t = infer_tag(a.file.as_deref(), &a.context);
            info!("inferred image name: {t}");
            t
        }
    };
    if !a.context.is_dir() {
        return Err(ImageError::ContextNotDir(a.context));
    }
    let (text, name) = match &a.file {
        Some(f) if f.as_os_str() == "-" => (read_dockerfile(None, "-")?, "-".to_string()),
        Some(f) => (
            read_dockerfile(Some(f), &f.display().to_string())?,
            f.display().to_string(),
        ),
        None => {
            let f = a.context.join("Dockerfile");
            (
                read_dockerfile(Some(&f), &f.display().to_string())?,
                f.display().to_string(),
            )
        }
    };
    let tag = parse_ref(&tag_text)?;
    let force = match a.force.as_deref() {
        None | Some("seccomp") => Force::Seccomp,
        Some("none") => Force::None,
        Some("fakeroot") => Force::Fakeroot,
        Some(o) => return Err(ImageError::ForceMode(o.to_string())),
    };
    // Checked now, not at the first RUN that executes (after any cache hits).
    for b in &a.binds {
        crate::run::Bind::parse(b).map_err(ImageError::Bind)?;
    }
    let secrets = a
        .secrets
        .iter()
        .map(|v| crate::build::mount::parse_secret(v, |k| std::env::var_os(k).is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    let context = std::fs::canonicalize(&a.context).at("resolve context directory", &a.context)?;
    let opts = BuildOptions {
        secrets,
        stat_cache: layout.stat_cache(&context),
        context: a.context,
        no_context,
        dockerfile: text,
        dockerfile_name: name,
        tag: tag.clone(),
        build_args: a.build_args,
        cache: a.cache,
        force,
        binds: a.binds,
        dry_run: a.dry_run,
        ch_run: a.ch_run,
        registry: a.registry,
        explain: a.explain,
        extend: a.extend,
    };
    if a.parse_only || crate::log::enabled(3) {
        let df = exec::parse(&opts)?;
        for i in &df.instructions {
            if a.parse_only {
                crate::dataln!("{:>3} {}", i.span.start_line, shown(&i.display()));
            } else {
                crate::trace!("parse tree: {}: {:?}", i.span.start_line, i.kind);
            }
        }
        if a.parse_only {
            return Ok(());
        }
    }
    let store = open()?;
    let lock = store.lock()?;
    let t = std::time::Instant::now();
    let r = exec::build(&store, &lock, &opts)?;
    if a.dry_run {
        // The plan is the data a dry run asked for: one line per instruction.
        for p in &r.plan {
            crate::dataln!("{p}");
        }
        crate::info!(
            "dry run: {} instructions: {tag_text} ({} hits, {} not executed; image not written)",
            r.instructions,
            r.hits,
            r.misses
        );
    } else {
        crate::info!(
            "grown in {} instructions: {tag_text} ({} hits, {} executed, {:.2}s)",
            r.instructions,
            r.hits,
            r.misses,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charliecloud_metadata_gives_env_cwd_shell_labels_and_arch() {
        // 0.31's file, as its test suite writes one (build/50_ch-image.bats, import).
        let cfg = charliecloud_metadata(
            br#"{ "arch": "corn", "cwd": "/usr", "env": {"A": "1", "B": "x y"},
                 "labels": {"l": "v"}, "shell": ["/bin/ash", "-c"], "volumes": [],
                 "history": [ {"created_by": "ch-test"} ] }"#,
        )
        .unwrap();
        assert_eq!(cfg.arch.as_deref(), Some("corn"));
        assert_eq!(cfg.cwd, "/usr");
        assert_eq!(
            cfg.env,
            vec![("A".into(), "1".into()), ("B".into(), "x y".into())]
        );
        assert_eq!(cfg.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(cfg.shell, vec!["/bin/ash", "-c"]);
        // Only the history Grove writes itself.
        assert!(cfg.history.is_empty());
        // Keys left out keep the defaults; a wrong type is an error naming the key.
        let d = charliecloud_metadata(b"{}").unwrap();
        assert_eq!(d.cwd, crate::store::ImageConfig::default().cwd);
        for (bad, key) in [
            (&br#"{"env": 3}"#[..], "env"),
            (br#"{"env": {"A": 1}}"#, "env: A"),
            (br#"{"cwd": "rel"}"#, "cwd"),
            (br#"{"shell": "sh"}"#, "shell"),
            (b"[]", "not a JSON object"),
        ] {
            let e = charliecloud_metadata(bad).unwrap_err();
            assert!(e.contains(key), "{e}");
        }
        assert!(charliecloud_metadata(b"{").is_err());
    }

    #[test]
    fn keep_storage_sizes_are_bytes_or_binary_multiples() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1500").unwrap(), 1500);
        assert_eq!(parse_size("10k").unwrap(), 10 * 1024);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        for bad in ["", "k", "ten", "-1", "1x", "1.2.3g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delete_takes_the_build_stages_along() {
        let id = ObjectId::null(gix::hash::Kind::Sha1);
        let all: Vec<(String, ObjectId)> = [
            "foo:latest",
            "foo_stage0:latest",
            "foo_stage12:latest",
            "foo:1.0",
            "foo:1.0_stage1",
            "foobar:latest",
            "foo_stagex:latest",
        ]
        .iter()
        .map(|n| (n.to_string(), id))
        .collect();
        let names = |g: &str| -> Vec<&str> {
            delete_matches(g, &all)
                .into_iter()
                .map(String::as_str)
                .collect()
        };
        assert_eq!(
            names("foo"),
            ["foo:latest", "foo_stage0:latest", "foo_stage12:latest"]
        );
        assert_eq!(names("foo:1.0"), ["foo:1.0", "foo:1.0_stage1"]);
        assert_eq!(names("foo*").len(), all.len());
        assert!(names("nothing").is_empty());
        // A glob matches names as `list` shows them (`foo`) and as stored (`foo:latest`).
        assert_eq!(
            names("fo?"),
            ["foo:latest", "foo_stage0:latest", "foo_stage12:latest"]
        );
        assert_eq!(names("foo:*"), ["foo:latest", "foo:1.0", "foo:1.0_stage1"]);
        // Python's classes, as Charliecloud: `^` is a member, `!` negates.
        assert_eq!(names("[^f]*").len(), all.len());
        assert!(names("[!f]*").is_empty());
        assert_eq!(names("foo[]:]1.0"), ["foo:1.0", "foo:1.0_stage1"]);
    }

    #[test]
    fn build_tag_is_inferred_like_charliecloud() {
        let ctx = Path::new("/nonexistent/My_Context");
        assert_eq!(infer_tag(Some(Path::new("Dockerfile.Foo")), ctx), "foo");
        assert_eq!(infer_tag(Some(Path::new("x/bar.df")), ctx), "bar");
        assert_eq!(infer_tag(Some(Path::new("baz.dockerfile")), ctx), "baz");
        assert_eq!(infer_tag(None, ctx), "my_context");
        assert_eq!(infer_tag(Some(Path::new("Dockerfile.@@")), ctx), "root");
    }

    #[test]
    fn cache_mode_options_beat_the_variable() {
        assert_eq!(
            cache_mode(true, false, false, Some("rebuild")).ok(),
            Some(CacheMode::Disabled)
        );
        assert_eq!(
            cache_mode(false, false, false, Some("rebuild")).ok(),
            Some(CacheMode::Rebuild)
        );
        assert_eq!(
            cache_mode(false, false, false, None).ok(),
            Some(CacheMode::Enabled)
        );
        let e = cache_mode(false, false, false, Some("sometimes")).unwrap_err();
        assert!(e.to_string().contains("$CH_IMAGE_CACHE"), "{e}");
    }

    #[test]
    fn build_arg_without_value_comes_from_the_environment() {
        let env = |k: &str| (k == "SET").then(|| "v".to_string());
        let given = ["A=1".to_string(), "SET".to_string(), "B=".to_string()];
        assert_eq!(
            build_args(&given, env).expect("args"),
            [
                ("A".to_string(), "1".to_string()),
                ("SET".to_string(), "v".to_string()),
                ("B".to_string(), String::new())
            ]
        );
        let e = build_args(&["UNSET".to_string()], env).unwrap_err();
        assert!(e.to_string().contains("UNSET"), "{e}");
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human(0), "+0");
        assert_eq!(human(-1500), "-1.5k");
        assert_eq!(human(3_000_000), "+3.0M");
        assert_eq!(human(1_200_000_000), "+1.2G");
    }
}
