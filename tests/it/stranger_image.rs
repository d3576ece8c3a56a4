//! `ch-image`'s management commands (`list`, `delete`, `undelete`, `reset`,
//! `build-cache`, `storage-path`) as a script written for Charliecloud 0.31 uses them:
//! what its own test suite (`build/50_ch-image.bats`) asserts of them, and the common
//! options its `--help` lists. Compared side by side with 0.31's `ch-image`; each test
//! names what differed. The real binaries, run as the unprivileged test user.

use std::path::Path;
use std::process::Command;

use crate::common::{busybox_rootfs, fails, ok, output, tool, Scratch};
use crate::registry::{gzip, tar_with_member, Fake, Reply, Req, Scripted};

fn chi(st: &Path) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(st);
    c
}

/// 50_ch-image.bats, 'ch-image reset': once the storage directory is removed, "Reset
/// again; should error": exit 1, "$CH_IMAGE_STORAGE not a builder storage". Grove said
/// "deleted storage directory", exited 0 and created an empty store there.
#[test]
fn reset_of_a_storage_directory_that_does_not_exist_fails_and_creates_nothing() {
    let s = Scratch::new("reset-missing");
    let st = s.storage();
    ok(chi(&st).arg("list"));
    ok(chi(&st).arg("reset"));
    assert!(st.join("version").is_file(), "reset starts a new store");
    std::fs::remove_dir_all(&st).expect("remove storage");

    // The variable, as the bats test sets it; then -s.
    let mut by_env = tool("ch-image");
    by_env.env("CH_IMAGE_STORAGE", &st).arg("reset");
    let mut by_option = chi(&st);
    by_option.arg("reset");
    for cmd in [&mut by_env, &mut by_option] {
        let out = output(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("error: {} not a builder storage", st.display())),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{:?}", out.stdout);
        assert!(!st.exists(), "reset of no storage created {}", st.display());
    }
}

/// Charliecloud 0.31's `--help` lists `--debug`, `--no-lock`, `--password-many` and
/// `--profile` among the common options (allowed before or after the subcommand);
/// Grove refused them ("unexpected argument", exit 2), so a script passing one failed.
/// Accepted now, and at `-v` said to be ignored.
#[test]
fn charliecloud_common_options_debug_no_lock_password_many_profile_are_accepted() {
    let s = Scratch::new("common-opts");
    let st = s.storage();
    for opt in ["--debug", "--no-lock", "--password-many", "--profile"] {
        // Before the subcommand, and after it.
        let before = ok(tool("ch-image").arg(opt).arg("-s").arg(&st).arg("list"));
        assert_eq!(before, "", "{opt}");
        let out = output(chi(&st).args(["list", "-v", opt]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "list {opt}: {err}");
        assert!(
            err.contains(&format!(
                "{opt}: accepted for Charliecloud compatibility and ignored"
            )),
            "{opt}: {err}"
        );
        // In the help, as Charliecloud's.
        let help = ok(tool("ch-image").arg("--help"));
        assert!(help.contains(opt), "{opt} not in --help:\n{help}");
    }
    // Still an error: an option Charliecloud does not have either.
    let (code, err) = fails(chi(&st).args(["list", "--no-such-option"]));
    assert_eq!(code, 2, "{err}");
}

/// 55_cache.bats (0.31), 'reset': `build-cache --reset` says "deleting build cache" and
/// "initializing empty build cache"; Grove said "build cache reset". The summary stays on
/// standard output, the log on standard error.
#[test]
fn build_cache_reset_says_deleting_and_initializing_as_charliecloud() {
    let s = Scratch::new("bucache-reset");
    let st = s.storage();
    ok(chi(&st).arg("import").arg(busybox_rootfs()).arg("a"));
    let out = output(chi(&st).args(["build-cache", "--reset"]));
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    let deleting = err.find("deleting build cache");
    let initializing = err.find("initializing empty build cache");
    assert!(
        matches!((deleting, initializing), (Some(d), Some(i)) if d < i),
        "{err}"
    );
    assert!(stdout.contains("commits:"), "{stdout}");
    assert!(!stdout.contains("build cache"), "log on stdout: {stdout}");
    // The images stay (Grove's store, docs/compatibility.md).
    assert_eq!(ok(chi(&st).arg("list")), "a\n");
}

/// Regression: `build-cache --reset` on a storage directory made read-only (`chmod -R
/// a-w`) said "deleting build cache", then failed: the user read that the cache was being
/// deleted, and nothing was. Now the writer lock (the store's writability) comes first:
/// the error says the storage directory is read-only, naming it, exit 1, and nothing
/// about deleting is said; the store is as it was.
#[test]
fn build_cache_reset_on_a_read_only_store_says_so_before_deleting_anything() {
    let s = Scratch::new("bucache-reset-ro");
    let st = s.storage();
    ok(chi(&st).arg("import").arg(busybox_rootfs()).arg("a"));
    let state = crate::store::store_state(&st);
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("a-w")
        .arg(&st)
        .status();
    let (code, err) = fails(chi(&st).args(["build-cache", "--reset"]));
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&st)
        .status();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: storage directory is read-only (not writable by you): {}",
            st.display()
        )),
        "{err}"
    );
    assert!(!err.contains("deleting"), "{err}");
    assert!(!err.contains("initializing"), "{err}");
    assert_eq!(crate::store::store_state(&st), state);
}

