//! Running a command in a root filesystem with user and mount namespaces (ch-run).
//!
//! Knows nothing of the store: it takes a root filesystem path (directory or SquashFS file);
//! [`storage_image_path`] is the single place that knows where a named image's directory
//! lives (spelled by [`crate::store::Layout`], which only computes paths).
//!
//! Sequence ([`run`]): read host `--set-env` files; join a peer group or build a container:
//! write temporary passwd/group files, `unshare(CLONE_NEWUSER|CLONE_NEWNS)` (the process must
//! be single-threaded), map the invoking uid/gid, mount SquashFS if needed, perform the
//! [`plan::mount_plan`] (which ends with `pivot_root`); compute the environment; set
//! `no_new_privs` (and the seccomp filter) and exec the command in place. A SquashFS image
//! forks first: the child execs the command (and dies with ch-run), the parent forwards
//! signals, stops the daemon and returns the child's exit status (128+N if killed by N).
//! So does a builder's RUN (to end what the command leaves running), but a command killed
//! by signal N kills ch-run with N, as if ch-run had become the command.
//!
//! `unsafe` lives only in [`sys`].

pub mod env;
pub mod error;
pub mod join;
pub mod passwd;
pub mod plan;
pub mod resolve;
pub mod seccomp;
pub mod setup;
pub mod ssh;
pub mod sys;
pub mod syscalls;
pub mod warm;

pub use env::{EnvArg, EnvSource};
pub use error::{RunError, EXIT_EXEC, EXIT_FEATURE, EXIT_MISC, EXIT_SQUASH, EXIT_USAGE};
pub use join::Join;
pub use plan::{Bind, BuildMount, WriteMode};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What kind of image a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Dir,
    Squash,
}

/// A located image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub path: PathBuf,
    pub kind: ImageKind,
    /// Found by name in the storage directory.
    pub by_name: bool,
}

/// Everything needed to run one command. Build it from options (see `src/bin/ch-run.rs`)
/// and pass it to [`run`].
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub image: Image,
    /// Command and arguments (`argv[0]` looked up in the container's `$PATH`).
    pub cmd: Vec<OsString>,
    /// Container uid/gid; default: the invoking effective IDs.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub write: WriteMode,
    pub binds: Vec<Bind>,
    /// The builder's RUN mounts (`--build-mount`, internal).
    pub build_mounts: Vec<plan::BuildMount>,
    /// Initial working directory (default `/`).
    pub cd: Option<PathBuf>,
    pub private_tmp: bool,
    /// `--home`: bind `$HOME` at `/home/$USER`.
    pub home: bool,
    pub no_passwd: bool,
    pub seccomp: bool,
    /// `--set-env`, `--set-env0`, `--unset-env`, `--env-no-expand` in command-line order.
    pub env: Vec<EnvArg>,
    pub join: Option<Join>,
    /// SquashFS mount point (`-m`); default `/var/tmp/$USER.ch/mnt`, created.
    pub squash_mount: Option<PathBuf>,
    /// Number of `-q`: 2 silences the command's stdout, 3 also its stderr.
    pub quiet: u8,
    /// `$USER`.
    pub user: String,
    /// `--ch-ssh`: host path of the ch-ssh program to bind at `/usr/bin/ch-ssh`.
    pub ch_ssh: Option<PathBuf>,
    /// The builder's `RUN --network=none` (internal `--no-network`): a new network
    /// namespace with only the loopback interface, up.
    pub no_network: bool,
}

/// Why an id option's value is not a valid id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("no digits found")]
    NoDigits,
    #[error("extra characters after digits")]
    TrailingCharacters,
    #[error("must be non-negative")]
    Negative,
    #[error("out of range")]
    OutOfRange,
}

/// A non-negative decimal id as `--uid`, `--gid`, `--join-pid` and `--join-ct` take it;
/// the error says why not. At most `i32::MAX`, as Charliecloud's C `int`s.
pub fn parse_id(v: &str) -> Result<u32, IdError> {
    let digits = v.strip_prefix('+').unwrap_or(v);
    if let Some(neg) = v.strip_prefix('-') {
        if !neg.is_empty() && neg.bytes().all(|b| b.is_ascii_digit()) {
            // Charliecloud's C int: below INT_MIN is out of range before it is negative.
            return Err(match neg.parse::<u64>() {
                Ok(n) if n <= 1 << 31 => IdError::Negative,
                _ => IdError::OutOfRange,
            });
        }
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(
            if digits.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
                IdError::TrailingCharacters
            } else {
                IdError::NoDigits
            },
        );
    }
    // Charliecloud parses these as C ints.
    match digits.parse::<u32>() {
        Ok(n) if n <= i32::MAX as u32 => Ok(n),
        _ => Err(IdError::OutOfRange),
    }
}

/// Whether `$USER` can be one path component: `/home/$USER`, `/var/tmp/$USER.grove`.
pub fn valid_user_name(user: &str) -> bool {
    !user.is_empty() && user != "." && user != ".." && !user.contains(['/', '\0'])
}

/// Where a named image's directory lives in storage: `STORAGE/img/NAME` with `/` mapped to
/// `%` and `:` to `+` (Charliecloud's `img_name2path`). A directory or a symlink to one.
pub fn storage_image_path(storage: &Path, name: &str) -> PathBuf {
    // The one path of the storage directory `run` knows, spelled by the store's layout.
    crate::store::Layout::new(storage).image_link(&name.replace('/', "%").replace(':', "+"))
}

