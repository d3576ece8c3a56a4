//! `ch-fromhost`: inject host files (usually shared libraries: MPI, interconnect or GPU
//! drivers) into an image, as Charliecloud's `ch-fromhost(1)` does.
//!
//! Planning is pure: [`plan`] decides where each file goes from its host path (Charliecloud's
//! rules: a path containing `/bin` or `/sbin` goes to `/usr/bin`; one containing `/lib` or
//! ending in `.so` goes to the first directory the image's `ldconfig` reports; anything else
//! needs `--dest`) and whether `ldconfig` must run. Executing it differs by image kind:
//! - a directory image is changed in place (files copied, dereferencing symlinks and keeping
//!   modes and times, then `ch-run -w IMAGE -- /sbin/ldconfig`);
//! - an image in the store gets a new commit made by `ch-image build` from a generated
//!   Dockerfile (`COPY` of each file, then `RUN /sbin/ldconfig`), so `ch-image history`
//!   shows what was injected and the previous state stays reachable as `IMAGE~1`.
//!
//! Runs the `ch-run` and `ch-image` binaries installed beside the calling program; knows
//! nothing of the store's internals.

use crate::error::{IoError, IoResultExt};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of `ch-fromhost`.
#[derive(Debug, thiserror::Error)]
pub enum FromhostError {
    #[error("no destination for: {0} (give --dest)")]
    NoDestination(PathBuf),
    #[error("not an absolute path: {0}")]
    RelativeDest(PathBuf),
    #[error("paths can't contain newlines: {0}")]
    Newline(PathBuf),
    #[error("empty file list")]
    NothingToInject,
    #[error("cannot read file: {path}")]
    ReadList {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("command failed: {cmd}: {detail}")]
    Command { cmd: String, detail: String },
    #[error("nvidia-container-cli failed; does this host have GPUs? {detail}")]
    Nvidia { detail: String },
    #[error("can't infer shared library destination: {0}")]
    Ldconfig(String),
    #[error("not a directory: {0}")]
    NotDir(PathBuf),
    #[error("image not a directory: {0}")]
    ImageNotDir(PathBuf),
    #[error("cannot inject: {path}")]
    Inject {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("can't {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ldconfig error in {image}: {detail}")]
    LdconfigRun { image: String, detail: String },
    #[error("ch-image build of the injection into {image} failed")]
    Build { image: String },
}

impl From<IoError> for FromhostError {
    fn from(e: IoError) -> Self {
        FromhostError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
}

/// What a host path looks like, by Charliecloud's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Contains `/bin` or `/sbin`: an executable, for `/usr/bin`.
    Executable,
    /// Contains `/lib` or ends in `.so`: a shared library, for the `ldconfig` directory.
    Library,
    /// Anything else: needs `--dest`.
    Other,
}

/// Classify a host path (the executable test first, as Charliecloud does).
pub fn classify(path: &Path) -> Kind {
    let s = path.to_string_lossy();
    if s.contains("/bin") || s.contains("/sbin") {
        Kind::Executable
    } else if s.contains("/lib") || s.ends_with(".so") {
        Kind::Library
    } else {
        Kind::Other
    }
}

/// One file to inject, as given: its host path and the `--dest` in force when it was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub path: PathBuf,
    pub dest: Option<PathBuf>,
}

/// One planned copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    pub source: PathBuf,
    /// Directory inside the image (absolute).
    pub dest_dir: PathBuf,
    /// The destination came from the rules, not `--dest`.
    pub inferred: bool,
}

/// Whether a shared library has no `--dest` (so the image's library directory must be
/// asked for).
pub fn needs_lib_dest(wanted: &[Wanted]) -> bool {
    wanted
        .iter()
        .any(|w| w.dest.is_none() && classify(&w.path) == Kind::Library)
}

