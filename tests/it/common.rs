//! Shared helpers for integration tests.
//!
//! When the suite runs as root (CI), every tool runs as an unprivileged user (uid and gid
//! 65534 via `setpriv`), so the tests exercise the unprivileged path. Scratch directories
//! are created by that user too.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The uid/gid tools run as when the suite runs as root.
pub const TEST_UID: u32 = 65534;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Path of one of our binaries.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "ch-image" => PathBuf::from(env!("CARGO_BIN_EXE_ch-image")),
        "ch-run" => PathBuf::from(env!("CARGO_BIN_EXE_ch-run")),
        "ch-convert" => PathBuf::from(env!("CARGO_BIN_EXE_ch-convert")),
        "ch-ssh" => PathBuf::from(env!("CARGO_BIN_EXE_ch-ssh")),
        "ch-grow" => PathBuf::from(env!("CARGO_BIN_EXE_ch-grow")),
        "ch-fromhost" => PathBuf::from(env!("CARGO_BIN_EXE_ch-fromhost")),
        other => panic!("unknown binary {other}"),
    }
}

/// A command that runs `program` as the unprivileged test user (directly when not root).
/// USER and HOME are set as a login would set them.
pub fn unpriv(program: impl AsRef<OsStr>) -> Command {
    let mut c;
    if is_root() {
        c = Command::new("setpriv");
        c.args([
            format!("--reuid={TEST_UID}"),
            format!("--regid={TEST_UID}"),
            "--clear-groups".to_string(),
            "--".to_string(),
        ]);
        c.arg(program);
        c.env("USER", "nobody");
    } else {
        c = Command::new(program);
        if std::env::var_os("USER").is_none() {
            c.env("USER", "grove-test");
        }
    }
    c.env_remove("CH_IMAGE_STORAGE");
    // CI=true makes commands wait for their compaction (store::compaction::auto_waits);
    // the tests of the background one set it themselves.
    c.env_remove("CI");
    c
}

/// One of our binaries, run unprivileged.
pub fn tool(name: &str) -> Command {
    unpriv(bin(name))
}