/// Find the image `arg`: by name in `storage` if such an image exists, else a path to a
/// directory or SquashFS file.
pub fn locate_image(
    arg: &str,
    storage: &Path,
    write: bool,
    unsafe_: bool,
) -> Result<Image, RunError> {
    if !arg.is_empty() && !arg.starts_with('/') && !arg.starts_with('.') {
        let named = storage_image_path(storage, arg);
        if named.is_dir() {
            if write {
                return Err(RunError::msg("--write invalid when running by name"));
            }
            return Ok(Image {
                path: named,
                kind: ImageKind::Dir,
                by_name: true,
            });
        }
    }
    locate_image_path(Path::new(arg), storage, write, unsafe_)
}

/// Find the image at path `arg`, a directory or SquashFS file (never a name: a path need
/// not be UTF-8, as an image name must).
pub fn locate_image_path(
    arg: &Path,
    storage: &Path,
    write: bool,
    unsafe_: bool,
) -> Result<Image, RunError> {
    let shown = arg.display();
    // Absolute and without `.`, `..` or symlinks, as Charliecloud's realpath: `.` as the
    // image would otherwise be bound and pivoted to as a relative path.
    let path =
        std::fs::canonicalize(arg).map_err(|e| RunError::io(format!("can't stat: {shown}"), &e))?;
    let md =
        std::fs::metadata(&path).map_err(|e| RunError::io(format!("can't stat: {shown}"), &e))?;
    if md.is_dir() {
        // Anywhere in the storage directory (`img/NAME` resolves into `checkouts/`),
        // compared as canonical paths. Writing is refused even with --unsafe: a checkout
        // changed behind the store's back would poison later runs and builds.
        if let Ok(s) = storage.canonicalize() {
            if path.starts_with(&s) {
                if write {
                    return Err(RunError::msg(format!(
                        "--write: can't write to the storage directory: {}",
                        path.display()
                    ))
                    .with_hint("run by name (read-only), or with -W for throwaway changes"));
                }
                if !unsafe_ {
                    return Err(RunError::msg(
                        "can't run directory images from storage (hint: run by name)",
                    ));
                }
            }
        }
        return Ok(Image {
            path,
            kind: ImageKind::Dir,
            by_name: false,
        });
    }
    let mut magic = [0u8; 4];
    // Only a regular file can be a SquashFS image (opening a FIFO would block). One that
    // can't be opened is reported as such, as Charliecloud 0.38 does ("can't open: IMG:
    // Permission denied"), not as an unknown image type: a batch job given an image its
    // user can't read must say so.
    let read = md.is_file() && {
        let mut f = std::fs::File::open(&path)
            .map_err(|e| RunError::io(format!("can't open: {shown}"), &e))?;
        std::io::Read::read_exact(&mut f, &mut magic).is_ok()
    };
    if read {
        // Charliecloud's -v line, with the bytes as it prints them (two 16-bit words).
        crate::verbose!(
            "image file magic expected: 6873 7173; actual: {:02x}{:02x} {:02x}{:02x}",
            magic[0],
            magic[1],
            magic[2],
            magic[3]
        );
    }
    let is_squash = read && &magic == b"hsqs";
    if is_squash {
        Ok(Image {
            path,
            kind: ImageKind::Squash,
            by_name: false,
        })
    } else {
        Err(RunError::msg(format!("unknown image type: {shown}")))
    }
}

/// Features this ch-run supports (`--feature`).
pub fn feature(name: &str) -> Option<bool> {
    match name {
        "extglob" | "seccomp" | "overlayfs" | "tmpfs-xattrs" => Some(true),
        "squash" => Some(find_program("squashfuse_ll").is_some()),
        _ => None,
    }
}

/// Where programs are looked for when `$PATH` is unset (or empty): the standard
/// directories, so that a SquashFS image mounts from a batch job's bare environment.
pub const STANDARD_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// `prog`'s path: the first `$PATH` directory ([`STANDARD_PATH`] if unset) holding it as
/// a file.
pub fn find_program(prog: &str) -> Option<PathBuf> {
    find_in(std::env::var_os("PATH").as_deref(), prog)
}

fn find_in(path: Option<&OsStr>, prog: &str) -> Option<PathBuf> {
    let path = path
        .filter(|p| !p.is_empty())
        .unwrap_or(OsStr::new(STANDARD_PATH));
    std::env::split_paths(path)
        .map(|d| d.join(prog))
        .find(|f| f.is_file())
}

/// A `--set-env` option with its host file already read, or deferred (image default).
enum Pending {
    Ready(env::EnvOp),
    ImageDefault { nul: bool, expand: bool },
}

/// Read host `--set-env` files now (before namespaces hide the host).
fn load_env_args(args: &[EnvArg]) -> Result<Vec<Pending>, RunError> {
    let mut expand = true;
    let mut out = Vec::new();
    for a in args {
        match a {
            EnvArg::NoExpand => expand = false,
            EnvArg::Unset(g) => out.push(Pending::Ready(env::EnvOp::Unset { glob: g.clone() })),
            EnvArg::Set(EnvSource::Var(s)) => {
                let v = env::parse_assignment(s, true).map_err(|why| {
                    RunError::msg(format!(
                        "can't parse variable: {why}: {}",
                        String::from_utf8_lossy(s)
                    ))
                })?;
                out.push(Pending::Ready(env::EnvOp::Set {
                    vars: vec![v],
                    expand,
                    from: format!("--set-env={}", String::from_utf8_lossy(s)),
                }));
            }
            EnvArg::Set(EnvSource::File { path, nul }) => {
                let text = read_env_file(path, &path.to_string_lossy(), true)?;
                let from = path.to_string_lossy().into_owned();
                let vars = env::parse_file(&text, *nul, &from)?;
                out.push(Pending::Ready(env::EnvOp::Set { vars, expand, from }));
            }
            EnvArg::Set(EnvSource::ImageDefault { nul }) => {
                out.push(Pending::ImageDefault { nul: *nul, expand })
            }
        }
    }
    Ok(out)
}

