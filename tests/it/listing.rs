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