/// A shell script run unprivileged with `sh -ec`.
pub fn sh(script: &str) -> Output {
    let out = unpriv("sh")
        .args(["-ec", script])
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "script failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory owned by the test user, removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let base = std::env::var_os("GROVE_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"));
        std::fs::create_dir_all(&base).expect("create scratch base dir");
        // A name no other test has: made here (create_dir fails if it exists), since the
        // PID is unique only in its PID namespace (CI runs the suite in one; another
        // run's, or a kept directory of an earlier run, can have the same name).
        let path = loop {
            let path = base.join(format!(
                "grove-test-{}-{}-{}",
                tag,
                std::process::id(),
                COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("create scratch dir {}: {e}", path.display()),
            }
        };
        if is_root() {
            let st = Command::new("chown")
                .arg(format!("{TEST_UID}:{TEST_UID}"))
                .arg(&path)
                .status()
                .expect("chown scratch");
            assert!(st.success());
        }
        Scratch { path }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// A storage directory path inside the scratch dir (not created).
    pub fn storage(&self) -> PathBuf {
        self.path.join("storage")
    }
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("GROVE_KEEP_TEST_DIRS").is_some() {
            return;
        }
        // Images may hold 0000 directories: make everything writable first.
        let _ = Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Give `p` (recursively) to the test user when the suite runs as root, so the tools,
/// which run as that user, can read and change it.
pub fn own(p: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{TEST_UID}:{TEST_UID}"))
            .arg(p)
            .status()
            .expect("chown");
        assert!(st.success());
    }
}

/// Run a command, returning its output; panics if it could not start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns stdout as a string.
pub fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "command failed: {cmd:?}\nstatus: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command that must fail; returns stderr as a string.
pub fn fails(cmd: &mut Command) -> (i32, String) {
    let out = output(cmd);
    assert!(
        !out.status.success(),
        "command unexpectedly succeeded: {cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Skip a test loudly; with GROVE_NO_SKIP set (CI), a skip is a failure.
pub fn skip(reason: &str) {
    if std::env::var_os("GROVE_NO_SKIP").is_some() {
        panic!("SKIP not allowed (GROVE_NO_SKIP set): {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// The busybox rootfs fixture, made once per test run by `fixtures/busybox.sh` into a
/// cache directory readable by the test user. Returns the rootfs directory.
pub fn busybox_rootfs() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let cache = PathBuf::from(
            std::env::var_os("GROVE_FIXTURE_CACHE")
                .unwrap_or_else(|| "/var/tmp/grove-fixtures".into()),
        );
        let dest = cache.join("busybox");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/busybox.sh");
        let st = Command::new("sh")
            .arg(&script)
            .arg(&dest)
            .status()
            .expect("run fixtures/busybox.sh");
        assert!(st.success(), "fixtures/busybox.sh failed");
        dest
    })
    .clone()
}

/// A copy of the busybox fixture owned by the test user, at `s/NAME`.
pub fn busybox_copy(s: &Scratch, name: &str) -> PathBuf {
    let dst = s.join(name);
    sh(&format!(
        "cp -a '{}' '{}'",
        busybox_rootfs().display(),
        dst.display()
    ));
    dst
}

/// `cmd` started with every signal's default action (`env --default-signal`), for a test
/// that signals a tool: it must not depend on the dispositions the suite inherited. A
/// shell runs a background job it starts without job control (`cargo test &` in a
/// script) with SIGINT and SIGQUIT ignored, so does everything the job starts, and a
/// tool keeps them ignored as Charliecloud's does: a test's SIGINT did nothing, and the
/// test waited for ever for the tool to end.
pub fn with_default_signals(cmd: &Command) -> Command {
    with_signals(cmd, "--default-signal")
}

/// `cmd` run through `env OPTION` (`--ignore-signal=INT`, `--default-signal`, ...), with
/// its environment and directory.
pub fn with_signals(cmd: &Command, option: &str) -> Command {
    let mut c = Command::new("env");
    c.arg(option).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}

/// Send `sig` (a name: `INT`, `TERM`, `STOP`, ...) to process `pid` with kill(1).
pub fn send(sig: &str, pid: u32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(st.success(), "kill -{sig} {pid}");
}

/// A child process killed and reaped when dropped, even if the test panics.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `prog` is found in `$PATH` (`command -v`).
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Poll `f` every 20 ms until it holds; panics naming `what` if it still does not after
/// `secs` seconds. The limit is a hang detector, generous on purpose, never a timing
/// claim: tests wait for events (a marker file, a line of output, a process gone), not
/// for durations.
#[track_caller]
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "gave up after {secs} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Spawn `cmd` (output discarded) and SIGKILL it once it has made `count` system calls
/// of kind `field` (`syscr` reads, `syscw` writes, /proc/PID/io): a kill at a point of
/// its progress, not after a duration, which a fast or a loaded machine would make
/// meaningless. Returns whether it was still running when killed. `cmd` must exec the
/// program in its own process (setpriv does), so that the PID is the program's.
pub fn kill_after(cmd: &mut Command, field: &str, count: u64) -> bool {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let io = format!("/proc/{}/io", child.id());
    let prefix = format!("{field}:");
    let mut running = false;
    wait_for("the process to progress or end", 600, || {
        if child.try_wait().expect("try_wait").is_some() {
            return true;
        }
        let done = std::fs::read_to_string(&io)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        running = done >= count;
        running
    });
    child.kill().ok(); // SIGKILL
    child.wait().expect("wait");
    running
}

/// Run our `tool` with `args` under `/usr/bin/time` as the test user; it must succeed.
/// Returns its maximum resident set size in KiB and its standard error.
pub fn max_rss_kib(tool: &str, args: &[&OsStr]) -> (u64, String) {
    let mut c = unpriv("/usr/bin/time");
    c.args(["-f", "maxrss_kb=%M"]).arg(bin(tool)).args(args);
    let out = output(&mut c);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let kb = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss in {err}"));
    (kb, err)
}

/// The repair command of a "changed outside grove" error (its hint), to run as given.
#[track_caller]
pub fn repair_hint(err: &str) -> String {
    err.lines()
        .find_map(|l| l.split_once("git objects: ").map(|(_, c)| c.to_string()))
        .unwrap_or_else(|| panic!("no repair hint: {err}"))
}

/// `sleep SECS` as the unprivileged test user, returned once it runs as that user: setpriv
/// execs sleep, so the PID is the sleep's, but until the exec the process is still
/// setpriv's (root's when the suite runs as root) and its /proc entries are not the user's.
pub fn unpriv_sleeper(secs: u32) -> Reaped {
    let child = Reaped(
        unpriv("sleep")
            .arg(secs.to_string())
            .spawn()
            .expect("spawn sleep"),
    );
    let pid = child.0.id();
    wait_for("the test user's sleep to start", 30, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
    });
    child
}

/// One test's world for builds: a scratch directory whose storage directory has the
/// busybox fixture imported as `busybox`, and a context directory `ctx` owned by the
/// test user. Test files add their own methods in `impl Bench` blocks beside their tests.
pub struct Bench {
    pub s: Scratch,
    pub ctx: PathBuf,
}

/// Proxy settings removed from `ch-image`'s environment, so a build's proxy handling sees
/// only what a test sets.
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "FTP_PROXY",
    "ftp_proxy",
];

impl Bench {
    /// A scratch directory named `name` with busybox imported (not checked out: an import
    /// leaves the checkout to first use).
    pub fn new(name: &str) -> Bench {
        let s = Scratch::new(name);
        let ctx = s.join("ctx");
        let b = Bench { s, ctx };
        b.mkdir("");
        ok(b.image().arg("import").arg(busybox_rootfs()).arg("busybox"));
        b
    }

    /// [`Bench::new`] with busybox checked out, for tests that run built images as layers
    /// over a checked-out base (where layers keep modes a checkout raises).
    pub fn checked_out(name: &str) -> Bench {
        let b = Bench::new(name);
        ok(b.image().arg("checkout").arg("busybox"));
        b
    }

    pub fn storage(&self) -> PathBuf {
        self.s.storage()
    }

    /// `ch-image -s STORAGE`, without the cache and proxy settings of the environment.
    pub fn image(&self) -> Command {
        let mut c = tool("ch-image");
        c.arg("-s").arg(self.storage());
        c.env_remove("CH_IMAGE_CACHE");
        for v in PROXY_VARS {
            c.env_remove(v);
        }
        c
    }

    /// `ch-image -s STORAGE build -t TAG [extra] CTX`, with `df` written to CTX/Dockerfile.
    pub fn build_cmd(&self, tag: &str, df: &str, extra: &[&str]) -> Command {
        self.write("Dockerfile", df);
        let mut c = self.image();
        c.args(["build", "-t", tag]).args(extra).arg(&self.ctx);
        c
    }

    /// A build that must succeed; returns its whole output.
    pub fn build_out(&self, tag: &str, df: &str, extra: &[&str]) -> Output {
        let mut c = self.build_cmd(tag, df, extra);
        let out = output(&mut c);
        assert!(
            out.status.success(),
            "build failed: {c:?}\nstatus: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A build that must succeed; returns its stderr (the progress log).
    pub fn build(&self, tag: &str, df: &str, extra: &[&str]) -> String {
        String::from_utf8_lossy(&self.build_out(tag, df, extra).stderr).into_owned()
    }

    /// A build that must fail; returns (exit code, stderr).
    pub fn build_fails(&self, tag: &str, df: &str, extra: &[&str]) -> (i32, String) {
        fails(&mut self.build_cmd(tag, df, extra))
    }

    /// `ch-run -s STORAGE TAG -- /bin/sh -c SCRIPT`, which must succeed; returns stdout.
    pub fn run(&self, tag: &str, script: &str) -> String {
        ok(tool("ch-run")
            .arg("-s")
            .arg(self.storage())
            .arg(tag)
            .args(["--", "/bin/sh", "-c", script]))
    }

    /// `git -C STORAGE/repo.git ARGS`, as the test user; returns stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let mut c = unpriv("git");
        c.arg("-C")
            .arg(self.storage().join("repo.git"))
            .args(args)
            .env("HOME", &self.s.path)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        ok(&mut c)
    }

    /// `git fsck` of the store's repository, which must pass. First waits for a
    /// compaction running in the background (it removes packs; `ch-image fsck` waits the
    /// same way).
    pub fn fsck(&self) {
        let lock = self
            .storage()
            .join("repo.git/objects/info/grove-compact.lock");
        if lock.exists() {
            ok(Command::new("flock").arg("-s").arg(&lock).arg("true"));
        }
        self.git(&["fsck", "--no-progress", "--no-dangling"]);
    }

    /// The commit an image ref points to (`None` if absent).
    pub fn image_commit(&self, tag: &str) -> Option<String> {
        let list = ok(self.image().args(["list", "-l"]));
        list.lines().find_map(|l| {
            let (n, c) = l.split_once('\t')?;
            (n == tag || n == format!("{tag}:latest")).then(|| c.to_string())
        })
    }

    /// Subjects of the image's history, oldest first.
    pub fn log(&self, tag: &str) -> Vec<String> {
        let out = self.git(&[
            "log",
            "--reverse",
            "--format=%s",
            &format!("refs/grove/img/{tag}+latest"),
        ]);
        out.lines().map(str::to_string).collect()
    }

    /// A context directory (parents created), owned by the test user.
    pub fn mkdir(&self, rel: &str) {
        let p = self.ctx.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        own(&p);
    }

    /// Write a context file (parents created), owned by the test user.
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.ctx.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create context dirs");
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        own(&self.ctx);
    }
}

/// The progress lines (`  N. TEXT` or `  N* TEXT`) of a build log, as (n, hit, text).
pub fn steps(log: &str) -> Vec<(usize, bool, String)> {
    log.lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let end = t.find(|c: char| !c.is_ascii_digit())?;
            let n: usize = t[..end].parse().ok()?;
            let rest = &t[end..];
            let hit = match rest.chars().next()? {
                '*' => true,
                '.' => false,
                _ => return None,
            };
            rest[1..]
                .starts_with(' ')
                .then(|| (n, hit, rest[1..].trim_start().to_string()))
        })
        .collect()
}

