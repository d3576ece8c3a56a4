//! Compaction: the packs an import or pull writes without compression (stored packs,
//! [`super::pack::PackBuilder::stored`]) are copied into packs compressed at zlib level 2
//! and removed, which takes the bookworm import from 153 to 63 MiB. Imports stay as
//! fast as the disk (the reason they store), and the space comes back without a
//! `build-cache --gc`: `ch-image` starts a compaction in the background after a command
//! that left at least [`AUTO_COMPACT_BYTES`] of stored packs ([`start_in_background`]),
//! as git starts its auto gc; `ch-image build-cache --compact` runs one and waits.
//!
//! Safety, as git's repack: the compressed packs are in place (index last) before a
//! stored pack goes (index first, so that no reader newly finds an index without its
//! pack); readers that opened the old pack keep reading it, readers that look the objects
//! up again find them in the new one. Every object of a stored pack is copied, reachable
//! or not, so a writer whose objects are in a stored pack and whose ref is not yet
//! written loses nothing. A kill at any point leaves the stored packs (listed in the
//! marker until they are gone), the new packs whole or not at all, and at worst both.
//! A compaction holds the writer lock shared (gc, which repacks everything, waits for
//! it) and `objects/info/grove-compact.lock` exclusively (one compaction at a time;
//! `ch-image fsck` waits for it, as git's fsck would see packs vanish); one started in
//! the background holds the latter from before the command that started it returns.

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::pack::{self, PackBuilder};
use super::{Store, StoreError, WriteLock};
use crate::error::{IoError, IoResultExt};

/// A command that leaves at least this many bytes of stored packs starts a compaction.
/// Smaller imports (a busybox tree) would save too little to be worth a process.
pub const AUTO_COMPACT_BYTES: u64 = 8 << 20;

/// zlib level of the packs written. zlib-rs's level 1 (as zlib-ng's) is its quick
/// strategy, which leaves bookworm's import at 75.6 MiB in 0.77 s of CPU; level 2 makes
/// 62.7 MiB in 1.32 s, level 6 59.3 MiB in 2.12 s (docs/performance.md). In the
/// background, the smaller store is worth the second core-second.
const LEVEL: u32 = 2;

/// `CH_IMAGE_AUTO_COMPACT=no` (or `0`, `false`, `off`) keeps commands from starting one.
pub const AUTO_COMPACT_ENV: &str = "CH_IMAGE_AUTO_COMPACT";

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Stored packs removed.
    pub packs: usize,
    /// Objects copied.
    pub objects: usize,
    /// Bytes of the stored packs (with their indexes) and of the packs written.
    pub before: u64,
    pub after: u64,
}

fn lock_path(objects: &Path) -> PathBuf {
    objects.join("info").join("grove-compact.lock")
}

/// `flock` the compaction lock: exclusive for a compaction, shared to wait for one
/// (`fsck`). With `wait` false, `None` when it is held; with `wait`, says that it waits.
/// Creates no directory but `objects/info` itself: a store removed meanwhile is not made
/// again by a compaction that was waiting.
pub fn lock(
    objects: &Path,
    exclusive: bool,
    wait: bool,
) -> Result<Option<nix::fcntl::Flock<fs::File>>, StoreError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = lock_path(objects);
    let dir = objects.join("info");
    match fs::create_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(IoError::new("create directory", &dir, e).into());
        }
        _ => {}
    }
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at("open", &path)?;
    let err = |e: nix::errno::Errno| -> StoreError {
        IoError {
            action: "lock",
            path: path.clone(),
            source: e.into(),
        }
        .into()
    };
    let nonblock = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    match Flock::lock(f, nonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => Ok(None),
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
            crate::info!("waiting for the compaction running in the background to end");
            let block = if exclusive {
                FlockArg::LockExclusive
            } else {
                FlockArg::LockShared
            };
            Flock::lock(f, block).map(Some).map_err(|(_, e)| err(e))
        }
        Err((_, e)) => Err(err(e)),
    }
}

/// The stored packs the marker lists that exist, with their bytes (pack and index).
fn present(objects: &Path) -> (Vec<String>, Vec<(String, u64)>) {
    let listed = fs::read_to_string(pack::stored_marker(objects)).unwrap_or_default();
    let names = pack::stored_packs(&listed);
    let dir = objects.join("pack");
    let here = names
        .iter()
        .filter_map(|n| {
            let p = fs::metadata(dir.join(format!("{n}.pack"))).ok()?;
            let i = fs::metadata(dir.join(format!("{n}.idx"))).ok()?;
            Some((n.clone(), p.len() + i.len()))
        })
        .collect();
    (names, here)
}

