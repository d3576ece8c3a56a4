//! `ch-image pull`, `push`, `list IMAGE` and FROM against a real registry (Debian's
//! `docker-registry`, TLS with a test CA, filled with skopeo from umoci-made OCI layouts:
//! fixtures/registry.sh), plus a fake registry in this process for failures a real one
//! does not produce (a connection that dies mid-layer, hostile or truncated layers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// The registry fixture directory (certificates, OCI layout), made once.
fn fixture() -> Option<PathBuf> {
    for t in ["docker-registry", "skopeo", "umoci", "openssl", "curl"] {
        if !have(t) {
            skip(&format!(
                "{t} not installed (apt-get install docker-registry skopeo umoci openssl curl)"
            ));
            return None;
        }
    }
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Some(
        ONCE.get_or_init(|| {
            let busybox = busybox_rootfs();
            let cache = PathBuf::from(
                std::env::var_os("GROVE_FIXTURE_CACHE")
                    .unwrap_or_else(|| "/var/tmp/grove-fixtures".into()),
            );
            let dest = cache.join("registry");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/registry.sh");
            let st = Command::new("sh")
                .arg(&script)
                .arg(&dest)
                .arg(&busybox)
                .status()
                .expect("run fixtures/registry.sh");
            assert!(st.success(), "fixtures/registry.sh failed");
            dest
        })
        .clone(),
    )
}

/// A docker-registry on 127.0.0.1 with TLS; killed on drop.
pub(crate) struct Registry {
    child: Child,
    port: u16,
    data: PathBuf,
    fx: PathBuf,
    dir: Scratch,
}

impl Registry {
    pub(crate) fn start() -> Option<Registry> {
        Registry::start_with("")
    }

    /// Started with `extra` appended to its configuration.
    fn start_with(extra: &str) -> Option<Registry> {
        let fx = fixture()?;
        let dir = Scratch::new("registry");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("mkdir data");
        let cfg = dir.join("config.yml");
        let (child, port) = listening_on_a_free_port("docker-registry", |port| {
            std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
                data.display(),
                fx.join("cert.pem").display(),
                fx.join("key.pem").display()
            ) + extra,
        )
        .expect("write config");
            Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start docker-registry")
        });
        Some(Registry {
            child,
            port,
            data,
            fx,
            dir,
        })
    }

    /// The test CA's certificate (for `SSL_CERT_FILE`).
    pub(crate) fn ca(&self) -> PathBuf {
        self.fx.join("ca.pem")
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copy tag `tag` of the fixture layout to `repo:rtag` in this registry.
    pub(crate) fn put(&self, tag: &str, dest: &str, extra: &[&str]) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", self.fx.join("oci").display()))
            .arg(format!("docker://{}/{dest}", self.host()));
        ok(&mut c);
    }

    /// ch-image with a storage directory and our CA trusted.
    pub(crate) fn ch_image(&self, storage: &Path) -> Command {
        let mut c = tool("ch-image");
        c.arg("-s")
            .arg(storage)
            .env("SSL_CERT_FILE", self.fx.join("ca.pem"));
        c
    }

    pub(crate) fn curl(&self, args: &[&str]) -> String {
        ok(Command::new("curl").args(["-sfk"]).args(args))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// A listing of a tree: path, type, mode, and content hash of files.
fn tree(dir: &Path) -> String {
    ok(unpriv("sh").args([
        "-c",
        "cd \"$1\" && find . -printf '%p %y %m %l\\n' | LC_ALL=C sort && find . -type f -exec md5sum {} + | LC_ALL=C sort -k2",
        "-",
    ]).arg(dir))
}

/// The checkout of image `name` (filename form, e.g. `two+latest`), made on demand: pulls
/// store images and leave the checkout to first use.
fn image_dir(storage: &Path, name: &str) -> PathBuf {
    let out = ok(tool("ch-image")
        .arg("-s")
        .arg(storage)
        .args(["checkout", &name.replace('+', ":").replace('%', "/")]));
    let dir = PathBuf::from(out.trim());
    assert_eq!(
        std::fs::canonicalize(storage.join("img").join(name)).unwrap(),
        dir
    );
    dir
}

/// What must not change when a pull fails: the image list and no partial downloads.
fn store_state(r: &Registry, storage: &Path) -> String {
    let list = ok(r.ch_image(storage).args(["list", "-l"]));
    let partial: Vec<String> = std::fs::read_dir(storage.join("dlcache"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".partial"))
                .collect()
        })
        .unwrap_or_default();
    format!("{list}\npartial: {partial:?}")
}

#[test]
fn pull_applies_layers_whiteouts_and_config_and_pulling_again_does_no_work() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "test/two:latest", &[]);
    let s = Scratch::new("pull");
    let st = s.storage();
    let (_, err) = {
        let out = output(
            r.ch_image(&st)
                .args(["pull", &format!("{}/test/two", r.host()), "two"]),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (0, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(err.contains("done"), "{err}");
    // A pull stores the image; its checkout is made on first use (here, explicitly).
    let co = ok(r.ch_image(&st).args(["checkout", "two"]));
    let img = image_dir(&st, "two+latest");
    assert_eq!(
        std::fs::canonicalize(&img).unwrap(),
        PathBuf::from(co.trim())
    );
    assert!(img.join("bin/busybox").is_file());
    assert!(
        !img.join("etc/motd").exists(),
        "whiteout did not delete etc/motd"
    );
    assert!(img.join("etc/passwd").is_file());
    let opq: Vec<_> = std::fs::read_dir(img.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(opq, ["new"], "opaque directory kept lower entries");
    assert_eq!(
        std::fs::read_to_string(img.join("added")).unwrap(),
        "added\n"
    );
    // The config came along.
    let cfg = ok(Command::new("git")
        .arg("--git-dir")
        .arg(st.join("repo.git"))
        .args(["show", "refs/grove/img/two+latest:config.json"]));
    assert!(cfg.contains("\"FOO\""), "{cfg}");
    assert!(cfg.contains("\"/opq\""), "{cfg}");
    assert!(cfg.contains("registry.manifest"), "{cfg}");
    // ... and its environment is the image's /ch/environment, sorted, as Charliecloud
    // writes it, so `ch-run --set-env` finds it.
    let envf = std::fs::read_to_string(img.join("ch/environment")).unwrap();
    let lines: Vec<&str> = envf.lines().collect();
    assert!(lines.contains(&"FOO=bar"), "{envf:?}");
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "{envf:?}");

    // Again: nothing downloaded.
    let before = std::fs::metadata(st.join("dlcache"))
        .unwrap()
        .modified()
        .unwrap();
    let out = output(
        r.ch_image(&st)
            .args(["pull", &format!("{}/test/two", r.host()), "two"]),
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("up to date"), "{err}");
    assert_eq!(
        std::fs::metadata(st.join("dlcache"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );

    // list IMAGE shows the remote side.
    let list = ok(r
        .ch_image(&st)
        .args(["list", &format!("{}/test/two", r.host())]));
    assert!(list.contains("available remotely:  yes"), "{list}");
    assert!(list.contains("remote digest:       sha256:"), "{list}");
}

#[test]
fn from_of_a_missing_image_pulls_it() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "test/base:1", &[]);
    let s = Scratch::new("from");
    let st = s.storage();
    let ctx = s.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}/test/base:1\nENV X=1\n", r.host()),
    )
    .unwrap();
    ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(&ctx));
    ok(r.ch_image(&st).args(["build", "-t", "derived"]).arg(&ctx));
    let list = ok(r.ch_image(&st).arg("list"));
    assert!(
        list.contains(&format!("{}/test/base:1", r.host())),
        "{list}"
    );
    assert!(list.lines().any(|l| l == "derived"), "{list}");
    let dir = ok(r.ch_image(&st).args(["checkout", "derived"]));
    assert!(Path::new(dir.trim()).join("added").is_file());
}

#[test]
fn push_then_pull_back_gives_the_same_tree_without_setid_bits() {
    let Some(r) = Registry::start() else { return };
    let s = Scratch::new("push");
    let st = s.storage();
    let src = s.join("src");
    sh(&format!(
        "cp -a {}/. {src}/ && chmod 4755 {src}/bin/busybox && mkdir {src}/sg && chmod 2775 {src}/sg",
        busybox_rootfs().display(),
        src = src.display()
    ));
    ok(r.ch_image(&st).arg("import").arg(&src).arg("local"));
    let dest = format!("{}/pushed/img:v1", r.host());
    ok(r.ch_image(&st).args(["push", "local", &dest]));
    // Others can read what we pushed.
    ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{dest}")]));
    // Its config keeps the image's history, one non-empty entry for the one layer (what
    // Buildah and Podman check before building on an image).
    let cfg: serde_json::Value = serde_json::from_str(&ok(Command::new("skopeo").args([
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{dest}"),
    ])))
    .expect("config json");
    assert_eq!(cfg["history"][0]["created_by"], "ch-image import", "{cfg}");
    let non_empty = cfg["history"]
        .as_array()
        .map_or(0, |h| h.iter().filter(|e| e["empty_layer"] != true).count());
    assert_eq!(
        non_empty,
        cfg["rootfs"]["diff_ids"].as_array().map_or(0, |l| l.len())
    );
    ok(r.ch_image(&st).args(["pull", &dest, "back"]));
    let mut want = tree(&image_dir(&st, "local+latest"));
    want = want
        .replace("./bin/busybox f 4755", "./bin/busybox f 755")
        .replace("./sg d 2775", "./sg d 775");
    assert_eq!(want, tree(&image_dir(&st, "back+latest")));
    // Pushing again uploads nothing new.
    let out = output(r.ch_image(&st).args(["push", "local", &dest]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already present"));
    // push --image DIR
    let dest2 = format!("{}/pushed/dir:v1", r.host());
    ok(r.ch_image(&st)
        .args(["push", "--image"])
        .arg(&src)
        .arg(&dest2));
    ok(r.ch_image(&st).args(["pull", &dest2, "back2"]));
    assert_eq!(want, tree(&image_dir(&st, "back2+latest")));
}

#[test]
fn manifest_list_selects_the_architecture() {
    let Some(r) = Registry::start() else { return };
    if std::env::consts::ARCH != "x86_64" {
        skip("manifest list test assumes an amd64 host");
        return;
    }
    r.put("two", "multi/img:amd64", &[]);
    r.put("arm", "multi/img:arm64", &[]);
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let mut entries = Vec::new();
    for (tag, arch, variant) in [
        ("amd64", "amd64", ""),
        ("arm64", "arm64", ",\"variant\":\"v8\""),
    ] {
        let body = r.curl(&[
            "-H",
            accept,
            &format!("https://{}/v2/multi/img/manifests/{tag}", r.host()),
        ]);
        let digest = ok(Command::new("sh").args([
            "-c",
            "printf %s \"$1\" | sha256sum | cut -d' ' -f1",
            "-",
            &body,
        ]));
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"{variant}}}}}"#,
            digest.trim(),
            body.len()
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    r.curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &index,
        &format!("https://{}/v2/multi/img/manifests/latest", r.host()),
    ]);
    let s = Scratch::new("arch");
    let st = s.storage();
    let refr = format!("{}/multi/img", r.host());
    ok(r.ch_image(&st).args(["pull", &refr, "host"]));
    assert!(image_dir(&st, "host+latest").join("added").exists());
    ok(r.ch_image(&st)
        .args(["--arch", "arm64", "pull", &refr, "arm"]));
    assert!(image_dir(&st, "arm+latest").join("arch-arm64").exists());
    // A build's FROM pulls with the command line's settings (passed to the build).
    let ctx = s.join("ctx");
    sh(&format!(
        "mkdir {c} && echo 'FROM {refr}' > {c}/Dockerfile",
        c = ctx.display()
    ));
    ok(r.ch_image(&st)
        .args(["--arch", "arm64", "build", "-t", "from-arm"])
        .arg(&ctx));
    assert!(image_dir(&st, "from-arm+latest")
        .join("arch-arm64")
        .exists());
    let before = store_state(&r, &st);
    let (_, err) = fails(
        r.ch_image(&st)
            .args(["pull", "--arch", "ppc64le", &refr, "ppc"]),
    );
    assert!(
        err.contains("ppc64le not available; available: amd64 arm64/v8"),
        "{err}"
    );
    assert_eq!(before, store_state(&r, &st));
    let list = ok(r.ch_image(&st).args(["list", &refr]));
    assert!(
        list.contains("archs available:     amd64 arm64/v8"),
        "{list}"
    );
}

#[test]
fn pull_of_a_missing_tag_fails_and_leaves_the_store_unchanged() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "test/two:latest", &[]);
    let s = Scratch::new("missing");
    let st = s.storage();
    ok(r.ch_image(&st)
        .args(["pull", &format!("{}/test/two", r.host()), "keep"]));
    let before = store_state(&r, &st);
    let (_, err) =
        fails(
            r.ch_image(&st)
                .args(["pull", &format!("{}/test/two:nope", r.host()), "keep"]),
        );
    assert!(err.contains("image not found in registry"), "{err}");
    assert_eq!(before, store_state(&r, &st));
    // A wrong digest: also not found, nothing changed.
    let zero = "0".repeat(64);
    let (_, err) = fails(r.ch_image(&st).args([
        "pull",
        &format!("{}/test/two@sha256:{zero}", r.host()),
        "keep",
    ]));
    assert!(err.contains("not found"), "{err}");
    assert_eq!(before, store_state(&r, &st));
}

#[test]
fn corrupted_blob_in_the_registry_is_a_digest_mismatch() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "test/two:latest", &[]);
    // Corrupt the second (small) layer in the registry's storage, keeping its size.
    let manifest = r.curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("https://{}/v2/test/two/manifests/latest", r.host()),
    ]);
    let layer = manifest
        .rsplit("\"digest\":\"sha256:")
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let data = r
        .data
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let mut bytes = std::fs::read(&data).expect("read blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let s = Scratch::new("corrupt");
    let st = s.storage();
    ok(r.ch_image(&st).arg("list"));
    let before = store_state(&r, &st);
    let (_, err) = fails(
        r.ch_image(&st)
            .args(["pull", &format!("{}/test/two", r.host())]),
    );
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(before, store_state(&r, &st));
    assert!(!st.join("dlcache").join(format!("sha256-{layer}")).exists());
}

#[test]
fn untrusted_certificate_is_refused_unless_tls_no_verify() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "test/two:latest", &[]);
    let s = Scratch::new("tls");
    let st = s.storage();
    let refr = format!("{}/test/two", r.host());
    let (_, err) = fails(
        r.ch_image(&st)
            .env_remove("SSL_CERT_FILE")
            .args(["pull", &refr]),
    );
    assert!(
        err.contains("hint: for a registry with a self-signed certificate"),
        "{err}"
    );
    ok(r.ch_image(&st)
        .env_remove("SSL_CERT_FILE")
        .args(["pull", "--tls-no-verify", &refr]));
}

/// A bcrypt htpasswd line for `user:pass` (htpasswd from apache2-utils, else Python's
/// `crypt`), or None if neither is available.
fn htpasswd_line(user: &str, pass: &str) -> Option<String> {
    if have("htpasswd") {
        let out = ok(Command::new("htpasswd").args(["-Bbn", user, pass]));
        return Some(out.trim().to_string());
    }
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            pass,
        ])
        .output()
        .ok()?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && hash.starts_with("$2")).then(|| format!("{user}:{hash}"))
}

#[test]
fn real_registry_with_htpasswd_needs_the_right_credentials() {
    let Some(line) = htpasswd_line("u", "p") else {
        skip("no bcrypt tool (htpasswd from apache2-utils, or python3 crypt)");
        return;
    };
    let pwdir = Scratch::new("htpasswd");
    let pwfile = pwdir.join("htpasswd");
    std::fs::write(&pwfile, format!("{line}\n")).unwrap();
    let Some(r) = Registry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: x\n    path: {}\n",
        pwfile.display()
    )) else {
        return;
    };
    r.put("two", "test/two:latest", &["--dest-creds", "u:p"]);
    let refr = format!("{}/test/two:latest", r.host());
    let s = Scratch::new("htpasswd-pull");
    let st = s.storage();
    ok(r.ch_image(&st).arg("list"));
    let before = store_state(&r, &st);

    // No credentials (a Basic challenge asks for them; no terminal, even when the tests
    // run on one, thanks to setsid): refused.
    let mut anon = r.ch_image(&st);
    anon.args(["pull", &refr])
        .env_remove("CH_IMAGE_USERNAME")
        .env_remove("CH_IMAGE_PASSWORD")
        .env_remove("CH_IMAGE_AUTH")
        .stdin(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut anon, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let (_, err) = fails(&mut anon);
    assert!(err.contains("authentication"), "{err}");
    assert_eq!(before, store_state(&r, &st));

    // Wrong password: refused, store unchanged.
    let (_, err) = fails(
        r.ch_image(&st)
            .args(["pull", "--auth", &refr])
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "wrong"),
    );
    assert!(err.contains("authentication"), "{err}");
    assert_eq!(before, store_state(&r, &st));

    // Right password: pulls; push back under another tag works too.
    ok(r.ch_image(&st)
        .args(["pull", "--auth", &refr, "two"])
        .env("CH_IMAGE_USERNAME", "u")
        .env("CH_IMAGE_PASSWORD", "p"));
    let dir = image_dir(&st, "two+latest");
    let pushed = format!("{}/test/two:again", r.host());
    ok(r.ch_image(&st)
        .args(["push", "two", &pushed])
        .env("CH_IMAGE_USERNAME", "u")
        .env("CH_IMAGE_PASSWORD", "p"));
    let (_, err) = fails(
        r.ch_image(&st)
            .args(["push", "two", &pushed])
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "wrong"),
    );
    assert!(err.contains("authentication"), "{err}");
    ok(r.ch_image(&st)
        .args(["pull", "--auth", &pushed, "again"])
        .env("CH_IMAGE_USERNAME", "u")
        .env("CH_IMAGE_PASSWORD", "p"));
    assert_eq!(tree(&dir), tree(&image_dir(&st, "again+latest")));
}

