//! Executing a planned Dockerfile against the store: [`super::plan`] turns each
//! instruction into a step with its key input; here each step's key is completed (COPY
//! and ADD source hashes, RUN bind-mount content), looked up, and on a miss the step is
//! performed (RUN through the `ch-run` binary on an overlay of the parent's view, as
//! [`super::invocation`] builds the call, with its `--mount`s prepared here: cache
//! directories, context or stage content, secret files, see [`super::mount`]; COPY and ADD into a layer directory; config changes in the image
//! config), then committed with the previous instruction's commit as parent, and a cache
//! ref is written for its key. `--dry-run` stops before performing and returns the plan
//! ([`Planned`]). The build's provenance note is a [`Provenance`].
//!
//! Hits are lazy: a hit moves the stage to the cached commit and reads its config (one
//! blob); nothing is checked out or loaded until the first miss. A failing step changes no
//! ref: the image and the cache stay as they were, usable.

use crate::error::{IoError, IoResultExt};
use std::collections::HashSet;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use gix::ObjectId;

use super::context::{self, Ignore, StatCache};
use super::copy;
use super::dockerfile::{self, CmdForm, CopyArgs, CopySource, Dockerfile, InstrKind, Instruction};
use super::invocation;
use super::key::Key;
use super::mount::{self, Mount, SecretFrom, SecretSource, Sharing};
use super::plan::{self, Action, Planner, Step};
use super::subst::Vars;
use super::why::{self, Record, Siblings};
use crate::reference::Reference;
use crate::store::config::History;
use crate::store::model::{Dir, Node};
use crate::store::notes::{Provenance, ProvenanceBase, ProvenanceFile, ProvenanceStep};
use crate::store::{self, git, Expect, ImageConfig, Store, StoreError, WriteLock};
use crate::{info, warn};

/// Cache use (`--cache`, `--no-cache`, `--rebuild`, `$CH_IMAGE_CACHE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Read and write the cache.
    Enabled,
    /// Neither read nor write it.
    Disabled,
    /// Execute everything, but write the cache.
    Rebuild,
}

impl CacheMode {
    /// The provenance note's `cache` value: the option that kept the build from reading
    /// the cache, `None` when it read it.
    pub fn note_name(self) -> Option<&'static str> {
        match self {
            CacheMode::Enabled => None,
            CacheMode::Disabled => Some("no-cache"),
            CacheMode::Rebuild => Some("rebuild"),
        }
    }

    /// Why a step executed when the build did not read the cache (`note_name`), as the
    /// build log and `history --why` say it.
    pub fn why_executed(note_name: &str) -> Option<&'static str> {
        match note_name {
            "rebuild" => Some("cache not read (--rebuild)"),
            "no-cache" => Some("cache not used (--no-cache)"),
            _ => None,
        }
    }
}

/// As BuildKit's `SecretsUsedInArgOrEnv` check: an ENV, or an ARG with a default, whose
/// name looks like a secret's ([`crate::provenance::secret_looking`], the words that leave
/// a `--build-arg` value out of the note). Unlike a `--build-arg` value, such a value is
/// stored: an ENV's in the image's config (the image needs it: not redacted) and, written
/// in the Dockerfile, in the build note. One warning per name, `FILE:LINE: ...`; none for
/// an empty value.
pub fn secret_warnings(df: &Dockerfile) -> Vec<String> {
    let mut out = Vec::new();
    let hint = "pass secrets with --secret and RUN --mount=type=secret";
    for ins in &df.instructions {
        let at = format!("{}:{}", df.file, ins.span.start_line);
        match &ins.kind {
            InstrKind::Env(pairs) => {
                for (k, v) in pairs {
                    if !v.is_empty() && crate::provenance::secret_looking(k) {
                        out.push(format!(
                            "{at}: ENV {k}: its value is stored in the image's config, and \
                             as written in the Dockerfile the build note keeps; {hint}"
                        ));
                    }
                }
            }
            InstrKind::Arg(decls) => {
                for d in decls {
                    if d.default.as_deref().is_some_and(|v| !v.is_empty())
                        && crate::provenance::secret_looking(&d.name)
                    {
                        out.push(format!(
                            "{at}: ARG {}: its default is stored with the Dockerfile in the \
                             build note, and RUN sees it; {hint}",
                            d.name
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Root emulation for RUN (`--force`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    Seccomp,
    /// Run RUN commands under fakeroot(1), which the image must provide.
    Fakeroot,
    None,
}

impl Force {
    /// The mode's name, as `--force=MODE` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Force::Seccomp => "seccomp",
            Force::Fakeroot => "fakeroot",
            Force::None => "none",
        }
    }

    /// The mode's letter in logs (`RUN.S`) and key inputs.
    pub fn tag(self) -> &'static str {
        match self {
            Force::Seccomp => "S",
            Force::Fakeroot => "F",
            Force::None => "N",
        }
    }
}

/// Everything a build needs besides the store.
pub struct BuildOptions {
    pub context: PathBuf,
    /// `build -t foo -`: no context (`context` is an empty stand-in); a COPY or ADD of
    /// context files fails saying so.
    pub no_context: bool,
    pub dockerfile: String,
    /// Name of the Dockerfile for messages (`Dockerfile`, `-`, a path).
    pub dockerfile_name: String,
    pub tag: Reference,
    pub build_args: Vec<(String, String)>,
    pub cache: CacheMode,
    pub force: Force,
    /// `-b SRC[:DST]` for RUN.
    pub binds: Vec<String>,
    pub dry_run: bool,
    /// The `ch-run` binary.
    pub ch_run: PathBuf,
    /// Where the stat cache of content hashes lives.
    pub stat_cache: PathBuf,
    /// Registry settings for base images a `FROM` pulls.
    pub registry: crate::registry::Settings,
    /// `--explain`: say why each step missed (also at `-v`).
    pub explain: bool,
    /// `--secret`s for `RUN --mount=type=secret` (where each one's content is; the content
    /// itself is read only when a RUN mounts it).
    pub secrets: Vec<SecretSource>,
    /// FROM may name the output image (`--extend`, hidden): the build extends it, as
    /// ch-fromhost's injection into a stored image does. Else that is an error, as in
    /// Charliecloud.
    pub extend: bool,
}

/// The host side of a RUN's mounts: what `ch-run --build-mount` gets, the locks of the
/// cache mounts (held until the RUN ends), and scratch files (secrets, copies) removed
/// when the RUN ends, whatever way it ends.
struct PreparedMounts {
    mounts: Vec<crate::run::BuildMount>,
    _locks: Vec<nix::fcntl::Flock<fs::File>>,
    temporary: Vec<PathBuf>,
}

impl Drop for PreparedMounts {
    fn drop(&mut self) {
        for p in self.temporary.drain(..) {
            let _ = crate::store::checkout::remove_tree(&p);
        }
    }
}

/// A `RUN --mount` with its target resolved against the working directory.
#[derive(Debug, Clone)]
struct RunMount {
    mount: Mount,
    /// Absolute, normalized container path.
    target: String,
}

/// Errors of a build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Parse(#[from] dockerfile::ParseError),
    /// A failure of one instruction: its file and line, what failed, and the cause.
    #[error("{file}:{line}: {message}")]
    At {
        file: String,
        line: usize,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    #[error("build failed: RUN command exited with {0}")]
    RunFailed(i32),
    /// Killed by signal N: Charliecloud's message, where Python's `returncode` is -N.
    #[error("build failed: RUN command exited with -{0}")]
    RunSignal(i32),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Read(#[from] git::ReadError),
    #[error("--build-arg: not consumed: {0}")]
    Unconsumed(String),
    #[error("SOURCE_DATE_EPOCH must be a number of seconds since 1970, not {0:?}")]
    SourceDateEpoch(String),
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error("can't use a checkout of the store as RUN's image")]
    Changed(#[source] store::stamp::StampError),
}

/// Outcome of a build.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub commit: Option<ObjectId>,
    pub instructions: usize,
    pub hits: usize,
    pub misses: usize,
    /// Every instruction's outcome, in order (what `--dry-run` prints).
    pub plan: Vec<Planned>,
}

/// The outcome of one instruction of a build: for `--dry-run`, the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub n: usize,
    pub status: Status,
    /// The cache key after the instruction, if it is in a stage.
    pub key: Option<Key>,
    /// The instruction as written.
    pub text: String,
}

/// What a build did, or (`--dry-run`) would do, with an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A FROM: the stage's base.
    Base,
    /// Found in the build cache.
    Hit,
    /// Executed, or to be executed.
    Miss,
    /// A global ARG: nothing to build.
    Global,
    /// Not supported: ignored.
    Ignored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Base => "base",
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Global => "global",
            Status::Ignored => "ignored",
        }
    }
}

impl std::fmt::Display for Planned {
    /// `N STATUS KEY INSTRUCTION`: the key in hex or `-`, the instruction's first line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.key.map(|k| k.hex()).unwrap_or_else(|| "-".into());
        let text = self.text.lines().next().unwrap_or("");
        write!(f, "{} {} {key} {text}", self.n, self.status.as_str())
    }
}

/// The state of one build stage.
struct Stage {
    alias: Option<String>,
    commit: ObjectId,
    key: Key,
    config: ImageConfig,
    /// The model of `commit`, loaded at the first miss that needs it.
    model: Option<Dir>,
    /// `commit` is a state no cache entry can start from: an earlier step of the stage
    /// missed (and, in a dry run, `commit` is not even its state).
    fresh: bool,
    /// A CMD of this stage came before (Docker's `cmdSet`): else ENTRYPOINT clears the CMD
    /// the stage inherited from its base.
    cmd_set: bool,
    /// Most bytes of `config.json` a step of this stage writes ([`MAX_CONFIG_GROWTH`]).
    config_max: u64,
}

/// Most bytes a build adds to its base's `config.json` (LABEL, ENV, history…), whatever
/// the number of steps. Every step writes (and hashes) the whole config, so 70 LABELs of
/// 1 MiB each cost a quadratic 2.3 GB of hashing and compression (16 min in a debug
/// build) before failing at 64 MiB (`git::MAX_CONFIG`). Real configs are a few KiB;
/// a pulled base may bring more (up to 64 MiB), which is kept.
pub const MAX_CONFIG_GROWTH: u64 = 4 << 20;

struct Builder<'a> {
    store: &'a Store,
    lock: &'a WriteLock,
    opts: &'a BuildOptions,
    df: Dockerfile,
    ignore: Ignore,
    stat_cache: StatCache,
    stages: Vec<Stage>,
    hits: usize,
    misses: usize,
    repo: gix::Repository,
    /// The layer directory of the step being executed, kept once its commit exists.
    pending_layer: Option<PathBuf>,
    /// Whether the step being executed changed files (else its commit reuses the
    /// parent's trees without loading them).
    files_changed: bool,
    /// Scratch directories of this build, removed when the build ends (layers kept by
    /// then have been moved out of them).
    scratches: std::cell::RefCell<Vec<PathBuf>>,
    /// `ADD` URLs downloaded in this build.
    downloads: std::collections::HashMap<String, PathBuf>,
    /// Provenance: every instruction's outcome, and each stage's base.
    steps: Vec<ProvenanceStep>,
    bases: Vec<ProvenanceBase>,
    /// Every instruction's outcome.
    planned: Vec<Planned>,
    /// blake3 over the content hashes of every COPY/ADD source set, in order.
    context_hash: blake3::Hasher,
    /// `SOURCE_DATE_EPOCH` ([`source_date_epoch`]): passed into RUN, and the latest time
    /// a step's files may have (later ones are clamped to it).
    source_date_epoch: Option<i64>,
    /// What the planner was told (for key-input records).
    plan_opts: plan::PlanOptions,
    /// Cache entries by parent, indexed at the first miss.
    siblings: Siblings,
    /// The files (with digests) the sources of the COPY or ADD being built read, for its
    /// provenance step.
    pending_files: Option<Vec<ProvenanceFile>>,
    /// The key-input record of the step being executed (a COPY looks for a delta base
    /// with it).
    step_record: Option<Record>,
    /// The context-relative paths (bytes) of the `file` items of the last record made, by
    /// item name.
    manifest_rels: std::collections::HashMap<String, Vec<u8>>,
    /// The base layers of the step's layer when it is a delta layer (top first).
    pending_bases: Vec<ObjectId>,
    /// What the last `COPY --from` resolved to, by (stage index, line, `--from` value):
    /// its cache key and its copy read the same commit even if a tag moves in between.
    #[allow(clippy::type_complexity)]
    copy_from_memo: Option<((usize, usize, String), (ObjectId, Option<usize>))>,
    /// The context sources last hashed for a cache key, with their hash and manifest.
    #[allow(clippy::type_complexity)]
    /// Whether the hash left out the mode and time of a directory source copied into a
    /// directory the image has (the step's key then has the `copy-dir-top` mark).
    last_sources: Option<(
        Vec<context::Source>,
        [u8; 32],
        Vec<(Vec<u8>, [u8; 32])>,
        bool,
    )>,
    /// The note of the image's last build (the tag's commit before this build), read at
    /// the first miss that needs it.
    prev_note: Option<Option<Provenance>>,
    /// The cache entries that are this image's or this Dockerfile's earlier state
    /// ([`why::own_entries`]; `None` inside: a first build), read at the first miss.
    own: Option<Option<std::collections::HashSet<ObjectId>>>,
}

/// The build's `SOURCE_DATE_EPOCH` (reproducible-builds.org): `--build-arg
/// SOURCE_DATE_EPOCH=…`, else the environment variable; empty means unset.
pub fn source_date_epoch(build_args: &[(String, String)]) -> Result<Option<i64>, BuildError> {
    let v = match build_args
        .iter()
        .rev()
        .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
    {
        Some((_, v)) => v.clone(),
        None => std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default(),
    };
    if v.is_empty() {
        return Ok(None);
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BuildError::SourceDateEpoch(v));
    }
    v.parse()
        .map(Some)
        .map_err(|_| BuildError::SourceDateEpoch(v))
}

/// Parse only (for `--parse-only`).
pub fn parse(opts: &BuildOptions) -> Result<Dockerfile, BuildError> {
    Ok(dockerfile::parse(&opts.dockerfile, &opts.dockerfile_name)?)
}