/// 50_ch-image.bats, 'ch-image list': for a name the registry does not have, in storage
/// or not, Charliecloud prints `available remotely:  no`, `remote arch-aware:   n/a` and
/// `archs available:     n/a` (and `host architecture:`), on standard output, exit 0.
/// Grove printed the first line only.
#[test]
fn list_of_an_image_the_registry_lacks_says_n_a_for_its_architectures() {
    let fake = Fake::start(gzip(&tar_with_member("f", b"f\n")), None);
    let s = Scratch::new("list-remote-no");
    let st = s.storage();
    let host = format!("127.0.0.1:{}", fake.port);
    let stored = format!("{host}/fake/stored");
    ok(chi(&st).arg("import").arg(busybox_rootfs()).arg(&stored));
    for (name, local) in [(stored.clone(), "yes"), (format!("{host}/fake/nope"), "no")] {
        let out = output(
            chi(&st)
                .env("CH_IMAGE_REGY_INSECURE", &host)
                .args(["list", &name]),
        );
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{name}: {err}");
        for line in [
            format!("in local storage:    {local}"),
            "available remotely:  no".to_string(),
            "remote arch-aware:   n/a".to_string(),
            "archs available:     n/a".to_string(),
        ] {
            assert!(
                stdout.lines().any(|l| l == line),
                "{name}: no line {line:?} in:\n{stdout}"
            );
        }
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("host architecture:   ")),
            "{stdout}"
        );
    }
}

/// 50_ch-image.bats, 'ch-image list' (`mcr.microsoft.com/windows:20H2`): a manifest list
/// with no Linux image makes Charliecloud warn "no valid architectures found"; Grove
/// printed an empty `archs available:` line and no warning.
#[test]
fn list_of_a_manifest_list_without_linux_images_warns_no_valid_architectures() {
    let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","size":1,"platform":{"architecture":"amd64","os":"windows","os.version":"10.0.19042.1889"}}]}"#;
    let fake = Scripted::start(None, move |q: &Req| {
        if q.path.contains("/manifests/") {
            Reply::new(200, index).header(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            )
        } else if q.path == "/v2/" {
            Reply::new(200, "{}")
        } else {
            Reply::new(404, "")
        }
    });
    let s = Scratch::new("list-windows");
    let st = s.storage();
    let name = format!("{}/windows:20H2", fake.host());
    let out = output(
        chi(&st)
            .env("CH_IMAGE_REGY_INSECURE", fake.host())
            .args(["list", &name]),
    );
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l == "warning: no valid architectures found"),
        "{err}"
    );
    for line in [
        "in local storage:    no",
        "available remotely:  yes",
        "remote arch-aware:   yes",
        "archs available:     none",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
}

/// 50_ch-image.bats, 'ch-image list' ("scratch is weird and tells lies"): `list scratch`
/// says `available remotely:  yes` and `remote arch-aware:   yes` from Charliecloud's
/// internal manifest library, without a registry. Grove asked Docker Hub (offline:
/// "available remotely:  unknown" and a warning) though its pull of `scratch` never does.
#[test]
fn list_scratch_answers_from_the_built_in_image_without_a_registry() {
    let s = Scratch::new("list-scratch");
    let st = s.storage();
    for name in ["scratch", "scratch:latest"] {
        // A registry that can't be reached: asking it would say "unknown".
        let out = output(
            chi(&st)
                .env("CH_REGY_DEFAULT_HOST", "127.0.0.1")
                .env("CH_REGY_DEFAULT_PORT", "1")
                .args(["list", name]),
        );
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{name}: {err}");
        assert!(!err.contains("warning"), "{name}: {err}");
        for line in ["available remotely:  yes", "remote arch-aware:   yes"] {
            assert!(
                stdout.lines().any(|l| l == line),
                "{name}: no {line:?} in:\n{stdout}"
            );
        }
        let host = stdout
            .lines()
            .find_map(|l| l.strip_prefix("host architecture:   "))
            .unwrap_or_else(|| panic!("no host architecture in:\n{stdout}"));
        assert!(
            stdout
                .lines()
                .any(|l| l == format!("archs available:     {host}")),
            "{stdout}"
        );
    }
}

