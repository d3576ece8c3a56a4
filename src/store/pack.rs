//! Writing many new blobs as one pack file (with its version-2 index) instead of one
//! loose object each: an import of 50,000 files is otherwise bound by creating and
//! renaming 50,000 files.
//!
//! Objects are compressed in parallel by the callers' threads ([`PackBuilder::add`]) and
//! collected into chunks of about [`CHUNK_BYTES`]; the caller whose object fills a chunk
//! writes it as `pack-<sha>.pack` and `.idx` under a temporary name and renames them into
//! `objects/pack/`, the index last, so a reader sees a whole pack or none. So the writing
//! and the pack checksum of one chunk overlap the compression of the next on the other
//! threads, several chunks are written at once on several cores, and memory stays
//! bounded (a caller writing a chunk adds nothing meanwhile); [`PackBuilder::finish`]
//! writes the last chunk. Entries are whole objects (no deltas).
//!
//! A builder made with [`PackBuilder::stored`] (import and pull: the time to store a
//! tarball is the figure that counts) writes zlib streams of stored blocks, no compression
//! at all, and lists each such pack in the marker [`STORED_MARKER`]; the store's gc
//! (`ch-image build-cache --gc`) recompresses the packs listed there, and only those.
//! Both git and gix read either kind of entry.
//!
//! Blobs of [`STREAM_FILE_MIN`] bytes or more are never held whole: [`write_loose_stream`]
//! writes them as loose objects, compressed in pieces of [`STREAM_PIECE`] bytes on all
//! cores and joined into one zlib stream (docs/store-format.md).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gix::ObjectId;

/// Callers use a pack when they expect at least this many new objects.
pub const PACK_MIN_OBJECTS: usize = 256;

/// A chunk is written once this much compressed data is collected. Small enough that
/// writing and hashing the last chunk (which nothing overlaps) is short and that the
/// chunks of a big write spread over the cores, big enough that an import makes only a
/// few packs.
pub const CHUNK_BYTES: usize = 16 << 20;

/// In `objects/info/`: the names of stored (uncompressed) packs, each added before its
/// pack is renamed into place; gc recompresses them.
pub const STORED_MARKER: &str = "grove-stored-packs";

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
    /// Packs written so far.
    written: Vec<PathBuf>,
}

/// Collects compressed blobs and writes them as packs.
pub struct PackBuilder {
    pack_dir: PathBuf,
    /// zlib level; 0 writes stored blocks.
    level: u32,
    /// Chunk size ([`CHUNK_BYTES`]; smaller in tests).
    chunk: usize,
    /// Whether its packs are recorded for [`reclaim_written`] (a command's new objects;
    /// never a compaction's copies, which may hold the only copy of their objects).
    reclaimable: bool,
    state: Mutex<State>,
}

#[cfg(test)]
fn entry_header(kind: u8, size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    push_entry_header(&mut out, kind, size);
    out
}

fn push_entry_header(out: &mut Vec<u8>, kind: u8, size: u64) {
    let mut c = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest != 0 {
        out.push(c | 0x80);
        c = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(c);
}

fn io_other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Append the zlib stream of `data` at `level` to `out`, in one pass into `out` (no
/// intermediate buffer, no zero-filling of the output).
fn zlib_into(out: &mut Vec<u8>, data: &[u8], level: u32) -> io::Result<()> {
    if level == 0 || data.len() < TINY || incompressible(data) {
        stored_zlib_into(out, data);
        return Ok(());
    }
    // A fast level on incompressible data stays within this bound plus a little.
    out.reserve(data.len() + data.len() / 1000 + 64);
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let z = match &mut *c {
            Some((l, z)) if *l == level => {
                z.reset();
                z
            }
            slot => {
                &mut slot
                    .insert((
                        level,
                        flate2::Compress::new(flate2::Compression::new(level), true),
                    ))
                    .1
            }
        };
        loop {
            let done_in = z.total_in() as usize;
            let status = z
                .compress_vec(&data[done_in..], out, flate2::FlushCompress::Finish)
                .map_err(io_other)?;
            match status {
                flate2::Status::StreamEnd => return Ok(()),
                flate2::Status::Ok | flate2::Status::BufError => out.reserve(out.capacity() + 64),
            }
        }
    })
}

/// Objects smaller than this are written as stored blocks: zlib could save a few bytes
/// at most, and preparing a compressor for them (zeroing its 128 KiB hash table) cost
/// more than all the rest of storing them (a RUN that wrote 20,000 small files spent
/// about 0.15 s on it).
const TINY: usize = 64;

thread_local! {
    /// This thread's compressor and its level, reset for each object rather than made
    /// anew (making one zeroes about 300 KiB; a reset, 128 KiB).
    static COMPRESSOR: std::cell::RefCell<Option<(u32, flate2::Compress)>> =
        const { std::cell::RefCell::new(None) };
}

/// The largest stored deflate block (RFC 1951, 3.2.4).
const STORED_BLOCK: usize = 0xffff;

/// Objects at least this big are sampled before they are compressed ([`incompressible`]).
pub const SAMPLE_MIN: usize = 1 << 20;

/// Bytes in each of the three samples of [`incompressible`].
const SAMPLE: usize = 64 << 10;

/// Whether `data` (at least [`SAMPLE_MIN`] bytes) looks incompressible: three samples, at
/// its start, middle and end, shrink by less than 3% at zlib level 1. Such data
/// (compressed archives, media, random bytes) is written as stored blocks: zlib level 1
/// spends about 10 ms per MiB on it here for nothing (a 50 MB file from /dev/urandom took
/// 0.5 s of a COPY's 0.6 s). The cost of a wrong guess is disk space only (the object
/// stays valid), and a file compressible only where no sample looked is rare.
fn incompressible(data: &[u8]) -> bool {
    if data.len() < SAMPLE_MIN {
        return false;
    }
    let mid = data.len() / 2 - SAMPLE / 2;
    samples_incompressible([
        &data[..SAMPLE],
        &data[mid..mid + SAMPLE],
        &data[data.len() - SAMPLE..],
    ])
}

/// Whether three samples of [`SAMPLE`] bytes (start, middle, end) shrink by less than 3%
/// at zlib level 1.
fn samples_incompressible(samples: [&[u8]; 3]) -> bool {
    let mut z = flate2::Compress::new(flate2::Compression::new(1), true);
    let mut out = Vec::with_capacity(SAMPLE + SAMPLE / 8);
    let mut compressed = 0;
    for s in samples {
        z.reset();
        out.clear();
        match z.compress_vec(s, &mut out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => compressed += out.len(),
            // Output larger than the room given: certainly no gain.
            Ok(_) => compressed += s.len(),
            Err(_) => return false,
        }
    }
    compressed * 100 >= 3 * SAMPLE * 97
}

/// Write `data` as a loose blob of `repo` (`objects/xx/yyyy`, a zlib stream of
/// `blob <len>\0` and the data), as stored blocks when [`incompressible`], else at zlib
/// level 1; returns its id. For big blobs: gix's loose writer compresses whatever the
/// data. Written to a temporary file in the object's directory and renamed into place,
/// as gix does (no fsync); an object already there is left alone.
pub fn write_loose_blob(repo: &gix::Repository, data: &[u8]) -> io::Result<ObjectId> {
    let oid = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, data)
        .map_err(io_other)?;
    if repo.objects.exists_without_refresh(&oid) {
        return Ok(oid);
    }
    let hex = oid.to_hex().to_string();
    let dir = repo.path().join("objects").join(&hex[..2]);
    let path = dir.join(&hex[2..]);
    fs::create_dir_all(&dir)?;
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("tmp_grove_{}_{seq}", std::process::id()));
    let mut guard = TempFiles(vec![tmp.clone()]);
    let header = format!("blob {}\0", data.len());
    let mut f = io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
    if incompressible(data) {
        stored_zlib_parts(&mut f, &[header.as_bytes(), data])?;
    } else {
        let mut z = flate2::write::ZlibEncoder::new(&mut f, flate2::Compression::new(1));
        z.write_all(header.as_bytes())?;
        z.write_all(data)?;
        z.finish()?;
    }
    f.into_inner().map_err(|e| e.into_error())?;
    fs::rename(&tmp, &path)?;
    guard.0.clear();
    Ok(oid)
}