// ---------------------------------------------------------------------------------------
// A fake registry (plain HTTP) for failures: it serves fixed blobs and can cut a blob short.

pub(crate) struct Fake {
    pub(crate) port: u16,
    /// Requests received: `PATH auth=AUTHORIZATION` (empty if none), in order.
    log: Arc<Mutex<Vec<String>>>,
}

/// How the fake registry wants to be authenticated.
#[derive(Clone)]
enum FakeAuth {
    /// Anonymous access.
    Open,
    /// `/v2/...` needs `Authorization: Bearer TOKEN123`, else a 401 Bearer challenge
    /// (realm `/token`, service `fake`); `/token` gives the token, anonymously or only
    /// to this `Authorization` value.
    Bearer(Option<&'static str>),
    /// `/v2/...` needs this `Authorization` value, else a 401 `Basic` challenge.
    Basic(&'static str),
}

/// `Authorization: Basic base64("u:p")`.
const BASIC_U_P: &str = "Basic dTpw";

struct FakeBlob {
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    /// Send only this many bytes, then close (Content-Length says the full size).
    cut: Option<usize>,
}

fn sha256_hex(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

impl Fake {
    /// Serve an image `fake/img:latest` whose single layer is `layer` (as stored), cut
    /// short after `cut` bytes if given.
    pub(crate) fn start(layer: Vec<u8>, cut: Option<usize>) -> Fake {
        Fake::start_auth(layer, cut, FakeAuth::Open)
    }

    fn start_auth(layer: Vec<u8>, cut: Option<usize>, auth: FakeAuth) -> Fake {
        let config = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let cd = sha256_hex(&config);
        let ld = sha256_hex(&layer);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{ld}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let blobs = [
            FakeBlob {
                path: "/v2/fake/img/manifests/latest".into(),
                content_type: "application/vnd.oci.image.manifest.v1+json",
                body: manifest.into_bytes(),
                cut: None,
            },
            FakeBlob {
                path: format!("/v2/fake/img/blobs/sha256:{cd}"),
                content_type: "application/octet-stream",
                body: config,
                cut: None,
            },
            FakeBlob {
                path: format!("/v2/fake/img/blobs/sha256:{ld}"),
                content_type: "application/octet-stream",
                body: layer,
                cut,
            },
        ];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            // Bounded: a test makes a few dozen requests at most.
            for conn in listener.incoming().take(128) {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut authz = String::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authz = v.trim().to_string();
                        }
                    }
                }
                log2.lock().unwrap().push(format!("{path} auth={authz}"));
                let unauthorized = |conn: &mut TcpStream, challenge: Option<String>| {
                    let ch = challenge
                        .map(|c| format!("WWW-Authenticate: {c}\r\n"))
                        .unwrap_or_default();
                    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
                    let _ = write!(
                        conn,
                        "HTTP/1.1 401 Unauthorized\r\n{ch}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                };
                if path == "/token" || path.starts_with("/token?") {
                    match &auth {
                        FakeAuth::Bearer(Some(need)) if authz != *need => {
                            unauthorized(&mut conn, Some(r#"Basic realm="fake-token""#.into()));
                        }
                        _ => {
                            let body = r#"{"token":"TOKEN123"}"#;
                            let _ = write!(
                                conn,
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                    }
                    let _ = conn.flush();
                    continue;
                }
                let challenge = match &auth {
                    FakeAuth::Open => None,
                    FakeAuth::Bearer(_) => (authz != "Bearer TOKEN123").then(|| {
                        format!(
                            r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:fake/img:pull""#
                        )
                    }),
                    FakeAuth::Basic(need) => {
                        (authz != *need).then(|| r#"Basic realm="x""#.to_string())
                    }
                };
                if challenge.is_some() {
                    unauthorized(&mut conn, challenge);
                    let _ = conn.flush();
                    continue;
                }
                if path == "/v2/" {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    );
                    let _ = conn.flush();
                    continue;
                }
                match blobs.iter().find(|b| b.path == path) {
                    Some(b) => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.content_type,
                            b.body.len()
                        );
                        let n = b.cut.unwrap_or(b.body.len());
                        let _ = conn.write_all(&b.body[..n]);
                    }
                    None => {
                        let _ = conn.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
                let _ = conn.flush();
                drop(conn);
            }
        });
        Fake { port, log }
    }

    /// The requests received so far.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn pull_cmd(&self, storage: &Path) -> Command {
        let mut c = tool("ch-image");
        c.arg("-s")
            .arg(storage)
            .env("CH_IMAGE_REGY_INSECURE", format!("127.0.0.1:{}", self.port))
            .env_remove("CH_IMAGE_AUTH")
            .args(["pull", &format!("127.0.0.1:{}/fake/img", self.port), "img"]);
        c
    }

    fn pull(&self, storage: &Path) -> (i32, String) {
        fails(&mut self.pull_cmd(storage))
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut c = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = data.to_vec();
    let t = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = c.wait_with_output().unwrap();
    t.join().unwrap();
    out.stdout
}

/// A tar with one member of the given (raw) name.
pub(crate) fn tar_with_member(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

fn empty_store(s: &Scratch) -> PathBuf {
    let st = s.storage();
    ok(tool("ch-image").arg("-s").arg(&st).arg("list"));
    st
}

fn list_of(st: &Path) -> String {
    ok(tool("ch-image").arg("-s").arg(st).args(["list", "-l"]))
}

#[test]
fn zstd_layer_over_plain_http_for_an_insecure_registry() {
    let tar = tar_with_member("hello", b"zstd layer\n");
    let layer = zstd::encode_all(&tar[..], 3).unwrap();
    let hex = sha256_hex(&layer);
    let fake = Fake::start(layer, None);
    let s = Scratch::new("zstd");
    let st = empty_store(&s);
    // Leftovers of an interrupted pull: a partial file of a dead process, and a corrupt
    // complete file. The pull restarts cleanly.
    let cache = st.join("dlcache");
    std::fs::create_dir_all(&cache).unwrap();
    let stale = cache.join(format!("sha256-{hex}.partial.4000000"));
    std::fs::write(&stale, b"half").unwrap();
    std::fs::write(cache.join(format!("sha256-{hex}")), b"corrupt").unwrap();
    ok(Command::new("chown")
        .args(["-R", &format!("{TEST_UID}:{TEST_UID}")])
        .arg(&cache));
    let out = ok(&mut fake.pull_cmd(&st));
    let _ = out;
    assert!(!stale.exists(), "stale partial download left behind");
    assert_eq!(
        std::fs::read_to_string(image_dir(&st, "img+latest").join("hello")).unwrap(),
        "zstd layer\n"
    );
}

/// The download cache is a cache: `build-cache --gc` removes the layers pulls kept there
/// (the git objects hold what they unpacked to), the least recently used first with
/// `--keep-storage`, and a pull after that downloads again. Before, only `reset` emptied
/// it, so every layer ever pulled stayed on disk twice.
#[test]
fn gc_empties_the_download_cache_and_keep_storage_keeps_recent_layers() {
    let tar = tar_with_member("hello", b"cached layer\n");
    let layer = gzip(&tar);
    let hex = sha256_hex(&layer);
    let fake = Fake::start(layer, None);
    let s = Scratch::new("dlgc");
    let st = empty_store(&s);
    let cached = st.join("dlcache").join(format!("sha256-{hex}"));
    let gc = |keep: Option<&str>| {
        let mut c = tool("ch-image");
        c.arg("-s").arg(&st).args(["build-cache", "--gc"]);
        if let Some(k) = keep {
            c.args(["--keep-storage", k]);
        }
        let out = output(&mut c);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    ok(&mut fake.pull_cmd(&st));
    assert!(
        cached.exists(),
        "pull keeps its layer in the download cache"
    );
    let err = gc(Some("1G"));
    assert!(cached.exists(), "kept within --keep-storage: {err}");
    assert!(
        err.contains("downloaded layers: removed 0 (0.0 MiB), kept 1"),
        "{err}"
    );
    let err = gc(None);
    assert!(!cached.exists(), "gc left the downloaded layer: {err}");
    assert!(err.contains("downloaded layers: removed 1 ("), "{err}");
    assert_eq!(
        std::fs::read_to_string(image_dir(&st, "img+latest").join("hello")).unwrap(),
        "cached layer\n"
    );
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
    // A later pull that needs the layer downloads it again.
    let mut c = fake.pull_cmd(&st);
    c.args(["--no-cache"]);
    ok(&mut c);
    assert!(cached.exists());
}

#[test]
fn registry_going_away_mid_layer_fails_cleanly() {
    let mut big = Vec::new();
    for i in 0..200_000u32 {
        big.extend_from_slice(&i.to_le_bytes());
    }
    let layer = gzip(&tar_with_member("big", &big));
    let cut = layer.len() / 2;
    let fake = Fake::start(layer, Some(cut));
    let s = Scratch::new("cut");
    let st = empty_store(&s);
    let before = list_of(&st);
    let (_, err) = fake.pull(&st);
    assert!(err.contains("can't download layer 1/1"), "{err}");
    assert_eq!(before, list_of(&st));
    let leftovers: Vec<_> = std::fs::read_dir(st.join("dlcache"))
        .unwrap()
        .flatten()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn hostile_layer_member_is_refused() {
    let layer = gzip(&tar_with_member("../escape", b"x"));
    let fake = Fake::start(layer, None);
    let s = Scratch::new("hostile");
    let st = empty_store(&s);
    let before = list_of(&st);
    let (_, err) = fake.pull(&st);
    assert!(err.contains("can't unpack layer"), "{err}");
    assert!(err.contains(".."), "{err}");
    assert_eq!(before, list_of(&st));
}

/// A layer member whose path is longer than PATH_MAX is refused as import refuses it
/// (hostile_input.rs, `member_paths_longer_than_path_max_are_refused_where_read`): the
/// pull fails naming it, the store unchanged. Before, it was stored and every checkout
/// failed ("File name too long").
#[test]
fn layer_member_path_longer_than_path_max_is_refused() {
    use crate::hostile_input::{path_of, quoted};
    let member = path_of(4095);
    let layer = gzip(&crate::common::raw_tar(&[(
        &member,
        tar::EntryType::Regular,
        b"",
        b"x",
    )]));
    let fake = Fake::start(layer, None);
    let s = Scratch::new("pathmax");
    let st = empty_store(&s);
    let before = list_of(&st);
    let (_, err) = fake.pull(&st);
    assert!(err.contains("can't unpack layer"), "{err}");
    assert!(
        err.contains(&format!(
            "member {}: its path is 4096 bytes with its leading /, longer than 4095 (PATH_MAX)",
            quoted(4095)
        )),
        "{err}"
    );
    assert_eq!(before, list_of(&st));
}

#[test]
fn truncated_layer_with_a_matching_digest_is_refused() {
    let full = gzip(&tar_with_member("file", &vec![7u8; 100_000]));
    let layer = full[..full.len() / 2].to_vec();
    let fake = Fake::start(layer, None);
    let s = Scratch::new("trunc");
    let st = empty_store(&s);
    let before = list_of(&st);
    let (_, err) = fake.pull(&st);
    assert!(err.contains("can't unpack layer"), "{err}");
    assert_eq!(before, list_of(&st));
}

// ---------------------------------------------------------------------------------------
// Authentication against the fake registry.

/// A layer with one file `hello` saying "authenticated\n".
fn auth_layer() -> Vec<u8> {
    gzip(&tar_with_member("hello", b"authenticated\n"))
}

fn assert_pulled(st: &Path) {
    assert_eq!(
        std::fs::read_to_string(image_dir(st, "img+latest").join("hello")).unwrap(),
        "authenticated\n"
    );
}

/// Requests for the token endpoint.
fn token_requests(fake: &Fake) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.starts_with("/token"))
        .collect()
}

#[test]
fn bearer_challenge_gets_an_anonymous_token_and_pulls() {
    let fake = Fake::start_auth(auth_layer(), None, FakeAuth::Bearer(None));
    let s = Scratch::new("bearer");
    let st = empty_store(&s);
    ok(&mut fake.pull_cmd(&st));
    assert_pulled(&st);
    let tokens = token_requests(&fake);
    assert!(
        !tokens.is_empty(),
        "token endpoint not asked: {:?}",
        fake.requests()
    );
    for t in &tokens {
        // Anonymous: no credentials sent without --auth.
        assert!(t.ends_with(" auth="), "credentials sent anonymously: {t}");
        let (_, query) = t.split_once('?').expect("token request without a query");
        let query = query.split(' ').next().unwrap();
        let params: Vec<&str> = query.split('&').collect();
        assert!(params.contains(&"service=fake"), "{t}");
        assert!(
            params.contains(&"scope=repository%3Afake%2Fimg%3Apull"),
            "{t}"
        );
    }
    // Every registry request after the token carries it.
    let reqs = fake.requests();
    let first_token = reqs.iter().position(|r| r.starts_with("/token")).unwrap();
    let later: Vec<_> = reqs[first_token + 1..]
        .iter()
        .filter(|r| r.starts_with("/v2/"))
        .collect();
    assert!(!later.is_empty(), "{reqs:?}");
    assert!(
        later.iter().all(|r| r.ends_with("auth=Bearer TOKEN123")),
        "{reqs:?}"
    );
}

#[test]
fn token_endpoint_with_basic_auth_needs_the_right_password() {
    let fake = Fake::start_auth(auth_layer(), None, FakeAuth::Bearer(Some(BASIC_U_P)));
    let s = Scratch::new("bearer-basic");
    let st = empty_store(&s);
    let before = list_of(&st);

    // Anonymous: the token endpoint refuses; the error says why and hints at --auth.
    let (_, err) = fails(&mut fake.pull_cmd(&st));
    assert!(err.contains("authentication"), "{err}");
    assert!(err.contains("--auth"), "{err}");
    assert_eq!(before, list_of(&st));

    // Wrong password, with --auth: refused, store unchanged.
    let (_, err) = fails(
        fake.pull_cmd(&st)
            .arg("--auth")
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "wrong"),
    );
    assert!(err.contains("authentication"), "{err}");
    assert!(!err.contains("wrong"), "password in error message: {err}");
    assert_eq!(before, list_of(&st));
    assert!(
        token_requests(&fake)
            .iter()
            .any(|t| t.ends_with("auth=Basic dTp3cm9uZw==")),
        "{:?}",
        fake.requests()
    );

    // Right password via CH_IMAGE_AUTH=yes: pulls.
    ok(fake
        .pull_cmd(&st)
        .env("CH_IMAGE_AUTH", "yes")
        .env("CH_IMAGE_USERNAME", "u")
        .env("CH_IMAGE_PASSWORD", "p"));
    assert_pulled(&st);
    assert!(
        token_requests(&fake)
            .iter()
            .any(|t| t.ends_with(&format!("auth={BASIC_U_P}"))),
        "{:?}",
        fake.requests()
    );
}

#[test]
fn basic_challenge_uses_the_environment_credentials() {
    let fake = Fake::start_auth(auth_layer(), None, FakeAuth::Basic(BASIC_U_P));
    let s = Scratch::new("basic");
    let st = empty_store(&s);
    let before = list_of(&st);

    let (_, err) = fails(
        fake.pull_cmd(&st)
            .arg("--auth")
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "wrong"),
    );
    assert!(err.contains("authentication"), "{err}");
    assert_eq!(before, list_of(&st));

    ok(fake
        .pull_cmd(&st)
        .arg("--auth")
        .env("CH_IMAGE_USERNAME", "u")
        .env("CH_IMAGE_PASSWORD", "p"));
    assert_pulled(&st);
    assert!(token_requests(&fake).is_empty());
}

fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

// ---------------------------------------------------------------------------------------
// A scripted fake registry, plain HTTP or TLS, for registries that misbehave on purpose
// (issue 18): every request is answered by a closure, and logged. Several can run at once,
// one standing in for "another host".

/// A request the scripted fake received.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: String,
    pub(crate) path: String,
    /// The `Authorization` header, empty if none.
    auth: String,
    /// The `Range` header, empty if none.
    range: String,
    /// When it came (its head read).
    at: Instant,
}

/// An answer of the scripted fake.
#[derive(Clone)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send the body a byte at a time, this far apart.
    trickle: Option<Duration>,
    /// No `Content-Length`: the body ends when the connection closes.
    no_length: bool,
    /// `Content-Length` says this instead of the body's length.
    declare: Option<u64>,
    /// After the body, the connection stays open (no `Connection: close`) this long.
    keep_open: Option<Duration>,
    /// After the body, this many more bytes (spaces, in the `Content-Length`), and the
    /// count of those the client took (written without error).
    pad: Option<(u64, Arc<std::sync::atomic::AtomicU64>)>,
    /// No answer at all: the connection is closed once the request is read.
    cut: bool,
}

impl Reply {
    pub(crate) fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            trickle: None,
            no_length: false,
            declare: None,
            keep_open: None,
            pad: None,
            cut: false,
        }
    }

    /// No answer: the connection closed once the request is read (a registry that
    /// restarts, a proxy that drops it).
    fn cut() -> Reply {
        Reply {
            cut: true,
            ..Reply::new(0, "")
        }
    }

    fn json(body: &str) -> Reply {
        Reply::new(200, body).header("Content-Type", "application/json")
    }

    pub(crate) fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }

    fn trickle(mut self, every: Duration) -> Reply {
        self.trickle = Some(every);
        self
    }

    /// Announce `n` bytes, send the body, then keep the connection open `hold` long
    /// (a server that stalls, or lies about the length, on a kept-alive connection).
    fn stall(mut self, n: u64, hold: Duration) -> Reply {
        self.declare = Some(n);
        self.keep_open = Some(hold);
        self
    }

    /// Follow the body with `n` spaces, counted into `sent`.
    fn pad(mut self, n: u64, sent: Arc<std::sync::atomic::AtomicU64>) -> Reply {
        self.pad = Some((n, sent));
        self
    }

    /// A 401 with this challenge.
    fn challenge(c: &str) -> Reply {
        Reply::new(
            401,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
        .header("Content-Type", "application/json")
        .header("WWW-Authenticate", c)
    }
}

