//! Listing commands as data: `history` names its columns, and `list`, `diff` and
//! `build-cache` print JSON with `--json`, for CI scripts.

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
