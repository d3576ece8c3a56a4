//! The image environment through build, store, export and run: ENV writes the image's
//! `/ch/environment` as Charliecloud does, and `ch-run --set-env` applies it.

use crate::common::{busybox_rootfs, ok, output, tool, unpriv, Scratch};
use std::path::PathBuf;
use std::process::Command;

struct World {
    s: Scratch,
    ctx: PathBuf,
}

impl World {
    fn new(tag: &str) -> World {
        let s = Scratch::new(&format!("env-{tag}"));
        let ctx = s.join("ctx");
        ok(unpriv("mkdir").arg("-p").arg(&ctx));
        let w = World { s, ctx };
        ok(w.image().arg("import").arg(busybox_rootfs()).arg("busybox"));
        w
    }

    fn image(&self) -> Command {
        let mut c = tool("ch-image");
        c.arg("-s").arg(self.s.storage());
        c.env_remove("CH_IMAGE_CACHE");
        c
    }

    /// Build `df` as `tag`; returns stderr.
    fn build(&self, tag: &str, df: &str) -> String {
        let df_path = self.ctx.join("Dockerfile");
        let mut c = unpriv("sh");
        c.arg("-c")
            .arg("cat > \"$1\"")
            .arg("sh")
            .arg(&df_path)
            .stdin(std::process::Stdio::piped());
        let mut child = c.spawn().expect("spawn sh");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(df.as_bytes()).expect("write Dockerfile");
        }
        assert!(child.wait().expect("wait sh").success());
        let out = output(self.image().args(["build", "-t", tag]).arg(&self.ctx));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build failed:\n{err}");
        err
    }

    fn run(&self, opts: &[&str], tag: &str, cmd: &[&str]) -> String {
        ok(tool("ch-run")
            .arg("-s")
            .arg(self.s.storage())
            .args(opts)
            .arg(tag)
            .arg("--")
            .args(cmd))
    }
}

#[test]
fn env_writes_ch_environment_and_set_env_applies_it() {
    let w = World::new("set");
    let df = "FROM busybox\nENV FOO=bar ZED=last\nENV AAA='x y'\nRUN cat /ch/environment > /seen\n";
    w.build("envimg", df);
    // The RUN after ENV saw the file; it lists every variable, sorted by name.
    let seen = w.run(&[], "envimg", &["cat", "/seen"]);
    assert_eq!(seen, "AAA=x y\nFOO=bar\nZED=last\n");
    // ch-run --set-env (no argument) applies it; without it, nothing is set.
    let env = w.run(&["--set-env"], "envimg", &["env"]);
    assert!(env.lines().any(|l| l == "FOO=bar"), "{env}");
    assert!(env.lines().any(|l| l == "AAA=x y"), "{env}");
    let env = w.run(&[], "envimg", &["env"]);
    assert!(!env.lines().any(|l| l == "FOO=bar"), "{env}");
    // A later ENV rewrites it, keeping the earlier variables.
    let df2 = format!("{df}ENV FOO=baz\n");
    w.build("envimg2", &df2);
    let f = w.run(&[], "envimg2", &["cat", "/ch/environment"]);
    assert_eq!(f, "AAA=x y\nFOO=baz\nZED=last\n");
    // Rebuilding hits every step: the file is part of the cached commits.
    let err = w.build("envimg2", &df2);
    assert!(!err.contains(". ENV"), "a step ran again:\n{err}");
}

#[test]
fn exported_directory_and_tarball_carry_ch_environment() {
    let w = World::new("export");
    w.build("e", "FROM busybox\nENV PATH=/usr/bin:/bin MSG=hello\n");
    let dir = w.s.join("out");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.s.storage())
        .arg("e")
        .arg(&dir));
    let f = std::fs::read_to_string(dir.join("ch/environment")).expect("ch/environment");
    assert_eq!(f, "MSG=hello\nPATH=/usr/bin:/bin\n");
    // And ch-run --set-env on the exported directory applies it.
    let env = ok(tool("ch-run")
        .arg("--set-env")
        .arg(&dir)
        .args(["--", "env"]));
    assert!(env.lines().any(|l| l == "MSG=hello"), "{env}");
    let tar = w.s.join("e.tar.gz");
    ok(tool("ch-convert")
        .arg("-s")
        .arg(w.s.storage())
        .arg("e")
        .arg(&tar));
    let list = ok(Command::new("tar").arg("-tzf").arg(&tar));
    assert!(
        list.lines()
            .any(|l| l.trim_start_matches("./") == "ch/environment"),
        "{list}"
    );
}