/// Build an image.
pub fn build(
    store: &Store,
    lock: &WriteLock,
    opts: &BuildOptions,
) -> Result<BuildResult, BuildError> {
    let _image_lock = store.lock_image(lock, &opts.tag)?;
    let started = std::time::SystemTime::now();
    let df = parse(opts)?;
    for w in &df.warnings {
        warn!(
            "{}:{}: {}",
            crate::log::shown(&df.file),
            w.line,
            crate::log::shown(&w.message)
        );
    }
    // As BuildKit's SecretsUsedInArgOrEnv check: Grove stores no such value, but it
    // reaches RUN's environment and the cache key (docs/provenance.md, "Build arguments").
    for (k, _) in &opts.build_args {
        if crate::provenance::secret_looking(k) {
            warn!(
                "--build-arg {k}: its value is not stored, but RUN sees it and the cache key \
                 hashes it; pass secrets with --secret and RUN --mount=type=secret"
            );
        }
    }
    for w in secret_warnings(&df) {
        warn!("{w}");
    }
    // `DOCKERFILE.dockerignore` first (BuildKit); the name is the Dockerfile's path.
    let dockerfile = (opts.dockerfile_name != "-").then(|| Path::new(&opts.dockerfile_name));
    let ignore = Ignore::load_for(&opts.context, dockerfile)?;
    let source_date_epoch = source_date_epoch(&opts.build_args)?;
    let plan_opts = plan::PlanOptions {
        force: opts.force,
        xattrs: store.xattrs().record(),
        source_date_epoch,
    };
    let mut b = Builder {
        store,
        lock,
        opts,
        df,
        ignore,
        stat_cache: StatCache::load(&opts.stat_cache),
        stages: Vec::new(),
        hits: 0,
        misses: 0,
        repo: store.repo(),
        pending_layer: None,
        files_changed: false,
        steps: Vec::new(),
        downloads: Default::default(),
        scratches: Default::default(),
        bases: Vec::new(),
        context_hash: blake3::Hasher::new(),
        source_date_epoch,
        planned: Vec::new(),
        plan_opts,
        siblings: Siblings::new(store.layout().clone()),
        pending_files: None,
        step_record: None,
        manifest_rels: Default::default(),
        pending_bases: Vec::new(),
        copy_from_memo: None,
        last_sources: None,
        prev_note: None,
        own: None,
    };
    let n = b.df.instructions.len();
    let mut planner = Planner::new(&opts.build_args, b.df.escape(), plan_opts);
    let instructions = b.df.instructions.clone();
    for (i, ins) in instructions.iter().enumerate() {
        crate::interrupt::interrupted()
            .map_err(|e| b.at_err(ins, "stopped before this step", e))?;
        let step = planner
            .step(i + 1, ins)
            .map_err(|e| b.at_err(ins, "can't substitute variables", e))?;
        b.step(ins, &step, &mut planner)?;
    }
    // SOURCE_DATE_EPOCH needs no ARG: every RUN gets it (as BuildKit does).
    let mut unconsumed = planner.vars().unconsumed_build_args();
    unconsumed.retain(|a| *a != "SOURCE_DATE_EPOCH");
    if !unconsumed.is_empty() {
        return Err(BuildError::Unconsumed(unconsumed.join(", ")));
    }
    if let Err(e) = b.stat_cache.save(&opts.stat_cache) {
        warn!("can't save stat cache {}: {e}", opts.stat_cache.display());
    }
    // The stages' models (every path of each image), the stat cache and the cache
    // entries' records are not needed past the last step: free them on a thread of their
    // own while the note is written, not on the way out (20 ms of a 0.45 s rebuild of a
    // 20,000-file COPY).
    let garbage = (
        b.stages
            .iter_mut()
            .filter_map(|s| s.model.take())
            .collect::<Vec<_>>(),
        std::mem::take(&mut b.stat_cache),
        std::mem::take(&mut b.siblings),
    );
    let _ = std::thread::Builder::new()
        .name("free".into())
        .spawn(move || drop(garbage));
    let commit = b.stages.last().map(|s| s.commit);
    if !opts.dry_run {
        // As Charliecloud: every stage but the last is an image too, `TAG_stageN`.
        let n = b.stages.len();
        for (i, st) in b.stages.iter().enumerate().take(n.saturating_sub(1)) {
            let name = stage_name(&opts.tag, i);
            let old = store.image(&name)?;
            if old != Some(st.commit) {
                store.set_image_lazy(lock, &name, st.commit, Expect::from_current(old))?;
            }
        }
    }
    if let (Some(c), false) = (commit, opts.dry_run) {
        let old = store.image(&opts.tag)?;
        if old != Some(c) {
            store.set_image_lazy(lock, &opts.tag, c, Expect::from_current(old))?;
        }
        let finished = std::time::SystemTime::now();
        let mut note = Provenance {
            version: crate::store::notes::PROVENANCE_VERSION,
            image: opts.tag.to_string(),
            commit: c.to_string(),
            dockerfile_name: opts.dockerfile_name.clone(),
            dockerfile_path: Some(dockerfile_path(opts)),
            dockerfile_sha256: Some(crate::provenance::sha256_hex(opts.dockerfile.as_bytes())),
            dockerfile: opts.dockerfile.clone(),
            build_args: opts.build_args.iter().cloned().collect(),
            build_args_redacted: Vec::new(),
            bases: std::mem::take(&mut b.bases),
            builder_version: Some(crate::version::VERSION.to_string()),
            cache: opts.cache.note_name().map(str::to_string),
            context_hash: b.context_hash.finalize().to_hex().to_string(),
            steps: std::mem::take(&mut b.steps),
            force: Some(opts.force.name().to_string()),
            xattrs: Some(store.xattrs().record()),
            source_date_epoch,
            started: Some(crate::provenance::rfc3339(started)),
            finished: Some(crate::provenance::rfc3339(finished)),
            invocation: Some(crate::provenance::invocation_id(started, c)),
        };
        // Secret-looking values never reach the note (which `build-cache push` sends).
        crate::provenance::redact_note(&mut note);
        // A rebuild whose record differs only in its times and invocation id (an all-hit
        // rebuild after an all-hit rebuild) keeps the earlier record and writes nothing.
        let old = store::notes::provenance(&b.repo, c)?.map(|mut o| {
            o.started.clone_from(&note.started);
            o.finished.clone_from(&note.finished);
            o.invocation.clone_from(&note.invocation);
            o
        });
        // A Dockerfile that only names its base (`FROM app`) makes no commit: the image is
        // the base's commit, whose note (its own build's, or its import's) says how it was
        // made. A note here would replace it with this build's, which made nothing.
        let made_here = note.steps.iter().any(|s| s.commit == note.commit);
        if !made_here {
            crate::verbose!(
                "no build note: {} is its base's commit {}",
                opts.tag,
                &note.commit[..12]
            );
        } else if old.as_ref() != Some(&note) {
            store::notes::set(&b.repo, c, &note.to_bytes())?;
        }
    }
    Ok(BuildResult {
        commit,
        instructions: n,
        hits: b.hits,
        misses: b.misses,
        plan: std::mem::take(&mut b.planned),
    })
}

/// The Dockerfile's path for provenance: relative to the context when it is inside it
/// (`Dockerfile`, `sub/Dockerfile.x`), `-` for standard input, else as given.
fn dockerfile_path(opts: &BuildOptions) -> String {
    let name = Path::new(&opts.dockerfile_name);
    if opts.dockerfile_name == "-" {
        return "-".into();
    }
    let rel = match (fs::canonicalize(name), fs::canonicalize(&opts.context)) {
        (Ok(f), Ok(c)) => f.strip_prefix(&c).ok().map(Path::to_path_buf),
        _ => None,
    };
    match rel {
        Some(r) => crate::provenance::path_text(r.as_os_str().as_bytes()),
        None => opts.dockerfile_name.clone(),
    }
}

/// A base for `--explain`: its registry manifest digest if it was pulled (and is still
/// stored), else `commit` and its first 12 digits.
fn base_id(repo: &gix::Repository, commit_hex: &str) -> String {
    let digest = ObjectId::from_hex(commit_hex.as_bytes())
        .ok()
        .and_then(|c| crate::registry::pull::pull_record(repo, c).ok().flatten())
        .map(|p| p.manifest);
    // A note's commit may be any text (a fetched note): cut only at a character.
    digest.unwrap_or_else(|| format!("commit {}", commit_hex.get(..12).unwrap_or(commit_hex)))
}

/// The image name of intermediate stage `i` (from 0) of a build tagged `tag`, as
/// Charliecloud's `TAG_stageN`: the suffix goes on the tag when one other than the
/// default was given (`foo:1.0` gives `foo:1.0_stage0`, as Charliecloud), else on the
/// name (`foo` gives `foo_stage0`, stored as `foo_stage0:latest`).
pub fn stage_name(tag: &Reference, i: usize) -> Reference {
    let mut r = tag.clone();
    match &mut r.tag {
        Some(t) if t != "latest" => t.push_str(&format!("_stage{i}")),
        _ => r.name.push_str(&format!("_stage{i}")),
    }
    r
}

impl Drop for Builder<'_> {
    fn drop(&mut self) {
        for p in self.scratches.get_mut().drain(..) {
            let _ = crate::store::checkout::remove_tree(&p);
        }
    }
}

impl<'a> Builder<'a> {
    fn at(&self, ins: &Instruction, message: impl Into<String>) -> BuildError {
        BuildError::At {
            file: self.df.file.clone(),
            line: ins.span.start_line,
            message: message.into(),
            source: None,
        }
    }