/// Decide every file's destination. `lib_dest` is the image's first `ldconfig` directory
/// (needed only when a library has no `--dest`).
pub fn plan(wanted: &[Wanted], lib_dest: Option<&Path>) -> Result<Vec<Injection>, FromhostError> {
    if wanted.is_empty() {
        return Err(FromhostError::NothingToInject);
    }
    wanted
        .iter()
        .map(|w| {
            if w.path.to_string_lossy().contains('\n') {
                return Err(FromhostError::Newline(w.path.clone()));
            }
            let (dest_dir, inferred) = match (&w.dest, classify(&w.path)) {
                (Some(d), _) => (d.clone(), false),
                (None, Kind::Executable) => (PathBuf::from("/usr/bin"), true),
                (None, Kind::Library) => match lib_dest {
                    Some(d) => (d.to_path_buf(), true),
                    None => return Err(FromhostError::NoDestination(w.path.clone())),
                },
                (None, Kind::Other) => return Err(FromhostError::NoDestination(w.path.clone())),
            };
            if !dest_dir.is_absolute() {
                return Err(FromhostError::RelativeDest(dest_dir));
            }
            Ok(Injection {
                source: w.path.clone(),
                dest_dir,
                inferred,
            })
        })
        .collect()
}

/// Paths listed one per line (a `--file` or the output of `--cmd`); blank lines ignored.
pub fn parse_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// The first directory in `ldconfig -Nv` output (lines `DIR: (from …)`): the image's
/// first-priority library directory.
pub fn lib_dest_from_ldconfig(stdout: &str) -> Result<PathBuf, FromhostError> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with('/'))
        .ok_or_else(|| FromhostError::Ldconfig("empty path from ldconfig".into()))?;
    let dir = line.split(':').next().unwrap_or(line).trim();
    if dir.is_empty() || !dir.starts_with('/') {
        return Err(FromhostError::Ldconfig(format!(
            "bad path from ldconfig: {dir}"
        )));
    }
    Ok(PathBuf::from(dir))
}

