//! Import: a directory or a tarball (plain, gzip, zstd, xz) into the model, with file
//! contents written to the object database in parallel.
//!
//! Checks (man page, FAQ): tar members with `..` or absolute paths are refused, as is a
//! member written through a symlink; device files and sockets are skipped with a warning;
//! a tarball whose members all sit under one top directory has that directory stripped.
//! Modes are recorded exactly (checkout raises minimum permissions, see
//! [`super::checkout`]). Runs without the store lock: objects are content-addressed and
//! written atomically, so a killed import leaves at most unreferenced objects.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use gix::objs::Write as _;
use gix::ObjectId;
use rayon::prelude::*;

use super::git::{git_err, GitError};
use super::model::{self, Dir, File, Node, PathError};
use super::pack::{PackBuilder, PACK_MIN_OBJECTS};

/// Files at least this big are streamed into the object database instead of being read
/// into memory first.
const STREAM_THRESHOLD: u64 = 32 << 20;

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("can't {action}: {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: member {member}: {reason}")]
    Member {
        archive: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{archive}: member {member}")]
    MemberPath {
        archive: PathBuf,
        member: String,
        #[source]
        source: PathError,
    },
    #[error("{archive}: can't read archive (truncated or corrupt?) after member {after}")]
    Archive {
        archive: PathBuf,
        after: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not a directory or a tar archive")]
    Unknown(PathBuf),
    #[error(transparent)]
    Git(#[from] GitError),
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ImportError + 'p {
    move |source| ImportError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Warnings collected during an import (skipped members), for the caller to print.
pub type Warnings = Vec<String>;

/// Import a directory or tarball at `path` into a model.
pub fn import_path(
    ts: &gix::ThreadSafeRepository,
    path: &Path,
) -> Result<(Dir, Warnings), ImportError> {
    let md = fs::metadata(path).map_err(io_err("stat", path))?;
    if md.is_dir() {
        import_dir(ts, path)
    } else if md.is_file() {
        import_tar(ts, path)
    } else {
        Err(ImportError::Unknown(path.to_path_buf()))
    }
}

// ---------------------------------------------------------------------------------------
// Directories

struct PendingFile {
    rel: Vec<u8>,
    abs: PathBuf,
    mode: u32,
    size: u64,
    group: Option<u32>,
}

/// Modes changed temporarily to read the user's own 0000 files and directories; put back
/// on drop, deepest first.
struct ModeRestore(Mutex<Vec<(PathBuf, u32)>>);

impl Drop for ModeRestore {
    fn drop(&mut self) {
        let list = self.0.get_mut().map(std::mem::take).unwrap_or_default();
        for (p, mode) in list.into_iter().rev() {
            let _ = fs::set_permissions(&p, fs::Permissions::from_mode(mode));
        }
    }
}

impl ModeRestore {
    fn raise(&self, path: &Path, mode: u32, need: u32) -> Result<(), ImportError> {
        if mode & need == need {
            return Ok(());
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode | need))
            .map_err(io_err("make readable", path))?;
        self.0
            .lock()
            .expect("mode list lock")
            .push((path.to_path_buf(), mode));
        Ok(())
    }
}

fn import_dir(ts: &gix::ThreadSafeRepository, src: &Path) -> Result<(Dir, Warnings), ImportError> {
    let restore = ModeRestore(Mutex::new(Vec::new()));
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    let mut root = Dir::new(0o755);
    let mut inodes: HashMap<(u64, u64), u32> = HashMap::new();
    let top = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
    restore.raise(src, top.mode() & 0o7777, 0o500)?;
    walk(
        src,
        &[],
        &mut root,
        &mut files,
        &mut inodes,
        &mut warnings,
        &restore,
    )?;

    let oids = write_files(ts, &files, &restore)?;
    for (f, oid) in files.iter().zip(oids) {
        root.insert(
            &f.rel,
            Node::File(File {
                mode: f.mode,
                oid,
                size: f.size,
                link_group: f.group,
            }),
        )
        .expect("parents were inserted by the walk");
    }
    Ok((root, warnings))
}

fn walk(
    abs: &Path,
    rel: &[u8],
    dir: &mut Dir,
    files: &mut Vec<PendingFile>,
    inodes: &mut HashMap<(u64, u64), u32>,
    warnings: &mut Warnings,
    restore: &ModeRestore,
) -> Result<(), ImportError> {
    let mut entries: Vec<_> = fs::read_dir(abs)
        .map_err(io_err("read directory", abs))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err("read directory", abs))?;
    entries.sort();
    for name in entries {
        let p = abs.join(&name);
        let md = fs::symlink_metadata(&p).map_err(io_err("stat", &p))?;
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(name.as_bytes());
        let mode = md.mode() & 0o7777;
        let ft = md.file_type();
        if ft.is_dir() {
            restore.raise(&p, mode, 0o500)?;
            let mut sub = Dir::new(mode);
            walk(&p, &r, &mut sub, files, inodes, warnings, restore)?;
            dir.children
                .insert(name.as_bytes().to_vec(), Node::Dir(sub));
        } else if ft.is_symlink() {
            let t = fs::read_link(&p).map_err(io_err("read symlink", &p))?;
            dir.children.insert(
                name.as_bytes().to_vec(),
                Node::Symlink {
                    target: t.as_os_str().as_bytes().to_vec(),
                },
            );
        } else if ft.is_file() {
            let group = if md.nlink() > 1 {
                let next = inodes.len() as u32 + 1;
                Some(*inodes.entry((md.dev(), md.ino())).or_insert(next))
            } else {
                None
            };
            files.push(PendingFile {
                rel: r,
                abs: p,
                mode,
                size: md.len(),
                group,
            });
        } else if ft.is_fifo() {
            dir.children
                .insert(name.as_bytes().to_vec(), Node::Fifo { mode });
        } else if ft.is_socket() {
            warnings.push(format!("skipping socket: {}", p.display()));
        } else {
            warnings.push(format!("skipping device file: {}", p.display()));
        }
    }
    Ok(())
}

/// Read and store files in parallel; hard-linked files are read once per inode.
fn write_files(
    ts: &gix::ThreadSafeRepository,
    files: &[PendingFile],
    restore: &ModeRestore,
) -> Result<Vec<ObjectId>, ImportError> {
    let mut first_of_group: HashMap<u32, usize> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        if let Some(g) = f.group {
            first_of_group.entry(g).or_insert(i);
        }
    }
    let pack = (files.len() >= PACK_MIN_OBJECTS).then(|| PackBuilder::new(&objects_dir(ts)));
    let oids: Vec<Option<ObjectId>> = files
        .par_iter()
        .enumerate()
        .map_init(
            || repo_for_writing(ts),
            |repo, (i, f)| {
                if let Some(g) = f.group {
                    if first_of_group[&g] != i {
                        return Ok(None);
                    }
                }
                restore.raise(&f.abs, f.mode, 0o400)?;
                let mut file = fs::File::open(&f.abs).map_err(io_err("open", &f.abs))?;
                store_reader(repo, &mut file, f.size, pack.as_ref())
                    .map(Some)
                    .map_err(|e| match e {
                        StoreReadError::Io(source) => ImportError::Io {
                            action: "read",
                            path: f.abs.clone(),
                            source,
                        },
                        StoreReadError::Git(g) => ImportError::Git(g),
                    })
            },
        )
        .collect::<Result<_, _>>()?;
    if let Some(p) = pack {
        p.finish().map_err(|e| ImportError::Io {
            action: "write pack",
            path: objects_dir(ts),
            source: e,
        })?;
    }
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        out.push(match (oids[i], f.group) {
            (Some(id), _) => id,
            (None, Some(g)) => oids[first_of_group[&g]].expect("first of group was stored"),
            (None, None) => unreachable!("only later group members are skipped"),
        });
    }
    Ok(out)
}