    /// An instruction's failure with its cause.
    fn at_err(
        &self,
        ins: &Instruction,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BuildError {
        BuildError::At {
            file: self.df.file.clone(),
            line: ins.span.start_line,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    fn stage(&mut self) -> &mut Stage {
        self.stages
            .last_mut()
            .expect("first instruction is FROM (parser checks)")
    }

    /// Perform one planned step.
    fn step(
        &mut self,
        ins: &Instruction,
        step: &Step,
        planner: &mut Planner,
    ) -> Result<(), BuildError> {
        let (n, text) = (step.n, &step.text);
        self.pending_files = None;
        let (sub, input) = match &step.action {
            Action::From {
                image,
                alias,
                platform,
            } => {
                if let Some(p) = platform {
                    // `--platform=$BUILDPLATFORM` (cross-compiling Dockerfiles) names the
                    // host: nothing to say. Anything else is not honoured.
                    let host = super::subst::platform_args(&crate::oci::platform::Platform::host())
                        .into_iter()
                        .find(|(k, _)| k == "TARGETPLATFORM")
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    if *p != host {
                        warn!(
                            "{}:{}: FROM --platform={p} ignored: building for the host platform {host}",
                            self.df.file, ins.span.start_line
                        );
                    }
                }
                let line = |mark: char, shown: &str| {
                    info!(
                        "{n:>3}{mark} FROM {}{}",
                        crate::log::shown(shown),
                        alias
                            .as_ref()
                            .map(|a| format!(" AS {a}"))
                            .unwrap_or_default()
                    )
                };
                let named = !image.eq_ignore_ascii_case("scratch")
                    && !self
                        .stages
                        .iter()
                        .any(|s| s.alias.as_deref() == Some(image.to_ascii_lowercase().as_str()));
                let bad_ref = named && Reference::parse(image).is_err();
                // A reference that came out invalid because a variable in it was not set
                // says so (Charliecloud's message), rather than why the rest is invalid.
                // As in Charliecloud 0.31 and 0.38, a FROM that fails before its image is
                // found is logged with a blank mark (`  1  FROM BusyBox`), not as done.
                if let InstrKind::From { image: raw, .. } = &ins.kind {
                    if bad_ref
                        && !super::subst::undefined_names(raw, self.df.escape(), &|n: &str| {
                            planner.vars().global_arg(n)
                        })
                        .is_empty()
                    {
                        line(' ', raw);
                        return Err(self.at(
                            ins,
                            format!("image reference contains an undefined variable: {raw}"),
                        ));
                    }
                    // `FROM ""`, `FROM $EMPTY`: Charliecloud can't parse it (no step line),
                    // BuildKit says "base name should not be blank".
                    if named && image.is_empty() {
                        return Err(self.at(ins, format!("image reference is empty: {raw}")));
                    }
                }
                // A base to pull is a miss (`.`), as in Charliecloud; one in storage, a
                // stage or scratch, a hit (`*`).
                let to_pull = named
                    && !bad_ref
                    && match Reference::parse(image) {
                        Ok(r) => self.store.image(&r.with_default_tag())?.is_none(),
                        Err(_) => false,
                    };
                line(
                    match (bad_ref, to_pull) {
                        (true, _) => ' ',
                        (false, true) => '.',
                        (false, false) => '*',
                    },
                    image,
                );
                let env = self.from(ins, image, alias.clone())?;
                planner.enter_base(&env);
                let key = self.stage().key;
                self.plan_line(n, Status::Base, Some(key), text);
                return Ok(());
            }
            Action::Global => {
                // A global ARG before the first FROM: nothing to build.
                info!("{n:>3}. {}", crate::log::shown(text));
                self.plan_line(n, Status::Global, None, text);
                return Ok(());
            }
            Action::Ignored => {
                warn!(
                    "{}:{}: not supported, ignored: {} instruction",
                    self.df.file,
                    ins.span.start_line,
                    ins.keyword()
                );
                info!("{n:>3}. {}", crate::log::shown(text));
                let key = self.stage().key;
                self.plan_line(n, Status::Ignored, Some(key), text);
                return Ok(());
            }
            Action::Commit { instruction, key } => (instruction, key),
        };
        // Said on every build, hit or miss, before the step's line, as Charliecloud does:
        // a rebuild from the cache must not hide that an option had no effect.
        if let InstrKind::Copy(args) | InstrKind::Add(args) = sub {
            self.warn_ignored_options(ins, args);
            self.warn_destination_in_tmp(ins, args);
        }
        // RUN's root emulation mode, on hits as on misses (Charliecloud's `RUN.F`). Shown
        // escaped: a Dockerfile from elsewhere could hide what a line runs behind a
        // terminal sequence (`\e[2K\r` erases it and writes another).
        let text_marked = match sub {
            InstrKind::Run { .. } => format!(
                "RUN.{}{}",
                self.opts.force.tag(),
                text.strip_prefix("RUN").unwrap_or(text)
            ),
            _ => text.to_string(),
        };
        let text_marked = crate::log::shown(&text_marked);
        // What the key needs from the context and the mounts; an error there (a missing
        // COPY source) comes after the step's line, as a miss's errors do.
        let (mounts, mut extra) = match self.key_inputs(ins, sub) {
            Ok(x) => x,
            Err(e) => {
                info!("{n:>3}. {text_marked}");
                return Err(e);
            }
        };
        // Steps whose options earlier versions parsed and ignored (docs/cache-keys.md):
        // their old entries hold the wrong content and must not be reused.
        if let Some(mark) = applied_since(sub) {
            extra.splice(0..0, mark.bytes());
        }
        let sources: Vec<&Path> = match (sub, &self.last_sources) {
            (InstrKind::Add(a) | InstrKind::Copy(a), Some((srcs, _, _, _)))
                if a.from().is_none() =>
            {
                srcs.iter().map(|s| s.real.as_path()).collect()
            }
            _ => Vec::new(),
        };
        // A key whose sources' hash left a directory's mode and time out (above) never
        // names an entry made when it did not.
        if matches!(sub, InstrKind::Add(_) | InstrKind::Copy(_))
            && matches!(self.last_sources, Some((_, _, _, true)))
        {
            extra.splice(0..0, b"copy-dir-top 1\n".iter().copied());
        }
        let stage = self.stages.last().expect("in a stage");
        if let Some(mark) = changed_since(sub, &sources, &stage.config, stage.cmd_set) {
            extra.splice(0..0, mark.bytes());
        }
        // `COPY --from` with a wildcard ending in `/` matched files too before it matched
        // directories only (Python's glob): the same key input, another result. Context
        // sources need no mark, their hash covers what was found.
        if let InstrKind::Copy(a) = sub {
            let dir_glob = |s: &CopySource| matches!(s, CopySource::Path(p) if context::has_glob(p) && p.ends_with('/'));
            if a.from().is_some() && a.sources.iter().any(dir_glob) {
                extra.splice(0..0, b"copy-glob-dir 1\n".iter().copied());
            }
        }
        let key = self.stage().key.child(&input.encoding, &extra);
        if matches!(sub, InstrKind::Cmd(_)) {
            self.stage().cmd_set = true;
        }
        // On a miss, the key's lock until the entry is written: a concurrent build that
        // misses the same step waits for this one's entry instead of running it too.
        let mut key_lock = None;
        let cached = match self.opts.cache {
            CacheMode::Enabled => match self.store.cache_get(&key.hex())? {
                None if !self.opts.dry_run => {
                    key_lock = Some(self.store.lock_cache_key(self.lock, &key.hex(), || {
                        info!(
                            "{n:>3}  waiting for another build running this step ({})",
                            key.short()
                        )
                    })?);
                    self.store.cache_get(&key.hex())?
                }
                c => c,
            },
            _ => None,
        };
        if let Some(commit) = cached {
            drop(key_lock);
            self.hits += 1;
            info!("{n:>3}* {text_marked}");
            let config = git::read_config(&self.repo, commit)?;
            self.record(n, text, commit, &key, true, None);
            self.plan_line(n, Status::Hit, Some(key), text);
            let st = self.stage();
            st.commit = commit;
            st.key = key;
            st.config = config;
            st.model = None;
            st.fresh = false;
            return Ok(());
        }
        self.misses += 1;
        // Only a miss pays for its key-input record and the comparison with the cache.
        let record = self.key_record(ins, text, sub, &input.encoding, planner.vars(), &mounts)?;
        self.plan_line(n, Status::Miss, Some(key), text);
        info!("{n:>3}. {text_marked}");
        let why = match self.opts.cache {
            CacheMode::Enabled => Some(self.explain(n, &record, &ins.kind)?),
            _ => None,
        };
        if self.opts.explain || crate::log::enabled(1) {
            match (&why, self.opts.cache) {
                // Why lines quote cached steps and earlier notes, which a fetch brings.
                (Some(w), _) => w
                    .iter()
                    .for_each(|w| info!("       why: {}", crate::log::shown(w))),
                (None, mode) => {
                    let w = mode.note_name().and_then(CacheMode::why_executed);
                    info!("       why: {}", w.unwrap_or("cache not read"))
                }
            }
        }
        if self.opts.dry_run {
            let st = self.stage();
            st.key = key;
            st.fresh = true;
            return Ok(());
        }
        self.step_record = Some(record);
        let performed = self.perform(ins, sub, planner.vars(), &mounts);
        let record = self.step_record.take().expect("set above");
        let performed = performed.map_err(|e| self.locate(ins, e))?;
        let committed = self
            .commit(n, ins, text, key, performed, &record, why)
            .map_err(|e| self.locate(ins, e));
        drop(key_lock);
        committed
    }

    /// The mounts of a RUN and the part of a step's cache key that needs I/O (the
    /// context files of a COPY or ADD, a RUN's bind mounts).
    fn key_inputs(
        &mut self,
        ins: &Instruction,
        sub: &InstrKind,
    ) -> Result<(Vec<RunMount>, Vec<u8>), BuildError> {
        let mounts = match sub {
            InstrKind::Run { options, .. } => {
                run_network_none(options).map_err(|e| self.at(ins, e))?;
                self.run_mounts(ins, options)?
            }
            _ => Vec::new(),
        };
        // The cache key: parent key, the planned key input, and what needs I/O.
        let extra = match sub {
            InstrKind::Copy(args) | InstrKind::Add(args) => self.sources_hash(ins, args, None)?,
            InstrKind::Run { .. } => self.mounts_hash(ins, &mounts, None)?,
            _ => Vec::new(),
        };
        Ok((mounts, extra))
    }

    /// Error `e` of performing or committing `ins`, with the instruction's file and line
    /// when it has none (a layer that can't be stored: "Dockerfile:3: RUN", caused by the
    /// full disk). RUN's exit status keeps Charliecloud's message as it is.
    fn locate(&self, ins: &Instruction, e: BuildError) -> BuildError {
        match e {
            BuildError::At { .. }
            | BuildError::Parse(_)
            | BuildError::RunFailed(_)
            | BuildError::RunSignal(_) => e,
            e => self.at_err(ins, ins.keyword().to_string(), e),
        }
    }

    /// The key-input record of the step `sub` (docs/cache-keys.md).
    fn key_record(
        &mut self,
        ins: &Instruction,
        text: &str,
        sub: &InstrKind,
        input: &[u8],
        vars: &Vars,
        mounts: &[RunMount],
    ) -> Result<Record, BuildError> {
        let mut items = Vec::new();
        if let InstrKind::Copy(args) | InstrKind::Add(args) = sub {
            self.sources_hash(ins, args, Some(&mut items))?;
        }
        if !mounts.is_empty() {
            self.mounts_hash(ins, mounts, Some(&mut items))?;
        }
        Ok(why::record(text, sub, input, vars, &self.plan_opts, items))
    }

    /// Why a step with `record` on the current stage's commit missed, in words. `kind`:
    /// the instruction as parsed, for a RUN's heredocs (which its record hashes only as
    /// part of the key input).
    fn explain(
        &mut self,
        n: usize,
        record: &Record,
        kind: &InstrKind,
    ) -> Result<Vec<String>, BuildError> {
        let st = self
            .stages
            .last()
            .expect("first instruction is FROM (parser checks)");
        let fresh = st.fresh;
        let parent = st.commit;
        if self.own.is_none() {
            let sha = crate::provenance::sha256_hex(self.opts.dockerfile.as_bytes());
            self.own = Some(why::own_entries(&self.repo, &self.opts.tag, &sha)?);
        }
        if self.own.as_ref().is_some_and(Option::is_none) {
            let mut name = self.opts.tag.clone();
            name.tag = None;
            name.digest = None;
            return Ok(vec![format!(
                "first build (no earlier build of {name} or of this Dockerfile)"
            )]);
        }
        if fresh {
            return Ok(vec![
                "no entry for this parent (an earlier step of this stage was not in the cache)"
                    .into(),
            ]);
        }
        // The entry this step's instruction made in the image's last build, if any.
        let prefer = self
            .prev_note()?
            .and_then(|p| p.steps.iter().find(|s| s.n == n))
            .and_then(|s| ObjectId::from_hex(s.commit.as_bytes()).ok());
        let own = self.own.as_ref().and_then(Option::as_ref);
        if let Some((entry, w)) = why::closest_among(
            &self.repo,
            &mut self.siblings,
            parent,
            record,
            None,
            prefer,
            own,
        )? {
            return Ok(match kind {
                InstrKind::Run { heredocs, .. } => {
                    let h: Vec<_> = heredocs.iter().collect();
                    why::explain_heredocs(&self.repo, entry, &h, w)?
                }
                // Name the stage (or image) a `--from` source's commit changed in.
                InstrKind::Copy(args) | InstrKind::Add(args) => match args.from() {
                    Some(from) => w
                        .into_iter()
                        .map(|r| {
                            if r.starts_with("sources changed: ") {
                                r.replace(
                                    "--from stage",
                                    &format!("--from={from} (its result is another commit)"),
                                )
                            } else {
                                r
                            }
                        })
                        .collect(),
                    None => w,
                },
                _ => w,
            });
        }
        // The first step of a stage: did the base change since the image was last built?
        let stage = self.stages.len() - 1;
        if let Some(base) = self.bases.iter().find(|b| b.stage == stage).cloned() {
            if ObjectId::from_hex(base.commit.as_bytes()).is_ok_and(|c| c == parent) {
                let was = self
                    .prev_note()?
                    .and_then(|p| p.bases.iter().find(|b| b.stage == stage))
                    .cloned();
                match was {
                    Some(was) if was.commit != base.commit && was.image == base.image => {
                        return Ok(vec![format!(
                            "no entry for this parent: base image {} changed (was {}, now {})",
                            base.image,
                            base_id(&self.repo, &was.commit),
                            base_id(&self.repo, &base.commit)
                        )]);
                    }
                    // Another image (a `--build-arg` in `FROM ${BASE}`, an edited FROM).
                    Some(was) if was.commit != base.commit => {
                        return Ok(vec![format!(
                            "no entry for this parent: the stage's base is another image \
                             (was {} ({}), now {} ({}))",
                            was.image,
                            base_id(&self.repo, &was.commit),
                            base.image,
                            base_id(&self.repo, &base.commit)
                        )]);
                    }
                    _ => {}
                }
            }
        }
        Ok(vec!["no entry for this parent".into()])
    }

    /// The note of the image's last build ([`Builder::prev_note`]), read once.
    fn prev_note(&mut self) -> Result<Option<&Provenance>, BuildError> {
        if self.prev_note.is_none() {
            let note = match self.store.image(&self.opts.tag)? {
                Some(c) => store::notes::provenance(&self.repo, c)?,
                None => None,
            };
            self.prev_note = Some(note);
        }
        Ok(self.prev_note.as_ref().and_then(Option::as_ref))
    }

    /// Execute a step that missed the cache: change files (into a layer the model
    /// absorbs) and the config. Returns the new config and whether the OCI history
    /// records the step as an empty layer (config-only instructions).
    fn perform(
        &mut self,
        ins: &Instruction,
        sub: &InstrKind,
        vars: &Vars,
        mounts: &[RunMount],
    ) -> Result<(ImageConfig, bool), BuildError> {
        let mut config = self.stage().config.clone();
        let mut empty_layer = true;
        match &sub {
            InstrKind::Run {
                form,
                heredocs,
                options,
            } => {
                let no_network = run_network_none(options).map_err(|e| self.at(ins, e))?;
                self.run(ins, form, heredocs, vars, &config, mounts, no_network)?;
                empty_layer = false;
            }
            InstrKind::Copy(args) => {
                self.copy(ins, args, &config, false)?;
                empty_layer = false;
            }
            InstrKind::Add(args) => {
                self.copy(ins, args, &config, true)?;
                empty_layer = false;
            }
            InstrKind::Env(pairs) => {
                for (k, v) in pairs {
                    // A `--build-arg` value (or a base image's variable) substituted in.
                    if !store::config::env_line_ok(k, v) {
                        let what = if k.contains('\n') { "name" } else { "value" };
                        return Err(self.at(
                            ins,
                            format!(
                                "ENV {k:?}: its {what} has a newline, which /ch/environment \
                                 (one NAME=VALUE line per variable, no quoting) can't hold"
                            ),
                        ));
                    }
                    config.set_env(k, v);
                }
                for k in config.unwritable_env() {
                    warn!(
                        "{}:{}: ENV: {k:?} of the base image has a newline: left out of \
                         /ch/environment",
                        self.df.file, ins.span.start_line
                    );
                }
                self.environment_file(ins, &config)?;
            }
            InstrKind::Arg(_) => {}
            InstrKind::Label(pairs) => {
                for (k, v) in pairs {
                    config.labels.insert(k.clone(), v.clone());
                }
            }
            InstrKind::Workdir(dir) => {
                let new = if dir.starts_with('/') {
                    dir.clone()
                } else {
                    format!("{}/{}", config.cwd.trim_end_matches('/'), dir)
                };
                let clean = normalize_abs(&new);
                self.workdir(ins, &clean)?;
                empty_layer = false;
                config.cwd = clean;
            }
            InstrKind::Shell(argv) => config.shell = argv.clone(),
            InstrKind::Cmd(form) => config.cmd = Some(form_argv(form, &config.shell)),
            InstrKind::Entrypoint(form) => {
                config.entrypoint = Some(form_argv(form, &config.shell));
                // As Docker: a CMD inherited from the base, not set in this stage, is
                // cleared (it would become the new entrypoint's arguments).
                if !self.stage().cmd_set {
                    config.cmd = None;
                }
            }
            // The planner gives these no key input: they never reach here.
            InstrKind::From { .. }
            | InstrKind::User(_)
            | InstrKind::Expose(_)
            | InstrKind::Volume(_)
            | InstrKind::Healthcheck(_)
            | InstrKind::Stopsignal(_)
            | InstrKind::Maintainer(_)
            | InstrKind::Onbuild { .. } => {}
        }
        Ok((config, empty_layer))
    }

    /// Commit a performed step (its config, and whether it left the files as they were)
    /// on the stage's commit, keep its layer, write its cache entry and move the stage
    /// to it.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        n: usize,
        ins: &Instruction,
        text: &str,
        key: Key,
        (mut config, empty_layer): (ImageConfig, bool),
        record: &Record,
        why: Option<Vec<String>>,
    ) -> Result<(), BuildError> {
        config.history.push(History {
            created_by: text.to_string(),
            empty_layer,
        });
        let encoded = config.encode();
        let max = self.stage().config_max;
        if encoded.len() as u64 > max {
            return Err(self.at(
                ins,
                format!(
                    "config.json would be {} bytes, more than a build writes ({max} at most: \
                     its base's and {MAX_CONFIG_GROWTH} more)",
                    encoded.len()
                ),
            ));
        }
        let parent = self.stage().commit;
        let message = format!("{text}\n\ngrove-cache-key: {}\n", key.hex());
        let record = git::write_bounded_blob(
            &self.repo,
            "key-input record",
            record.encode(),
            git::MAX_KEY_INPUTS,
        )?;
        let commit = if self.files_changed {
            self.files_changed = false;
            self.model()?;
            let mut model = self.stage().model.take().expect("model loaded");
            let c = git::write_step_commit(
                &self.repo,
                Some(&mut model),
                encoded,
                parent,
                &message,
                record,
            );
            self.stage().model = Some(model);
            c?
        } else {
            git::write_step_commit(&self.repo, None, encoded, parent, &message, record)?
        };
        let bases = std::mem::take(&mut self.pending_bases);
        if let Some(layer) = self.pending_layer.take() {
            self.store
                .keep_layer_on(self.lock, &layer, commit, &bases)?;
        }
        if self.opts.cache != CacheMode::Disabled {
            self.store.cache_put(self.lock, &key.hex(), commit)?;
            self.siblings.add(parent, commit);
        }
        self.record(n, text, commit, &key, false, why);
        let st = self.stage();
        st.commit = commit;
        st.key = key;
        st.config = config;
        // A new state: no entry can start from it yet.
        st.fresh = true;
        Ok(())
    }

    fn record(
        &mut self,
        n: usize,
        text: &str,
        commit: ObjectId,
        key: &Key,
        hit: bool,
        why: Option<Vec<String>>,
    ) {
        self.steps.push(ProvenanceStep {
            n,
            stage: self.stages.len() - 1,
            instruction: text.to_string(),
            commit: commit.to_string(),
            key: key.hex(),
            hit,
            why,
            files: self.pending_files.take(),
        });
    }

    fn plan_line(&mut self, n: usize, status: Status, key: Option<Key>, text: &str) {
        self.planned.push(Planned {
            n,
            status,
            key,
            text: text.to_string(),
        });
    }

    /// Content hash of COPY/ADD sources: context files by content, other stages by commit.
    /// With `items` (a miss), also the key-input record's items for the sources, and the
    /// build's context hash is left alone (the key's call added them).
    fn sources_hash(
        &mut self,
        ins: &Instruction,
        args: &CopyArgs,
        mut items: Option<&mut Vec<(String, String)>>,
    ) -> Result<Vec<u8>, BuildError> {
        // The key's call (not the record's) notes what the sources read, for provenance.
        let mut files = items.is_none().then(Vec::new);
        if let Some(from) = args.from() {
            let (commit, _) = self.copy_from(ins, from)?;
            // `source-names`: since a source that is a symlink is copied under its own
            // name (not its target's), so entries of earlier versions don't hit.
            let extra = format!("from-commit={commit} source-names").into_bytes();
            // No context sources: what an earlier COPY's key noted is not this step's.
            self.last_sources = None;
            if let Some(items) = items {
                items.push(("source --from stage".into(), why::value_hash(&extra)));
            }
            return Ok(extra);
        }
        let mut all = Vec::new();
        let mut extra = Vec::new();
        // The first wildcard source that matched nothing: an error only if no source did.
        let mut empty_wildcard: Option<context::ContextError> = None;
        for s in &args.sources {
            match s {
                CopySource::Path(p) => {
                    if is_url(p) {
                        // ADD URL: the content decides the key (downloaded every build, as
                        // Docker does; no mtime or ETag shortcut).
                        let f = self.download(ins, p, args.options.get("checksum"))?;
                        let h = context::hash_file(&f).map_err(|e| {
                            self.at_err(ins, format!("can't read download of {p}"), e)
                        })?;
                        extra.extend_from_slice(p.as_bytes());
                        extra.extend_from_slice(&h);
                        if let Some(files) = files.as_mut() {
                            let (sha, _) = context::file_digests(&f).map_err(|e| {
                                self.at_err(ins, format!("can't read download of {p}"), e)
                            })?;
                            files.push(ProvenanceFile {
                                git_blob: None,
                                path: None,
                                sha256: hex::encode(sha),
                                url: Some(p.clone()),
                                mount: None,
                            });
                        }
                        if let Some(items) = items.as_deref_mut() {
                            items.push((
                                format!("source {}", why::name_text(p.as_bytes())),
                                why::value_hash(&h),
                            ));
                        }
                        continue;
                    }
                    if self.opts.no_context {
                        // Charliecloud's message: the sources are not missing, there is no
                        // context to find them in.
                        return Err(self.at(
                            ins,
                            format!("{}: no context because \"-\" given", ins.keyword()),
                        ));
                    }
                    match context::expand(&self.opts.context, p, &self.ignore) {
                        Ok(found) => all.extend(found),
                        // Skipped if another source matches (checked below).
                        Err(e) if e.is_empty_wildcard() => {
                            empty_wildcard.get_or_insert(e);
                        }
                        Err(e) => return Err(self.at_err(ins, ins.keyword().to_string(), e)),
                    }
                }
                CopySource::Heredoc(h) => {
                    extra.extend_from_slice(h.name.as_bytes());
                    extra.extend_from_slice(h.content.as_bytes());
                    if let Some(items) = items.as_deref_mut() {
                        items.push((
                            format!("source heredoc {}", why::name_text(h.name.as_bytes())),
                            why::value_hash(h.content.as_bytes()),
                        ));
                    }
                }
            }
        }
        if let Some(e) = empty_wildcard {
            if all.is_empty() && extra.is_empty() {
                return Err(self.at_err(ins, ins.keyword().to_string(), e));
            }
        }
        // A directory source whose contents go into a directory the image already has
        // (`COPY . /app/` after `WORKDIR /app`, `COPY rootfs/ /`) leaves that directory's
        // mode and time as they were, so its own mode and time are no input: the context
        // directory's time changes with every file added, removed or replaced at its top
        // (a CI checkout, an editor's save by rename), even one `.dockerignore` excludes.
        // A destination the step creates takes them (as in Docker), so they are hashed
        // then. `--parents` copies a source directory other than the context's root as
        // itself, with its mode and time.
        let parents = args.options.bool("parents");
        let contents_only = |s: &context::Source| !parents || s.rel.is_empty();
        let bare = all.iter().any(|s| contents_only(s) && s.real.is_dir())
            && self.dest_dir_exists(&args.dest)?;
        let bare_top = |s: &context::Source| bare && contents_only(s);
        // `--parents` makes each source's directories below the destination with the
        // context's modes and times (`copy::make_context_parents`): they are inputs too.
        // Entries of earlier versions, which left them out, have no `parent-dirs` field.
        let mut dirs = std::collections::BTreeMap::new();
        if parents {
            for s in &all {
                let comps: Vec<&[u8]> = s
                    .rel_bytes
                    .split(|b| *b == b'/')
                    .filter(|c| !c.is_empty())
                    .collect();
                for i in 1..comps.len() {
                    dirs.insert(comps[..i].join(&b'/'), Vec::new());
                }
            }
        }
        // The key's pass keeps its manifest, so that a miss's record (the next call, on the
        // same sources) does not walk and stat the sources a second time; it also notes the
        // files read, for provenance.
        let (h, manifest) = match self.last_sources.take() {
            Some((srcs, h, m, b)) if items.is_some() && srcs == all && b == bare => (h, Some(m)),
            _ => {
                let mut m = Vec::new();
                let mut found = files.as_ref().map(|_| Vec::new());
                let h = context::hash_sources_listing(
                    &all,
                    &self.ignore,
                    &mut self.stat_cache,
                    self.store.xattrs().record(),
                    Some(&mut m),
                    found.as_mut(),
                    &bare_top,
                    self.source_date_epoch,
                )
                .map_err(|e| self.at_err(ins, ins.keyword().to_string(), e))?;
                if let (Some(mut files), Some(found)) = (files, found) {
                    files.extend(self.context_files(found)?);
                    self.pending_files = Some(files);
                }
                if items.is_none() {
                    self.last_sources = Some((all, h, m, bare));
                    (h, None)
                } else {
                    (h, Some(m))
                }
            }
        };
        extra.extend_from_slice(&h);
        if !dirs.is_empty() {
            use std::os::unix::fs::MetadataExt as _;
            extra.extend_from_slice(b"parent-dirs 1\n");
            for (rel, entry) in dirs.iter_mut() {
                let p = self.opts.context.join(std::ffi::OsStr::from_bytes(rel));
                let md = fs::metadata(&p).at("stat", &p)?;
                entry.extend_from_slice(&(rel.len() as u64).to_le_bytes());
                entry.extend_from_slice(rel);
                let (sec, nsec) = context::entry_time(&md, self.source_date_epoch);
                entry.extend_from_slice(&(md.mode() & 0o7777).to_le_bytes());
                entry.extend_from_slice(&sec.to_le_bytes());
                entry.extend_from_slice(&nsec.to_le_bytes());
                extra.extend_from_slice(entry);
            }
        }
        match items {
            Some(items) => {
                self.manifest_rels.clear();
                for (rel, fh) in manifest.into_iter().flatten() {
                    let name = format!("file {}", why::name_text(&rel));
                    items.push((name.clone(), why::value_hash(&fh)));
                    self.manifest_rels.insert(name, rel);
                }
                for (rel, entry) in dirs {
                    let name = format!("file {}", why::name_text(&rel));
                    if !self.manifest_rels.contains_key(&name) {
                        items.push((name, why::value_hash(&entry)));
                    }
                }
            }
            // The context hash in the provenance covers every source set of the build,
            // heredocs and downloads included.
            None => {
                self.context_hash.update(&extra);
            }
        }
        Ok(extra)
    }

    /// The regular context files a COPY or ADD read (as the walk for its key found them),
    /// with their digests: from the stat cache when a file is unchanged, else read (in
    /// parallel) and cached.
    fn context_files(
        &mut self,
        found: Vec<context::RegularFile>,
    ) -> Result<Vec<ProvenanceFile>, BuildError> {
        use rayon::prelude::*;
        let cache = &self.stat_cache;
        let digests: Vec<([u8; 32], ObjectId, bool)> = found
            .par_iter()
            .map(|(_, real, md)| -> Result<_, IoError> {
                if let Some((sha, blob)) = cache.cached_digests(real, md) {
                    return Ok((sha, blob, false));
                }
                let (sha, blob) = context::file_digests(real).at("read", real)?;
                Ok((sha, blob, true))
            })
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(found.len());
        for ((rel, real, md), (sha, blob, new)) in found.into_iter().zip(digests) {
            if new {
                self.stat_cache.remember_digests(&real, &md, sha, blob);
            }
            out.push(ProvenanceFile {
                git_blob: Some(blob.to_string()),
                path: Some(crate::provenance::path_text(&rel)),
                sha256: hex::encode(sha),
                url: None,
                mount: None,
            });
        }
        Ok(out)
    }

    /// Download an `ADD` URL once per build into scratch space; returns the file. With
    /// `--checksum=sha256:HEX` (BuildKit's), the download must have that digest.
    fn download(
        &mut self,
        ins: &Instruction,
        url: &str,
        checksum: Option<&str>,
    ) -> Result<PathBuf, BuildError> {
        let f = self.download_unchecked(ins, url)?;
        if let Some(c) = checksum {
            let want = parse_checksum(c).ok_or_else(|| {
                self.at(
                    ins,
                    format!("ADD --checksum: {c:?} is not sha256:<64 hex digits>"),
                )
            })?;
            let (sha, _) = context::file_digests(&f)
                .map_err(|e| self.at_err(ins, format!("can't read download of {url}"), e))?;
            let got = hex::encode(sha);
            if got != want {
                return Err(self.at(
                    ins,
                    format!(
                        "ADD {url}: checksum mismatch: expected sha256:{want}, got sha256:{got}"
                    ),
                ));
            }
        }
        Ok(f)
    }

    fn download_unchecked(&mut self, ins: &Instruction, url: &str) -> Result<PathBuf, BuildError> {
        if !matches!(ins.kind, InstrKind::Add(_)) {
            return Err(self.at(ins, format!("COPY can't fetch URLs (use ADD): {url}")));
        }
        if let Some(p) = self.downloads.get(url) {
            return Ok(p.clone());
        }
        let dir = self.scratch("add")?;
        let f = dir.join("download");
        info!("downloading: {url}");
        crate::registry::client::fetch_url(url, &f)
            .map_err(|e| self.at_err(ins, format!("ADD {url}"), e))?;
        self.downloads.insert(url.to_string(), f.clone());
        Ok(f)
    }

    /// The commit that `COPY --from=FROM` reads, and the stage's index if it is one: an
    /// earlier stage by name or number, else an image (pulled if not in storage), as in
    /// Docker.
    fn copy_from(
        &mut self,
        ins: &Instruction,
        from: &str,
    ) -> Result<(ObjectId, Option<usize>), BuildError> {
        // Resolved once per instruction (its key, then its copy).
        let memo_key = (self.stages.len(), ins.span.start_line, from.to_string());
        if let Some((k, v)) = &self.copy_from_memo {
            if *k == memo_key {
                return Ok(*v);
            }
        }
        let resolved = self.copy_from_resolve(ins, from)?;
        self.copy_from_memo = Some((memo_key, resolved));
        Ok(resolved)
    }

    /// [`Builder::copy_from`] without the memo.
    fn copy_from_resolve(
        &mut self,
        ins: &Instruction,
        from: &str,
    ) -> Result<(ObjectId, Option<usize>), BuildError> {
        let lower = from.to_ascii_lowercase();
        let current = self.stages.len() - 1;
        let found = match lower.parse::<usize>() {
            Ok(i) if i < current => Some(i),
            _ => self.stages[..current]
                .iter()
                .rposition(|s| s.alias.as_deref() == Some(lower.as_str())),
        };
        if let Some(i) = found {
            return Ok((self.stages[i].commit, Some(i)));
        }
        let kw = ins.keyword();
        // A number or the current stage's name names no image: say so rather than pull.
        if lower.parse::<usize>().is_ok()
            || self.stages[current].alias.as_deref() == Some(lower.as_str())
        {
            let what = if lower.parse::<usize>() == Ok(current)
                || self.stages[current].alias.as_deref() == Some(lower.as_str())
            {
                "is the current stage"
            } else {
                "does not exist yet (stages count from 0)"
            };
            return Err(self.at(ins, format!("{kw} --from: stage {from} {what}")));
        }
        // `--from=-1`: Charliecloud's message (Docker says "index out of bounds").
        if lower
            .strip_prefix('-')
            .is_some_and(|n| n.parse::<usize>().is_ok())
        {
            return Err(self.at(
                ins,
                format!("{kw} --from={from}: invalid negative stage index"),
            ));
        }
        // A later stage's name is not an image to pull either.
        let later = self.df.instructions.iter().find_map(|i| match &i.kind {
            InstrKind::From { alias: Some(a), .. }
                if i.span.start_line > ins.span.start_line && *a == lower =>
            {
                Some(i.span.start_line)
            }
            _ => None,
        });
        if let Some(line) = later {
            return Err(self.at(
                ins,
                format!(
                    "{kw} --from={from}: stage '{lower}' ({}:{line}) comes after this one (so it does not exist here: Grove builds stages in order)",
                    self.df.file
                ),
            ));
        }
        let r = Reference::parse(from)
            .map_err(|e| {
                self.at_err(
                    ins,
                    format!("{kw} --from: no earlier stage named {from:?}, nor an image reference"),
                    e,
                )
            })?
            .with_default_tag();
        if let Some(c) = self.store.image(&r)? {
            return Ok((c, None));
        }
        let pulled = crate::registry::pull::pull(self.store, self.lock, &r, &r, &self.opts.registry)
            .map_err(|e| {
                self.at_err(
                    ins,
                    format!(
                        "{kw} --from={from}: stage {from} does not exist, and image {r} is not in storage and can't be pulled"
                    ),
                    e,
                )
            })?;
        Ok((pulled.commit(), None))
    }

    fn from(
        &mut self,
        ins: &Instruction,
        image: &str,
        alias: Option<String>,
    ) -> Result<Vec<(String, String)>, BuildError> {
        let lower = image.to_ascii_lowercase();
        let (commit, key) = if lower == "scratch" {
            self.hits += 1;
            let cfg = ImageConfig::default();
            let c =
                git::write_image_commit(&self.repo, &mut Dir::new(0o755), &cfg, None, "SCRATCH")?;
            (c, Key::from_base(&c.to_string()))
        } else if let Some(st) = self
            .stages
            .iter()
            .rev()
            .find(|s| s.alias.as_deref() == Some(lower.as_str()))
        {
            self.hits += 1;
            (st.commit, st.key)
        } else {
            if image.contains('$') {
                return Err(self.at(
                    ins,
                    format!("image reference contains an undefined variable: {image}"),
                ));
            }
            let r = Reference::parse(image)
                .map_err(|e| self.at_err(ins, ins.keyword().to_string(), e))?
                .with_default_tag();
            if r == self.opts.tag && !self.opts.extend {
                return Err(self.at(ins, format!("output image ({r}) can't be the same as FROM")));
            }
            // The summary counts FROM: a hit if the base is in storage, executed if pulled.
            let found = self.store.image(&r)?;
            if found.is_some() {
                self.hits += 1;
            } else {
                self.misses += 1;
            }
            let c = match found {
                Some(c) => c,
                None => {
                    crate::registry::pull::pull(self.store, self.lock, &r, &r, &self.opts.registry)
                        .map_err(|e| {
                            self.at_err(ins, format!("{r}: not in storage and can't pull it"), e)
                        })?
                        .commit()
                }
            };
            (c, Key::from_base(&c.to_string()))
        };
        let config = git::read_config(&self.repo, commit)?;
        let base_config = git::blob_size(&self.repo, git::image_trees(&self.repo, commit)?.config)?;
        let config_max = git::MAX_CONFIG.min(base_config.saturating_add(MAX_CONFIG_GROWTH));
        let env = config.env.clone();
        let pulled = crate::registry::pull::pull_record(&self.repo, commit)?;
        self.bases.push(ProvenanceBase {
            stage: self.stages.len(),
            image: image.to_string(),
            commit: commit.to_string(),
            digest: pulled.as_ref().map(|p| p.manifest.clone()),
            source: pulled.and_then(|p| p.source),
        });
        self.stages.push(Stage {
            alias,
            commit,
            key,
            config,
            model: None,
            fresh: false,
            cmd_set: false,
            config_max,
        });
        Ok(env)
    }

    /// Whether the COPY or ADD destination `dest` (relative to the stage's working
    /// directory) is a directory of the current stage's image, its symlinks followed as
    /// the copy follows them (the image root counts). A destination the copy can't
    /// resolve is not one: the copy reports why.
    fn dest_dir_exists(&mut self, dest: &str) -> Result<bool, BuildError> {
        let dest_abs = dest_path(dest, &self.stage().config.cwd);
        if let Some(model) = &self.stage().model {
            return Ok(match copy::resolve(model, &dest_abs, true) {
                Ok(c) => c.is_empty() || matches!(model.get(&c.join(&b'/')), Some(Node::Dir(_))),
                Err(_) => false,
            });
        }
        // After a cache hit the model is not loaded: read only the trees along the path
        // (reading the image whole cost 0.1 s per COPY of a Debian image, debug build).
        let commit = self.stage().commit;
        let repo = &self.repo;
        let kind = |p: &[u8]| git::path_kind(repo, commit, p);
        let resolved = copy::resolve_with(&dest_abs, true, |p| {
            Ok::<_, git::ReadError>(match kind(p)? {
                Some(git::PathKind::Symlink(t)) => Some(t),
                _ => None,
            })
        })?;
        Ok(match resolved {
            Some(c) => kind(&c.join(&b'/'))? == Some(git::PathKind::Dir),
            None => false,
        })
    }

    /// The current stage's model, loading it on first use.
    fn model(&mut self) -> Result<&mut Dir, BuildError> {
        let commit = self.stage().commit;
        if self.stage().model.is_none() {
            let (m, _) = git::read_image(&self.repo, commit)?;
            self.stage().model = Some(m);
        }
        Ok(self.stage().model.as_mut().expect("just loaded"))
    }

    fn scratch(&self, tag: &str) -> Result<PathBuf, BuildError> {
        let p = self.store.scratch_path(tag);
        fs::create_dir_all(&p).at("create directory", &p)?;
        self.scratches.borrow_mut().push(p.clone());
        Ok(p)
    }

    /// Fold a populated layer (or overlay upper dir) into the model and keep it.
    fn absorb(&mut self, layer: &Path) -> Result<(), BuildError> {
        let ts = self.store.thread_safe().clone();
        let clamp = self.source_date_epoch;
        let xattrs = self.store.xattrs();
        let model = self.model()?;
        let t = std::time::Instant::now();
        let (changes, warnings) = store::layer::apply_upper(&ts, model, layer, clamp, xattrs)?;
        crate::debug!(
            "stored {} entries, removed {}, in {:.2}s",
            changes.written,
            changes.removed,
            t.elapsed().as_secs_f64()
        );
        self.files_changed = true;
        for w in warnings {
            warn!("{}", crate::log::shown(&w));
        }
        Ok(())
    }

    /// A RUN's `--mount`s, parsed and with targets resolved against the stage's working
    /// directory. Any problem is an error naming the Dockerfile's file and line.
    fn run_mounts(
        &self,
        ins: &Instruction,
        options: &dockerfile::Flags,
    ) -> Result<Vec<RunMount>, BuildError> {
        let cwd = self.stages.last().map(|s| s.config.cwd.clone());
        let cwd = cwd.as_deref().unwrap_or("/");
        let mut out: Vec<RunMount> = Vec::new();
        for v in options.get_all("mount") {
            let m = mount::parse(v).map_err(|e| self.at(ins, e.to_string()))?;
            let target = mount::target(&m.target, cwd).map_err(|e| self.at(ins, e.to_string()))?;
            if out.iter().any(|o| o.target == target) {
                return Err(self.at(ins, format!("--mount: target {target} mounted twice")));
            }
            out.push(RunMount { mount: m, target });
        }
        Ok(out)
    }

    /// The cache-key part of a RUN's mounts: what a bind mount shows (context files by
    /// content, as COPY hashes them; a stage or image by commit). Cache, secret and tmpfs
    /// mounts add nothing (their options are in the instruction's key input; their content
    /// never is). With `items` (a miss), the key-input record's items too.
    fn mounts_hash(
        &mut self,
        ins: &Instruction,
        mounts: &[RunMount],
        mut items: Option<&mut Vec<(String, String)>>,
    ) -> Result<Vec<u8>, BuildError> {
        let mut extra = Vec::new();
        // Entries of RUNs with mounts made when `--mount` was ignored are never reused
        // (docs/cache-keys.md, "Versioning").
        if !mounts.is_empty() {
            extra.extend_from_slice(b"run-mounts 1\0");
        }
        for m in mounts {
            let mount::Kind::Bind {
                source,
                from,
                writable,
            } = &m.mount.kind
            else {
                continue;
            };
            extra.extend_from_slice(b"mount-bind\0");
            extra.extend_from_slice(m.target.as_bytes());
            extra.push(0);
            match from {
                Some(f) => {
                    let c = self.mount_from(ins, f)?;
                    let e = format!("from-commit={c}");
                    if let Some(items) = items.as_deref_mut() {
                        items.push((
                            format!("mount {} from {f}", m.target),
                            why::value_hash(e.as_bytes()),
                        ));
                    }
                    extra.extend_from_slice(e.as_bytes());
                }
                None => {
                    let found = self.bind_context_source(ins, source)?;
                    let mut manifest = items.as_ref().map(|_| Vec::new());
                    // The key's call (not the record's) notes the files bound, for
                    // provenance: they go into the image's making without being copied.
                    let mut listed = items.is_none().then(Vec::new);
                    // The context itself bound shows the RUN its top directory's mode and
                    // time: inputs. A copy (`.dockerignore`d files left out, or writable)
                    // keeps the mode but takes the newest time of what it holds, not the
                    // context directory's, which a file the copy leaves out changes
                    // (`bind_copy_time`): that time is no input of its own, the mode is.
                    let copied = self.bind_is_copy(*writable);
                    let top_dir = found.first().is_some_and(|s| s.real.is_dir());
                    if copied && top_dir {
                        use std::os::unix::fs::MetadataExt;
                        let md = fs::metadata(&found[0].real).at("stat", &found[0].real)?;
                        extra.extend_from_slice(
                            format!("copy-top 1 mode={:o}\0", md.mode() & 0o7777).as_bytes(),
                        );
                    }
                    let h = context::hash_sources_listing(
                        &found,
                        &self.ignore,
                        &mut self.stat_cache,
                        self.store.xattrs().record(),
                        manifest.as_mut(),
                        listed.as_mut(),
                        &|_| copied,
                        self.source_date_epoch,
                    )
                    .map_err(|e| self.at_err(ins, "RUN --mount=type=bind", e))?;
                    extra.extend_from_slice(&h);
                    if let Some(listed) = listed {
                        let mut files = self.context_files(listed)?;
                        for f in &mut files {
                            f.mount = Some(m.target.clone());
                        }
                        self.context_hash.update(&h);
                        self.pending_files
                            .get_or_insert_with(Vec::new)
                            .extend(files);
                    }
                    if let Some(items) = items.as_deref_mut() {
                        for (rel, fh) in manifest.into_iter().flatten() {
                            items.push((
                                format!("file {}", why::name_text(&rel)),
                                why::value_hash(&fh),
                            ));
                        }
                    }
                }
            }
        }
        Ok(extra)
    }

    /// Whether a context bind mount is a copy in scratch space (writes discarded,
    /// `.dockerignore`d files left out) rather than the context itself, read-only.
    /// With `SOURCE_DATE_EPOCH` the copy's times are clamped to it, as the key's are.
    fn bind_is_copy(&self, writable: bool) -> bool {
        writable || !self.ignore.is_empty() || self.source_date_epoch.is_some()
    }

    /// The context path a bind mount's `source=` names: exactly one, inside the context
    /// (symlinks resolved), not excluded by `.dockerignore`.
    fn bind_context_source(
        &self,
        ins: &Instruction,
        source: &str,
    ) -> Result<Vec<context::Source>, BuildError> {
        if source.contains(['*', '?', '[']) {
            return Err(self.at(
                ins,
                format!("--mount: type=bind: source {source:?} can't be a pattern"),
            ));
        }
        if self.opts.no_context {
            return Err(self.at(
                ins,
                format!("--mount: type=bind: source {source:?}: no context because \"-\" given"),
            ));
        }
        context::expand(&self.opts.context, source, &self.ignore)
            .map_err(|e| self.at_err(ins, format!("--mount: type=bind: source {source:?}"), e))
    }

    /// The commit a mount's `from=` names: an earlier stage (by name or number), else an
    /// image (pulled if not in storage).
    fn mount_from(&mut self, ins: &Instruction, from: &str) -> Result<ObjectId, BuildError> {
        let lower = from.to_ascii_lowercase();
        let current = self.stages.len().saturating_sub(1);
        let stage = match lower.parse::<usize>() {
            Ok(i) if i < current => self.stages.get(i),
            _ => self.stages[..current]
                .iter()
                .rev()
                .find(|s| s.alias.as_deref() == Some(lower.as_str())),
        };
        if let Some(st) = stage {
            return Ok(st.commit);
        }
        let r = Reference::parse(from)
            .map_err(|e| self.at_err(ins, format!("--mount: from={from}"), e))?
            .with_default_tag();
        if let Some(c) = self.store.image(&r)? {
            return Ok(c);
        }
        let pulled = crate::registry::pull::pull(self.store, self.lock, &r, &r, &self.opts.registry)
            .map_err(|e| {
                self.at_err(
                    ins,
                    format!(
                        "--mount: from={from}: no earlier stage of that name, and image {r} is not in storage and can't be pulled"
                    ),
                    e,
                )
            })?;
        Ok(pulled.commit())
    }

    /// Copy `source` of commit `commit` (resolved inside its tree) to host path `to`.
    fn copy_out_of(
        &mut self,
        ins: &Instruction,
        commit: ObjectId,
        source: &str,
        to: &Path,
    ) -> Result<(), BuildError> {
        let loaded = self
            .stages
            .iter()
            .find(|s| s.commit == commit)
            .and_then(|s| s.model.clone());
        let model = match loaded {
            Some(m) => m,
            None => git::read_image(&self.repo, commit)?.0,
        };
        let comps = copy::resolve(&model, source, true)
            .map_err(|e| self.at_err(ins, format!("--mount: source {source:?}"), e))?;
        let path = comps.join(&b'/');
        let node = if comps.is_empty() {
            Node::Dir(model.clone())
        } else {
            model
                .get(&path)
                .cloned()
                .ok_or_else(|| self.at(ins, format!("--mount: source not found: {source}")))?
        };
        let times = model.times.subtree(&path);
        let xattrs = if self.store.xattrs().record() {
            copy::xattrs_subtree(&model.xattrs, &path)
        } else {
            Default::default()
        };
        copy::copy_from_model(&self.repo, &node, to, &times, &xattrs)
            .map_err(|e| self.at_err(ins, "--mount", e))
    }

    /// The host side of a RUN's mounts.
    fn prepare_mounts(
        &mut self,
        ins: &Instruction,
        mounts: &[RunMount],
    ) -> Result<PreparedMounts, BuildError> {
        use crate::run::BuildMount;
        let mut p = PreparedMounts {
            mounts: Vec::new(),
            _locks: Vec::new(),
            temporary: Vec::new(),
        };
        for m in mounts {
            let dst = PathBuf::from(&m.target);
            match &m.mount.kind {
                mount::Kind::Cache {
                    id,
                    sharing,
                    readonly,
                    mode,
                    uid,
                    gid,
                    from,
                    source,
                } => {
                    if *uid != 0 || *gid != 0 {
                        warn!(
                            "{}:{}: --mount: uid={uid},gid={gid} ignored (an unprivileged build owns every file as root)",
                            self.df.file, ins.span.start_line
                        );
                    }
                    let (dir, lock) = self.cache_mount(
                        ins,
                        id,
                        *sharing,
                        *mode,
                        from.as_deref(),
                        source.as_deref(),
                    )?;
                    p._locks.extend(lock);
                    p.mounts.push(BuildMount::Bind {
                        src: dir,
                        dst,
                        writable: !readonly,
                    });
                }
                mount::Kind::Bind {
                    source,
                    from,
                    writable,
                } => {
                    let src = match from {
                        Some(f) => {
                            let c = self.mount_from(ins, f)?;
                            let d = self.scratch("mount")?;
                            p.temporary.push(d.clone());
                            let t = d.join("bind");
                            self.copy_out_of(ins, c, source, &t)?;
                            t
                        }
                        None => {
                            let found = self.bind_context_source(ins, source)?;
                            let s = &found[0];
                            if !self.bind_is_copy(*writable) {
                                // Nothing excluded: the context itself, read-only.
                                s.real.clone()
                            } else {
                                // Writes are discarded, and `.dockerignore`d files stay
                                // out: a copy in scratch space.
                                let d = self.scratch("mount")?;
                                p.temporary.push(d.clone());
                                let t = d.join("bind");
                                copy::copy_host(
                                    &s.real,
                                    (&s.rel, &s.rel_bytes),
                                    &self.ignore,
                                    &Ignore::default(),
                                    &t,
                                    self.store.xattrs(),
                                    None,
                                )
                                .map_err(|e| self.at_err(ins, "--mount: type=bind", e))?;
                                if let Some(max) = self.source_date_epoch {
                                    clamp_times(&t, max)?;
                                }
                                if t.is_dir() {
                                    bind_copy_time(&t)?;
                                }
                                t
                            }
                        }
                    };
                    p.mounts.push(BuildMount::Bind {
                        src,
                        dst,
                        writable: *writable,
                    });
                }
                mount::Kind::Secret {
                    id, required, mode, ..
                } => {
                    let src = self.secret_file(ins, id, *required, *mode)?;
                    if let Some(d) = src.parent() {
                        p.temporary.push(d.to_path_buf());
                    }
                    p.mounts.push(BuildMount::Bind {
                        src,
                        dst,
                        writable: false,
                    });
                }
                mount::Kind::Tmpfs { size } => {
                    let mut options = String::from("mode=1777");
                    if let Some(s) = size {
                        options.push_str(",size=");
                        options.push_str(s);
                    }
                    p.mounts.push(BuildMount::Tmpfs { dst, options });
                }
            }
        }
        Ok(p)
    }

    /// The directory of cache mount `id`, created on first use (with `mode`, filled from
    /// `from`'s `source` if given), and its lock: shared, exclusive (`locked`, waiting for
    /// other users), or (`private`) exclusive if free, else a fresh directory in scratch
    /// space that this RUN alone uses and that is discarded afterwards.
    fn cache_mount(
        &mut self,
        ins: &Instruction,
        id: &str,
        sharing: Sharing,
        mode: u32,
        from: Option<&str>,
        source: Option<&str>,
    ) -> Result<(PathBuf, Option<nix::fcntl::Flock<fs::File>>), BuildError> {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::PermissionsExt;
        let layout = self.store.layout().clone();
        let name = store::layout::Layout::cache_mount_name(id);
        let top = layout.cache_mounts();
        fs::create_dir_all(&top).at("create directory", &top)?;
        let lock_path = layout.cache_mount_lock(&name);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .at("open", &lock_path)?;
        if sharing == Sharing::Locked {
            crate::verbose!("cache mount {id}: waiting for other builds using it");
        }
        let locked = match sharing {
            Sharing::Shared => crate::interrupt::lock_waiting(f, false),
            Sharing::Locked => crate::interrupt::lock_waiting(f, true),
            Sharing::Private => {
                Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
            }
        };
        let (dir, lock) = match locked {
            Ok(l) => (layout.cache_mount(&name), Some(l)),
            Err(e)
                if sharing == Sharing::Private
                    && e.raw_os_error() == Some(nix::errno::Errno::EWOULDBLOCK as i32) =>
            {
                info!("cache mount {id} in use: a private directory for this RUN");
                (self.scratch("cache-private")?.join("cache"), None)
            }
            Err(e) => return Err(IoError::new("lock", &lock_path, e).into()),
        };
        if lock.is_some() {
            // Its last use (for build-cache --gc --keep-storage) and its id.
            fs::write(&lock_path, id.as_bytes()).at("write", &lock_path)?;
        }
        if !dir.exists() {
            let tmp = self.scratch("cache-new")?.join("cache");
            match from {
                Some(f) => {
                    let c = self.mount_from(ins, f)?;
                    self.copy_out_of(ins, c, source.unwrap_or("/"), &tmp)?;
                }
                None => fs::create_dir(&tmp).at("create directory", &tmp)?,
            }
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).at("chmod", &tmp)?;
            if let Err(e) = fs::rename(&tmp, &dir) {
                // Another build created it meanwhile: use theirs.
                if !dir.is_dir() {
                    return Err(IoError::new("create cache mount", &dir, e).into());
                }
            }
        }
        Ok((dir, lock))
    }

    /// A file in scratch space holding secret `id`'s content with `mode`, for one RUN
    /// (removed when the build ends). A secret not given is an empty file, unless
    /// `required`. The content is never logged.
    fn secret_file(
        &mut self,
        ins: &Instruction,
        id: &str,
        required: bool,
        mode: u32,
    ) -> Result<PathBuf, BuildError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let given = self.opts.secrets.iter().rev().find(|s| s.id == id).cloned();
        let content: Vec<u8> = match given.map(|s| s.from) {
            Some(SecretFrom::File(p)) => fs::read(&p).map_err(|e| {
                self.at_err(
                    ins,
                    format!("--mount: type=secret: id={id}: can't read the --secret file"),
                    IoError::new("read", &p, e),
                )
            })?,
            Some(SecretFrom::Env(v)) => match std::env::var_os(&v) {
                Some(x) => std::os::unix::ffi::OsStringExt::into_vec(x),
                None => {
                    return Err(self.at(
                        ins,
                        format!("--mount: type=secret: id={id}: environment variable {v} not set"),
                    ))
                }
            },
            None if required => {
                return Err(self.at(
                    ins,
                    format!(
                        "--mount: type=secret: id={id}: required, but not given (ch-image build --secret id={id},src=FILE)"
                    ),
                ))
            }
            None => Vec::new(),
        };
        let dir = self.secret_dir()?;
        let p = dir.join("secret");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .at("create", &p)?;
        f.write_all(&content).at("write", &p)?;
        drop(f);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).at("chmod", &p)?;
        Ok(p)
    }

    /// A new directory (mode 0700) for one secret: on a tmpfs when one is writable
    /// (`$XDG_RUNTIME_DIR`, else /dev/shm), so the secret is never written to disk, else
    /// in scratch space. The caller removes it when the RUN ends.
    fn secret_dir(&self) -> Result<PathBuf, BuildError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        for base in store::export::tmpfs_candidates() {
            if !store::export::is_tmpfs(&base) {
                continue;
            }
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let d = base.join(format!("grove-secret.{}.{n}", std::process::id()));
            if fs::DirBuilder::new().mode(0o700).create(&d).is_ok() {
                return Ok(d);
            }
        }
        let d = self.scratch("secret")?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).at("chmod", &d)?;
        Ok(d)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        ins: &Instruction,
        form: &CmdForm,
        heredocs: &[dockerfile::Heredoc],
        vars: &Vars,
        config: &ImageConfig,
        mounts: &[RunMount],
        no_network: bool,
    ) -> Result<(), BuildError> {
        let force = self.opts.force;
        let fakeroot = if force == Force::Fakeroot {
            self.model()?;
            let model = self
                .stages
                .last()
                .and_then(|s| s.model.as_ref())
                .expect("model loaded");
            let found = invocation::FAKEROOT_PATHS.iter().find(|p| {
                copy::resolve(model, p, true)
                    .is_ok_and(|c| matches!(model.get(&c.join(&b'/')), Some(Node::File(_))))
            });
            let debian = matches!(model.get(b"etc/debian_version"), Some(Node::File(_)));
            match (found, debian) {
                (Some(fr), _) => invocation::Fakeroot::At(fr.to_string()),
                (None, true) => invocation::Fakeroot::Install,
                (None, false) => invocation::Fakeroot::Missing,
            }
        } else {
            invocation::Fakeroot::Missing
        };
        let (argv, notes) = invocation::command(form, heredocs, &config.shell, force, || fakeroot)
            .map_err(|e| self.at(ins, e.to_string()))?;
        for n in notes {
            info!("{n}");
        }
        let commit = self.stage().commit;
        // A checkout or layer changed behind the store's back would poison this step.
        // Each check is one lstat per entry (plus reading files whose inodes changed
        // since the stamp, or all of a copied tree's): in parallel.
        let lowers = self
            .store
            .view_verified(self.lock, commit)
            .map_err(|e| match e {
                store::StoreError::Stamp(e) => BuildError::Changed(e),
                e => e.into(),
            })?;
        let step = self.scratch("run")?;
        let (upper, work, merged) = (step.join("upper"), step.join("work"), step.join("merged"));
        for d in [&upper, &work, &merged] {
            fs::create_dir(d).at("create directory", d)?;
        }
        let env = invocation::environment(
            vars.run_env(),
            |k| std::env::var(k).ok(),
            self.source_date_epoch,
        );
        // The merged root shows the upper directory's time: start it at the image root's,
        // so that the root's time changes only if the command changes the root.
        let root_time = match self.stage().model.as_ref() {
            Some(m) => m.times.get(b""),
            None => git::root_time(&self.repo, commit)?,
        };
        if let Some(t) = root_time {
            store::checkout::set_time(&upper, t).at("set time of", &upper)?;
        }
        let env_file = step.join("env");
        fs::write(&env_file, invocation::environment_file(&env)).at("write", &env_file)?;
        let overlay = invocation::Overlay {
            lowers,
            upper,
            work,
            merged,
        };
        // The mounts' host sides; cache mounts stay locked (flock) until ch-run is done.
        let mut prepared = self.prepare_mounts(ins, mounts)?;
        if let Some((dst, content, _)) = invocation::shebang_script(form, heredocs, force) {
            // The script file of a `#!` heredoc, bound read-only where argv names it.
            use std::os::unix::fs::PermissionsExt;
            let src = step.join("heredoc");
            fs::write(&src, content).at("write", &src)?;
            fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).at("chmod", &src)?;
            prepared.mounts.push(crate::run::BuildMount::Bind {
                src,
                dst: PathBuf::from(dst),
                writable: false,
            });
        }
        let mut cmd = Command::new(&self.opts.ch_run);
        cmd.args(invocation::ch_run_args(
            &env_file,
            &config.cwd,
            force,
            &self.opts.binds,
            &prepared.mounts,
            &overlay,
            no_network,
            &argv,
        ));
        let upper = overlay.upper;
        // The RUN's processes die with the build: ch-run gets SIGTERM when this process
        // dies (any way, SIGKILL too) and then kills everything the command started
        // (docs/ch-run.md). The spawning thread waits for ch-run, so it outlives it (the
        // parent-death signal follows the thread that forked). Its own process group keeps
        // a terminal's ^C from reaching the command before the build sees it; no standard
        // input, so that a background group never stops on a terminal read.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        crate::run::sys::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
        // The command sees signals as a shell's would (`timeout`, `kill`, traps): not
        // with SIGINT and SIGTERM blocked, as this process has them (grove::interrupt).
        crate::interrupt::unblocked(&mut cmd);
        cmd.stdin(std::process::Stdio::null());
        crate::verbose!("executing: {cmd:?}");
        // The FAQ's verbosity table: -qq silences RUN's stdout, -qqq its stderr too.
        if crate::log::level() <= -2 {
            cmd.stdout(std::process::Stdio::null());
        }
        if crate::log::level() <= -3 {
            cmd.stderr(std::process::Stdio::null());
        }
        // While the command runs, the files of the COPYs after it are hashed.
        let later = self.later_sources(ins);
        let (status, warmed) = std::thread::scope(|sc| {
            let (ignore, known) = (&self.ignore, &self.stat_cache);
            let warm = (!later.is_empty()).then(|| {
                std::thread::Builder::new()
                    .name("warm".into())
                    .spawn_scoped(sc, || context::warm(&later, ignore, known))
            });
            // A signal that stops the build is passed on to ch-run, which ends the RUN
            // with everything it started (docs/ch-run.md).
            let status = cmd
                .spawn()
                .and_then(|mut c| crate::interrupt::wait_watched(&mut c));
            let warmed = warm.and_then(|w| w.ok()).and_then(|w| w.join().ok());
            (status, warmed)
        });
        if let Some((w, read)) = warmed {
            crate::debug!("read {read} files of the COPYs after this RUN while it ran");
            self.stat_cache.merge(w);
        }
        let status = match status {
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                let longest = argv.iter().map(String::len).max().unwrap_or(0);
                return Err(self.at(
                    ins,
                    format!(
                        "RUN: command too long for execve(2) ({longest} bytes in one argument; \
                         Linux allows 128 KiB per argument and about 2 MiB in all): put the \
                         commands in a script, COPY it into the image and RUN the script"
                    ),
                ));
            }
            r => r.at("execute", &self.opts.ch_run)?,
        };
        crate::interrupt::interrupted().map_err(|e| self.at_err(ins, "RUN stopped", e))?;
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            return Err(match (status.code(), status.signal()) {
                (Some(c), _) => BuildError::RunFailed(c),
                (None, Some(s)) => BuildError::RunSignal(s),
                _ => BuildError::RunFailed(-1),
            });
        }
        let changed = fs::read_dir(&upper)
            .at("read directory", &upper)?
            .next()
            .is_some();
        if changed {
            self.absorb(&upper)?;
            self.pending_layer = Some(upper);
        }
        Ok(())
    }

    /// The context sources of the COPY and ADD instructions after `ins` in its stage, up
    /// to the next RUN (which warms its own): what [`context::warm`] hashes while `ins`
    /// runs. Sources with variables or URLs, and other stages' files, are left out.
    fn later_sources(&self, ins: &Instruction) -> Vec<context::Source> {
        let mut out = Vec::new();
        let after = self
            .df
            .instructions
            .iter()
            .skip_while(|i| i.span.start_line != ins.span.start_line)
            .skip(1);
        for i in after {
            match &i.kind {
                InstrKind::Copy(args) | InstrKind::Add(args) if args.from().is_none() => {
                    for s in &args.sources {
                        if let CopySource::Path(p) = s {
                            if is_url(p) || p.contains('$') {
                                continue;
                            }
                            if let Ok(found) = context::expand(&self.opts.context, p, &self.ignore)
                            {
                                out.extend(found);
                            }
                        }
                    }
                }
                InstrKind::Run { .. } | InstrKind::From { .. } => break,
                _ => {}
            }
        }
        out
    }

    /// Rewrite the image's `/ch/environment` from `config`'s environment, as Charliecloud
    /// does at every ENV (`ch-run --set-env` reads it). `/ch` is resolved inside the image.
    fn environment_file(
        &mut self,
        ins: &Instruction,
        config: &ImageConfig,
    ) -> Result<(), BuildError> {
        let comps = copy::resolve(self.model()?, "/ch", true)
            .map_err(|e| self.at_err(ins, ins.keyword().to_string(), e))?;
        let layer = self.scratch("layer")?;
        let dir = copy::make_parents(&layer, self.model()?, &comps)
            .map_err(|e| self.at_err(ins, ins.keyword().to_string(), e))?;
        let path = dir.join("environment");
        fs::write(&path, config.environment_file()).at("write", &path)?;
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .at("chmod", &path)?;
        copy::restore_parent_modes(&layer, self.model()?, &comps)
            .map_err(|e| self.at_err(ins, ins.keyword().to_string(), e))?;
        self.absorb(&layer)?;
        self.pending_layer = Some(layer);
        Ok(())
    }

    fn workdir(&mut self, _ins: &Instruction, dir: &str) -> Result<(), BuildError> {
        let comps = copy::resolve(self.model()?, dir, true)
            .map_err(|e| self.at_err(_ins, _ins.keyword().to_string(), e))?;
        if matches!(self.model()?.get(&comps.join(&b'/')), Some(Node::Dir(_))) || comps.is_empty() {
            return Ok(());
        }
        let layer = self.scratch("layer")?;
        copy::make_parents(&layer, self.model()?, &comps)
            .map_err(|e| self.at_err(_ins, _ins.keyword().to_string(), e))?;
        copy::restore_parent_modes(&layer, self.model()?, &comps)
            .map_err(|e| self.at_err(_ins, _ins.keyword().to_string(), e))?;
        self.absorb(&layer)?;
        self.pending_layer = Some(layer);
        Ok(())
    }

    /// Warn about the COPY and ADD options Grove parses but does not apply.
    fn warn_ignored_options(&self, ins: &Instruction, args: &CopyArgs) {
        let mut ignored = Vec::new();
        if args.chown().is_some() {
            ignored.push("chown");
        }
        ignored.extend(
            ["keep-git-dir", "unpack"]
                .into_iter()
                .filter(|f| args.options.has(f)),
        );
        for flag in ignored {
            warn!(
                "{}:{}: {} --{flag}: not supported, ignored",
                self.df.file,
                ins.span.start_line,
                ins.keyword()
            );
        }
    }

    /// Warn about a COPY or ADD into `/tmp`: the files go into the image, but RUN and
    /// ch-run mount the host's `/tmp` (or a private tmpfs) over the image's, so no later
    /// RUN and no container sees them. Dockerfiles written for Docker do this (`COPY f
    /// /tmp/` then `RUN` with it), and the RUN's "No such file" did not say why.
    fn warn_destination_in_tmp(&self, ins: &Instruction, args: &CopyArgs) {
        let cwd = self.stages.last().map_or("/", |s| s.config.cwd.as_str());
        if let Some(dest) = dest_in_tmp(&args.dest, cwd) {
            warn!(
                "{}:{}: {} into {dest}: RUN and ch-run mount the host's /tmp over the image's, \
                 so later RUNs and containers do not see these files (COPY --from does); \
                 copy them elsewhere (e.g. /opt or /usr/local/src)",
                self.df.file,
                ins.span.start_line,
                ins.keyword()
            );
        }
    }

    fn copy(
        &mut self,
        ins: &Instruction,
        args: &CopyArgs,
        config: &ImageConfig,
        add: bool,
    ) -> Result<(), BuildError> {
        let chmod = match args.chmod() {
            Some(m) => Some(copy::parse_chmod(m).ok_or_else(|| {
                self.at(
                    ins,
                    format!(
                        "{} --chmod: invalid mode {m:?} (octal digits, e.g. 0644)",
                        ins.keyword()
                    ),
                )
            })?),
            None => None,
        };
        let dest_abs = dest_path(&args.dest, &config.cwd);
        let exclude = context::Ignore::patterns(args.options.get_all("exclude"))
            .map_err(|m| self.at(ins, format!("{} --exclude: {m}", ins.keyword())))?;
        if args.options.get("checksum").is_some()
            && args
                .sources
                .iter()
                .any(|s| !matches!(s, CopySource::Path(p) if is_url(p)))
        {
            return Err(self.at(
                ins,
                "ADD --checksum: only for URL sources (as BuildKit)".to_string(),
            ));
        }
        if args.options.bool("parents") {
            let pivot = args
                .sources
                .iter()
                .any(|s| matches!(s, CopySource::Path(p) if p.contains("/./")));
            if add || args.from().is_some() || pivot {
                return Err(self.at(
                    ins,
                    format!(
                        "{} --parents: only for COPY from the context, without a /./ pivot",
                        ins.keyword()
                    ),
                ));
            }
        }
        if !exclude.is_empty() && args.from().is_some() {
            return Err(self.at(
                ins,
                format!("{} --exclude with --from is not supported", ins.keyword()),
            ));
        }
        let delta = if add { None } else { self.delta_base(args)? };
        let layer = self.scratch("layer")?;
        let from_stage = match args.from() {
            Some(f) => {
                let (commit, stage) = self.copy_from(ins, f)?;
                let model = match stage.and_then(|i| self.stages[i].model.clone()) {
                    Some(m) => m,
                    None => git::read_image(&self.repo, commit)?.0,
                };
                Some(model)
            }
            None => None,
        };
        // Expand sources into (name, what) pairs.
        enum Src {
            Host(context::Source),
            /// A path of another stage: the node, its name, its times and extended
            /// attributes and those below.
            Node(Node, String, store::model::Times, store::model::Xattrs),
            Inline(String, String),
            /// A downloaded `ADD` URL: file name, local copy.
            Url(String, PathBuf),
        }
        let mut srcs: Vec<Src> = Vec::new();
        // The first wildcard source that matched nothing: an error only if no source did
        // (BuildKit allows empty wildcards: `COPY package.json yarn.lock* ./`).
        let mut empty_wildcard: Option<BuildError> = None;
        for s in &args.sources {
            match s {
                CopySource::Heredoc(h) => srcs.push(Src::Inline(h.name.clone(), h.content.clone())),
                CopySource::Path(pat) => match &from_stage {
                    Some(m) => {
                        let paths = if context::has_glob(pat) {
                            let found = copy::glob_model(m, pat)
                                .map_err(|e| self.at_err(ins, ins.keyword().to_string(), e))?;
                            if found.is_empty() {
                                // Skipped if another source matches (checked below).
                                empty_wildcard.get_or_insert(self.at(
                                    ins,
                                    format!("COPY --from: no source files match in stage: {pat}"),
                                ));
                                continue;
                            }
                            found
                        } else {
                            vec![pat.clone()]
                        };
                        for p in &paths {
                            let comps = copy::resolve(m, p, true)
                                .map_err(|e| self.at_err(ins, ins.keyword().to_string(), e))?;
                            let node = if comps.is_empty() {
                                Some(Node::Dir(m.clone()))
                            } else {
                                m.get(&comps.join(&b'/')).cloned()
                            };
                            let node = node.ok_or_else(|| {
                                self.at(ins, format!("COPY --from: not found in stage: {p}"))
                            })?;
                            // The source's own name, not its symlink target's: `COPY
                            // --from=s /bin/sh /d/` (a link to dash) writes `/d/sh`, as
                            // Docker and Charliecloud, and as a context source does.
                            let name = match Path::new(p).components().next_back() {
                                Some(std::path::Component::Normal(n)) => {
                                    n.to_string_lossy().into_owned()
                                }
                                _ => comps
                                    .last()
                                    .map(|c| String::from_utf8_lossy(c).into_owned())
                                    .unwrap_or_default(),
                            };
                            let times = m.times.subtree(&comps.join(&b'/'));
                            let xattrs = if self.store.xattrs().record() {
                                copy::xattrs_subtree(&m.xattrs, &comps.join(&b'/'))
                            } else {
                                Default::default()
                            };
                            srcs.push(Src::Node(node, name, times, xattrs));
                        }
                    }
                    None if is_url(pat) => {
                        let f = self.download(ins, pat, args.options.get("checksum"))?;
                        let name = url_file_name(pat);
                        srcs.push(Src::Url(name, f));
                    }
                    None => {
                        let found = match context::expand(&self.opts.context, pat, &self.ignore) {
                            Ok(found) => found,
                            // Skipped if another source matches (checked below).
                            Err(e) if e.is_empty_wildcard() => {
                                empty_wildcard.get_or_insert(self.at_err(
                                    ins,
                                    ins.keyword().to_string(),
                                    e,
                                ));
                                continue;
                            }
                            Err(e) => return Err(self.at_err(ins, ins.keyword().to_string(), e)),
                        };
                        // `--exclude` also drops sources by name (`COPY --exclude=*.txt
                        // hom* /d/`, Docker's example).
                        let n_found = found.len();
                        let kept: Vec<_> = found
                            .into_iter()
                            .filter(|s| {
                                let base = s.rel.rsplit('/').next().unwrap_or(&s.rel);
                                base.is_empty() || !exclude.excluded(base)
                            })
                            .collect();
                        if n_found > 0 && kept.is_empty() {
                            return Err(self.at(
                                ins,
                                format!(
                                    "{}: every source matching {pat} is excluded by --exclude",
                                    ins.keyword()
                                ),
                            ));
                        }
                        srcs.extend(kept.into_iter().map(Src::Host));
                    }
                },
            }
        }
        if let Some(e) = empty_wildcard {
            if srcs.is_empty() {
                return Err(e);
            }
        }
        let single_is_dir = srcs.len() == 1
            && match &srcs[0] {
                Src::Host(s) => s.real.is_dir(),
                Src::Node(n, ..) => matches!(n, Node::Dir(_)),
                Src::Inline(..) | Src::Url(..) => false,
            };
        let n_sources = srcs.len();
        let xattrs = self.store.xattrs();
        let file = self.df.file.clone();
        let keyword = ins.keyword().to_string();
        let at = |e: copy::CopyError| BuildError::At {
            file: file.clone(),
            line: ins.span.start_line,
            message: keyword.clone(),
            source: Some(Box::new(e)),
        };
        self.model()?;
        let model = self
            .stages
            .last()
            .and_then(|s| s.model.as_ref())
            .expect("model loaded");
        let dest_comps = copy::resolve(model, &dest_abs, true).map_err(at)?;
        // `--parents` keeps each source's directories (relative to the context) under the
        // destination, which is then a directory.
        let parents = !add && args.options.bool("parents");
        let into_dir =
            parents || copy::dest_is_dir(&args.dest, n_sources, single_is_dir, model, &dest_comps);
        let (parent_comps, dest_name) = if into_dir {
            (dest_comps.clone(), None)
        } else {
            let mut p = dest_comps.clone();
            let last = p.pop();
            (p, last)
        };
        let model_ref: &Dir = model;
        // `--chmod` leaves a destination directory the image already has as it is (as
        // BuildKit does): only what is written into it gets the mode.
        let dest_existed = into_dir
            && (dest_comps.is_empty()
                || matches!(model_ref.get(&dest_comps.join(&b'/')), Some(Node::Dir(_))));
        let dir = copy::make_parents(&layer, model_ref, &parent_comps).map_err(at)?;
        let repo = &self.repo;
        let mut written = 0;
        // What `--chmod` applies to: each source's top entry, whole trees for directories
        // (not archives an ADD extracted, nor the parents made for the destination).
        let mut chmod_targets: Vec<PathBuf> = Vec::new();
        // Times of the directories `--parents` made, set once their contents are in.
        let mut parent_times = Vec::new();
        for s in &srcs {
            let target = |name: &str| match &dest_name {
                Some(n) => dir.join(std::ffi::OsStr::from_bytes(n)),
                None => dir.join(name),
            };
            let r = match s {
                Src::Inline(name, content) => {
                    let t = target(name);
                    chmod_targets.push(t.clone());
                    fs::write(&t, content)
                        .at("write", &t)
                        .map_err(copy::CopyError::from)
                }
                Src::Host(src) => {
                    // The name as bytes: a non-UTF-8 name is copied as it is.
                    let os_name = Path::new(std::ffi::OsStr::from_bytes(&src.rel_bytes))
                        .file_name()
                        .map(std::ffi::OsStr::to_os_string)
                        .unwrap_or_default();
                    let named = match &dest_name {
                        Some(n) => dir.join(std::ffi::OsStr::from_bytes(n)),
                        None => dir.join(&os_name),
                    };
                    if add && src.real.is_file() && is_archive(&src.real) {
                        let t = if into_dir { dir.clone() } else { named.clone() };
                        extract_archive(&src.real, &t, &dest_comps, xattrs)
                    } else {
                        // --parents keeps the source's path below the context.
                        let keep_path = parents && !src.rel.is_empty();
                        let t = if keep_path {
                            dir.join(std::ffi::OsStr::from_bytes(&src.rel_bytes))
                        } else if src.real.is_dir() && into_dir {
                            dir.clone()
                        } else {
                            named
                        };
                        chmod_targets.push(t.clone());
                        let made = if keep_path {
                            copy::make_context_parents(
                                &self.opts.context,
                                &src.rel_bytes,
                                &dir,
                                &mut parent_times,
                            )
                        } else {
                            Ok(())
                        };
                        made.and_then(|()| {
                            copy::copy_host(
                                &src.real,
                                (&src.rel, &src.rel_bytes),
                                &self.ignore,
                                &exclude,
                                &t,
                                xattrs,
                                delta.as_ref().map(|(_, _, o)| o),
                            )
                        })
                        .map(|n| written += n)
                    }
                }
                Src::Url(name, f) => {
                    let t = target(name);
                    chmod_targets.push(t.clone());
                    // Docker gives downloaded files mode 0600 and does not extract archives.
                    fs::copy(f, &t)
                        .and_then(|_| {
                            fs::set_permissions(
                                &t,
                                std::os::unix::fs::PermissionsExt::from_mode(0o600),
                            )
                        })
                        .map(|_| ())
                        .at("copy download to", &t)
                        .map_err(copy::CopyError::from)
                }
                Src::Node(node, name, times, xattrs) => {
                    let t = if matches!(node, Node::Dir(_)) && into_dir {
                        dir.clone()
                    } else {
                        target(name)
                    };
                    chmod_targets.push(t.clone());
                    copy::copy_from_model(repo, node, &t, times, xattrs)
                }
            };
            r.map_err(at)?;
        }
        // Existing parents keep their image modes and times, and so does a destination
        // directory the image has (the image root too): `COPY rootfs/ /` must not give `/`
        // the mode of the context's `rootfs`. A destination directory the step creates
        // takes the mode and time of the directory whose contents it received, as in
        // Docker (fsutil's copy sets the top directory's metadata only when it created
        // it; Charliecloud's `copy_src_dir` never sets it).
        let dir_source = srcs.iter().any(|s| match s {
            Src::Host(h) => h.real.is_dir(),
            Src::Node(n, ..) => matches!(n, Node::Dir(_)),
            Src::Inline(..) | Src::Url(..) => false,
        });
        let keep = if dir_source && into_dir && !dest_existed {
            parent_comps.len().saturating_sub(1)
        } else {
            parent_comps.len()
        };
        copy::restore_parent_modes(&layer, model_ref, &parent_comps[..keep]).map_err(at)?;
        // Deepest first: setting a directory's time does not change its parent's.
        parent_times.sort_by(|a: &(PathBuf, _), b| b.0.cmp(&a.0));
        for (p, t) in &parent_times {
            crate::store::checkout::set_time(p, *t)
                .at("set time of", p)
                .map_err(|e| at(copy::CopyError::from(e)))?;
        }
        if let Some(mode) = chmod {
            chmod_targets.sort();
            chmod_targets.dedup();
            for t in &chmod_targets {
                if dest_existed && *t == dir {
                    let entries = fs::read_dir(t)
                        .at("read directory", t)
                        .map_err(|e| at(copy::CopyError::from(e)))?;
                    for e in entries {
                        let e = e
                            .at("read directory", t)
                            .map_err(|e| at(copy::CopyError::from(e)))?;
                        copy::chmod_tree(&e.path(), mode).map_err(at)?;
                    }
                } else {
                    copy::chmod_tree(t, mode).map_err(at)?;
                }
            }
        }
        if let Some((base, bases, only)) = delta {
            // The layer holds what changed over the base entry's tree: fold it into that.
            crate::debug!(
                "{}: wrote {written} entries ({} changed) over layer {}",
                ins.keyword(),
                only.changed(),
                &base.to_string()[..12]
            );
            let (m, _) = git::read_image(&self.repo, base)?;
            self.stage().model = Some(m);
            self.pending_bases = bases;
        } else {
            crate::debug!("{}: wrote {written} entries (full copy)", ins.keyword());
        }
        self.absorb(&layer)?;
        self.pending_layer = Some(layer);
        Ok(())
    }

    /// For a COPY from the context that missed: a cache entry of the same instruction on
    /// the same parent to make its layer over (docs/store-format.md, "Delta layers"), with
    /// the bases of the new layer (top first) and the entries to write. `None`: copy
    /// everything.
    #[allow(clippy::type_complexity)]
    fn delta_base(
        &mut self,
        args: &CopyArgs,
    ) -> Result<Option<(ObjectId, Vec<ObjectId>, copy::Only)>, BuildError> {
        let context_only = args
            .sources
            .iter()
            .all(|s| matches!(s, CopySource::Path(p) if !is_url(p)));
        if args.from().is_some() || !context_only || self.opts.cache != CacheMode::Enabled {
            return Ok(None);
        }
        let parent = self.stage().commit;
        let Some(record) = self.step_record.as_ref() else {
            return Ok(None);
        };
        let layers = self.store.layout().layers();
        // Only entries whose layer is kept and whose chain of bases has room for one more.
        let found = why::delta_base(&self.repo, &mut self.siblings, parent, record, |c| {
            self.store.layout().layer(&c).is_dir()
                && store::layer::read_bases(&layers, c)
                    .is_ok_and(|b| b.len() < store::layer::MAX_DELTA_BASES)
        })?;
        let Some((base, changed)) = found else {
            return Ok(None);
        };
        // When most entries changed, a full copy costs about the same and starts a new
        // chain of layers instead of lengthening one.
        let files = record
            .items
            .iter()
            .filter(|(n, _)| n.starts_with("file "))
            .count();
        if changed.len() * 2 > files {
            return Ok(None);
        }
        let mut bases = vec![base];
        match store::layer::read_bases(&layers, base) {
            Ok(b) => bases.extend(b),
            Err(_) => return Ok(None),
        }
        if bases.len() > store::layer::MAX_DELTA_BASES {
            return Ok(None);
        }
        let mut rels = Vec::with_capacity(changed.len());
        for name in &changed {
            match self.manifest_rels.get(name) {
                Some(r) => rels.push(r.clone()),
                None => return Ok(None),
            }
        }
        Ok(Some((base, bases, copy::Only::new(rels))))
    }
}

