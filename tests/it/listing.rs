//! Listing commands as data: `history` names its columns, and `list` (also
//! `--undeletable` and `list IMAGE`), `history`, `diff`, `build-cache` and `fsck` print JSON
//! with `--json`, for CI scripts.

use crate::common::*;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn listing_commands_print_json_and_history_names_its_columns() {
    let s = Scratch::new("listing");
    let st = s.storage();
    let image = || {
        let mut c = tool("ch-image");
        c.arg("-s").arg(&st);
        c
    };
    ok(image().arg("import").arg(busybox_rootfs()).arg("bb"));
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir '{c}' && printf 'FROM bb\\nRUN echo hi > /hi\\n' > '{c}/Dockerfile'",
        c = ctx.display()
    ));
    ok(image().args(["build", "-t", "app"]).arg(&ctx));

    let list = json(&ok(image().args(["list", "--json"])));
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|i| i["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["app", "bb"]);
    assert_eq!(list[0]["ref"], "app:latest");
    assert_eq!(list[0]["commit"].as_str().map(str::len), Some(40));

    let diff = json(&ok(image().args(["diff", "--json", "bb", "app"])));
    assert_eq!(diff, serde_json::json!([{ "change": "A", "path": "/hi" }]));
    let stat = json(&ok(image().args(["diff", "--json", "--stat", "bb", "app"])));
    assert_eq!(
        (stat["added"].as_u64(), stat["removed"].as_u64()),
        (Some(1), Some(0))
    );

    let cache = json(&ok(image().args(["build-cache", "--json"])));
    assert_eq!(cache["images"], 2);
    assert!(
        cache["disk_used_bytes"].as_u64().is_some_and(|b| b > 0),
        "{cache}"
    );

    let history = ok(image().args(["history", "app"]));
    let mut lines = history.lines();
    let header = lines.next().expect("header");
    for column in ["COMMIT", "KEY", "HIT", "INSTRUCTION"] {
        assert!(header.contains(column), "{history}");
    }
    assert_eq!(lines.count(), 2, "one line a step: {history}");
}

#[test]
fn every_listing_command_has_json_history_undeletable_details_and_fsck() {
    let s = Scratch::new("listing-json");
    let st = s.storage();
    let image = || {
        let mut c = tool("ch-image");
        c.arg("-s").arg(&st);
        c
    };
    ok(image().arg("import").arg(busybox_rootfs()).arg("bb"));
    ok(image().arg("import").arg(busybox_rootfs()).arg("gone"));

    let history = json(&ok(image().args(["history", "--json", "bb"])));
    let steps = history.as_array().expect("array");
    assert_eq!(steps.len(), 1, "{history}");
    assert_eq!(steps[0]["commit"].as_str().map(str::len), Some(40));
    assert!(steps[0]["instruction"].is_string(), "{history}");

    // Deleted images that undelete can restore: text and JSON.
    ok(image().args(["delete", "gone"]));
    assert_eq!(ok(image().args(["list"])), "bb\n");
    assert_eq!(ok(image().args(["list", "--undeletable"])), "gone\n");
    let und = json(&ok(image().args(["list", "-u", "--json"])));
    assert_eq!(und[0]["name"], "gone", "{und}");
    assert_eq!(und[0]["ref"], "gone:latest", "{und}");
    assert_eq!(und.as_array().map(Vec::len), Some(1));
    ok(image().args(["undelete", "gone"]));
    assert_eq!(
        json(&ok(image().args(["list", "-u", "--json"]))),
        serde_json::json!([])
    );

    // Details of one image: the registry is one that is not there (no network in tests).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = output(
        image()
            .env("CH_REGY_DEFAULT_HOST", "127.0.0.1")
            .env("CH_REGY_DEFAULT_PORT", port.to_string())
            .args(["list", "--json", "bb"]),
    );
    assert!(out.status.success());
    let d = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(d["name"], "bb:latest", "{d}");
    assert_eq!(d["local"]["commit"].as_str().map(str::len), Some(40), "{d}");
    assert!(d["remote"]["error"].is_string(), "{d}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can't query registry"),
        "the warning stays on stderr"
    );
    let missing = json(&ok(image()
        .env("CH_REGY_DEFAULT_HOST", "127.0.0.1")
        .env("CH_REGY_DEFAULT_PORT", port.to_string())
        .args(["list", "--json", "nosuch"])));
    assert_eq!(missing["local"], serde_json::Value::Null, "{missing}");

    let fsck = json(&ok(image().args(["fsck", "--json"])));
    assert_eq!(
        fsck,
        serde_json::json!({ "ok": true, "problems": [], "leftovers": [] })
    );
    // A damaged checkout: the problem in the JSON, and still a failure.
    let dir = ok(image().args(["checkout", "bb"]));
    sh(&format!(
        "chmod u+w '{d}/bin' && rm '{d}/bin/busybox'",
        d = dir.trim()
    ));
    let out = output(image().args(["fsck", "--json"]));
    assert_eq!(out.status.code(), Some(1));
    let fsck = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(fsck["ok"], false, "{fsck}");
    let problems = fsck["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{fsck}");
    assert!(
        problems[0]
            .as_str()
            .is_some_and(|p| p.ends_with("missing: bin/busybox")),
        "{fsck}"
    );
}

