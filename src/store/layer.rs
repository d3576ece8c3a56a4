//! Layers: overlayfs upper directories kept per commit, and views built from them.
//!
//! A build step that changes files runs on an overlay whose lower directories show the
//! parent state and whose upper directory receives the changes. [`apply_upper`] folds an
//! upper directory into the parent's model (only what changed is read and hashed), and the
//! upper directory is then kept as `layers/<commit>`. [`view`] gives the lower directories
//! that show a commit's tree: the nearest ancestor with a full checkout plus the layers
//! above it, or a fresh checkout when a layer is missing. Whiteouts follow overlayfs:
//! a character device 0/0 (or a file with the `user.overlay.whiteout` xattr) deletes a
//! path; a directory with `user.overlay.opaque=y` hides what was below it.
//!
//! Every entry of an upper directory brings its modification time (what the step's
//! commands set; overlayfs keeps a copied-up directory's time until its contents change),
//! clamped to `$SOURCE_DATE_EPOCH` when the build has one (reproducible-builds.org).

use crate::error::{IoError, IoResultExt};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gix::ObjectId;
use rayon::prelude::*;

use super::import::{objects_dir, repo_for_writing};
use super::model::{self, Dir, File, Node};
use super::pack::{write_loose_blob, PackBuilder, PACK_MIN_OBJECTS, SAMPLE_MIN};
use super::StoreError;

/// What a layer changed, for history and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub written: usize,
    pub removed: usize,
}

/// Whether `path` (not followed if a symlink) has extended attribute `name` equal to `want`.
fn xattr_is(path: &Path, name: &str, want: &[u8]) -> bool {
    matches!(xattr::get(path, name), Ok(Some(v)) if v == want)
}

fn is_whiteout(path: &Path, md: &fs::Metadata) -> bool {
    (md.file_type().is_char_device() && md.rdev() == 0)
        || (md.file_type().is_file()
            && md.len() == 0
            && xattr_is(path, "user.overlay.whiteout", b""))
}

struct Job {
    rel: Vec<u8>,
    abs: PathBuf,
    mode: u32,
    inode: Option<(u64, u64)>,
    time: model::Mtime,
    /// Whether the file must be given `time` (see [`Walk::time`]): done by the parallel
    /// jobs, not the walk.
    set_time: bool,
}

/// Fold the upper directory `upper` into `model`, with times later than `clamp` seconds
/// (`$SOURCE_DATE_EPOCH`) set back to it. Returns what changed and warnings.
pub fn apply_upper(
    ts: &gix::ThreadSafeRepository,
    model: &mut Dir,
    upper: &Path,
    clamp: Option<i64>,
    xattrs: model::XattrPolicy,
) -> Result<(Changes, Vec<String>), StoreError> {
    let mut jobs = Vec::new();
    let mut changes = Changes::default();
    let mut warnings = Vec::new();
    let mut restore = Vec::new();
    let mut w = Walk {
        jobs: &mut jobs,
        changes: &mut changes,
        warnings: &mut warnings,
        clamp,
        xattrs,
        restore: &mut restore,
    };
    let top = fs::symlink_metadata(upper).at("stat", upper)?;
    let root_time = w.time(upper, &top)?;
    model.times.set(b"", root_time);
    let walked = walk_upper(upper, &[], model, &mut w);
    let stored = walked.and_then(|()| store_jobs(ts, &jobs));
    // Give back the modes opened for reading (deepest first), also after an error.
    let mut restored = Ok(());
    for (path, mode) in restore.iter().rev() {
        let r = fs::set_permissions(path, fs::Permissions::from_mode(*mode))
            .at("restore mode of", path);
        restored = restored.and(r);
    }
    let oids = stored?;
    restored?;
    // Hard links within the layer: one blob per inode, one group per inode.
    let mut group_of: HashMap<(u64, u64), u32> = HashMap::new();
    let mut next_group = max_group(model) + 1;
    for j in &jobs {
        if let Some(ino) = j.inode {
            group_of.entry(ino).or_insert_with(|| {
                next_group += 1;
                next_group
            });
        }
    }
    for (j, oid) in jobs.iter().zip(oids) {
        let link_group = j.inode.map(|i| group_of[&i]).filter(|_| j.inode.is_some());
        model
            .insert(
                &j.rel,
                Node::File(File {
                    mode: j.mode,
                    oid,
                    size: 0,
                    link_group,
                }),
            )
            .map_err(|e| {
                StoreError::Io(IoError {
                    action: "apply layer",
                    path: j.abs.clone(),
                    source: io::Error::other(e.to_string()),
                })
            })?;
        model.times.set(&j.rel, j.time);
    }
    // A group with one member left is no group.
    normalize_groups(model);
    Ok((changes, warnings))
}