/// The repository's objects directory.
pub fn objects_dir(ts: &gix::ThreadSafeRepository) -> PathBuf {
    ts.to_thread_local().path().join("objects")
}

/// A thread-local repository handle for bulk writes (no pack refresh on misses).
pub fn repo_for_writing(ts: &gix::ThreadSafeRepository) -> gix::Repository {
    let mut r = ts.to_thread_local();
    r.objects.refresh_never();
    r
}

enum StoreReadError {
    Io(io::Error),
    Git(GitError),
}

/// Store `size` bytes from `reader` as a blob.
fn store_reader(
    repo: &gix::Repository,
    reader: &mut dyn Read,
    size: u64,
    pack: Option<&PackBuilder>,
) -> Result<ObjectId, StoreReadError> {
    if size >= STREAM_THRESHOLD {
        let mut limited = reader.take(size);
        let id = repo
            .objects
            .write_stream(gix::objs::Kind::Blob, size, &mut limited)
            .map_err(|e| StoreReadError::Git(git_err("write blob")(e)))?;
        return Ok(id);
    }
    let mut buf = Vec::with_capacity(size as usize);
    reader
        .take(size)
        .read_to_end(&mut buf)
        .map_err(StoreReadError::Io)?;
    if buf.len() as u64 != size {
        return Err(StoreReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file shrank while reading",
        )));
    }
    if let Some(p) = pack {
        return p.add(repo, &buf).map_err(StoreReadError::Io);
    }
    repo.write_blob(&buf)
        .map(|id| id.detach())
        .map_err(|e| StoreReadError::Git(git_err("write blob")(e)))
}