/// Read the image's `/ch/environment` (at `root` on the host side) for deferred options.
fn finish_env_args(pending: Vec<Pending>, root: &Path) -> Result<Vec<env::EnvOp>, RunError> {
    pending
        .into_iter()
        .map(|p| match p {
            Pending::Ready(op) => Ok(op),
            Pending::ImageDefault { nul, expand } => {
                // Symlinks resolved inside the image only, as the command would see them: a
                // link that leads nowhere inside the image is not followed on the host.
                let label = "/ch/environment";
                let path = match resolve::resolve(root, Path::new(label)) {
                    Ok(resolve::Resolved::Exists(p)) => p,
                    Ok(resolve::Resolved::Missing { .. }) => {
                        // Charliecloud's words, naming the guest path.
                        return Err(RunError::sys(
                            format!("can't open: {label}"),
                            nix::errno::Errno::ENOENT,
                        ));
                    }
                    Err(e) => {
                        let errno = match e {
                            resolve::ResolveError::TooManyLinks => nix::errno::Errno::ELOOP,
                            resolve::ResolveError::NotDir(_) => nix::errno::Errno::ENOTDIR,
                            resolve::ResolveError::Io(_, n) => nix::errno::Errno::from_raw(n),
                        };
                        return Err(RunError::sys(format!("can't open: {label}"), errno));
                    }
                };
                let text = read_env_file(&path, label, false)?;
                let vars = env::parse_file(&text, nul, label)?;
                Ok(env::EnvOp::Set {
                    vars,
                    expand,
                    from: label.to_string(),
                })
            }
        })
        .collect()
}

/// Largest `--set-env` file read (4 MiB): more than the kernel lets an environment hold.
pub const MAX_ENV_FILE: u64 = 4 << 20;

/// Read a `--set-env` file (`label` names it in errors) of at most [`MAX_ENV_FILE`] bytes.
/// An image's file (`host_file` false; `path` already resolved inside the image) must be
/// a regular file and is opened without following a final symlink. A host file is the
/// user's: symlinks are followed and a pipe or FIFO (`--set-env=<(cmd)`) is read too, but
/// devices, sockets and directories are refused (`/dev/zero` would never end).
fn read_env_file(path: &Path, label: &str, host_file: bool) -> Result<Vec<u8>, RunError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut flags = libc::O_CLOEXEC | libc::O_NOCTTY;
    if !host_file {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        flags |= libc::O_NOFOLLOW | libc::O_NONBLOCK;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| RunError::io(format!("can't open: {label}"), &e))?;
    let md = f
        .metadata()
        .map_err(|e| RunError::io(format!("can't stat: {label}"), &e))?;
    let ft = md.file_type();
    if !(ft.is_file() || (host_file && ft.is_fifo())) {
        return Err(RunError::msg(format!(
            "can't read: {label}: not a regular file"
        )));
    }
    let mut text = Vec::new();
    f.take(MAX_ENV_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| RunError::io(format!("can't read: {label}"), &e))?;
    if text.len() as u64 > MAX_ENV_FILE {
        return Err(RunError::msg(format!(
            "can't read: {label}: larger than {} MiB",
            MAX_ENV_FILE >> 20
        )));
    }
    Ok(text)
}

/// Temporary passwd and group files, unlinked on drop (after they are bind-mounted).
struct TempFiles(Vec<PathBuf>);

impl TempFiles {
    fn write(dir: &Path, uid: u32, gid: u32) -> Result<TempFiles, RunError> {
        let mut t = TempFiles(Vec::new());
        let account = passwd::lookup_account(uid);
        if account.is_none() {
            crate::verbose!("UID {uid} not found; using dummy info");
        }
        let group_name = passwd::lookup_group(gid);
        if group_name.is_none() {
            crate::verbose!("GID {gid} not found; using dummy info");
        }
        let passwd = passwd::passwd_file(uid, gid, account.as_ref());
        let group = passwd::group_file(gid, group_name.as_deref());
        for (name, text) in [("passwd", passwd), ("group", group)] {
            // O_EXCL with an unpredictable name: never follows or reuses someone's file.
            let mut attempt = 0u32;
            let p = loop {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let p = dir.join(format!(
                    "ch-run_{name}.{}.{:08x}",
                    std::process::id(),
                    nanos ^ attempt.wrapping_mul(0x9e37_79b9)
                ));
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                {
                    Ok(mut f) => {
                        use std::io::Write;
                        f.write_all(text.as_bytes()).map_err(|e| {
                            RunError::io(format!("can't write temporary file: {}", p.display()), &e)
                        })?;
                        break p;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                        attempt += 1;
                    }
                    Err(e) => {
                        return Err(RunError::io(
                            format!("can't create temporary file: {}", p.display()),
                            &e,
                        )
                        .with_hint(
                            "set TMPDIR to a directory you can write (the container's \
                             /etc/passwd and /etc/group are made there), or run with \
                             --no-passwd",
                        ))
                    }
                }
            };
            t.0.push(p);
        }
        Ok(t)
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Signals forwarded to a SquashFS image's command (ch-run's child): all that a batch
/// system or a user sends to end, wake, notify or resize a job. Not the terminal's stop
/// signals (TSTP, TTIN, TTOU): blocked, they would stop the command but not ch-run, and
/// the shell waiting for ch-run would hang; left alone they stop both, as job control
/// expects. SIGCONT resumes ch-run even while blocked, and is then passed on.
const FORWARDED: [Signal; 11] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCONT,
    Signal::SIGWINCH,
    Signal::SIGXCPU,
    Signal::SIGPWR,
];