/// Bytes of stored packs in the repository whose objects directory is `objects`.
pub fn stored_bytes(objects: &Path) -> u64 {
    present(objects).1.iter().map(|(_, b)| b).sum()
}

/// Compress every stored pack (and those stored while this runs) and remove them.
/// `inherited`: the compaction lock is held already, by a descriptor this process
/// inherited from the command that started it ([`start_in_background`]).
pub fn compact(store: &Store, _lock: &WriteLock, inherited: bool) -> Result<Compacted, StoreError> {
    let objects = store.layout().objects();
    let _serial = match lock(&objects, true, false)? {
        Some(l) => Some(l),
        // Held: by the descriptor inherited, or by another compaction to wait for.
        None if inherited => None,
        None => lock(&objects, true, true)?,
    };
    let mut done = Compacted::default();
    loop {
        let (names, here) = present(&objects);
        if here.is_empty() {
            if !names.is_empty() {
                pack::unmark_stored(&objects, &names).at("write", pack::stored_marker(&objects))?;
            }
            return Ok(done);
        }
        // One stored pack at a time: its copy is in place (and on the disk) before it
        // goes, so a compaction needs room for one pack's compressed copy, not for all of
        // them (a nearly full disk can still be compacted, and each pack compacted frees
        // its room for the next). Each pack is read through a repository handle of its
        // own, dropped before the pack is removed: a handle keeps the packs it read
        // mapped, and a removed pack's blocks are freed only once nothing maps it.
        for (name, bytes) in &here {
            let ts = gix::open_opts(store.layout().repo(), gix::open::Options::isolated())
                .map_err(super::git::git_err(format!(
                    "open repository in {}",
                    store.root().display()
                )))?
                .into_sync();
            compact_one(ts, &objects, name, *bytes, &mut done)?;
        }
    }
}

/// Compact the stored pack `name` (of `bytes`, with its index): copy its objects into
/// compressed packs, put them on the disk, then remove it (index first) and take it off
/// the list. On failure (a full disk) the copies written go, and the pack stays.
fn compact_one(
    ts: gix::ThreadSafeRepository,
    objects: &Path,
    name: &str,
    bytes: u64,
    done: &mut Compacted,
) -> Result<(), StoreError> {
    let dir = objects.join("pack");
    let pb = PackBuilder::with_level(objects, LEVEL);
    let idx = dir.join(format!("{name}.idx"));
    let copied = (|| -> Result<usize, StoreError> {
        let ids = pack::index_ids(&fs::read(&idx).at("read", &idx)?).at("read", &idx)?;
        ids.par_iter()
            .try_for_each_init(
                || ts.to_thread_local(),
                |repo, id| {
                    let o = repo.find_object(*id).map_err(std::io::Error::other)?;
                    pb.add_copy(*id, o.kind, &o.data)
                },
            )
            .at("compact", &idx)?;
        Ok(ids.len())
    })();
    drop(ts);
    let (count, new_packs) = match copied.and_then(|n| Ok((n, pb.finish().at("compact", &dir)?))) {
        Ok(x) => x,
        Err(e) => {
            remove_copies(objects, &pb.written());
            return Err(e);
        }
    };
    // The new packs reach the disk before the stored one goes (a power loss must not
    // leave neither): their files, then the directory naming them.
    let mut after = 0;
    let mut same = false;
    for p in new_packs {
        for f in [p.clone(), p.with_extension("idx")] {
            let file = fs::File::open(&f).at("open", &f)?;
            file.sync_all().at("sync", &f)?;
            after += file.metadata().map(|m| m.len()).unwrap_or(0);
        }
        same |= p.file_stem().is_some_and(|s| s == name);
    }
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .at("sync", &dir)?;
    // Every object is in a compressed pack now: the stored one goes, index first. A pack
    // is named by its contents, so one written again byte for byte (objects that do not
    // compress, stored blocks either way) has the name of the stored pack it copies:
    // that file is the copy and stays.
    let names = [name.to_string()];
    let marker = pack::stored_marker(objects);
    if same {
        pack::unmark_rewritten(objects, &names).at("write", &marker)?;
    } else {
        for ext in ["idx", "pack"] {
            let p = dir.join(format!("{name}.{ext}"));
            fs::remove_file(&p).at("remove", &p)?;
        }
        pack::unmark_stored(objects, &names).at("write", &marker)?;
    }
    done.packs += 1;
    done.objects += count;
    done.before += bytes;
    done.after += after;
    // Each pack compacted must leave the list: never loop on it.
    if present(objects).1.iter().any(|(n, _)| n == name) {
        return Err(IoError::new(
            "update",
            &marker,
            std::io::Error::other(format!("{name} is still listed after its compaction")),
        )
        .into());
    }
    Ok(())
}

