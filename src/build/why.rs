//! Why a step missed the build cache (`ch-image build --explain`, `history --why`).
//!
//! Every build step's commit carries a key-input record (docs/cache-keys.md, "Key-input
//! records"): its key inputs by name, each with a hash of its value (never the value, so a
//! build argument's value is not stored twice), and for COPY and ADD one item per source
//! entry. A step that misses is compared with the cache entries made on the same parent
//! commit; the closest one (fewest differing items) names what changed.
//!
//! Invariants: nothing here runs on a cache hit, so an all-hit build does no extra work;
//! a record's bytes depend only on the step's key inputs, so equal inputs give equal
//! commits. Reads the store through gix only; writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use gix::ObjectId;

use super::dockerfile::{Heredoc, InstrKind};
use super::plan::{PlanOptions, MAGIC_ARGS};
use super::subst::{self, Vars};
use crate::store::git::{self, GitError};
use crate::store::Layout;

/// First line of a record.
pub const RECORD_VERSION: &str = "grove-key-inputs 1";

/// How many names a reason lists before it gives a count.
const SHOW: usize = 3;

/// A step's key inputs by name: `(name, hash)`, in the order the step defines them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub items: Vec<(String, String)>,
    /// The instruction's keyword ([`keyword`]), when known: not part of the blob (the
    /// `instruction` item holds only a hash of the text), set by [`record`] and by readers
    /// that know the step's text. Entries of another keyword are not compared with it.
    pub kind: Option<String>,
}