/// Run the command. Errors before the command starts are returned. A directory image's
/// command replaces the calling process (this returns only if exec fails: the error is
/// printed and [`EXIT_EXEC`] returned); a SquashFS image's command runs in a child, and
/// this returns its exit status (128+N if killed by signal N) once the daemon is stopped.
/// A builder's RUN also runs in a child; if signal N kills it, ch-run dies of N.
///
/// The calling process must be single-threaded. It enters new namespaces and changes its
/// root: call this from a process that does nothing else afterwards (the ch-run binary).
pub fn run(spec: &RunSpec) -> Result<i32, RunError> {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    if nix::unistd::getuid().as_raw() != euid || nix::unistd::getgid().as_raw() != egid {
        return Err(RunError::msg(
            "ch-run must not be installed setuid or setgid",
        ));
    }
    if spec.cmd.is_empty() {
        return Err(RunError::msg("IMAGE and/or CMD not specified"));
    }
    let uid = spec.uid.unwrap_or(euid);
    let gid = spec.gid.unwrap_or(egid);
    // A builder's RUN (an overlay upper directory given): ch-image started this process
    // with a parent-death signal. Every process of the RUN must end with the build.
    let contained = matches!(spec.write, WriteMode::Layers { upper: Some(_), .. });
    let build_parent = nix::unistd::getppid();
    let pending = load_env_args(&spec.env)?;
    let host_env: Vec<env::Var> = std::env::vars_os()
        .map(|(k, v)| (k.into_vec(), v.into_vec()))
        .collect();
    // $USER names directories: /home/$USER with --home, the default SquashFS mount point.
    let names_a_directory =
        spec.home || (spec.image.kind == ImageKind::Squash && spec.squash_mount.is_none());
    if names_a_directory && !valid_user_name(&spec.user) {
        return Err(RunError::msg(format!(
            "$USER not a valid user name: {:?}",
            spec.user
        )));
    }
    let host_home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| spec.home.then(|| passwd::lookup_home(euid)).flatten());
    if spec.home && host_home.is_none() {
        return Err(RunError::msg("--home failed: $HOME not set"));
    }

    crate::verbose!("container uid: {uid}");
    crate::verbose!("container gid: {gid}");
    // Charliecloud's form, which scripts parse: `join: JOIN COUNT TAG PID`.
    crate::verbose!(
        "join: {}",
        match &spec.join {
            None => "0 0 (null) 0".to_string(),
            Some(Join::Pid(p)) => format!("0 0 (null) {p}"),
            Some(Join::Peers { tag, count }) => format!("1 {count} {tag} 0"),
        }
    );
    crate::verbose!(
        "private /tmp: {}",
        if spec.private_tmp { "yes" } else { "no" }
    );
    let mut winner = None;
    let mut joined = false;
    match &spec.join {
        Some(Join::Pid(pid)) => {
            crate::verbose!("joining namespaces of pid {pid}");
            join::join_pid(*pid)?;
            joined = true;
        }
        Some(Join::Peers { tag, count }) => {
            match join::peers(euid, tag, *count, &join_identity(spec, uid, gid))? {
                join::Role::Joined => joined = true,
                join::Role::Winner(w) => winner = Some(w),
            }
        }
        None => {}
    }

    let mut daemon = None;
    let ops = if joined {
        finish_env_args(pending, Path::new("/"))?
    } else {
        let host_tmp = std::env::var_os("TMPDIR")
            .filter(|t| !t.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let temp = if spec.no_passwd {
            None
        } else {
            // A compute node whose /tmp is read-only (or a TMPDIR that is not
            // there): /dev/shm, which every node has, rather than no container.
            Some(match TempFiles::write(&host_tmp, uid, gid) {
                Ok(t) => t,
                Err(e) => match TempFiles::write(Path::new("/dev/shm"), uid, gid) {
                    Ok(t) => {
                        crate::verbose!(
                            "{}; /etc/passwd and /etc/group made in /dev/shm",
                            e.message()
                        );
                        t
                    }
                    Err(_) => return Err(e),
                },
            })
        };
        // A SquashFS image is mounted in a user namespace where the invoking user is root
        // (0), and the container is a user namespace nested in it that maps the container
        // IDs to that root: the archive's files, owned by 0 as mksquashfs, ch-convert and
        // Charliecloud write them, are then the container user's, as a directory image's
        // files unpacked by the user are (and `-W` can write image directories through
        // its overlay). In one namespace mapping only the container IDs, 0 is unmapped and
        // every file was nobody's. Charliecloud 0.38 nests the same way.
        let squash = spec.image.kind == ImageKind::Squash;
        setup::containerize(&if squash {
            plan::id_maps(euid, egid, 0, 0)
        } else {
            plan::id_maps(euid, egid, uid, gid)
        })?;
        if spec.no_network {
            setup::isolate_network()?;
        }
        let image_dir = match spec.image.kind {
            ImageKind::Dir => spec.image.path.clone(),
            ImageKind::Squash => {
                let (mnt, default) =
                    plan::squash_mount_point(spec.squash_mount.as_deref(), &spec.user);
                if default {
                    crate::verbose!("using default mount point: {}", mnt.display());
                    std::fs::create_dir_all(&mnt)
                        .map_err(|e| RunError::io(format!("can't mkdir: {}", mnt.display()), &e))?;
                }
                match std::fs::metadata(&mnt) {
                    Err(e) => {
                        return Err(RunError::io(
                            format!("can't stat mount point: {}", mnt.display()),
                            &e,
                        ))
                    }
                    Ok(md) if !md.is_dir() => {
                        return Err(RunError::msg(format!(
                            "mount point not a directory: {}",
                            mnt.display()
                        )))
                    }
                    Ok(_) => {}
                }
                let real = mnt.canonicalize().unwrap_or_else(|_| mnt.clone());
                let tmp_real = host_tmp.canonicalize().ok().filter(|_| temp.is_some());
                if let Some(why) = plan::squash_mount_conflict(
                    &mnt,
                    &real,
                    &spec.image.path,
                    tmp_real.as_deref().map(|t| (host_tmp.as_path(), t)),
                ) {
                    return Err(RunError::msg(why));
                }
                daemon = Some(setup::mount_squash(&spec.image.path, &mnt, 0, 0)?);
                setup::containerize(&plan::id_maps(0, 0, uid, gid))?;
                mnt
            }
        };
        // Mount points the image lacks: a named image (layers or a checkout) gets them
        // from an extra lower directory; a directory image must have them.
        let mut write = spec.write.clone();
        let mut mount_points = plan::MountPoints::default();
        if spec.image.kind == ImageKind::Dir {
            let wanted = plan::mount_dirs(spec.home);
            match &write {
                WriteMode::Layers { lowers, upper } => {
                    mount_points = plan::missing_mount_points(lowers, &wanted, upper.is_some());
                    let dsts: Vec<(PathBuf, bool)> = spec
                        .build_mounts
                        .iter()
                        .map(|m| match m {
                            plan::BuildMount::Bind { src, dst, .. } => (dst.clone(), src.is_dir()),
                            plan::BuildMount::Tmpfs { dst, .. } => (dst.clone(), true),
                        })
                        .collect();
                    mount_points.paths = plan::build_mount_points(lowers, &dsts);
                }
                WriteMode::ReadOnly | WriteMode::ReadWrite => {
                    let lowers = [image_dir.clone()];
                    let mut mp = plan::missing_mount_points(&lowers, &wanted, false);
                    if write == WriteMode::ReadWrite {
                        // -w creates /tmp and /home, as Charliecloud does.
                        mp.dirs
                            .retain(|d| plan::REQUIRED_HOST_DIRS.contains(&&*format!("/{d}")));
                    }
                    if let Some(d) = mp.dirs.first() {
                        if spec.image.by_name && write == WriteMode::ReadOnly {
                            write = WriteMode::Layers {
                                lowers: lowers.to_vec(),
                                upper: None,
                            };
                            mount_points = mp;
                        } else {
                            return Err(RunError::msg(format!(
                                "can't bind: destination not found: {}",
                                image_dir.join(d).display()
                            ))
                            .with_hint(format!(
                                "the image has no /{d} to mount on: create it \
                                 (mkdir {}), or run with -W",
                                image_dir.join(d).display()
                            )));
                        }
                    }
                }
                WriteMode::Fake { .. } | WriteMode::LayersFake { .. } => {}
            }
        }
        if !mount_points.is_empty() {
            crate::verbose!(
                "providing missing mount points: {}",
                mount_points
                    .dirs
                    .iter()
                    .map(|d| format!("/{d}"))
                    .chain(mount_points.etc_files.iter().map(|f| format!("/etc/{f}")))
                    .chain(
                        mount_points
                            .paths
                            .iter()
                            .filter(|p| p.like.is_none())
                            .map(|p| format!("/{}", p.rel))
                    )
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let staging = plan::staging(&write, &image_dir, |p| p.is_dir())
            .map_err(|e| RunError::msg(e))?
            .unwrap_or_default();
        let input = plan::PlanInput {
            image: image_dir,
            write: write.clone(),
            staging,
            host_tmp,
            private_tmp: spec.private_tmp,
            home: if spec.home {
                host_home.clone().map(|h| (h, spec.user.clone()))
            } else {
                None
            },
            passwd: temp.as_ref().map(|t| (t.0[0].clone(), t.0[1].clone())),
            binds: spec.binds.clone(),
            build_mounts: spec.build_mounts.clone(),
            ch_ssh: spec.ch_ssh.clone(),
            mount_points,
        };
        let mount_ops = plan::mount_plan(&input);
        let root = plan::new_root(&input);
        crate::verbose!("newroot: {}", root.display());
        let ranch = matches!(write, WriteMode::Fake { .. } | WriteMode::LayersFake { .. })
            .then(|| input.staging.join("ranch"));
        let (pivot, before) = mount_ops
            .split_last()
            .expect("a mount plan ends with pivot_root");
        setup::apply(before, &root, ranch.as_deref())?;
        // The image's /ch/environment is read from the assembled root: in a layered image
        // it may come from any layer.
        let ops = finish_env_args(pending, &root)?;
        // Unlink the bound passwd/group files while their host paths are still visible
        // (after pivoting, $TMPDIR or a private /tmp would hide them).
        drop(temp);
        setup::apply(std::slice::from_ref(pivot), &root, None)?;
        ops
    };

    if !host_env.iter().any(|(k, _)| k.as_slice() == b"PATH") {
        crate::warn!("$PATH not set");
    }
    // Here the process sees the container's file system, whether it set it up or joined.
    let pmix_dir_hidden = env::get(&host_env, b"PMIX_SERVER_TMPDIR").is_some_and(|d| {
        use std::os::unix::ffi::OsStrExt;
        !d.is_empty() && !Path::new(std::ffi::OsStr::from_bytes(d)).is_dir()
    });
    let defaults = env::Defaults {
        home_user: spec.home.then(|| spec.user.as_bytes().to_vec()),
        pmix_dir_hidden,
    };
    let new_env = env::compute(host_env, &defaults, &ops, &|p, n| sys::fnmatch(p, n))?;

    let cd = spec.cd.clone().unwrap_or_else(|| PathBuf::from("/"));
    nix::unistd::chdir(&cd)
        .map_err(|e| RunError::sys(format!("can't cd to {}", cd.display()), e))?;

    let group = match winner {
        Some(w) => w.ready(nix::unistd::getpid().as_raw())?,
        None => None,
    };

    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if contained {
        // Orphans of the command become ch-run's children, so that it can end them all;
        // ch-run itself hears of its parent's death (set again here: it survives execve
        // and user namespace entry, but must not depend on that).
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| RunError::sys("can't become child subreaper", e))?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
            .map_err(|e| RunError::sys("can't set parent-death signal", e))?;
        if nix::unistd::getppid() != build_parent {
            return Err(RunError::msg("parent exited before the command started"));
        }
    }
    let daemon = match daemon {
        Some(d) => Some(d),
        None if contained => None,
        None => {
            // Nothing to stop after the command (the passwd files are already unlinked and
            // the mounts vanish with the namespace): become the command, as Charliecloud does.
            // Its PID is ch-run's, signals reach it directly, killing ch-run kills it.
            let mut mask = SigSet::empty();
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask))
                .map_err(|e| RunError::sys("can't read signal mask", e))?;
            let e = exec_child(spec, &new_env, &mask);
            eprintln!("{}", e.report());
            return Ok(e.exit_status());
        }
    };

    // SquashFS: fork, so that the daemon can be stopped when the command ends. A builder's
    // RUN: fork, so that whatever the command leaves running can be ended.
    let mut blocked = SigSet::empty();
    for s in FORWARDED {
        blocked.add(s);
    }
    blocked.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old))
        .map_err(|e| RunError::sys("can't block signals", e))?;
    let parent = nix::unistd::getpid();
    match sys::fork().map_err(|e| RunError::sys("can't fork", e))? {
        sys::Forked::Child => {
            // Killing ch-run kills the command, as when ch-run execs it.
            let e = match nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
                Err(e) => RunError::sys("can't set parent-death signal", e),
                Ok(()) if nix::unistd::getppid() != parent => {
                    RunError::msg("ch-run exited before the command started")
                }
                Ok(()) => exec_child(spec, &new_env, &old),
            };
            eprintln!("{}", e.report());
            sys::exit_now(e.exit_status());
        }
        sys::Forked::Parent(child) => {
            let mut terminated = false;
            let (code, killed_by) = match supervise(
                child,
                &blocked,
                contained.then_some(build_parent),
                &mut terminated,
            ) {
                Ok((code, sig)) => (Ok(code), sig),
                Err(e) => (Err(e), None),
            };
            if contained {
                // The command has exited, or the build died: nothing of the RUN may stay.
                kill_descendants();
                // Charliecloud's ch-run becomes the command, so a command killed by a
                // signal kills it too: die of the same signal, so that ch-image tells
                // `kill -9 $$` ("exited with -9") from `exit 137`, as Charliecloud does.
                if let (Some(sig), None) = (killed_by, daemon.as_ref()) {
                    sys::die_of(sig);
                }
            }
            let Some(mut daemon) = daemon else {
                return code;
            };
            if let Some(group) = &group {
                // Joined peers use this mount too: keep serving it until they are done.
                wait_for_peers(daemon.id(), group, &blocked);
            }
            if let Ok(Some(st)) = daemon.try_wait() {
                // ch-run was told to stop (scancel signals the whole step, the daemon too,
                // which ignores SIGTERM but may be sent anything): the job ends with the
                // command's status.
                if terminated {
                    crate::verbose!("squashfuse_ll exited after a signal to stop ({st})");
                    return code;
                }
                // The filesystem went away under the command (FAQ 11.2.5).
                crate::warn!("squashfuse_ll exited before the command ({st})");
                return Ok(EXIT_SQUASH);
            }
            // SIGKILL: the daemon ignores SIGTERM (see setup::mount_squash); it holds no
            // state to save, and the mount goes with the namespace.
            let _ = nix::sys::signal::kill(Pid::from_raw(daemon.id() as i32), Signal::SIGKILL);
            let _ = daemon.wait();
            code
        }
    }
}