/// Remove the compressed `packs` a compaction that failed (a full disk) had written
/// before any stored pack went: copies of objects the stored packs still hold (a
/// concurrent writer that found an object there finds it in its stored pack), which
/// would otherwise take the room the compaction lacked and be copied again by the next
/// one. A pack named as a listed stored pack is that pack (written again byte for byte):
/// it stays.
fn remove_copies(objects: &Path, packs: &[PathBuf]) {
    let listed = fs::read_to_string(pack::stored_marker(objects)).unwrap_or_default();
    let listed = pack::stored_packs(&listed);
    for p in packs {
        let stored = p
            .file_stem()
            .is_some_and(|n| listed.iter().any(|l| l.as_str() == n));
        if !stored {
            let _ = fs::remove_file(p.with_extension("idx"));
            let _ = fs::remove_file(p);
        }
    }
}

/// Whether `value` (of [`AUTO_COMPACT_ENV`]) turns automatic compaction off. Pure.
pub fn auto_off(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "no" | "0" | "false" | "off"
        )
    })
}

/// Whether a command waits for the compaction it starts (or finds running) instead of
/// leaving it in the background: when [`AUTO_COMPACT_ENV`] is `wait`, or when it is not
/// set and `CI` is (GitLab, GitHub Actions and most CI systems set `CI=true`). A CI
/// system saves the storage directory as its cache (zip, tar) as soon as the job's
/// script ends; a compaction still running then removes packs under the archiver, whose
/// copy lacks objects (`git fsck`: missing blob). Pure: `value` is the variable's,
/// `ci` is `CI`'s.
pub fn auto_waits(value: Option<&str>, ci: Option<&str>) -> bool {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "wait" => true,
        Some(v) if !v.is_empty() => false,
        _ => ci.is_some_and(|c| !auto_off(Some(c)) && !c.trim().is_empty()),
    }
}

