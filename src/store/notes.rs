//! Provenance notes: git notes under `refs/notes/grove`, one blob per image commit, so
//! that `git notes --ref=grove show COMMIT` shows how an image was built and the notes
//! travel with the commits. Each note update is a commit (deterministic identity) whose
//! tree maps commit ids (hex, flat) to note blobs.

use gix::bstr::ByteSlice;
use gix::objs::tree::{Entry, EntryKind};
use gix::ObjectId;

use super::git::{self, git_err, Expect, GitError};

/// The notes ref.
pub const NOTES_REF: &str = "refs/notes/grove";

/// The note attached to `commit`, if any.
pub fn get(repo: &gix::Repository, commit: ObjectId) -> Result<Option<Vec<u8>>, GitError> {
    let Some(tip) = git::get_ref(repo, NOTES_REF)? else {
        return Ok(None);
    };
    let c = repo
        .find_commit(tip)
        .map_err(git_err("find notes commit"))?;
    let tree_id = c.tree_id().map_err(git_err("read notes tree"))?.detach();
    let tree = repo
        .find_tree(tree_id)
        .map_err(git_err("find notes tree"))?;
    let decoded = tree.decode().map_err(git_err("decode notes tree"))?;
    let name = commit.to_string();
    let Some(e) = decoded
        .entries
        .iter()
        .find(|e| e.filename.as_bytes() == name.as_bytes())
    else {
        return Ok(None);
    };
    let id = e.oid.to_owned();
    drop(tree);
    Ok(Some(
        repo.find_blob(id)
            .map_err(git_err("read note"))?
            .data
            .clone(),
    ))
}

/// Attach `data` as the note of `commit`, replacing an older note.
pub fn set(repo: &gix::Repository, commit: ObjectId, data: &[u8]) -> Result<(), GitError> {
    let tip = git::get_ref(repo, NOTES_REF)?;
    let mut entries: Vec<Entry> = match tip {
        Some(t) => {
            let c = repo.find_commit(t).map_err(git_err("find notes commit"))?;
            let tree_id = c.tree_id().map_err(git_err("read notes tree"))?.detach();
            let tree = repo
                .find_tree(tree_id)
                .map_err(git_err("find notes tree"))?;
            let decoded = tree.decode().map_err(git_err("decode notes tree"))?;
            decoded
                .entries
                .iter()
                .map(|e| Entry {
                    mode: e.mode,
                    filename: e.filename.to_owned(),
                    oid: e.oid.to_owned(),
                })
                .collect()
        }
        None => Vec::new(),
    };
    let blob = repo
        .write_blob(data)
        .map_err(git_err("write note"))?
        .detach();
    let name = commit.to_string();
    entries.retain(|e| e.filename.as_bytes() != name.as_bytes());
    entries.push(Entry {
        mode: EntryKind::Blob.into(),
        filename: name.into(),
        oid: blob,
    });
    entries.sort();
    let tree = repo
        .write_object(gix::objs::Tree { entries })
        .map_err(git_err("write notes tree"))?
        .detach();
    let c = gix::objs::Commit {
        tree,
        parents: tip.into_iter().collect(),
        author: git::signature(),
        committer: git::signature(),
        encoding: None,
        message: format!("Notes for {commit}\n").into(),
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
