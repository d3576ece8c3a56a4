//! ch-fromhost: host files injected into a directory image and into an image in the
//! store, with the library directory inferred from the image's ldconfig.

use crate::common::*;
use std::path::PathBuf;

/// A shared library and a program linked against it, built on the host by the test (into
/// `lib/` and `bin/` of the scratch directory, so the paths classify as Charliecloud's
/// rules say). The program finds the library only through the ld.so cache.
fn host_library(s: &Scratch) -> Option<(PathBuf, PathBuf)> {
    if std::process::Command::new("gcc")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("gcc not installed");
        return None;
    }
    let (lib, prog) = (s.join("lib/libgrovehello.so"), s.join("bin/usehello"));
    sh(&format!(
        "cd '{d}' && mkdir -p lib bin src
         printf '#include <stdio.h>\\nvoid grove_hello(void) {{ puts(\"hello from the host library\"); }}\\n' > src/l.c
         printf 'void grove_hello(void);\\nint main(void) {{ grove_hello(); return 0; }}\\n' > src/m.c
         gcc -shared -fPIC -o lib/libgrovehello.so src/l.c
         gcc -o bin/usehello src/m.c -Llib -lgrovehello",
        d = s.path.display()
    ));
    Some((lib, prog))
}

#[test]
fn injected_library_is_found_through_ldconfig_in_a_directory_image() {
    let Some(tarball) = crate::build::debian_tarball() else {
        return;
    };
    let s = Scratch::new("fromhost-dir");
    let Some((lib, prog)) = host_library(&s) else {
        return;
    };
    let img = s.join("debian");
    ok(tool("ch-convert").arg(&tarball).arg(&img));
    // Before: the program is not there.
    let (_, err) = fails(tool("ch-run").arg(&img).args(["--", "usehello"]));
    assert!(err.contains("usehello"), "{err}");
    let printed = ok(tool("ch-fromhost").arg("--print-lib").arg(&img));
    assert_eq!(printed, "/usr/local/lib\n");
    let log = ok(tool("ch-fromhost")
        .arg("-v")
        .arg("-p")
        .arg(&lib)
        .arg("--path")
        .arg(&prog)
        .arg(&img));
    assert_eq!(log, "", "stdout carries no chatter");
    assert!(img.join("usr/local/lib/libgrovehello.so").is_file());
    assert!(img.join("usr/bin/usehello").is_file());
    let out = ok(tool("ch-run").arg(&img).args(["--", "usehello"]));
    assert_eq!(out, "hello from the host library\n");
    // --dest places the files named after it; --no-ldconfig leaves the cache alone.
    let conf = s.join("site.conf");
    sh(&format!("echo x=1 > '{}'", conf.display()));
    ok(tool("ch-fromhost")
        .args(["--no-ldconfig", "-d", "/etc", "-f"])
        .arg({
            let list = s.join("list");
            std::fs::write(&list, format!("{}\n", conf.display())).expect("write list");
            list
        })
        .arg(&img));
    assert_eq!(
        std::fs::read_to_string(img.join("etc/site.conf")).expect("injected"),
        "x=1\n"
    );
}

#[test]
fn injection_into_a_stored_image_is_a_new_commit_in_its_history() {
    let Some(tarball) = crate::build::debian_tarball() else {
        return;
    };
    let s = Scratch::new("fromhost-store");
    let Some((lib, prog)) = host_library(&s) else {
        return;
    };
    let st = s.storage();
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(&tarball)
        .arg("deb"));
    ok(tool("ch-fromhost")
        .arg("-s")
        .arg(&st)
        .arg("-p")
        .arg(&lib)
        .arg("-c")
        .arg(format!("echo {}", prog.display()))
        .arg("deb"));
    let out = ok(tool("ch-run")
        .arg("-s")
        .arg(&st)
        .args(["deb", "--", "usehello"]));
    assert_eq!(out, "hello from the host library\n");
    let hist = ok(tool("ch-image").arg("-s").arg(&st).args(["history", "deb"]));
    assert!(hist.contains("libgrovehello.so"), "{hist}");
    assert!(hist.contains("usehello"), "{hist}");
    assert!(hist.contains("ldconfig"), "{hist}");
    // The image before the injection is still there: the diff from it is the injection.
    let diff = ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["diff", "deb~3", "deb"]));
    eprintln!("{hist}{diff}");
    for f in ["/usr/local/lib/libgrovehello.so", "/usr/bin/usehello"] {
        assert!(
            diff.lines().any(|l| l.ends_with(f) && l.starts_with('A')),
            "{diff}"
        );
    }
}

#[test]
fn gpu_and_bad_input_fail_with_clear_messages() {
    let s = Scratch::new("fromhost-bad");
    let img = busybox_rootfs();
    let (code, err) = fails(tool("ch-fromhost").arg("--nvidia").arg(&img));
    assert_eq!(code, 1);
    assert!(err.contains("nvidia-container-cli"), "{err}");
    let conf = s.join("x.conf");
    sh(&format!("echo > '{}'", conf.display()));
    let (code, err) = fails(tool("ch-fromhost").arg("-p").arg(&conf).arg(&img));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("no destination for: {}", conf.display())),
        "{err}"
    );
    let (code, err) = fails(tool("ch-fromhost").args(["-p", "/x", "-p"]));
    assert_eq!(code, 1);
    assert!(err.contains("option requires an argument: --path"), "{err}");
    let (code, _) = fails(&mut tool("ch-fromhost"));
    assert_eq!(code, 1);
}

/// An injection into a stored image leaves no name behind: no temporary image (listed,
/// deleted or in a ref) and none in the image's provenance or its build's summary.
/// Before: built as `ch-fromhost-PID`, then `FROM ch-fromhost-PID` as the image, then
/// deleted, so `list -u` showed it and `inspect --provenance` named it as the subject.
#[test]
fn injection_into_a_stored_image_leaves_no_temporary_name() {
    let s = Scratch::new("fromhost-noname");
    let st = s.storage();
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(crate::common::busybox_rootfs())
        .arg("base"));
    let out = crate::common::output(tool("ch-fromhost").arg("-s").arg(&st).args([
        "-p",
        "/usr/bin/env",
        "base",
    ]));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("ch-fromhost-"), "{err}");
    let ran = ok(tool("ch-run").arg("-s").arg(&st).args([
        "base",
        "--",
        "sh",
        "-c",
        "test -x /usr/bin/env && echo yes",
    ]));
    assert_eq!(ran, "yes\n");
    assert_eq!(
        ok(tool("ch-image").arg("-s").arg(&st).args(["list", "-u"])),
        ""
    );
    assert_eq!(
        ok(tool("ch-image").arg("-s").arg(&st).arg("list")),
        "base\n"
    );
    let refs = crate::common::sh(&format!(
        "git -C '{}/repo.git' for-each-ref --format='%(refname)'",
        st.display()
    ));
    let refs = String::from_utf8_lossy(&refs.stdout).into_owned();
    assert!(!refs.contains("ch-fromhost"), "{refs}");
    let prov = ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["inspect", "--provenance", "base"]));
    assert!(!prov.contains("ch-fromhost-"), "{prov}");
    let hist = ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .args(["history", "base"]));
    assert!(
        hist.lines()
            .last()
            .is_some_and(|l| l.contains("COPY") && l.contains("env")),
        "{hist}"
    );
}
