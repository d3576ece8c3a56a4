//! Writing many new blobs as one pack file (with its version-2 index) instead of one
//! loose object each: an import of 50,000 files is otherwise bound by creating and
//! renaming 50,000 files.
//!
//! Objects are compressed in parallel by the callers' threads ([`PackBuilder::add`]);
//! [`PackBuilder::finish`] writes `pack-<sha>.pack` and `.idx` under a temporary name and
//! renames them into `objects/pack/`, the index last, so a reader sees a whole pack or
//! none. Entries are whole objects (no deltas); `git gc` may repack later. Both git and
//! gix read the result.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gix::ObjectId;

/// Callers use a pack when they expect at least this many new objects.
pub const PACK_MIN_OBJECTS: usize = 256;

/// Flush to a pack when this much compressed data is held in memory.
const FLUSH_BYTES: usize = 256 << 20;

struct Entry {
    oid: ObjectId,
    /// Entry header plus zlib data, as it goes into the pack.
    bytes: Vec<u8>,
    crc: u32,
}

struct State {
    entries: Vec<Entry>,
    seen: HashSet<ObjectId>,
    held: usize,
    written: Vec<PathBuf>,
}

/// Collects compressed blobs and writes them as packs.
pub struct PackBuilder {
    pack_dir: PathBuf,
    state: Mutex<State>,
}

fn entry_header(kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut c = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        out.push(c | 0x80);
        c = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(c);
    out
}

fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl PackBuilder {
    /// A builder writing into the repository whose objects directory is `objects`.
    pub fn new(objects: &Path) -> PackBuilder {
        PackBuilder {
            pack_dir: objects.join("pack"),
            state: Mutex::new(State {
                entries: Vec::new(),
                seen: HashSet::new(),
                held: 0,
                written: Vec::new(),
            }),
        }
    }

    /// Add a blob; returns its id. Compression happens in the calling thread. Objects
    /// already in `repo` or already added are skipped.
    pub fn add(&self, repo: &gix::Repository, data: &[u8]) -> io::Result<ObjectId> {
        let oid = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, data)
            .map_err(io_other)?;
        self.add_known(repo, oid, data)
    }

    /// Add an object of any kind (its encoded content, without the loose-object header).
    pub fn add_object(
        &self,
        repo: &gix::Repository,
        kind: gix::objs::Kind,
        data: &[u8],
    ) -> io::Result<ObjectId> {
        let oid = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data).map_err(io_other)?;
        let code = match kind {
            gix::objs::Kind::Commit => 1,
            gix::objs::Kind::Tree => 2,
            gix::objs::Kind::Blob => 3,
            gix::objs::Kind::Tag => 4,
        };
        self.add_coded(repo, oid, code, data)
    }

    /// Like [`PackBuilder::add`] for a blob whose id the caller computed.
    pub fn add_known(
        &self,
        repo: &gix::Repository,
        oid: ObjectId,
        data: &[u8],
    ) -> io::Result<ObjectId> {
        self.add_coded(repo, oid, 3, data)
    }

    fn add_coded(
        &self,
        repo: &gix::Repository,
        oid: ObjectId,
        code: u8,
        data: &[u8],
    ) -> io::Result<ObjectId> {
        if repo.objects.exists_without_refresh(&oid) {
            return Ok(oid);
        }
        {
            let st = self.state.lock().expect("pack state lock");
            if st.seen.contains(&oid) {
                return Ok(oid);
            }
        }
        let mut bytes = entry_header(code, data.len() as u64);
        let mut z = flate2::write::ZlibEncoder::new(bytes, flate2::Compression::new(1));
        z.write_all(data)?;
        bytes = z.finish()?;
        let crc = crc32fast::hash(&bytes);
        let mut st = self.state.lock().expect("pack state lock");
        if !st.seen.insert(oid) {
            return Ok(oid);
        }
        st.held += bytes.len();
        st.entries.push(Entry { oid, bytes, crc });
        if st.held >= FLUSH_BYTES {
            let entries = std::mem::take(&mut st.entries);
            st.held = 0;
            let p = write_pack(&self.pack_dir, entries)?;
            st.written.push(p);
        }
        Ok(oid)
    }

    /// Write what is left. Returns the pack files written.
    pub fn finish(self) -> io::Result<Vec<PathBuf>> {
        let mut st = self.state.into_inner().expect("pack state lock");
        let entries = std::mem::take(&mut st.entries);
        if !entries.is_empty() {
            let p = write_pack(&self.pack_dir, entries)?;
            st.written.push(p);
        }
        Ok(st.written)
    }
}

