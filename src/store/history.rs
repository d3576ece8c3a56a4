//! An image's history: its first-parent commit chain, oldest first, with what each
//! instruction changed (from tree diffs) and whether it was a cache hit in the last build
//! (from the provenance note).

use gix::ObjectId;
use serde::Serialize;

use super::diff;
use super::git::{self, ReadError};
use super::notes;

/// One instruction of an image's history.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub instruction: String,
    pub commit: String,
    pub key: Option<String>,
    pub added: usize,
    pub modified: usize,
    pub removed: usize,
    pub size_delta: i64,
    /// Hit (true) or executed (false) in the last build; None if unknown.
    pub hit: Option<bool>,
    /// For an imported state (no parent): where it was imported from, as its import note
    /// records (docs/store-format.md, "Import notes"); absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported: Option<Vec<notes::ImportSource>>,
}

/// The cache key recorded in a commit message (`grove-cache-key: HEX`).
pub fn key_of(message: &str) -> Option<String> {
    message.lines().find_map(|l| {
        l.strip_prefix("grove-cache-key: ")
            .map(|k| k.trim().to_string())
    })
}

/// History of `commit`, oldest first.
pub fn history(repo: &gix::Repository, commit: ObjectId) -> Result<Vec<Step>, ReadError> {
    let mut chain = Vec::new();
    let mut c = Some(commit);
    while let Some(id) = c {
        let t = git::image_trees(repo, id)?;
        c = t.parent;
        chain.push((id, t));
    }
    chain.reverse();
    let hits: std::collections::HashMap<String, bool> = notes::provenance(repo, commit)?
        .map(|p| p.steps.into_iter().map(|s| (s.commit, s.hit)).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut prev: Option<ObjectId> = None;
    for (id, t) in &chain {
        let entries = diff::diff_commits(repo, prev, *id, true)?;
        let st = diff::stat(&entries);
        out.push(Step {
            instruction: t.message.lines().next().unwrap_or("").to_string(),
            commit: id.to_string(),
            key: key_of(&t.message),
            added: st.added,
            modified: st.modified,
            removed: st.removed,
            size_delta: st.size_delta,
            hit: hits.get(&id.to_string()).copied(),
            imported: match prev {
                None => notes::import_note(repo, *id)
                    .map_err(ReadError::from)?
                    .map(|n| n.imports),
                Some(_) => None,
            },
        });
        prev = Some(*id);
    }
    Ok(out)
}