/// What peers of a `--join` group compare before joining: the image path (canonical if
/// it exists) and a digest of the options that shape the container (not those applied
/// per process, like the environment, the working directory or seccomp).
fn join_identity(spec: &RunSpec, uid: u32, gid: u32) -> join::Identity {
    use sha2::Digest;
    let image = spec
        .image
        .path
        .canonicalize()
        .unwrap_or_else(|_| spec.image.path.clone());
    let opts = format!(
        "grove-join-1 {:?} {:?} {:?} uid={uid} gid={gid} tmp={} home={:?} passwd={} mnt={:?} \
         ssh={:?}",
        spec.image.kind,
        spec.write,
        spec.binds,
        spec.private_tmp,
        spec.home.then_some(&spec.user),
        !spec.no_passwd,
        spec.squash_mount,
        spec.ch_ssh,
    );
    join::Identity {
        image: image.to_string_lossy().replace('\n', "?"),
        digest: hex::encode(sha2::Sha256::digest(opts.as_bytes())),
    }
}

/// Final process setup and exec of the command (in ch-run itself, or in the forked child
/// for SquashFS images). Returns only on failure.
fn exec_child(spec: &RunSpec, new_env: &[env::Var], old_mask: &SigSet) -> RunError {
    if spec.quiet >= 2 {
        if let Err(e) = silence(spec.quiet >= 3) {
            return e;
        }
    }
    if spec.seccomp {
        if let Err(e) = seccomp::install() {
            return RunError::sys("can't install seccomp filter", e);
        }
    }
    // Belt and suspenders: setuid/setcap executables gain nothing (ch-run(1)).
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        return RunError::sys("can't set no_new_privs", e);
    }
    // Replace the environment (the process is single-threaded): execvp searches the
    // container's $PATH.
    let old: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in old {
        std::env::remove_var(k);
    }
    for (k, v) in new_env {
        if !k.is_empty() && !k.contains(&b'=') && !k.contains(&0) && !v.contains(&0) {
            std::env::set_var(OsStr::from_bytes(k), OsStr::from_bytes(v));
        }
    }
    let argv: Result<Vec<CString>, _> = spec
        .cmd
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect();
    let Ok(argv) = argv else {
        return RunError::msg("argument contains NUL byte");
    };
    if spec.image.kind == ImageKind::Squash {
        warm::executable(&spec.cmd[0], std::env::var_os("PATH").as_deref());
    }
    crate::verbose!(
        "executing: {}",
        spec.cmd
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None) {
        return RunError::sys("can't restore signal mask", e);
    }
    if let Err(e) = sys::default_sigpipe() {
        return RunError::sys("can't reset SIGPIPE", e);
    }
    let e = nix::unistd::execvp(&argv[0], &argv)
        .err()
        .unwrap_or(nix::errno::Errno::UnknownErrno);
    RunError::exec(
        format!("can't execve(2): {}", spec.cmd[0].to_string_lossy()),
        e,
    )
}