/// Temporary files removed on drop unless disarmed: a writer that fails (a full disk, a
/// file size limit) removes what it wrote.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// Write `entries` as a pack and its index; returns the pack path.
fn write_pack(dir: &Path, mut entries: Vec<Entry>) -> io::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    fs::create_dir_all(dir)?;
    let n = std::process::id();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp_pack = dir.join(format!("tmp_grove_{n}_{seq}.pack"));
    let tmp_idx = tmp_pack.with_extension("idx");
    let mut guard = TempFiles(vec![tmp_pack.clone(), tmp_idx.clone()]);
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    let mut f = io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp_pack)?);
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(b"PACK");
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    hasher.update(&header);
    f.write_all(&header)?;
    let mut offset = 12u64;
    let mut index: Vec<(ObjectId, u32, u64)> = Vec::with_capacity(entries.len());
    for e in entries.drain(..) {
        hasher.update(&e.bytes);
        f.write_all(&e.bytes)?;
        index.push((e.oid, e.crc, offset));
        offset += e.bytes.len() as u64;
    }
    let pack_sum = hasher.try_finalize().map_err(io_other)?;
    f.write_all(pack_sum.as_bytes())?;
    // No fsync, like gix's loose objects: a killed process leaves the page cache intact,
    // and the rename below is what makes the pack visible.
    f.into_inner().map_err(|e| e.into_error())?;

    // Index, version 2 (gitformat-pack(5)).
    index.sort_by_key(|e| e.0);
    let mut idx = Vec::with_capacity(8 + 1024 + index.len() * 28 + 40);
    idx.extend_from_slice(&[0xff, b't', b'O', b'c']);
    idx.extend_from_slice(&2u32.to_be_bytes());
    let mut fan = [0u32; 256];
    for (oid, _, _) in &index {
        fan[oid.as_bytes()[0] as usize] += 1;
    }
    let mut acc = 0u32;
    for v in fan.iter_mut() {
        acc += *v;
        *v = acc;
    }
    for v in fan {
        idx.extend_from_slice(&v.to_be_bytes());
    }
    for (oid, _, _) in &index {
        idx.extend_from_slice(oid.as_bytes());
    }
    for (_, crc, _) in &index {
        idx.extend_from_slice(&crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for (_, _, off) in &index {
        if *off < 0x8000_0000 {
            idx.extend_from_slice(&(*off as u32).to_be_bytes());
        } else {
            idx.extend_from_slice(&(0x8000_0000u32 | large.len() as u32).to_be_bytes());
            large.push(*off);
        }
    }
    for off in large {
        idx.extend_from_slice(&off.to_be_bytes());
    }
    idx.extend_from_slice(pack_sum.as_bytes());
    let mut h = gix::hash::hasher(gix::hash::Kind::Sha1);
    h.update(&idx);
    let idx_sum = h.try_finalize().map_err(io_other)?;
    idx.extend_from_slice(idx_sum.as_bytes());
    {
        let mut fi = fs::File::create(&tmp_idx)?;
        fi.write_all(&idx)?;
    }
    let name = format!("pack-{}", pack_sum.to_hex());
    let pack = dir.join(format!("{name}.pack"));
    fs::rename(&tmp_pack, &pack)?;
    // (A pack of the same name may be another writer's, with its index: never remove it.)
    guard.0 = vec![tmp_idx.clone()];
    fs::rename(&tmp_idx, dir.join(format!("{name}.idx")))?;
    guard.0.clear();
    Ok(pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_header_encodes_type_and_size() {
        assert_eq!(entry_header(3, 5), vec![0x35]);
        assert_eq!(entry_header(3, 16), vec![0xb0, 0x01]);
        assert_eq!(entry_header(3, 1000), vec![0xb8, 0x3e]);
    }

    #[test]
    fn packed_blobs_are_readable_by_gix_and_git() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let pb = PackBuilder::new(&dir.path().join("objects"));
        let mut ids = Vec::new();
        for i in 0..300 {
            ids.push(
                pb.add(&repo, format!("blob number {i}\n").as_bytes())
                    .unwrap(),
            );
        }
        // Duplicates are stored once.
        assert_eq!(pb.add(&repo, b"blob number 7\n").unwrap(), ids[7]);
        let packs = pb.finish().unwrap();
        assert_eq!(packs.len(), 1);
        let repo = gix::open(dir.path()).unwrap();
        assert_eq!(repo.find_blob(ids[42]).unwrap().data, b"blob number 42\n");
        if std::process::Command::new("git")
            .arg("--version")
            .output()
            .is_ok()
        {
            let out = std::process::Command::new("git")
                .args(["verify-pack", "-v"])
                .arg(&packs[0])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