/// Write the blobs of the files `jobs` names, in parallel; ids in the order of `jobs`.
fn store_jobs(ts: &gix::ThreadSafeRepository, jobs: &[Job]) -> Result<Vec<ObjectId>, StoreError> {
    let pack = (jobs.len() >= PACK_MIN_OBJECTS).then(|| PackBuilder::new(&objects_dir(ts)));
    let oids: Vec<ObjectId> = jobs
        .par_iter()
        .map_init(
            || repo_for_writing(ts),
            |repo, j| -> Result<ObjectId, StoreError> {
                let mut f = fs::File::open(&j.abs).at("open", &j.abs)?;
                let size = f.metadata().at("stat", &j.abs)?.len();
                let big = size >= super::pack::STREAM_FILE_MIN;
                // A big file is streamed into a loose object, never held whole.
                let data = if big {
                    Vec::new()
                } else {
                    let mut d = Vec::with_capacity(size as usize);
                    std::io::Read::read_to_end(&mut f, &mut d).at("read", &j.abs)?;
                    d
                };
                if j.set_time {
                    super::checkout::set_time(&j.abs, j.time).at("set time of", &j.abs)?;
                }
                if big {
                    return Ok(super::pack::write_loose_file(repo, &mut f, size)
                        .at("write object of", &j.abs)?);
                }
                match &pack {
                    Some(p) => Ok(p.add(repo, &data).at("store", &j.abs)?),
                    // gix's loose writer compresses all it writes: big files go through
                    // ours, which stores incompressible data as it is.
                    None if data.len() >= SAMPLE_MIN => {
                        Ok(write_loose_blob(repo, &data).at("write object of", &j.abs)?)
                    }
                    None => Ok(repo
                        .write_blob(&data)
                        .map_err(super::git::git_err("write blob"))?
                        .detach()),
                }
            },
        )
        .collect::<Result<_, _>>()?;
    if let Some(p) = pack {
        p.finish().at("write pack", objects_dir(ts).join("pack"))?;
    }
    Ok(oids)
}

fn max_group(model: &Dir) -> u32 {
    let mut m = 0;
    model.walk(&mut |_, n| {
        if let Node::File(File {
            link_group: Some(g),
            ..
        }) = n
        {
            m = m.max(*g);
        }
    });
    m
}

fn normalize_groups(model: &mut Dir) {
    let mut count: HashMap<u32, usize> = HashMap::new();
    model.walk(&mut |_, n| {
        if let Node::File(File {
            link_group: Some(g),
            ..
        }) = n
        {
            *count.entry(*g).or_default() += 1;
        }
    });
    fn go(d: &mut Dir, count: &HashMap<u32, usize>) {
        for n in d.children.values_mut() {
            match n {
                Node::File(f) if f.link_group.is_some_and(|g| count[&g] < 2) => f.link_group = None,
                Node::Dir(sub) => go(sub, count),
                _ => {}
            }
        }
    }
    if count.values().any(|c| *c < 2) {
        go(model, &count);
    }
}