/// A COPY or ADD destination as an absolute image path: `dest` relative to the working
/// directory `cwd` unless absolute.
/// Give the top directory of a context bind mount's copy the newest modification time
/// of the entries it holds (the epoch when it holds none), not the context directory's:
/// that one changes with every file added, removed or renamed at the context's top, even
/// one `.dockerignore` leaves out of the copy, and the key (whose hash holds each entry's
/// time) would have to hold it.
fn bind_copy_time(dir: &Path) -> Result<(), BuildError> {
    use crate::store::model::Mtime;
    let mut newest = Mtime::new(0, 0);
    for e in fs::read_dir(dir).at("read directory", dir)? {
        let e = e.at("read directory", dir)?;
        let p = e.path();
        let md = fs::symlink_metadata(&p).at("stat", &p)?;
        newest = newest.max(Mtime::of(&md));
    }
    store::checkout::set_time(dir, newest).at("set time of", dir)?;
    Ok(())
}

/// Set every time later than `max` seconds under `top` (itself included, symlinks not
/// followed) to `max`: a context bind mount's copy shows what the key hashes with
/// `SOURCE_DATE_EPOCH` ([`context::entry_time`]), so that another runner's checkout of the
/// same commit, made later, gives the same key and the same RUN.
fn clamp_times(top: &Path, max: i64) -> Result<(), BuildError> {
    use crate::store::model::Mtime;
    use std::os::unix::fs::MetadataExt;
    let mut todo = vec![top.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = fs::symlink_metadata(&p).at("stat", &p)?;
        if md.is_dir() {
            for e in fs::read_dir(&p).at("read directory", &p)? {
                todo.push(e.at("read directory", &p)?.path());
            }
        }
        if md.mtime() > max {
            store::checkout::set_time(&p, Mtime::new(max, 0)).at("set time of", &p)?;
        }
    }
    Ok(())
}