/// Hit (`*`) or miss (`.`) of each step after FROM, from a build log, e.g. `"**.."`.
pub fn marks(log: &str) -> String {
    steps(log)
        .iter()
        .filter(|(_, _, t)| !t.starts_with("FROM"))
        .map(|(_, h, _)| if *h { '*' } else { '.' })
        .collect()
}

/// A small HTTP server on loopback serving `dir`, run as the test user; killed on drop.
pub struct HttpServer {
    child: std::process::Child,
    pub port: u16,
}

impl HttpServer {
    pub fn start(dir: &std::path::Path) -> HttpServer {
        let (child, port) = listening_on_a_free_port("python3 -m http.server", |port| {
            crate::common::unpriv("/usr/bin/python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                ])
                .arg(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start http.server")
        });
        HttpServer { child, port }
    }
}

/// A server that `spawn(PORT)` starts on a free port of 127.0.0.1, returned once it
/// accepts connections. A free port is found by binding port 0 and letting go, so another
/// test can take it before the server binds it: a server that exits before it listens
/// is started again on another port (5 tries). Waiting for it is bounded by 120 s (a hang
/// detector: a server that had not listened within 5 s, on a loaded machine, was used
/// anyway, or failed the test).
pub fn listening_on_a_free_port(
    what: &str,
    mut spawn: impl FnMut(u16) -> std::process::Child,
) -> (std::process::Child, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut child = spawn(port);
        let mut exited = false;
        wait_for(
            &format!("{what} to listen on 127.0.0.1:{port}"),
            120,
            || {
                exited = child.try_wait().expect("try_wait").is_some();
                exited || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
        );
        // A connection is the server's only if it is still running (else another
        // process took the port first).
        if !exited && child.try_wait().expect("try_wait").is_none() {
            return (child, port);
        }
        let _ = child.wait();
    }
    panic!("{what} exited before listening, 5 times (ports taken?)");
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `src` compressed with bzip2 into `dst`, as `streams` concatenated bzip2 streams (what
/// pbzip2 and lbzip2 write) of consecutive pieces of it.
pub fn bzip2_file(src: &Path, dst: &Path, streams: usize) {
    use std::io::Write;
    let data = std::fs::read(src).expect("read file to compress");
    let mut out = Vec::new();
    for piece in data.chunks(data.len().div_ceil(streams).max(1)) {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        e.write_all(piece).expect("compress");
        out.extend(e.finish().expect("compress"));
    }
    std::fs::write(dst, out).expect("write bzip2 file");
    own(dst);
}

/// A tar member: name, type, link target, data.
pub type Member<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// A tar stream of `members` (name, type, link target, data), written with raw headers
/// (the tar crate refuses some of these names). A name or link target longer than its
/// header field (100 bytes) goes in a GNU long name (`L`) or long link (`K`) record
/// before the member, as GNU tar writes it; the field keeps its first 100 bytes.
pub fn raw_tar(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in members {
        for (long, typ) in [(link, b'K'), (name, b'L')] {
            if long.len() > 100 {
                let mut h = tar::Header::new_gnu();
                h.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
                h.set_size(long.len() as u64 + 1);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::new(typ));
                h.set_cksum();
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(long);
                out.push(0);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
        }
        let mut h = tar::Header::new_ustar();
        let u = h.as_ustar_mut().expect("ustar");
        u.name[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        u.linkname[..link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_000_000);
        h.set_entry_type(*kind);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Run `cmd` to its end: its output and the processor time (user and system) that it,
/// and the children it waited for, took (wait4(2)'s resource usage). A bound on the work
/// a command does, for a test that guards against a blow-up in time: unlike the wall
/// time, it does not grow with the machine's load (a dry run of 5 s alone took 8.5 s
/// at load 11 on 2 cores).
#[allow(clippy::zombie_processes)] // reaped by wait4(2), for its resource usage
pub fn output_and_cpu_time(cmd: &mut Command) -> (Output, std::time::Duration) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).expect("read output");
            v
        })
    };
    let so = reader(Box::new(child.stdout.take().expect("stdout")));
    let se = reader(Box::new(child.stderr.take().expect("stderr")));
    let pid = i32::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child, not yet reaped (std's Child is never waited for
        // after this, only dropped); `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4 {pid}: {e}"
        );
    }
    let time = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    let out = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: so.join().expect("stdout reader"),
        stderr: se.join().expect("stderr reader"),
    };
    (out, time(usage.ru_utime) + time(usage.ru_stime))
}
