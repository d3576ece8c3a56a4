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

/// The entries of the notes tree of notes commit `tip`.
fn entries_of(repo: &gix::Repository, tip: ObjectId) -> Result<Vec<Entry>, GitError> {
    let c = repo
        .find_commit(tip)
        .map_err(git_err("find notes commit"))?;
    let tree_id = c.tree_id().map_err(git_err("read notes tree"))?.detach();
    let tree = repo
        .find_tree(tree_id)
        .map_err(git_err("find notes tree"))?;
    let decoded = tree.decode().map_err(git_err("decode notes tree"))?;
    Ok(decoded
        .entries
        .iter()
        .map(|e| Entry {
            mode: e.mode,
            filename: e.filename.to_owned(),
            oid: e.oid.to_owned(),
        })
        .collect())
}

/// Write a notes commit with `entries` and `parents`, and move the notes ref from `tip`
/// to it.
fn commit(
    repo: &gix::Repository,
    mut entries: Vec<Entry>,
    parents: Vec<ObjectId>,
    tip: Option<ObjectId>,
    message: String,
) -> Result<(), GitError> {
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
    mut attempt: impl FnMut() -> Result<(), GitError>,
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
                if tries >= 50 {
                    return Err(e);
                }
                if before == after && tries >= 5 {
                    return Err(e);
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