/// After a command that wrote to the store at `storage`: when at least
/// [`AUTO_COMPACT_BYTES`] of stored packs are there and no compaction runs, start
/// `ch_image -s STORAGE build-cache --compact` in the background (its own process group,
/// no terminal, output to `repo.git/grove-compact.log`), and return at once. Returns
/// whether one was started. Does nothing when [`AUTO_COMPACT_ENV`] says no. When
/// [`auto_waits`], returns only when no compaction runs any more: it waits for the one
/// it started, or for one that an earlier command started.
pub fn start_in_background(storage: &Path, ch_image: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    let setting = std::env::var(AUTO_COMPACT_ENV).ok();
    if auto_off(setting.as_deref()) {
        return false;
    }
    let wait = auto_waits(setting.as_deref(), std::env::var("CI").ok().as_deref());
    let layout = super::Layout::new(storage);
    let objects = layout.objects();
    if stored_bytes(&objects) < AUTO_COMPACT_BYTES {
        if wait && objects.is_dir() {
            // One started earlier may run still: wait for it (shared, as fsck).
            let _ = lock(&objects, false, true);
        }
        return false;
    }
    let held = match lock(&objects, true, false) {
        Ok(Some(l)) => l,
        Ok(None) => {
            if wait {
                let _ = lock(&objects, false, true);
            }
            return false;
        }
        Err(e) => {
            crate::verbose!("no compaction in the background: {e}");
            return false;
        }
    };
    cloexec_all_but(std::os::fd::AsRawFd::as_raw_fd(&*held));
    // The child inherits the locked descriptor (flock(2) locks belong to the open file,
    // which both then share), so that the lock is held from here to the end of the
    // compaction: a `ch-image fsck` right after this command waits for it.
    if nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&*held),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .is_err()
    {
        return false;
    }
    let log = layout.repo().join("grove-compact.log");
    let err = match fs::File::create(&log) {
        Ok(f) => f,
        Err(e) => {
            crate::verbose!("no compaction in the background: {}: {e}", log.display());
            return false;
        }
    };
    let started = crate::interrupt::unblocked(&mut std::process::Command::new(ch_image))
        .arg("-s")
        .arg(storage)
        .args(["build-cache", "--compact", "--background"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .process_group(0)
        .spawn();
    match started {
        Ok(mut child) => {
            // Closed when this process exits, not unlocked (dropping it would unlock
            // the open file the child shares): the child holds the lock now.
            std::mem::forget(held);
            if wait {
                crate::verbose!("waiting for the compaction (CI or {AUTO_COMPACT_ENV}=wait)");
                let _ = child.wait();
            }
            true
        }
        Err(e) => {
            crate::verbose!(
                "no compaction in the background: {}: {e}",
                ch_image.display()
            );
            false
        }
    }
}

/// Mark every descriptor but the standard three and `keep` close-on-exec, so that the
/// background compaction holds no pipe or file that was handed to this command (a test
/// harness or a script reading a pipe to its end would wait for the compaction).
fn cloexec_all_but(keep: std::os::fd::RawFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let Ok(rd) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<std::os::fd::RawFd> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && fd != keep {
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object of the stored packs, reachable or not (a writer's objects before its
    /// ref), is in the compressed packs, the stored packs and their names are gone, and
    /// git agrees.
    #[test]
    fn compaction_replaces_stored_packs_by_compressed_ones_with_every_object() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let store = Store::open(&dir).unwrap();
        let objects = store.layout().objects();
        let repo = store.repo();
        let pb = PackBuilder::stored(&objects);
        let blob = |i: usize| format!("line {i}\n").repeat(2000).into_bytes();
        let ids: Vec<_> = (0..300).map(|i| pb.add(&repo, &blob(i)).unwrap()).collect();
        let stored = pb.finish().unwrap();
        let (_, here) = present(&objects);
        assert_eq!(here.len(), stored.len());
        let before = stored_bytes(&objects);
        assert!(before > 300 * 14_000, "{before}");

        let lock = store.lock().unwrap();
        let c = compact(&store, &lock, false).unwrap();
        assert_eq!((c.packs, c.objects, c.before), (stored.len(), 300, before));
        assert!(c.after * 10 < c.before, "{c:?}");
        for p in &stored {
            assert!(
                !p.exists() && !p.with_extension("idx").exists(),
                "{}",
                p.display()
            );
        }
        assert_eq!(stored_bytes(&objects), 0);
        let marker = fs::read_to_string(pack::stored_marker(&objects)).unwrap();
        assert!(pack::stored_packs(&marker).is_empty(), "{marker}");
        let repo = gix::open(dir.join("repo.git")).unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(repo.find_blob(*id).unwrap().data, blob(i));
        }
        // Nothing left to do: a second compaction is a no-op.
        assert_eq!(compact(&store, &lock, false).unwrap(), Compacted::default());
        pack::tests::assert_git_fsck_strict(&dir.join("repo.git"));
    }

    /// A stored pack of one incompressible blob over a chunk comes out of compaction byte
    /// for byte, under its own name: it stays, and leaves the list.
    #[test]
    fn a_pack_compaction_writes_again_byte_for_byte_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let store = Store::open(&dir).unwrap();
        let objects = store.layout().objects();
        let repo = store.repo();
        let noise = pack::tests::noise(pack::CHUNK_BYTES + 1000, 0x9e37_79b9_7f4a_7c15);
        let pb = PackBuilder::stored(&objects);
        let id = pb.add(&repo, &noise).unwrap();
        let stored = pb.finish().unwrap();
        assert_eq!(stored.len(), 1);
        let lock = store.lock().unwrap();
        let c = compact(&store, &lock, false).unwrap();
        assert_eq!((c.packs, c.objects), (1, 1));
        assert!(
            stored[0].exists(),
            "the pack that is its own copy was removed"
        );
        assert_eq!(stored_bytes(&objects), 0);
        let repo = gix::open(dir.join("repo.git")).unwrap();
        assert!(repo.find_blob(id).unwrap().data == noise);
        pack::tests::assert_git_fsck_strict(&dir.join("repo.git"));
    }

    #[test]
    fn auto_compaction_is_off_only_when_said_so() {
        for v in ["no", "0", "false", "OFF", " No "] {
            assert!(auto_off(Some(v)), "{v}");
        }
        for v in [None, Some(""), Some("yes"), Some("1")] {
            assert!(!auto_off(v), "{v:?}");
        }
    }

    #[test]
    fn commands_wait_for_compaction_in_ci_or_when_told() {
        assert!(auto_waits(Some("wait"), None));
        assert!(auto_waits(Some(" WAIT "), Some("false")));
        assert!(auto_waits(None, Some("true")));
        assert!(auto_waits(Some(""), Some("1")));
        assert!(!auto_waits(None, None));
        assert!(!auto_waits(None, Some("")));
        assert!(!auto_waits(None, Some("false")));
        assert!(!auto_waits(Some("yes"), Some("true")));
    }
}