fn silence(stderr_too: bool) -> Result<(), RunError> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| RunError::io("can't open /dev/null", &e))?;
    let mut fds = vec![1];
    if stderr_too {
        fds.push(2);
    }
    for fd in fds {
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(|e| RunError::sys("can't dup2", e))?;
    }
    Ok(())
}

/// Processes other than `exclude` whose mount namespace is `ns` (device, inode), from
/// `procs`: (PID, its namespace).
pub fn others_in_namespace(
    ns: (u64, u64),
    procs: impl IntoIterator<Item = (u32, (u64, u64))>,
    exclude: &[u32],
) -> Vec<u32> {
    procs
        .into_iter()
        .filter(|(pid, n)| *n == ns && !exclude.contains(pid))
        .map(|(pid, _)| pid)
        .collect()
}

/// The mount namespace of each process in /proc that we may inspect.
fn mount_namespaces() -> Vec<(u32, (u64, u64))> {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let m = std::fs::metadata(e.path().join("ns/mnt")).ok()?;
            Some((pid, (m.dev(), m.ino())))
        })
        .collect()
}

/// How long a SquashFS winner whose group is still short of peers keeps serving its mount
/// after its command ends, for peers started with it but slower to arrive (ranks of
/// `/bin/true` end before their peers start), before it closes the group.
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// After the winner's command ends in a `--join` group with a SquashFS image: wait until
/// no process but ch-run, the daemon and the group's holder is left in the mount namespace
/// (the peers' commands run from the same FUSE mount) and the group is complete, or closed
/// to later peers after [`JOIN_GRACE`]; or until ch-run is sent a signal to stop.
fn wait_for_peers(daemon: u32, group: &join::Group, blocked: &SigSet) {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self/ns/mnt") else {
        return;
    };
    let ns = (me.dev(), me.ino());
    let exclude = [std::process::id(), daemon, group.holder() as u32];
    let idle = || others_in_namespace(ns, mount_namespaces(), &exclude).is_empty();
    let ended = std::time::Instant::now();
    let mut told = false;
    loop {
        let others = others_in_namespace(ns, mount_namespaces(), &exclude);
        if others.is_empty() && group.close_if(ended.elapsed() >= JOIN_GRACE, idle) {
            return;
        }
        if !told && !others.is_empty() {
            crate::verbose!(
                "waiting for {} peer process(es) before unmounting the image",
                others.len()
            );
            told = true;
        }
        match sys::sigwait(blocked, Some(Duration::from_millis(100))) {
            Ok(Some((sig, _))) if sig != Signal::SIGCHLD as i32 => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Wait for `child`, forwarding signals; the exit status as a shell reports it, and the
/// signal that killed the child, if one did. `terminated` is set if ch-run was sent a
/// signal that ends a job (TERM, INT, HUP, QUIT).
fn supervise(
    child: Pid,
    blocked: &SigSet,
    parent: Option<Pid>,
    terminated: &mut bool,
) -> Result<(i32, Option<Signal>), RunError> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok((code, None)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok((128 + sig as i32, Some(sig))),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RunError::sys("can't wait for child", e)),
        }
        let Some((sig, from_kernel)) =
            sys::sigwait(blocked, None).map_err(|e| RunError::sys("can't wait for signal", e))?
        else {
            continue;
        };
        if sig == Signal::SIGCHLD as i32 {
            continue;
        }
        let ends = [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ]
        .iter()
        .any(|s| *s as i32 == sig);
        *terminated |= ends;
        // A builder's RUN whose build died (the parent-death signal, or any signal after
        // it): end now, the caller kills what is left.
        if parent.is_some_and(|p| nix::unistd::getppid() != p) {
            return Ok((128 + Signal::SIGKILL as i32, None));
        }
        // A builder's RUN told to end (the build was interrupted: it passes SIGINT and
        // SIGTERM on as SIGTERM; nothing else signals a RUN's ch-run, in a process group
        // of its own): end now, whatever the command does with the signal, and die of it.
        if ends && parent.is_some() && !from_kernel {
            return Ok((128 + sig, Signal::try_from(sig).ok()));
        }
        // A terminal's signal already reached the child (same process group).
        if from_kernel {
            continue;
        }
        if let Ok(s) = Signal::try_from(sig) {
            crate::verbose!("forwarding {s} to {child}");
            let _ = nix::sys::signal::kill(child, s);
        }
    }
}