type Route = dyn Fn(&Req) -> Reply + Send + Sync;

pub(crate) struct Scripted {
    port: u16,
    log: Arc<Mutex<Vec<Req>>>,
}

/// The CA (its PEM file) and the server configuration of TLS fakes: a certificate for
/// 127.0.0.1 signed by a test CA, made once with openssl. `None` (after a loud skip)
/// without openssl.
fn fake_tls() -> Option<(PathBuf, Arc<rustls::ServerConfig>)> {
    if !have("openssl") {
        skip("openssl not installed (apt-get install openssl)");
        return None;
    }
    static ONCE: std::sync::OnceLock<(PathBuf, Arc<rustls::ServerConfig>)> =
        std::sync::OnceLock::new();
    Some(
        ONCE.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("grove-fake-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let script = r#"
                cd "$1"
                openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=grove-fake-ca \
                    -keyout ca.key -out ca.pem 2>/dev/null
                openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
                    -keyout key.pem -out req.csr 2>/dev/null
                printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
                openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                    -days 30 -extfile ext -out cert.pem 2>/dev/null
                chmod 755 . && chmod 644 ca.pem
            "#;
            let st = Command::new("sh")
                .args(["-ec", script, "-"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success(), "making test certificates failed");
            use rustls::pki_types::pem::PemObject as _;
            let certs: Vec<_> =
                rustls::pki_types::CertificateDer::pem_file_iter(dir.join("cert.pem"))
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
            let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            (dir.join("ca.pem"), Arc::new(cfg))
        })
        .clone(),
    )
}

/// Read one request (head and body) from `s`, answer it by `route`, log it.
fn serve_one(s: &mut (impl Read + Write), route: &Route, log: &Mutex<Vec<Req>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let at = Instant::now();
    let (mut auth, mut range, mut length) = (String::new(), String::new(), 0u64);
    for h in lines {
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            } else if k.eq_ignore_ascii_case("range") {
                range = v.trim().to_string();
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    // The request body is read (and dropped) before answering.
    if std::io::copy(&mut Read::by_ref(s).take(length), &mut std::io::sink()).is_err() {
        return;
    }
    let req = Req {
        method,
        path,
        auth,
        range,
        at,
    };
    log.lock().unwrap().push(req.clone());
    let r = route(&req);
    if r.cut {
        return;
    }
    let mut out = format!("HTTP/1.1 {} X\r\n", r.status);
    if r.keep_open.is_none() {
        out.push_str("Connection: close\r\n");
    }
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !r.no_length {
        let pad = r.pad.as_ref().map_or(0, |p| p.0);
        let n = r.declare.unwrap_or(r.body.len() as u64 + pad);
        out.push_str(&format!("Content-Length: {n}\r\n"));
    }
    out.push_str("\r\n");
    if s.write_all(out.as_bytes()).is_err() {
        return;
    }
    if req.method == "HEAD" {
        let _ = s.flush();
        return;
    }
    match r.trickle {
        None => {
            let _ = s.write_all(&r.body);
        }
        Some(every) => {
            for b in &r.body {
                if s.write_all(&[*b]).and_then(|()| s.flush()).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        }
    }
    if let Some((n, sent)) = &r.pad {
        let chunk = vec![b' '; 64 << 10];
        let mut left = *n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            if s.write_all(&chunk[..k]).is_err() {
                break;
            }
            sent.fetch_add(k as u64, std::sync::atomic::Ordering::SeqCst);
            left -= k as u64;
        }
    }
    let _ = s.flush();
    if let Some(hold) = r.keep_open {
        std::thread::sleep(hold);
    }
}

impl Scripted {
    /// Listen on a free port of 127.0.0.1, over TLS (the certificate of [`fake_tls`]) or
    /// plain HTTP.
    pub(crate) fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        route: impl Fn(&Req) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let route: Arc<Route> = Arc::new(route);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
                let (route, log, tls) = (route.clone(), log2.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    Some(cfg) => {
                        let Ok(c) = rustls::ServerConnection::new(cfg) else {
                            return;
                        };
                        let mut s = rustls::StreamOwned::new(c, tcp);
                        serve_one(&mut s, &*route, &log);
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    }
                    None => {
                        let mut tcp = tcp;
                        serve_one(&mut tcp, &*route, &log);
                        let _ = tcp.shutdown(std::net::Shutdown::Write);
                    }
                });
            }
        });
        Scripted { port, log }
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

/// An image `fake/img:latest` for scripted fakes: a manifest listing `layers` (content,
/// declared size) in order, and its blobs.
struct FakeImage {
    manifest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

impl FakeImage {
    fn new(layers: &[(&[u8], u64)]) -> FakeImage {
        let config = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
        let cd = format!("sha256:{}", sha256_hex(&config));
        let mut descs = Vec::new();
        let mut blobs = vec![(cd.clone(), config.clone())];
        // Each distinct layer hashed (by a sha256sum process) and served once.
        let mut digests: std::collections::HashMap<&[u8], String> = Default::default();
        for (data, size) in layers {
            let d = digests
                .entry(data)
                .or_insert_with(|| {
                    let d = format!("sha256:{}", sha256_hex(data));
                    blobs.push((d.clone(), data.to_vec()));
                    d
                })
                .clone();
            descs.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{size}}}"#
            ));
        }
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            descs.join(",")
        );
        FakeImage { manifest, blobs }
    }

    /// The answer for `path` if it is the manifest or a blob (by digest, wherever
    /// requested: any repository).
    fn reply(&self, path: &str) -> Option<Reply> {
        if path.ends_with("/manifests/latest") {
            return Some(
                Reply::new(200, self.manifest.clone())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            );
        }
        let d = path.rsplit_once("/blobs/")?.1;
        self.blobs.iter().find(|(bd, _)| bd == d).map(|(_, b)| {
            Reply::new(200, b.clone()).header("Content-Type", "application/octet-stream")
        })
    }
}

/// Route for a plain fake serving `img` anonymously.
fn serve_image(img: FakeImage) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    move |q| {
        if q.path == "/v2/" {
            return Reply::json("{}");
        }
        img.reply(&q.path).unwrap_or_else(|| Reply::new(404, ""))
    }
}

/// `ch-image pull HOST/fake/img NAME` into `storage`: plain HTTP unless `ca` (trusted).
fn pull_from(host: &str, ca: Option<&Path>, storage: &Path, name: &str) -> Command {
    let mut c = tool("ch-image");
    c.arg("-s").arg(storage).env_remove("CH_IMAGE_AUTH");
    match ca {
        Some(ca) => c.env("SSL_CERT_FILE", ca),
        None => c.env("CH_IMAGE_REGY_INSECURE", host),
    };
    c.args(["pull", &format!("{host}/fake/img"), name]);
    c
}

/// Run `cmd`, killed if still running after `limit`: its output, or `None` if it had to be
/// killed (a hang is a failure, not a stuck test run).
pub(crate) fn output_within(cmd: &mut Command, limit: Duration) -> Option<std::process::Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let t1 = std::thread::spawn(move || read_all(&mut so));
    let t2 = std::thread::spawn(move || read_all(&mut se));
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (t1.join().unwrap(), t2.join().unwrap());
    status.map(|status| std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// Run `cmd` that must fail within `limit`: its stderr.
pub(crate) fn fails_within(cmd: &mut Command, limit: Duration) -> String {
    let out = output_within(cmd, limit)
        .unwrap_or_else(|| panic!("still running after {limit:?}, killed: {cmd:?}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "unexpectedly succeeded: {cmd:?}\n{err}"
    );
    err
}

/// A small directory imported as image `local`, for pushes.
fn local_image(s: &Scratch) -> PathBuf {
    let st = s.storage();
    let src = s.join("src");
    sh(&format!(
        "mkdir -p {0}/etc && echo hi > {0}/etc/hello",
        src.display()
    ));
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .arg("import")
        .arg(&src)
        .arg("local"));
    st
}

#[test]
fn push_sends_credentials_only_to_the_registry_origin() {
    let Some((ca, tls)) = fake_tls() else { return };
    // Another host over plain http, another over https: both accept uploads.
    let put_ok = |q: &Req| {
        if q.method == "PUT" {
            Reply::new(201, "")
        } else {
            Reply::new(404, "")
        }
    };
    let plain_other = Scripted::start(None, put_ok);
    let tls_other = Scripted::start(Some(tls.clone()), put_ok);
    // The registry: https, wants Basic u:p, hands out upload locations from `loc`.
    let loc = Arc::new(Mutex::new(String::new()));
    let loc2 = loc.clone();
    let r = Scripted::start(Some(tls.clone()), move |q| {
        if q.auth != BASIC_U_P {
            return Reply::challenge(r#"Basic realm="fake""#);
        }
        match q.method.as_str() {
            "GET" if q.path == "/v2/" => Reply::json("{}"),
            "POST" if q.path.ends_with("/blobs/uploads/") => {
                Reply::new(202, "").header("Location", &loc2.lock().unwrap())
            }
            "PUT" => Reply::new(201, ""),
            _ => Reply::new(404, ""),
        }
    });
    let s = Scratch::new("push-origin");
    let st = local_image(&s);
    let push = || {
        let mut c = tool("ch-image");
        c.arg("-s")
            .arg(&st)
            .env("SSL_CERT_FILE", &ca)
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "p")
            .args(["push", "local", &format!("{}/pushed/img:v1", r.host())]);
        c
    };

    // An https registry's plain-http location: refused, and nothing goes there.
    let plain_loc = format!("http://{}/upload/x", plain_other.host());
    *loc.lock().unwrap() = plain_loc.clone();
    let err = fails_within(&mut push(), Duration::from_secs(60));
    assert!(
        err.contains(&format!(
            "refusing upload location {plain_loc}?digest=sha256"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("https registry {}", r.host())),
        "{err}"
    );
    assert!(
        plain_other.requests().is_empty(),
        "{:?}",
        plain_other.requests()
    );

    // A location on another host: followed, without credentials.
    *loc.lock().unwrap() = format!("https://{}/upload/x", tls_other.host());
    ok(&mut push());
    let puts = tls_other.requests();
    assert!(!puts.is_empty(), "upload location not used");
    assert!(puts.iter().all(|q| q.auth.is_empty()), "{puts:?}");
    // The registry itself got them all along.
    let mine = r.requests();
    assert!(
        mine.iter()
            .any(|q| q.method == "POST" && q.auth == BASIC_U_P),
        "{mine:?}"
    );
    assert!(
        mine.iter()
            .any(|q| q.path.contains("/manifests/v1") && q.auth == BASIC_U_P),
        "{mine:?}"
    );

    // A location on the registry's own origin (relative, or absolute): credentials go.
    for l in [
        "/v2/pushed/img/blobs/uploads/u1".to_string(),
        format!("https://{}/v2/pushed/img/blobs/uploads/u2", r.host()),
    ] {
        *loc.lock().unwrap() = l.clone();
        ok(&mut push());
        let uploads: Vec<_> = r
            .requests()
            .into_iter()
            .filter(|q| q.method == "PUT" && q.path.contains("/blobs/uploads/u"))
            .collect();
        assert!(!uploads.is_empty(), "{l}");
        assert!(uploads.iter().all(|q| q.auth == BASIC_U_P), "{uploads:?}");
    }
}

#[test]
fn token_realm_over_plain_http_is_refused_for_an_https_registry() {
    let Some((ca, tls)) = fake_tls() else { return };
    let img = Arc::new(FakeImage::new(&[(
        &auth_layer(),
        auth_layer().len() as u64,
    )]));
    // A token service that wants Basic u:p.
    let token = |q: &Req| {
        if q.auth == BASIC_U_P {
            Reply::json(r#"{"token":"TOKEN123"}"#)
        } else {
            Reply::challenge(r#"Basic realm="fake-token""#)
        }
    };
    let registry = |realm: String, img: Arc<FakeImage>| {
        move |q: &Req| {
            if q.auth != "Bearer TOKEN123" {
                return Reply::challenge(&format!(r#"Bearer realm="{realm}",service="fake""#));
            }
            if q.path == "/v2/" {
                return Reply::json("{}");
            }
            img.reply(&q.path).unwrap_or_else(|| Reply::new(404, ""))
        }
    };
    let s = Scratch::new("realm");
    let st = s.storage();
    let pull = |host: &str, name: &str| {
        let mut c = pull_from(host, Some(&ca), &st, name);
        c.arg("--auth")
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "p");
        c
    };

    // Plain-http realm of an https registry: refused, naming the realm and the registry;
    // the realm never hears of the credentials.
    let plain = Scripted::start(None, token);
    let realm = format!("http://{}/token", plain.host());
    let r = Scripted::start(Some(tls.clone()), registry(realm.clone(), img.clone()));
    let err = fails_within(&mut pull(&r.host(), "a"), Duration::from_secs(60));
    assert!(
        err.contains(&format!("refusing token realm {realm}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("https registry {}", r.host())),
        "{err}"
    );
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());

    // An https realm on another host gets them (as Docker sends them), and the pull works.
    let secure = Scripted::start(Some(tls.clone()), token);
    let r2 = Scripted::start(
        Some(tls.clone()),
        registry(format!("https://{}/token", secure.host()), img.clone()),
    );
    ok(&mut pull(&r2.host(), "b"));
    assert!(
        secure.requests().iter().any(|q| q.auth == BASIC_U_P),
        "{:?}",
        secure.requests()
    );
}

#[test]
fn manifest_listing_a_layer_twice_pulls_fresh_and_applies_it_at_each_place() {
    // A: a big layer setting x to "a"; B: x = "b". The manifest lists A, B, A.
    let mut noise = Vec::new();
    let mut v = 0x2545F491u32;
    for _ in 0..(1 << 20) {
        v ^= v << 13;
        v ^= v >> 17;
        v ^= v << 5;
        noise.extend_from_slice(&v.to_le_bytes());
    }
    let mut a = tar_with_member("x", b"a\n");
    let big = tar_with_member("noise", &noise);
    a.truncate(a.len() - 1024); // drop the end-of-archive blocks
    a.extend_from_slice(&big);
    let a = gzip(&a);
    let b = gzip(&tar_with_member("x", b"b\n"));
    let img = FakeImage::new(&[
        (&a, a.len() as u64),
        (&b, b.len() as u64),
        (&a, a.len() as u64),
    ]);
    let fake = Scripted::start(None, serve_image(img));
    let s = Scratch::new("dup-layers");
    let st = empty_store(&s);
    ok(&mut pull_from(&fake.host(), None, &st, "img"));
    let dir = image_dir(&st, "img+latest");
    assert_eq!(std::fs::read_to_string(dir.join("x")).unwrap(), "a\n");
    assert_eq!(std::fs::metadata(dir.join("noise")).unwrap().len(), 4 << 20);
    // Each distinct blob was downloaded once.
    let gets: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|q| q.path.contains("/blobs/"))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:?}"); // config, A, B
}

#[test]
fn declared_layer_sizes_are_bounded_and_checked_even_when_cached() {
    let layer = gzip(&tar_with_member("hello", b"sized\n"));
    let s = Scratch::new("sizes");
    let st = empty_store(&s);
    let before = list_of(&st);

    // 2^64-1: refused up front, no overflow, nothing downloaded.
    let fake = Scripted::start(None, serve_image(FakeImage::new(&[(&layer, u64::MAX)])));
    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "huge"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("larger than the limit of 1099511627776 bytes"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !fake.requests().iter().any(|q| q.path.contains("/blobs/")),
        "{:?}",
        fake.requests()
    );
    assert_eq!(before, list_of(&st));

    // A right pull fills the download cache...
    let good = Scripted::start(
        None,
        serve_image(FakeImage::new(&[(&layer, layer.len() as u64)])),
    );
    ok(&mut pull_from(&good.host(), None, &st, "good"));
    // ...and a manifest declaring another size for the cached blob is refused.
    let before = list_of(&st);
    let liar = Scripted::start(
        None,
        serve_image(FakeImage::new(&[(&layer, layer.len() as u64 + 1)])),
    );
    let err = fails_within(
        &mut pull_from(&liar.host(), None, &st, "liar"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("size declared by the manifest: size mismatch"),
        "{err}"
    );
    assert_eq!(before, list_of(&st));
}

#[test]
fn registry_text_is_escaped_before_it_reaches_the_terminal() {
    let evil = "\u{1b}]0;TITLE\u{7}\u{1b}[31mred\u{1b}[2K";
    let body = serde_json::json!({"errors": [{"code": evil, "message": evil}]}).to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "0".repeat(64)),
            "size": 1,
            "platform": {"architecture": evil, "os": "linux"}
        }]
    })
    .to_string();
    let fake = Scripted::start(None, move |q| match q.path.as_str() {
        "/v2/" => Reply::json("{}"),
        "/v2/fake/img/manifests/latest" => {
            Reply::new(500, body.clone()).header("Content-Type", "application/json")
        }
        "/v2/fake/img/manifests/multi" => Reply::new(200, index.clone())
            .header("Content-Type", "application/vnd.oci.image.index.v1+json"),
        _ => Reply::new(404, ""),
    });
    let s = Scratch::new("escape");
    let st = empty_store(&s);
    let escaped = "\\u{1b}]0;TITLE\\u{7}\\u{1b}[31mred\\u{1b}[2K";

    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "a"),
        Duration::from_secs(60),
    );
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains(&format!("{escaped} ({escaped})")), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");

    // Architectures an index lists, in an error and in `list IMAGE`.
    let refr = format!("{}/fake/img:multi", fake.host());
    let (_, err) = fails(
        tool("ch-image")
            .arg("-s")
            .arg(&st)
            .env("CH_IMAGE_REGY_INSECURE", fake.host())
            .args(["pull", "--arch", "ppc64le", &refr, "b"]),
    );
    assert!(err.contains(&format!("available: {escaped}")), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let out = ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .env("CH_IMAGE_REGY_INSECURE", fake.host())
        .args(["list", &refr]));
    assert!(
        out.contains(&format!("archs available:     {escaped}")),
        "{out}"
    );
    assert!(!out.contains('\u{1b}'), "{out:?}");
}

