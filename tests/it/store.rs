//! Integration tests for store: `ch-image import`, `list`, `delete`, `undelete`, `reset`,
//! storage directory resolution, checkouts and exports through `ch-convert`, all run as
//! the unprivileged test user. Trees are compared with [`tree`], which records type, mode,
//! size, content hash, symlink target and hard-link group of every entry.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{bin, fails, ok, output, sh, tool, unpriv, Scratch};

/// Comparable snapshots of file trees: from a directory or from a tar stream.
pub mod tree {
    use std::collections::{BTreeMap, HashMap};
    use std::fs;
    use std::io::{self, Read};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::Path;

    /// One entry: what must survive a round trip.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        /// `d`, `f`, `l`, `p`, `c`, `b` or `s`.
        pub kind: char,
        /// Permission bits including setuid, setgid and sticky (0 for symlinks).
        pub mode: u32,
        /// Size of regular files (0 otherwise).
        pub size: u64,
        /// Content hash of regular files.
        pub hash: Option<String>,
        /// Target of symlinks.
        pub target: Option<Vec<u8>>,
        /// Hard-link group of regular files linked within the tree: the smallest path of
        /// the group.
        pub group: Option<Vec<u8>>,
    }

    /// Path (relative, bytes, "" for the root) to entry.
    pub type Map = BTreeMap<Vec<u8>, Entry>;

    fn hash(data: &[u8]) -> String {
        blake3::hash(data).to_hex()[..20].to_string()
    }

    /// Run `f` on `p`, first adding `need` to its permission bits if they lack it (a tree
    /// owned by the current user may hold 0000 entries; root needs no such help).
    fn with_mode<T>(p: &Path, mode: u32, need: u32, f: impl FnOnce() -> io::Result<T>) -> T {
        let raised = mode & need != need && !crate::common::is_root();
        if raised {
            fs::set_permissions(p, fs::Permissions::from_mode(mode | need))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
        }
        let r = f();
        if raised {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(mode));
        }
        r.unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// Snapshot the directory tree at `root`.
    pub fn of_dir(root: &Path) -> Map {
        let mut map = Map::new();
        let mut inodes: HashMap<(u64, u64), Vec<Vec<u8>>> = HashMap::new();
        fn go(
            abs: &Path,
            rel: Vec<u8>,
            map: &mut Map,
            inodes: &mut HashMap<(u64, u64), Vec<Vec<u8>>>,
        ) {
            let md =
                fs::symlink_metadata(abs).unwrap_or_else(|e| panic!("stat {}: {e}", abs.display()));
            let ft = md.file_type();
            let mode = md.mode() & 0o7777;
            let mut e = Entry {
                kind: '?',
                mode,
                size: 0,
                hash: None,
                target: None,
                group: None,
            };
            if ft.is_dir() {
                e.kind = 'd';
                let mut names: Vec<_> = with_mode(abs, mode, 0o500, || {
                    fs::read_dir(abs)?
                        .map(|d| d.map(|d| d.file_name()))
                        .collect::<io::Result<Vec<_>>>()
                });
                names.sort();
                map.insert(rel.clone(), e);
                with_mode(abs, mode, 0o500, || {
                    for n in &names {
                        let mut r = rel.clone();
                        if !r.is_empty() {
                            r.push(b'/');
                        }
                        r.extend_from_slice(n.as_bytes());
                        go(&abs.join(n), r, map, inodes);
                    }
                    Ok(())
                });
                return;
            } else if ft.is_symlink() {
                e.kind = 'l';
                e.mode = 0;
                e.target = Some(
                    fs::read_link(abs)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                );
            } else if ft.is_file() {
                e.kind = 'f';
                e.size = md.len();
                let data = with_mode(abs, mode, 0o400, || fs::read(abs));
                e.hash = Some(hash(&data));
                if md.nlink() > 1 {
                    inodes
                        .entry((md.dev(), md.ino()))
                        .or_default()
                        .push(rel.clone());
                }
            } else if ft.is_fifo() {
                e.kind = 'p';
            } else if ft.is_char_device() {
                e.kind = 'c';
            } else if ft.is_block_device() {
                e.kind = 'b';
            } else if ft.is_socket() {
                e.kind = 's';
            }
            map.insert(rel, e);
        }
        go(root, Vec::new(), &mut map, &mut inodes);
        for paths in inodes.into_values() {
            if paths.len() > 1 {
                let canon = paths.iter().min().expect("non-empty").clone();
                for p in paths {
                    map.get_mut(&p).expect("recorded").group = Some(canon.clone());
                }
            }
        }
        map
    }

    fn normalize(p: &[u8]) -> Vec<u8> {
        let mut p = p;
        while let Some(rest) = p.strip_prefix(b"./") {
            p = rest;
        }
        while let Some(rest) = p.strip_suffix(b"/") {
            p = rest;
        }
        if p == b"." {
            return Vec::new();
        }
        p.to_vec()
    }

    /// Open a possibly compressed tarball (by magic bytes).
    pub fn open_tar(path: &Path) -> Box<dyn Read> {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if data.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(io::Cursor::new(data)))
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::new(io::Cursor::new(data)).expect("zstd"))
        } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Box::new(xz2::read::XzDecoder::new_multi_decoder(io::Cursor::new(
                data,
            )))
        } else if data.starts_with(b"BZh") {
            Box::new(bzip2::read::MultiBzDecoder::new(io::Cursor::new(data)))
        } else {
            Box::new(io::Cursor::new(data))
        }
    }

    /// Snapshot a tarball's members (the root entry is "" when the tarball has one).
    pub fn of_tar(path: &Path) -> Map {
        let mut map = Map::new();
        let mut links: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut ar = tar::Archive::new(open_tar(path));
        for entry in ar.entries().expect("tar entries") {
            let mut entry = entry.expect("tar entry");
            let p = normalize(&entry.path_bytes());
            let h = entry.header();
            let mode = h.mode().expect("mode") & 0o7777;
            use tar::EntryType as T;
            let mut e = Entry {
                kind: '?',
                mode,
                size: 0,
                hash: None,
                target: None,
                group: None,
            };
            match h.entry_type() {
                T::Directory => e.kind = 'd',
                T::Regular | T::Continuous => {
                    e.kind = 'f';
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).expect("tar data");
                    e.size = data.len() as u64;
                    e.hash = Some(hash(&data));
                }
                T::Symlink => {
                    e.kind = 'l';
                    e.mode = 0;
                    e.target = Some(entry.link_name_bytes().expect("target").into_owned());
                }
                T::Link => {
                    let t = normalize(&entry.link_name_bytes().expect("link target"));
                    links.push((t, p));
                    continue;
                }
                T::Fifo => e.kind = 'p',
                T::Char => e.kind = 'c',
                T::Block => e.kind = 'b',
                other => panic!("unexpected tar entry type {other:?}"),
            }
            map.insert(p, e);
        }
        // Hard links: members naming the same earlier file form one group.
        let mut group_of: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (t, p) in &links {
            let root = group_of.get(t).cloned().unwrap_or_else(|| t.clone());
            group_of.insert(t.clone(), root.clone());
            group_of.insert(p.clone(), root);
        }
        let mut members: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for (p, root) in &group_of {
            members.entry(root.clone()).or_default().push(p.clone());
        }
        for (root, paths) in members {
            let target = map
                .get(&root)
                .unwrap_or_else(|| panic!("hard link to missing {}", show(&root)))
                .clone();
            let canon = paths.iter().min().expect("non-empty").clone();
            for p in paths {
                let mut e = target.clone();
                e.group = Some(canon.clone());
                map.insert(p, e);
            }
        }
        map
    }

    pub fn show(p: &[u8]) -> String {
        format!("{:?}", String::from_utf8_lossy(p))
    }

    /// Assert two snapshots are equal, listing the differing paths readably.
    #[track_caller]
    pub fn assert_same(want: &Map, got: &Map, what: &str) {
        if want == got {
            return;
        }
        let mut diffs = Vec::new();
        for (p, w) in want {
            match got.get(p) {
                None => diffs.push(format!("missing {}: {w:?}", show(p))),
                Some(g) if g != w => diffs.push(format!(
                    "differs {}:\n    want {w:?}\n    got  {g:?}",
                    show(p)
                )),
                _ => {}
            }
        }
        for (p, g) in got {
            if !want.contains_key(p) {
                diffs.push(format!("extra {}: {g:?}", show(p)));
            }
        }
        let n = diffs.len();
        diffs.truncate(40);
        panic!("{what}: {n} differences:\n  {}", diffs.join("\n  "));
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// `ch-image -s STORAGE`, as the test user.
pub fn chi(storage: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(storage);
    c
}

/// `ch-convert -s STORAGE`, as the test user.
pub fn chc(storage: &Path) -> Command {
    let mut c = tool("ch-convert");
    c.arg("-s").arg(storage);
    c
}

/// `git -C REPO`, as the test user (the repository's owner).
pub fn git(repo: &Path) -> Command {
    let mut c = unpriv("git");
    c.arg("-C").arg(repo);
    c
}

/// Import `src` as `name`; returns stderr.
pub fn import(storage: &Path, src: &Path, name: &str) -> String {
    let out = output(chi(storage).arg("import").arg(src).arg(name));
    assert!(
        out.status.success(),
        "import {} as {name} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ch-image list -l`: name and commit of every image.
pub fn list_long(storage: &Path) -> String {
    ok(chi(storage).args(["list", "-l"]))
}

/// The commit of an image, from `list -l`.
pub fn commit_of(storage: &Path, name: &str) -> String {
    let l = list_long(storage);
    l.lines()
        .find_map(|line| {
            let (n, c) = line.split_once('\t')?;
            (n == name).then(|| c.to_string())
        })
        .unwrap_or_else(|| panic!("no image {name} in list:\n{l}"))
}

/// Everything observable about the store's images: `list -l`, checkout links and
/// checkouts.
pub fn store_state(storage: &Path) -> String {
    let mut s = list_long(storage);
    for d in ["img", "checkouts"] {
        let mut names: Vec<String> = std::fs::read_dir(storage.join(d))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        s.push_str(&format!("{d}: {names:?}\n"));
    }
    s
}

/// Make the awkward fixture tree at `dest` (as the test user).
pub fn awkward(dest: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/awkward.sh");
    ok(unpriv("sh").arg(&script).arg(dest));
    dest.to_path_buf()
}

/// Python that writes a hostile or broken tarball: `python3 - KIND OUT`.
pub const HOSTILE_PY: &str = r#"
import io, sys, tarfile
kind, out = sys.argv[1], sys.argv[2]
def add(t, name, data=b"x\n", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    t.addfile(ti, io.BytesIO(data))
with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as t:
    add(t, "ok/file")
    if kind == "dotdot":
        add(t, "ok/../../escape")
    elif kind == "absolute":
        add(t, "/etc/evil")
    elif kind == "through-symlink":
        ti = tarfile.TarInfo("link")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "/etc"
        t.addfile(ti)
        add(t, "link/passwd", b"evil\n")
    elif kind == "hardlink-outside":
        ti = tarfile.TarInfo("ok/pw")
        ti.type = tarfile.LNKTYPE
        ti.linkname = "../../etc/passwd"
        t.addfile(ti)
    elif kind == "device":
        ti = tarfile.TarInfo("dev/null")
        ti.type = tarfile.CHRTYPE
        ti.devmajor, ti.devminor, ti.mode = 1, 3, 0o666
        t.addfile(ti)
        add(t, "ok/after")
    elif kind == "big":
        add(t, "ok/big", bytes(range(256)) * 1000)
        add(t, "ok/zzz")
    elif kind == "long-symlink":
        ti = tarfile.TarInfo("ok/long")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "a/" * 2500
        t.addfile(ti)
    elif kind == "long-name":
        add(t, "ok/" + "n" * 256)
    else:
        sys.exit("unknown kind " + kind)
"#;

/// Python 3 for the test user: the system one (a per-user install such as pyenv under
/// /root is out of its reach).
pub fn python3() -> Command {
    let sys = Path::new("/usr/bin/python3");
    unpriv(if sys.exists() {
        sys
    } else {
        Path::new("python3")
    })
}

/// The snapshot an image of `src` must export as: the root directory's mode is always 0755
/// (docs/store-format.md, "meta"), and modes are as FAQ 11.3.8 says ([`faq_modes`]).
pub fn as_image(mut want: tree::Map) -> tree::Map {
    if let Some(root) = want.get_mut(&Vec::new()) {
        root.mode = 0o755;
    }
    faq_modes(want)
}

/// Modes as every import and pull records them (FAQ 11.3.8): directories at least
/// `rwx------`, files and FIFOs at least `rw-------`, no setuid or setgid bits.
pub fn faq_modes(mut want: tree::Map) -> tree::Map {
    for e in want.values_mut() {
        match e.kind {
            'd' => e.mode = (e.mode | 0o700) & !0o6000,
            'f' | 'p' => e.mode = (e.mode | 0o600) & !0o6000,
            _ => {}
        }
    }
    want
}

/// Write a hostile tarball of `kind` at `out`, as the test user.
pub fn hostile_tar(scratch: &Scratch, kind: &str, out: &Path) {
    let py = scratch.join("hostile.py");
    if !py.exists() {
        std::fs::write(&py, HOSTILE_PY).expect("write hostile.py");
    }
    ok(python3().arg(&py).arg(kind).arg(out));
}

/// Import must fail with every text of `expect` in its stderr, and leave the store as it
/// was, both under a new name and under an existing one.
pub fn assert_import_refused(scratch: &Scratch, tarball: &Path, expect: &[&str]) {
    let st = scratch.storage();
    let base = scratch.join("base");
    if !base.exists() {
        sh(&format!(
            "mkdir {0} && echo base > {0}/file",
            base.display()
        ));
    }
    import(&st, &base, "existing");
    let before = store_state(&st);
    for name in ["fresh", "existing"] {
        let (code, err) = fails(chi(&st).arg("import").arg(tarball).arg(name));
        assert_eq!(code, 1, "exit code; stderr:\n{err}");
        assert!(
            err.lines().any(|l| l.starts_with("error: ")),
            "stderr:\n{err}"
        );
        for e in expect {
            assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
        }
        assert_eq!(
            store_state(&st),
            before,
            "store changed by failed import as {name}"
        );
    }
    ok(git(&st.join("repo.git")).arg("fsck"));
}

fn raise_checkout(e: &tree::Entry) -> tree::Entry {
    let mut e = e.clone();
    e.mode = match e.kind {
        'd' => (e.mode | 0o700) & !0o6000,
        'f' | 'p' => (e.mode | 0o600) & !0o6000,
        _ => e.mode,
    };
    e
}

// ---------------------------------------------------------------------------------------
// Round trips

#[test]
fn awkward_tree_round_trips_through_import_dir_export_and_tar_export() {
    let s = Scratch::new("awkward");
    let st = s.storage();
    let src = awkward(&s.join("src"));
    // Exact but for the modes FAQ 11.3.8 gives imports.
    let want = faq_modes(tree::of_dir(&src));
    import(&st, &src, "awkward");
    let commit = commit_of(&st, "awkward:latest");

    // Directory export: exact, plus the mount points ch-convert adds to directories.
    let out = s.join("out");
    ok(chc(&st).arg("awkward").arg(&out));
    let want_dir = crate::convert::with_mount_points(want.clone());
    tree::assert_same(&want_dir, &tree::of_dir(&out), "directory export vs source");

    // Tar export: exact members, and re-importing it gives the same commit.
    let tarball = s.join("awkward.tar");
    ok(chc(&st).arg("awkward").arg(&tarball));
    tree::assert_same(&want, &tree::of_tar(&tarball), "tar export vs source");
    import(&st, &tarball, "again");
    assert_eq!(commit_of(&st, "again:latest"), commit);
    let out2 = s.join("out2");
    ok(chc(&st).arg("again").arg(&out2));
    tree::assert_same(
        &want_dir,
        &tree::of_dir(&out2),
        "export of re-imported tar vs source",
    );

    // Stock git is happy with the repository and can read an image.
    let repo = st.join("repo.git");
    ok(git(&repo).args(["fsck", "--strict"]));
    let r = "refs/grove/img/awkward+latest";
    let meta = ok(git(&repo).args(["show", &format!("{r}:meta")]));
    assert!(meta.starts_with("grove-meta 2 "), "{meta}");
    assert!(meta.contains("fifo 0640 top-fifo\n"), "{meta}");
    assert!(meta.contains("dir 0700 zero/locked-empty\n"), "{meta}");
    let log = ok(git(&repo).args(["log", "--format=%H %s", r]));
    assert_eq!(log.trim(), format!("{commit} IMPORT"));
    // No record keeps a setuid or setgid bit (FAQ 11.3.8). Only the mode field is
    // looked at: `time` records hold digits that may spell anything.
    for line in meta.lines().skip(1) {
        let f: Vec<&str> = line.split(' ').collect();
        if matches!(f[0], "mode" | "dir" | "fifo") {
            let m = u32::from_str_radix(f[1], 8).expect("octal mode");
            assert_eq!(m & 0o6000, 0, "setuid or setgid bit recorded: {line}");
        }
    }
    assert!(meta.contains("mode 0750 modes/both\n"), "{meta}");
    // `.git` names are stored escaped; the escaped tree has no entry git would refuse.
    let tree = ok(git(&repo).args(["ls-tree", "--name-only", &format!("{r}:rootfs/gitnames")]));
    assert!(tree.lines().any(|l| l == ".grove-.git"), "{tree}");
    assert!(tree.lines().any(|l| l == ".grove-.grove-x"), "{tree}");
    assert!(
        !tree
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with(".git")),
        "{tree}"
    );
}

#[test]
fn tarballs_plain_gzip_zstd_xz_bzip2_lzma_import_like_the_directory() {
    let s = Scratch::new("compress");
    let st = s.storage();
    let src = awkward(&s.join("src"));
    // GNU tar cannot read the test user's unreadable files; the rest is awkward enough.
    sh(&format!(
        "cd {} && chmod -R u+rwx zero && rm -rf zero && rm hl/zero hl/zero-link modes/exec-user-only modes/write-only",
        src.display()
    ));
    let want = faq_modes(tree::of_dir(&src));
    import(&st, &src, "dir");
    let dir_commit = commit_of(&st, "dir:latest");
    let d = s.path.display();
    let srcd = src.display();
    sh(&format!(
        "cd {d} && tar -C {srcd} -cf plain.tar . && gzip -c plain.tar > t.tar.gz \
         && zstd -q plain.tar -o t.tar.zst && xz -c plain.tar > t.tar.xz \
         && xz --format=lzma -c plain.tar > t.tar.lzma && cp t.tar.gz renamed.bin"
    ));
    // bzip2 from the crate (no bzip2 program needed), in two streams as pbzip2 writes.
    crate::common::bzip2_file(&s.join("plain.tar"), &s.join("t.tar.bz2"), 2);
    for (i, f) in [
        "plain.tar",
        "t.tar.gz",
        "t.tar.zst",
        "t.tar.xz",
        "t.tar.bz2",
        "t.tar.lzma",
        "renamed.bin",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("t{i}");
        import(&st, &s.join(f), &name);
        assert_eq!(commit_of(&st, &format!("{name}:latest")), dir_commit, "{f}");
        let out = s.join(format!("out{i}"));
        ok(chc(&st).arg(&name).arg(&out));
        tree::assert_same(
            &crate::convert::with_mount_points(want.clone()),
            &tree::of_dir(&out),
            f,
        );
    }
}

#[test]
fn tarbomb_keeps_all_top_level_entries() {
    let s = Scratch::new("bomb");
    let st = s.storage();
    sh(&format!(
        "cd {} && mkdir src && cd src && mkdir a b && echo 1 > a/x && echo 2 > top \
         && ln -s a c && tar -cf ../bomb.tar a b top c",
        s.path.display()
    ));
    import(&st, &s.join("bomb.tar"), "bomb");
    let out = s.join("out");
    ok(chc(&st).arg("bomb").arg(&out));
    tree::assert_same(
        &crate::convert::with_mount_points(tree::of_dir(&s.join("src"))),
        &tree::of_dir(&out),
        "tarbomb",
    );
}

#[test]
fn tarball_with_single_top_directory_has_it_stripped() {
    let s = Scratch::new("topdir");
    let st = s.storage();
    sh(&format!(
        "cd {} && mkdir -p img/usr/bin img/etc && echo 1 > img/etc/f && chmod 0750 img \
         && tar -cf top.tar img && tar -cf dottop.tar ./img",
        s.path.display()
    ));
    let want = as_image(tree::of_dir(&s.join("img")));
    for (i, t) in ["top.tar", "dottop.tar"].iter().enumerate() {
        import(&st, &s.join(t), &format!("top{i}"));
        let out = s.join(format!("out{i}"));
        ok(chc(&st).arg(format!("top{i}")).arg(&out));
        tree::assert_same(
            &crate::convert::with_mount_points(want.clone()),
            &tree::of_dir(&out),
            t,
        );
    }
}

/// Regression: `tar -C DIR -cf X .` of a tree whose only top entry is a directory lost
/// that directory (it was taken for a single top directory to strip).
#[test]
fn tarball_of_dot_with_one_top_directory_keeps_it() {
    let s = Scratch::new("dotone");
    let st = s.storage();
    sh(&format!(
        "cd {} && mkdir -p src/usr/bin && echo 1 > src/usr/bin/f && tar -C src -cf one.tar .",
        s.path.display()
    ));
    let src = s.join("src");
    import(&st, &s.join("one.tar"), "one");
    import(&st, &src, "onedir");
    assert_eq!(
        commit_of(&st, "one:latest"),
        commit_of(&st, "onedir:latest")
    );
    // And an exported image with one top directory survives tar export and re-import.
    let t = s.join("export.tar");
    ok(chc(&st).arg("onedir").arg(&t));
    import(&st, &t, "reimported");
    assert_eq!(
        commit_of(&st, "reimported:latest"),
        commit_of(&st, "onedir:latest")
    );
}

#[test]
fn checkout_and_export_raise_minimum_permissions_and_drop_setuid() {
    let s = Scratch::new("checkout");
    let st = s.storage();
    let src = awkward(&s.join("src"));
    let want = tree::of_dir(&src);
    import(&st, &src, "localhost:5000/a/b:1.0");
    let commit = commit_of(&st, "localhost:5000/a/b:1.0");
    let link = st.join("img/localhost+5000%a%b+1.0");
    // The import links the name to a checkout made on first use.
    assert!(!link.exists(), "import checked out eagerly");
    ok(chi(&st).args(["checkout", "localhost:5000/a/b:1.0"]));
    let target = std::fs::read_link(&link).expect("checkout link is a symlink");
    assert_eq!(target, Path::new("../checkouts").join(&commit));
    let raised: tree::Map = want
        .iter()
        .map(|(p, e)| (p.clone(), raise_checkout(e)))
        .collect();
    let co = tree::of_dir(&std::fs::canonicalize(&link).expect("resolve checkout link"));
    tree::assert_same(&raised, &co, "checkout vs raised source");
    // Spot checks, so the rule itself is pinned here and not only in raise_checkout.
    assert_eq!(co[&b"modes/setuid"[..]].mode, 0o755);
    assert_eq!(co[&b"modes/both"[..]].mode, 0o750);
    assert_eq!(co[&b"modes/sticky"[..]].mode, 0o1777);
    assert_eq!(co[&b"zero/locked"[..]].mode, 0o700);
    assert_eq!(co[&b"zero/file"[..]].mode, 0o600);
    // The export of the same image agrees: import recorded the FAQ 11.3.8 modes.
    let out = s.join("out");
    ok(chc(&st).arg("localhost:5000/a/b:1.0").arg(&out));
    tree::assert_same(
        &crate::convert::with_mount_points(faq_modes(want)),
        &tree::of_dir(&out),
        "export vs source",
    );
    let ex = tree::of_dir(&out);
    assert_eq!(ex[&b"modes/setuid"[..]].mode, 0o755);
    assert_eq!(ex[&b"zero/locked"[..]].mode, 0o700);
}

// ---------------------------------------------------------------------------------------
// Hostile and broken tarballs

/// An import leaves the checkout to first use, as a pull does (issue 13: at import it
/// cost a third of the time): until then the image is objects only, and an export, a
/// build `FROM` it and `ch-run NAME` all work on it.
#[test]
fn import_leaves_the_checkout_to_first_use() {
    let s = Scratch::new("lazyimport");
    let st = s.storage();
    import(&st, &crate::common::busybox_rootfs(), "bb");
    let checkouts = || {
        std::fs::read_dir(st.join("checkouts"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(checkouts(), 0, "import checked out");
    let tar = s.join("bb.tar");
    ok(chc(&st).arg("bb").arg(&tar));
    let listing =
        String::from_utf8_lossy(&sh(&format!("tar -tf '{}'", tar.display())).stdout).into_owned();
    assert!(listing.lines().any(|l| l == "./etc/motd"), "{listing}");
    assert_eq!(checkouts(), 0, "export checked out");
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir '{0}' && printf 'FROM bb\\nRUN echo built > /built\\n' > '{0}/Dockerfile'",
        ctx.display()
    ));
    ok(chi(&st).args(["build", "-t", "child"]).arg(&ctx));
    let out =
        ok(tool("ch-run")
            .arg("-s")
            .arg(&st)
            .args(["child", "--", "cat", "/built", "/etc/motd"]));
    assert_eq!(out, "built\ngrove busybox fixture\n");
    let out = ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["bb", "--", "cat", "/etc/motd"]));
    assert_eq!(out, "grove busybox fixture\n");
    assert!(
        st.join("img/bb+latest/etc/motd").is_file(),
        "ch-run NAME did not check the image out"
    );
}

#[test]
fn import_refuses_dotdot_member_and_leaves_store_unchanged() {
    let s = Scratch::new("dotdot");
    let t = s.join("dotdot.tar");
    hostile_tar(&s, "dotdot", &t);
    assert_import_refused(&s, &t, &["member ok/../../escape", "'..'"]);
}

#[test]
fn import_refuses_absolute_member_and_leaves_store_unchanged() {
    let s = Scratch::new("absolute");
    let t = s.join("absolute.tar");
    hostile_tar(&s, "absolute", &t);
    assert_import_refused(&s, &t, &["member /etc/evil", "absolute"]);
}

#[test]
fn import_refuses_member_through_symlink_and_leaves_store_unchanged() {
    let s = Scratch::new("throughlink");
    let t = s.join("through.tar");
    hostile_tar(&s, "through-symlink", &t);
    assert_import_refused(&s, &t, &["member link/passwd", "symlink link"]);
}

#[test]
fn import_refuses_hard_link_to_outside_and_leaves_store_unchanged() {
    let s = Scratch::new("hardout");
    let t = s.join("hardout.tar");
    hostile_tar(&s, "hardlink-outside", &t);
    assert_import_refused(
        &s,
        &t,
        &["member ok/pw", "hard link target ../../etc/passwd", "'..'"],
    );
}

#[test]
fn import_refuses_truncated_tarball_and_leaves_store_unchanged() {
    let s = Scratch::new("truncated");
    let big = s.join("big.tar");
    hostile_tar(&s, "big", &big);
    let d = s.path.display();
    // Cut in the middle of ok/big's data, plain and gzipped.
    sh(&format!(
        "cd {d} && head -c 100000 big.tar > cut.tar && gzip -c big.tar > big.tar.gz \
         && head -c $(( $(stat -c %s big.tar.gz) / 2 )) big.tar.gz > cut.tar.gz"
    ));
    assert_import_refused(&s, &s.join("cut.tar"), &["cut.tar", "ok/big", "truncated"]);
    assert_import_refused(&s, &s.join("cut.tar.gz"), &["cut.tar.gz", "ok/big"]);
}

/// Regression test: a 5000-byte symlink target was stored, and every checkout, export
/// and `fsck` of the image then failed ('symlink target too long'); a name longer than
/// NAME_MAX was stored too, which no checkout can write.
#[test]
fn import_refuses_symlink_targets_and_names_no_file_system_holds() {
    let s = Scratch::new("longnames");
    let t = s.join("long-symlink.tar");
    hostile_tar(&s, "long-symlink", &t);
    assert_import_refused(
        &s,
        &t,
        &[
            "member ok/long",
            "symlink target is 5000 bytes, longer than 4095",
        ],
    );
    let t = s.join("long-name.tar");
    hostile_tar(&s, "long-name", &t);
    assert_import_refused(
        &s,
        &t,
        &[
            "member ok/nnnn",
            "a name in its path is longer than 255 bytes",
        ],
    );
}

/// Python that writes a gzipped tarball whose first member has a GNU long name record
/// (`L`) or a PAX record (`x`) of 64 MiB, then a member `f`: `python3 - TYPE OUT`.
const HEADER_BOMB_PY: &str = r#"
import gzip, sys, tarfile
typ, out = sys.argv[1], sys.argv[2]
size = 64 << 20
with gzip.open(out, "wb", compresslevel=1) as g:
    ti = tarfile.TarInfo("././@LongLink")
    ti.size, ti.type = size, typ.encode()
    g.write(ti.tobuf(format=tarfile.GNU_FORMAT))
    if typ == "x":
        head = b"%d comment=" % size
        g.write(head)
        left = size - len(head) - 1
    else:
        left = size - 1
    chunk = b"a" * (1 << 20)
    while left > 0:
        g.write(chunk[: min(left, len(chunk))])
        left -= min(left, len(chunk))
    g.write(b"\n" if typ == "x" else b"\0")
    g.write(tarfile.TarInfo("f").tobuf(format=tarfile.GNU_FORMAT))
    g.write(bytes(1024))
"#;

/// Regression test: the tar reader reads a member's GNU long name and PAX records whole
/// into memory, unbounded; a 1.5 MiB gzip of a 1.5 GiB long name made `ch-image import`
/// use 11 GB of memory for 9 minutes (and store the name). Now more than 16 MiB of
/// headers before a member is refused, for import, ch-convert and ADD alike.
#[test]
fn tar_member_headers_of_megabytes_are_refused_with_bounded_memory() {
    let s = Scratch::new("headerbomb");
    let py = s.join("bomb.py");
    std::fs::write(&py, HEADER_BOMB_PY).expect("write bomb.py");
    for typ in ["L", "x"] {
        let t = s.join(format!("bomb-{typ}.tar.gz"));
        ok(python3().arg(&py).arg(typ).arg(&t));
        assert_import_refused(
            &s,
            &t,
            &[
                "after member (none: first member)",
                "more than 16777216 bytes of headers before a member",
            ],
        );
        let st = s.storage();
        let out = output(
            unpriv("/usr/bin/time")
                .args(["-f", "maxrss_kb=%M"])
                .arg(bin("ch-image"))
                .arg("-s")
                .arg(&st)
                .arg("import")
                .arg(&t)
                .arg("bomb"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        let kb: u64 = err
            .lines()
            .find_map(|l| l.strip_prefix("maxrss_kb="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no maxrss in {err}"));
        eprintln!("import of a {typ} record of 64 MiB: max RSS {kb} KiB");
        assert!(kb < 100 * 1024, "a {typ} record of 64 MiB used {kb} KiB");
        let (_, err) = fails(
            unpriv(bin("ch-convert"))
                .arg(&t)
                .arg(s.join(format!("out-{typ}"))),
        );
        assert!(err.contains("bytes of headers before a member"), "{err}");
        // ADD of the archive in a build.
        let ctx = s.join(format!("ctx-{typ}"));
        std::fs::create_dir(&ctx).expect("mkdir context");
        std::fs::rename(&t, ctx.join("bomb.tar.gz")).expect("move tarball");
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nADD bomb.tar.gz /\n")
            .expect("write Dockerfile");
        crate::common::own(&ctx);
        let (_, err) = fails(
            unpriv(bin("ch-image"))
                .arg("-s")
                .arg(&st)
                .args(["build", "-t", "bomb"])
                .arg(&ctx),
        );
        assert!(
            err.contains("Dockerfile:2") && err.contains("bytes of headers before a member"),
            "{err}"
        );
    }
}

/// Also a regression test: the skipped top-level `dev/` made the archive look like one
/// with a single top directory, and `ok/` was stripped.
#[test]
fn import_skips_device_member_with_warning_naming_it() {
    let s = Scratch::new("device");
    let st = s.storage();
    let t = s.join("dev.tar");
    hostile_tar(&s, "device", &t);
    let err = import(&st, &t, "dev");
    assert!(
        err.contains("dev/null"),
        "warning should name the member:\n{err}"
    );
    assert!(err.contains("warning") || err.contains("skipping"), "{err}");
    let out = s.join("out");
    ok(chc(&st).arg("dev").arg(&out));
    let got = tree::of_dir(&out);
    assert!(!got.contains_key(&b"dev/null"[..]), "device was created");
    assert!(
        got.contains_key(&b"ok/after"[..]),
        "members after the device are kept"
    );
}

// ---------------------------------------------------------------------------------------
// Crash safety and concurrency

/// A tree of `n` small files in `dir`, made by the test user.
fn many_files(s: &Scratch, dir: &Path, n: usize) {
    let py = s.join("many.py");
    std::fs::write(
        &py,
        "import os, sys\nd, n = sys.argv[1], int(sys.argv[2])\n\
         for i in range(n):\n    sub = os.path.join(d, 'd%03d' % (i % 200))\n    \
         os.makedirs(sub, exist_ok=True)\n    \
         open(os.path.join(sub, 'f%05d' % i), 'w').write('file %d\\n' % i)\n",
    )
    .expect("write many.py");
    ok(python3().arg(&py).arg(dir).arg(n.to_string()));
}

#[test]
fn kill_9_during_import_leaves_a_consistent_repository() {
    let s = Scratch::new("kill9");
    let st = s.storage();
    let big = s.join("big");
    many_files(&s, &big, 20_000);
    import(&st, &s.join("big/d000"), "big");
    let mut killed = 0;
    // Killed at points of its progress through the tree (read system calls made so far;
    // 20,000 files take at least as many).
    for reads in [500u64, 2_000, 5_000, 10_000, 20_000] {
        if crate::common::kill_after(chi(&st).arg("import").arg(&big).arg("big"), "syscr", reads) {
            killed += 1;
        }
        ok(git(&st.join("repo.git")).arg("fsck"));
        assert!(list_long(&st).contains("big:latest\t"));
    }
    eprintln!("killed {killed} of 5 imports part-way");
    assert!(
        killed > 0,
        "import always finished before the kill; make the tree bigger"
    );
    import(&st, &big, "big");
    let out = s.join("out");
    ok(chc(&st).arg("big").arg(&out));
    tree::assert_same(
        &crate::convert::with_mount_points(tree::of_dir(&big)),
        &tree::of_dir(&out),
        "import after kills",
    );
    ok(git(&st.join("repo.git")).arg("fsck"));
    // Scratch space of killed writers is cleared by the next writer.
    let tmp: Vec<_> = std::fs::read_dir(st.join("tmp")).expect("tmp").collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

/// The names in `objects/pack` of storage directory `st`, sorted.
pub fn pack_files(st: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(st.join("repo.git/objects/pack"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Regression: ^C (SIGINT) or SIGTERM ended an import where it was, as kill -9 does: the
/// packs it had put in place stayed (nothing referenced them) until `build-cache --gc`.
/// Now it ends through the path of a failed import: what it wrote is removed, and it
/// dies of the signal, as a shell expects.
#[test]
fn import_stopped_by_sigint_or_sigterm_removes_what_it_wrote() {
    use std::os::unix::process::ExitStatusExt;
    let s = Scratch::new("sigimport");
    let st = s.storage();
    import(&st, &crate::common::busybox_rootfs(), "bb");
    let before = pack_files(&st);
    // A tarball of 48 MiB of random bytes in 8 MiB files: three packs of stored entries.
    let big = s.join("big.tar");
    sh(&format!(
        "cd '{0}' && mkdir big && cd big && head -c 48M /dev/urandom | split -b 8M - f \
         && tar -cf ../big.tar . && cd .. && rm -r big",
        s.path.display()
    ));
    for (sig, n) in [("INT", 2), ("TERM", 15)] {
        let mut c =
            crate::common::with_default_signals(chi(&st).arg("import").arg(&big).arg("big"));
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn import");
        let pid = child.id();
        // The signal comes once a pack is in place; stopped meanwhile, so that the import
        // is still at work when it comes.
        crate::common::wait_for("a pack of the import", 600, || {
            pack_files(&st).iter().any(|p| !before.contains(p))
        });
        crate::common::send("STOP", pid);
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "import finished before the signal; make the tree bigger"
        );
        crate::common::send(sig, pid);
        crate::common::send("CONT", pid);
        let out = child.wait_with_output().expect("wait for the import");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(n),
            "SIG{sig}: {}\n{err}",
            out.status
        );
        assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
        assert!(err.contains("removed the"), "{err}");
        assert_eq!(pack_files(&st), before, "SIG{sig}: {err}");
        let tmp: Vec<_> = std::fs::read_dir(st.join("tmp")).expect("tmp").collect();
        assert!(tmp.is_empty(), "SIG{sig}: {tmp:?}");
        assert_eq!(ok(chi(&st).arg("list")), "bb\n");
    }
    ok(chi(&st).arg("fsck"));
    ok(git(&st.join("repo.git")).args(["fsck", "--strict"]));
    import(&st, &big, "big");
    ok(git(&st.join("repo.git")).args(["fsck", "--strict"]));
}

/// Processes whose command line names `path` (a git that gc started on the store).
fn processes_naming(path: &Path) -> Vec<String> {
    let want = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&want))
        .collect()
}

/// Regression: ^C (SIGINT) or SIGTERM killed `build-cache --gc` where it was: the git
/// repack it ran went on alone (holding the store's lock) and, killed in turn, left its
/// temporary pack in `objects/pack` until the next gc. Now gc ends through its error
/// path: git and its pack-objects get the signal, their temporary files go, and gc dies
/// of the signal; the store is usable and its images whole.
#[test]
fn gc_stopped_by_sigint_or_sigterm_ends_its_git_and_removes_its_temporary_pack() {
    use std::os::unix::process::ExitStatusExt;
    let s = Scratch::new("siggc");
    let st = s.storage();
    let big = s.join("big");
    sh(&format!(
        "mkdir {0} && cd {0} && head -c 64M /dev/urandom | split -b 8M - f",
        big.display()
    ));
    for (sig, n) in [("INT", 2), ("TERM", 15)] {
        // Stored (uncompressed) packs, which gc recompresses with git repack.
        ok(chi(&st)
            .env("CH_IMAGE_AUTO_COMPACT", "no")
            .arg("import")
            .arg(&big)
            .arg(format!("big{n}")));
        let mut c = crate::common::with_default_signals(chi(&st).args(["build-cache", "--gc"]));
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn gc");
        let pack = st.join("repo.git/objects/pack");
        let temporary = || -> Vec<String> {
            std::fs::read_dir(&pack)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with("pack-"))
                        .collect()
                })
                .unwrap_or_default()
        };
        crate::common::wait_for("git's temporary pack", 600, || {
            !temporary().is_empty() || child.try_wait().expect("try_wait").is_some()
        });
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "gc finished before the signal; make the image bigger"
        );
        crate::common::send(sig, child.id());
        let out = child.wait_with_output().expect("wait for gc");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(n),
            "SIG{sig}: {}\n{err}",
            out.status
        );
        assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
        assert_eq!(
            processes_naming(&st),
            Vec::<String>::new(),
            "SIG{sig}: {err}"
        );
        assert_eq!(temporary(), Vec::<String>::new(), "SIG{sig}: {err}");
        ok(chi(&st).arg("fsck"));
        ok(git(&st.join("repo.git")).args(["fsck", "--strict"]));
    }
    // The store is usable: a gc left alone finishes.
    ok(chi(&st).args(["build-cache", "--gc"]));
    assert_eq!(ok(chi(&st).arg("list")), "big15\nbig2\n");
}

/// Regression: `ch-image fsck` right after a kill -9 of a writer reported the dead
/// writer's temporary pack as a problem (exit 1) until the next writer removed it.
/// Leftovers of writers that are gone are not damage: fsck says what they are and that
/// the next writer removes them, and passes; it removes nothing, and says nothing of a
/// live writer's temporary files.
#[test]
fn fsck_after_a_kill_9_says_what_the_dead_writer_left_and_passes() {
    let s = Scratch::new("fsck-kill9");
    let st = s.storage();
    import(&st, &crate::common::busybox_rootfs(), "bb");
    // A tarball: its contents stream into a pack, which is a temporary pack meanwhile.
    let big = s.join("big.tar");
    sh(&format!(
        "cd '{0}' && mkdir big && cd big && head -c 64M /dev/urandom | split -b 8M - f \
         && tar -cf ../big.tar . && cd .. && rm -r big",
        s.path.display()
    ));
    let pack = st.join("repo.git/objects/pack");
    let temporary = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&pack)
            .expect("pack dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tmp_grove_"))
            .collect();
        v.sort();
        v
    };
    // Stop the import while it writes a pack (it may have renamed it by then: again).
    let mut attempts = 0;
    let (mut child, pid, live) = loop {
        attempts += 1;
        assert!(
            attempts <= 10,
            "never stopped the import while it wrote a pack"
        );
        let mut c = chi(&st);
        c.env("CH_IMAGE_AUTO_COMPACT", "no")
            .arg("import")
            .arg(&big)
            .arg("big")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = crate::common::Reaped(c.spawn().expect("spawn import"));
        let pid = child.0.id();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(600);
        while temporary().is_empty() && child.0.try_wait().expect("try_wait").is_none() {
            assert!(std::time::Instant::now() < end, "import hangs");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if child.0.try_wait().expect("try_wait").is_some() {
            ok(chi(&st).args(["delete", "big"]));
            continue;
        }
        crate::common::send("STOP", pid);
        let live = temporary();
        if live.is_empty() {
            crate::common::send("KILL", pid);
            child.0.wait().expect("wait");
            continue;
        }
        break (child, pid, live);
    };
    // A live writer's temporary pack is not mentioned (nor touched).
    let out = output(chi(&st).arg("fsck"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("tmp_grove_"), "{err}");
    assert_eq!(temporary(), live);
    // Dead (kill -9): said to be a leftover, not damage; kept for the next writer.
    crate::common::send("KILL", pid);
    child.0.wait().expect("wait");
    let out = output(chi(&st).arg("fsck"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{err}");
    for t in &live {
        assert!(
            err.lines()
                .any(|l| l.contains(t.as_str()) && l.contains("the next writer")),
            "{t}: {err}"
        );
    }
    assert_eq!(temporary(), live);
    let json = ok(chi(&st).args(["fsck", "--json"]));
    assert!(json.contains("\"ok\": true"), "{json}");
    assert!(json.contains(&live[0]), "{json}");
    // The next writer (alone) removes them; then there is nothing to say.
    import(&st, &crate::common::busybox_rootfs(), "bb2");
    assert_eq!(temporary(), Vec::<String>::new());
    let out = output(chi(&st).arg("fsck"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("not damage"), "{err}");
}

/// Regression: a writer killed while updating a ref leaves `REF.lock` behind, and every
/// later import under that name failed ("lockfile ... might need manual deletion").
#[test]
fn ref_lock_left_by_a_killed_writer_does_not_block_the_next_import() {
    let s = Scratch::new("reflock");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!("mkdir {0} && echo 1 > {0}/f", src.display()));
    import(&st, &src, "x");
    let refs = st.join("repo.git/refs/grove/img");
    sh(&format!(
        "echo junk > {0}/x+latest.lock && echo junk > {0}/y+latest.lock && echo junk > {1}",
        refs.display(),
        st.join("repo.git/packed-refs.lock").display()
    ));
    sh(&format!("echo 2 > {}/g", src.display()));
    import(&st, &src, "x");
    import(&st, &src, "y");
    assert_eq!(commit_of(&st, "x:latest"), commit_of(&st, "y:latest"));
    ok(git(&st.join("repo.git")).arg("fsck"));
}

/// A container run by name keeps its image's files while writers replace, delete or add
/// images (each writer that can lock alone removes checkouts no name links to), and
/// maintenance waits for it.
#[test]
fn running_container_keeps_its_checkout_while_writers_change_the_store() {
    let s = Scratch::new("lease");
    let st = s.storage();
    import(&st, &crate::common::busybox_rootfs(), "bb");
    let other = s.join("other");
    sh(&format!("mkdir {0} && echo 2 > {0}/f", other.display()));
    let sync = s.join("sync");
    std::fs::create_dir(&sync).expect("mkdir sync");
    // Killed if the test fails half-way.
    let mut container = crate::common::Reaped(
        tool("ch-run")
            .arg("-s")
            .arg(&st)
            .arg("-b")
            .arg(format!("{}:/mnt", sync.display()))
            .args(["bb", "--", "/bin/sh", "-c"])
            .arg(
                "echo ready; i=0; while [ ! -e /mnt/go ] && [ $i -lt 1200 ]; do \
             sleep 0.05; i=$((i+1)); done; cat /etc/motd; ls /bin | wc -l",
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ch-run"),
    );
    let mut out = container.0.stdout.take().expect("stdout");
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).expect("ready");
    let before = std::fs::read_dir(crate::common::busybox_rootfs().join("bin"))
        .expect("ls fixture bin")
        .count();
    // Replace bb, delete it, and write other images: each writer would prune bb's old
    // checkout if it could lock the storage alone.
    import(&st, &other, "bb");
    ok(chi(&st).args(["delete", "bb"]));
    import(&st, &other, "two");
    import(&st, &other, "three");
    let mut gc = chi(&st)
        .args(["build-cache", "--gc"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gc");
    // gc must wait for the container: it says so before it blocks.
    let mut gc_err = std::io::BufReader::new(gc.stderr.take().expect("gc stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut gc_err, &mut line).expect("read gc stderr");
        assert!(n > 0, "gc did not wait for the running container");
        if line.contains("waiting for lock on storage directory") {
            break;
        }
    }
    assert!(
        gc.try_wait().expect("try_wait").is_none(),
        "gc finished early"
    );
    std::fs::write(sync.join("go"), "").expect("write go");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    assert!(container.0.wait().expect("wait").success());
    assert_eq!(rest, format!("grove busybox fixture\n{before}\n"));
    // gc then runs.
    let mut err = String::new();
    std::io::Read::read_to_string(&mut gc_err, &mut err).expect("read gc stderr");
    assert!(gc.wait().expect("wait gc").success(), "{err}");
    // And then the unlinked checkout was removed by the next writer (whose import
    // leaves its own checkout to first use).
    import(&st, &other, "four");
    let checkouts = std::fs::read_dir(st.join("checkouts"))
        .expect("ls checkouts")
        .count();
    assert_eq!(checkouts, 0, "the unlinked checkout is left");
}

#[test]
fn readers_are_not_blocked_by_a_writer() {
    use nix::fcntl::{Flock, FlockArg};
    let s = Scratch::new("readers");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!("mkdir {0} && echo 1 > {0}/f", src.display()));
    import(&st, &src, "one");
    let lock_file = std::fs::File::open(st.join("lock")).expect("open lock");
    let held = Flock::lock(lock_file, FlockArg::LockExclusive).expect("take writer lock");
    // A writer waits: it says so on stderr once it has found the lock taken.
    let mut writer = crate::common::Reaped(
        chi(&st)
            .arg("import")
            .arg(&src)
            .arg("two")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn import"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stderr = std::io::BufReader::new(writer.0.stderr.take().expect("stderr"));
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) > 0 {
            if line.contains("waiting for lock") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            line.clear();
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the writer never said it waits for the lock");
    // ... while readers answer (one that waited for the lock would never finish: the
    // test holds it).
    for _ in 0..3 {
        let out =
            crate::registry::output_within(chi(&st).args(["list", "-l"]), Duration::from_secs(120))
                .expect("list waited for the writer lock");
        let l = String::from_utf8_lossy(&out.stdout);
        assert!(l.starts_with("one:latest\t"), "{l}");
        ok(chi(&st).args(["list", "one"]));
    }
    assert!(
        writer.0.try_wait().expect("try_wait").is_none(),
        "writer did not wait for lock"
    );
    drop(held);
    let status = writer.0.wait().expect("wait writer");
    let err = reader.join().expect("stderr reader");
    assert!(status.success(), "{err}");
    assert!(list_long(&st).contains("two:latest\t"));
}

// ---------------------------------------------------------------------------------------
// Content addressing

#[test]
fn same_tree_under_two_names_gives_the_same_commit() {
    let s = Scratch::new("samecommit");
    let st = s.storage();
    let src = awkward(&s.join("src"));
    import(&st, &src, "one");
    import(&st, &src, "two:tag");
    assert_eq!(commit_of(&st, "one:latest"), commit_of(&st, "two:tag"));
    // One checkout serves both.
    ok(chi(&st).args(["checkout", "one"]));
    ok(chi(&st).args(["checkout", "two:tag"]));
    let co: Vec<_> = std::fs::read_dir(st.join("checkouts"))
        .expect("checkouts")
        .collect();
    assert_eq!(co.len(), 1);
}

#[test]
fn file_present_in_two_images_is_stored_once() {
    let s = Scratch::new("dedup");
    let st = s.storage();
    let d = s.path.display();
    sh(&format!(
        "cd {d} && mkdir a b && head -c 300000 /dev/urandom > a/shared \
         && cp a/shared b/shared-renamed && echo a > a/only && echo b > b/only \
         && touch -d @1700000000 a b"
    ));
    // (The roots' times are in the image's metadata: equal, so that only the files
    // differ. Left as made, they differed whenever the two directories' last changes
    // fell in different seconds, and the test saw a fifth object.)
    import(&st, &s.join("a"), "a");
    let repo = st.join("repo.git");
    let count = || -> u64 {
        let o = ok(git(&repo).args(["count-objects", "-v"]));
        o.lines()
            .find_map(|l| l.strip_prefix("count: "))
            .expect("count line")
            .trim()
            .parse()
            .expect("number")
    };
    let before = count();
    import(&st, &s.join("b"), "b");
    let blob_a = ok(git(&repo).args(["rev-parse", "refs/grove/img/a+latest:rootfs/shared"]));
    let blob_b =
        ok(git(&repo).args(["rev-parse", "refs/grove/img/b+latest:rootfs/shared-renamed"]));
    assert_eq!(blob_a, blob_b);
    // New objects: b/only, the rootfs tree, the image tree and the commit (meta and
    // config are the same as a's), and the import note (its blob, the notes tree and
    // the notes commit); never a second copy of the shared blob.
    let added = count() - before;
    assert!(added <= 4 + 3, "{added} objects added");
    let sizes = ok(git(&repo).args(["count-objects", "-v"]));
    let kib: u64 = sizes
        .lines()
        .find_map(|l| l.strip_prefix("size: "))
        .expect("size line")
        .trim()
        .parse()
        .expect("number");
    assert!(
        kib < 2 * 300,
        "loose objects take {kib} KiB: shared file stored twice?"
    );
}

// ---------------------------------------------------------------------------------------
// Storage directory

#[test]
fn storage_is_option_then_env_then_var_tmp_user() {
    let s = Scratch::new("storagepath");
    let a = s.join("a");
    let b = s.join("b");
    let p = ok(tool("ch-image")
        .arg("-s")
        .arg(&a)
        .arg("storage-path")
        .env("CH_IMAGE_STORAGE", &b));
    assert_eq!(p.trim(), a.to_str().expect("utf-8"));
    let p = ok(tool("ch-image")
        .arg("storage-path")
        .env("CH_IMAGE_STORAGE", &b));
    assert_eq!(p.trim(), b.to_str().expect("utf-8"));
    let p = ok(tool("ch-image")
        .arg("storage-path")
        .env("USER", "grove-someone"));
    assert_eq!(p.trim(), "/var/tmp/grove-someone.grove");
    assert!(
        !a.exists() && !b.exists(),
        "storage-path must not create storage"
    );
    // Where the option and variable point is where images go.
    let src = s.join("src");
    sh(&format!("mkdir {0} && echo 1 > {0}/f", src.display()));
    ok(tool("ch-image")
        .arg("import")
        .arg(&src)
        .arg("x")
        .env("CH_IMAGE_STORAGE", &b));
    assert_eq!(list_long(&b).lines().count(), 1);
    assert!(!a.exists());
}

#[test]
fn relative_storage_variable_is_refused() {
    let (_, err) = fails(
        tool("ch-image")
            .arg("list")
            .env("CH_IMAGE_STORAGE", "relative/store"),
    );
    assert!(
        err.contains("CH_IMAGE_STORAGE") && err.contains("absolute"),
        "{err}"
    );
}

#[test]
fn existing_empty_directory_or_tmp_is_refused_as_storage() {
    let s = Scratch::new("invalid");
    let empty = s.join("empty");
    sh(&format!("mkdir {}", empty.display()));
    for dir in [empty.as_path(), Path::new("/tmp")] {
        for args in [&["list"][..], &["reset"], &["import", "/etc", "x"]] {
            let (_, err) = fails(chi(dir).args(args));
            assert!(
                err.contains("storage directory seems invalid"),
                "{args:?}: {err}"
            );
            assert!(
                err.lines().any(|l| l.starts_with("hint: ")),
                "{args:?}: {err}"
            );
        }
    }
    assert_eq!(std::fs::read_dir(&empty).expect("empty").count(), 0);
    assert!(Path::new("/tmp").is_dir());
}

#[test]
fn reset_empties_the_storage_directory() {
    let s = Scratch::new("reset");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!("mkdir {0} && echo 1 > {0}/f", src.display()));
    import(&st, &src, "a");
    import(&st, &src, "b");
    ok(chi(&st).arg("reset"));
    assert_eq!(list_long(&st), "");
    assert!(st.join("version").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(st.join("checkouts"))
        .expect("checkouts")
        .collect();
    assert!(leftovers.is_empty());
    // Nothing of the old store next to it either.
    let siblings: Vec<String> = std::fs::read_dir(&s.path)
        .expect("scratch")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        siblings.iter().all(|n| n == "storage" || n == "src"),
        "{siblings:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Commands

#[test]
fn list_delete_globs_and_undelete() {
    let s = Scratch::new("delete");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!("mkdir {0} && echo 1 > {0}/f", src.display()));
    for n in ["alpha", "alpine:3.17", "beta", "example.com/x/y:1"] {
        import(&st, &src, n);
    }
    let l = ok(chi(&st).arg("list"));
    assert_eq!(l, "alpha\nalpine:3.17\nbeta\nexample.com/x/y:1\n");
    let details = ok(chi(&st).args(["list", "alpha"]));
    assert!(details.contains("in local storage:    yes"), "{details}");
    assert!(
        details.contains(&commit_of(&st, "alpha:latest")),
        "{details}"
    );
    let missing = ok(chi(&st).args(["list", "nope"]));
    assert!(missing.contains("in local storage:    no"), "{missing}");

    let commit = commit_of(&st, "alpine:3.17");
    ok(chi(&st).args(["delete", "alp*"]));
    assert_eq!(ok(chi(&st).arg("list")), "beta\nexample.com/x/y:1\n");
    assert!(!st.join("img/alpine+3.17").exists());
    // As Charliecloud: each glob matching nothing is an error line, the others are still
    // deleted, and the command fails with the count.
    let (_, err) = fails(chi(&st).args(["delete", "nope", "example.com/x/y:1", "nix*"]));
    assert!(
        err.contains("error: no matching image, can't delete: nope\n")
            && err.contains("deleting image: example.com/x/y:1\n")
            && err.contains("error: no matching image, can't delete: nix*\n")
            && err.contains("error: unable to delete 2 invalid image(s)"),
        "{err}"
    );
    assert_eq!(ok(chi(&st).arg("list")), "beta\n");
    let err = output(chi(&st).args(["delete", "beta"])).stderr;
    assert_eq!(String::from_utf8_lossy(&err), "deleting image: beta\n");

    ok(chi(&st).args(["undelete", "alpine:3.17"]));
    assert_eq!(commit_of(&st, "alpine:3.17"), commit);
    assert!(st.join("img/alpine+3.17").is_dir());
    // Charliecloud's words (and the name).
    let (_, err) = fails(chi(&st).args(["undelete", "alpine:3.17"]));
    assert!(
        err.contains("error: image exists; will not overwrite: alpine:3.17"),
        "{err}"
    );
    let (_, err) = fails(chi(&st).args(["undelete", "never"]));
    assert!(
        err.contains("error: image not in cache: never:latest"),
        "{err}"
    );
    ok(git(&st.join("repo.git")).arg("fsck"));
}

#[test]
fn version_and_help() {
    let v = ok(tool("ch-image").arg("--version"));
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    let h = ok(tool("ch-image").arg("-h"));
    for word in [
        "import",
        "list",
        "delete",
        "undelete",
        "reset",
        "storage-path",
    ] {
        assert!(h.contains(word), "help lacks {word}:\n{h}");
    }
    let (_, err) = fails(&mut tool("ch-image"));
    assert!(err.to_lowercase().contains("usage"), "{err}");
}

#[test]
fn ch_grow_symlink_works_like_ch_image() {
    let s = Scratch::new("chgrow");
    let link = s.join("ch-grow");
    std::os::unix::fs::symlink(bin("ch-image"), &link).expect("symlink ch-grow");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!("mkdir {0} && echo 1 > {0}/f", src.display()));
    let mut c = unpriv(&link);
    ok(c.arg("-s").arg(&st).arg("import").arg(&src).arg("grown"));
    let mut c = unpriv(&link);
    assert_eq!(ok(c.arg("-s").arg(&st).arg("list")), "grown\n");
    let mut c = unpriv(&link);
    assert!(ok(c.arg("--version")).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn extended_attributes_round_trip_when_asked_and_are_ignored_otherwise() {
    let s = Scratch::new("xattrs");
    let st = s.storage();
    let src = s.join("src");
    // user.* attributes on a directory and a read-only file (set before the chmod).
    sh(&format!(
        "mkdir -p {src}/d && echo hi > {src}/d/f && \
         /usr/bin/python3 -c \"import os; os.setxattr('{src}/d/f', 'user.color', b'blue'); \
         os.setxattr('{src}/d', 'user.bin', bytes([0, 255]))\" && chmod 0444 {src}/d/f",
        src = src.display()
    ));
    ok(chi(&st).arg("--xattrs").arg("import").arg(&src).arg("x"));
    let meta = ok(Command::new("git")
        .arg("-C")
        .arg(st.join("repo.git"))
        .args([
            "-c",
            "safe.directory=*",
            "show",
            "refs/grove/img/x+latest:meta",
        ]));
    assert!(meta.contains("xattr user.color 626c7565 d/f"), "{meta}");
    assert!(meta.contains("xattr user.bin 00ff d\n"), "{meta}");
    // Directory export and checkout carry them; a tar export and re-import keep them.
    let out = s.join("out");
    ok(chc(&st).arg("x").arg(&out));
    let got = sh(&format!(
        "/usr/bin/python3 -c \"import os; print(os.getxattr('{o}/d/f', 'user.color'), os.getxattr('{o}/d', 'user.bin'))\"",
        o = out.display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "b'blue' b'\\x00\\xff'\n"
    );
    let tar = s.join("x.tar");
    ok(chc(&st).arg("x").arg(&tar));
    ok(chi(&st).arg("--xattrs").arg("import").arg(&tar).arg("x2"));
    assert_eq!(commit_of(&st, "x:latest"), commit_of(&st, "x2:latest"));
    // Without --xattrs nothing is recorded: a different image.
    import(&st, &src, "plain");
    assert_ne!(commit_of(&st, "x:latest"), commit_of(&st, "plain:latest"));
}

// ---------------------------------------------------------------------------------------
// Hostile and broken inputs (issue 11)

/// Names git treats as `.git`/`.gitmodules` on NTFS or HFS+ were stored as they are, so
/// `git fsck` failed for good and a remote with `receive.fsckObjects` refused pushes.
#[test]
fn ntfs_and_hfs_git_names_are_escaped_so_git_fsck_strict_passes_and_they_round_trip() {
    let s = Scratch::new("ntfs");
    let st = s.storage();
    let src = s.join("src");
    // git~1 and GITMOD~1 (NTFS short names), .g<U+200C>it (HFS+), the fall-back short
    // name of .gitmodules, .gitattributes, and a symlink that git would take for
    // .gitmodules; with content below so that they are trees and blobs.
    sh(&format!(
        "mkdir -p {d}/'git~1' {d}/\"$(printf '.g\\342\\200\\214it')\" {d}/sub && \
         echo hook > {d}/'git~1'/config && echo x > {d}/\"$(printf '.g\\342\\200\\214it')\"/HEAD && \
         printf '[submodule \"x\"]\\n\\tpath = -x\\n\\turl = --upload-pack=x\\n' > {d}/GITMOD~1 && \
         echo a > {d}/sub/gi7eba~1 && echo '* text' > {d}/sub/.gitattributes && \
         ln -s /etc/passwd {d}/sub/gitmod~2 && echo n > {d}/'git~1x'",
        d = src.display()
    ));
    let want = as_image(tree::of_dir(&src));
    import(&st, &src, "ntfs");
    ok(git(&st.join("repo.git")).args(["fsck", "--strict", "--no-dangling"]));
    let out = s.join("out");
    ok(chc(&st).arg("ntfs").arg(&out));
    tree::assert_same(
        &crate::convert::with_mount_points(want.clone()),
        &tree::of_dir(&out),
        "export of NTFS/HFS names",
    );
    let tar = s.join("ntfs.tar");
    ok(chc(&st).arg("ntfs").arg(&tar));
    tree::assert_same(&want, &tree::of_tar(&tar), "tar export of NTFS/HFS names");
    // The store's own fsck agrees.
    ok(chi(&st).arg("fsck"));
}

/// A path 30,000 directories deep overflowed the stack (exit 134); the limit is
/// documented and the member is named.
#[test]
fn tarball_deeper_than_the_limit_is_refused_naming_the_member_not_a_crash() {
    let s = Scratch::new("deep");
    let st = s.storage();
    let py = s.join("deep.py");
    std::fs::write(
        &py,
        r#"
import io, sys, tarfile
depth, out = int(sys.argv[1]), sys.argv[2]
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    ti = tarfile.TarInfo("d/" * (depth - 1) + "f")
    ti.size = 2
    t.addfile(ti, io.BytesIO(b"x\n"))
"#,
    )
    .expect("write deep.py");
    let deep = s.join("deep.tar");
    ok(python3().arg(&py).arg("30000").arg(&deep));
    assert_import_refused(&s, &deep, &["deep.tar", "member d/d/d", "deeper than 1024"]);
    // At the limit (1024 components, the file included) import and export work.
    let ok_tar = s.join("limit.tar");
    ok(python3().arg(&py).arg("1024").arg(&ok_tar));
    import(&st, &ok_tar, "limit");
    let back = s.join("back.tar");
    ok(chc(&st).arg("limit").arg(&back));
    // (The single top directory `d` is the image root: 1022 directories and the file.)
    let back = tree::of_tar(&back);
    assert!(back.len() >= 1023, "{} entries", back.len());
    ok(chi(&st).arg("fsck"));
}

#[test]
fn directory_deeper_than_the_limit_is_refused_not_a_crash() {
    let s = Scratch::new("deepdir");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!(
        "mkdir {d} && cd {d} && i=0 && while [ $i -lt 1100 ]; do mkdir d && cd d; i=$((i+1)); done && echo x > f",
        d = src.display()
    ));
    let (code, err) = fails(chi(&st).arg("import").arg(&src).arg("deep"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("deeper than 1024"), "{err}");
}

/// `dir/.wh.` and `dir/.wh..` deleted `dir` itself.
#[test]
fn whiteouts_naming_their_own_directory_are_refused_naming_the_member() {
    let s = Scratch::new("wh-self");
    let st = s.storage();
    for (i, bad) in [".wh.", ".wh..", ".wh..."].iter().enumerate() {
        let script = format!(
            r#"
            cd {d} && rm -rf l1 l2 lay && mkdir -p l1/a l2/a lay/blobs/sha256
            printf 1 > l1/a/keep && : > 'l2/a/{bad}'
            tar -C l1 -cf l1.tar . && tar -C l2 -cf l2.tar .
            blob() {{ h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" lay/blobs/sha256/$h; echo $h; }}
            L1=$(blob l1.tar); L2=$(blob l2.tar)
            printf '{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}}}' $L1 $L2 > cfg.json
            C=$(blob cfg.json)
            printf '{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}}]}}' $C $(stat -c %s cfg.json) $L1 $(stat -c %s l1.tar) $L2 $(stat -c %s l2.tar) > man.json
            M=$(blob man.json)
            printf '{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}}]}}' $M $(stat -c %s man.json) > lay/index.json
            printf '{{"imageLayoutVersion":"1.0.0"}}' > lay/oci-layout
            "#,
            d = s.path.display()
        );
        sh(&script);
        let (code, err) = fails(chc(&st).arg(s.join("lay")).arg(format!("wh{i}")));
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(
            err.contains(&format!("a/{bad}")),
            "{bad}: names the member: {err}"
        );
        assert!(err.contains("invalid whiteout"), "{bad}: {err}");
    }
}

/// An import that failed writing its pack (a full disk; here a file size limit) left the
/// temporary pack behind, and fsck said all was well.
#[test]
fn import_that_fails_writing_its_pack_leaves_no_temporary_files() {
    let s = Scratch::new("efbig");
    let st = s.storage();
    let src = s.join("src");
    // 300 files of 32 KiB of random bytes: one pack of about 10 MB.
    sh(&format!(
        "mkdir -p {d} && i=0 && while [ $i -lt 300 ]; do head -c 32768 /dev/urandom > {d}/f$i; i=$((i+1)); done",
        d = src.display()
    ));
    sh(&format!(
        "mkdir {0} && echo 1 > {0}/f",
        s.join("small").display()
    ));
    import(&st, &s.join("small"), "small");
    // SIGXFSZ ignored (inherited through exec): writes past the limit fail with EFBIG.
    let out = output(unpriv("sh").args([
        "-c",
        &format!(
            "trap '' XFSZ; exec prlimit --fsize=4000000 {} -s {} import {} big",
            bin("ch-image").display(),
            st.display(),
            src.display()
        ),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: "), "{err}");
    let leftovers = |st: &Path| -> Vec<String> {
        let mut v = Vec::new();
        for d in ["repo.git/objects", "repo.git/objects/pack", "tmp"] {
            for e in std::fs::read_dir(st.join(d))
                .into_iter()
                .flatten()
                .flatten()
            {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("tmp") || n.starts_with(".tmp") || d == "tmp" {
                    v.push(format!("{d}/{n}"));
                }
            }
        }
        v
    };
    assert_eq!(leftovers(&st), Vec::<String>::new(), "{err}");
    ok(chi(&st).arg("fsck"));
    // (Without the compaction it would start: that writer would remove the leftover
    // below when it takes the lock alone, as any writer does.)
    ok(chi(&st)
        .env("CH_IMAGE_AUTO_COMPACT", "no")
        .arg("import")
        .arg(&src)
        .arg("big"));
    // A leftover of a dead writer (as a killed import leaves): fsck reports it as such
    // (not damage: exit 0), gc removes it.
    let pack_dir = st.join("repo.git/objects/pack");
    let fake = pack_dir.join("tmp_grove_999999999_0.pack");
    sh(&format!("echo junk > {}", fake.display()));
    let out = output(chi(&st).arg("fsck"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("tmp_grove_999999999_0.pack"), "{err}");
    assert!(fake.exists());
    ok(chi(&st).args(["build-cache", "--gc"]));
    assert!(!fake.exists());
    ok(chi(&st).arg("fsck"));
}

/// Import stores file contents without compression (the time to store a tarball is
/// what counts there); gc recompresses them. The store stays valid in between.
#[test]
fn import_stores_packs_uncompressed_and_gc_compresses_them() {
    let s = Scratch::new("storedpack");
    let st = s.storage();
    let src = s.join("src");
    // 300 distinct files of 32 KiB of text: about 10 MB, a few hundred KB compressed.
    sh(&format!(
        "mkdir -p {d} && i=0 && while [ $i -lt 300 ]; do yes \"line of file $i\" | head -c 32768 > {d}/f$i; i=$((i+1)); done",
        d = src.display()
    ));
    let packs = |st: &Path| -> u64 {
        std::fs::read_dir(st.join("repo.git/objects/pack"))
            .expect("pack dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            .map(|e| e.metadata().expect("stat pack").len())
            .sum()
    };
    // (Without the compaction an import of 8 MiB or more starts: this is about gc's.)
    let import = |src: &Path, name: &str| {
        ok(chi(&st)
            .env("CH_IMAGE_AUTO_COMPACT", "no")
            .arg("import")
            .arg(src)
            .arg(name))
    };
    import(&src, "text");
    let stored = packs(&st);
    assert!(
        stored > 300 * 32768,
        "packs hold {stored} bytes after import"
    );
    ok(git(&st.join("repo.git")).args(["fsck", "--strict"]));
    ok(chi(&st).arg("fsck"));
    ok(chi(&st).args(["build-cache", "--gc"]));
    let packed = packs(&st);
    assert!(
        packed < stored / 10,
        "packs hold {packed} bytes after gc, {stored} before"
    );
    ok(git(&st.join("repo.git")).args(["fsck", "--strict"]));
    ok(chi(&st).arg("fsck"));
    let out = s.join("out");
    ok(chc(&st).arg("text").arg(&out));
    tree::assert_same(
        &crate::convert::with_mount_points(tree::of_dir(&src)),
        &tree::of_dir(&out),
        "after gc",
    );
    let listed = std::fs::read_to_string(st.join("repo.git/objects/info/grove-stored-packs"))
        .unwrap_or_default();
    assert!(listed.is_empty(), "gc left stored packs listed: {listed}");
    // A second import is stored again, beside the compressed pack; gc compresses it too.
    let src2 = s.join("src2");
    sh(&format!(
        "mkdir -p {d} && i=0 && while [ $i -lt 300 ]; do yes \"other line $i\" | head -c 32768 > {d}/f$i; i=$((i+1)); done",
        d = src2.display()
    ));
    import(&src2, "text2");
    assert!(packs(&st) > packed + 300 * 32768);
    ok(chi(&st).args(["build-cache", "--gc"]));
    assert!(packs(&st) < 2 * packed + stored / 10, "{}", packs(&st));
    ok(git(&st.join("repo.git")).args(["fsck", "--strict"]));
    let out2 = s.join("out2");
    ok(chc(&st).arg("text2").arg(&out2));
    tree::assert_same(
        &crate::convert::with_mount_points(tree::of_dir(&src2)),
        &tree::of_dir(&out2),
        "second image after gc",
    );
}

/// A 2 KB tarball expanding to a 1 GiB sparse file took more than 1 GB of memory per
/// checkout thread; blobs are streamed now, and holes stay holes. (160 MiB here: the
/// debug build hashes slowly; RSS was about the file's size before.)
#[test]
fn big_sparse_file_imports_and_checks_out_with_bounded_memory() {
    let s = Scratch::new("sparse");
    let st = s.storage();
    let tar = s.join("sparse.tar");
    sh(&format!(
        "cd {d} && mkdir src && truncate -s 160M src/big && printf end >> src/big && \
         tar -C src --sparse -cf {t} .",
        d = s.path.display(),
        t = tar.display()
    ));
    // The import, then the checkout (made on first use, not by the import).
    for args in [&["import"][..], &["checkout"][..]] {
        let mut all: Vec<&std::ffi::OsStr> = vec!["-s".as_ref(), st.as_os_str()];
        all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
        if args == ["import"] {
            all.push(tar.as_os_str());
        }
        all.push("sparse".as_ref());
        let (kb, _) = crate::common::max_rss_kib("ch-image", &all);
        eprintln!("{args:?} of a 160 MiB sparse file: max RSS {kb} KiB");
        assert!(kb < 100 * 1024, "{args:?} of a 160 MiB file used {kb} KiB");
    }
    let link = st.join("img/sparse+latest");
    let md = std::fs::metadata(link.join("big")).expect("stat checkout");
    assert_eq!(md.len(), (160 << 20) + 3);
    use std::os::unix::fs::MetadataExt;
    assert!(
        md.blocks() * 512 < 64 << 20,
        "checkout is not sparse: {} blocks",
        md.blocks()
    );
    let tail = sh(&format!("tail -c 3 {}", link.join("big").display()));
    assert_eq!(tail.stdout, b"end");
}

/// The ranks of a job start an image that has no checkout yet, all at once: one of them
/// makes the checkout, the others wait for it and use it; none fails or sees a partial
/// tree. Before: every rank wrote a whole checkout of its own, and all but one were
/// thrown away.
#[test]
fn first_runs_at_once_of_a_new_image_make_one_checkout() {
    let s = Scratch::new("store-first-runs");
    let st = s.storage();
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(crate::common::busybox_rootfs())
        .arg("bb"));
    let runs: Vec<_> = (0..16)
        .map(|_| {
            tool("ch-run")
                .arg("-v")
                .arg("-s")
                .arg(&st)
                .args(["bb", "--", "sh", "-c", "ls /bin | wc -l; cat /etc/motd"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ch-run")
        })
        .collect();
    let mut checkouts = 0;
    let mut outs = std::collections::BTreeSet::new();
    for r in runs {
        let out = r.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        checkouts += err.matches("checked out ").count();
        outs.insert(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert_eq!(checkouts, 1, "one checkout for 16 first runs");
    assert_eq!(outs.len(), 1, "every run saw the same tree: {outs:?}");
    assert!(
        outs.iter().all(|o| o.ends_with("grove busybox fixture\n")),
        "{outs:?}"
    );
    let tmp: Vec<_> = std::fs::read_dir(st.join("tmp"))
        .expect("read tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "scratch left: {tmp:?}");
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
}

/// A storage directory shared by its owner with other users of a node (made searchable,
/// as a site does): another user runs its images by name without writing to it, even
/// with its stamps private; one they can't enter is said as Charliecloud says it.
#[test]
fn another_users_storage_directory_runs_by_name() {
    if !crate::common::is_root() {
        crate::common::skip("needs root to run as a second user");
        return;
    }
    let s = Scratch::new("store-other-user");
    let st = s.storage();
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(crate::common::busybox_rootfs())
        .arg("bb"));
    ok(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    let home = s.join("home-other");
    std::fs::create_dir(&home).expect("mkdir");
    let st_ok = Command::new("chown")
        .arg("65533:65533")
        .arg(&home)
        .status()
        .expect("chown");
    assert!(st_ok.success());
    let other = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65533", "--regid=65533", "--clear-groups", "--"])
            .arg(bin("ch-run"))
            .env("USER", "other")
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .arg("-s")
            .arg(&st)
            .args(["bb", "--", "cat", "/etc/motd"]);
        c
    };
    sh(&format!("chmod 755 '{}'", st.display()));
    assert_eq!(ok(&mut other()), "grove busybox fixture\n");
    // Private stamps: before, "storage: can't read: …/stamps/checkouts-…".
    sh(&format!("chmod 700 '{}/stamps'", st.display()));
    assert_eq!(ok(&mut other()), "grove busybox fixture\n");
    assert_eq!(ok(&mut other()), "grove busybox fixture\n");
    // Not searchable (Grove makes storage directories 0700): before, "can't find image:
    // bb: No such file or directory".
    sh(&format!("chmod 700 '{}'", st.display()));
    let (_, err) = fails(&mut other());
    assert!(
        err.contains(&format!(
            "can't stat: {}/version: Permission denied",
            st.display()
        )),
        "{err}"
    );
}

/// `locks/=checkout=C.lock` is left by every checkout made; gc removes those of commits
/// that have no checkout any more (before: never removed, one per commit ever checked
/// out), but not one a process holds.
#[test]
fn gc_removes_the_lock_files_of_checkouts_that_are_gone_but_not_a_held_one() {
    let s = Scratch::new("checkout-locks");
    let st = s.storage();
    import(&st, &crate::common::busybox_rootfs(), "bb");
    ok(tool("ch-run").arg("-s").arg(&st).args(["bb", "--", "true"]));
    let locks = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(st.join("locks"))
            .expect("read locks")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("=checkout="))
            .collect();
        v.sort();
        v
    };
    let made = locks();
    assert_eq!(made.len(), 1, "{made:?}");
    // A lock of a commit without checkout, held by another process.
    let held = st.join(format!("locks/=checkout={}.lock", "ab".repeat(20)));
    // Held by this test process (flock(2), as Grove locks) from before gc starts until
    // after it ends: a `flock FILE sleep 30` seen to have made the file, then 200 ms of
    // sleep, was a race on a loaded machine (the file exists before it is locked).
    sh(&format!("touch '{}'", held.display()));
    let holder = std::fs::File::open(&held).expect("open lock file");
    holder.lock().expect("lock");
    ok(chi(&st).args(["delete", "bb"]));
    ok(chi(&st).args(["build-cache", "--gc"]));
    assert!(!st.join("checkouts").read_dir().expect("read").any(|_| true));
    let left = locks();
    drop(holder);
    assert_eq!(left, vec![format!("=checkout={}.lock", "ab".repeat(20))]);
}

/// `ch-run NAME` and `ch-image checkout --view` of an image whose kept layers lie on
/// another image's checkout mark that checkout (`views/C`), as a build's views are
/// marked: deleting the base image (its `img/` link) removed the checkout, and the next
/// run of the image checked it out again. Once no image reaches it, the first writer
/// that locks alone drops the mark and the checkout; a read-only store runs without one.
#[test]
fn runs_keep_the_checkout_below_an_image_s_layers_while_an_image_reaches_it() {
    let s = Scratch::new("view-marks");
    let (st, ctx) = (s.storage(), s.join("ctx"));
    import(&st, &crate::common::busybox_rootfs(), "bb");
    // Another image, to import when a writer must lock the store (busybox would be bb's
    // commit again).
    let tiny = s.join("tiny");
    sh(&format!(
        "mkdir '{t}' && echo t > '{t}/t'",
        t = tiny.display()
    ));
    sh(&format!(
        "mkdir '{c}' && printf 'FROM bb\\nRUN echo x > /x\\n' > '{c}/Dockerfile'",
        c = ctx.display()
    ));
    ok(chi(&st).args(["build", "-t", "t"]).arg(&ctx));
    let bb = commit_of(&st, "bb:latest");
    let mark = st.join("views").join(&bb);
    let run = || {
        let out = output(
            tool("ch-run")
                .arg("-v")
                .arg("-s")
                .arg(&st)
                .args(["t", "--", "cat", "/x"]),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n", "{err}");
        err
    };
    // ch-image checkout --view (what ch-run runs when a tree must be read or made).
    let dirs = ok(chi(&st).args(["checkout", "--view", "t"]));
    assert!(dirs.contains(&format!("checkouts/{bb}")), "{dirs:?}");
    assert!(mark.exists(), "checkout --view left no mark");
    // ch-run finding the view ready.
    std::fs::remove_file(&mark).expect("remove mark");
    run();
    assert!(mark.exists(), "ch-run left no mark");
    // Read-only: no mark written, no error or warning.
    std::fs::remove_file(&mark).expect("remove mark");
    sh(&format!("chmod -R a-w '{}'", st.display()));
    let err = run();
    sh(&format!("chmod -R u+w '{}'", st.display()));
    assert!(!err.contains("warning") && !err.contains("error"), "{err}");
    assert!(!mark.exists());
    // Writable again: the trees that lost write bits are made again, and marked.
    run();
    assert!(mark.exists(), "ch-run left no mark");
    ok(chi(&st).args(["delete", "bb"]));
    // The next writer locks alone and prunes unlinked checkouts.
    import(&st, &tiny, "other");
    assert!(
        st.join("checkouts").join(&bb).is_dir(),
        "bb's checkout pruned"
    );
    let err = run();
    assert!(!err.contains("checked out"), "checked out again:\n{err}");
    // No image reaches bb's commit: the next writer alone drops mark and checkout.
    ok(chi(&st).args(["delete", "t"]));
    import(&st, &tiny, "other");
    assert!(!mark.exists(), "the mark outlived its images");
    assert!(!st.join("checkouts").join(&bb).exists());
    ok(chi(&st).args(["undelete", "t"]));
    run();
    // A mark whose checkout is gone goes too.
    let stray = st.join("views").join("ab".repeat(20));
    std::fs::write(&stray, "").expect("write stray mark");
    crate::common::own(&stray);
    import(&st, &tiny, "other");
    assert!(!stray.exists(), "a mark without its checkout stays");
}

/// A file over the streaming threshold (32 MiB) is compressed in pieces of 4 MiB on all
/// cores and joined into one zlib stream (session 35). Its random part went through zlib
/// level 1 before, which made it 5% bigger; now such pieces are stored as they are.
#[test]
fn a_big_file_streamed_in_pieces_exports_exactly_and_its_random_part_does_not_grow() {
    let s = Scratch::new("bigfile");
    let st = s.storage();
    sh(&format!(
        "cd '{0}' && mkdir src && {{ head -c 20M /dev/urandom; head -c 7M /dev/zero; \
         yes 'a line of text' | head -c 7M; }} > src/big && tar -cf big.tar -C src .",
        s.path.display()
    ));
    import(&st, &s.join("big.tar"), "big");
    let out = s.join("out");
    ok(chc(&st).arg("big").arg(&out));
    let want = std::fs::read(s.join("src/big")).expect("read src/big");
    assert!(
        std::fs::read(out.join("big")).expect("read out/big") == want,
        "exported file differs"
    );
    let repo = st.join("repo.git");
    ok(git(&repo).args(["fsck", "--strict"]));
    let id = ok(git(&repo).arg("hash-object").arg(s.join("src/big")));
    let id = id.trim();
    let shown = output(git(&repo).args(["cat-file", "-p", id]));
    assert!(
        shown.status.success() && shown.stdout == want,
        "git cat-file -p {id}"
    );
    let object = repo.join("objects").join(&id[..2]).join(&id[2..]);
    let len = std::fs::metadata(&object).expect("loose object").len();
    assert!(len < (20 << 20) + (256 << 10), "object of {len} bytes");
}