/// Kill every descendant of this process (a child subreaper, so orphans of the command
/// are its children) with SIGKILL and reap them, until it has no child left. Processes
/// forked meanwhile are caught on the next round, since their parents' deaths make them
/// this process's children.
fn kill_descendants() {
    let me = nix::unistd::getpid().as_raw();
    loop {
        for pid in descendants(me, &parent_pids()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match waitpid(Pid::from_raw(-1), None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return, // ECHILD: none left
        }
    }
}

/// (PID, parent PID) of every process in /proc.
fn parent_pids() -> Vec<(i32, i32)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read(e.path().join("stat")).ok()?;
            Some((pid, stat_ppid(&stat)?))
        })
        .collect()
}

/// The parent PID field of a /proc/PID/stat line (the fourth field; the command name
/// before it is in parentheses and may hold spaces and parentheses).
fn stat_ppid(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every descendant of `root` in a (PID, parent PID) list.
fn descendants(root: i32, procs: &[(i32, i32)]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for (pid, ppid) in procs {
            if *ppid == p && *pid != root && !out.contains(pid) {
                out.push(*pid);
                todo.push(*pid);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_parent_links_and_stat_names_may_hold_parens() {
        let procs = [(1, 0), (10, 1), (11, 10), (12, 11), (13, 1), (14, 12)];
        let mut d = descendants(10, &procs);
        d.sort();
        assert_eq!(d, vec![11, 12, 14]);
        assert!(descendants(13, &procs).is_empty());
        assert_eq!(stat_ppid(b"42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(stat_ppid(b"garbage"), None);
    }

    #[test]
    fn others_in_namespace_excludes_ch_run_and_the_daemon() {
        let ns = (5, 4026531840);
        let procs = vec![
            (10, ns),
            (11, ns),
            (12, (5, 4026531841)),
            (13, ns),
            (14, (6, 4026531840)),
        ];
        assert_eq!(others_in_namespace(ns, procs.clone(), &[10, 11]), vec![13]);
        assert!(others_in_namespace(ns, procs, &[10, 11, 13]).is_empty());
    }

    #[test]
    fn programs_are_found_in_the_standard_directories_without_path() {
        assert_eq!(
            find_in(None, "sh"),
            find_in(Some(OsStr::new(STANDARD_PATH)), "sh")
        );
        assert!(find_in(None, "sh").is_some());
        assert_eq!(find_in(Some(OsStr::new("/nonexistent")), "sh"), None);
    }

    #[test]
    fn ids_are_non_negative_decimal_numbers() {
        assert_eq!(parse_id("0"), Ok(0));
        assert_eq!(parse_id("65534"), Ok(65534));
        assert_eq!(parse_id("+7"), Ok(7));
        assert_eq!(parse_id("2147483647"), Ok(2147483647));
        assert_eq!(parse_id("3000000000"), Err(IdError::OutOfRange));
        assert_eq!(parse_id("abc"), Err(IdError::NoDigits));
        assert_eq!(parse_id(""), Err(IdError::NoDigits));
        assert_eq!(parse_id("-5"), Err(IdError::Negative));
        assert_eq!(parse_id("-2147483648"), Err(IdError::Negative));
        assert_eq!(parse_id("-2147483649"), Err(IdError::OutOfRange));
        assert_eq!(parse_id("-9223372036854775809"), Err(IdError::OutOfRange));
        assert_eq!(parse_id("5x"), Err(IdError::TrailingCharacters));
        assert_eq!(parse_id("4294967295"), Err(IdError::OutOfRange));
        assert_eq!(parse_id("99999999999"), Err(IdError::OutOfRange));
    }

    #[test]
    fn user_names_must_be_one_path_component() {
        for ok in ["alice", "a.b", "svc-ci_1", "..x"] {
            assert!(valid_user_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../../etc", "x/y", "/"] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn storage_path_maps_slash_and_colon() {
        assert_eq!(
            storage_image_path(Path::new("/s"), "example.com:5050/a/b:tag"),
            PathBuf::from("/s/img/example.com+5050%a%b+tag")
        );
    }

    #[test]
    fn locate_image_kinds() {
        let t = tempfile::tempdir().expect("tempdir");
        let storage = t.path().join("storage");
        std::fs::create_dir_all(storage.join("img/foo+1")).expect("mkdir");
        let named = locate_image("foo:1", &storage, false, false).expect("named");
        assert!(named.by_name && named.kind == ImageKind::Dir);
        assert_eq!(
            locate_image("foo:1", &storage, true, false)
                .unwrap_err()
                .message(),
            "--write invalid when running by name"
        );
        let dir = t.path().join("dir");
        std::fs::create_dir(&dir).expect("mkdir");
        let d = locate_image(&dir.to_string_lossy(), &storage, true, false).expect("dir");
        assert_eq!((d.kind, d.by_name), (ImageKind::Dir, false));
        let sq = t.path().join("x.sqfs");
        std::fs::write(&sq, b"hsqs\0\0").expect("write");
        assert_eq!(
            locate_image(&sq.to_string_lossy(), &storage, false, false)
                .expect("sq")
                .kind,
            ImageKind::Squash
        );
        std::fs::write(&sq, b"junk").expect("write");
        assert!(locate_image(&sq.to_string_lossy(), &storage, false, false)
            .unwrap_err()
            .message()
            .starts_with("unknown image type"));
        let inside = storage.join("img/foo+1").to_string_lossy().into_owned();
        assert!(locate_image(&inside, &storage, false, false)
            .unwrap_err()
            .message()
            .contains("from storage"));
    }
}