/// Run `cmd` with `sh -c` and return its standard output (`--cmd`).
pub fn run_list_command(cmd: &str) -> Result<Vec<PathBuf>, FromhostError> {
    let out =
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map_err(|e| FromhostError::Command {
                cmd: cmd.to_string(),
                detail: e.to_string(),
            })?;
    if !out.status.success() {
        return Err(FromhostError::Command {
            cmd: cmd.to_string(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// The file whose presence tells Charliecloud's `--cray-mpi` it runs on a Cray.
pub const CRAY_SENTINEL: &str = "/etc/opt/cray/release/cle-release";

/// Why `--cray-mpi` can't be done here: Charliecloud's "are you on a Cray?" when
/// [`CRAY_SENTINEL`] is missing, else that Grove does not inject Cray MPI.
pub fn cray_mpi_refusal() -> String {
    if Path::new(CRAY_SENTINEL).exists() {
        "--cray-mpi: Cray MPI injection is not supported by grove".to_string()
    } else {
        format!("not found: {CRAY_SENTINEL}: are you on a Cray?")
    }
}

/// The files `nvidia-container-cli list --binaries --libraries` names (`--nvidia`).
pub fn nvidia_files() -> Result<Vec<PathBuf>, FromhostError> {
    // Looked up as a shell does (directories we can't search are passed over), so that
    // a missing program gets the shell's words, as in Charliecloud.
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nvidia-container-cli"))
            .find(|p| p.is_file())
    });
    let Some(cli) = found else {
        return Err(FromhostError::Nvidia {
            detail: "nvidia-container-cli: command not found".to_string(),
        });
    };
    let out = Command::new(&cli)
        .args(["list", "--binaries", "--libraries"])
        .output()
        .map_err(|e| FromhostError::Nvidia {
            detail: format!("can't execute {}: {e}", cli.display()),
        })?;
    if !out.status.success() {
        return Err(FromhostError::Nvidia {
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(parse_list(&String::from_utf8_lossy(&out.stdout)))
}

/// Which image to change.
#[derive(Debug, Clone)]
pub enum Target {
    /// An image directory, changed in place.
    Dir(PathBuf),
    /// An image in the store (by name), changed by a new commit.
    Stored { storage: PathBuf, name: String },
}

impl Target {
    fn label(&self) -> String {
        match self {
            Target::Dir(d) => d.display().to_string(),
            Target::Stored { name, .. } => name.clone(),
        }
    }

    /// `ch-run` arguments naming the image.
    fn ch_run_args(&self) -> Vec<OsString> {
        match self {
            Target::Dir(d) => vec![d.clone().into()],
            Target::Stored { storage, name } => {
                vec!["-s".into(), storage.clone().into(), name.into()]
            }
        }
    }
}

/// The sibling binaries used.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ch_run: PathBuf,
    pub ch_image: PathBuf,
}

impl Tools {
    /// `ch-run` and `ch-image` beside the running executable.
    pub fn beside_self() -> Result<Tools, FromhostError> {
        let exe = std::env::current_exe().at("find", Path::new("own executable"))?;
        Ok(Tools {
            ch_run: exe.with_file_name("ch-run"),
            ch_image: exe.with_file_name("ch-image"),
        })
    }
}

/// Ask the image's `ldconfig` for its first library directory. Its warnings (usually
/// harmless) are shown only at `-vv`.
pub fn infer_lib_dest(tools: &Tools, target: &Target) -> Result<PathBuf, FromhostError> {
    crate::verbose!("asking ldconfig for inferred shared library destination");
    let out = Command::new(&tools.ch_run)
        .args(target.ch_run_args())
        .args(["--", "/sbin/ldconfig", "-Nv"])
        .output()
        .at("execute", &tools.ch_run)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for l in stderr.lines() {
        crate::debug!("{l}");
    }
    if !out.status.success() {
        return Err(FromhostError::Ldconfig(format!(
            "ch-run {} -- /sbin/ldconfig -Nv: {}: {}",
            target.label(),
            out.status,
            stderr.trim()
        )));
    }
    let dest = lib_dest_from_ldconfig(&String::from_utf8_lossy(&out.stdout))?;
    crate::verbose!("inferred shared library destination: {}", dest.display());
    Ok(dest)
}

/// Copy `src` (following symlinks) into directory `dir`, keeping its mode and times.
fn copy_into(src: &Path, dir: &Path) -> Result<PathBuf, FromhostError> {
    let name = src
        .file_name()
        .ok_or_else(|| FromhostError::NoDestination(src.to_path_buf()))?;
    let dst = dir.join(name);
    let md = std::fs::metadata(src).map_err(|source| FromhostError::Inject {
        path: src.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(FromhostError::Io {
            action: "inject (not a regular file)",
            path: src.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    // Replace, not overwrite in place: the old file may be hard-linked or in use.
    let _ = std::fs::remove_file(&dst);
    std::fs::copy(src, &dst).at("copy to", &dst)?;
    let times = std::fs::FileTimes::new()
        .set_accessed(md.accessed().at("stat", src)?)
        .set_modified(md.modified().at("stat", src)?);
    std::fs::File::options()
        .write(true)
        .open(&dst)
        .and_then(|f| f.set_times(times))
        .at("set times of", &dst)?;
    Ok(dst)
}

/// Inject into a directory image in place, then run `ldconfig` in it when `ldconfig`.
fn inject_dir(
    tools: &Tools,
    image: &Path,
    plan: &[Injection],
    ldconfig: bool,
) -> Result<(), FromhostError> {
    use std::os::unix::fs::PermissionsExt;
    for inj in plan {
        let rel = inj.dest_dir.strip_prefix("/").unwrap_or(&inj.dest_dir);
        // Symlinks in the image are followed as the container sees them (`/lib ->
        // usr/lib` in merged-/usr images; an absolute link restarts at the image, `..`
        // stops there), never out to the host's files.
        let dir = match crate::run::resolve::resolve(image, &inj.dest_dir) {
            Ok(crate::run::resolve::Resolved::Exists(p)) => p,
            _ => image.join(rel),
        };
        let md =
            std::fs::symlink_metadata(&dir).map_err(|_| FromhostError::NotDir(image.join(rel)))?;
        if !md.is_dir() {
            return Err(FromhostError::NotDir(dir));
        }
        if md.permissions().mode() & 0o200 == 0 {
            crate::info!("{} not writeable; fixing", dir.display());
            let mut p = md.permissions();
            p.set_mode(p.mode() | 0o200);
            std::fs::set_permissions(&dir, p).at("chmod u+w", &dir)?;
        }
        crate::verbose!(
            "{} -> {}{}",
            inj.source.display(),
            inj.dest_dir.display(),
            if inj.inferred { " (inferred)" } else { "" }
        );
        copy_into(&inj.source, &dir)?;
    }
    if ldconfig {
        crate::verbose!("running ldconfig");
        let out = Command::new(&tools.ch_run)
            .arg("-w")
            .arg(image)
            .args(["--", "/sbin/ldconfig"])
            .output()
            .at("execute", &tools.ch_run)?;
        if !out.status.success() {
            return Err(FromhostError::LdconfigRun {
                image: image.display().to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// A Dockerfile string in JSON form (`COPY ["a", "b"]`).
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The generated Dockerfile for a stored image: one `COPY` per file (named `N/BASENAME` in
/// the generated context), then `RUN ["/sbin/ldconfig"]` when `ldconfig`.
pub fn dockerfile(base: &str, plan: &[Injection], ldconfig: bool) -> String {
    let mut df = format!("# ch-fromhost: host files injected into {base}\nFROM {base}\n");
    for (i, inj) in plan.iter().enumerate() {
        let name = inj
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut dest = inj.dest_dir.to_string_lossy().into_owned();
        if !dest.ends_with('/') {
            dest.push('/');
        }
        df += &format!(
            "COPY [{}, {}]\n",
            json_str(&format!("{i}/{name}")),
            json_str(&dest)
        );
    }
    if ldconfig {
        df += "RUN [\"/sbin/ldconfig\"]\n";
    }
    df
}

/// Inject into an image in the store: a generated context and Dockerfile built by
/// `ch-image build -t NAME`, so the injection is a new commit of the image.
fn inject_stored(
    tools: &Tools,
    storage: &Path,
    name: &str,
    plan: &[Injection],
    ldconfig: bool,
) -> Result<(), FromhostError> {
    let tmp = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let ctx = tmp.join(format!("ch-fromhost.{}", std::process::id()));
    std::fs::create_dir_all(&ctx).at("create", &ctx)?;
    let result = (|| {
        for (i, inj) in plan.iter().enumerate() {
            let d = ctx.join(i.to_string());
            std::fs::create_dir(&d).at("create", &d)?;
            crate::verbose!(
                "{} -> {}{}",
                inj.source.display(),
                inj.dest_dir.display(),
                if inj.inferred { " (inferred)" } else { "" }
            );
            copy_into(&inj.source, &d)?;
        }
        // `FROM IMAGE` built as IMAGE: the hidden `--extend` lets the build name its
        // output in FROM (an error otherwise, as in Charliecloud), so the injection is
        // recorded as IMAGE's own steps, with no temporary name in its provenance.
        let df_path = ctx.join("Dockerfile");
        std::fs::write(&df_path, dockerfile(name, plan, ldconfig)).at("write", &df_path)?;
        let st = Command::new(&tools.ch_image)
            .arg("-s")
            .arg(storage)
            .args(["build", "--extend", "-t", name, "-f"])
            .arg(&df_path)
            .arg(&ctx)
            .status()
            .at("execute", &tools.ch_image)?;
        if !st.success() {
            return Err(FromhostError::Build {
                image: name.to_string(),
            });
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&ctx);
    result
}

/// Everything `ch-fromhost` was asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    pub wanted: Vec<Wanted>,
    pub print_lib: bool,
    pub no_ldconfig: bool,
}

/// What [`fromhost`] produced: the library directory when `--print-lib` asked for it.
pub fn fromhost(
    tools: &Tools,
    target: &Target,
    req: &Request,
) -> Result<Option<PathBuf>, FromhostError> {
    if let Target::Dir(d) = target {
        if !d.is_dir() {
            return Err(FromhostError::ImageNotDir(d.clone()));
        }
    }
    let lib_dest = if req.print_lib || needs_lib_dest(&req.wanted) {
        Some(infer_lib_dest(tools, target)?)
    } else {
        None
    };
    if req.print_lib {
        return Ok(lib_dest);
    }
    let plan = plan(&req.wanted, lib_dest.as_deref())?;
    let libs = req
        .wanted
        .iter()
        .any(|w| classify(&w.path) == Kind::Library);
    let ldconfig = libs && !req.no_ldconfig;
    if !ldconfig {
        crate::verbose!("not running ldconfig");
    }
    crate::verbose!("injecting into image: {}", target.label());
    match target {
        Target::Dir(d) => inject_dir(tools, d, &plan, ldconfig)?,
        Target::Stored { storage, name } => inject_stored(tools, storage, name, &plan, ldconfig)?,
    }
    Ok(None)
}

/// One file option, in command-line order (`--dest` applies to the files named after it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileArg {
    Cmd(String),
    File(PathBuf),
    Path(PathBuf),
    Nvidia,
    Dest(PathBuf),
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    pub files: Vec<FileArg>,
    pub image: Option<String>,
    pub storage: Option<PathBuf>,
    pub print_lib: bool,
    pub no_ldconfig: bool,
    pub verbose: u8,
    pub quiet: u8,
    pub help: bool,
    pub version: bool,
    /// `--cray-mpi` (Charliecloud 0.31): refused, naming why (see [`CRAY_SENTINEL`]).
    pub cray_mpi: bool,
}

/// Parse `ch-fromhost`'s arguments, keeping the order of file options (clap would lose it
/// between different options). Errors are Charliecloud's usage messages.
pub fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            let v = match inline.clone() {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("option requires an argument: {name}"))?,
            };
            if v.is_empty() {
                return Err(format!("{name} must not be empty"));
            }
            Ok(v)
        };
        match opt {
            "-c" | "--cmd" => a.files.push(FileArg::Cmd(value("--cmd")?)),
            "-f" | "--file" => a.files.push(FileArg::File(value("--file")?.into())),
            "-p" | "--path" => a.files.push(FileArg::Path(value("--path")?.into())),
            "-d" | "--dest" => a.files.push(FileArg::Dest(value("--dest")?.into())),
            "-s" | "--storage" => a.storage = Some(value("--storage")?.into()),
            "--nvidia" => a.files.push(FileArg::Nvidia),
            "--cray-mpi" => a.cray_mpi = true,
            // --lib-path: Charliecloud 0.31's name.
            "--print-lib" | "--lib-path" => a.print_lib = true,
            "--no-ldconfig" => a.no_ldconfig = true,
            "-v" | "--verbose" => a.verbose += 1,
            "-q" | "--quiet" => a.quiet += 1,
            "-h" | "--help" | "-?" => a.help = true,
            "--version" => a.version = true,
            "--cray-cxi" | "--cray-gni" | "--print-fi" | "--print-cray-fi" => {
                return Err(format!(
                    "{opt}: libfabric injection is not supported by grove"
                ))
            }
            o if o.starts_with('-') && o.len() > 1 => return Err(format!("invalid option: {o}")),
            img => {
                if img.is_empty() {
                    return Err("image path must not be empty".into());
                }
                if let Some(prev) = &a.image {
                    return Err(format!("duplicate image: {img} (already {prev})"));
                }
                a.image = Some(img.to_string());
            }
        }
    }
    Ok(a)
}

/// The files named by the file options, each with the `--dest` in force.
pub fn collect_wanted(files: &[FileArg]) -> Result<Vec<Wanted>, FromhostError> {
    let mut dest = None;
    let mut wanted = Vec::new();
    let mut add = |paths: Vec<PathBuf>, dest: &Option<PathBuf>| {
        wanted.extend(paths.into_iter().map(|path| Wanted {
            path,
            dest: dest.clone(),
        }))
    };
    for f in files {
        match f {
            FileArg::Dest(d) => dest = Some(d.clone()),
            FileArg::Path(p) => add(vec![p.clone()], &dest),
            FileArg::File(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|source| FromhostError::ReadList {
                        path: p.clone(),
                        source,
                    })?;
                add(parse_list(&text), &dest)
            }
            FileArg::Cmd(c) => add(run_list_command(c)?, &dest),
            FileArg::Nvidia => add(nvidia_files()?, &dest),
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(p: &str, d: Option<&str>) -> Wanted {
        Wanted {
            path: p.into(),
            dest: d.map(PathBuf::from),
        }
    }

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn dest_applies_to_the_files_named_after_it() {
        let a = parse_args(&argv(&[
            "-p",
            "/a/lib/x.so",
            "--dest=/etc",
            "-p",
            "/b.conf",
            "-v",
            "img",
        ]))
        .expect("parse");
        assert_eq!(a.image.as_deref(), Some("img"));
        assert_eq!(a.verbose, 1);
        let w = collect_wanted(&a.files).expect("wanted");
        assert_eq!(w, [w_("/a/lib/x.so", None), w_("/b.conf", Some("/etc"))]);
    }

    fn w_(p: &str, d: Option<&str>) -> Wanted {
        w(p, d)
    }

    #[test]
    fn bad_arguments_get_charliecloud_messages() {
        assert_eq!(
            parse_args(&argv(&["-p"])).expect_err("missing"),
            "option requires an argument: --path"
        );
        assert_eq!(
            parse_args(&argv(&["--dest", ""])).expect_err("empty"),
            "--dest must not be empty"
        );
        assert_eq!(
            parse_args(&argv(&["a", "b"])).expect_err("two images"),
            "duplicate image: b (already a)"
        );
        assert_eq!(
            parse_args(&argv(&["--bogus"])).expect_err("bad"),
            "invalid option: --bogus"
        );
    }

    #[test]
    fn paths_are_classified_as_charliecloud_does() {
        assert_eq!(classify(Path::new("/usr/bin/nvidia-smi")), Kind::Executable);
        assert_eq!(classify(Path::new("/opt/x/sbin/tool")), Kind::Executable);
        // The executable test comes first: a library under a bin directory is one.
        assert_eq!(classify(Path::new("/opt/bin/libx.so")), Kind::Executable);
        assert_eq!(
            classify(Path::new("/usr/lib64/libmpi.so.40")),
            Kind::Library
        );
        assert_eq!(classify(Path::new("/opt/plugins/fabric.so")), Kind::Library);
        assert_eq!(classify(Path::new("/etc/cray/config")), Kind::Other);
    }

    #[test]
    fn destinations_follow_rules_and_dest_overrides() {
        let wanted = [
            w("/usr/bin/a", None),
            w("/usr/lib/libb.so.1", None),
            w("/etc/c.conf", Some("/etc")),
            w("/usr/lib/libd.so", Some("/opt/lib")),
        ];
        let p = plan(&wanted, Some(Path::new("/usr/local/lib"))).expect("plan");
        let dests: Vec<_> = p
            .iter()
            .map(|i| (i.dest_dir.to_string_lossy().into_owned(), i.inferred))
            .collect();
        assert_eq!(
            dests,
            [
                ("/usr/bin".to_string(), true),
                ("/usr/local/lib".to_string(), true),
                ("/etc".to_string(), false),
                ("/opt/lib".to_string(), false),
            ]
        );
    }

    #[test]
    fn a_file_with_no_rule_and_no_dest_is_an_error_naming_it() {
        let e = plan(&[w("/etc/foo.conf", None)], None).expect_err("no dest");
        assert_eq!(
            e.to_string(),
            "no destination for: /etc/foo.conf (give --dest)"
        );
        let e = plan(&[w("/etc/foo.conf", Some("etc"))], None).expect_err("relative");
        assert_eq!(e.to_string(), "not an absolute path: etc");
        assert!(matches!(
            plan(&[], None),
            Err(FromhostError::NothingToInject)
        ));
    }

    #[test]
    fn ldconfig_output_gives_the_first_directory() {
        let out = "/usr/local/lib: (from /etc/ld.so.conf.d/libc.conf:2)\n\
                   /lib/x86_64-linux-gnu: (from /etc/ld.so.conf.d/x86_64-linux-gnu.conf:4)\n\
                   \tlibc.so.6 -> libc.so.6\n";
        assert_eq!(
            lib_dest_from_ldconfig(out).expect("dir"),
            PathBuf::from("/usr/local/lib")
        );
        assert!(lib_dest_from_ldconfig("\tlibc.so.6 -> x\n").is_err());
    }

    #[test]
    fn lists_skip_blank_lines() {
        assert_eq!(
            parse_list("/a\n\n  /b  \n"),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn generated_dockerfile_copies_each_file_then_runs_ldconfig() {
        let p = plan(
            &[
                w("/h/lib/libfoo.so", None),
                w("/h/x \"q\".conf", Some("/etc")),
            ],
            Some(Path::new("/usr/local/lib")),
        )
        .expect("plan");
        assert_eq!(
            dockerfile("img", &p, true),
            "# ch-fromhost: host files injected into img\nFROM img\n\
             COPY [\"0/libfoo.so\", \"/usr/local/lib/\"]\n\
             COPY [\"1/x \\\"q\\\".conf\", \"/etc/\"]\n\
             RUN [\"/sbin/ldconfig\"]\n"
        );
    }
}