/// Files at least this big are stored by [`write_loose_file`], streamed, never held whole.
pub const STREAM_FILE_MIN: u64 = 32 << 20;

/// Bytes of a streamed object (its `blob <len>\0` header, then its contents) per piece
/// that [`write_loose_stream`] compresses on its own. Each piece costs about 10 bytes
/// more than one stream would (the dictionary restarts, a sync flush ends it), and up to
/// `2 × cores + 2` pieces and their output are held at once.
pub const STREAM_PIECE: usize = 4 << 20;

/// Write the `size` bytes of `file` as a loose blob ([`write_loose_stream`]); a file
/// whose size changes while it is read is an error.
pub fn write_loose_file(
    repo: &gix::Repository,
    file: &mut fs::File,
    size: u64,
) -> io::Result<ObjectId> {
    use std::io::{Read, Seek};
    file.rewind()?;
    let changed = || {
        io::Error::other(format!(
            "file changed size while it was stored ({size} bytes before)"
        ))
    };
    let id = write_loose_stream(repo, file, size).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            changed()
        } else {
            e
        }
    })?;
    if file.read(&mut [0u8; 1])? != 0 {
        return Err(changed());
    }
    Ok(id)
}

/// Write the next `size` bytes of `r` as a loose blob in one pass, streamed (memory
/// stays bounded whatever the size), on all cores: this thread reads and hashes (SHA-1
/// with collision detection, as git), worker threads compress pieces of
/// [`STREAM_PIECE`] bytes independently, each into raw deflate blocks ending on a byte
/// boundary (a sync flush), and a writer thread joins them, in order, behind a zlib
/// header, and appends the Adler-32 combined from the pieces' (as pigz does): one valid
/// zlib stream that git and gix read as any other. A piece that looks incompressible
/// (by samples, as `incompressible` tells), or that level 1 did not shrink, is written as
/// stored blocks. The bytes written depend on the contents only, never on the number of
/// threads. The object goes to a temporary file renamed into place once its id is
/// known; fewer than `size` bytes from `r` is an error of kind `UnexpectedEof`.
pub fn write_loose_stream(
    repo: &gix::Repository,
    r: &mut dyn io::Read,
    size: u64,
) -> io::Result<ObjectId> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    write_loose_stream_with(repo, r, size, STREAM_PIECE, workers)
}

/// Pieces read but not yet written by [`write_loose_stream`] with `workers` threads:
/// enough that the workers and the writer all have one while the reader fills the next.
fn stream_pieces_in_flight(workers: usize) -> usize {
    2 * workers + 2
}

