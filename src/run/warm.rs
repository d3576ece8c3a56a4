//! Warming a SquashFS image's page cache for the command about to be executed.
//!
//! Why: the kernel loads an executable by page faults, and each fault on a FUSE file reads a
//! window *centred* on the faulting page (mmap read-around). With 128 KiB windows and
//! 128 KiB SquashFS blocks, nearly every request straddles two blocks, and `squashfuse_ll`
//! keeps too few decompressed data blocks to reuse them, so a block is decompressed two or
//! three times while busybox starts. Reading the file front to back first asks for whole,
//! aligned blocks (each decompressed once, two at a time with sequential readahead); the
//! faults then find the pages cached. docs/ch-run.md has the measurements.
//!
//! Only the executable and its interpreter (ELF `PT_INTERP` or a `#!` line) are warmed, only
//! files up to [`MAX_WARM`] bytes (past that, reading everything could cost more than the
//! faults it saves), and only files on FUSE or an overlay of it (not host files bound in).
//! Failures are ignored: `execve` reports the real errors.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Largest file that is read ahead of `execve`.
pub const MAX_WARM: u64 = 16 << 20;

/// How many interpreters deep to follow (`#!` script → interpreter → its ELF interpreter).
const MAX_DEPTH: usize = 3;

/// Read the executable `execvp` would run for `cmd` (searching `path` as execvp does), and
/// its interpreters, into the page cache. Call in the container, after the environment is
/// set.
pub fn executable(cmd: &OsStr, path: Option<&OsStr>) {
    let Some(mut file) = search(cmd, path) else {
        return;
    };
    for _ in 0..MAX_DEPTH {
        match warm_file(&file) {
            Some(next) => file = next,
            None => return,
        }
    }
}

/// The file `execvp(3)` would try first for `cmd`: `cmd` itself if it contains a slash,
/// else the first executable regular file named `cmd` in `path` (glibc's default
/// `/bin:/usr/bin` when unset; an empty entry means the current directory).
fn search(cmd: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    if cmd.is_empty() {
        return None;
    }
    if cmd.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(cmd));
    }
    candidates(cmd, path.unwrap_or(OsStr::new("/bin:/usr/bin")))
        .into_iter()
        .find(|c| {
            c.metadata().map(|m| m.is_file()).unwrap_or(false)
                && nix::unistd::access(c.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
        })
}

/// Candidate paths for `cmd` in the colon-separated search path `path`, in order.
fn candidates(cmd: &OsStr, path: &OsStr) -> Vec<PathBuf> {
    path.as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { b".".as_slice() } else { dir };
            Path::new(OsStr::from_bytes(dir)).join(cmd)
        })
        .collect()
}

/// Read `file` front to back if it is a regular file of at most [`MAX_WARM`] bytes; return
/// its interpreter, if any.
fn warm_file(file: &Path) -> Option<PathBuf> {
    warm_file_if(file, on_fuse)
}

/// [`warm_file`], for files on a filesystem that `accept` approves.
fn warm_file_if(file: &Path, accept: fn(&std::fs::File) -> bool) -> Option<PathBuf> {
    // O_NONBLOCK: opening a FIFO named as the command must not hang (it is then skipped).
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(file)
            .ok()?
    };
    let mut f = f;
    let md = f.metadata().ok()?;
    if !md.is_file() || md.len() > MAX_WARM || !accept(&f) {
        return None;
    }
    {
        use std::os::fd::AsRawFd;
        // Doubles the readahead window: two aligned block requests in flight at a time.
        let _ = nix::fcntl::posix_fadvise(
            f.as_raw_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
    }
    let mut buf = vec![0u8; 256 << 10];
    let mut head: Vec<u8> = Vec::new();
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if head.len() < HEAD {
                    let take = n.min(HEAD - head.len());
                    head.extend_from_slice(&buf[..take]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    interpreter(&head, |off, len| {
        // Program headers and PT_INTERP strings normally sit in the first page; read
        // anything beyond what was kept from the file itself.
        let mut out = vec![0u8; len];
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut out, off).ok()?;
        Some(out)
    })
}

/// Whether `f` is served by FUSE (the SquashFS mount) or seen through an overlay on it
/// (`-W`): files bound in from the host (`-b`) keep their own, demand-paged reads.
fn on_fuse(f: &std::fs::File) -> bool {
    use nix::sys::statfs::{fstatfs, FUSE_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC};
    fstatfs(f)
        .map(|s| {
            let t = s.filesystem_type();
            t == FUSE_SUPER_MAGIC || t == OVERLAYFS_SUPER_MAGIC
        })
        .unwrap_or(false)
}

/// Bytes of the file's start kept for [`interpreter`].
const HEAD: usize = 4096;

/// The interpreter named by an executable whose first bytes are `head`: the path of a
/// `#!` line, or an ELF file's `PT_INTERP`. `read_at(offset, len)` supplies bytes past
/// `head` when the ELF tables lie beyond it.
pub fn interpreter(
    head: &[u8],
    read_at: impl Fn(u64, usize) -> Option<Vec<u8>>,
) -> Option<PathBuf> {
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next()?;
        let word = line
            .split(|&b| b == b' ' || b == b'\t')
            .find(|w| !w.is_empty())?;
        return Some(PathBuf::from(OsString::from_vec(word.to_vec())));
    }
    elf_interp(head, read_at)
}