// ---------------------------------------------------------------------------------------
// Tarballs

/// Open a possibly compressed archive, sniffing the compression from its magic bytes.
pub fn open_archive(path: &Path) -> Result<Box<dyn Read + Send>, ImportError> {
    let f = fs::File::open(path).map_err(io_err("open", path))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let head = r.fill_buf().map_err(io_err("read", path))?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(Pipelined::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(Pipelined::new(
            zstd::stream::read::Decoder::with_buffer(r).map_err(io_err("read zstd", path))?,
        ))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(Pipelined::new(xz2::read::XzDecoder::new_multi_decoder(r)))
    } else if head.starts_with(b"BZh") {
        return Err(ImportError::Member {
            archive: path.into(),
            member: "-".into(),
            reason: "bzip2 archives are not supported (recompress with gzip, zstd or xz)".into(),
        });
    } else {
        Box::new(r)
    })
}

/// Runs a reader (a decompressor) on its own thread, a few chunks ahead of the consumer,
/// so decompression overlaps with parsing and hashing. Errors arrive in order; dropping
/// the consumer stops the thread at its next chunk.
struct Pipelined {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Pipelined {
    const CHUNK: usize = 1 << 20;

    fn new<R: Read + Send + 'static>(mut inner: R) -> Pipelined {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; Self::CHUNK];
            let mut n = 0;
            // Fill the chunk (decoders often return little at a time).
            let (eof, err) = loop {
                match inner.read(&mut buf[n..]) {
                    Ok(0) => break (true, None),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break (false, None);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break (true, Some(e)),
                }
            };
            buf.truncate(n);
            if n > 0 && tx.send(Ok(buf)).is_err() {
                return;
            }
            if let Some(e) = err {
                let _ = tx.send(Err(e));
            }
            if eof {
                return;
            }
        });
        Pipelined {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for Pipelined {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes blobs on the rayon pool while the caller keeps reading the archive. The object
/// id is computed by the caller so the model can be built in member order.
struct BackgroundWriter<'a> {
    ts: &'a gix::ThreadSafeRepository,
    in_flight: AtomicUsize,
    error: Mutex<Option<ImportError>>,
    pack: PackBuilder,
}

const IN_FLIGHT_LIMIT: usize = 256 << 20;

impl<'a> BackgroundWriter<'a> {
    fn pack_dir(&self) -> PathBuf {
        objects_dir(self.ts).join("pack")
    }

    fn submit<'s>(&'s self, scope: &rayon::Scope<'s>, data: Vec<u8>) -> ObjectId {
        let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data)
            .expect("sha1 hashing does not fail");
        while self.in_flight.load(Ordering::Acquire) > IN_FLIGHT_LIMIT {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.in_flight.fetch_add(data.len(), Ordering::AcqRel);
        scope.spawn(move |_| {
            let repo = repo_for_writing(self.ts);
            let len = data.len();
            if let Err(e) = self.pack.add_known(&repo, id, &data) {
                *self.error.lock().expect("error slot") = Some(ImportError::Io {
                    action: "write pack",
                    path: self.pack_dir(),
                    source: e,
                });
            }
            self.in_flight.fetch_sub(len, Ordering::AcqRel);
        });
        id
    }
}

fn import_tar(ts: &gix::ThreadSafeRepository, path: &Path) -> Result<(Dir, Warnings), ImportError> {
    let reader = open_archive(path)?;
    let mut root = Dir::new(0o755);
    let mut next_group = 1u32;
    let mut shape = TarShape::default();
    let warnings = apply_tar(
        ts,
        reader,
        path,
        &mut root,
        None,
        &mut next_group,
        None,
        Some(&mut shape),
    )?;
    // A single top directory is the image root (FAQ: tarballs with one top directory),
    // unless the archive has a member for the root itself.
    if !shape.saw_root && shape.single_top && root.children.len() == 1 {
        if let Some((_, Node::Dir(_))) = root.children.iter().next() {
            let (_, node) = root.children.pop_first().expect("one child");
            if let Node::Dir(d) = node {
                root = d;
            }
        }
    }
    Ok((root, warnings))
}

/// The top-level shape of a tar stream, for deciding whether to strip a top directory.
#[derive(Debug, Default)]
pub struct TarShape {
    /// A member names the root itself (`./`).
    pub saw_root: bool,
    /// All members, skipped ones included, share one first path component.
    pub single_top: bool,
}