/// One piece of a streamed object as it goes into the zlib stream: raw deflate blocks
/// (none final unless `last`) and the Adler-32 of its data.
fn deflate_piece(z: &mut flate2::Compress, data: &[u8], last: bool) -> io::Result<(Vec<u8>, u32)> {
    let adler = zlib_rs::adler32::adler32(1, data);
    let blocks = data.len().div_ceil(STORED_BLOCK).max(1);
    let stored_len = data.len() + 5 * blocks;
    let mut out = Vec::new();
    if !incompressible(data) {
        z.reset();
        // Room for the worst case of level 1 (zlib-rs's quick strategy: fixed codes of
        // up to 9 bits a byte, plus block headers), so that one call always completes:
        // a second call after the output filled panicked in zlib-rs 0.6.8 ("buf.len()
        // must fit in remaining()").
        out.reserve_exact(data.len() + data.len() / 8 + 1024);
        let flush = if last {
            flate2::FlushCompress::Finish
        } else {
            flate2::FlushCompress::Sync
        };
        let status = z.compress_vec(data, &mut out, flush).map_err(io_other)?;
        let all_in = z.total_in() as usize == data.len();
        // A sync flush is complete once it leaves room in the output (zlib's rule).
        let complete = if last {
            status == flate2::Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if complete && out.len() < stored_len {
            return Ok((out, adler));
        }
        out.clear();
    }
    out.reserve_exact(stored_len);
    let mut chunks = data.chunks(STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[u8::from(last), 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        let len = c.len() as u16;
        out.push(u8::from(last && chunks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    Ok((out, adler))
}

/// Fill `buf` from `r` (short reads and interruptions retried); fewer bytes is EOF.
fn read_full(r: &mut dyn io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// [`write_loose_stream`] with pieces of `piece` bytes and `workers` compressing threads.
fn write_loose_stream_with(
    repo: &gix::Repository,
    r: &mut dyn io::Read,
    size: u64,
    piece: usize,
    workers: usize,
) -> io::Result<ObjectId> {
    use std::sync::mpsc;
    let objects = repo.path().join("objects");
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = objects.join(format!("tmp_grove_{}_{seq}_obj", std::process::id()));
    let mut guard = TempFiles(vec![tmp.clone()]);
    let header = format!("blob {size}\0");
    let total = header.len() as u64 + size;
    let pieces = total.div_ceil(piece as u64);
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    let mut out = fs::File::create(&tmp)?;
    let workers = workers.max(1);
    let in_flight = stream_pieces_in_flight(workers);

    // Piece buffers go round: reader -> worker -> writer -> reader, so at most
    // `in_flight` pieces (and their output) exist at once.
    let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(in_flight);
    for _ in 0..in_flight {
        free_tx.send(Vec::new()).expect("the receiver is here");
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(workers);
    // The workers' only handle: once they all stop (the writer failed), the reader's
    // next send fails instead of waiting.
    let job_rx = std::sync::Arc::new(Mutex::new(job_rx));
    type Done = (u64, io::Result<(Vec<u8>, u32)>, Vec<u8>);
    let (done_tx, done_rx) = mpsc::channel::<Done>();

    let (read_result, write_result) = std::thread::scope(|s| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let job_rx = job_rx.clone();
            s.spawn(move || {
                let mut z = flate2::Compress::new(flate2::Compression::new(1), false);
                loop {
                    let job = job_rx.lock().expect("job queue").recv();
                    let Ok((i, data)) = job else { return };
                    let res = deflate_piece(&mut z, &data, i + 1 == pieces);
                    if done_tx.send((i, res, data)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        drop(job_rx);
        let out = &mut out;
        let writer = s.spawn(move || -> io::Result<()> {
            out.write_all(&[0x78, 0x01])?;
            let mut adler = 1u32;
            let mut next = 0u64;
            let mut waiting = std::collections::BTreeMap::new();
            while next < pieces {
                let Ok((i, res, data)) = done_rx.recv() else {
                    return Err(io::Error::other("stream ended early"));
                };
                waiting.insert(i, (res, data));
                while let Some((res, mut data)) = waiting.remove(&next) {
                    let (z, a) = res?;
                    out.write_all(&z)?;
                    adler = zlib_rs::adler32::adler32_combine(adler, a, data.len() as u64);
                    data.clear();
                    // The reader may have stopped: then nothing needs the buffer.
                    let _ = free_tx.send(data);
                    next += 1;
                }
            }
            out.write_all(&adler.to_be_bytes())
        });

        let read = (|| -> io::Result<()> {
            let mut left = total;
            for i in 0..pieces {
                crate::interrupt::check()?;
                let Ok(mut buf) = free_rx.recv() else {
                    return Ok(()); // the writer failed: its error is the one to report
                };
                let n = (piece as u64).min(left) as usize;
                buf.reserve_exact(n);
                let mut at = 0;
                if i == 0 {
                    buf.extend_from_slice(header.as_bytes());
                    at = header.len();
                }
                buf.resize(n, 0);
                let got = read_full(r, &mut buf[at..])?;
                if got < n - at {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "ended after {} of {size} bytes",
                            total - left + (at + got) as u64 - header.len() as u64
                        ),
                    ));
                }
                hasher.update(&buf);
                left -= n as u64;
                if job_tx.send((i, buf)).is_err() {
                    return Ok(());
                }
            }
            Ok(())
        })();
        drop(job_tx);
        (
            read,
            writer.join().expect("the stream writer does not panic"),
        )
    });
    read_result?;
    write_result?;
    // Read-only, as git and gix leave loose objects.
    out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))?;
    drop(out);
    let oid = hasher.try_finalize().map_err(io_other)?;
    if !repo.objects.exists_without_refresh(&oid) {
        let hex = oid.to_hex().to_string();
        let dir = objects.join(&hex[..2]);
        fs::create_dir_all(&dir)?;
        let path = dir.join(&hex[2..]);
        let written = Written::before_rename(&tmp, &path, Some(repo.path()));
        // Another writer may have put the object there since the check above, and set a
        // ref to it: its file stays, and is never ours to reclaim.
        let fresh = place_new(&tmp, &path)?;
        guard.0.clear();
        if let Some(w) = written.filter(|_| fresh) {
            w.record();
        }
    }
    Ok(oid)
}

/// Write `parts`, one after the other, as one zlib stream of stored deflate blocks (as
/// [`stored_zlib_into`], without joining them first).
fn stored_zlib_parts(out: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    out.write_all(&[0x78, 0x01])?;
    let mut adler = 1;
    let mut blocks = parts.iter().flat_map(|p| p.chunks(STORED_BLOCK)).peekable();
    if blocks.peek().is_none() {
        out.write_all(&[0x01, 0x00, 0x00, 0xff, 0xff])?;
    }
    while let Some(c) = blocks.next() {
        let last = blocks.peek().is_none();
        let len = c.len() as u16;
        out.write_all(&[u8::from(last)])?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&(!len).to_le_bytes())?;
        out.write_all(c)?;
        adler = zlib_rs::adler32::adler32(adler, c);
    }
    out.write_all(&adler.to_be_bytes())
}

/// A blob's pack entry of stored deflate blocks, its contents read straight into place:
/// the same bytes as [`stored_zlib_into`] after the entry header, without first reading
/// the contents into a buffer of their own (an import reads 160 MiB this way, a copy and
/// the memory for it less). [`PackBuilder::add_stored`] adds it.
pub struct StoredBlob {
    /// Entry header, zlib header, blocks; the adler32 is appended when added.
    bytes: Vec<u8>,
    /// Where the zlib stream starts in `bytes`.
    zlib: usize,
    size: usize,
}

impl StoredBlob {
    /// Read exactly `size` bytes of `r` as the contents.
    pub fn read(r: &mut impl io::Read, size: usize) -> io::Result<StoredBlob> {
        let blocks = size.div_ceil(STORED_BLOCK).max(1);
        let mut bytes = Vec::with_capacity(10 + 2 + blocks * 5 + size + 4);
        push_entry_header(&mut bytes, 3, size as u64);
        let zlib = bytes.len();
        bytes.extend_from_slice(&[0x78, 0x01]);
        let mut left = size;
        loop {
            let n = left.min(STORED_BLOCK);
            left -= n;
            let len = n as u16;
            bytes.push(u8::from(left == 0));
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&(!len).to_le_bytes());
            let at = bytes.len();
            bytes.resize(at + n, 0);
            r.read_exact(&mut bytes[at..])?;
            if left == 0 {
                break;
            }
        }
        Ok(StoredBlob { bytes, zlib, size })
    }

    /// The contents, block by block.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = self.zlib + 2;
        let mut left = self.size;
        let mut first = true;
        std::iter::from_fn(move || {
            if left == 0 && !first {
                return None;
            }
            first = false;
            let n = left.min(STORED_BLOCK);
            left -= n;
            let piece = &self.bytes[at + 5..at + 5 + n];
            at += 5 + n;
            Some(piece)
        })
    }

    /// The contents' size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The blob's id (SHA-1 with collision detection, as git).
    pub fn oid(&self) -> io::Result<ObjectId> {
        let mut h = gix::hash::hasher(gix::hash::Kind::Sha1);
        h.update(format!("blob {}\0", self.size).as_bytes());
        for p in self.pieces() {
            h.update(p);
        }
        h.try_finalize().map_err(io_other)
    }
}

/// Append `data` as a zlib stream of stored deflate blocks (RFC 1950, 1951): a 2-byte
/// header, a 5-byte header per block of up to 64 KiB, the data as it is, the adler32.
fn stored_zlib_into(out: &mut Vec<u8>, data: &[u8]) {
    let blocks = data.len().div_ceil(STORED_BLOCK).max(1);
    out.reserve(2 + blocks * 5 + data.len() + 4);
    // CMF: deflate, 32 KiB window; FLG: no dictionary, level 0, check bits.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = c.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&zlib_rs::adler32::adler32(1, data).to_be_bytes());
}

impl PackBuilder {
    /// A builder writing into the repository whose objects directory is `objects`, at
    /// zlib level 1.
    pub fn new(objects: &Path) -> PackBuilder {
        PackBuilder {
            reclaimable: true,
            ..PackBuilder::with_level(objects, 1)
        }
    }

    /// A builder writing entries without compression (stored zlib blocks), for bulk
    /// writes whose speed counts (import, pull); gc recompresses them later.
    pub fn stored(objects: &Path) -> PackBuilder {
        PackBuilder {
            reclaimable: true,
            ..PackBuilder::with_level(objects, 0)
        }
    }

    /// A builder at zlib `level` whose packs are not recorded for [`reclaim_written`]
    /// (compaction's).
    pub(crate) fn with_level(objects: &Path, level: u32) -> PackBuilder {
        PackBuilder {
            pack_dir: objects.join("pack"),
            level,
            chunk: CHUNK_BYTES,
            reclaimable: false,
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
        self.add_coded(repo, oid, kind_code(kind), data)
    }

    /// Add object `oid` of `kind` even though the repository has it: compaction copies
    /// the objects of stored packs into compressed ones, then removes the stored packs.
    pub fn add_copy(&self, oid: ObjectId, kind: gix::objs::Kind, data: &[u8]) -> io::Result<()> {
        self.push(oid, self.entry(kind_code(kind), data)?)?;
        Ok(())
    }

    /// Add a blob read with [`StoredBlob::read`] whose id is `oid`
    /// ([`StoredBlob::oid`]), to a builder made with [`PackBuilder::stored`] (its entry
    /// goes in as it is, and only such a builder's packs are marked for gc to compress).
    pub fn add_stored(
        &self,
        repo: &gix::Repository,
        oid: ObjectId,
        blob: StoredBlob,
    ) -> io::Result<ObjectId> {
        debug_assert_eq!(self.level, 0, "stored blobs go to stored packs");
        if self.known(repo, &oid) {
            return Ok(oid);
        }
        let adler = blob.pieces().fold(1, zlib_rs::adler32::adler32);
        let mut bytes = blob.bytes;
        bytes.extend_from_slice(&adler.to_be_bytes());
        self.push(oid, bytes)
    }

    /// Whether `oid` is in `repo` or already added.
    fn known(&self, repo: &gix::Repository, oid: &ObjectId) -> bool {
        repo.objects.exists_without_refresh(oid)
            || self
                .state
                .lock()
                .expect("pack state lock")
                .seen
                .contains(oid)
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
        if self.known(repo, &oid) {
            return Ok(oid);
        }
        self.push(oid, self.entry(code, data)?)
    }

    /// The pack entry of an object of type `code` (header and zlib stream).
    fn entry(&self, code: u8, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        push_entry_header(&mut bytes, code, data.len() as u64);
        zlib_into(&mut bytes, data, self.level)?;
        Ok(bytes)
    }

    /// Add the entry `bytes` (header and zlib stream) of `oid`; the caller whose entry
    /// fills the chunk writes it.
    fn push(&self, oid: ObjectId, bytes: Vec<u8>) -> io::Result<ObjectId> {
        crate::interrupt::check()?;
        let crc = crc32fast::hash(&bytes);
        let mut st = self.state.lock().expect("pack state lock");
        if !st.seen.insert(oid) {
            return Ok(oid);
        }
        st.held += bytes.len();
        st.entries.push(Entry { oid, bytes, crc });
        if st.held >= self.chunk {
            let chunk = std::mem::take(&mut st.entries);
            st.held = 0;
            // Written by this caller, outside the lock: the others go on adding.
            drop(st);
            let pack = self.write(chunk)?;
            self.state
                .lock()
                .expect("pack state lock")
                .written
                .push(pack);
        }
        Ok(oid)
    }

    /// Write what is left. Returns the pack files written. (Every chunk written before
    /// is in place already: the calls that wrote them have returned.)
    /// If that fails, the packs written before stay in [`PackBuilder::written`].
    pub fn finish(&self) -> io::Result<Vec<PathBuf>> {
        let entries = std::mem::take(&mut self.state.lock().expect("pack state lock").entries);
        if !entries.is_empty() {
            let pack = self.write(entries)?;
            self.state
                .lock()
                .expect("pack state lock")
                .written
                .push(pack);
        }
        Ok(self.written())
    }

    /// The packs written so far (all of them after [`PackBuilder::finish`]).
    pub fn written(&self) -> Vec<PathBuf> {
        self.state.lock().expect("pack state lock").written.clone()
    }

    /// Write `chunk` as a pack. Its error names the pack directory: the caller that gets
    /// it is whichever one filled the chunk, and names its own file at most.
    fn write(&self, chunk: Vec<Entry>) -> io::Result<PathBuf> {
        write_pack(&self.pack_dir, chunk, self.level == 0, self.reclaimable).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing a pack in {}: {e}", self.pack_dir.display()),
            )
        })
    }
}

