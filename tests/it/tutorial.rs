//! Charliecloud's tutorial and best-practices pages, followed step by step with Grove's
//! binaries: what a new user types, compared with what the pages show and what
//! Charliecloud 0.31 does on the same input.

use crate::common::{busybox_copy, busybox_rootfs, fails, marks, ok, output, own, Scratch};
use crate::registry::Registry;
use crate::store::import;
use crate::store::{chc, chi};

/// "90 seconds to Charliecloud": `ch-image build .` in a context directory, then
/// `ch-convert hello /var/tmp/hello.sqfs`. A user who builds from the directory above the
/// context (`ch-image build -t hello hello/`) has a directory `hello` beside them; the
/// bare name still means the image in storage, as Charliecloud infers formats by name
/// only ("against filenames, rather than file contents"). Grove took the context directory
/// for the input and converted it instead of the image, without a word.
#[test]
fn a_bare_name_is_the_stored_image_even_beside_a_directory_of_that_name() {
    let s = Scratch::new("tutorial-bare-name");
    let st = s.storage();
    // The image `hello` and a directory `hello` that is something else (a context).
    import(&st, &busybox_rootfs(), "hello");
    let ctx = busybox_copy(&s, "hello");
    std::fs::write(ctx.join("Dockerfile"), "FROM alpine\n").expect("write Dockerfile");
    let out = output(
        chc(&st)
            .current_dir(&s.path)
            .args(["hello", "hello.tar.gz"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("input:   ch-image  hello"), "{err}");
    let list = std::process::Command::new("tar")
        .arg("tzf")
        .arg(s.join("hello.tar.gz"))
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&list.stdout);
    assert!(
        !names.contains("Dockerfile"),
        "converted the context:\n{names}"
    );
    assert!(names.contains("bin/"), "{names}");

    // The directory is still reachable as a path; a bare name of a directory with no
    // such image says how to name the directory.
    let out = output(
        chc(&st)
            .current_dir(&s.path)
            .args(["./hello", "ctx.tar.gz"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&ctx, s.join("ctx")).expect("rename");
    let (code, err) = fails(chc(&st).current_dir(&s.path).args(["ctx", "ctx2.tar.gz"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no image named ctx:latest in storage")
            && err.contains("write ./ctx or give -i dir"),
        "{err}"
    );
}

/// "Pull and compare": `ch-image pull …/hello:latest hello.2` prints, as in the tutorial
/// and Charliecloud 0.31, `destination:      hello.2` under `pulling image:` when the
/// image is stored under another name; not when it keeps the name it is pulled by. Grove
/// printed no destination line.
#[test]
fn pull_under_another_name_says_its_destination() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "nobody/myproj/hello:latest", &[]);
    let s = Scratch::new("tutorial-pull-dest");
    let st = s.storage();
    let src = format!("{}/nobody/myproj/hello:latest", r.host());
    let out = output(r.ch_image(&st).args(["pull", &src, "hello.2"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("pulling image:"))
        .unwrap_or_else(|| panic!("no 'pulling image:' line:\n{err}"));
    assert_eq!(
        lines.get(i + 1).copied(),
        Some("destination:      hello.2:latest"),
        "{err}"
    );
    // Then the architecture, always (Grove printed it only with -v).
    assert!(
        lines
            .get(i + 2)
            .is_some_and(|l| l.starts_with("requesting arch:  ") && l.len() > 18),
        "{err}"
    );
    let out = output(r.ch_image(&st).args(["pull", &src]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("destination:"), "{err}");
}

/// The "Build cache" walk-through: `a.df` built twice, then `b.df` sharing its first two
/// instructions. The marks are the tutorial's (`.` executed, `*` from cache) and the
/// summary names the image as it was given, `grown in 3 instructions: a`, as the
/// tutorial and Charliecloud print it (Grove then adds its counts). Grove printed the
/// stored reference, `a:latest`, which `ch-image list` itself shows as `a`.
#[test]
fn build_cache_walk_through_prints_the_tutorials_lines() {
    let s = Scratch::new("tutorial-bucache");
    let st = s.storage();
    import(&st, &busybox_rootfs(), "almalinux:8");
    let ctx = s.join("cache-test");
    std::fs::create_dir(&ctx).expect("mkdir");
    let df = |name: &str, last: &str| {
        std::fs::write(
            ctx.join(name),
            format!("FROM almalinux:8\nRUN echo foo\nRUN echo {last}\n"),
        )
        .expect("write Dockerfile");
    };
    df("a.df", "bar");
    df("b.df", "qux");
    own(&s.path);
    let build = |tag: &str, file: &str| {
        let out = output(
            chi(&st)
                .current_dir(&ctx)
                .args(["build", "-t", tag, "-f", file, "."]),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        (err, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let summary = |log: &str| {
        log.lines()
            .find(|l| l.starts_with("grown in"))
            .unwrap_or_else(|| panic!("no summary:\n{log}"))
            .to_string()
    };
    let (err, out) = build("a", "a.df");
    assert_eq!(marks(&err), "..", "{err}");
    assert!(out.contains("foo") && out.contains("bar"), "{out}");
    assert!(
        summary(&err).starts_with("grown in 3 instructions: a ("),
        "{err}"
    );
    let (err, _) = build("a", "a.df");
    assert_eq!(marks(&err), "**", "{err}");
    let (err, out) = build("b", "b.df");
    assert_eq!(marks(&err), "*.", "{err}");
    assert!(out.contains("qux") && !out.contains("foo"), "{out}");
    assert!(
        summary(&err).starts_with("grown in 3 instructions: b ("),
        "{err}"
    );
    // A tag given in full is printed in full, as Charliecloud prints it.
    let (err, _) = build("b:latest", "b.df");
    assert!(
        summary(&err).starts_with("grown in 3 instructions: b:latest ("),
        "{err}"
    );
    let list = ok(chi(&st).arg("list"));
    assert!(
        list.lines().any(|l| l == "a") && list.lines().any(|l| l == "b"),
        "{list}"
    );
}