/// What walking an upper directory collects.
struct Walk<'a> {
    jobs: &'a mut Vec<Job>,
    changes: &'a mut Changes,
    warnings: &'a mut Vec<String>,
    clamp: Option<i64>,
    xattrs: model::XattrPolicy,
    /// Paths whose owner permissions were widened to read them, with their modes.
    restore: &'a mut Vec<(PathBuf, u32)>,
}

impl Walk<'_> {
    /// Make `path` (with mode `mode`) readable by its owner (and searchable, for a
    /// directory) until the walk ends: a RUN may leave modes like 0000 (RHEL's
    /// /etc/shadow), and the layer belongs to the building user.
    fn open_up(&mut self, path: &Path, mode: u32, dir: bool) -> Result<(), StoreError> {
        let need = if dir { 0o500 } else { 0o400 };
        if mode & need != need {
            fs::set_permissions(path, fs::Permissions::from_mode(mode | need))
                .at("make readable", path)?;
            self.restore.push((path.to_path_buf(), mode));
        }
        Ok(())
    }

    /// The time of `path` (with metadata `md`) in whole seconds, clamped; a time changed
    /// so is set on the file too, since the upper directory is kept as the commit's layer
    /// (`ch-run NAME` and later RUNs see it).
    fn time(&self, path: &Path, md: &fs::Metadata) -> Result<model::Mtime, StoreError> {
        let (c, set) = self.clamped(md);
        if set {
            super::checkout::set_time(path, c).at("set time of", path)?;
        }
        Ok(c)
    }

    /// [`Walk::time`] without setting it: the time, and whether the file must be given it.
    fn clamped(&self, md: &fs::Metadata) -> (model::Mtime, bool) {
        let t = model::Mtime::of(md);
        let c = match self.clamp {
            Some(max) => t.clamped(max),
            None => t,
        };
        (c, c != t || md.mtime_nsec() != 0)
    }
}

fn walk_upper(abs: &Path, rel: &[u8], model: &mut Dir, w: &mut Walk) -> Result<(), StoreError> {
    let dir_mode = fs::symlink_metadata(abs).at("stat", abs)?.mode() & 0o7777;
    w.open_up(abs, dir_mode, true)?;
    let names = model::read_dir_sorted(abs).at("read directory", abs)?;
    for name in names {
        let p = abs.join(&name);
        let md = fs::symlink_metadata(&p).at("stat", &p)?;
        let r = model::join_rel(rel, &name);
        let mode = md.mode() & 0o7777;
        let ft = md.file_type();
        // A regular file's time is set by the job that reads it (in parallel).
        let (time, set_time) = if is_whiteout(&p, &md) {
            (model::Mtime::of(&md), false)
        } else if ft.is_file() {
            w.clamped(&md)
        } else {
            (w.time(&p, &md)?, false)
        };
        if w.xattrs.record() && (ft.is_file() || ft.is_dir()) && !is_whiteout(&p, &md) {
            // overlayfs keeps its own bookkeeping in user.overlay.*: not image content.
            let x: Vec<_> = model::read_xattrs(&p)
                .into_iter()
                .filter(|(n, _)| !n.starts_with(b"user.overlay."))
                .collect();
            if x.is_empty() {
                model.xattrs.remove(&r);
            } else {
                model.xattrs.insert(r.clone(), x);
            }
        }
        let bad = |e: super::model::PathError| {
            StoreError::Io(IoError {
                action: "apply layer",
                path: p.clone(),
                source: io::Error::other(e.to_string()),
            })
        };
        if is_whiteout(&p, &md) {
            if model.remove(&r).map_err(bad)? {
                w.changes.removed += 1;
            }
        } else if ft.is_dir() {
            let opaque = xattr_is(&p, "user.overlay.opaque", b"y");
            let exists_as_dir = matches!(model.get(&r), Some(Node::Dir(_)));
            if opaque || !exists_as_dir {
                if exists_as_dir {
                    w.changes.removed += 1;
                }
                model.remove(&r).map_err(bad)?;
            }
            model.insert(&r, Node::Dir(Dir::new(mode))).map_err(bad)?;
            model.times.set(&r, time);
            walk_upper(&p, &r, model, w)?;
        } else if ft.is_file() {
            w.changes.written += 1;
            // Drop what was there first, so a directory replaced by a file goes away.
            if matches!(model.get(&r), Some(Node::Dir(_))) {
                model.remove(&r).map_err(bad)?;
            }
            let inode = (md.nlink() > 1).then(|| (md.dev(), md.ino()));
            w.open_up(&p, mode, false)?;
            w.jobs.push(Job {
                rel: r,
                abs: p,
                mode,
                inode,
                time,
                set_time,
            });
        } else if ft.is_symlink() {
            w.changes.written += 1;
            let t = fs::read_link(&p).at("read symlink", &p)?;
            model.remove(&r).map_err(bad)?;
            model
                .insert(
                    &r,
                    Node::Symlink {
                        target: t.as_os_str().as_bytes().to_vec(),
                    },
                )
                .map_err(bad)?;
            model.times.set(&r, time);
        } else if ft.is_fifo() {
            w.changes.written += 1;
            model.remove(&r).map_err(bad)?;
            model.insert(&r, Node::Fifo { mode }).map_err(bad)?;
            model.times.set(&r, time);
        } else {
            w.warnings.push(format!(
                "ignoring device file or socket created in image: /{}",
                String::from_utf8_lossy(&r)
            ));
            // Out of the layer too, or the views built on it (later RUNs, `ch-run NAME`)
            // would show what the commit does not hold.
            fs::remove_file(&p).at("remove", &p)?;
        }
    }
    Ok(())
}