/// An object kind's type code in a pack entry header.
fn kind_code(kind: gix::objs::Kind) -> u8 {
    match kind {
        gix::objs::Kind::Commit => 1,
        gix::objs::Kind::Tree => 2,
        gix::objs::Kind::Blob => 3,
        gix::objs::Kind::Tag => 4,
    }
}

/// The object ids a version-2 pack index (`pack-HEX.idx`, as [`write_pack`] and git write
/// them) lists, in its order. Errors on anything else.
pub fn index_ids(idx: &[u8]) -> io::Result<Vec<ObjectId>> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("pack index: {what}"));
    if idx.len() < 8 + 1024 || idx[..4] != [0xff, b't', b'O', b'c'] || idx[4..8] != [0, 0, 0, 2] {
        return Err(bad("not a version-2 index"));
    }
    let n = u32::from_be_bytes(idx[8 + 1020..8 + 1024].try_into().expect("4 bytes")) as usize;
    let ids = idx
        .get(8 + 1024..8 + 1024 + n * 20)
        .ok_or_else(|| bad("shorter than its object count"))?;
    Ok(ids.chunks(20).map(ObjectId::from_bytes_or_panic).collect())
}

/// The marker gc looks for: `objects/info/<STORED_MARKER>`, listing stored packs by name
/// (`pack-HEX`), one a line.
pub fn stored_marker(objects: &Path) -> PathBuf {
    objects.join("info").join(STORED_MARKER)
}

