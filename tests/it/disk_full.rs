//! The store on a full disk: a storage directory on a small file system of its own (an
//! ext4 image, loop-mounted), filled by the command under test or beforehand. A command
//! that fails there says so and leaves the store as it was, the space it found included;
//! what needs no room still works. Mounting needs root: as another user these skip. And
//! a storage directory its owner made read-only: every writer is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// An ext4 file system of `mib` MiB (no reserved blocks) loop-mounted at `scratch/fs`,
/// owned by the test user; unmounted and removed on drop.
struct SmallFs {
    mnt: PathBuf,
    _scratch: Scratch,
}

impl SmallFs {
    fn new(tag: &str, mib: u32) -> Option<SmallFs> {
        if !is_root() {
            skip("a loop-mounted file system needs a root test suite");
            return None;
        }
        if !have("mkfs.ext4") {
            skip("mkfs.ext4 not installed (apt-get install e2fsprogs)");
            return None;
        }
        let scratch = Scratch::new(tag);
        let img = scratch.join("fs.img");
        let mnt = scratch.join("fs");
        std::fs::create_dir(&mnt).expect("mkdir mount point");
        let f = std::fs::File::create(&img).expect("create image");
        f.set_len(u64::from(mib) << 20).expect("size image");
        ok(Command::new("mkfs.ext4").args(["-q", "-m", "0"]).arg(&img));
        let out = output(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt),
        );
        if !out.status.success() {
            skip(&format!(
                "can't loop-mount a file system here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        own(&mnt);
        Some(SmallFs {
            mnt,
            _scratch: scratch,
        })
    }

    /// Free bytes (as the test user sees them).
    fn free(&self) -> u64 {
        let v = nix::sys::statvfs::statvfs(&self.mnt).expect("statvfs");
        v.blocks_available() * v.fragment_size()
    }

    /// Fill the file system with `filler`, then give back `leave` bytes of it.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.mnt.join("filler");
        // dd stops at ENOSPC (and fails): that is the point.
        let _ = unpriv("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", filler.display()))
            .args(["bs=1M", "status=none"])
            .output();
        let len = std::fs::metadata(&filler).expect("filler").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .expect("open filler")
            .set_len(len.saturating_sub(leave))
            .expect("shrink filler");
        filler
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// `ch-image` on storage directory `st`.
fn ch(st: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(st);
    c
}

/// A directory of `n` files of random bytes, `kib` KiB each, in `s`, owned by the test
/// user (random: nothing compresses it).
fn random_tree(s: &Scratch, name: &str, n: u32, kib: u32) -> PathBuf {
    let dir = s.join(name);
    sh(&format!(
        "mkdir '{d}' && cd '{d}' && head -c {total}K /dev/urandom | split -a 4 -b {kib}K - f",
        d = dir.display(),
        total = n * kib,
    ));
    dir
}

/// The store is whole and lists `images`: `ch-image fsck` and `git fsck` pass.
#[track_caller]
fn assert_whole(st: &Path, images: &str) {
    assert_eq!(ok(ch(st).arg("list")), images);
    ok(ch(st).arg("fsck"));
    ok(unpriv("git")
        .arg("-C")
        .arg(st.join("repo.git"))
        .args(["fsck", "--strict"]));
}

/// Regression: an import that ran out of space left the packs it had written (every
/// 16 MiB chunk of the tarball that fit), which nothing referenced: the disk stayed full
/// (71 MiB of a 100 MiB file system after a failed import of Debian bookworm), and
/// `build-cache --gc`, which rewrites the store's packs, then failed for want of room
/// itself. Now the failed import removes them: the space it found is free again.
#[test]
fn an_import_that_fills_the_disk_leaves_the_space_it_found() {
    let Some(fs) = SmallFs::new("full-import", 48) else {
        return;
    };
    let s = Scratch::new("full-import-src");
    let st = fs.mnt.join("st");
    ok(ch(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    let before = fs.free();
    // More than the free space, in several packs of 16 MiB.
    let tree = random_tree(&s, "big", 400, 160);
    let tar = s.join("big.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' .",
        tree.display(),
        tar.display()
    ));
    let (_, err) = fails(ch(&st).arg("import").arg(&tar).arg("big"));
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&st.join("repo.git/objects/pack").display().to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let after = fs.free();
    assert!(
        after + (1 << 20) >= before,
        "the failed import kept {} KiB of the file system\n{err}",
        (before - after) >> 10
    );
    let packs: Vec<_> = std::fs::read_dir(st.join("repo.git/objects/pack"))
        .expect("pack dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(packs.is_empty(), "{packs:?}");
    assert_whole(&st, "bb\n");
    // The store goes on: an import that fits, a run, a gc.
    let small = random_tree(&s, "small", 300, 4);
    ok(ch(&st).arg("import").arg(&small).arg("small"));
    ok(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    ok(ch(&st).args(["build-cache", "--gc"]));
    assert_whole(&st, "bb\nsmall\n");
}

/// Regression: a `build-cache --gc` whose `git repack` ran out of space left git's
/// temporary pack (`objects/pack/tmp_pack_*`, as big as what git had written) and
/// reported the failure: the disk was fuller after the gc than before it, and `ch-image
/// fsck` said nothing (the file was younger than ten minutes). Now gc removes it.
#[test]
fn a_gc_that_runs_out_of_space_leaves_no_temporary_pack() {
    let Some(fs) = SmallFs::new("full-gc", 48) else {
        return;
    };
    let s = Scratch::new("full-gc-src");
    let st = fs.mnt.join("st");
    // Stored packs (an import of 300 files) that gc rewrites: 12 MiB of random bytes.
    let tree = random_tree(&s, "tree", 300, 40);
    ok(ch(&st)
        .env("CH_IMAGE_AUTO_COMPACT", "no")
        .arg("import")
        .arg(&tree)
        .arg("t"));
    let filler = fs.fill_leaving(2 << 20);
    let before = fs.free();
    let (_, err) = fails(ch(&st).args(["build-cache", "--gc"]));
    assert!(err.contains("repack"), "{err}");
    let left: Vec<_> = std::fs::read_dir(st.join("repo.git/objects/pack"))
        .expect("pack dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp_"))
        .collect();
    assert!(left.is_empty(), "gc left {left:?}\n{err}");
    assert!(fs.free() + (256 << 10) >= before, "{err}");
    assert_whole(&st, "t\n");
    std::fs::remove_file(filler).expect("remove filler");
    ok(ch(&st).args(["build-cache", "--gc"]));
    assert_whole(&st, "t\n");
}

/// Regression: `undelete` checked the image out before it restored the ref, so on a full
/// disk an image deleted there could not be brought back ("can't write file: …/tmp/
/// checkout…: No space left on device"), though a delete needs no room. Now it restores
/// the refs first (one transaction) and, when the checkout does not fit, warns and leaves
/// it to the image's first use, as after an import.
#[test]
fn undelete_on_a_full_disk_brings_the_image_back() {
    let Some(fs) = SmallFs::new("full-undelete", 24) else {
        return;
    };
    let st = fs.mnt.join("st");
    ok(ch(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    ok(ch(&st).args(["delete", "bb"]));
    assert_eq!(ok(ch(&st).arg("list")), "");
    // Less room than the image's files take (busybox is about 2 MiB).
    let filler = fs.fill_leaving(256 << 10);
    let out = output(ch(&st).args(["undelete", "bb"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("not checked out (done on its first use)")
            && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(ok(ch(&st).arg("list")), "bb\n");
    assert_eq!(ok(ch(&st).args(["list", "--undeletable"])), "");
    std::fs::remove_file(filler).expect("remove filler");
    ok(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    assert_whole(&st, "bb\n");
}

/// The files under `pool/` of storage directory `st` that nothing but the pool links.
fn unlinked_pool_entries(st: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for sub in std::fs::read_dir(st.join("pool"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.metadata().is_ok_and(|m| m.nlink() == 1) {
                out.push(e.path());
            }
        }
    }
    out
}

/// Regression: a checkout that failed (here: the disk filled under it) removed its
/// scratch tree but left the pool entries it had made for the files it had written, which
/// nothing linked any more until `build-cache --gc` removed them. Now it takes them back.
#[test]
fn a_checkout_that_fills_the_disk_leaves_no_pool_entry_behind() {
    let Some(fs) = SmallFs::new("full-checkout", 24) else {
        return;
    };
    let st = fs.mnt.join("st");
    ok(ch(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    // Room for busybox's small files, not for the busybox binary (about 2 MiB).
    let filler = fs.fill_leaving(256 << 10);
    let (_, err) = fails(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(unlinked_pool_entries(&st), Vec::<PathBuf>::new(), "{err}");
    std::fs::remove_file(filler).expect("remove filler");
    ok(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    assert_eq!(unlinked_pool_entries(&st), Vec::<PathBuf>::new());
    assert_whole(&st, "bb\n");
}

/// Regression: a RUN whose result did not fit in the store was reported without its
/// line ("error: can't write …: No space left on device"), where every other failure of
/// a step names it. Now "Dockerfile:2: RUN", caused by the full disk.
#[test]
fn a_run_whose_layer_does_not_fit_is_reported_at_its_line() {
    let Some(fs) = SmallFs::new("full-run", 32) else {
        return;
    };
    let s = Scratch::new("full-run-ctx");
    let st = fs.mnt.join("st");
    ok(ch(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    ok(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    let ctx = s.join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb\nRUN head -c 4194304 /dev/urandom > /big\n",
    )
    .expect("write Dockerfile");
    own(&ctx);
    // Room for the RUN's 4 MiB file, not for a second copy of it in the git objects.
    let filler = fs.fill_leaving(6 << 20);
    let (_, err) = fails(ch(&st).args(["build", "-t", "big"]).arg(&ctx));
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("Dockerfile:2: RUN"), "{err}");
    std::fs::remove_file(filler).expect("remove filler");
    assert_whole(&st, "bb\n");
}

/// A store of 30 MiB of stored packs (two: 16 MiB, then the rest) of base64 text,
/// which compresses to about three quarters, on `fs`, imported without a compaction.
fn two_stored_packs(fs: &SmallFs, s: &Scratch) -> PathBuf {
    let st = fs.mnt.join("st");
    let tree = s.join("b64");
    sh(&format!(
        "mkdir '{d}' && cd '{d}' && head -c 22M /dev/urandom | base64 -w 100 | split -a 4 -b 100K - f",
        d = tree.display()
    ));
    ok(ch(&st)
        .env("CH_IMAGE_AUTO_COMPACT", "no")
        .arg("import")
        .arg(&tree)
        .arg("t"));
    st
}

/// The names in `objects/pack` of storage directory `st`, sorted.
fn pack_names(st: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(st.join("repo.git/objects/pack"))
        .expect("pack dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Regression: a compaction (the one an import starts in the background, or `build-cache
/// --compact`) that ran out of space left the compressed packs it had written before it
/// failed, copies of objects its stored packs still held: a store of 30 MiB of stored
/// packs on a 56 MiB file system went from 17 MiB free to 0.6 MiB, so that the next
/// command failed for want of room, and the next compaction copied them again. Now it
/// removes them: the stored packs stay, as the space.
#[test]
fn a_compaction_that_runs_out_of_space_leaves_the_space_it_found() {
    let Some(fs) = SmallFs::new("full-compact", 56) else {
        return;
    };
    let s = Scratch::new("full-compact-src");
    let st = two_stored_packs(&fs, &s);
    // Less room than one stored pack's compressed copy (about 12 MiB).
    let _filler = fs.fill_leaving(4 << 20);
    let (before, free) = (pack_names(&st), fs.free());
    let (_, err) = fails(ch(&st).args(["build-cache", "--compact"]));
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(pack_names(&st), before, "{err}");
    assert!(fs.free() + (256 << 10) >= free, "{err}");
    assert_whole(&st, "t\n");
}

/// Regression: a compaction wrote the compressed copies of every stored pack before it
/// removed the first one, so it needed room for all of them at once: with room for one
/// pack's copy (about 12 MiB of the 23 both take), it failed, and the store stayed at its
/// uncompressed size on the nearly full disk where compaction was what could free room.
/// Now it goes pack by pack, each copy on the disk before its stored pack goes.
#[test]
fn a_compaction_with_room_for_one_pack_s_copy_compacts_them_all() {
    let Some(fs) = SmallFs::new("full-compact-one", 56) else {
        return;
    };
    let s = Scratch::new("full-compact-one-src");
    let st = two_stored_packs(&fs, &s);
    let _filler = fs.fill_leaving(14 << 20);
    let free = fs.free();
    let out = output(ch(&st).args(["build-cache", "--compact"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let listed = std::fs::read_to_string(st.join("repo.git/objects/info/grove-stored-packs"))
        .unwrap_or_default();
    assert_eq!(listed.trim(), "", "{err}");
    assert!(
        fs.free() > free + (4 << 20),
        "compaction freed {} KiB\n{err}",
        (fs.free().saturating_sub(free)) >> 10
    );
    assert_whole(&st, "t\n");
}

/// Regression: `ch-image import DIR` and `ch-convert -i dir` (which become root of a user
/// namespace mapping only the user, to read the user's 0000 files) kept every capability
/// of that root over the user's files, writes included: they wrote a new image into a
/// storage directory its owner had made read-only (`chmod -R a-w`), where a tarball's
/// import, a build and a gc are refused. Now only `CAP_DAC_READ_SEARCH` is kept; 0000
/// files are still read.
#[test]
fn a_directory_is_not_imported_into_a_storage_directory_made_read_only() {
    let s = Scratch::new("ro-import");
    let st = s.storage();
    ok(ch(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    // A tree of the user's with a 0000 directory and file: read all the same.
    let tree = busybox_copy(&s, "tree");
    sh(&format!(
        "mkdir '{t}/locked' && echo secret > '{t}/locked/f' && chmod 000 '{t}/locked/f' '{t}/locked'",
        t = tree.display()
    ));
    ok(ch(&st).arg("import").arg(&tree).arg("first"));
    sh(&format!("chmod -R a-w '{}'", st.display()));
    let (_, err) = fails(ch(&st).arg("import").arg(&tree).arg("second"));
    assert!(err.contains("storage directory is read-only"), "{err}");
    let (_, err) = fails(
        tool("ch-convert")
            .arg("-s")
            .arg(&st)
            .args(["-i", "dir", "-o", "ch-image"])
            .arg(&tree)
            .arg("third"),
    );
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(ok(ch(&st).arg("list")), "bb\nfirst\n");
    sh(&format!("chmod -R u+w '{}'", st.display()));
    let out = ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["first", "--", "cat", "/locked/f"]));
    assert_eq!(out, "secret\n");
}

/// Regression: a SquashFS export that ran out of space said only what the tool said
/// ("finishing data blocks: I/O error", then "tar2sqfs failed (exit status: 1) writing
/// …"): nothing told that the disk was full. Now the hint says so, with the room left
/// when the tool failed; nothing is left behind.
#[test]
fn a_squash_export_on_a_full_disk_says_the_disk_is_full() {
    if !["tar2sqfs", "mksquashfs", "sqfstar"]
        .iter()
        .any(|t| have(t))
    {
        return skip("no SquashFS tool (apt-get install squashfs-tools-ng)");
    }
    let Some(fs) = SmallFs::new("full-squash", 24) else {
        return;
    };
    let s = Scratch::new("full-squash-st");
    let st = s.storage();
    ok(ch(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    let filler = fs.fill_leaving(64 << 10);
    let out = fs.mnt.join("bb.sqfs");
    let (_, err) = fails(
        tool("ch-convert")
            .arg("-s")
            .arg(&st)
            .args(["-o", "squash", "bb"])
            .arg(&out),
    );
    assert!(
        err.contains(&format!(
            "hint: the file system of {} is full",
            fs.mnt.display()
        )),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&fs.mnt)
        .expect("mount")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler" && n != "lost+found")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_file(filler).expect("remove filler");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(&st)
        .args(["-o", "squash", "bb"])
        .arg(&out));
}

/// Found as a stranger: `ch-convert -o oci IMG DIR` on a full disk said "can't write tar
/// stream: No space left on device", naming no file. Now the error names the output, then
/// the layer file it was writing, under the output's staging directory; nothing is left
/// behind.
#[test]
fn an_oci_export_on_a_full_disk_names_the_file_it_could_not_write() {
    let Some(fs) = SmallFs::new("full-oci", 24) else {
        return;
    };
    let s = Scratch::new("full-oci-st");
    let st = s.storage();
    ok(ch(&st).arg("import").arg(busybox_rootfs()).arg("bb"));
    let filler = fs.fill_leaving(64 << 10);
    let out = fs.mnt.join("bb.oci");
    let (code, err) = fails(
        tool("ch-convert")
            .arg("-s")
            .arg(&st)
            .args(["-o", "oci", "bb"])
            .arg(&out),
    );
    assert_eq!(code, 1, "{err}");
    // The output first (session 32), then the layer file of its staging directory.
    let want = format!(
        "error: can't write {} (staged as {}/.bb.oci.ch-convert.",
        out.display(),
        fs.mnt.display()
    );
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("  caused by: can't write layer: ")
                && l.contains(&fs.mnt.display().to_string())
                && l.ends_with("/blobs/sha256/.layer.tmp")),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&fs.mnt)
        .expect("mount")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "filler" && n != "lost+found")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_file(filler).expect("remove filler");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(&st)
        .args(["-o", "oci", "bb"])
        .arg(&out));
}

/// Regression: an import killed (kill -9, or Ctrl-C: nothing catches SIGINT) after it had
/// written some of its packs left them, unreferenced, and `build-cache --gc`, the only
/// way to remove them, first rewrote every stored pack with `git repack -a -d`, which
/// writes what it keeps before it removes anything: on a disk they had filled, it failed
/// for want of room and nothing could free it. Now gc first removes the stored packs
/// that hold nothing any ref reaches.
#[test]
fn gc_after_an_import_killed_on_a_nearly_full_disk_frees_its_packs() {
    let Some(fs) = SmallFs::new("full-killed", 64) else {
        return;
    };
    let s = Scratch::new("full-killed-src");
    let st = fs.mnt.join("st");
    let kept = random_tree(&s, "kept", 300, 40); // 12 MiB, one stored pack
    ok(ch(&st)
        .env("CH_IMAGE_AUTO_COMPACT", "no")
        .arg("import")
        .arg(&kept)
        .arg("kept"));
    let idx = |st: &Path| {
        std::fs::read_dir(st.join("repo.git/objects/pack"))
            .expect("pack dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
            .count()
    };
    // Killed once a pack of its own is in place.
    let big = random_tree(&s, "big", 400, 100); // 40 MiB
    let mut child = Reaped(
        ch(&st)
            .env("CH_IMAGE_AUTO_COMPACT", "no")
            .arg("import")
            .arg(&big)
            .arg("big")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn import"),
    );
    wait_for("a pack of the import", 300, || idx(&st) >= 2);
    child.0.kill().expect("kill import");
    child.0.wait().expect("wait");
    let filler = fs.fill_leaving(2 << 20);
    let out = ok(ch(&st).args(["build-cache", "--gc"]));
    assert!(out.contains("images:"), "{out}");
    assert_eq!(idx(&st), 1);
    assert!(fs.free() > 16 << 20);
    assert_whole(&st, "kept\n");
    std::fs::remove_file(filler).expect("remove filler");
    ok(ch(&st).arg("import").arg(&big).arg("big"));
    assert_whole(&st, "big\nkept\n");
}

/// Regression: an oci-archive given to ch-convert (compressed: zstd here, or not) was
/// unpacked whole into the temporary directory (`--tmp`) with no bound; on a small one
/// the disk filled and the error was "read archive (truncated or corrupt?)", a write
/// error taken for the archive's. Each member is now checked against the space free
/// there: one that does not fit stops the unpacking with an error naming the archive, the
/// directory, what the archive's files take in all and what was free, and a hint; what
/// it unpacked is removed. With room, the same archive converts.
#[test]
fn an_oci_archive_larger_than_the_temporary_directory_is_refused_saying_what_it_needs() {
    let Some(fs) = SmallFs::new("full-oci-in", 16) else {
        return;
    };
    let s = Scratch::new("full-oci-in-src");
    // 24 MiB of random bytes: a layer no compression shrinks, larger than the file system.
    let src = random_tree(&s, "src", 6, 4096);
    let lay = s.join("lay");
    ok(tool("ch-convert")
        .args(["-i", "dir", "-o", "oci"])
        .arg(&src)
        .arg(&lay));
    let archive = s.join("img.tar.zst");
    sh(&format!(
        "tar -C '{}' -cf - . | zstd -q > '{}'",
        lay.display(),
        archive.display()
    ));
    let free = fs.free();
    let out = s.join("out");
    let (code, err) = fails(
        tool("ch-convert")
            .args(["-i", "oci", "--tmp"])
            .arg(&fs.mnt)
            .arg(&archive)
            .arg(&out),
    );
    assert_eq!(code, 1, "{err}");
    eprintln!("{err}");
    let want = format!(
        "can't unpack {} into {}/ch-convert.",
        archive.display(),
        fs.mnt.display()
    );
    assert!(err.contains(&want), "{want:?} not in {err}");
    assert!(
        err.contains("/in: its files take 24.0 MiB, more than the "),
        "{err}"
    );
    assert!(err.contains(" MiB free there"), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("hint: make room there")),
        "{err}"
    );
    assert!(!err.contains("truncated or corrupt"), "{err}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(&fs.mnt)
        .expect("mount")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(fs.free() + (64 << 10) >= free, "{} of {free}", fs.free());
    // With room (the default temporary directory), it converts.
    ok(tool("ch-convert")
        .args(["-i", "oci"])
        .arg(&archive)
        .arg(&out));
    assert!(out.join("faaaa").is_file());
    // Uncompressed, its headers say what it takes: refused before anything is written.
    let plain = s.join("img.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' .",
        lay.display(),
        plain.display()
    ));
    let (code, err) = fails(
        tool("ch-convert")
            .args(["-i", "oci", "--tmp"])
            .arg(&fs.mnt)
            .arg(&plain)
            .arg(s.join("out2")),
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("can't unpack {} into ", plain.display()))
            && err.contains("/in: its files take 24.0 MiB, more than the "),
        "{err}"
    );
    assert!(fs.free() + (64 << 10) >= free, "{} of {free}", fs.free());
}