/// First line of a delta layer's bases file.
const BASES_HEADER: &str = "grove-layer-bases 1";

/// Most base layers a delta layer may have: each rebuild over a delta layer adds one, and
/// a longer chain costs more lower directories than a full layer costs files.
pub const MAX_DELTA_BASES: usize = 4;

/// `LAYERS/COMMIT.base`: the bases file of a delta layer (docs/store-format.md, "Delta
/// layers"): the layers below it, top first, that with it show what the step changed
/// over its parent.
pub fn bases_file(layers: &Path, commit: ObjectId) -> PathBuf {
    layers.join(format!("{commit}.base"))
}

/// A bases file that can't be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("unusable layer bases file {}", path.display())]
pub struct BasesError {
    path: PathBuf,
}

/// The base layers of `commit`'s layer, top first: empty for a full layer (no bases file).
pub fn read_bases(layers: &Path, commit: ObjectId) -> Result<Vec<ObjectId>, BasesError> {
    let path = bases_file(layers, commit);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(_) => return Err(BasesError { path }),
    };
    let mut lines = text.lines();
    if lines.next() != Some(BASES_HEADER) {
        return Err(BasesError { path });
    }
    let bases = lines
        .map(|l| ObjectId::from_hex(l.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| BasesError { path: path.clone() })?;
    if bases.is_empty() || bases.len() > MAX_DELTA_BASES {
        return Err(BasesError { path });
    }
    Ok(bases)
}

/// The bases file's bytes.
pub fn bases_text(bases: &[ObjectId]) -> String {
    let mut s = format!("{BASES_HEADER}\n");
    for b in bases {
        s.push_str(&format!("{b}\n"));
    }
    s
}

/// Most bytes of lower directory paths one view may have. mount(2) takes at most one page
/// of overlay options (overlayfs(5)), and the upper and work directories and the flags
/// need room too; a longer chain of layers is served by a checkout instead.
pub const MAX_LOWER_BYTES: usize = 3072;

/// Most bytes of overlay options ch-run gives mount(2) (`run::setup` refuses more).
const OPTIONS_MAX: usize = 4000;