/// Create directory `dir` if it is missing, but not its parents: a writer (the background
/// compaction) whose store was removed under it fails instead of making a part of it
/// again, which would leave a directory no tool takes for a store.
fn create_dir_in_place(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The marker, opened for appending and `flock`ed exclusively: appends and rewrites of
/// concurrent writers (an import marking its packs, a compaction removing the packs it
/// compressed) take turns. A marker replaced by a rewrite while we waited for its lock is
/// opened again, so that nothing is appended to a file no longer in place.
fn lock_marker(objects: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::MetadataExt;
    let path = stored_marker(objects);
    create_dir_in_place(&objects.join("info"))?;
    loop {
        let f = fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let l = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        let held = l.metadata()?;
        match fs::metadata(&path) {
            Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => return Ok(l),
            _ => continue,
        }
    }
}

/// Add pack `name` to the marker, before the pack is renamed into place (a killed writer
/// leaves at most a name gc does not find). Returns the marker, still locked: the
/// caller renames the pack and its index before it lets go, so that whoever rewrites the
/// marker under its lock finds each listed pack either not yet there or whole.
fn mark_stored(pack_dir: &Path, name: &str) -> io::Result<nix::fcntl::Flock<fs::File>> {
    let objects = pack_dir.parent().unwrap_or(pack_dir);
    let mut marker = lock_marker(objects)?;
    marker.write_all(format!("{name}\n").as_bytes())?;
    Ok(marker)
}

/// Remove from the marker those of `names` whose packs are gone (compressed by a
/// compaction or gc), under the marker's lock, so that a pack a writer is putting in
/// place meanwhile stays listed. A listed pack whose index is gone is the remains of a
/// kill between the two removals of a compaction (or between a writer's two renames,
/// before any ref named its objects): its pack file goes too. The marker is rewritten
/// whole and renamed into place; a kill leaves the old one, whose names of packs gone
/// are skipped.
pub fn unmark_stored(objects: &Path, names: &[String]) -> io::Result<()> {
    let dir = objects.join("pack");
    let gone = |n: &str| {
        if dir.join(format!("{n}.idx")).exists() {
            return false;
        }
        let pack = dir.join(format!("{n}.pack"));
        !pack.exists() || fs::remove_file(&pack).is_ok()
    };
    rewrite_marker(objects, |l| !(names.iter().any(|n| n == l) && gone(l)))
}

/// Remove `names` from the marker though their packs are in place: a compaction wrote
/// them again byte for byte (same contents, same name), so they hold what it would
/// write and are no longer stored packs to compress.
pub fn unmark_rewritten(objects: &Path, names: &[String]) -> io::Result<()> {
    rewrite_marker(objects, |l| !names.iter().any(|n| n == l))
}

/// Rewrite the marker with the lines `keep` keeps, under its lock, renamed into place
/// (a kill leaves the old one).
fn rewrite_marker(objects: &Path, mut keep: impl FnMut(&str) -> bool) -> io::Result<()> {
    use std::io::Read;
    let marker = lock_marker(objects)?;
    let mut listed = String::new();
    (&*marker).read_to_string(&mut listed)?;
    let kept: String = listed
        .lines()
        .filter(|l| keep(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = stored_marker(objects);
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, kept)?;
    fs::rename(&tmp, &path)?;
    drop(marker);
    Ok(())
}

/// The stored packs a marker lists (names `pack-HEX`; other lines are ignored). Pure.
pub fn stored_packs(marker: &str) -> Vec<String> {
    marker
        .lines()
        .filter(|l| {
            l.strip_prefix("pack-")
                .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(str::to_string)
        .collect()
}

/// A file this process put into an object database for the command it runs (a pack of a
/// [`PackBuilder::new`] or [`PackBuilder::stored`] builder, a loose object of
/// [`write_loose_file`]), with the digest of the repository's refs taken just before it
/// was renamed into place.
struct Written {
    path: PathBuf,
    /// Device and inode of the file renamed into place: a file put there later under the
    /// same name (another writer's pack of the same contents) is not ours to remove.
    ino: (u64, u64),
    /// The objects directory it went into.
    objects: PathBuf,
    refs: blake3::Hash,
}

/// What this process wrote ([`Written`]), for [`reclaim_written`].
static WRITTEN: Mutex<Vec<Written>> = Mutex::new(Vec::new());

impl Written {
    /// The record of `tmp`, about to be renamed to `path` in the repository at `git_dir`;
    /// `None` (nothing will be reclaimed) if the refs or the file can't be read.
    fn before_rename(tmp: &Path, path: &Path, git_dir: Option<&Path>) -> Option<Written> {
        use std::os::unix::fs::MetadataExt;
        let git_dir = git_dir?;
        let refs = refs_digest(git_dir)?;
        let m = fs::metadata(tmp).ok()?;
        Some(Written {
            path: path.to_path_buf(),
            ino: (m.dev(), m.ino()),
            objects: git_dir.join("objects"),
            refs,
        })
    }

    fn record(self) {
        WRITTEN.lock().expect("written files lock").push(self);
    }
}

/// A digest of every ref of the repository at `git_dir`: the contents of `packed-refs`
/// and the path and contents of each file under `refs/` (lock files included), in
/// order. Equal digests at two moments mean no ref changed between them (objects are
/// never changed, so neither did what the refs reach). `None` if something can't be
/// read.
fn refs_digest(git_dir: &Path) -> Option<blake3::Hash> {
    fn walk(dir: &Path, rel: &Path, h: &mut blake3::Hasher) -> Option<()> {
        let mut entries: Vec<_> = match fs::read_dir(dir) {
            Ok(rd) => rd.collect::<Result<_, _>>().ok()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(()),
            Err(_) => return None,
        };
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = rel.join(e.file_name());
            if e.file_type().ok()?.is_dir() {
                walk(&e.path(), &rel, h)?;
            } else {
                let data = fs::read(e.path()).ok()?;
                for part in [rel.as_os_str().as_encoded_bytes(), &data] {
                    h.update(&(part.len() as u64).to_le_bytes());
                    h.update(part);
                }
            }
        }
        Some(())
    }
    let mut h = blake3::Hasher::new();
    match fs::read(git_dir.join("packed-refs")) {
        Ok(d) => {
            h.update(&(d.len() as u64).to_le_bytes());
            h.update(&d);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            h.update(b"no packed-refs");
        }
        Err(_) => return None,
    }
    walk(&git_dir.join("refs"), Path::new("refs"), &mut h)?;
    Some(h.finalize())
}

/// Whether this process wrote any file [`reclaim_written`] may remove.
pub fn wrote_reclaimable() -> bool {
    !WRITTEN.lock().expect("written files lock").is_empty()
}

/// After this process's command failed (a full disk, an error half way), remove the packs
/// and big loose objects it wrote into the objects directory `objects` that nothing can
/// use: those after whose placement no ref of the repository changed. Such objects were
/// new when written (writers skip objects the repository has) and no ref reached them
/// then, so with the refs unchanged none does now. The caller must hold the store's
/// writer lock exclusively, so that no other writer is between writing objects (perhaps
/// finding ours and skipping its own copy) and updating its refs. Returns the files
/// removed and their bytes. Index before pack, then the stored packs' names leave the
/// gc marker; a kill meanwhile leaves what compaction and gc clean up after a kill.
pub fn reclaim_written(objects: &Path) -> (usize, u64) {
    use std::os::unix::fs::MetadataExt;
    let written: Vec<Written> = {
        let mut all = WRITTEN.lock().expect("written files lock");
        let (ours, others) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|w| w.objects == objects);
        *all = others;
        ours
    };
    let Some(git_dir) = objects.parent() else {
        return (0, 0);
    };
    let Some(now) = refs_digest(git_dir) else {
        return (0, 0);
    };
    let (mut files, mut bytes) = (0, 0);
    let mut names = Vec::new();
    for w in written {
        if w.refs != now {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&w.path) else {
            continue; // compacted meanwhile: its copy waits for gc
        };
        if (m.dev(), m.ino()) != w.ino {
            continue;
        }
        if w.path.extension().is_some_and(|e| e == "pack") {
            let idx = w.path.with_extension("idx");
            let idx_len = fs::metadata(&idx).map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(&idx).is_err() {
                continue;
            }
            bytes += idx_len;
            if let Some(stem) = w.path.file_stem() {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
        if fs::remove_file(&w.path).is_ok() {
            files += 1;
            bytes += m.len();
        }
    }
    if !names.is_empty() {
        let _ = unmark_stored(objects, &names);
    }
    (files, bytes)
}

/// Put the finished temporary file `tmp` at `dest` (an object file or pack, named by its
/// contents) unless a file is there already, as git does (`link(2)`, which never replaces
/// a file, then `tmp` is removed). Returns whether this call made `dest`, so that only
/// such a file is recorded for [`reclaim_written`]: one found there (another writer's,
/// perhaps reached by a ref already, whose copy ours would have replaced under the same
/// name) is left as it is. Where hard links can't be made, `tmp` is renamed to `dest` as
/// before and `false` returned (nothing to reclaim then).
fn place_new(tmp: &Path, dest: &Path) -> io::Result<bool> {
    match fs::hard_link(tmp, dest) {
        Ok(()) => {
            let _ = fs::remove_file(tmp);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(tmp);
            Ok(false)
        }
        Err(_) => fs::rename(tmp, dest).map(|()| false),
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

/// Write every byte of `parts`, in order, in as few vectored writes as the kernel allows.
fn write_all_parts(f: &mut fs::File, parts: &[&[u8]]) -> io::Result<()> {
    for group in parts.chunks(IOV_MAX) {
        let mut slices: Vec<io::IoSlice> = group.iter().map(|p| io::IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match f.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Linux's limit on the parts of one vectored write (`IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Bytes of pack entries hashed, then written, together.
const GROUP_BYTES: usize = 1 << 20;

/// Write `entries` as a pack and its index; returns the pack path. A `stored` pack is
/// listed in the gc marker first; a `reclaimable` one is recorded for [`reclaim_written`].
fn write_pack(
    dir: &Path,
    entries: Vec<Entry>,
    stored: bool,
    reclaimable: bool,
) -> io::Result<PathBuf> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    create_dir_in_place(dir)?;
    let n = std::process::id();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp_pack = dir.join(format!("tmp_grove_{n}_{seq}.pack"));
    let tmp_idx = tmp_pack.with_extension("idx");
    let mut guard = TempFiles(vec![tmp_pack.clone(), tmp_idx.clone()]);
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    let mut f = fs::File::create(&tmp_pack)?;
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(b"PACK");
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    hasher.update(&header);
    write_all_parts(&mut f, &[&header])?;
    let mut offset = 12u64;
    let mut index: Vec<(ObjectId, u32, u64)> = Vec::with_capacity(entries.len());
    // Entries go from their buffers to the file a group at a time, each group hashed just
    // before it is written (while its bytes are still in the CPU's cache), with no copy
    // into a buffer between; each group's buffers are freed once written.
    let total = entries.len();
    let mut group: Vec<Entry> = Vec::with_capacity(IOV_MAX);
    let mut group_bytes = 0;
    for (i, e) in entries.into_iter().enumerate() {
        hasher.update(&e.bytes);
        index.push((e.oid, e.crc, offset));
        offset += e.bytes.len() as u64;
        group_bytes += e.bytes.len();
        group.push(e);
        if group.len() == IOV_MAX || group_bytes >= GROUP_BYTES || i + 1 == total {
            let parts: Vec<&[u8]> = group.iter().map(|e| e.bytes.as_slice()).collect();
            write_all_parts(&mut f, &parts)?;
            group.clear();
            group_bytes = 0;
        }
    }
    let pack_sum = hasher.try_finalize().map_err(io_other)?;
    write_all_parts(&mut f, &[pack_sum.as_bytes()])?;
    // No fsync, like gix's loose objects: a killed process leaves the page cache intact,
    // and the rename below is what makes the pack visible.
    drop(f);

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
    let marker = if stored {
        Some(mark_stored(dir, &name)?)
    } else {
        None
    };
    let pack = dir.join(format!("{name}.pack"));
    let written = reclaimable
        .then(|| Written::before_rename(&tmp_pack, &pack, dir.parent().and_then(Path::parent)))
        .flatten();
    // A pack of the same name (the same objects) may be another writer's, which a ref
    // may reach already: it stays, and is never ours to reclaim.
    let fresh = place_new(&tmp_pack, &pack)?;
    guard.0 = vec![tmp_idx.clone()];
    fs::rename(&tmp_idx, dir.join(format!("{name}.idx")))?;
    guard.0.clear();
    drop(marker);
    if let Some(w) = written.filter(|_| fresh) {
        w.record();
    }
    Ok(pack)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Stock git's `ARGS` in the repository at `dir`, which must succeed: its stdout.
    fn git_ok(dir: &Path, args: &[&str]) -> Vec<u8> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// No temporary object file (`tmp_…`) is left in the objects of the repository at `dir`.
    fn assert_no_temporary_objects(dir: &Path) {
        let left: Vec<_> = fs::read_dir(dir.join("objects"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("tmp_"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// `git fsck --strict` of the repository at `dir`, which must pass.
    pub(crate) fn assert_git_fsck_strict(dir: &Path) {
        git_ok(dir, &["fsck", "--strict", "--no-dangling"]);
    }

    #[test]
    fn a_stored_blob_read_in_place_is_the_entry_of_its_contents() {
        for size in [
            0,
            1,
            100,
            STORED_BLOCK - 1,
            STORED_BLOCK,
            STORED_BLOCK + 1,
            200_000,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 300) as u8).collect();
            let mut r = io::Cursor::new([data.as_slice(), b"next member"].concat());
            let blob = StoredBlob::read(&mut r, size).unwrap();
            assert_eq!(r.position() as usize, size, "reads exactly its size");
            assert_eq!(blob.size(), size);
            let want_oid =
                gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data)
                    .unwrap();
            assert_eq!(blob.oid().unwrap(), want_oid, "size {size}");
            let mut want = entry_header(3, size as u64);
            stored_zlib_into(&mut want, &data);
            let adler = blob.pieces().fold(1, zlib_rs::adler32::adler32);
            let mut got = blob.bytes.clone();
            got.extend_from_slice(&adler.to_be_bytes());
            assert_eq!(got, want, "size {size}");
        }
        // Too short a reader is an error, not a short blob.
        assert!(StoredBlob::read(&mut io::Cursor::new(vec![1u8; 10]), 11).is_err());
    }

    #[test]
    fn stored_blobs_added_in_place_read_back_through_git() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let pb = PackBuilder::stored(&dir.path().join("objects"));
        let contents: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("blob {i}\n").repeat(i * 40).into_bytes())
            .collect();
        let mut ids = Vec::new();
        for c in &contents {
            let blob = StoredBlob::read(&mut c.as_slice(), c.len()).unwrap();
            let oid = blob.oid().unwrap();
            ids.push(pb.add_stored(&repo, oid, blob).unwrap());
        }
        pb.finish().unwrap();
        let repo = gix::open(dir.path()).unwrap();
        for (id, c) in ids.iter().zip(&contents) {
            assert_eq!(&repo.find_object(*id).unwrap().data, c);
        }
        assert_git_fsck_strict(dir.path());
    }

    #[test]
    fn a_failed_pack_write_names_the_pack_directory() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path().join("repo")).unwrap();
        // objects/pack can't be made: a file is in the way.
        let objects = dir.path().join("objects");
        fs::create_dir(&objects).unwrap();
        fs::write(objects.join("pack"), "in the way").unwrap();
        let mut pb = PackBuilder::stored(&objects);
        pb.chunk = 1000;
        let err = (0..10)
            .map(|i| pb.add(&repo, format!("{i}").repeat(300).as_bytes()))
            .find_map(Result::err)
            .expect("a chunk write fails");
        let msg = err.to_string();
        assert!(
            msg.contains(&objects.join("pack").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn entry_header_encodes_type_and_size() {
        assert_eq!(entry_header(3, 5), vec![0x35]);
        assert_eq!(entry_header(3, 16), vec![0xb0, 0x01]);
        assert_eq!(entry_header(3, 1000), vec![0xb8, 0x3e]);
    }

    #[test]
    fn stored_entries_in_several_chunks_are_readable_and_marked_for_gc() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let objects = dir.path().join("objects");
        let mut pb = PackBuilder::stored(&objects);
        pb.chunk = 10_000;
        let blob = |i: usize| format!("{i:04}").repeat(500).into_bytes();
        let ids: Vec<_> = (0..40).map(|i| pb.add(&repo, &blob(i)).unwrap()).collect();
        let packs = pb.finish().unwrap();
        // 40 entries of about 2 KB in chunks of 10 KB: at least 4 packs.
        assert!(packs.len() >= 4, "{packs:?}");
        // Stored, not compressed: each pack is at least as big as its content.
        let total: u64 = packs.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert!(total > 40 * 2000, "{total}");
        let marker = fs::read_to_string(stored_marker(&objects)).unwrap();
        let listed = stored_packs(&marker);
        assert_eq!(listed.len(), packs.len(), "{marker}");
        for p in &packs {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            assert!(listed.contains(&stem), "{stem} not in {marker}");
        }
        let repo = gix::open(dir.path()).unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(repo.find_blob(*id).unwrap().data, blob(i));
        }
        git_verifies(&packs);
    }

    /// Two writers of the same content: the one whose handle still missed the other's
    /// pack writes a pack of the same name. If the other set a ref before that, the
    /// name's pack is what the ref reaches, and a failure of the second writer must not
    /// remove it.
    #[test]
    fn a_pack_another_writer_put_under_the_same_name_is_never_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        gix::init_bare(dir.path()).unwrap();
        let objects = dir.path().join("objects");
        let blob = |i: usize| format!("{i:04} same content").repeat(300).into_bytes();
        let id = |i: usize| {
            gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &blob(i)).unwrap()
        };
        // The failing writer's handle, opened (and its packs looked at) before the other
        // writer's pack came.
        let stale = gix::open(dir.path()).unwrap();
        assert!(!gix::objs::Exists::exists(&stale.objects, &id(0)));
        // The other writer: its objects, then its ref.
        let theirs = {
            let repo = gix::open(dir.path()).unwrap();
            let pb = PackBuilder::stored(&objects);
            for i in 0..10 {
                pb.add(&repo, &blob(i)).unwrap();
            }
            pb.finish().unwrap()
        };
        let refs = dir.path().join("refs/grove/img");
        fs::create_dir_all(&refs).unwrap();
        fs::write(refs.join("theirs"), format!("{}\n", id(0))).unwrap();
        // The failing writer: the same objects, which its handle does not see.
        let pb = PackBuilder::stored(&objects);
        for i in 0..10 {
            pb.add(&stale, &blob(i)).unwrap();
        }
        let ours = pb.finish().unwrap();
        assert_eq!(ours, theirs, "same content, same pack name");
        reclaim_written(&objects);
        for p in &theirs {
            assert!(
                p.exists() && p.with_extension("idx").exists(),
                "{p:?} removed"
            );
        }
        let fresh = gix::open(dir.path()).unwrap();
        for i in 0..10 {
            assert_eq!(fresh.find_blob(id(i)).unwrap().data, blob(i));
        }
    }

    #[test]
    fn only_packs_written_since_the_refs_last_changed_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let objects = dir.path().join("objects");
        let blob = |i: usize| format!("{i:04} reclaim").repeat(300).into_bytes();
        let write = |from: usize| {
            let pb = PackBuilder::stored(&objects);
            for i in from..from + 10 {
                pb.add(&repo, &blob(i)).unwrap();
            }
            pb.finish().unwrap()
        };
        // Written, then a ref changed (as if a writer used these objects): kept.
        let used = write(0);
        let refs = dir.path().join("refs/grove/img");
        fs::create_dir_all(&refs).unwrap();
        fs::write(
            refs.join("x"),
            format!("{}\n", ObjectId::null(gix::hash::Kind::Sha1)),
        )
        .unwrap();
        // Written after the last ref change: nothing can reach them.
        let unused = write(10);
        // A compaction's pack is never a command's to reclaim.
        let compacted = {
            let pb = PackBuilder::with_level(&objects, 2);
            pb.add_copy(
                ObjectId::null(gix::hash::Kind::Sha1),
                gix::objs::Kind::Blob,
                b"x",
            )
            .unwrap();
            pb.finish().unwrap()
        };
        let (files, bytes) = reclaim_written(&objects);
        assert_eq!(files, unused.len());
        assert!(bytes > 0);
        for p in used.iter().chain(&compacted) {
            assert!(p.exists() && p.with_extension("idx").exists(), "{p:?}");
        }
        for p in &unused {
            assert!(!p.exists() && !p.with_extension("idx").exists(), "{p:?}");
        }
        let marker = fs::read_to_string(stored_marker(&objects)).unwrap();
        let stem = |p: &PathBuf| p.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(used.iter().all(|p| marker.contains(&stem(p))), "{marker}");
        assert!(
            !unused.iter().any(|p| marker.contains(&stem(p))),
            "{marker}"
        );
        // Reclaimed once: nothing is left to remove.
        assert_eq!(reclaim_written(&objects), (0, 0));
    }

    #[test]
    fn a_pack_index_lists_the_ids_written_and_unmarking_keeps_the_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let objects = dir.path().join("objects");
        let mut pb = PackBuilder::stored(&objects);
        pb.chunk = 10_000;
        let mut ids: Vec<_> = (0..30)
            .map(|i| {
                pb.add(&repo, format!("{i:04}").repeat(500).as_bytes())
                    .unwrap()
            })
            .collect();
        let packs = pb.finish().unwrap();
        let mut listed = Vec::new();
        for p in &packs {
            listed.extend(index_ids(&fs::read(p.with_extension("idx")).unwrap()).unwrap());
        }
        listed.sort();
        ids.sort();
        assert_eq!(listed, ids);
        assert!(index_ids(b"PACK").is_err());
        let mut short = fs::read(packs[0].with_extension("idx")).unwrap();
        short.truncate(8 + 1024 + 10);
        assert!(index_ids(&short).is_err());
        // Unmarking the first pack leaves the others, and a line that is no pack name.
        let marker = stored_marker(&objects);
        fs::write(
            &marker,
            format!("{}# note\n", fs::read_to_string(&marker).unwrap()),
        )
        .unwrap();
        let names = stored_packs(&fs::read_to_string(&marker).unwrap());
        assert!(names.len() >= 3, "{names:?}");
        let file = |n: &str, ext: &str| objects.join("pack").join(format!("{n}.{ext}"));
        // The first pack is gone; the second lost its index (a kill between two
        // removals: its pack file goes too); the third is whole and stays listed.
        fs::remove_file(file(&names[0], "idx")).unwrap();
        fs::remove_file(file(&names[0], "pack")).unwrap();
        fs::remove_file(file(&names[1], "idx")).unwrap();
        unmark_stored(&objects, &names[..3]).unwrap();
        assert!(!file(&names[1], "pack").exists());
        assert!(file(&names[2], "pack").exists());
        let left = fs::read_to_string(&marker).unwrap();
        assert_eq!(stored_packs(&left), names[2..].to_vec());
        assert!(left.contains("# note\n"), "{left}");
        // Appends after a rewrite land in the marker in place.
        drop(mark_stored(&objects.join("pack"), "pack-x").unwrap());
        assert!(fs::read_to_string(&marker).unwrap().ends_with("pack-x\n"));
    }

    /// `git verify-pack` accepts every pack (where git is installed).
    fn git_verifies<'a>(packs: impl IntoIterator<Item = &'a PathBuf>) {
        if std::process::Command::new("git")
            .arg("--version")
            .output()
            .is_err()
        {
            return;
        }
        for p in packs {
            let out = std::process::Command::new("git")
                .args(["verify-pack"])
                .arg(p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn stored_zlib_streams_inflate_to_their_data() {
        for len in [
            0usize,
            1,
            1000,
            STORED_BLOCK,
            STORED_BLOCK + 1,
            3 * STORED_BLOCK + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut z = Vec::new();
            stored_zlib_into(&mut z, &data);
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&z[..]), &mut back)
                .unwrap();
            assert_eq!(back, data, "length {len}");
        }
    }

    /// `len` bytes no compressor can shrink (xorshift64).
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn text(len: usize) -> Vec<u8> {
        (0..)
            .flat_map(|i| format!("line {i} of a log file\n").into_bytes())
            .take(len)
            .collect()
    }

    #[test]
    fn only_big_data_that_no_sample_can_shrink_counts_as_incompressible() {
        assert!(incompressible(&noise(SAMPLE_MIN, 1)));
        assert!(incompressible(&noise(50 << 20, 2)));
        assert!(
            !incompressible(&noise(SAMPLE_MIN - 1, 3)),
            "too small to sample"
        );
        assert!(!incompressible(&text(SAMPLE_MIN)));
        // Compressible at the start, the middle or the end: compressed.
        for at in [0, SAMPLE_MIN, 2 * SAMPLE_MIN - SAMPLE] {
            let mut d = noise(2 * SAMPLE_MIN, 4);
            d[at..at + SAMPLE].copy_from_slice(&text(SAMPLE));
            assert!(!incompressible(&d), "text at {at}");
        }
    }

    #[test]
    fn stored_zlib_of_several_parts_inflates_to_them_joined() {
        let big = noise(3 * STORED_BLOCK + 5, 5);
        for parts in [
            vec![&b""[..]],
            vec![&b"blob 0\0"[..], &b""[..]],
            vec![&b"blob 5\0"[..], &b"hello"[..]],
            vec![&b"blob 196610\0"[..], &big[..]],
        ] {
            let mut z = Vec::new();
            stored_zlib_parts(&mut z, &parts).unwrap();
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&z[..]), &mut back)
                .unwrap();
            assert_eq!(back, parts.concat());
        }
    }

    #[test]
    fn big_loose_blobs_are_stored_when_incompressible_and_compressed_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let noisy = noise(3 << 20, 6);
        let texty = text(3 << 20);
        let a = write_loose_blob(&repo, &noisy).unwrap();
        let b = write_loose_blob(&repo, &texty).unwrap();
        // Written again: the object is already there, nothing changes.
        assert_eq!(write_loose_blob(&repo, &noisy).unwrap(), a);
        let size = |id: ObjectId| {
            let hex = id.to_hex().to_string();
            fs::metadata(dir.path().join("objects").join(&hex[..2]).join(&hex[2..]))
                .unwrap()
                .len()
        };
        // Stored: 5 bytes per 64 KiB block and a few of header (zlib level 1 made this
        // noise 5% bigger).
        assert!(
            size(a) <= noisy.len() as u64 + noisy.len() as u64 / 1000,
            "{}",
            size(a)
        );
        assert!(size(b) < texty.len() as u64 / 4, "{}", size(b));
        let leftovers: Vec<_> = fs::read_dir(
            dir.path()
                .join("objects")
                .join(&a.to_hex().to_string()[..2]),
        )
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with("tmp_"))
        .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let repo = gix::open(dir.path()).unwrap();
        assert_eq!(repo.find_blob(a).unwrap().data, noisy);
        assert_eq!(repo.find_blob(b).unwrap().data, texty);
        if std::process::Command::new("git")
            .arg("--version")
            .output()
            .is_ok()
        {
            assert_git_fsck_strict(dir.path());
        }
    }

    #[test]
    fn big_files_are_streamed_into_loose_objects_git_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        for (data, stored) in [
            (noise(3 << 20, 11), true),
            (text(3 << 20), false),
            (Vec::new(), false),
            (b"short".to_vec(), false),
            (noise(STORED_BLOCK * 2, 3), true),
        ] {
            let p = dir.path().join("f");
            fs::write(&p, &data).unwrap();
            let mut f = fs::File::open(&p).unwrap();
            let id = write_loose_file(&repo, &mut f, data.len() as u64).unwrap();
            let want = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data)
                .unwrap();
            assert_eq!(id, want);
            let repo = gix::open(dir.path()).unwrap();
            assert_eq!(repo.find_blob(id).unwrap().data, data);
            let hex = id.to_hex().to_string();
            let size = fs::metadata(dir.path().join("objects").join(&hex[..2]).join(&hex[2..]))
                .unwrap()
                .len();
            if stored && data.len() >= SAMPLE_MIN {
                assert!(size >= data.len() as u64, "stored: {size}");
            } else if data.len() >= SAMPLE_MIN {
                assert!(size < data.len() as u64 / 4, "compressed: {size}");
            }
        }
        // A file that grows while it is read is refused, and leaves no temporary file.
        let p = dir.path().join("g");
        fs::write(&p, b"0123456789").unwrap();
        let mut f = fs::File::open(&p).unwrap();
        assert!(write_loose_file(&repo, &mut f, 5).is_err());
        assert_no_temporary_objects(dir.path());
    }

    /// The loose object file of `id` in the repository at `dir`.
    fn loose_path(dir: &Path, id: &ObjectId) -> PathBuf {
        let hex = id.to_hex().to_string();
        dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    #[test]
    fn a_blob_streamed_in_pieces_is_one_zlib_stream_gix_and_git_read() {
        use std::io::Read;
        // Text, noise (stored pieces), zeros, text: pieces of every kind, boundaries
        // inside each part and inside stored blocks.
        let mut data = text(300_000);
        data.extend(noise(400_000, 5));
        data.extend(vec![0u8; 250_000]);
        data.extend(text(123_457));
        for piece in [1000, STORED_BLOCK * 2 + 7, 1 << 20] {
            let mut bytes = Vec::new();
            for workers in [1, 3] {
                let dir = tempfile::tempdir().unwrap();
                let repo = gix::init_bare(dir.path()).unwrap();
                let id = write_loose_stream_with(
                    &repo,
                    &mut &data[..],
                    data.len() as u64,
                    piece,
                    workers,
                )
                .unwrap();
                let want =
                    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &data)
                        .unwrap();
                assert_eq!(id, want);
                let file = fs::read(loose_path(dir.path(), &id)).unwrap();
                // One zlib stream (its Adler-32 checked by the decoder) of header and data.
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(&file[..])
                    .read_to_end(&mut inflated)
                    .unwrap();
                let mut object = format!("blob {}\0", data.len()).into_bytes();
                object.extend_from_slice(&data);
                assert!(inflated == object, "piece {piece}, {workers} workers");
                // The same bytes whatever the number of threads.
                if workers == 1 {
                    bytes = file;
                } else {
                    assert!(bytes == file, "piece {piece}: output depends on threads");
                }
                let repo = gix::open(dir.path()).unwrap();
                assert!(repo.find_blob(id).unwrap().data == data);
                let shown = git_ok(dir.path(), &["cat-file", "-p", &id.to_string()]);
                assert!(shown == data, "git cat-file, piece {piece}");
                assert_git_fsck_strict(dir.path());
            }
        }
    }

    #[test]
    fn incompressible_pieces_are_stored_and_compressible_ones_deflated() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let piece = 2 << 20;
        let noisy = noise(4 * piece, 9);
        let id =
            write_loose_stream_with(&repo, &mut &noisy[..], noisy.len() as u64, piece, 2).unwrap();
        let len = fs::metadata(loose_path(dir.path(), &id)).unwrap().len();
        // Stored: 5 bytes per block of 64 KiB (level 1 made noise 5% bigger).
        assert!(
            len <= noisy.len() as u64 + noisy.len() as u64 / 10_000 + 64,
            "{len}"
        );
        let mut half = noise(piece, 10);
        half.extend(vec![7u8; 3 * piece]);
        let id =
            write_loose_stream_with(&repo, &mut &half[..], half.len() as u64, piece, 2).unwrap();
        let len = fs::metadata(loose_path(dir.path(), &id)).unwrap().len();
        assert!(len < piece as u64 + piece as u64 / 10, "{len}");
        assert_git_fsck_strict(dir.path());
    }

    #[test]
    fn a_stream_shorter_than_said_fails_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let data = text(100_000);
        let e = write_loose_stream_with(&repo, &mut &data[..], 100_001, 4096, 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("100000 of 100001"), "{e}");
        assert_no_temporary_objects(dir.path());
    }

    #[test]
    fn incompressible_and_tiny_pack_entries_are_stored_others_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let objects = dir.path().join("objects");
        let noisy = noise(2 << 20, 7);
        let texty = text(2 << 20);
        let pb = PackBuilder::new(&objects);
        let ids = [
            pb.add(&repo, &noisy).unwrap(),
            pb.add(&repo, b"tiny\n").unwrap(),
            pb.add(&repo, &text(TINY)).unwrap(),
        ];
        let stored = pb.finish().unwrap();
        let pb = PackBuilder::new(&objects);
        let texty_id = pb.add(&repo, &texty).unwrap();
        let compressed = pb.finish().unwrap();
        // The noise as it is (zlib level 1 would add 5%), the text compressed.
        let size = fs::metadata(&stored[0]).unwrap().len();
        assert!(size < noisy.len() as u64 * 1001 / 1000, "{size}");
        let size = fs::metadata(&compressed[0]).unwrap().len();
        assert!(size < texty.len() as u64 / 4, "{size}");
        // Not listed for gc's recompression: nothing there would shrink.
        assert!(!stored_marker(&objects).exists());
        let repo = gix::open(dir.path()).unwrap();
        assert_eq!(repo.find_blob(ids[0]).unwrap().data, noisy);
        assert_eq!(repo.find_blob(ids[1]).unwrap().data, b"tiny\n");
        assert_eq!(repo.find_blob(ids[2]).unwrap().data, text(TINY));
        assert_eq!(repo.find_blob(texty_id).unwrap().data, texty);
        git_verifies(stored.iter().chain(&compressed));
    }

    #[test]
    fn marker_lines_other_than_pack_names_are_ignored() {
        let h = "0123456789abcdef0123456789abcdef01234567";
        let m = format!("pack-{h}\npack-xyz\n../pack-{h}\npack-{h}0\n\npack-{h}");
        assert_eq!(
            stored_packs(&m),
            vec![format!("pack-{h}"), format!("pack-{h}")]
        );
    }

    #[test]
    fn compressed_builder_leaves_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let repo = gix::init_bare(dir.path()).unwrap();
        let objects = dir.path().join("objects");
        let pb = PackBuilder::new(&objects);
        pb.add(&repo, &[b'a'; 100_000]).unwrap();
        let packs = pb.finish().unwrap();
        assert!(fs::metadata(&packs[0]).unwrap().len() < 10_000);
        assert!(!stored_marker(&objects).exists());
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