/// A store of another Grove storage version (`grove 1`) is refused with the hint "use
/// `ch-image reset` to start over" (docs/store-format.md), but `reset` refused it too,
/// with the same error: no way out but `rm -rf`. 50_ch-image.bats, 'storage directory
/// versioning', has Charliecloud's `reset` start over from an incompatible version.
#[test]
fn reset_starts_over_from_a_store_of_another_grove_version_as_the_hint_says() {
    let s = Scratch::new("reset-version");
    let st = s.storage();
    ok(chi(&st).arg("import").arg(busybox_rootfs()).arg("a"));
    crate::common::sh(&format!("echo 'grove 1' > {}/version", st.display()));
    let (code, err) = fails(chi(&st).arg("list"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unsupported version"), "{err}");
    assert!(err.contains("hint: use `ch-image reset`"), "{err}");
    let out = output(chi(&st).arg("reset"));
    assert!(
        out.status.success(),
        "reset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(chi(&st).arg("list")), "");
    let version = std::fs::read_to_string(st.join("version")).expect("version file");
    assert_eq!(version.trim_end(), grove::store::STORAGE_VERSION);
    // A version file of something else is no store to delete.
    crate::common::sh(&format!("echo 'other 1' > {}/version", st.display()));
    let (code, err) = fails(chi(&st).arg("reset"));
    assert_eq!(code, 1, "{err}");
    assert!(st.join("version").is_file());
    // Charliecloud's storage (a number) is still not Grove's to delete.
    let cc = s.join("cc");
    crate::common::sh(&format!(
        "mkdir -p {0}/img {0}/dlcache {0}/ulcache && echo 5 > {0}/version",
        cc.display()
    ));
    let (code, err) = fails(chi(&cc).arg("reset"));
    assert_eq!(code, 1, "{err}");
    assert!(cc.join("version").is_file());
}

/// `list` in Charliecloud's order: its image directories sorted by name, so `a` comes
/// before `a:1` and `a/b` (`a`, `a%b`, `a+1`, `a-b`, …). Grove sorted its own ref
/// names, listing `a/b`, `a:1`, `a`: a script comparing the list (as 55_cache.bats,
/// 'delete', does with `diff`) saw another order.
#[test]
fn list_orders_images_as_charliecloud_does() {
    let s = Scratch::new("list-order");
    let st = s.storage();
    let order = ["a", "a/b", "a:1", "a-b", "a.b", "a_stage0", "b"];
    for name in ["b", "a_stage0", "a.b", "a-b", "a:1", "a/b", "a"] {
        ok(chi(&st).arg("import").arg(busybox_rootfs()).arg(name));
    }
    let listed = ok(chi(&st).arg("list"));
    assert_eq!(listed.lines().collect::<Vec<_>>(), order, "{listed}");
    // The long form and JSON list them in the same order.
    let long = ok(chi(&st).args(["list", "-l"]));
    let long: Vec<_> = long
        .lines()
        .map(|l| {
            l.split('\t')
                .next()
                .expect("name")
                .trim_end_matches(":latest")
        })
        .collect();
    assert_eq!(long, order);
    let json: serde_json::Value =
        serde_json::from_str(&ok(chi(&st).args(["list", "--json"]))).expect("json");
    let names: Vec<_> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, order);
}

/// Charliecloud's `build-cache --dot[=PATH]` writes `PATH.gv` and `PATH.pdf`; its 55_cache
/// tests pass `--tree --dot="${dot_base}NAME"` throughout, after `gestalt bucache-dot`
/// (which Grove answers yes). Grove's `--dot` took no value: "unexpected value", exit 2.
/// Now `--dot=PATH` writes `PATH.gv` (and the PDF when Graphviz is installed); a bare
/// `--dot` still prints the graph on standard output.
#[test]
fn build_cache_dot_with_a_path_writes_the_graph_there() {
    let s = Scratch::new("bucache-dot");
    let st = s.storage();
    ok(chi(&st).arg("import").arg(busybox_rootfs()).arg("a"));
    ok(chi(&st).arg("gestalt").arg("bucache-dot"));
    let base = s.join("bu_empty");
    let mut opt = std::ffi::OsString::from("--dot=");
    opt.push(&base);
    let out = output(chi(&st).args(["build-cache", "--tree"]).arg(&opt));
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    let gv = std::fs::read_to_string(s.join("bu_empty.gv")).expect("PATH.gv written");
    assert!(gv.starts_with("digraph"), "{gv}");
    assert!(gv.contains("a:latest"), "{gv}");
    assert!(!stdout.contains("digraph"), "DOT on stdout too:\n{stdout}");
    assert!(
        stdout.contains("IMPORT") && stdout.contains("commits:"),
        "{stdout}"
    );
    if crate::common::have("dot") {
        assert!(s.join("bu_empty.pdf").is_file(), "{err}");
    } else {
        assert!(
            err.contains("Graphviz's dot not found"),
            "no PDF and no word of it: {err}"
        );
    }
    // Bare: on standard output, no file.
    let bare = ok(chi(&st).args(["build-cache", "--dot"]));
    assert!(bare.starts_with("digraph"), "{bare}");
}