/// Whiteouts found in an image layer (OCI image spec, "Whiteouts"): paths deleted from
/// the layers below, and directories made opaque (their lower contents removed).
#[derive(Debug, Default)]
pub struct Whiteouts {
    pub deleted: Vec<Vec<u8>>,
    pub opaque: Vec<Vec<u8>>,
}

/// Apply one image layer (a possibly compressed tar file) onto `base`: the layer's
/// whiteouts delete from `base`, then its members replace what `base` has at the same
/// paths (directories merge). Hard links may point into `base`. Link groups are numbered
/// from `next_group`, which is advanced. Members are checked as for an import.
pub fn apply_layer(
    ts: &gix::ThreadSafeRepository,
    path: &Path,
    base: &mut Dir,
    next_group: &mut u32,
) -> Result<Warnings, ImportError> {
    let reader = open_archive(path)?;
    let mut layer = Dir::new(base.mode);
    let mut wh = Whiteouts::default();
    let warnings = apply_tar(
        ts,
        reader,
        path,
        &mut layer,
        Some(base),
        next_group,
        Some(&mut wh),
        None,
    )?;
    for d in &wh.opaque {
        if d.is_empty() {
            base.children.clear();
        } else if let Some(Node::Dir(dir)) = get_mut(base, d) {
            dir.children.clear();
        }
    }
    for p in &wh.deleted {
        base.remove(p).map_err(|source| ImportError::MemberPath {
            archive: path.to_path_buf(),
            member: model::show(p),
            source,
        })?;
    }
    overlay(base, layer);
    Ok(warnings)
}

fn get_mut<'d>(dir: &'d mut Dir, path: &[u8]) -> Option<&'d mut Node> {
    let comps = model::components(path).ok()?;
    let mut d = dir;
    for c in &comps[..comps.len() - 1] {
        d = match d.children.get_mut(*c) {
            Some(Node::Dir(x)) => x,
            _ => return None,
        };
    }
    d.children.get_mut(comps[comps.len() - 1])
}

/// Put `top` over `base`: directories merge (taking `top`'s mode), anything else replaces.
fn overlay(base: &mut Dir, top: Dir) {
    base.mode = top.mode;
    for (name, node) in top.children {
        match (base.children.get_mut(&name), node) {
            (Some(Node::Dir(b)), Node::Dir(t)) => overlay(b, t),
            (_, node) => {
                base.children.insert(name, node);
            }
        }
    }
}

