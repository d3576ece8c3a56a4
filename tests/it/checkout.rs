//! Checkouts and directory exports (src/store/checkout.rs, src/store/pool.rs): every path
//! an import accepts is written, whatever the length of the directory it is written
//! below, and blocks of zeros become holes.

use crate::common::{busybox_rootfs, ok, own, sh, tool, Scratch};
use crate::hostile_input::path_of;
use crate::store::{chc, chi};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The data of the member `rel` (with or without a leading `./`) of the tarball `tar`.
fn member(tar: &Path, rel: &[u8]) -> Option<Vec<u8>> {
    let f = std::fs::File::open(tar).expect("open exported tarball");
    let mut a = tar::Archive::new(f);
    for e in a.entries().expect("read tarball") {
        let mut e = e.expect("tar entry");
        let p = e.path_bytes().into_owned();
        if p.strip_prefix(b"./").unwrap_or(&p) == rel {
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read member");
            return Some(data);
        }
    }
    None
}

/// `cat` of the relative path `rel` in `dir`, as the test user (a relative path of up to
/// PATH_MAX is fine where `dir/rel` is not).
fn cat_below(dir: &Path, rel: &str) -> String {
    let out = crate::common::output(
        crate::common::unpriv("sh")
            .arg("-c")
            .arg(format!("cd '{}' && cat '{rel}'", dir.display())),
    );
    assert!(
        out.status.success(),
        "cat {rel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Regression: a checkout wrote by absolute path (checkout directory + image path), so an
/// image path that import accepts (up to 4094 bytes, 4095 with its leading `/`) failed
/// once the checkout directory's path was added: `ch-run` of an image with a 4090-byte
/// path said "can't create file: STORAGE/tmp/checkout.PID.0/ddd…: File name too long",
/// and so did `ch-convert` to a directory. Checkouts are now written through directory
/// handles, one name at a time: the image checks out, runs, and exports to a directory
/// and a tarball with the file's data.
#[test]
fn an_image_path_as_long_as_import_takes_checks_out_runs_and_exports() {
    let s = Scratch::new("ckout-path-max");
    let src = s.join("src");
    let rel = String::from_utf8(path_of(4094)).expect("ASCII");
    let (dirs, file) = rel.rsplit_once('/').expect("directories");
    // Busybox and the long path (made by cd-ing down one name at a time), tarred by GNU
    // tar, which walks trees by handles too.
    sh(&format!(
        "cp -a '{bb}' '{src}' && cd '{src}' && for d in {dirs}; do mkdir $d && cd $d; done && \
         echo 'deep data' > {file} && tar --format=gnu -C '{src}' -cf '{tar}' .",
        bb = busybox_rootfs().display(),
        src = src.display(),
        dirs = dirs.replace('/', " "),
        tar = s.join("deep.tar").display(),
    ));
    own(&s.path);
    let st = s.storage();
    ok(chi(&st).arg("import").arg(s.join("deep.tar")).arg("deep"));
    ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["deep", "--", "true"]));
    assert_eq!(
        ok(tool("ch-run")
            .arg("-s")
            .arg(&st)
            .args(["deep", "--", "cat"])
            .arg(format!("/{rel}"))),
        "deep data\n"
    );
    // The checkout holds it (by a relative path: the absolute one is too long).
    let checkout = st.join("img/deep+latest");
    assert_eq!(cat_below(&checkout, &rel), "deep data\n");
    // Exports: a directory and a tarball.
    let out = s.join("out");
    ok(chc(&st).arg("deep").arg(&out));
    assert_eq!(cat_below(&out, &rel), "deep data\n");
    assert_eq!(
        cat_below(&out, "bin/busybox"),
        cat_below(&src, "bin/busybox")
    );
    let tar = s.join("out.tar");
    ok(chc(&st).arg("deep").arg(&tar));
    assert_eq!(
        member(&tar, rel.as_bytes()).as_deref(),
        Some(&b"deep data\n"[..])
    );
}

/// Disk space a file takes (its blocks), in bytes.
fn used(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).expect("stat").blocks() * 512
}

/// Regression: a file's blocks of zeros were written as zeros unless the file was 16 MiB
/// or more (streamed in 256 KiB pieces, a piece of zeros skipped): a file of 5000 bytes of
/// data, 1 MiB of zeros and 100 bytes of data took 1032 KiB in a checkout. Every whole
/// block of 4 KiB of zeros is now a hole, in checkouts (and so in the pool) and directory
/// exports; the data read back is the same, and so is a tarball export's.
#[test]
fn blocks_of_zeros_are_holes_in_checkouts_and_directory_exports() {
    let s = Scratch::new("ckout-sparse");
    let src = s.join("src");
    // A file of 64 MiB of zeros (streamed from the store: over 16 MiB) and one of data,
    // zeros and data (read whole), compressed as a gzip bomb would be.
    sh(&format!(
        "cp -a '{bb}' '{src}' && cd '{src}' && head -c 67108864 /dev/zero > zeros && \
         (head -c 5000 /dev/urandom; head -c 1048576 /dev/zero; head -c 100 /dev/urandom) \
         > mixed && tar -C '{src}' -czf '{tar}' .",
        bb = busybox_rootfs().display(),
        src = src.display(),
        tar = s.join("z.tar.gz").display(),
    ));
    own(&s.path);
    let st = s.storage();
    ok(chi(&st).arg("import").arg(s.join("z.tar.gz")).arg("z"));
    ok(tool("ch-run").arg("-s").arg(&st).args(["z", "--", "true"]));
    let out = s.join("out");
    ok(chc(&st).arg("z").arg(&out));
    let tar = s.join("out.tar");
    ok(chc(&st).arg("z").arg(&tar));
    let checkout = st.join("img/z+latest");
    for name in ["zeros", "mixed"] {
        let want = std::fs::read(src.join(name)).expect("read source");
        for tree in [&checkout, &out] {
            let p = tree.join(name);
            assert!(
                std::fs::read(&p).expect("read back") == want,
                "{} differs from its source",
                p.display()
            );
        }
        assert!(
            member(&tar, name.as_bytes()).expect("member") == want,
            "member {name} of the exported tarball differs from its source"
        );
    }
    // Blocks: the data's (5100 bytes: two or three blocks of 4 KiB), and file systems
    // may allocate some ahead; never the zeros'.
    for tree in [&checkout, &out] {
        let (z, m) = (used(&tree.join("zeros")), used(&tree.join("mixed")));
        eprintln!("{}: zeros takes {z} bytes, mixed {m}", tree.display());
        assert!(z < 1 << 20, "{}: zeros takes {z} bytes", tree.display());
        assert!(m < 256 << 10, "{}: mixed takes {m} bytes", tree.display());
    }
}