/// Bytes the lower directories of a view may take in a storage directory whose path is
/// `storage_len` bytes long: [`MAX_LOWER_BYTES`], less when a RUN's upper and work
/// directories (`STORAGE/tmp/run.PID.N/upper`, `.../work`) would not fit beside them.
fn lower_budget(storage_len: usize) -> usize {
    let upper_and_work = 2 * (storage_len + 64) + 64;
    MAX_LOWER_BYTES.min(OPTIONS_MAX.saturating_sub(upper_and_work))
}

/// What the store holds of a commit's files, as lower directories of one overlay mount.
#[derive(Debug, PartialEq, Eq)]
pub enum View {
    /// Lower directories (top first) whose union shows the commit's files.
    Ready(Vec<PathBuf>),
    /// The union of `lowers` (top first) over a checkout of `base`, which is missing,
    /// shows the commit's files: `base` is the first commit below the kept layers whose
    /// files no layer or checkout holds. `lowers` is empty when only a checkout of the
    /// commit itself will do.
    Base {
        lowers: Vec<PathBuf>,
        base: ObjectId,
    },
}

/// Which directories show `commit`'s files (top first), without checking anything out:
/// the kept layers down to the nearest checkout, or down to the first commit whose files
/// are in neither, which then needs a checkout ([`View::Base`]). `parent_of(c)` gives
/// (parent, whether c's files equal the parent's). The lower directories must fit in one
/// overlay mount ([`MAX_LOWER_BYTES`], less in a storage directory with a long path:
/// `lower_budget`); when they would not, the view is a checkout of `commit` alone.
pub fn view(
    checkouts: &Path,
    layers: &Path,
    commit: ObjectId,
    mut parent_of: impl FnMut(ObjectId) -> Result<Option<(ObjectId, bool)>, StoreError>,
) -> Result<View, StoreError> {
    let whole = View::Base {
        lowers: Vec::new(),
        base: commit,
    };
    let budget = lower_budget(checkouts.parent().map_or(0, |s| s.as_os_str().len()));
    let mut lowers = Vec::new();
    let mut bytes = 0;
    let mut c = commit;
    loop {
        let co = checkouts.join(c.to_string());
        bytes += co.as_os_str().len() + 1;
        // The checkout of `c`, there or to be made, ends the view.
        let fits = bytes <= budget;
        if co.is_dir() {
            if !fits {
                return Ok(whole);
            }
            lowers.push(co);
            return Ok(View::Ready(lowers));
        }
        bytes -= co.as_os_str().len() + 1;
        let below_here = |lowers: Vec<PathBuf>| {
            if fits {
                View::Base { lowers, base: c }
            } else {
                View::Base {
                    lowers: Vec::new(),
                    base: commit,
                }
            }
        };
        let layer = layers.join(c.to_string());
        let Some((p, same_files)) = parent_of(c)? else {
            return Ok(below_here(lowers));
        };
        if layer.is_dir() {
            // A delta layer: its base layers follow it, then the parent's view. Without
            // all of them the delta alone would show wrong files: `c` is checked out.
            let Ok(bases) = read_bases(layers, c) else {
                return Ok(below_here(lowers));
            };
            let dirs: Vec<PathBuf> = std::iter::once(layer)
                .chain(bases.iter().map(|b| layers.join(b.to_string())))
                .collect();
            if !dirs.iter().all(|d| d.is_dir()) {
                return Ok(below_here(lowers));
            }
            for d in dirs {
                bytes += d.as_os_str().len() + 1;
                lowers.push(d);
            }
            if bytes > budget {
                return Ok(whole);
            }
        } else if !same_files {
            return Ok(below_here(lowers));
        }
        c = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(i: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[i; 20])
    }

    /// A chain of `n` commits, `oid(n)` on top, each with a layer, on a checked-out base.
    fn chain(n: u8) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let (co, ly) = (t.path().join("checkouts"), t.path().join("layers"));
        fs::create_dir_all(co.join(oid(0).to_string())).expect("mkdir");
        for i in 1..=n {
            fs::create_dir_all(ly.join(oid(i).to_string())).expect("mkdir");
        }
        (t, co, ly)
    }

    fn parent(c: ObjectId) -> Result<Option<(ObjectId, bool)>, StoreError> {
        let i = c.as_bytes()[0];
        Ok((i > 0).then(|| (oid(i - 1), false)))
    }

    #[test]
    fn a_socket_in_the_upper_directory_is_left_out_of_the_commit_and_the_layer() {
        let t = tempfile::tempdir().expect("tempdir");
        let repo = t.path().join("repo.git");
        let ts = gix::init_bare(&repo).expect("init").into_sync();
        let upper = t.path().join("upper");
        fs::create_dir(&upper).expect("mkdir");
        fs::write(upper.join("kept"), "x\n").expect("write");
        let _sock = std::os::unix::net::UnixListener::bind(upper.join("sock")).expect("bind");
        let mut model = Dir::new(0o755);
        let (_, warnings) =
            apply_upper(&ts, &mut model, &upper, None, model::XattrPolicy::default())
                .expect("apply");
        assert!(model.get(b"kept").is_some());
        assert!(model.get(b"sock").is_none());
        assert_eq!(
            warnings,
            ["ignoring device file or socket created in image: /sock"]
        );
        assert!(
            !upper.join("sock").exists(),
            "the socket stays in the layer"
        );
        assert!(upper.join("kept").exists());
    }

    #[test]
    fn view_puts_a_delta_layers_bases_below_it_and_needs_them_all() {
        let (_t, co, ly) = chain(3);
        // Layer 3 was made over layer 9 (a sibling's) and its base 8.
        for b in [9, 8] {
            fs::create_dir_all(ly.join(oid(b).to_string())).expect("mkdir");
        }
        fs::write(bases_file(&ly, oid(3)), bases_text(&[oid(9), oid(8)])).expect("write");
        let View::Ready(v) = view(&co, &ly, oid(3), parent).unwrap() else {
            panic!("no view")
        };
        let names: Vec<_> = v
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        let want: Vec<_> = [3, 9, 8, 2, 1]
            .iter()
            .map(|i| std::ffi::OsString::from(oid(*i).to_string()))
            .chain([std::ffi::OsString::from(oid(0).to_string())])
            .collect();
        assert_eq!(names, want);
        // A missing base: a checkout of the commit, never the delta alone.
        let whole = View::Base {
            lowers: Vec::new(),
            base: oid(3),
        };
        fs::remove_dir(ly.join(oid(8).to_string())).expect("rmdir");
        assert_eq!(view(&co, &ly, oid(3), parent).unwrap(), whole);
        // An unreadable bases file: the same.
        fs::write(bases_file(&ly, oid(3)), "junk\n").expect("write");
        assert_eq!(view(&co, &ly, oid(3), parent).unwrap(), whole);
    }

    #[test]
    fn view_stacks_layers_on_the_nearest_checkout() {
        let (_t, co, ly) = chain(3);
        let View::Ready(v) = view(&co, &ly, oid(3), parent).unwrap() else {
            panic!("no view")
        };
        assert_eq!(v.len(), 4);
        assert_eq!(v[3], co.join(oid(0).to_string()));
    }

    // After `build-cache --gc --keep-storage` removed the base image's checkout, a run
    // checked out the whole image (the kept layers' files written again) instead of the
    // base alone under them.
    #[test]
    fn view_without_its_bottom_checkout_needs_only_that_checkout() {
        let (_t, co, ly) = chain(3);
        fs::remove_dir(co.join(oid(0).to_string())).expect("rmdir");
        let layers: Vec<_> = [3, 2, 1]
            .iter()
            .map(|i| ly.join(oid(*i).to_string()))
            .collect();
        assert_eq!(
            view(&co, &ly, oid(3), parent).unwrap(),
            View::Base {
                lowers: layers.clone(),
                base: oid(0)
            }
        );
        // A layer gone in the middle: the layers above it over a checkout of its commit.
        fs::remove_dir(&layers[1]).expect("rmdir");
        assert_eq!(
            view(&co, &ly, oid(3), parent).unwrap(),
            View::Base {
                lowers: layers[..1].to_vec(),
                base: oid(2)
            }
        );
        // A commit with the same files as its parent needs no layer of its own.
        let same = |c: ObjectId| -> Result<Option<(ObjectId, bool)>, StoreError> {
            let i = c.as_bytes()[0];
            Ok((i > 0).then(|| (oid(i - 1), i == 2)))
        };
        assert_eq!(
            view(&co, &ly, oid(3), same).unwrap(),
            View::Base {
                lowers: [&layers[0], &layers[2]].map(|p| p.clone()).to_vec(),
                base: oid(0)
            }
        );
    }

    // In a storage directory with a long path, a view within MAX_LOWER_BYTES could still
    // leave no room for a RUN's upper and work directories (found by the review helper:
    // ch-run's "can't overlay: too many layers" with a path of 400 bytes or more).
    #[test]
    fn view_leaves_room_for_the_upper_and_work_directories() {
        let t = tempfile::tempdir().expect("tempdir");
        let long = "d".repeat(200);
        let storage = t
            .path()
            .join(&long)
            .join(&long)
            .join(&long)
            .join(&long[..80]);
        let (co, ly) = (storage.join("checkouts"), storage.join("layers"));
        fs::create_dir_all(co.join(oid(0).to_string())).expect("mkdir");
        for i in 1..=3 {
            fs::create_dir_all(ly.join(oid(i).to_string())).expect("mkdir");
        }
        let lowers: usize = (1..=3)
            .map(|i| ly.join(oid(i).to_string()).as_os_str().len() + 1)
            .sum::<usize>()
            + co.join(oid(0).to_string()).as_os_str().len()
            + 1;
        let room = OPTIONS_MAX - 2 * (storage.as_os_str().len() + 64) - 64;
        assert!(
            room < lowers && lowers <= MAX_LOWER_BYTES,
            "{room} {lowers}"
        );
        assert_eq!(
            view(&co, &ly, oid(3), parent).unwrap(),
            View::Base {
                lowers: Vec::new(),
                base: oid(3)
            }
        );
        assert!(matches!(view(&co, &ly, oid(2), parent).unwrap(), View::Ready(v) if v.len() == 3));
    }

    // Regression: a build of more than ~40 steps failed with ch-run's "can't overlay: too
    // many layers", because the view handed it more lower directories than fit in the
    // mount options. Such a view must fall back to a checkout.
    #[test]
    fn view_too_long_for_one_overlay_mount_needs_a_checkout() {
        let (_t, co, ly) = chain(120);
        assert_eq!(
            view(&co, &ly, oid(120), parent).unwrap(),
            View::Base {
                lowers: Vec::new(),
                base: oid(120)
            }
        );
        let View::Ready(v) = view(&co, &ly, oid(10), parent).unwrap() else {
            panic!("no short view")
        };
        assert_eq!(v.len(), 11);
        // Without the bottom checkout, the same: the whole commit when the layers over
        // the base's checkout would not fit, the base alone when they would.
        fs::remove_dir(co.join(oid(0).to_string())).expect("rmdir");
        assert_eq!(
            view(&co, &ly, oid(120), parent).unwrap(),
            View::Base {
                lowers: Vec::new(),
                base: oid(120)
            }
        );
        assert!(matches!(
            view(&co, &ly, oid(10), parent).unwrap(),
            View::Base { lowers, base } if lowers.len() == 10 && base == oid(0)
        ));
    }
}