fn dest_path(dest: &str, cwd: &str) -> String {
    if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{}", cwd.trim_end_matches('/'), dest)
    }
}

/// The mark that starts the key `extra` of a step using what earlier versions parsed
/// but ignored: COPY/ADD `--chmod`, `--exclude`, `--parents` (`copy-options 1`), a RUN
/// whose command is a `#!` heredoc (`heredoc-exec 1`, it ran through the shell). Keys
/// of other steps are unchanged.
fn applied_since(sub: &InstrKind) -> Option<&'static str> {
    match sub {
        InstrKind::Copy(a) | InstrKind::Add(a)
            if a.chmod().is_some() || a.options.has("exclude") || a.options.bool("parents") =>
        {
            Some("copy-options 1\n")
        }
        InstrKind::Run {
            form,
            heredocs,
            options,
        } => match (
            invocation::shebang_heredoc(form, heredocs).is_some(),
            run_network_none(options) == Ok(true),
        ) {
            (true, true) => Some("heredoc-exec 1\nnetwork-none 1\n"),
            (true, false) => Some("heredoc-exec 1\n"),
            (false, true) => Some("network-none 1\n"),
            (false, false) => None,
        },
        _ => None,
    }
}

/// The mark of a step whose result earlier versions made differently from the same key
/// input (docs/cache-keys.md): an ADD of a local bzip2 tar archive (copied, not extracted:
/// `add-bzip2 1`), an ENV whose environment has a variable with a newline (written into
/// /ch/environment as it was: `env-newline 1`), a COPY or ADD that may copy a directory's
/// contents into a directory the image has (which took the source directory's mode and
/// time before, and keeps its own since: `copy-dir-dest 1`; with `--from` the source is
/// not known before the copy, so every such step), an ENTRYPOINT that clears a CMD
/// inherited from the stage's base (kept before: `entrypoint-cmd 1`). `sources` are a
/// COPY's or ADD's context sources (as the step's `sources_hash` found them), `parent`
/// the config the step starts from, `cmd_set` whether a CMD of the stage came before.
/// Keys of other steps are unchanged.
fn changed_since(
    sub: &InstrKind,
    sources: &[&Path],
    parent: &ImageConfig,
    cmd_set: bool,
) -> Option<&'static str> {
    let copies_dir = |a: &CopyArgs| a.from().is_some() || sources.iter().any(|p| p.is_dir());
    match sub {
        InstrKind::Entrypoint(_) => {
            (!cmd_set && parent.cmd.is_some()).then_some("entrypoint-cmd 1\n")
        }
        InstrKind::Add(a) => match (
            sources.iter().any(|p| p.is_file() && is_bzip2_archive(p)),
            copies_dir(a),
        ) {
            (true, true) => Some("add-bzip2 1\ncopy-dir-dest 1\n"),
            (true, false) => Some("add-bzip2 1\n"),
            (false, true) => Some("copy-dir-dest 1\n"),
            (false, false) => None,
        },
        InstrKind::Copy(a) => copies_dir(a).then_some("copy-dir-dest 1\n"),
        InstrKind::Env(pairs) => (pairs.iter().any(|(k, v)| !store::config::env_line_ok(k, v))
            || !parent.unwritable_env().is_empty())
        .then_some("env-newline 1\n"),
        _ => None,
    }
}