/// `PT_INTERP` of an ELF file (32- or 64-bit, either byte order).
fn elf_interp(head: &[u8], read_at: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Option<PathBuf> {
    const PT_INTERP: u32 = 3;
    if head.len() < 52 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let wide = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match head[5] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let get = |b: &[u8], off: usize, n: usize| -> Option<u64> {
        let s = b.get(off..off + n)?;
        let mut v: u64 = 0;
        for i in 0..n {
            let byte = if big { s[i] } else { s[n - 1 - i] };
            v = (v << 8) | u64::from(byte);
        }
        Some(v)
    };
    // e_phoff, e_phentsize, e_phnum.
    let (phoff, phentsize, phnum) = if wide {
        (get(head, 32, 8)?, get(head, 54, 2)?, get(head, 56, 2)?)
    } else {
        (get(head, 28, 4)?, get(head, 42, 2)?, get(head, 44, 2)?)
    };
    let min_ent = if wide { 56 } else { 32 };
    if phentsize < min_ent || phnum == 0 || phnum > 256 {
        return None;
    }
    let table_len = usize::try_from(phentsize * phnum).ok()?;
    let table = slice_or_read(head, phoff, table_len, &read_at)?;
    for i in 0..phnum as usize {
        let e = &table[i * phentsize as usize..];
        if get(e, 0, 4)? != u64::from(PT_INTERP) {
            continue;
        }
        let (off, size) = if wide {
            (get(e, 8, 8)?, get(e, 32, 8)?)
        } else {
            (get(e, 4, 4)?, get(e, 16, 4)?)
        };
        if size == 0 || size > 4096 {
            return None;
        }
        let s = slice_or_read(head, off, size as usize, &read_at)?;
        let s = s.split(|&b| b == 0).next()?;
        if s.is_empty() {
            return None;
        }
        return Some(PathBuf::from(OsString::from_vec(s.to_vec())));
    }
    None
}

/// `len` bytes at `off`: from `head` when they lie within it, else from `read_at`.
fn slice_or_read(
    head: &[u8],
    off: u64,
    len: usize,
    read_at: &impl Fn(u64, usize) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let start = usize::try_from(off).ok()?;
    match head.get(start..start.checked_add(len)?) {
        Some(s) => Some(s.to_vec()),
        None => read_at(off, len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: u64, _: usize) -> Option<Vec<u8>> {
        None
    }

    /// A minimal ELF header plus program headers: one PT_LOAD, then PT_INTERP → `interp`.
    fn elf(wide: bool, big: bool, interp: &[u8]) -> Vec<u8> {
        let put = |b: &mut Vec<u8>, off: usize, n: usize, v: u64| {
            if b.len() < off + n {
                b.resize(off + n, 0);
            }
            for i in 0..n {
                let shift = 8 * if big { n - 1 - i } else { i };
                b[off + i] = (v >> shift) as u8;
            }
        };
        let mut b = b"\x7fELF".to_vec();
        b.push(if wide { 2 } else { 1 });
        b.push(if big { 2 } else { 1 });
        let (ehsize, phent) = if wide { (64, 56) } else { (52, 32) };
        let phoff = ehsize;
        let interp_off = phoff + 2 * phent;
        if wide {
            put(&mut b, 32, 8, phoff as u64);
            put(&mut b, 54, 2, phent as u64);
            put(&mut b, 56, 2, 2);
        } else {
            put(&mut b, 28, 4, phoff as u64);
            put(&mut b, 42, 2, phent as u64);
            put(&mut b, 44, 2, 2);
        }
        // Entry 0: PT_LOAD (1).
        put(&mut b, phoff, 4, 1);
        // Entry 1: PT_INTERP (3).
        let e = phoff + phent;
        put(&mut b, e, 4, 3);
        if wide {
            put(&mut b, e + 8, 8, interp_off as u64);
            put(&mut b, e + 32, 8, interp.len() as u64 + 1);
        } else {
            put(&mut b, e + 4, 4, interp_off as u64);
            put(&mut b, e + 16, 4, interp.len() as u64 + 1);
        }
        b.resize(interp_off, 0);
        b.extend_from_slice(interp);
        b.push(0);
        b
    }

    #[test]
    fn elf_interpreter_all_classes_and_byte_orders() {
        for wide in [false, true] {
            for big in [false, true] {
                let b = elf(wide, big, b"/lib64/ld-linux-x86-64.so.2");
                assert_eq!(
                    interpreter(&b, none),
                    Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2")),
                    "wide={wide} big={big}"
                );
            }
        }
    }

    #[test]
    fn elf_tables_past_the_head_are_read() {
        let full = elf(true, false, b"/lib/ld.so");
        let head = &full[..70]; // header only
        let got = interpreter(head, |off, len| {
            full.get(off as usize..off as usize + len)
                .map(<[u8]>::to_vec)
        });
        assert_eq!(got, Some(PathBuf::from("/lib/ld.so")));
        assert_eq!(interpreter(head, none), None);
    }

    #[test]
    fn static_elf_and_junk_have_no_interpreter() {
        let mut b = elf(true, false, b"/x");
        b[64 + 56] = 1; // the PT_INTERP entry becomes a second PT_LOAD
        assert_eq!(interpreter(&b, none), None);
        assert_eq!(interpreter(b"\x7fELF", none), None);
        assert_eq!(interpreter(b"plain text, not a program", none), None);
        let mut bad = elf(true, false, b"/x");
        bad[4] = 9; // unknown class
        assert_eq!(interpreter(&bad, none), None);
    }

    #[test]
    fn shebang_first_word() {
        assert_eq!(
            interpreter(b"#!/bin/sh -e\necho hi\n", none),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            interpreter(b"#! \t/usr/bin/env python3\n", none),
            Some(PathBuf::from("/usr/bin/env"))
        );
        assert_eq!(interpreter(b"#!\n", none), None);
    }

    #[test]
    fn search_path_candidates_in_order() {
        assert_eq!(
            candidates(OsStr::new("true"), OsStr::new("/usr/bin::/bin")),
            vec![
                PathBuf::from("/usr/bin/true"),
                PathBuf::from("./true"),
                PathBuf::from("/bin/true")
            ]
        );
        assert_eq!(
            search(OsStr::new("./x/y"), None),
            Some(PathBuf::from("./x/y"))
        );
        assert_eq!(search(OsStr::new(""), None), None);
    }

    #[test]
    fn search_finds_first_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(a.join("prog")).expect("mkdir"); // a directory: skipped
        std::fs::create_dir(&b).expect("mkdir");
        std::fs::write(b.join("prog"), b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(b.join("prog"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(
            search(OsStr::new("prog"), Some(OsStr::new(&path))),
            Some(b.join("prog"))
        );
        assert_eq!(search(OsStr::new("nope"), Some(OsStr::new(&path))), None);
    }

    #[test]
    fn warm_file_reads_and_follows_interpreters() {
        let any: fn(&std::fs::File) -> bool = |_| true;
        let t = tempfile::tempdir().expect("tempdir");
        let script = t.path().join("s");
        std::fs::write(&script, b"#!/opt/interp\n").expect("write");
        assert_eq!(
            warm_file_if(&script, any),
            Some(PathBuf::from("/opt/interp"))
        );
        let elf_file = t.path().join("e");
        std::fs::write(&elf_file, elf(true, false, b"/lib/ld.so")).expect("write");
        assert_eq!(
            warm_file_if(&elf_file, any),
            Some(PathBuf::from("/lib/ld.so"))
        );
        assert_eq!(warm_file_if(t.path(), any), None); // a directory
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert_eq!(warm_file_if(&fifo, any), None); // skipped, without blocking
        assert_eq!(warm_file_if(&t.path().join("missing"), any), None);
        // Files not on FUSE (or an overlay of it) are left alone.
        let f = std::fs::File::open(&script).expect("open");
        let expect = on_fuse(&f).then(|| PathBuf::from("/opt/interp"));
        assert_eq!(warm_file(&script), expect);
    }
}