/// Apply the members of one tar stream onto `root`, in order. With `whiteouts`, members
/// named `.wh.NAME` are recorded there instead of stored. Hard-link targets are looked up
/// in `root`, then in `lower`.
pub fn apply_tar(
    ts: &gix::ThreadSafeRepository,
    reader: Box<dyn Read + Send>,
    archive: &Path,
    root: &mut Dir,
    lower: Option<&Dir>,
    next_group: &mut u32,
    mut whiteouts: Option<&mut Whiteouts>,
    shape: Option<&mut TarShape>,
) -> Result<Warnings, ImportError> {
    let writer = BackgroundWriter {
        ts,
        in_flight: AtomicUsize::new(0),
        error: Mutex::new(None),
        pack: PackBuilder::new(&objects_dir(ts)),
    };
    let repo = repo_for_writing(ts);
    let mut warnings = Vec::new();
    let mut group_of: HashMap<Vec<u8>, u32> = HashMap::new();
    // A member naming the root itself (`./`, as `tar -C DIR -cf X .` writes) says the
    // archive's top level is the image root: nothing is stripped then.
    let mut saw_root = false;
    // First components of all members, skipped ones included: a skipped device file at
    // the top level still means the archive has more than one top entry.
    let mut tops: std::collections::BTreeSet<Vec<u8>> = Default::default();
    let archive_path = archive.to_path_buf();
    let result: Result<(), ImportError> = rayon::in_place_scope(|scope| {
        let mut ar = tar::Archive::new(reader);
        let mut last = String::from("(none: first member)");
        let entries = ar.entries().map_err(|source| ImportError::Archive {
            archive: archive_path.clone(),
            after: last.clone(),
            source,
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| ImportError::Archive {
                archive: archive_path.clone(),
                after: last.clone(),
                source,
            })?;
            let raw = entry.path_bytes().into_owned();
            let member = model::show(&raw);
            let bad = |reason: &str| ImportError::Member {
                archive: archive_path.clone(),
                member: member.clone(),
                reason: reason.to_string(),
            };
            let mpath = |source| ImportError::MemberPath {
                archive: archive_path.clone(),
                member: member.clone(),
                source,
            };
            let mode = entry
                .header()
                .mode()
                .map_err(|_| bad("invalid mode field"))?
                & 0o7777;
            let kind = entry.header().entry_type();
            let comps = match model::components(&raw) {
                Ok(c) => c,
                Err(PathError::Empty) if kind.is_dir() => {
                    root.mode = mode;
                    saw_root = true;
                    last = member;
                    continue;
                }
                Err(e) => return Err(mpath(e)),
            };
            let rel = comps.join(&b'/');
            if tops.len() < 2 {
                tops.insert(comps[0].to_vec());
            }
            if let Some(wh) = whiteouts.as_deref_mut() {
                let name = comps[comps.len() - 1];
                if let Some(target) = name.strip_prefix(b".wh.") {
                    let dir = &comps[..comps.len() - 1];
                    if target == b".wh..opq" {
                        wh.opaque.push(dir.join(&b'/'));
                    } else if target.is_empty() || target == b"." || target == b".." {
                        return Err(bad("invalid whiteout"));
                    } else {
                        let mut p = dir.join(&b'/');
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(target);
                        wh.deleted.push(p);
                    }
                    last = member;
                    continue;
                }
            }
            use tar::EntryType as T;
            match kind {
                T::Regular | T::Continuous | T::GNUSparse => {
                    let size = entry.size();
                    let oid = if size >= STREAM_THRESHOLD {
                        store_reader(&repo, &mut entry, size, None).map_err(|e| match e {
                            StoreReadError::Io(source) => ImportError::Archive {
                                archive: archive_path.clone(),
                                after: member.clone(),
                                source,
                            },
                            StoreReadError::Git(g) => ImportError::Git(g),
                        })?
                    } else {
                        let mut data = Vec::with_capacity(size as usize);
                        entry
                            .read_to_end(&mut data)
                            .map_err(|source| ImportError::Archive {
                                archive: archive_path.clone(),
                                after: member.clone(),
                                source,
                            })?;
                        if data.len() as u64 != size {
                            return Err(bad("truncated data"));
                        }
                        writer.submit(scope, data)
                    };
                    group_of.remove(&rel);
                    root.insert(
                        &rel,
                        Node::File(File {
                            mode,
                            oid,
                            size,
                            link_group: None,
                        }),
                    )
                    .map_err(mpath)?;
                }
                T::Directory => root
                    .insert(&rel, Node::Dir(Dir::new(mode)))
                    .map_err(mpath)?,
                T::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| bad("symlink without target"))?
                        .into_owned();
                    root.insert(&rel, Node::Symlink { target }).map_err(mpath)?;
                }
                T::Link => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| bad("hard link without target"))?
                        .into_owned();
                    let tcomps = model::components(&target).map_err(|e| {
                        bad(&format!("hard link target {}: {e}", model::show(&target)))
                    })?;
                    let trel = tcomps.join(&b'/');
                    let g = match group_of.get(&trel) {
                        Some(g) => *g,
                        None => {
                            let g = *next_group;
                            *next_group += 1;
                            g
                        }
                    };
                    let found = root.get(&trel).or_else(|| lower.and_then(|l| l.get(&trel)));
                    let file = match found {
                        Some(Node::File(f)) => File {
                            link_group: Some(g),
                            ..f.clone()
                        },
                        _ => {
                            return Err(bad(&format!(
                                "hard link target is not an earlier regular file: {}",
                                model::show(&target)
                            )))
                        }
                    };
                    group_of.insert(trel.clone(), g);
                    group_of.insert(rel.clone(), g);
                    root.insert(&trel, Node::File(file.clone()))
                        .map_err(mpath)?;
                    root.insert(&rel, Node::File(file)).map_err(mpath)?;
                }
                T::Fifo => root.insert(&rel, Node::Fifo { mode }).map_err(mpath)?,
                T::Char | T::Block => warnings.push(format!(
                    "{}: skipping device file member {member}",
                    archive_path.display()
                )),
                T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
                other => warnings.push(format!(
                    "{}: skipping member {member} of unsupported type {other:?}",
                    archive_path.display()
                )),
            }
            last = member;
        }
        Ok(())
    });
    result?;
    let pack_dir = writer.pack_dir();
    if let Some(e) = writer.error.into_inner().expect("error slot") {
        return Err(e);
    }
    writer.pack.finish().map_err(|e| ImportError::Io {
        action: "write pack",
        path: pack_dir,
        source: e,
    })?;
    if let Some(shape) = shape {
        shape.saw_root = saw_root;
        shape.single_top = tops.len() == 1;
    }
    Ok(warnings)
}