/// Whether a RUN's `--network` asks for no network (`none`), as BuildKit's modes:
/// `default` and `host` keep the host's network (Grove's RUN has no network of its own);
/// anything else is an error.
fn run_network_none(options: &dockerfile::Flags) -> Result<bool, String> {
    match options.get("network") {
        None | Some("default") | Some("host") => Ok(false),
        Some("none") => Ok(true),
        Some(other) => Err(format!(
            "RUN --network: unsupported network mode {other:?} (default, none or host)"
        )),
    }
}

/// The hex digest of an `ADD --checksum` value: `sha256:` and 64 hex digits (lowercased).
fn parse_checksum(c: &str) -> Option<String> {
    let hex = c.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Whether `ADD` extracts local file `p`: a tar archive, plain or compressed (gzip, bzip2,
/// xz, zstd), as Docker's `IsArchivePath` decides: the (decompressed) start must be a tar
/// header. A compressed file that is not a tar (`notes.txt.gz`) is copied as it is.
fn is_archive(p: &Path) -> bool {
    // Docker knows no legacy `.lzma` (LZMA-Alone): such a file is copied as it is.
    if file_head::<13>(p).is_some_and(|h| store::import::is_lzma_alone(&h)) {
        return false;
    }
    let Ok(mut r) = store::import::open_archive(p) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match std::io::Read::read(&mut r, &mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == head.len() && tar_header_checksum_ok(&head)
}

/// Whether local file `p` is a tar archive compressed with bzip2 (see [`is_archive`]).
fn is_bzip2_archive(p: &Path) -> bool {
    file_head::<3>(p).is_some_and(|h| &h == b"BZh") && is_archive(p)
}

/// The first `N` bytes of file `p`, if it has that many.
fn file_head<const N: usize>(p: &Path) -> Option<[u8; N]> {
    let mut head = [0u8; N];
    fs::File::open(p)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .ok()?;
    Some(head)
}

/// Whether a 512-byte block is a tar header: its checksum field (octal, bytes 148..156)
/// equals the sum of its bytes with that field taken as spaces (POSIX ustar and old v7).
fn tar_header_checksum_ok(h: &[u8; 512]) -> bool {
    let field = &h[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return false;
    }
    let Some(want) = digits.iter().try_fold(0u32, |acc, d| {
        acc.checked_mul(8)?.checked_add(u32::from(d - b'0'))
    }) else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

/// Why an `ADD` archive member's name (or hard link target) is unsafe, if it is: a `..`
/// component would climb out of the destination (tar skips such members silently, which
/// would hide part of the archive); an absolute hard link target names a host file.
fn unsafe_member(path: &[u8], hard_link_target: Option<&[u8]>) -> Option<&'static str> {
    if path.split(|b| *b == b'/').any(|c| c == b"..") {
        return Some("its path has a `..` component, which climbs out of the destination");
    }
    if path.contains(&0) {
        return Some("its path contains a NUL byte");
    }
    if let Some(t) = hard_link_target {
        if t.starts_with(b"/") {
            return Some("it is a hard link to an absolute path");
        }
        if t.split(|b| *b == b'/').any(|c| c == b"..") {
            return Some("it is a hard link whose target has a `..` component");
        }
    }
    None
}

/// Extract an `ADD` archive into `dest` (the image's `dest_comps`), member by member; an
/// unsafe member fails the step with an error naming the archive, the member and the
/// reason.
fn extract_archive(
    src: &Path,
    dest: &Path,
    dest_comps: &[Vec<u8>],
    xattrs: store::model::XattrPolicy,
) -> Result<(), copy::CopyError> {
    let r = store::import::open_archive(src)
        .map_err(|e| IoError::new("open archive", src, std::io::Error::other(e.to_string())))?;
    let (r, budget) = store::import::HeaderBounded::new(r);
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    ar.set_unpack_xattrs(false);
    fs::create_dir_all(dest).at("create directory", dest)?;
    // Messages name members escaped, as import does (a name is any bytes).
    let unsafe_err = |member: &[u8], reason: String| copy::CopyError::UnsafeMember {
        archive: src.to_path_buf(),
        member: crate::log::shown(&String::from_utf8_lossy(member)).into_owned(),
        reason,
    };
    let mut later: Vec<(Vec<u8>, u64)> = Vec::new();
    // The members extracted as regular files (their normalized names), the only targets a
    // hard link may have, as import allows: the tar crate would link a directory, a
    // symlink or a missing name, or fail with an error naming the paths raw.
    let mut files: HashSet<Vec<u8>> = HashSet::new();
    let escaped = store::import::escaped_io;
    for entry in ar.entries().map_err(escaped).at("read archive", src)? {
        let mut e = entry.map_err(escaped).at("read archive", src)?;
        budget.member(&e);
        let name = e.path_bytes().into_owned();
        let link = e.header().entry_type().is_hard_link().then(|| {
            e.link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default()
        });
        if let Some(why) = unsafe_member(&name, link.as_deref()) {
            return Err(unsafe_err(&name, why.to_string()));
        }
        // Names and paths (in the image, below the destination) a checkout can write: the
        // check import makes (quoted short, the member may be kilobytes).
        let key = member_key(&name);
        let comps: Vec<&[u8]> = dest_comps
            .iter()
            .map(Vec::as_slice)
            .chain(key.split(|b| *b == b'/').filter(|c| !c.is_empty()))
            .collect();
        if let Some(why) = store::model::too_long(&comps, false) {
            return Err(copy::CopyError::UnsafeMember {
                archive: src.to_path_buf(),
                member: store::model::show_short(&name),
                reason: why,
            });
        }
        let kind = e.header().entry_type();
        let norm = member_key(&name);
        if let Some(t) = &link {
            let key = member_key(t);
            let p = dest.join(std::ffi::OsStr::from_bytes(&key));
            if !files.contains(&key) || !fs::symlink_metadata(&p).is_ok_and(|md| md.is_file()) {
                return Err(unsafe_err(
                    &name,
                    format!(
                        "hard link target is not an earlier regular file: {}",
                        crate::log::shown(&String::from_utf8_lossy(t))
                    ),
                ));
            }
        }
        let member = String::from_utf8_lossy(&name).into_owned();
        // The rule import uses: devices skipped with a warning, modes as FAQ 11.3.8 says.
        if let Some(w) = store::import::skipped_member(kind, src, &member) {
            warn!("{w}");
            continue;
        }
        let mode = e.header().mode().ok();
        // With --xattrs, the member's `user.*` attributes (PAX `SCHILY.xattr.*`), as
        // import reads them.
        let attrs = if xattrs.record() {
            member_xattrs(&mut e)
        } else {
            Vec::new()
        };
        if kind.is_dir() || kind.is_symlink() {
            // tar sets the times of files; those of directories (changed again by their
            // contents) and symlinks are set once everything is in place.
            if let Ok(t) = e.header().mtime() {
                later.push((name.clone(), t));
            }
        }
        // Whatever this member turns out to be, a file of that name is gone.
        files.remove(&norm);
        let norm_empty = norm.is_empty();
        match e.unpack_in(dest) {
            Ok(true) => {
                if !norm_empty
                    && (kind.is_file() || kind.is_hard_link() || kind == tar::EntryType::GNUSparse)
                {
                    files.insert(norm);
                }
                let p = dest.join(std::ffi::OsStr::from_bytes(&name));
                // tar writes a FIFO member as an empty regular file (its path checked like
                // any other's): put a FIFO in its place, as import keeps one.
                if kind == tar::EntryType::Fifo
                    && fs::symlink_metadata(&p).is_ok_and(|md| md.is_file())
                {
                    fs::remove_file(&p).at("replace", &p)?;
                    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .map_err(|e| IoError::new("create fifo", &p, e.into()))?;
                    if let Ok(t) = e.header().mtime() {
                        later.push((name.clone(), t));
                    }
                }
                // A member naming the destination itself (`./`, typed a regular file by
                // archivers that mark directories by the trailing `/` only) wrote nothing
                // and names a directory: it gets a directory's mode, never a file's (0644
                // left no search permission, and the next member failed).
                let dir_like = kind.is_dir() || norm_empty;
                let settable = dir_like || kind.is_file() || kind == tar::EntryType::Fifo;
                // Never through a symlink a later member put in its place.
                let real = fs::symlink_metadata(&p).is_ok_and(|md| !md.is_symlink());
                if real && (dir_like || kind.is_file()) {
                    copy::set_xattrs(&attrs, &p)?;
                }
                if let (Some(m), true) = (mode, settable) {
                    let kept = store::import::kept_mode(dir_like, m);
                    if real {
                        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(kept))
                            .at("set mode of", &p)?;
                    }
                }
            }
            Ok(false) => {}
            Err(err) if err.to_string().contains("outside of destination") => {
                return Err(unsafe_err(
                    &name,
                    "it would be written through a symlink that leads outside the destination"
                        .into(),
                ))
            }
            Err(err) => {
                return Err(copy::CopyError::Extract {
                    archive: src.to_path_buf(),
                    member: crate::log::shown(&String::from_utf8_lossy(&name)).into_owned(),
                    source: tar_cause(err),
                })
            }
        }
    }
    // Deepest (latest) first; never through a symlink that leads out of `dest` (a later
    // member may have replaced a directory by one).
    let top = fs::canonicalize(dest).at("resolve", dest)?;
    for (name, t) in later.into_iter().rev() {
        let p = dest.join(std::ffi::OsStr::from_bytes(&name));
        let inside = match p.parent().map(fs::canonicalize) {
            Some(Ok(parent)) => parent.starts_with(&top),
            _ => false,
        };
        if inside && p.file_name().is_some() {
            let t = store::model::Mtime::new(i64::try_from(t).unwrap_or(i64::MAX), 0);
            store::checkout::set_time(&p, t).at("set time of", &p)?;
        }
    }
    Ok(())
}

/// An archive member's name (or hard link target) as the tar crate places it below the
/// destination: without empty and `.` components (a leading `/` included).
fn member_key(path: &[u8]) -> Vec<u8> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// The cause of a failed extraction without the tar crate's wording, which names the
/// member's paths as they are (any bytes, an escape sequence, a newline) below a
/// temporary directory: the system error if there is one, else its text escaped.
fn tar_cause(err: std::io::Error) -> std::io::Error {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(c) = cur {
        if let Some(code) = c
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return std::io::Error::from_raw_os_error(code);
        }
        cur = c.source();
    }
    // The tar crate words most system errors itself (`... when symlinking A to B`),
    // keeping only their kind.
    let kind = std::io::Error::from(err.kind());
    if err.kind() != std::io::ErrorKind::Other && kind.to_string() != "uncategorized error" {
        return kind;
    }
    store::import::escaped_io(err)
}

/// The `user.*` extended attributes of an archive member (PAX `SCHILY.xattr.NAME`).
fn member_xattrs<R: std::io::Read>(e: &mut tar::Entry<R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut x = Vec::new();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if let Some(n) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                if store::model::is_image_xattr(n) {
                    x.push((n.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    x.sort();
    x
}

/// The file name an `ADD URL` gets: the last path segment, without query or fragment.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    after_host
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("index.html")
        .to_string()
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn form_argv(form: &CmdForm, shell: &[String]) -> Vec<String> {
    match form {
        CmdForm::Exec(v) => v.clone(),
        CmdForm::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

/// The image path a COPY or ADD destination `dest` names (relative to the working
/// directory `cwd`), if it is `/tmp` or below.
fn dest_in_tmp(dest: &str, cwd: &str) -> Option<String> {
    let abs = if dest.starts_with('/') {
        normalize_abs(dest)
    } else {
        normalize_abs(&format!("{cwd}/{dest}"))
    };
    (abs == "/tmp" || abs.starts_with("/tmp/")).then_some(abs)
}

/// Normalize an absolute image path (`.` and `..` resolved lexically).
pub fn normalize_abs(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_env_and_arg_defaults_are_warned_about_with_their_line() {
        let df = dockerfile::parse(
            "FROM busybox\nARG API_TOKEN=abc VERSION=1 DB_PASSWORD\n\
             ENV GREETING=hi \\\n    NPM_AUTH=xyz\nENV PUBLIC_KEY=k\nENV SECRET=\n\
             ARG HTTP_PROXY=http://p\nENV MY_API_KEY $API_TOKEN\n",
            "Dockerfile.x",
        )
        .expect("parses");
        let w = secret_warnings(&df);
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(
            w[0].starts_with("Dockerfile.x:2: ARG API_TOKEN: its default is stored"),
            "{w:#?}"
        );
        assert!(
            w[1].starts_with(
                "Dockerfile.x:3: ENV NPM_AUTH: its value is stored in the image's config"
            ),
            "{w:#?}"
        );
        assert!(
            w[2].starts_with("Dockerfile.x:8: ENV MY_API_KEY:"),
            "{w:#?}"
        );
        assert!(w
            .iter()
            .all(|w| w.ends_with("pass secrets with --secret and RUN --mount=type=secret")));
        // No value in a warning.
        assert!(w.iter().all(|w| !w.contains("abc") && !w.contains("xyz")));
    }

    #[test]
    fn destinations_in_tmp_are_found_after_the_working_directory() {
        assert_eq!(dest_in_tmp("/tmp/src/", "/"), Some("/tmp/src".into()));
        assert_eq!(dest_in_tmp("/tmp", "/app"), Some("/tmp".into()));
        assert_eq!(dest_in_tmp("src/", "/tmp"), Some("/tmp/src".into()));
        assert_eq!(dest_in_tmp("../tmp/x", "/opt"), Some("/tmp/x".into()));
        assert_eq!(dest_in_tmp(".", "/tmp/build"), Some("/tmp/build".into()));
        assert_eq!(dest_in_tmp("/tmpfiles/", "/"), None);
        assert_eq!(dest_in_tmp("tmp/", "/"), Some("/tmp".into()));
        assert_eq!(dest_in_tmp("tmp/", "/app"), None);
        assert_eq!(dest_in_tmp("/var/tmp/x", "/"), None);
    }

    #[test]
    fn steps_using_options_once_ignored_get_a_key_mark() {
        let df = dockerfile::parse(
            "FROM a\nCOPY --chmod=600 f /f\nCOPY --exclude=x . /\nCOPY --parents a/b /\n\
             COPY f /g\nRUN <<EOF\n#!/bin/sh\ntrue\nEOF\nRUN <<EOF\ntrue\nEOF\n",
            "Dockerfile",
        )
        .expect("parses");
        let marks: Vec<Option<&str>> = df.instructions[1..]
            .iter()
            .map(|i| applied_since(&i.kind))
            .collect();
        assert_eq!(
            marks,
            [
                Some("copy-options 1\n"),
                Some("copy-options 1\n"),
                Some("copy-options 1\n"),
                None,
                Some("heredoc-exec 1\n"),
                None
            ]
        );
    }

    #[test]
    fn steps_made_differently_before_get_a_key_mark() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = one_file_tar();
        let bz = |data: &[u8]| {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).expect("compress");
            e.finish().expect("compress")
        };
        let files = [
            ("a.tar.bz2", bz(&tar)),
            ("notes.bz2", bz(b"not a tar")),
            ("a.tar", tar.clone()),
        ];
        for (name, data) in &files {
            fs::write(dir.path().join(name), data).expect("write");
        }
        let p = |n: &str| dir.path().join(n);
        let df = dockerfile::parse("FROM a\nADD x /\nENV A=1\nCOPY x /\n", "Dockerfile")
            .expect("parses");
        let [add, env, copy] = &df.instructions[1..] else {
            panic!("three instructions");
        };
        let base = ImageConfig::default();
        let (bz2, notes, plain) = (p("a.tar.bz2"), p("notes.bz2"), p("a.tar"));
        assert_eq!(
            changed_since(&add.kind, &[&plain, &bz2], &base, false),
            Some("add-bzip2 1\n")
        );
        assert_eq!(
            changed_since(&add.kind, &[&plain, &notes], &base, false),
            None
        );
        assert_eq!(changed_since(&copy.kind, &[&bz2], &base, false), None);
        // A directory source: its contents may go into a directory the image has.
        assert_eq!(
            changed_since(&copy.kind, &[&plain, dir.path()], &base, false),
            Some("copy-dir-dest 1\n")
        );
        assert_eq!(
            changed_since(&add.kind, &[&bz2, dir.path()], &base, false),
            Some("add-bzip2 1\ncopy-dir-dest 1\n")
        );
        assert_eq!(changed_since(&env.kind, &[], &base, false), None);
        let newline = InstrKind::Env(vec![("B".into(), "a\nb".into())]);
        assert_eq!(
            changed_since(&newline, &[], &base, false),
            Some("env-newline 1\n")
        );
        let mut from_base = ImageConfig::default();
        from_base.set_env("Y", "a\nb");
        assert_eq!(
            changed_since(&env.kind, &[], &from_base, false),
            Some("env-newline 1\n")
        );
        // ENTRYPOINT: marked only where it clears a CMD the stage inherited.
        let df = dockerfile::parse("FROM a\nENTRYPOINT [\"x\"]\n", "Dockerfile").expect("parses");
        let entrypoint = &df.instructions[1].kind;
        let with_cmd = ImageConfig {
            cmd: Some(vec!["serve".into()]),
            ..ImageConfig::default()
        };
        assert_eq!(
            changed_since(entrypoint, &[], &with_cmd, false),
            Some("entrypoint-cmd 1\n")
        );
        assert_eq!(changed_since(entrypoint, &[], &with_cmd, true), None);
        assert_eq!(changed_since(entrypoint, &[], &base, false), None);
    }

    /// A tar archive of one file, `f`, holding `x`.
    fn one_file_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("f").expect("path");
        h.set_size(1);
        h.set_cksum();
        b.append(&h, &b"x"[..]).expect("append");
        b.into_inner().expect("finish")
    }

    #[test]
    fn tar_headers_are_recognized_by_their_checksum() {
        let bytes = one_file_tar();
        let block: [u8; 512] = bytes[..512].try_into().expect("one block");
        assert!(tar_header_checksum_ok(&block));
        let mut bad = block;
        bad[0] ^= 1;
        assert!(!tar_header_checksum_ok(&bad));
        assert!(!tar_header_checksum_ok(&[0u8; 512]));
        let mut text = [b'a'; 512];
        text[148..156].copy_from_slice(b"0000000\0");
        assert!(!tar_header_checksum_ok(&text));
    }

    #[test]
    fn intermediate_stages_are_named_as_charliecloud_names_them() {
        let name = |t: &str, i| {
            stage_name(&Reference::parse(t).unwrap().with_default_tag(), i).to_string()
        };
        assert_eq!(name("foo", 0), "foo_stage0:latest");
        assert_eq!(name("foo:latest", 2), "foo_stage2:latest");
        assert_eq!(name("foo:1.0", 1), "foo:1.0_stage1");
        assert_eq!(
            name("example.com:5000/a/b", 0),
            "example.com:5000/a/b_stage0:latest"
        );
    }
}