/// Regression: `list` (plain, `-l`, `--undeletable`) and `build-cache --tree` printed
/// image names as their refs spell them, and git takes C1 controls and bidirectional
/// overrides in a ref name (written by git plumbing, or a fetch by git itself); `list
/// IMAGE` printed the architecture of the config as it was (a pulled config's, or an
/// imported `/ch/metadata.json`'s), as `inspect` did it and the working directory. They
/// are now `\u{..}` escapes. `build-cache --dot` wrote a name holding `"` (which git also
/// takes in a ref name) as it was, ending its Graphviz string early.
#[test]
fn list_escapes_names_from_refs_and_a_configs_architecture() {
    let s = Scratch::new("listing-escape");
    let st = s.storage();
    let image = || {
        let mut c = tool("ch-image");
        c.arg("-s").arg(&st);
        c
    };
    let raw = ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'];
    // An image whose /ch/metadata.json names an architecture and a directory with
    // escape sequences.
    let root = busybox_copy(&s, "meta");
    std::fs::create_dir_all(root.join("ch")).unwrap();
    std::fs::write(
        root.join("ch/metadata.json"),
        serde_json::json!({ "arch": "amd64\u{1b}]0;t\u{7}\u{9b}2J", "cwd": "/w\u{1b}[31m" })
            .to_string(),
    )
    .unwrap();
    own(&root);
    ok(image().arg("import").arg(&root).arg("meta"));
    let repo = st.join("repo.git");
    let git = |args: &[&str]| {
        let mut c = unpriv("git");
        c.arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        ok(&mut c)
    };
    let commit = git(&["rev-parse", "refs/grove/img/meta+latest"]);
    git(&[
        "update-ref",
        "refs/grove/img/ev\u{9b}il\u{202e}gpj.exe+latest",
        commit.trim(),
    ]);
    git(&[
        "update-ref",
        "refs/grove/deleted/go\u{9b}ne+latest",
        commit.trim(),
    ]);
    git(&["update-ref", "refs/grove/img/q\"uote+latest", commit.trim()]);
    for args in [
        &["list"][..],
        &["list", "-l"],
        &["list", "--undeletable"],
        &["build-cache", "--tree"],
        &["build-cache", "--dot"],
        &["inspect", "meta"],
    ] {
        let text = ok(image().args(args));
        assert!(!text.contains(raw), "{args:?}: {text:?}");
    }
    assert!(
        ok(image().arg("list")).contains("ev\\u{9b}il\\u{202e}gpj.exe\n"),
        "escaped, not left out"
    );
    // In Graphviz's form, a name stays one quoted string.
    let dot = ok(image().args(["build-cache", "--dot"]));
    for line in [
        "  \"ev\\\\u{9b}il\\\\u{202e}gpj.exe:latest\" [shape=box];",
        "  \"q\\\"uote:latest\" [shape=box];",
    ] {
        assert!(dot.lines().any(|l| l == line), "{line} not in:\n{dot}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let out = output(
        image()
            .env("CH_REGY_DEFAULT_HOST", "127.0.0.1")
            .env("CH_REGY_DEFAULT_PORT", port.to_string())
            .args(["list", "meta"]),
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(raw), "{text:?}");
    assert!(
        text.contains("architecture:        amd64\\u{1b}]0;t\\u{7}\\u{9b}2J\n"),
        "{text}"
    );
}