/// An instruction's keyword as [`Record::kind`] holds it: its first word, upper case.
pub fn keyword(text: &str) -> String {
    text.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// A value's hash in a record: 128 bits of blake3, in hex.
pub fn value_hash(v: &[u8]) -> String {
    blake3::hash(v).to_hex()[..32].to_string()
}

/// A name as a record writes it: bytes outside printable ASCII (and `\`) escaped, so a
/// name is one line and two names never write alike.
pub fn name_text(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

impl Record {
    fn push(&mut self, name: impl Into<String>, value: &[u8]) {
        self.items.push((name.into(), value_hash(value)));
    }

    /// The blob: [`RECORD_VERSION`], then one line per item, `HASH NAME`.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{RECORD_VERSION}\n");
        for (n, v) in &self.items {
            s.push_str(v);
            s.push(' ');
            s.push_str(n);
            s.push('\n');
        }
        s.into_bytes()
    }

    /// Parse a blob; `None` if it is not a record of this version.
    pub fn parse(b: &[u8]) -> Option<Record> {
        let s = std::str::from_utf8(b).ok()?;
        let mut lines = s.lines();
        if lines.next()? != RECORD_VERSION {
            return None;
        }
        let mut items = Vec::new();
        for l in lines {
            let (v, n) = l.split_once(' ')?;
            items.push((n.to_string(), v.to_string()));
        }
        Some(Record { items, kind: None })
    }
}

/// The record of a step that makes a commit: `text` as written, `sub` substituted, `vars`
/// after it, `input` its encoded key input, `sources` what [`super::exec`] found for COPY
/// and ADD (source entries, other stages' commits, heredocs, downloads) and for RUN's
/// bind mounts.
pub fn record(
    text: &str,
    sub: &InstrKind,
    input: &[u8],
    vars: &Vars,
    o: &PlanOptions,
    sources: Vec<(String, String)>,
) -> Record {
    let mut r = Record {
        kind: Some(keyword(text)),
        ..Record::default()
    };
    r.push("instruction", text.as_bytes());
    r.push("input", input);
    let sde = o
        .source_date_epoch
        .map(|t| t.to_string())
        .unwrap_or_default();
    r.push("option SOURCE_DATE_EPOCH", sde.as_bytes());
    match sub {
        InstrKind::Run { .. } => {
            r.push("option --force", o.force.tag().as_bytes());
            // `RUN --mount=type=bind` content.
            r.items.extend(sources);
        }
        InstrKind::Copy(_) | InstrKind::Add(_) => {
            r.push("option --xattrs", if o.xattrs { b"1" } else { b"0" });
            r.items.extend(sources);
        }
        InstrKind::Arg(decls) => {
            for d in decls {
                let v = if MAGIC_ARGS.contains(&d.name.as_str()) {
                    "*".to_string()
                } else {
                    match subst::Lookup::lookup(vars, &d.name) {
                        Some(v) => format!("={v}"),
                        None => "-".to_string(),
                    }
                };
                r.push(
                    format!("arg {}", name_text(d.name.as_bytes())),
                    v.as_bytes(),
                );
            }
        }
        InstrKind::Env(pairs) => {
            for (k, v) in pairs {
                r.push(format!("env {}", name_text(k.as_bytes())), v.as_bytes());
            }
        }
        InstrKind::Label(pairs) => {
            for (k, v) in pairs {
                r.push(format!("label {}", name_text(k.as_bytes())), v.as_bytes());
            }
        }
        _ => {}
    }
    r
}

/// Items that differ between `new` and `old`, by name (present in one only counts too).
fn differing<'a>(new: &'a Record, old: &'a Record) -> Vec<&'a str> {
    let o: HashMap<&str, &str> = old
        .items
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let nmap: HashMap<&str, &str> = new
        .items
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut out: Vec<&str> = new
        .items
        .iter()
        .filter(|(n, v)| o.get(n.as_str()) != Some(&v.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    out.extend(
        old.items
            .iter()
            .filter(|(n, _)| !nmap.contains_key(n.as_str()))
            .map(|(n, _)| n.as_str()),
    );
    out
}

/// `a, b, c and 4 more`.
fn names(v: &[String]) -> String {
    let mut s = v.iter().take(SHOW).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > SHOW {
        s.push_str(&format!(" and {} more", v.len() - SHOW));
    }
    s
}

/// What differs between a step's record and a cache entry's, in words. `old_text` is the
/// entry's instruction (its commit message's first line).
pub fn reasons(new: &Record, old: &Record, old_text: &str) -> Vec<String> {
    let new_names: std::collections::HashSet<&str> =
        new.items.iter().map(|(n, _)| n.as_str()).collect();
    let old_names: std::collections::HashSet<&str> =
        old.items.iter().map(|(n, _)| n.as_str()).collect();
    let mut groups: BTreeMap<u8, Vec<String>> = BTreeMap::new();
    for n in differing(new, old) {
        let (kind, rest) = n.split_once(' ').unwrap_or((n, ""));
        let (g, label) = match kind {
            "instruction" => (0, String::new()),
            "file" => {
                // The context directory itself (`COPY . /app/`): its own entry.
                let rest = if rest.is_empty() { "." } else { rest };
                let what = if !old_names.contains(n) {
                    format!("{rest} (new)")
                } else if !new_names.contains(n) {
                    format!("{rest} (gone)")
                } else {
                    rest.to_string()
                };
                (1, what)
            }
            "arg" => (2, rest.to_string()),
            "env" => (3, rest.to_string()),
            "label" => (4, rest.to_string()),
            "option" => (5, rest.to_string()),
            "source" => (6, rest.to_string()),
            // `input` alone: something the other items do not name.
            _ => (7, String::new()),
        };
        groups.entry(g).or_default().push(label);
    }
    let mut out = Vec::new();
    for (g, v) in &groups {
        let n = v.len();
        match g {
            0 => out.push(format!("instruction text changed (cached: {old_text})")),
            1 => out.push(format!(
                "context file{} changed: {}",
                if n == 1 { "" } else { "s" },
                names(v)
            )),
            2 => out.push(format!(
                "build argument{} changed: {}",
                if n == 1 { "" } else { "s" },
                names(v)
            )),
            3 => out.push(format!(
                "environment value{} changed: {}",
                if n == 1 { "" } else { "s" },
                names(v)
            )),
            4 => out.push(format!(
                "label{} changed: {}",
                if n == 1 { "" } else { "s" },
                names(v)
            )),
            5 => out.push(format!("build option changed: {}", names(v))),
            6 => out.push(format!("sources changed: {}", names(v))),
            _ => {
                // Only `input` differs and nothing above explains it.
                if groups.len() == 1 {
                    out.push(INPUT_ONLY.to_string());
                }
            }
        }
    }
    if out.is_empty() {
        out.push("same key inputs, different key (an entry from another Grove version)".into());
    }
    out
}

/// How many entries on one parent a miss is compared with (explanation, delta layer): the
/// most recently used, so that a CI loop that rebuilt a step many times pays for a few
/// records, not for every rebuild it ever made.
pub const MAX_COMPARED: usize = 8;

/// Cache entries by parent commit: one pass over the cache refs, made at a build's first
/// miss (never on an all-hit build); and the entries' key-input records, each read and
/// parsed once per build.
#[derive(Default)]
pub struct Siblings {
    by_parent: Option<HashMap<ObjectId, Vec<ObjectId>>>,
    /// Each entry's instruction keyword ([`keyword`] of its message's first line), read
    /// with the index or on first need.
    kinds: HashMap<ObjectId, String>,
    records: HashMap<ObjectId, Arc<Option<Record>>>,
    /// The storage directory, for the entries' last use ([`last_use`]); without it, ties
    /// everywhere (then by id).
    layout: Option<Layout>,
    /// Entries added by this build: newer than any other.
    added: Vec<ObjectId>,
}

/// When the layer (else the checkout) of commit `c` was last used
/// ([`crate::store::stamp::last_use`]). Commits' own times are fixed (reproducible
/// commits), so they can't tell entries apart.
pub fn last_use(layout: &Layout, c: ObjectId) -> Option<std::time::SystemTime> {
    [layout.layer(&c), layout.checkout(&c)]
        .iter()
        .find_map(|d| crate::store::stamp::last_use(d))
}

impl Siblings {
    /// Siblings of a storage directory (entries ranked by [`last_use`]).
    pub fn new(layout: Layout) -> Siblings {
        Siblings {
            layout: Some(layout),
            ..Siblings::default()
        }
    }

    /// The [`MAX_COMPARED`] most recently used entries whose commit has `parent` as its
    /// parent, most recent first: those this build added, then by [`last_use`] (ties and
    /// entries with no tree by id).
    pub fn of(
        &mut self,
        repo: &gix::Repository,
        parent: ObjectId,
    ) -> Result<Vec<ObjectId>, GitError> {
        self.of_kind(repo, parent, None)
    }

    /// Like [`Siblings::of`], among the entries whose instruction keyword is `kind` (all
    /// when `None`): picked before the most recent are taken, so that entries of other
    /// instructions on a busy parent don't hide the ones to compare with.
    pub fn of_kind(
        &mut self,
        repo: &gix::Repository,
        parent: ObjectId,
        kind: Option<&str>,
    ) -> Result<Vec<ObjectId>, GitError> {
        self.of_kind_among(repo, parent, kind, None)
    }

    /// Like [`Siblings::of_kind`], with `among`: only the entries in that set or added by
    /// this build (picked before the most recent are taken, as the keyword).
    pub fn of_kind_among(
        &mut self,
        repo: &gix::Repository,
        parent: ObjectId,
        kind: Option<&str>,
        among: Option<&HashSet<ObjectId>>,
    ) -> Result<Vec<ObjectId>, GitError> {
        if self.by_parent.is_none() {
            let mut m: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
            for (_, id) in git::list_refs(repo, crate::store::CACHE_REFS)? {
                let c = repo
                    .find_commit(id)
                    .map_err(crate::store::git::git_err(format!("find commit {id}")))?;
                let parent = c.parent_ids().next().map(|p| p.detach());
                let text = c.message_raw_sloppy().to_string();
                self.kinds
                    .insert(id, keyword(text.lines().next().unwrap_or("")));
                if let Some(p) = parent {
                    m.entry(p).or_default().push(id);
                }
            }
            for v in m.values_mut() {
                v.sort();
                v.dedup();
            }
            self.by_parent = Some(m);
        }
        let mut all = self
            .by_parent
            .as_ref()
            .and_then(|m| m.get(&parent))
            .cloned()
            .unwrap_or_default();
        if let Some(among) = among {
            all.retain(|c| among.contains(c) || self.added.contains(c));
        }
        if let Some(kind) = kind {
            let mut kept = Vec::with_capacity(all.len());
            for c in all {
                let k = match self.kinds.get(&c) {
                    Some(k) => k.clone(),
                    None => {
                        let m = repo
                            .find_commit(c)
                            .map_err(crate::store::git::git_err(format!("find commit {c}")))?;
                        let text = m.message_raw_sloppy().to_string();
                        let k = keyword(text.lines().next().unwrap_or(""));
                        self.kinds.insert(c, k.clone());
                        k
                    }
                };
                if k == kind {
                    kept.push(c);
                }
            }
            all = kept;
        }
        // Sort key: added by this build (newest first), then by last use (latest first;
        // no tree last), then by id.
        let mut ranked: Vec<((u8, u128), ObjectId)> = all
            .into_iter()
            .map(|c| {
                let key = match self.added.iter().position(|a| *a == c) {
                    Some(i) => (0, i as u128),
                    None => {
                        let used = self.layout.as_ref().and_then(|l| last_use(l, c));
                        let ns = used
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_nanos());
                        (1, u128::MAX - ns)
                    }
                };
                (key, c)
            })
            .collect();
        ranked.sort();
        Ok(ranked
            .into_iter()
            .take(MAX_COMPARED)
            .map(|(_, c)| c)
            .collect())
    }

    /// A new entry (if the index exists, keep it current): the most recent.
    pub fn add(&mut self, parent: ObjectId, child: ObjectId) {
        if let Some(m) = &mut self.by_parent {
            let v = m.entry(parent).or_default();
            if !v.contains(&child) {
                v.push(child);
                v.sort();
            }
        }
        if !self.added.contains(&child) {
            self.added.insert(0, child);
        }
    }

    /// The key-input record of entry `c` (`None`: it has none, or one of another
    /// version), read once.
    pub fn record(
        &mut self,
        repo: &gix::Repository,
        c: ObjectId,
    ) -> Result<Arc<Option<Record>>, GitError> {
        if let Some(r) = self.records.get(&c) {
            return Ok(r.clone());
        }
        let r = Arc::new(git::key_inputs_of(repo, c)?.and_then(|b| Record::parse(&b)));
        self.records.insert(c, r.clone());
        Ok(r)
    }
}

/// The cache entry on `parent` that a COPY with `record` can be made over as a delta layer
/// (docs/store-format.md, "Delta layers"): one made by the same instruction from the same
/// key inputs except its context files (`file …` items), none of its files gone from this
/// step's sources, and with a kept layer (`has_layer`). Returns the entry and the names of
/// this step's `file` items that differ from it or are new; of several, the one with the
/// fewest. `None` when there is none (or the record names an entry twice: overlapping
/// sources).
pub fn delta_base(
    repo: &gix::Repository,
    siblings: &mut Siblings,
    parent: ObjectId,
    record: &Record,
    has_layer: impl Fn(ObjectId) -> bool,
) -> Result<Option<(ObjectId, Vec<String>)>, GitError> {
    let is_file = |n: &str| n.starts_with("file ");
    let new: HashMap<&str, &str> = record
        .items
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if new.len() != record.items.len() {
        return Ok(None);
    }
    let fixed: Vec<&(String, String)> = record.items.iter().filter(|(n, _)| !is_file(n)).collect();
    let mut best: Option<(ObjectId, Vec<String>)> = None;
    // Entries of the same keyword only, picked before the most recent are taken: RUN
    // entries made on a busy parent since would otherwise push the COPY's out of the
    // [`MAX_COMPARED`] compared.
    for c in siblings.of_kind(repo, parent, record.kind.as_deref())? {
        if !has_layer(c) {
            continue;
        }
        let rec = siblings.record(repo, c)?;
        let Some(old) = rec.as_ref() else {
            continue;
        };
        let old_fixed: Vec<&(String, String)> =
            old.items.iter().filter(|(n, _)| !is_file(n)).collect();
        if old_fixed != fixed {
            continue;
        }
        let mut old_files: HashMap<&str, &str> = HashMap::new();
        for (n, v) in old.items.iter().filter(|(n, _)| is_file(n)) {
            old_files.insert(n.as_str(), v.as_str());
        }
        if old_files.keys().any(|n| !new.contains_key(n)) {
            continue;
        }
        let changed: Vec<String> = record
            .items
            .iter()
            .filter(|(n, v)| is_file(n) && old_files.get(n.as_str()) != Some(&v.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        if best.as_ref().is_none_or(|(_, b)| changed.len() < b.len()) {
            best = Some((c, changed));
        }
    }
    Ok(best)
}

/// Why `record` (a step on `parent`) has no cache entry: compared with the closest entry on
/// the same parent (`exclude`: the step's own commit, when asking afterwards; of equally
/// close ones, the newest). Only entries of the same instruction keyword are compared when
/// the record's is known: the items of an `ARG` and a `COPY` differ in name, and listing
/// them ("build argument changed: V" for a COPY) would name changes nobody made. `None` if
/// there is no such entry for this parent. Only the closest entry is put in words.
pub fn against_siblings(
    repo: &gix::Repository,
    siblings: &mut Siblings,
    parent: ObjectId,
    record: &Record,
    exclude: Option<ObjectId>,
) -> Result<Option<Vec<String>>, GitError> {
    Ok(closest(repo, siblings, parent, record, exclude, None)?.map(|(_, w)| w))
}

/// [`against_siblings`], with the entry compared. Of equally close entries, `prefer` (the
/// step's commit in the image's last build, when the caller knows it) is taken, else the
/// newest: two instructions that changed both differ from every entry in their text, and
/// the one the step replaced is the one to name.
pub fn closest(
    repo: &gix::Repository,
    siblings: &mut Siblings,
    parent: ObjectId,
    record: &Record,
    exclude: Option<ObjectId>,
    prefer: Option<ObjectId>,
) -> Result<Option<(ObjectId, Vec<String>)>, GitError> {
    closest_among(repo, siblings, parent, record, exclude, prefer, None)
}

/// [`closest`] among the entries in `among` (and those this build added), when given: a
/// build compares its steps only with its own earlier state ([`own_entries`]), not with
/// an entry another image made on the same parent.
pub fn closest_among(
    repo: &gix::Repository,
    siblings: &mut Siblings,
    parent: ObjectId,
    record: &Record,
    exclude: Option<ObjectId>,
    prefer: Option<ObjectId>,
    among: Option<&HashSet<ObjectId>>,
) -> Result<Option<(ObjectId, Vec<String>)>, GitError> {
    let new = index(record);
    let mut best: Option<(usize, ObjectId, String, Arc<Option<Record>>)> = None;
    for c in siblings.of_kind_among(repo, parent, record.kind.as_deref(), among)? {
        if Some(c) == exclude {
            continue;
        }
        let old_text = match repo.find_commit(c) {
            Ok(cm) => cm
                .message_raw_sloppy()
                .to_string()
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            Err(_) => continue,
        };
        if record
            .kind
            .as_ref()
            .is_some_and(|k| *k != keyword(&old_text))
        {
            continue;
        }
        let old = siblings.record(repo, c)?;
        // An entry made before records existed: only its text can be compared.
        let d = match old.as_ref() {
            Some(old) => count_differing(record, &new, old, &index(old)),
            None => usize::MAX - 1,
        };
        if best
            .as_ref()
            .is_none_or(|(bd, _, _, _)| d < *bd || (d == *bd && Some(c) == prefer))
        {
            best = Some((d, c, old_text, old));
        }
    }
    Ok(best.map(|(_, c, old_text, old)| {
        let w = match old.as_ref() {
            Some(old) => reasons(record, old, &old_text),
            None => {
                let new_text = record.items.first().map(|(_, v)| v.as_str()).unwrap_or("");
                if value_hash(old_text.as_bytes()) != new_text {
                    vec![format!("instruction text changed (cached: {old_text})")]
                } else {
                    vec!["entry has no key-input record to compare".into()]
                }
            }
        };
        (c, w)
    }))
}

/// The reason [`reasons`] gives when only the `input` item differs.
pub const INPUT_ONLY: &str = "key input changed";

/// How many characters of a heredoc line a reason quotes.
const QUOTE: usize = 60;

/// A line as a reason quotes it: escaped as Rust's `{:?}` does, cut to [`QUOTE`]
/// characters.
fn quote(line: &str) -> String {
    let mut s: String = line.chars().take(QUOTE).collect();
    if line.chars().count() > QUOTE {
        s.push_str("...");
    }
    format!("{s:?}")
}

/// What changed between a RUN's heredocs (`new`) and the cached step's (`old`, from the
/// Dockerfile its build's note holds): per heredoc whose body differs, its name and the
/// first differing line (`line 2: cached "a", now "b"`). The record of a RUN hashes its
/// heredoc bodies only inside `input` (docs/cache-keys.md), so a body that changed shows
/// as [`INPUT_ONLY`]; this names it. `old` is `None` when no note holds the entry's
/// Dockerfile: the change is then named without the line.
pub fn heredoc_reasons(new: &[&Heredoc], old: Option<&[&Heredoc]>) -> Vec<String> {
    let names: Vec<String> = new.iter().map(|h| h.name.clone()).collect();
    let Some(old) = old else {
        return vec![format!(
            "heredoc bod{} changed: {} (the cached step's Dockerfile is in no note: the line \
             is not known)",
            if names.len() == 1 { "y" } else { "ies" },
            names.join(", ")
        )];
    };
    let mut out = Vec::new();
    for (i, h) in new.iter().enumerate() {
        let Some(o) = old.get(i) else {
            out.push(format!("heredoc {} is new", h.name));
            continue;
        };
        if o.content == h.content {
            continue;
        }
        // Split at `\n` only: a `\r` is part of the line, shown escaped.
        let (mut a, mut b) = (
            o.content.split_terminator('\n'),
            h.content.split_terminator('\n'),
        );
        let mut k = 1;
        loop {
            match (a.next(), b.next()) {
                (Some(x), Some(y)) if x == y => k += 1,
                (None, None) => {
                    // Same lines, but one body lacks the other's last `\n` (a heredoc
                    // body always ends with one; say so rather than nothing).
                    out.push(format!(
                        "heredoc {} body changed (its last line end)",
                        h.name
                    ));
                    break;
                }
                (x, y) => {
                    let show = |l: Option<&str>| l.map_or("(end of body)".to_string(), quote);
                    out.push(format!(
                        "heredoc {} body changed at line {k}: cached {}, now {}",
                        h.name,
                        show(x),
                        show(y)
                    ));
                    break;
                }
            }
        }
    }
    if old.len() > new.len() {
        out.push(format!(
            "heredoc{} gone: {}",
            if old.len() - new.len() == 1 { "" } else { "s" },
            old[new.len()..]
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if out.is_empty() {
        out.push(INPUT_ONLY.to_string());
    }
    out
}

/// The Dockerfile text and instruction number of the build step that made cache entry
/// `entry`, from the provenance notes: the first note (by image commit) with a step of
/// that commit. `None` when no note has one (the image was deleted and collected, or the
/// entry was fetched without its notes). Reads every note that names the commit: only on
/// a miss that needs it.
pub fn step_dockerfile(
    repo: &gix::Repository,
    entry: ObjectId,
) -> Result<Option<(String, usize)>, GitError> {
    Ok(note_with_step(repo, entry)?.map(|(_, p, i)| {
        let n = p.steps[i].n;
        (p.dockerfile, n)
    }))
}

/// The first build note (by image commit) with a step that made or found `commit`: the
/// image's commit, the note, and the step's index in it. `None` when no note has one.
/// Reads every note that names the commit.
pub fn note_with_step(
    repo: &gix::Repository,
    step: ObjectId,
) -> Result<Option<(ObjectId, crate::store::notes::Provenance, usize)>, GitError> {
    crate::store::notes::note_with_step(repo, step, &[])
}

/// Whether two image references name the same image, whatever their tags or digests
/// (`app:1f3e` and `app:9c2d`, a CI job's tag per commit).
pub fn same_image(a: &crate::reference::Reference, b: &crate::reference::Reference) -> bool {
    (&a.host, a.port, &a.path, &a.name) == (&b.host, b.port, &b.path, &b.name)
}

/// The cache entries that are an image's own earlier state: every step commit (made or
/// found) of the build notes of an image of the same name as `image` (any tag) or built
/// from a Dockerfile with sha256 `dockerfile_sha256`. `None` when there is no such note:
/// the build is the first of that image and of that Dockerfile (in this store, or in what
/// `build-cache fetch` brought, notes included). Reads every note: only at a build's first
/// miss.
pub fn own_entries(
    repo: &gix::Repository,
    image: &crate::reference::Reference,
    dockerfile_sha256: &str,
) -> Result<Option<HashSet<ObjectId>>, GitError> {
    let mut own: Option<HashSet<ObjectId>> = None;
    for (commit, blob) in crate::store::notes::list(repo)? {
        let Ok(b) = git::read_bounded(
            repo,
            commit,
            "provenance note blob",
            blob,
            crate::store::notes::MAX_NOTE,
        ) else {
            continue;
        };
        let Some(p) = crate::store::notes::Provenance::parse(&b) else {
            continue;
        };
        let named =
            crate::reference::Reference::parse(&p.image).is_ok_and(|r| same_image(&r, image));
        if !named && p.dockerfile_sha256.as_deref() != Some(dockerfile_sha256) {
            continue;
        }
        let set = own.get_or_insert_with(HashSet::new);
        set.extend(
            p.steps
                .iter()
                .filter_map(|s| ObjectId::from_hex(s.commit.as_bytes()).ok()),
        );
    }
    Ok(own)
}

/// The heredocs of instruction `n` (from 1) of Dockerfile `text`, if it parses and has
/// that instruction.
pub fn heredocs_of(text: &str, n: usize) -> Option<Vec<Heredoc>> {
    let df = super::dockerfile::parse(text, "note").ok()?;
    let ins = df.instructions.get(n.checked_sub(1)?)?;
    Some(ins.kind.heredocs().into_iter().cloned().collect())
}

/// [`closest`]'s reasons for a RUN with heredocs `new`: an [`INPUT_ONLY`] reason replaced
/// by what changed in the heredocs ([`heredoc_reasons`]) against entry `entry`'s.
pub fn explain_heredocs(
    repo: &gix::Repository,
    entry: ObjectId,
    new: &[&Heredoc],
    reasons: Vec<String>,
) -> Result<Vec<String>, GitError> {
    if new.is_empty() || reasons != [INPUT_ONLY] {
        return Ok(reasons);
    }
    let old = step_dockerfile(repo, entry)?.and_then(|(df, n)| heredocs_of(&df, n));
    let old_refs: Option<Vec<&Heredoc>> = old.as_ref().map(|v| v.iter().collect());
    Ok(heredoc_reasons(new, old_refs.as_deref()))
}

/// A record's items by name.
fn index(r: &Record) -> HashMap<&str, &str> {
    r.items
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// `differing(new, old).len()`, given both records' indexes.
fn count_differing(
    new: &Record,
    new_index: &HashMap<&str, &str>,
    old: &Record,
    old_index: &HashMap<&str, &str>,
) -> usize {
    new.items
        .iter()
        .filter(|(n, v)| old_index.get(n.as_str()) != Some(&v.as_str()))
        .count()
        + old
            .items
            .iter()
            .filter(|(n, _)| !new_index.contains_key(n.as_str()))
            .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(items: &[(&str, &str)]) -> Record {
        let mut r = Record::default();
        for (n, v) in items {
            r.push(*n, v.as_bytes());
        }
        r
    }

    #[test]
    fn record_round_trips_through_its_blob() {
        let r = rec(&[("instruction", "RUN true"), ("file a b\\xff", "x")]);
        assert_eq!(Record::parse(&r.encode()), Some(r));
        assert_eq!(Record::parse(b"grove-key-inputs 2\n"), None);
    }

    #[test]
    fn changed_files_are_named_up_to_three_then_counted() {
        let old = rec(&[
            ("instruction", "COPY . /"),
            ("input", "i"),
            ("file a", "1"),
            ("file b", "1"),
            ("file c", "1"),
            ("file d", "1"),
            ("file e", "1"),
        ]);
        let new = rec(&[
            ("instruction", "COPY . /"),
            ("input", "i"),
            ("file a", "2"),
            ("file b", "2"),
            ("file c", "2"),
            ("file d", "2"),
            ("file f", "1"),
        ]);
        assert_eq!(
            reasons(&new, &old, "COPY . /"),
            ["context files changed: a, b, c and 3 more"]
        );
        let one = rec(&[
            ("instruction", "COPY . /"),
            ("input", "j"),
            ("file a", "1"),
            ("file b", "1"),
            ("file c", "1"),
            ("file d", "1"),
            ("file e", "9"),
        ]);
        assert_eq!(reasons(&one, &old, "COPY . /"), ["context file changed: e"]);
        // The context directory's own entry (its mode or time) is named `.`.
        let root = |t| rec(&[("instruction", "COPY . /"), ("input", t), ("file ", t)]);
        assert_eq!(
            reasons(&root("2"), &root("1"), "COPY . /"),
            ["context file changed: ."]
        );
    }

    fn heredoc(name: &str, content: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
            chomp: false,
            fd: None,
            word: format!("<<{name}"),
        }
    }

    #[test]
    fn a_changed_heredoc_body_is_named_with_its_first_differing_line() {
        let (a, b) = (heredoc("EOF", "x\ny\n"), heredoc("EOT", "1\n"));
        let a2 = heredoc("EOF", "x\nY\n");
        assert_eq!(
            heredoc_reasons(&[&a2, &b], Some(&[&a, &b])),
            [r#"heredoc EOF body changed at line 2: cached "y", now "Y""#]
        );
        let longer = heredoc("EOF", "x\ny\nz\n");
        assert_eq!(
            heredoc_reasons(&[&longer], Some(&[&a])),
            [r#"heredoc EOF body changed at line 3: cached (end of body), now "z""#]
        );
        assert_eq!(
            heredoc_reasons(&[&a], Some(&[&a, &b])),
            ["heredoc gone: EOT"]
        );
        assert_eq!(
            heredoc_reasons(&[&a, &b], Some(&[&a])),
            ["heredoc EOT is new"]
        );
        let long = heredoc("EOF", &format!("{}\n", "é".repeat(100)));
        let r = heredoc_reasons(&[&long], Some(&[&a]));
        assert!(
            r[0].ends_with(&format!("now \"{}...\"", "é".repeat(60))),
            "{r:?}"
        );
        // Without the cached step's Dockerfile: which heredoc, not which line.
        assert_eq!(
            heredoc_reasons(&[&a2], None),
            [
                "heredoc body changed: EOF (the cached step's Dockerfile is in no note: the \
              line is not known)"
            ]
        );
        // Control characters are escaped: one reason, one line.
        let cr = heredoc("EOF", "x\ny\r\n");
        assert_eq!(
            heredoc_reasons(&[&cr], Some(&[&a])),
            [r#"heredoc EOF body changed at line 2: cached "y", now "y\r""#]
        );
    }

    #[test]
    fn build_argument_and_text_changes_are_named() {
        let old = rec(&[("instruction", "ARG V"), ("input", "1"), ("arg V", "=1")]);
        let new = rec(&[("instruction", "ARG V"), ("input", "2"), ("arg V", "=2")]);
        assert_eq!(reasons(&new, &old, "ARG V"), ["build argument changed: V"]);
        let old = rec(&[("instruction", "RUN a"), ("input", "1")]);
        let new = rec(&[("instruction", "RUN b"), ("input", "2")]);
        assert_eq!(
            reasons(&new, &old, "RUN a"),
            ["instruction text changed (cached: RUN a)"]
        );
    }
}