#[test]
fn trickling_registry_hits_the_configured_deadline() {
    let layer = gzip(&tar_with_member("hello", b"slow\n"));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let every = Duration::from_millis(100);
    let s = Scratch::new("deadline");
    let st = empty_store(&s);
    let before = list_of(&st);
    // Each answer, a byte every 100 ms, would take 10 s or more; the deadline is 2 s.
    let pull = |host: &str| {
        let mut c = pull_from(host, None, &st, "img");
        c.env("CH_IMAGE_REGY_DEADLINE", "2");
        c
    };

    // The manifest.
    let i = img.clone();
    let fake = Scripted::start(None, move |q| match i.reply(&q.path) {
        Some(r) if q.path.contains("/manifests/") => r.trickle(every),
        Some(r) => r,
        None => Reply::json("{}"),
    });
    // The trickle alone would take 10 s or more; the message says the deadline ended it
    // (fails_within's limit only catches a hang).
    let err = fails_within(&mut pull(&fake.host()), Duration::from_secs(60));
    assert!(
        err.contains("/fake/img/manifests/latest: no complete answer within 2 s (deadline set by CH_IMAGE_REGY_DEADLINE)"),
        "{err}"
    );

    // A token.
    let i = img.clone();
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let fake = Scripted::start(None, move |q| {
        if q.path.starts_with("/token") {
            return Reply::json(&format!(
                r#"{{"token":"TOKEN123","pad":"{}"}}"#,
                " ".repeat(1000)
            ))
            .trickle(every);
        }
        if q.auth != "Bearer TOKEN123" {
            let realm = format!("http://127.0.0.1:{}/token", p2.lock().unwrap());
            return Reply::challenge(&format!(r#"Bearer realm="{realm}""#));
        }
        i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    *port.lock().unwrap() = fake.port;
    let err = fails_within(&mut pull(&fake.host()), Duration::from_secs(60));
    assert!(err.contains("read token from http://"), "{err}");
    assert!(
        err.contains("no complete answer within 2 s (deadline set by CH_IMAGE_REGY_DEADLINE)"),
        "{err}"
    );

    // A layer: its deadline grows with its size at CH_IMAGE_REGY_MIN_RATE.
    let i = img.clone();
    let layer_digest = img.blobs[1].0.clone();
    let fake = Scripted::start(None, move |q| match i.reply(&q.path) {
        Some(r) if q.path.ends_with(&layer_digest) => r.trickle(every),
        Some(r) => r,
        None => Reply::json("{}"),
    });
    let err = fails_within(
        pull(&fake.host()).env("CH_IMAGE_REGY_MIN_RATE", "1G"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("no complete answer within 2 s (deadline set by CH_IMAGE_REGY_DEADLINE and CH_IMAGE_REGY_MIN_RATE)"),
        "{err}"
    );
    assert_eq!(before, list_of(&st));

    // A bad setting is named.
    let err = fails_within(
        pull(&fake.host()).env("CH_IMAGE_REGY_DEADLINE", "soon"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("CH_IMAGE_REGY_DEADLINE: invalid value \"soon\""),
        "{err}"
    );
}

#[test]
fn add_url_download_larger_than_the_limit_is_refused() {
    let big = vec![b'x'; 2 << 20];
    let fake = Scripted::start(None, move |q| match q.path.as_str() {
        "/big" => Reply::new(200, big.clone()),
        "/big-unsized" => {
            let mut r = Reply::new(200, big.clone());
            r.no_length = true;
            r
        }
        _ => Reply::new(404, ""),
    });
    let s = Scratch::new("add-limit");
    let st = empty_store(&s);
    let build = |path: &str, limit: &str| {
        let ctx = s.join(format!("ctx{}", path.replace('/', "-")));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM scratch\nADD http://{}{path} /dl\n", fake.host()),
        )
        .unwrap();
        ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(&ctx));
        let mut c = tool("ch-image");
        c.arg("-s")
            .arg(&st)
            .env("CH_IMAGE_ADD_MAX_SIZE", limit)
            .args(["build", "-t", "t"])
            .arg(&ctx);
        c
    };
    for path in ["/big", "/big-unsized"] {
        let err = fails_within(&mut build(path, "1M"), Duration::from_secs(60));
        assert!(
            err.contains("larger than the limit of 1048576 bytes (CH_IMAGE_ADD_MAX_SIZE)"),
            "{path}: {err}"
        );
        assert!(err.contains("Dockerfile:2"), "{err}");
    }
    // Within the limit, it downloads.
    ok(&mut build("/big-unsized", "2M"));
    let err = fails_within(&mut build("/big", "lots"), Duration::from_secs(60));
    assert!(
        err.contains("CH_IMAGE_ADD_MAX_SIZE: invalid value \"lots\""),
        "{err}"
    );
}

/// Regression test: a manifest listing one tiny layer 50,000 times (7.5 MB, under the 16
/// MiB manifest bound) was pulled: the layer downloaded once but was applied 50,000
/// times, 52 s. A manifest of more layers than [`MAX_LAYERS`] (docs/registry.md) is now
/// refused before any blob is asked for, and the store is unchanged.
#[test]
fn manifest_of_more_layers_than_any_image_has_is_refused_before_any_download() {
    const MAX_LAYERS: usize = 1024;
    let layer = gzip(&tar_with_member("x", b"x\n"));
    let many: Vec<(&[u8], u64)> = (0..50_000)
        .map(|_| (layer.as_slice(), layer.len() as u64))
        .collect();
    let fake = Scripted::start(None, serve_image(FakeImage::new(&many)));
    let s = Scratch::new("many-layers");
    let st = empty_store(&s);
    let before = list_of(&st);
    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "many"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains(&format!(
            "image manifest lists 50000 layers, more than Grove pulls ({MAX_LAYERS} at most"
        )),
        "{err}"
    );
    assert!(
        !fake.requests().iter().any(|q| q.path.contains("/blobs/")),
        "{:?}",
        fake.requests()
    );
    assert_eq!(before, list_of(&st));
    // At the bound, a pull works (the one layer downloads once).
    let fake = Scripted::start(None, serve_image(FakeImage::new(&many[..MAX_LAYERS])));
    ok(&mut pull_from(&fake.host(), None, &st, "most"));
    let blobs = fake
        .requests()
        .into_iter()
        .filter(|q| q.path.contains("/blobs/"))
        .count();
    assert_eq!(blobs, 2, "config and the layer once");
}

/// `cmd` spawned with default signal dispositions, its standard error piped.
fn spawn_signallable(cmd: &Command) -> Reaped {
    let mut c = with_default_signals(cmd);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    Reaped(c.spawn().expect("spawn ch-image"))
}

/// Wait for `child` to end, within `limit` (else it is killed and the test fails): its
/// status, standard error and how long it took.
fn ended_within(
    child: &mut Reaped,
    limit: Duration,
) -> (std::process::ExitStatus, String, Duration) {
    let t = Instant::now();
    let mut se = child.0.stderr.take().expect("stderr piped");
    let reader =
        std::thread::spawn(move || String::from_utf8_lossy(&read_all(&mut se)).into_owned());
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.0.kill();
            let _ = child.0.wait();
            panic!(
                "still running {limit:?} after the signal: {}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap(), t.elapsed())
}

/// Regression: a registry whose `Content-Length` promised more than it sent, on a
/// connection it kept open, held a pull for 121 s, and the error was `timeout: per read`,
/// naming neither the URL nor the limit. The wait for the next bytes is now
/// `CH_IMAGE_REGY_READ_TIMEOUT` (default 120 s), and the error names the URL, what came
/// of what was announced, and the limit.
#[test]
fn registry_sending_less_than_it_announces_is_named_with_the_read_limit() {
    let layer = gzip(&tar_with_member("hello", &vec![3u8; 50_000]));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let layer_digest = img.blobs[1].0.clone();
    let (m_len, l_len) = (img.manifest.len() as u64, layer.len() as u64);
    let s = Scratch::new("short-body");
    let st = empty_store(&s);
    let before = list_of(&st);
    let hold = Duration::from_secs(90);
    // The manifest announces 100 bytes more than it sends; the layer (announced at its
    // declared size) stops halfway.
    let i = img.clone();
    let ld = layer_digest.clone();
    let fake = Scripted::start(None, move |q| match i.reply(&q.path) {
        Some(r) if q.path.ends_with("/manifests/latest") => r.stall(m_len + 100, hold),
        Some(mut r) if q.path.ends_with(&ld) => {
            r.body.truncate(r.body.len() / 2);
            r.stall(l_len, hold)
        }
        Some(r) => r,
        None => Reply::json("{}"),
    });
    let err = fails_within(
        pull_from(&fake.host(), None, &st, "img").env("CH_IMAGE_REGY_READ_TIMEOUT", "2"),
        Duration::from_secs(30),
    );
    assert!(
        err.contains(&format!(
            "read manifest http://{}/v2/fake/img/manifests/latest: nothing received for 2 s (CH_IMAGE_REGY_READ_TIMEOUT), after {m_len} of {} bytes",
            fake.host(),
            m_len + 100
        )),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");

    // Now the layer: the manifest is whole.
    let i = img.clone();
    let fake = Scripted::start(None, move |q| match i.reply(&q.path) {
        Some(mut r) if q.path.ends_with(&layer_digest) => {
            r.body.truncate(r.body.len() / 2);
            r.stall(l_len, hold)
        }
        Some(r) => r,
        None => Reply::json("{}"),
    });
    let err = fails_within(
        pull_from(&fake.host(), None, &st, "img").env("CH_IMAGE_REGY_READ_TIMEOUT", "2"),
        Duration::from_secs(30),
    );
    assert!(
        err.contains(&format!(
            "get blob http://{}/v2/fake/img/blobs/{}: nothing received for 2 s (CH_IMAGE_REGY_READ_TIMEOUT), after {} of {l_len} bytes",
            fake.host(),
            img.blobs[1].0,
            l_len / 2
        )),
        "{err}"
    );
    assert_eq!(before, list_of(&st));

    // No answer at all (the headers never come).
    let fake2 = Scripted::start(None, move |_| {
        std::thread::sleep(Duration::from_secs(20));
        Reply::json("{}")
    });
    let err = fails_within(
        pull_from(&fake2.host(), None, &st, "img").env("CH_IMAGE_REGY_READ_TIMEOUT", "2"),
        Duration::from_secs(30),
    );
    assert!(
        err.contains(&format!(
            "reach http://{}/v2/fake/img/manifests/latest: nothing received for 2 s (CH_IMAGE_REGY_READ_TIMEOUT)\n",
            fake2.host()
        )),
        "{err}"
    );

    let err = fails_within(
        pull_from(&fake.host(), None, &st, "img").env("CH_IMAGE_REGY_READ_TIMEOUT", "1.5"),
        Duration::from_secs(30),
    );
    assert!(
        err.contains("CH_IMAGE_REGY_READ_TIMEOUT: invalid value \"1.5\""),
        "{err}"
    );
}

/// Regression: a config whose manifest-declared size is right but whose body went on
/// (1 GiB) was read up to 64 MiB before it was refused, and a manifest an index lists,
/// up to 16 MiB. What is declared is all that is read now, plus a byte to tell; a
/// `Content-Length` above it is refused before anything is read.
#[test]
fn blob_or_manifest_longer_than_declared_is_refused_at_its_declared_size() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const GIB: u64 = 1 << 30;
    let layer = gzip(&tar_with_member("hello", b"x\n"));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let config_digest = img.blobs[0].0.clone();
    let s = Scratch::new("longer");
    let st = empty_store(&s);
    let before = list_of(&st);
    // What the client took beyond a document's declared size: the socket buffers of
    // loopback hold a few MiB at most.
    let bound = 8u64 << 20;

    // A config that goes on, announced (Content-Length) or not.
    for announced in [true, false] {
        let sent = Arc::new(AtomicU64::new(0));
        let (i, sent2, cd) = (img.clone(), sent.clone(), config_digest.clone());
        let fake = Scripted::start(None, move |q| match i.reply(&q.path) {
            Some(r) if q.path.ends_with(&cd) => {
                let mut r = r.pad(GIB, sent2.clone());
                r.no_length = !announced;
                r
            }
            Some(r) => r,
            None => Reply::json("{}"),
        });
        let err = fails_within(
            &mut pull_from(&fake.host(), None, &st, "img"),
            Duration::from_secs(60),
        );
        let declared = img.blobs[0].1.len();
        let want =
            format!("config {config_digest}: longer than the {declared} bytes declared for it");
        assert!(err.contains(&want), "announced {announced}: {err}");
        if announced {
            assert!(
                err.contains(&format!(
                    "(the registry announced {})",
                    declared as u64 + GIB
                )),
                "{err}"
            );
        }
        let n = sent.load(Ordering::SeqCst);
        assert!(
            n < bound,
            "announced {announced}: {n} bytes of padding sent"
        );
    }

    // A manifest listed in an index, at its declared size, followed by 1 GiB.
    let m_digest = format!("sha256:{}", sha256_hex(img.manifest.as_bytes()));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m_digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        img.manifest.len()
    );
    let sent = Arc::new(AtomicU64::new(0));
    let (i, sent2, md) = (img.clone(), sent.clone(), m_digest.clone());
    let fake = Scripted::start(None, move |q| {
        if q.path.ends_with("/manifests/latest") {
            return Reply::new(200, index.clone())
                .header("Content-Type", "application/vnd.oci.image.index.v1+json");
        }
        if q.path.ends_with(&format!("/manifests/{md}")) {
            let mut r = Reply::new(200, i.manifest.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .pad(GIB, sent2.clone());
            r.no_length = true;
            return r;
        }
        i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    let err = fails_within(
        pull_from(&fake.host(), None, &st, "img").args(["--arch", "amd64"]),
        Duration::from_secs(60),
    );
    assert!(
        err.contains(&format!(
            "manifest http://{}/v2/fake/img/manifests/{m_digest}: longer than the {} bytes declared for it",
            fake.host(),
            img.manifest.len()
        )),
        "{err}"
    );
    let n = sent.load(Ordering::SeqCst);
    assert!(n < bound, "manifest: {n} bytes of padding sent");
    assert_eq!(before, list_of(&st));
}

/// Regression: a pull blocked reading from a registry that had stopped sending ignored
/// the first ^C (or SIGTERM) until the 120 s read timeout ended the read; a second one
/// quit at once, skipping the cleanup. The first signal now ends the pull at once
/// (the client's connections are shut down), through the cleanup of a failed pull:
/// death by the signal, no partial download, the store as it was.
#[test]
fn signal_ends_a_pull_blocked_on_a_stalled_registry_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let layer = gzip(&tar_with_member("hello", &vec![5u8; 100_000]));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let ld = img.blobs[1].0.clone();
    let l_len = layer.len() as u64;
    let i = img.clone();
    let fake = Scripted::start(None, move |q| match i.reply(&q.path) {
        Some(mut r) if q.path.ends_with(&ld) => {
            r.body.truncate(r.body.len() / 2);
            r.stall(l_len, Duration::from_secs(200))
        }
        Some(r) => r,
        None => Reply::json("{}"),
    });
    let s = Scratch::new("sig-pull");
    let st = empty_store(&s);
    let before = list_of(&st);
    let partials = || -> Vec<String> {
        std::fs::read_dir(st.join("dlcache"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".partial"))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (sig, n) in [("INT", 2), ("TERM", 15)] {
        let mut child = spawn_signallable(&pull_from(&fake.host(), None, &st, "img"));
        let blob_gets = |f: &Scripted| {
            f.requests()
                .iter()
                .filter(|q| q.path.ends_with(&img.blobs[1].0))
                .count()
        };
        let asked = blob_gets(&fake);
        wait_for("the layer's request and its partial file", 60, || {
            blob_gets(&fake) > asked && !partials().is_empty()
        });
        // Into the blocked read.
        std::thread::sleep(Duration::from_millis(300));
        send(sig, child.0.id());
        let (status, err, took) = ended_within(&mut child, Duration::from_secs(30));
        assert_eq!(status.signal(), Some(n), "SIG{sig}: {status}\n{err}");
        assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
        assert!(err.contains("/v2/fake/img/blobs/sha256:"), "{err}");
        assert!(
            took < Duration::from_secs(5),
            "SIG{sig}: took {took:?}\n{err}"
        );
        eprintln!("SIG{sig}: ended {took:?} after the signal");
        assert!(partials().is_empty(), "{:?}", partials());
        assert_eq!(before, list_of(&st));
        ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
    }
}

/// Regression: `ch-image push` did not handle SIGINT and SIGTERM: it died where it was,
/// leaving its temporary export in the storage directory, and said nothing of what the
/// registry already had. It now ends through its error path (temporary files removed,
/// death by the signal), saying which blobs the registry has; a new push succeeds.
#[test]
fn signal_ends_a_push_through_its_error_path_saying_what_was_uploaded() {
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stall = Arc::new(AtomicBool::new(true));
    let stall2 = stall.clone();
    let fake = Scripted::start(None, move |q| {
        match (q.method.as_str(), q.path.as_str()) {
            (_, "/v2/") => Reply::json("{}"),
            ("HEAD", _) => Reply::new(404, ""),
            ("POST", p) if p.ends_with("/blobs/uploads/") => {
                Reply::new(202, "").header("Location", "/v2/fake/img/blobs/uploads/u1")
            }
            ("PUT", p) if p.contains("/blobs/uploads/u1?digest=") => Reply::new(201, ""),
            ("PUT", p) if p.contains("/manifests/") => {
                // The manifest's answer never comes while stalling (the connection is
                // dropped when the push ends).
                while stall2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Reply::new(201, "")
            }
            _ => Reply::new(404, ""),
        }
    });
    let s = Scratch::new("sig-push");
    let st = local_image(&s);
    let push = || {
        let mut c = tool("ch-image");
        c.arg("-s")
            .arg(&st)
            .env("CH_IMAGE_REGY_INSECURE", fake.host())
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "p")
            .args(["push", "local", &format!("{}/fake/img:latest", fake.host())]);
        c
    };
    let tmp = || -> Vec<_> {
        std::fs::read_dir(st.join("tmp"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for (sig, n) in [("INT", 2), ("TERM", 15)] {
        let puts = |f: &Scripted| {
            f.requests()
                .iter()
                .filter(|q| q.method == "PUT" && q.path.contains("/manifests/"))
                .count()
        };
        let asked = puts(&fake);
        let mut child = spawn_signallable(&push());
        wait_for("the manifest upload", 60, || puts(&fake) > asked);
        std::thread::sleep(Duration::from_millis(300));
        send(sig, child.0.id());
        let (status, err, took) = ended_within(&mut child, Duration::from_secs(30));
        assert_eq!(status.signal(), Some(n), "SIG{sig}: {status}\n{err}");
        assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
        assert!(
            err.contains(&format!(
                "push to {}/fake/img:latest incomplete: the registry has the layer sha256:",
                fake.host()
            )),
            "{err}"
        );
        assert!(err.contains(" and the config sha256:"), "{err}");
        assert!(
            took < Duration::from_secs(5),
            "SIG{sig}: took {took:?}\n{err}"
        );
        assert!(tmp().is_empty(), "SIG{sig}: {:?}", tmp());
    }
    stall.store(false, Ordering::SeqCst);
    ok(&mut push());
    assert!(tmp().is_empty(), "{:?}", tmp());
}

/// A fake registry for pushes to `fake/img`: it has no blobs, hands out a new upload
/// session (`/v2/fake/img/blobs/uploads/uN`) for each POST, and answers the PUT of a
/// blob and of the manifest by `blob_put` and `manifest_put`, given how many of each
/// came before.
fn push_fake(
    blob_put: impl Fn(usize) -> Reply + Send + Sync + 'static,
    manifest_put: impl Fn(usize) -> Reply + Send + Sync + 'static,
) -> Scripted {
    push_fake_deleting(blob_put, manifest_put, 204)
}

/// [`push_fake`], answering the DELETE of an upload session with `delete`.
fn push_fake_deleting(
    blob_put: impl Fn(usize) -> Reply + Send + Sync + 'static,
    manifest_put: impl Fn(usize) -> Reply + Send + Sync + 'static,
    delete: u16,
) -> Scripted {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (posts, blobs, manifests) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    Scripted::start(None, move |q| match (q.method.as_str(), q.path.as_str()) {
        (_, "/v2/") => Reply::json("{}"),
        ("HEAD", _) => Reply::new(404, ""),
        ("POST", p) if p.ends_with("/blobs/uploads/") => {
            let n = posts.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::new(202, "").header("Location", &format!("/v2/fake/img/blobs/uploads/u{n}"))
        }
        ("PUT", p) if p.contains("/blobs/uploads/u") => {
            blob_put(blobs.fetch_add(1, Ordering::SeqCst))
        }
        ("PUT", p) if p.contains("/manifests/") => {
            manifest_put(manifests.fetch_add(1, Ordering::SeqCst))
        }
        ("DELETE", p) if p.contains("/blobs/uploads/u") => Reply::new(delete, ""),
        _ => Reply::new(404, ""),
    })
}

/// Regression: a blob upload session that failed after its POST (an error answer to its
/// PUT, a cut connection, SIGINT or SIGTERM) was left on the registry, holding what it
/// had received until the registry's own expiry. It is now DELETEd (OCI distribution
/// spec, "Deleting an upload") before the push tries again or fails, the push's outcome
/// unchanged; a registry that refuses the DELETE is only a debug note.
#[test]
fn failed_upload_sessions_are_deleted() {
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = Scratch::new("push-delete");
    let st = local_image(&s);
    let push = |f: &Scripted, verbose: bool| {
        let mut c = tool("ch-image");
        if verbose {
            c.arg("-vv");
        }
        c.arg("-s")
            .arg(&st)
            .env("CH_IMAGE_REGY_INSECURE", f.host())
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "p")
            .args(["push", "local", &format!("{}/fake/img:latest", f.host())]);
        c
    };
    let deletes = |f: &Scripted| -> Vec<String> {
        f.requests()
            .iter()
            .filter(|q| q.method == "DELETE")
            .map(|q| q.path.clone())
            .collect()
    };
    let session = |n: u32| format!("/v2/fake/img/blobs/uploads/u{n}");

    // An error answer, then a cut connection: both sessions deleted, the third (which
    // took the layer) and the config's kept; the push succeeds as before.
    let fake = push_fake(
        |n| match n {
            0 => Reply::new(500, ""),
            1 => Reply::cut(),
            _ => Reply::new(201, ""),
        },
        |_| Reply::new(201, ""),
    );
    let out = output_within(&mut push(&fake, false), Duration::from_secs(60)).expect("hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(deletes(&fake), [session(1), session(2)], "{err}");
    assert!(!err.contains("DELETE"), "{err}");
    // Each DELETE came before the next session's POST.
    let log = fake.requests();
    let posts: Vec<usize> = (0..log.len())
        .filter(|&i| log[i].method == "POST")
        .collect();
    for (k, u) in [(1, 1), (2, 2)] {
        let del = (0..log.len())
            .find(|&i| log[i].method == "DELETE" && log[i].path == session(u))
            .expect("the DELETE");
        assert!(posts[k - 1] < del && del < posts[k], "u{u}: {log:?}");
    }

    // A 4xx fails the push at once, as before: its session deleted too.
    let fake = push_fake(|_| Reply::new(403, ""), |_| Reply::new(201, ""));
    let err = fails_within(&mut push(&fake, false), Duration::from_secs(60));
    assert!(err.contains(": HTTP 403"), "{err}");
    assert!(!err.contains("DELETE"), "{err}");
    assert_eq!(deletes(&fake), [session(1)], "{err}");

    // A registry without DELETE (405): a debug note, the push's outcome unchanged.
    let fake = push_fake_deleting(
        |n| match n {
            0 => Reply::new(500, ""),
            _ => Reply::new(201, ""),
        },
        |_| Reply::new(201, ""),
        405,
    );
    let out = output_within(&mut push(&fake, true), Duration::from_secs(60)).expect("hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(deletes(&fake), [session(1)], "{err}");
    assert!(
        err.contains(&format!(
            "DELETE http://{}{}: HTTP 405: failed upload session not deleted",
            fake.host(),
            session(1)
        )),
        "{err}"
    );
    assert!(
        !err.lines()
            .any(|l| l.contains("warning") && l.contains("DELETE")),
        "{err}"
    );

    // SIGINT or SIGTERM while the layer's PUT waits for its answer: the session is
    // deleted on the way out, and the push still ends at once.
    let stall = Arc::new(AtomicBool::new(true));
    let stall2 = stall.clone();
    let fake = push_fake(
        move |_| {
            while stall2.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Reply::new(201, "")
        },
        |_| Reply::new(201, ""),
    );
    let puts = |f: &Scripted| f.requests().iter().filter(|q| q.method == "PUT").count();
    for (sig, n, u) in [("INT", 2, 1), ("TERM", 15, 2)] {
        let asked = puts(&fake);
        let mut child = spawn_signallable(&push(&fake, false));
        wait_for("the layer's upload", 60, || puts(&fake) > asked);
        std::thread::sleep(Duration::from_millis(300));
        send(sig, child.0.id());
        let (status, err, took) = ended_within(&mut child, Duration::from_secs(30));
        assert_eq!(status.signal(), Some(n), "SIG{sig}: {status}\n{err}");
        assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
        assert!(
            took < Duration::from_secs(5),
            "SIG{sig}: took {took:?}\n{err}"
        );
        assert_eq!(deletes(&fake).last(), Some(&session(u)), "SIG{sig}: {err}");
    }
    stall.store(false, Ordering::SeqCst);
}

/// Regression: uploads were not tried again: a push failed at the first server error of
/// a blob's PUT (or POST) or of the manifest's PUT, where a pull tries a GET again. A
/// failed step (a server error, a cut connection) now starts the blob's upload again from
/// a new POST (a new session), as many times and as far apart as a pull's GET
/// (`Retry-After` honoured), each retry warned about; a registry that
/// goes on failing fails the push with the URL and the status, saying which blobs it has;
/// a 4xx (but 429) fails at once.
#[test]
fn server_errors_of_an_upload_are_tried_again_from_a_new_session() {
    let s = Scratch::new("push-retry");
    let st = local_image(&s);
    let push = |f: &Scripted| {
        let mut c = tool("ch-image");
        c.arg("-s")
            .arg(&st)
            .env("CH_IMAGE_REGY_INSECURE", f.host())
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "p")
            .args(["push", "local", &format!("{}/fake/img:latest", f.host())]);
        c
    };
    let count = |f: &Scripted, method: &str, part: &str| {
        f.requests()
            .iter()
            .filter(|q| q.method == method && q.path.contains(part))
            .count()
    };

    // The first blob PUT fails, the second is cut off, and the first manifest PUT is
    // asked to wait (Retry-After); then all goes well.
    let fake = push_fake(
        |n| match n {
            0 => Reply::new(500, "<html>oops</html>"),
            1 => Reply::cut(),
            _ => Reply::new(201, ""),
        },
        |n| match n {
            0 => Reply::new(429, "").header("Retry-After", "1"),
            _ => Reply::new(201, ""),
        },
    );
    let out = output_within(&mut push(&fake), Duration::from_secs(60)).expect("push hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let origin = format!("http://{}", fake.host());
    assert!(
        err.contains(&format!(
            "PUT {origin}/v2/fake/img/blobs/uploads/u1?digest=sha256%3A"
        )),
        "{err}"
    );
    assert!(
        err.contains(": HTTP 500; trying again from a new upload in 1 s (attempt 2 of 3)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "PUT {origin}/v2/fake/img/manifests/latest: HTTP 429, Retry-After: 1; waiting 1 s \
             as the registry asks, then trying again (attempt 2 of 3)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "PUT {origin}/v2/fake/img/blobs/uploads/u2?digest=sha256%3A"
        )),
        "{err}"
    );
    assert!(
        err.contains("; trying again from a new upload in 2 s (attempt 3 of 3)"),
        "{err}"
    );
    // Each retry started a new session: the layer's PUTs went to u1, u2 and u3, the
    // config's to u4.
    assert_eq!(count(&fake, "POST", "/blobs/uploads/"), 4);
    for u in ["u1", "u2", "u3", "u4"] {
        assert_eq!(
            count(&fake, "PUT", &format!("/blobs/uploads/{u}?")),
            1,
            "{u}"
        );
    }
    assert_eq!(count(&fake, "PUT", "/manifests/latest"), 2);
    // What it says it uploaded is what a push without a retry says: the bytes of the
    // failed attempt are not counted.
    let uploaded = |err: &str| {
        let l = err
            .lines()
            .find(|l| l.contains("push: uploaded"))
            .unwrap_or_else(|| panic!("no summary: {err}"))
            .to_string();
        l[..l.find(" in ").expect("a duration")].to_string()
    };
    let clean = push_fake(|_| Reply::new(201, ""), |_| Reply::new(201, ""));
    let out2 = output_within(&mut push(&clean), Duration::from_secs(60)).expect("push hangs");
    let err2 = String::from_utf8_lossy(&out2.stderr);
    assert!(out2.status.success(), "{err2}");
    assert_eq!(uploaded(&err), uploaded(&err2), "{err}");

    // Failing every time: the third answer is the error, naming the URL and the status.
    let fake = push_fake(|_| Reply::new(500, ""), |_| Reply::new(201, ""));
    let err = fails_within(&mut push(&fake), Duration::from_secs(60));
    assert!(
        err.contains(&format!(
            "upload blob to http://{}/v2/fake/img/blobs/uploads/u3?digest=sha256%3A",
            fake.host()
        )),
        "{err}"
    );
    assert!(err.contains(": HTTP 500"), "{err}");
    assert!(
        err.contains(&format!(
            "push to {}/fake/img:latest incomplete: the registry has none of its blobs yet",
            fake.host()
        )),
        "{err}"
    );
    assert!(err.contains("(attempt 3 of 3)"), "{err}");
    assert_eq!(count(&fake, "POST", "/blobs/uploads/"), 3, "{err}");
    assert_eq!(count(&fake, "PUT", "/blobs/uploads/"), 3, "{err}");

    // A 4xx but 429 is the registry's answer: no retry.
    let fake = push_fake(|_| Reply::new(403, ""), |_| Reply::new(201, ""));
    let err = fails_within(&mut push(&fake), Duration::from_secs(60));
    assert!(err.contains(": HTTP 403"), "{err}");
    assert!(!err.contains("trying again"), "{err}");
    assert_eq!(count(&fake, "PUT", "/blobs/uploads/"), 1, "{err}");
}

/// A registry that answers 503 or 500 a moment (restarting, overloaded) failed the pull
/// at once, as Charliecloud 0.31's does ("GET failed; expected status {…} but got 500").
/// A GET or HEAD is now tried again, 3 times in all, 1 s then 2 s apart, each retry
/// warned about; a registry that goes on failing still fails the pull, after the third.
#[test]
fn server_errors_of_a_get_are_tried_again_before_the_pull_fails() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let layer = gzip(&tar_with_member("hello", b"again\n"));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let s = Scratch::new("retry");
    let st = empty_store(&s);
    // The manifest fails twice (503, then 500), the layer once.
    let (i, manifests, blobs) = (
        img.clone(),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (m2, b2, ld) = (manifests.clone(), blobs.clone(), img.blobs[1].0.clone());
    let fake = Scripted::start(None, move |q| {
        if q.path.ends_with("/manifests/latest") {
            match m2.fetch_add(1, Ordering::SeqCst) {
                0 => return Reply::new(503, "<html>busy</html>"),
                1 => return Reply::new(500, "<html>oops</html>"),
                _ => {}
            }
        }
        if q.path.ends_with(&ld) && b2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::new(500, "");
        }
        i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    let out = output(&mut pull_from(&fake.host(), None, &st, "img"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let m_url = format!("http://{}/v2/fake/img/manifests/latest", fake.host());
    assert!(
        err.contains(&format!(
            "GET {m_url}: HTTP 503; trying again in 1 s (attempt 2 of 3)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "GET {m_url}: HTTP 500; trying again in 2 s (attempt 3 of 3)"
        )),
        "{err}"
    );
    assert!(err.contains("/blobs/sha256:"), "{err}");
    assert_eq!(manifests.load(Ordering::SeqCst), 3);
    assert_eq!(
        std::fs::read_to_string(image_dir(&st, "img+latest").join("hello")).unwrap(),
        "again\n"
    );

    // Failing every time: the third answer is the error.
    let fake = Scripted::start(None, |q| {
        if q.path == "/v2/" {
            return Reply::json("{}");
        }
        Reply::new(502, "")
    });
    let before = list_of(&st);
    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "img2"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("/fake/img/manifests/latest: HTTP 502"),
        "{err}"
    );
    let gets = fake
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/manifests/latest"))
        .count();
    assert_eq!(gets, 3, "{err}");
    assert_eq!(before, list_of(&st));
}

/// A 401 whose `WWW-Authenticate` is malformed, and a token endpoint that answers with a
/// login page: the errors quote what came (escaped). Before, "Bearer realm" (no value)
/// gave "refusing token realm : not a valid URL", and an HTML token response only "token
/// response is not valid JSON: expected value at line 1 column 1".
#[test]
fn malformed_challenge_and_html_token_response_are_quoted_in_the_error() {
    let layer = gzip(&tar_with_member("hello", b"x\n"));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let s = Scratch::new("bad-auth");
    let st = empty_store(&s);
    for (challenge, want) in [
        (
            "Bearer realm",
            "Bearer challenge without realm (WWW-Authenticate: Bearer realm)",
        ),
        (
            "Bearer ,,,=,=",
            "Bearer challenge without realm (WWW-Authenticate: Bearer ,,,=,=)",
        ),
    ] {
        let c = challenge.to_string();
        let fake = Scripted::start(None, move |_| Reply::challenge(&c));
        let err = fails_within(
            &mut pull_from(&fake.host(), None, &st, "img"),
            Duration::from_secs(60),
        );
        assert!(err.contains(want), "{challenge:?}: {err}");
    }

    let i = img.clone();
    let port = Arc::new(Mutex::new(0u16));
    let p2 = port.clone();
    let fake = Scripted::start(None, move |q| {
        if q.path.starts_with("/token") {
            return Reply::new(200, "<html><body>Please log in</body></html>")
                .header("Content-Type", "text/html; charset=utf-8");
        }
        if q.auth != "Bearer TOKEN123" {
            let realm = format!("http://127.0.0.1:{}/token", p2.lock().unwrap());
            return Reply::challenge(&format!(r#"Bearer realm="{realm}""#));
        }
        i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    *port.lock().unwrap() = fake.port;
    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "img"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains(
            "token response is not valid JSON (expected value at line 1 column 1); Content-Type text/html; charset=utf-8, starting \"<html><body>Please log in</body></html>\""
        ),
        "{err}"
    );
}

/// A foreign layer (a manifest entry with `urls`, as Windows base layers have) that the
/// registry does not have: the error says what it is and where the manifest says to get
/// it, which Grove does not follow. Before, only "HTTP 404: blob not found".
#[test]
fn foreign_layer_missing_from_the_registry_is_named_with_its_urls() {
    let layer = gzip(&tar_with_member("hello", b"x\n"));
    let img = FakeImage::new(&[(&layer, layer.len() as u64)]);
    let ld = img.blobs[1].0.clone();
    let manifest = img
        .manifest
        .replace(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        )
        .replace(
            &format!(r#""digest":"{ld}""#),
            &format!(r#""digest":"{ld}","urls":["https://example.invalid/l.tgz"]"#),
        );
    assert_ne!(manifest, img.manifest);
    let fake = Scripted::start(None, move |q| {
        if q.path.ends_with("/manifests/latest") {
            return Reply::new(200, manifest.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
        }
        if q.path.ends_with(&ld) {
            return Reply::new(404, "");
        }
        img.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    let s = Scratch::new("foreign");
    let st = empty_store(&s);
    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "img"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("HTTP 404: blob not found; it is a foreign layer (application/vnd.docker.image.rootfs.foreign.diff.tar.gzip) the manifest says to fetch from https://example.invalid/l.tgz, and Grove fetches layers only from the registry"),
        "{err}"
    );
}

/// A layer whose connection drops halfway (a CDN or proxy hiccup) failed the whole pull,
/// as in Charliecloud 0.31. It is now downloaded again from the start, 3 times in all
/// (1 s, then 2 s later), with a warning naming it and what happened; a registry that
/// cuts it every time still fails the pull (`registry_going_away_mid_layer_fails_cleanly`).
#[test]
fn layer_cut_off_mid_transfer_is_downloaded_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut big = Vec::new();
    for i in 0..100_000u32 {
        big.extend_from_slice(&i.to_le_bytes());
    }
    let layer = gzip(&tar_with_member("big", &big));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let (i, gets, ld) = (
        img.clone(),
        Arc::new(AtomicUsize::new(0)),
        img.blobs[1].0.clone(),
    );
    let g2 = gets.clone();
    let l_len = layer.len() as u64;
    let fake = Scripted::start(None, move |q| match i.reply(&q.path) {
        Some(mut r) if q.path.ends_with(&ld) && g2.fetch_add(1, Ordering::SeqCst) == 0 => {
            r.body.truncate(r.body.len() / 2);
            r.declare = Some(l_len);
            r
        }
        Some(r) => r,
        None => Reply::json("{}"),
    });
    let s = Scratch::new("cut-once");
    let st = empty_store(&s);
    let out = output(&mut pull_from(&fake.host(), None, &st, "img"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("can't download layer 1/1 ({})", img.blobs[1].0)),
        "{err}"
    );
    assert!(
        err.contains("; downloading it again in 1 s (attempt 2 of 3)"),
        "{err}"
    );
    assert_eq!(gets.load(Ordering::SeqCst), 2);
    // The rest was asked for; this registry does not serve ranges, so its 200 (the whole
    // layer) was written from the start.
    let half = l_len / 2;
    let ranges: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|q| q.path.ends_with(&img.blobs[1].0))
        .map(|q| q.range)
        .collect();
    assert_eq!(ranges, ["".to_string(), format!("bytes={half}-")]);
    assert!(
        err.contains(&format!(
            "the registry answered HTTP 200 to a request for bytes {half} on; downloading it from the start"
        )),
        "{err}"
    );
    // The cut half is not counted twice.
    assert!(l_len > 1024 && l_len < 1 << 20, "{l_len}");
    let size = format!("{:.1} KiB", l_len as f64 / 1024.0);
    assert!(
        err.contains(&format!("pull: downloaded 1 layer, {size} in ")),
        "{size}: {err}"
    );
    assert_eq!(
        std::fs::read(image_dir(&st, "img+latest").join("big")).unwrap(),
        big
    );
}

/// A registry's rate limit (HTTP 429, Docker Hub's for anonymous pulls) gets a hint, as
/// Charliecloud's "registry rate limit exceeded (HTTP 429)" does ("consider --auth"); it
/// is not retried (a retry a second later counts against the same limit).
#[test]
fn rate_limited_pull_says_to_wait_or_authenticate() {
    let fake = Scripted::start(None, |q| {
        if q.path == "/v2/" {
            return Reply::json("{}");
        }
        Reply::new(
            429,
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#,
        )
        .header("Content-Type", "application/json")
    });
    let s = Scratch::new("429");
    let st = empty_store(&s);
    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "img"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("HTTP 429: TOOMANYREQUESTS (You have reached your pull rate limit.)"),
        "{err}"
    );
    assert!(
        err.contains("hint: the registry limits how often it may be asked (HTTP 429): wait, or authenticate (--auth)"),
        "{err}"
    );
    assert_eq!(fake.requests().len(), 1, "{:?}", fake.requests());
}

/// `ADD URL` from a server that stops sending: the wait is `CH_IMAGE_REGY_READ_TIMEOUT`'s
/// and the error names the URL and how far it got (before: ureq's bare "timeout: per
/// read" after 120 s), and SIGINT ends the build at once through its cleanup (before: not
/// until the read timed out).
#[test]
fn add_url_from_a_stalled_server_is_named_and_ends_at_once_on_sigint() {
    use std::os::unix::process::ExitStatusExt;
    let fake = Scripted::start(None, |q| match q.path.as_str() {
        "/stall" => Reply::new(200, vec![b'x'; 1000]).stall(5000, Duration::from_secs(200)),
        _ => Reply::new(404, ""),
    });
    let s = Scratch::new("add-stall");
    let st = empty_store(&s);
    let ctx = s.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD http://{}/stall /dl\n", fake.host()),
    )
    .unwrap();
    ok(Command::new("chmod").args(["-R", "a+rwX"]).arg(&ctx));
    let build = || {
        let mut c = tool("ch-image");
        c.arg("-s").arg(&st).args(["build", "-t", "t"]).arg(&ctx);
        c
    };
    let err = fails_within(
        build().env("CH_IMAGE_REGY_READ_TIMEOUT", "2"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains(&format!(
            "download http://{}/stall: nothing received for 2 s (CH_IMAGE_REGY_READ_TIMEOUT), after 1000 of 5000 bytes",
            fake.host()
        )),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");

    let stalls = |f: &Scripted| f.requests().iter().filter(|q| q.path == "/stall").count();
    let asked = stalls(&fake);
    let mut child = spawn_signallable(&build());
    wait_for("the download's request", 60, || stalls(&fake) > asked);
    std::thread::sleep(Duration::from_millis(300));
    send("INT", child.0.id());
    let (status, err, took) = ended_within(&mut child, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(2), "{status}\n{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}\n{err}");
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
}

// ---------------------------------------------------------------------------------------
// Registries that ask to wait, addresses that never answer, layers cut short, schema 1.

/// The time `secs` seconds from now as an HTTP date (IMF-fixdate), by date(1).
fn http_date_in(secs: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + secs;
    ok(Command::new("date").env("LC_ALL", "C").args([
        "-u",
        "-d",
        &format!("@{t}"),
        "+%a, %d %b %Y %H:%M:%S GMT",
    ]))
    .trim()
    .to_string()
}

/// A registry answering 429 or 503 with `Retry-After` (seconds, or an HTTP date) asks to
/// be left alone that long. Grove ignored the header: a 429 failed the pull at once, and
/// a 503 was asked again 1 s later. It now waits as asked (up to
/// CH_IMAGE_REGY_RETRY_AFTER_MAX), saying so, and the pull goes on.
#[test]
fn retry_after_is_waited_for_and_the_pull_goes_on() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let layer = gzip(&tar_with_member("hello", b"later\n"));
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let (i, n, date) = (
        img.clone(),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(String::new())),
    );
    let (n2, d2) = (n.clone(), date.clone());
    let fake = Scripted::start(None, move |q| {
        if q.path.ends_with("/manifests/latest") {
            match n2.fetch_add(1, Ordering::SeqCst) {
                0 => return Reply::new(429, "").header("Retry-After", "2"),
                1 => {
                    let d = http_date_in(3);
                    *d2.lock().unwrap() = d.clone();
                    return Reply::new(503, "").header("Retry-After", &d);
                }
                _ => {}
            }
        }
        i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    let s = Scratch::new("retry-after");
    let st = empty_store(&s);
    let out = output_within(
        &mut pull_from(&fake.host(), None, &st, "img"),
        Duration::from_secs(60),
    )
    .expect("pull hung");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let url = format!("http://{}/v2/fake/img/manifests/latest", fake.host());
    assert!(
        err.contains(&format!(
            "GET {url}: HTTP 429, Retry-After: 2; waiting 2 s as the registry asks, then trying again (attempt 2 of 3)"
        )),
        "{err}"
    );
    let d = date.lock().unwrap().clone();
    assert!(
        err.contains(&format!("GET {url}: HTTP 503, Retry-After: {d}; waiting ")),
        "{err}"
    );
    let at: Vec<Instant> = fake
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/manifests/latest"))
        .map(|q| q.at)
        .collect();
    assert_eq!(at.len(), 3, "{err}");
    // The date has whole seconds: 3 s ahead is at least 2 s away.
    for (k, gap) in [(1, at[1] - at[0]), (2, at[2] - at[1])] {
        assert!(
            gap >= Duration::from_millis(1950),
            "wait {k}: {gap:?}\n{err}"
        );
        eprintln!("wait {k}: {gap:?}");
    }
    assert_eq!(
        std::fs::read_to_string(image_dir(&st, "img+latest").join("hello")).unwrap(),
        "later\n"
    );
}

/// A `Retry-After` longer than CH_IMAGE_REGY_RETRY_AFTER_MAX (default 60 s) fails the
/// request at once, naming the URL and the wait asked for; a wait within it ends at once
/// on SIGINT, through the pull's error path.
#[test]
fn retry_after_beyond_the_limit_fails_at_once_and_a_signal_ends_the_wait() {
    use std::os::unix::process::ExitStatusExt;
    let limited = |wait: &'static str| {
        Scripted::start(None, move |q| {
            if q.path == "/v2/" {
                return Reply::json("{}");
            }
            Reply::new(
                429,
                r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
            )
            .header("Content-Type", "application/json")
            .header("Retry-After", wait)
        })
    };
    let s = Scratch::new("retry-after-max");
    let st = empty_store(&s);
    let before = list_of(&st);
    let hour = limited("3600");
    let t = Instant::now();
    let err = fails_within(
        &mut pull_from(&hour.host(), None, &st, "img"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains(&format!(
            "GET http://{}/v2/fake/img/manifests/latest: HTTP 429: the registry asks to wait 3600 s before trying again (Retry-After), more than CH_IMAGE_REGY_RETRY_AFTER_MAX allows (60 s)",
            hour.host()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: try again later, or set CH_IMAGE_REGY_RETRY_AFTER_MAX to 3600"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(hour.requests().len(), 1, "{:?}", hour.requests());

    let minute = limited("50");
    let err = fails_within(
        pull_from(&minute.host(), None, &st, "img").env("CH_IMAGE_REGY_RETRY_AFTER_MAX", "10"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains("wait 50 s before trying again (Retry-After), more than CH_IMAGE_REGY_RETRY_AFTER_MAX allows (10 s)"),
        "{err}"
    );

    let asked = minute.requests().len();
    let mut cmd = pull_from(&minute.host(), None, &st, "img");
    cmd.env("CH_IMAGE_REGY_RETRY_AFTER_MAX", "100");
    let mut child = spawn_signallable(&cmd);
    wait_for("the manifest's request", 60, || {
        minute.requests().len() > asked
    });
    // Into the wait.
    std::thread::sleep(Duration::from_millis(500));
    send("INT", child.0.id());
    let (status, err, took) = ended_within(&mut child, Duration::from_secs(60));
    assert_eq!(status.signal(), Some(2), "{status}\n{err}");
    assert!(err.contains("Retry-After: 50; waiting 50 s"), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?}\n{err}");
    eprintln!("SIGINT: ended {took:?} after the signal");
    assert_eq!(minute.requests().len(), asked + 1);
    assert_eq!(before, list_of(&st));
}

/// A port on 127.0.0.1 that never completes a connection, as an address a firewall drops
/// packets to: a python3 listener with a backlog of 0 that never accepts, its queue
/// filled (the kernel then drops further SYNs). The listener and the connections that
/// fill its queue are dropped with the returned values.
fn blackhole() -> (u16, Reaped, Vec<TcpStream>) {
    let mut c = Command::new("python3");
    c.args([
        "-c",
        "import socket, time\n\
         s = socket.socket()\n\
         s.bind(('127.0.0.1', 0))\n\
         s.listen(0)\n\
         print(s.getsockname()[1], flush=True)\n\
         time.sleep(600)\n",
    ])
    .stdout(Stdio::piped());
    let mut server = Reaped(c.spawn().expect("start python3"));
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("port");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut held = Vec::new();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
        assert!(held.len() < 16, "the backlog does not fill");
    }
    (port, server, held)
}

/// Whether a socket of this host is in SYN_SENT to 127.0.0.1:`port` (/proc/net/tcp).
fn connecting_to(port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    tcp.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[2] == remote && f[3] == "02"
    })
}

/// Regression: opening a connection was not interruptible: a pull of a registry whose
/// address drops packets ignored SIGINT and SIGTERM for up to 30 s (the connect timeout,
/// which could not be set). They now end it at once, through the error path; the
/// timeout is CH_IMAGE_REGY_CONNECT_TIMEOUT, and its error names the URL and the setting.
#[test]
fn signal_ends_a_pull_stuck_connecting_at_once_and_the_connect_timeout_is_settable() {
    use std::os::unix::process::ExitStatusExt;
    if !have("python3") {
        skip("python3 not installed (apt-get install python3)");
        return;
    }
    let (port, _server, _held) = blackhole();
    let host = format!("127.0.0.1:{port}");
    let url = format!("http://{host}/v2/fake/img/manifests/latest");
    let s = Scratch::new("connect");
    let st = empty_store(&s);
    let before = list_of(&st);
    let t = Instant::now();
    let err = fails_within(
        pull_from(&host, None, &st, "img").env("CH_IMAGE_REGY_CONNECT_TIMEOUT", "2"),
        Duration::from_secs(60),
    );
    let took = t.elapsed();
    assert!(
        err.contains(&format!(
            "reach {url}: no connection within 2 s (CH_IMAGE_REGY_CONNECT_TIMEOUT)"
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: check the registry's host and port"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}\n{err}");
    for (sig, n) in [("INT", 2), ("TERM", 15)] {
        let mut child = spawn_signallable(&pull_from(&host, None, &st, "img"));
        wait_for("the pull's connection attempt", 60, || connecting_to(port));
        std::thread::sleep(Duration::from_millis(300));
        send(sig, child.0.id());
        let (status, err, took) = ended_within(&mut child, Duration::from_secs(60));
        assert_eq!(status.signal(), Some(n), "SIG{sig}: {status}\n{err}");
        assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
        assert!(err.contains(&url), "{err}");
        assert!(
            took < Duration::from_secs(1),
            "SIG{sig}: took {took:?}\n{err}"
        );
        eprintln!("SIG{sig}: ended {took:?} after the signal");
    }
    assert_eq!(before, list_of(&st));
}

/// `ch-image ARGS` in a user, network and mount namespace of its own (unprivileged:
/// `unshare -rnm`) whose resolver never answers: /etc/resolv.conf names 10.1.1.1, routed
/// to the loopback, where the query is dropped (no address of the namespace is 10.1.1.1),
/// each try waited on 30 s; /etc/nsswitch.conf asks only files and DNS, and nscd is out
/// of reach. The command is `unshare`'s process (which execs `sh`, which execs
/// ch-image): signals sent to it reach ch-image. `None` (after a loud skip) if such a
/// namespace can't be made here.
fn with_hung_resolver(s: &Scratch, args: &[&str]) -> Option<Command> {
    for t in ["unshare", "ip"] {
        if !have(t) {
            skip(&format!(
                "{t} not installed (apt-get install util-linux iproute2)"
            ));
            return None;
        }
    }
    let (conf, nss) = (s.join("resolv.conf"), s.join("nsswitch.conf"));
    std::fs::write(
        &conf,
        "nameserver 10.1.1.1\noptions timeout:30 attempts:1\n",
    )
    .unwrap();
    std::fs::write(&nss, "hosts: files dns\n").unwrap();
    let script = r#"
        conf=$1 nss=$2; shift 2
        ip link set lo up
        ip route add 10.0.0.0/8 dev lo
        mount --bind "$conf" /etc/resolv.conf
        mount --bind "$nss" /etc/nsswitch.conf
        for d in /var/run/nscd /run/nscd; do
            if [ -d "$d" ]; then mount -t tmpfs none "$d"; fi
        done
        exec "$@"
    "#;
    let probe = unpriv("unshare")
        .args(["-rnm", "sh", "-ec", script, "sh"])
        .arg(&conf)
        .arg(&nss)
        .arg("true")
        .output()
        .expect("spawn unshare");
    if !probe.status.success() {
        skip(&format!(
            "can't make a user+network+mount namespace with a resolver of its own: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
        return None;
    }
    let mut c = unpriv("unshare");
    c.args(["-rnm", "sh", "-ec", script, "sh"])
        .arg(&conf)
        .arg(&nss)
        .arg(bin("ch-image"))
        .args(args);
    Some(c)
}

/// Whether a UDP socket of process `pid`'s network namespace is connected to
/// 10.1.1.1:53 ([`with_hung_resolver`]'s name server): its name lookup has begun.
fn asking_the_hung_resolver(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(2) == Some("0101010A:0035"))
}

/// Regression: the name lookup was not interruptible: a pull of a registry whose name
/// the resolver does not answer for held SIGINT and SIGTERM until the resolver gave up
/// (28 s here, with resolv.conf's `timeout:30`), as it held them while connecting
/// before. The lookup now runs on a thread the signal abandons: the pull ends through
/// its error path at once.
#[test]
fn signal_ends_a_pull_stuck_looking_up_the_registry_s_name_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let s = Scratch::new("resolve");
    let st = s.join("storage");
    let st_arg = st.to_str().unwrap();
    let host = "host.invalid.example:5000";
    let url = format!("https://{host}/v2/x/manifests/latest");
    for (sig, n) in [("INT", 2), ("TERM", 15)] {
        let Some(cmd) =
            with_hung_resolver(&s, &["-s", st_arg, "pull", &format!("{host}/x"), "img"])
        else {
            return;
        };
        let mut child = spawn_signallable(&cmd);
        let pid = child.0.id();
        wait_for("the pull's name lookup", 60, || {
            asking_the_hung_resolver(pid)
        });
        std::thread::sleep(Duration::from_millis(300));
        send(sig, pid);
        let (status, err, took) = ended_within(&mut child, Duration::from_secs(60));
        assert_eq!(status.signal(), Some(n), "SIG{sig}: {status}\n{err}");
        assert!(err.contains(&format!("interrupted by SIG{sig}")), "{err}");
        assert!(err.contains(&format!("reach {url}")), "{err}");
        assert!(
            took < Duration::from_secs(1),
            "SIG{sig}: took {took:?}\n{err}"
        );
        eprintln!("SIG{sig}: ended {took:?} after the signal");
    }
}

/// A layer whose connection drops halfway was downloaded again from byte 0. When the
/// registry serves ranges (`Accept-Ranges: bytes`, a 206), only the rest is asked for
/// (`Range: bytes=N-`), and the digest is still that of the whole blob: a registry whose
/// rest is not the blob's fails the pull on its digest.
#[test]
fn layer_cut_off_mid_transfer_resumes_from_where_it_stopped() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut big = Vec::new();
    for i in 0..100_000u32 {
        big.extend_from_slice(&i.to_le_bytes());
    }
    let layer = gzip(&tar_with_member("big", &big));
    let l_len = layer.len() as u64;
    let half = layer.len() / 2;
    let img = Arc::new(FakeImage::new(&[(&layer, l_len)]));
    let ld = img.blobs[1].0.clone();
    // Cuts the layer's first answer at half; answers a range with `rest(from)`.
    let ranged = |rest: fn(&[u8], usize) -> Vec<u8>| {
        let (i, ld, full, gets) = (
            img.clone(),
            ld.clone(),
            layer.clone(),
            Arc::new(AtomicUsize::new(0)),
        );
        Scripted::start(None, move |q| {
            if !q.path.ends_with(&ld) {
                return i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"));
            }
            let n = full.len();
            if gets.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut r = Reply::new(200, full[..half].to_vec()).header("Accept-Ranges", "bytes");
                r.declare = Some(n as u64);
                return r;
            }
            let from = q
                .range
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|a| a.parse::<usize>().ok());
            match from {
                Some(a) if a < n => Reply::new(206, rest(&full, a))
                    .header("Accept-Ranges", "bytes")
                    .header("Content-Range", &format!("bytes {a}-{}/{n}", n - 1)),
                _ => Reply::new(200, full.clone()).header("Accept-Ranges", "bytes"),
            }
        })
    };
    let fake = ranged(|full, a| full[a..].to_vec());
    let s = Scratch::new("resume");
    let st = empty_store(&s);
    let out = output(&mut pull_from(&fake.host(), None, &st, "img"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "; resuming it from byte {half} of {l_len} in 1 s (attempt 2 of 3)"
        )),
        "{err}"
    );
    let gets: Vec<Req> = fake
        .requests()
        .into_iter()
        .filter(|q| q.path.ends_with(&ld))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, "");
    assert_eq!(gets[1].range, format!("bytes={half}-"));
    let size = format!("{:.1} KiB", l_len as f64 / 1024.0);
    assert!(
        err.contains(&format!("pull: downloaded 1 layer, {size} in ")),
        "{size}: {err}"
    );
    assert_eq!(
        std::fs::read(image_dir(&st, "img+latest").join("big")).unwrap(),
        big
    );

    // The rest is not the blob's: the digest of the whole refuses it.
    let liar = ranged(|full, a| vec![0u8; full.len() - a]);
    // A store without the layer or the image.
    let s = Scratch::new("resume-liar");
    let st = empty_store(&s);
    let before = list_of(&st);
    let err = fails_within(
        &mut pull_from(&liar.host(), None, &st, "img2"),
        Duration::from_secs(60),
    );
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&format!("expected {ld}")), "{err}");
    assert_eq!(before, list_of(&st));
    let partials: Vec<_> = std::fs::read_dir(st.join("dlcache"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".partial"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
}

/// A tar of `members` (name, content), in order.
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in members {
        let t = tar_with_member(name, content);
        // Each ends with the two zero blocks of the end of an archive.
        out.extend_from_slice(&t[..t.len() - 1024]);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Regression: a Docker schema 1 manifest (`…manifest.v1+prettyjws`, old images that
/// were never pushed again) was refused ("unsupported manifest kind"), while Charliecloud
/// 0.31 pulls it. Grove now pulls it as Charliecloud does (its `fsLayers` in reverse
/// order), saying it is schema 1 (deprecated), with the config of its top history entry
/// (environment, working directory, command), every blob's digest verified; a signed
/// manifest is also found by the digest of its payload, as registries name it.
#[test]
fn schema_1_manifest_is_pulled_in_reverse_layer_order_with_its_v1_config() {
    use base64::Engine as _;
    let layers = [
        gzip(&tar_of(&[("a", b"lower\n"), ("keep", b"kept\n")])),
        gzip(&tar_of(&[("b", b"middle\n")])),
        gzip(&tar_of(&[("a", b"upper\n")])),
        // The empty layer schema 1 images repeat (`throwaway`).
        gzip(&tar_of(&[])),
    ];
    let digests: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    let v1 = |cmd: &str, config: serde_json::Value| {
        serde_json::json!({
            "id": "x", "architecture": "amd64", "os": "linux", "config": config,
            "container_config": {"Cmd": ["/bin/sh", "-c", cmd]},
        })
        .to_string()
    };
    let top = v1(
        "#(nop) WORKDIR /srv",
        serde_json::json!({"Env": ["PATH=/usr/bin:/bin", "FOO=bar"], "WorkingDir": "/srv",
                           "Cmd": ["/bin/sh", "-c", "echo hi"]}),
    );
    let empty = serde_json::json!({"id": "e", "throwaway": true,
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ENV FOO=bar"]}})
    .to_string();
    let unsigned = serde_json::to_string_pretty(&serde_json::json!({
        "schemaVersion": 1, "name": "fake/img", "tag": "latest", "architecture": "amd64",
        // Top layer first.
        "fsLayers": [{"blobSum": digests[2]}, {"blobSum": digests[3]}, {"blobSum": digests[1]},
                     {"blobSum": digests[3]}, {"blobSum": digests[0]}],
        "history": [
            {"v1Compatibility": top},
            {"v1Compatibility": empty},
            {"v1Compatibility": v1("#(nop) ADD file:b in /", serde_json::Value::Null)},
            {"v1Compatibility": empty},
            {"v1Compatibility": v1("#(nop) ADD file:a in /", serde_json::Value::Null)},
        ],
    }))
    .unwrap();
    // Signed as libtrust does: the signatures go before the final brace, and each one's
    // protected header says how to cut them out again.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let cut = unsigned[..unsigned.rfind('}').unwrap()].trim_end().len();
    let protected = b64.encode(format!(
        r#"{{"formatLength":{cut},"formatTail":"{}","time":"2016-09-10T08:20:08Z"}}"#,
        b64.encode(&unsigned[cut..])
    ));
    let signed = format!(
        "{},\n   \"signatures\": [{{\"header\": {{\"alg\": \"ES256\"}}, \"signature\": \"c2ln\", \"protected\": \"{protected}\"}}]{}",
        &unsigned[..cut],
        &unsigned[cut..]
    );
    let payload_digest = format!("sha256:{}", sha256_hex(unsigned.as_bytes()));
    let serve = |blobs: Vec<(String, Vec<u8>)>| {
        let (body, pd) = (signed.clone(), payload_digest.clone());
        Scripted::start(None, move |q| {
            if q.path == "/v2/" {
                return Reply::json("{}");
            }
            if q.path.ends_with("/manifests/latest")
                || q.path.ends_with(&format!("/manifests/{pd}"))
            {
                return Reply::new(200, body.clone()).header(
                    "Content-Type",
                    "application/vnd.docker.distribution.manifest.v1+prettyjws",
                );
            }
            let d = q.path.rsplit_once("/blobs/").map_or("", |(_, d)| d);
            match blobs.iter().find(|(bd, _)| bd == d) {
                Some((_, b)) => Reply::new(200, b.clone()),
                None => Reply::new(404, ""),
            }
        })
    };
    let blobs: Vec<(String, Vec<u8>)> = digests.iter().cloned().zip(layers.clone()).collect();
    let fake = serve(blobs.clone());
    let s = Scratch::new("schema1");
    let st = empty_store(&s);
    let out = output(&mut pull_from(&fake.host(), None, &st, "img"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the manifest is Docker schema 1 (deprecated)"),
        "{err}"
    );
    let img = image_dir(&st, "img+latest");
    for (f, want) in [("a", "upper\n"), ("b", "middle\n"), ("keep", "kept\n")] {
        assert_eq!(std::fs::read_to_string(img.join(f)).unwrap(), want, "{f}");
    }
    let cfg: serde_json::Value = serde_json::from_str(&ok(Command::new("git")
        .arg("--git-dir")
        .arg(st.join("repo.git"))
        .args(["show", "refs/grove/img/img+latest:config.json"])))
    .unwrap();
    let text = cfg.to_string();
    assert!(text.contains("\"FOO\""), "{text}");
    assert!(text.contains("\"/srv\""), "{text}");
    assert!(text.contains("echo hi"), "{text}");
    assert!(text.contains("#(nop) ADD file:a in /"), "{text}");
    assert!(text.contains(&payload_digest), "{text}");
    let envf = std::fs::read_to_string(img.join("ch/environment")).unwrap();
    assert!(envf.lines().any(|l| l == "FOO=bar"), "{envf:?}");
    let history: Vec<(String, bool)> = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or("").to_string(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(history.len(), 5, "{history:?}");
    assert_eq!(
        history[0].0, "/bin/sh -c #(nop) ADD file:a in /",
        "{history:?}"
    );
    assert!(history[1].1 && history[3].1 && !history[4].1, "{history:?}");
    // Sizes from HEAD, once per distinct blob.
    let heads = fake
        .requests()
        .iter()
        .filter(|q| q.method == "HEAD" && q.path.ends_with(&digests[3]))
        .count();
    assert_eq!(heads, 1, "{:?}", fake.requests());

    // By the payload's digest, as a registry names a signed manifest.
    ok(tool("ch-image")
        .arg("-s")
        .arg(&st)
        .env("CH_IMAGE_REGY_INSECURE", fake.host())
        .args([
            "pull",
            &format!("{}/fake/img@{payload_digest}", fake.host()),
            "bydigest",
        ]));

    // A blob that is not what its blobSum says is refused.
    let mut bad = blobs.clone();
    let last = bad[1].1.len() - 1;
    bad[1].1[last] ^= 1;
    let corrupt = serve(bad);
    let s = Scratch::new("schema1-corrupt");
    let st = empty_store(&s);
    let before = list_of(&st);
    let err = fails_within(
        &mut pull_from(&corrupt.host(), None, &st, "img3"),
        Duration::from_secs(60),
    );
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&digests[1]), "{err}");
    assert_eq!(before, list_of(&st));
}

/// What the real registry answers to `GET {origin}{q.path}` (its `Range` passed on), by
/// curl: status, the headers a registry client reads, body.
fn forward(origin: &str, q: &Req) -> Reply {
    let dir = std::env::temp_dir().join(format!(
        "grove-forward-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let headers = dir.with_extension("h");
    let mut c = Command::new("curl");
    c.args(["-sk", "--http1.1", "-D"])
        .arg(&headers)
        .args([
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        ]);
    if !q.range.is_empty() {
        c.args(["-H", &format!("Range: {}", q.range)]);
    }
    // Bodies are not forwarded: a POST starting an upload and a DELETE have none.
    if matches!(q.method.as_str(), "POST" | "DELETE") {
        c.args(["-X", &q.method]);
    }
    let out = c
        .arg(format!("{origin}{}", q.path))
        .output()
        .expect("run curl");
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let _ = std::fs::remove_file(&headers);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut r = Reply::new(status, out.stdout);
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if [
                "content-type",
                "content-range",
                "accept-ranges",
                "docker-content-digest",
                "location",
            ]
            .contains(&k.as_str())
            {
                r = r.header(&k, v.trim());
            }
        }
    }
    r
}

/// The resume against the real registry's ranges (Debian's docker-registry: 206,
/// `Content-Range: bytes N-LAST/SIZE`): through a proxy that cuts the first answer of
/// each layer halfway, a pull asks the registry for the rest of each and gets the same
/// tree as a direct pull.
#[test]
fn cut_layers_resume_with_the_real_registrys_range_answers() {
    let Some(r) = Registry::start() else { return };
    r.put("two", "test/two:latest", &[]);
    let origin = format!("https://{}", r.host());
    let cut: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
    let c2 = cut.clone();
    let proxy = Scripted::start(None, move |q| {
        if q.path == "/v2/" {
            return Reply::json("{}");
        }
        let mut reply = forward(&origin, q);
        // The first answer of each layer (not the config, which is small) is cut halfway.
        if q.path.contains("/blobs/")
            && q.method == "GET"
            && reply.status == 200
            && reply.body.len() > 64 << 10
            && c2.lock().unwrap().insert(q.path.clone())
        {
            let n = reply.body.len();
            reply.body.truncate(n / 2);
            reply.declare = Some(n as u64);
        }
        reply
    });
    let s = Scratch::new("resume-real");
    let st = empty_store(&s);
    let out = output(
        tool("ch-image")
            .arg("-s")
            .arg(&st)
            .env("CH_IMAGE_REGY_INSECURE", proxy.host())
            .args(["pull", &format!("{}/test/two", proxy.host()), "two"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let n_cut = cut.lock().unwrap().len();
    assert!(n_cut >= 1, "no layer was cut: {err}");
    assert_eq!(
        err.matches("; resuming it from byte ").count(),
        n_cut,
        "{err}"
    );
    let ranged = proxy
        .requests()
        .iter()
        .filter(|q| q.range.starts_with("bytes="))
        .count();
    assert_eq!(ranged, n_cut, "{:?}", proxy.requests());
    assert!(!err.contains("downloading it from the start"), "{err}");
    let direct = s.join("direct");
    ok(r.ch_image(&direct)
        .args(["pull", &format!("{}/test/two", r.host()), "two"]));
    assert_eq!(
        tree(&image_dir(&st, "two+latest")),
        tree(&image_dir(&direct, "two+latest"))
    );
}

/// The DELETE of a failed upload session against the real registry (Debian's
/// docker-registry): through a proxy that forwards the session's POST and DELETE but
/// answers every PUT of a blob with a 500, each of the three sessions is deleted (204, a
/// debug note, no warning), and the registry no longer knows them (404).
#[test]
fn failed_upload_sessions_are_deleted_on_the_real_registry() {
    let Some(r) = Registry::start() else { return };
    let origin = format!("https://{}", r.host());
    let answers: Arc<Mutex<Vec<(String, u16)>>> = Default::default();
    let a2 = answers.clone();
    let proxy = Scripted::start(None, move |q| {
        if q.path == "/v2/" {
            return Reply::json("{}");
        }
        if q.method == "PUT" {
            return Reply::new(500, "");
        }
        let mut reply = forward(&origin, q);
        // The registry's absolute Location, made relative: to the proxy.
        for (_, v) in reply.headers.iter_mut() {
            *v = v.replace(&origin, "");
        }
        if q.method == "DELETE" {
            a2.lock().unwrap().push((q.path.clone(), reply.status));
        }
        reply
    });
    let s = Scratch::new("push-delete-real");
    let st = local_image(&s);
    let out = output_within(
        tool("ch-image")
            .arg("-vv")
            .arg("-s")
            .arg(&st)
            .env("CH_IMAGE_REGY_INSECURE", proxy.host())
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "p")
            .args([
                "push",
                "local",
                &format!("{}/test/del:latest", proxy.host()),
            ]),
        Duration::from_secs(60),
    )
    .expect("push hangs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(": HTTP 500"), "{err}");
    let answers = answers.lock().unwrap().clone();
    assert_eq!(answers.len(), 3, "{answers:?}\n{err}");
    for (path, status) in &answers {
        assert!(
            path.starts_with("/v2/test/del/blobs/uploads/"),
            "{answers:?}"
        );
        assert_eq!(*status, 204, "{answers:?}\n{err}");
        assert!(
            err.contains(&format!(
                "DELETE http://{}{path}: HTTP 204: failed upload session deleted",
                proxy.host()
            )),
            "{err}"
        );
        let gone = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://{}{path}", r.host()))
            .output()
            .expect("run curl");
        assert_eq!(String::from_utf8_lossy(&gone.stdout), "404", "{path}");
    }
    assert!(!err.contains("warning: DELETE"), "{err}");
}

/// Redirects of an https registry that wants Basic u:p (every GET but `/v2/`, manifests
/// and blobs, sent to `loc` + path while `loc` is set), as registries that keep blobs on
/// a storage service or CDN answer: credentials go to the registry's own origin only,
/// plain http and other schemes are refused, a loop ends naming the URL, and what a
/// redirect fetched is still checked against its digest.
#[test]
fn redirects_keep_credentials_at_the_registry_and_refuse_downgrades_loops_and_other_schemes() {
    let Some((ca, tls)) = fake_tls() else { return };
    let img = Arc::new(FakeImage::new(&[(
        &auth_layer(),
        auth_layer().len() as u64,
    )]));
    let serve = {
        let img = img.clone();
        move |q: &Req| img.reply(&q.path).unwrap_or_else(|| Reply::new(404, ""))
    };
    let tls_other = Scripted::start(Some(tls.clone()), serve.clone());
    let plain_other = Scripted::start(None, serve.clone());
    let liar = Scripted::start(Some(tls.clone()), |q: &Req| {
        if q.path.contains("/blobs/") {
            Reply::new(200, "not the layer")
        } else {
            Reply::new(404, "")
        }
    });
    let loc = Arc::new(Mutex::new(String::new()));
    let loc2 = loc.clone();
    let r = Scripted::start(Some(tls.clone()), move |q| {
        if q.auth != BASIC_U_P {
            return Reply::challenge(r#"Basic realm="fake""#);
        }
        if q.path == "/v2/" {
            return Reply::json("{}");
        }
        if q.path.starts_with("/again") {
            return Reply::new(302, "").header("Location", &q.path);
        }
        if let Some(rest) = q.path.strip_prefix("/moved") {
            return img.reply(rest).unwrap_or_else(|| Reply::new(404, ""));
        }
        let l = loc2.lock().unwrap().clone();
        if l.is_empty() {
            return img.reply(&q.path).unwrap_or_else(|| Reply::new(404, ""));
        }
        // The layer only, or the manifest too (`loc` ending in `+`).
        match l.strip_suffix('+') {
            Some(l) => Reply::new(307, "").header("Location", &format!("{l}{}", q.path)),
            None if q.path.contains("/blobs/sha256:") && !q.path.contains("/blobs/uploads") => {
                Reply::new(307, "").header("Location", &format!("{l}{}", q.path))
            }
            None => img.reply(&q.path).unwrap_or_else(|| Reply::new(404, "")),
        }
    });
    let s = Scratch::new("redirects");
    let pull = |st: &Path| {
        let mut c = pull_from(&r.host(), Some(&ca), st, "img");
        c.env("CH_IMAGE_AUTH", "yes")
            .env("CH_IMAGE_USERNAME", "u")
            .env("CH_IMAGE_PASSWORD", "p");
        c
    };
    let fails = |l: String, what: &str| {
        *loc.lock().unwrap() = l;
        let st = empty_store(&Scratch::new(what));
        let before = list_of(&st);
        let err = fails_within(&mut pull(&st), Duration::from_secs(60));
        assert_eq!(list_of(&st), before, "{err}");
        err
    };

    // https to plain http: refused, nothing sent there (credentials or not).
    let down = format!("http://{}", plain_other.host());
    let err = fails(down.clone(), "redirect-down");
    assert!(
        err.contains(&format!(
            "refusing redirect to {down}/v2/fake/img/blobs/sha256:"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "plain http, handed out by the https registry {}",
            r.host()
        )),
        "{err}"
    );
    assert!(
        plain_other.requests().is_empty(),
        "{:?}",
        plain_other.requests()
    );

    // Another scheme: refused.
    let err = fails("ftp://127.0.0.1".into(), "redirect-ftp");
    assert!(
        err.contains("refusing redirect to ftp://127.0.0.1/v2/fake/img/blobs/sha256:"),
        "{err}"
    );
    assert!(
        err.contains("only http and https URLs are followed"),
        "{err}"
    );

    // A loop: ends, naming the URL asked for and the last location.
    let again = format!("https://{}/again", r.host());
    let err = fails(again.clone(), "redirect-loop");
    assert!(
        err.contains(&format!(
            "refusing GET https://{}/v2/fake/img/blobs/sha256:",
            r.host()
        )),
        "{err}"
    );
    assert!(
        err.contains("more than 10 redirects, the last to /again/v2/"),
        "{err}"
    );
    let loops = r
        .requests()
        .iter()
        .filter(|q| q.path.starts_with("/again"))
        .count();
    assert_eq!(loops, 10, "{:?}", r.requests());

    // The wrong bytes behind a redirect: a digest mismatch.
    let err = fails(format!("https://{}", liar.host()), "redirect-liar");
    assert!(err.contains("digest mismatch"), "{err}");

    // Elsewhere (manifest and layer): followed, without credentials.
    *loc.lock().unwrap() = format!("https://{}+", tls_other.host());
    let st = empty_store(&Scratch::new("redirect-other"));
    ok(&mut pull(&st));
    assert_pulled(&st);
    let got = tls_other.requests();
    assert!(
        got.iter().any(|q| q.path.ends_with("/manifests/latest")),
        "{got:?}"
    );
    assert!(got.iter().any(|q| q.path.contains("/blobs/")), "{got:?}");
    assert!(got.iter().all(|q| q.auth.is_empty()), "{got:?}");

    // The registry's own origin: credentials go, as Docker sends them.
    *loc.lock().unwrap() = format!("https://{}/moved+", r.host());
    let st = empty_store(&s);
    ok(&mut pull(&st));
    assert_pulled(&st);
    let moved: Vec<_> = r
        .requests()
        .into_iter()
        .filter(|q| q.path.starts_with("/moved"))
        .collect();
    assert!(!moved.is_empty());
    assert!(moved.iter().all(|q| q.auth == BASIC_U_P), "{moved:?}");
}

/// A manifest asked for by digest whose body hashes to another, and one whose
/// `Content-Type` says an index while its body says an image manifest: both refused,
/// naming the two digests, or the two media types; the store as it was.
#[test]
fn manifest_that_is_not_what_was_asked_or_announced_is_refused_naming_both() {
    let img = Arc::new(FakeImage::new(&[(
        &auth_layer(),
        auth_layer().len() as u64,
    )]));
    let actual = format!("sha256:{}", sha256_hex(img.manifest.as_bytes()));
    let asked = format!("sha256:{}", sha256_hex(b"another manifest"));
    let ct = Arc::new(Mutex::new(String::new()));
    let ct2 = ct.clone();
    let fake = Scripted::start(None, move |q: &Req| {
        if q.path == "/v2/" {
            return Reply::json("{}");
        }
        if q.path.contains("/manifests/") {
            return Reply::new(200, img.manifest.clone())
                .header("Content-Type", &ct2.lock().unwrap());
        }
        img.reply(&q.path).unwrap_or_else(|| Reply::new(404, ""))
    });
    let pull = |st: &Path, reference: &str| {
        let mut c = tool("ch-image");
        c.arg("-s")
            .arg(st)
            .env_remove("CH_IMAGE_AUTH")
            .env("CH_IMAGE_REGY_INSECURE", fake.host())
            .args([
                "pull",
                &format!("{}/fake/img{reference}", fake.host()),
                "img",
            ]);
        c
    };

    *ct.lock().unwrap() = "application/vnd.oci.image.manifest.v1+json".into();
    let st = empty_store(&Scratch::new("manifest-by-digest"));
    let before = list_of(&st);
    let err = fails_within(
        &mut pull(&st, &format!("@{asked}")),
        Duration::from_secs(60),
    );
    assert!(
        err.contains(&format!(
            "manifest http://{}/v2/fake/img/manifests/{asked}: digest mismatch: expected \
             {asked}, got {actual}",
            fake.host()
        )),
        "{err}"
    );
    assert_eq!(list_of(&st), before);

    *ct.lock().unwrap() = "application/vnd.oci.image.index.v1+json".into();
    let err = fails_within(&mut pull(&st, ":latest"), Duration::from_secs(60));
    assert!(
        err.contains(&format!(
            "refusing manifest http://{}/v2/fake/img/manifests/latest: its Content-Type is \
             application/vnd.oci.image.index.v1+json but its body says \
             application/vnd.oci.image.manifest.v1+json",
            fake.host()
        )),
        "{err}"
    );
    assert_eq!(list_of(&st), before);

    // A generic type leaves the body to say, as Docker's client does.
    *ct.lock().unwrap() = "application/json".into();
    ok(&mut pull(&st, ":latest"));
}

/// A gzip bomb (a layer of about 1 MiB of gzip holding one file of 1 GiB of zeros): its
/// member is streamed into the object database, stored compressed (a 2 GiB one took
/// 22 MB of storage and 38 MB of memory, in 6 min 17 s at load 6), so the disk does not
/// fill; a signal in the middle ends the pull at once (this held before the test was
/// written: the streaming's reads fail once a signal came), the store as it was.
#[test]
fn signal_ends_the_unpacking_of_a_gzip_bomb_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let s = Scratch::new("bomb");
    let dir = s.join("bomb");
    sh(&format!(
        "mkdir -p {0} && cd {0} && truncate -s 1G zeros && tar --owner=0 --group=0 -cf - zeros | gzip -1 > layer && rm zeros",
        dir.display()
    ));
    let layer = std::fs::read(dir.join("layer")).unwrap();
    assert!(layer.len() < 8 << 20, "{}", layer.len());
    let img = Arc::new(FakeImage::new(&[(&layer, layer.len() as u64)]));
    let ld = img.blobs[1].0.clone();
    let i = img.clone();
    let fake = Scripted::start(None, move |q| {
        i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    let st = empty_store(&s);
    let before = list_of(&st);
    let mut child = spawn_signallable(&pull_from(&fake.host(), None, &st, "img"));
    wait_for("the layer's request", 60, || {
        fake.requests().iter().any(|q| q.path.ends_with(&ld))
    });
    // Into the unpacking (the download of 1 MiB from a local fake is at once).
    std::thread::sleep(Duration::from_secs(3));
    send("INT", child.0.id());
    let (status, err, took) = ended_within(&mut child, Duration::from_secs(120));
    eprintln!("ended {took:?} after the signal");
    assert_eq!(status.signal(), Some(2), "{status}\n{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}\n{err}");
    assert_eq!(before, list_of(&st));
    ok(tool("ch-image").arg("-s").arg(&st).arg("fsck"));
}

/// Regression: a manifest asked for by tag (no size declared for it) whose
/// `Content-Length` announces more than the 16 MiB bound was read up to the bound
/// before it was refused; it is now refused unread, naming the URL and the bound, the
/// store as it was. (One within the bound that sends more than it announces is
/// `blob_or_manifest_longer_than_declared_is_refused_at_its_declared_size`'s.)
#[test]
fn manifest_announced_over_the_bound_is_refused_before_it_is_read() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let img = Arc::new(FakeImage::new(&[]));
    let sent = Arc::new(AtomicU64::new(0));
    let (i, sent2) = (img.clone(), sent.clone());
    let fake = Scripted::start(None, move |q| {
        if q.path.ends_with("/manifests/latest") {
            // A manifest, then 64 MiB of spaces (JSON allows them): 64 MiB announced.
            return Reply::new(200, i.manifest.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .pad(64 << 20, sent2.clone());
        }
        i.reply(&q.path).unwrap_or_else(|| Reply::json("{}"))
    });
    let st = empty_store(&Scratch::new("manifest-over"));
    let before = list_of(&st);
    let err = fails_within(
        &mut pull_from(&fake.host(), None, &st, "img"),
        Duration::from_secs(60),
    );
    assert!(
        err.contains(&format!(
            "manifest http://{}/v2/fake/img/manifests/latest: larger than the limit of {} bytes",
            fake.host(),
            16u64 << 20
        )),
        "{err}"
    );
    // What the socket buffers of loopback take, not the 16 MiB read before.
    let n = sent.load(Ordering::SeqCst);
    assert!(n < 8 << 20, "{n} bytes of padding sent");
    eprintln!("{n} bytes of padding sent");
    assert_eq!(before, list_of(&st));
}
