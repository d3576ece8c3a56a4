//! ch-run: run a command in a container image (Charliecloud-compatible options).
//!
//! Thin: parse arguments, resolve settings, call [`grove::run::run`], render errors in
//! ch-run's format (`ch-run[PID]: error: ...`) and pick the exit code.

#![forbid(unsafe_code)]

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use grove::run::{self, Bind, EnvArg, EnvSource, Join, RunError, RunSpec, WriteMode};
use grove::store::layout::{self, RelativeVariable};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "ch-run",
    about = "Run a command in a Charliecloud container.",
    override_usage = "ch-run [OPTION...] IMAGE -- CMD [ARG...]",
    after_help = "Example:\n\n  $ ch-run /data/foo -- echo hello\n  hello\n\nYou cannot use this program to actually change your UID.",
    disable_help_flag = true,
    disable_version_flag = true,
    // As with Charliecloud's argp: a repeated option's last value wins (wrappers append).
    args_override_self = true
)]
pub(crate) struct Cli {
    /// mount SRC at guest DST (default: same as SRC)
    #[arg(short = 'b', long = "bind", value_name = "SRC[:DST]", action = ArgAction::Append)]
    bind: Vec<OsString>,
    /// bind ch-ssh into image
    #[arg(long = "ch-ssh")]
    ch_ssh: bool,
    /// initial working directory in container
    #[arg(short = 'c', long = "cd", value_name = "DIR")]
    cd: Option<PathBuf>,
    /// don't expand $ in --set-env input (applies to later --set-env)
    #[arg(long = "env-no-expand")]
    env_no_expand: bool,
    /// exit successfully if FEAT is enabled (extglob, seccomp, squash, overlayfs,
    /// tmpfs-xattrs)
    #[arg(long, value_name = "FEAT")]
    feature: Option<String>,
    /// run as GID within container
    #[arg(short = 'g', long, value_name = "GID", allow_hyphen_values = true)]
    gid: Option<String>,
    /// mount host $HOME at guest /home/$USER
    #[arg(long)]
    home: bool,
    /// deprecated (not binding the home directory is the default); ignored
    #[arg(long = "no-home", hide = true)]
    no_home: bool,
    /// print a short usage message and exit
    #[arg(long)]
    usage: bool,
    /// use same container as peer ch-run
    #[arg(short = 'j', long)]
    join: bool,
    /// number of join peers (implies --join)
    #[arg(long = "join-ct", value_name = "N", allow_hyphen_values = true)]
    join_ct: Option<String>,
    /// join a namespace using a PID
    #[arg(long = "join-pid", value_name = "PID", allow_hyphen_values = true)]
    join_pid: Option<String>,
    /// label for peer group (implies --join)
    #[arg(long = "join-tag", value_name = "TAG")]
    join_tag: Option<String>,
    /// SquashFS mount point
    #[arg(short = 'm', long = "mount", value_name = "DIR")]
    mount: Option<OsString>,
    /// don't bind-mount /etc/{passwd,group}
    #[arg(long = "no-passwd")]
    no_passwd: bool,
    /// print less output (can be repeated)
    #[arg(short = 'q', long = "quiet", action = ArgAction::Count)]
    quiet: u8,
    /// set DIR as storage directory
    #[arg(short = 's', long = "storage", value_name = "DIR")]
    storage: Option<PathBuf>,
    /// (internal, for ch-image build) lower directory of the image union, top first
    #[arg(long = "lower", value_name = "DIR", action = ArgAction::Append, hide = true)]
    lower: Vec<PathBuf>,
    /// (internal, for ch-image build) overlay upper directory receiving changes
    #[arg(long = "upper", value_name = "DIR", hide = true, requires = "work")]
    upper: Option<PathBuf>,
    /// (internal, for ch-image build) overlay work directory
    #[arg(long = "work", value_name = "DIR", hide = true, requires = "upper")]
    work: Option<PathBuf>,
    /// (internal, for ch-image build) a RUN --mount: bind[-ro]:DST:SRC or tmpfs:DST:OPTIONS
    #[arg(long = "build-mount", value_name = "SPEC", action = ArgAction::Append, hide = true)]
    build_mount: Vec<OsString>,
    /// (internal, for ch-image build) RUN --network=none: no network but loopback
    #[arg(long = "no-network", hide = true)]
    no_network: bool,
    /// fake success of privileged system calls (chown, setuid, mknod of devices, ...)
    #[arg(long)]
    seccomp: bool,
    /// use container-private /tmp
    #[arg(short = 't', long = "private-tmp")]
    private_tmp: bool,
    /// set environment variables per ARG (FILE, NAME=VALUE, or none: /ch/environment)
    #[arg(long = "set-env", value_name = "ARG", num_args = 0..=1, require_equals = true,
          default_missing_value = "", action = ArgAction::Append)]
    set_env: Vec<OsString>,
    /// like --set-env, NUL-delimited
    #[arg(long = "set-env0", value_name = "ARG", num_args = 0..=1, require_equals = true,
          default_missing_value = "", action = ArgAction::Append)]
    set_env0: Vec<OsString>,
    /// unset environment variable(s)
    #[arg(long = "unset-env", value_name = "GLOB", action = ArgAction::Append)]
    unset_env: Vec<OsString>,
    /// run as UID within container
    #[arg(short = 'u', long, value_name = "UID", allow_hyphen_values = true)]
    uid: Option<String>,
    /// do unsafe things (internal use only)
    #[arg(long = "unsafe")]
    unsafe_: bool,
    /// be more verbose (can be repeated)
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    /// print version and exit
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// mount image read-write
    #[arg(short = 'w', long = "write")]
    write: bool,
    /// overlay a tmpfs on the image, writes vanish at exit (optional tmpfs SIZE)
    #[arg(short = 'W', long = "write-fake", value_name = "SIZE", num_args = 0..=1,
          require_equals = true, default_missing_value = "")]
    write_fake: Option<String>,
    /// log NUM warnings and exit
    #[arg(long = "warnings", value_name = "NUM")]
    warnings: Option<String>,
    /// give this help list
    #[arg(short = 'h', long = "help", short_alias = '?', action = ArgAction::Help)]
    help: Option<bool>,
    /// image: directory, SquashFS file, or image name in storage
    image: Option<OsString>,
    /// command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<OsString>,
}

fn main() {
    grove::log::keep_warnings();
    let code = match real_main() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", e.report());
            e.exit_status()
        }
    };
    // Unless the command replaced ch-run: its warnings again, as Charliecloud's ch-run.
    grove::log::reprint_warnings();
    std::process::exit(code);
}

fn real_main() -> Result<i32, RunError> {
    grove::log::set_style("ch-run", true);
    if std::env::args_os().len() == 1 {
        // Bare `ch-run`: the help, on stderr, and failure (as Charliecloud's).
        eprintln!("{}", Cli::command().render_help());
        return Ok(1);
    }
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => run::EXIT_USAGE,
            };
            match missing_argument(&e).or_else(|| unknown_option(&e)) {
                // argp's words, which scripts check.
                Some(what) => eprintln!(
                    "ch-run: {what}\nTry `ch-run --help' or `ch-run --usage' for more information."
                ),
                None => {
                    let _ = e.print();
                }
            }
            return Ok(code);
        }
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| RunError::msg(e.to_string()))?;
    // As Charliecloud's argp parser: whichever of -v and -q comes second is refused.
    let given = |id: &str| {
        (matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine))
            .then(|| matches.index_of(id))
            .flatten()
    };
    match (given("verbose"), given("quiet")) {
        (Some(v), Some(q)) if v < q => {
            return Err(RunError::msg("--quiet incompatible with --verbose"))
        }
        (Some(_), Some(_)) => return Err(RunError::msg("--verbose incompatible with --quiet")),
        _ => {}
    }
    if cli.verbose > 3 {
        return Err(RunError::msg("--verbose can be specified at most thrice"));
    }
    if cli.quiet > 3 {
        return Err(RunError::msg("--quiet can be specified at most thrice"));
    }
    grove::log::set_level(i32::from(cli.verbose) - i32::from(cli.quiet));
    if let Some(n) = &cli.warnings {
        // Charliecloud's test option: log NUM warnings, which are re-printed at exit.
        let n = number("--warnings", n)?;
        for i in 1..=n {
            grove::warn!("this is warning {i}!");
        }
        return Ok(0);
    }
    if cli.version {
        // As Charliecloud's ch-run (argp): the bare version on standard error.
        eprintln!("{}", env!("CARGO_PKG_VERSION"));
        return Ok(0);
    }
    if cli.usage {
        grove::dataln!("Usage: ch-run [OPTION...] IMAGE -- CMD [ARG...]");
        grove::dataln!("Try 'ch-run --help' for the options.");
        return Ok(0);
    }
    if cli.no_home {
        grove::warn!("deprecated --no-home is now default; ignoring");
    }
    if let Some(f) = &cli.feature {
        return match run::feature(f) {
            Some(true) => Ok(0),
            Some(false) => Ok(run::EXIT_FEATURE),
            None => Err(RunError::msg(format!("unknown feature: {f}"))),
        };
    }
    // `srun --export=NONE` and `env -i` leave $USER unset: use the invoking uid's name.
    let user = match std::env::var("USER") {
        Ok(u) if !u.is_empty() => u,
        _ => run::passwd::lookup_account(nix::unistd::getuid().as_raw())
            .map(|a| a.name)
            .ok_or_else(|| RunError::msg("$USER not set and no passwd entry for my uid"))?,
    };

    // Environment options in command-line order.
    let mut env_args: Vec<(usize, EnvArg)> = Vec::new();
    let idx = |id: &str| -> Vec<usize> {
        matches
            .indices_of(id)
            .map(|i| i.collect())
            .unwrap_or_default()
    };
    for (nul, id, vals) in [
        (false, "set_env", &cli.set_env),
        (true, "set_env0", &cli.set_env0),
    ] {
        for (i, v) in idx(id).into_iter().zip(vals.iter()) {
            let b = v.as_bytes();
            let src = if b.is_empty() {
                EnvSource::ImageDefault { nul }
            } else if b.contains(&b'=') {
                EnvSource::Var(b.to_vec())
            } else {
                EnvSource::File {
                    path: PathBuf::from(v),
                    nul,
                }
            };
            env_args.push((i, EnvArg::Set(src)));
        }
    }
    for (i, g) in idx("unset_env").into_iter().zip(cli.unset_env.iter()) {
        if g.is_empty() {
            return Err(RunError::msg("--unset-env: GLOB must have non-zero length"));
        }
        env_args.push((i, EnvArg::Unset(g.as_bytes().to_vec())));
    }
    if let Some(i) = matches.index_of("env_no_expand") {
        env_args.push((i, EnvArg::NoExpand));
    }
    env_args.sort_by_key(|(i, _)| *i);

    let binds = cli
        .bind
        .iter()
        .map(|b| Bind::parse(b).map_err(|e| RunError::msg(e)))
        .collect::<Result<Vec<_>, _>>()?;

    let build_mounts = cli
        .build_mount
        .iter()
        .map(|m| run::BuildMount::parse(m).map_err(|e| RunError::msg(e)))
        .collect::<Result<Vec<_>, _>>()?;

    let write = match (&cli.write_fake, cli.write) {
        (Some(_), true) => return Err(RunError::msg("--write and --write-fake are incompatible")),
        (Some(size), false) => WriteMode::Fake {
            size: (!size.is_empty()).then(|| size.clone()),
        },
        (None, true) => WriteMode::ReadWrite,
        (None, false) => WriteMode::ReadOnly,
    };

    let uid = cli.uid.as_deref().map(|v| number("--uid", v)).transpose()?;
    let gid = cli.gid.as_deref().map(|v| number("--gid", v)).transpose()?;
    let join_ct = cli
        .join_ct
        .as_deref()
        .map(|v| number("--join-ct", v))
        .transpose()?;
    // As in Charliecloud, --join-pid=0 means no PID to join.
    let join_pid = cli
        .join_pid
        .as_deref()
        .map(|v| number("--join-pid", v))
        .transpose()?
        .filter(|p| *p != 0);
    let join = if let Some(pid) = join_pid {
        let pid = i32::try_from(pid).map_err(|_| RunError::msg("--join-pid: out of range"))?;
        if cli.join || join_ct.is_some() || cli.join_tag.is_some() {
            return Err(RunError::msg(
                "--join-pid incompatible with other --join options",
            ));
        }
        Some(Join::Pid(pid))
    } else if cli.join || join_ct.is_some() || cli.join_tag.is_some() {
        // Charliecloud's -v lines on where the size and tag come from.
        let count = match join_ct {
            Some(c) => {
                grove::verbose!("join: peer group size from command line");
                Some(c)
            }
            None => run::join::default_count()
                .map_err(|e| RunError::msg(e))?
                .map(|(var, c)| {
                    grove::verbose!("join: peer group size from {var}");
                    c
                }),
        }
        .filter(|c| *c > 0)
        .ok_or_else(|| RunError::msg("join: no valid peer group size found"))?;
        let tag = match &cli.join_tag {
            Some(t) => {
                grove::verbose!("join: peer group tag from command line");
                t.clone()
            }
            None => {
                let (from, t) = run::join::default_tag();
                grove::verbose!("join: peer group tag from {from}");
                t
            }
        };
        if tag.is_empty() {
            return Err(RunError::msg("join: peer group tag cannot be empty string"));
        }
        Some(Join::Peers { tag, count })
    } else {
        None
    };

    let (Some(image_arg), false) = (cli.image.as_ref(), cli.cmd.is_empty()) else {
        return Err(RunError::msg("IMAGE and/or CMD not specified"));
    };
    // As Charliecloud's ch-run: a relative $CH_IMAGE_STORAGE is taken as given.
    let storage =
        layout::storage_dir_for_user(cli.storage.as_deref(), Some(&user), RelativeVariable::Allow)
            .map_err(|e| RunError::msg(e.to_string()))?;
    let (image, write) = if !cli.lower.is_empty() {
        // The builder's RUN: the image is the union of the given layers.
        if cli.lower.len() < 2 && cli.upper.is_none() {
            return Err(RunError::msg(
                "--lower: need two lower directories, or --upper",
            ));
        }
        let image = run::Image {
            path: cli.lower[0].clone(),
            kind: run::ImageKind::Dir,
            by_name: false,
        };
        let write = WriteMode::Layers {
            lowers: cli.lower.clone(),
            upper: cli.upper.clone().zip(cli.work.clone()),
        };
        (image, write)
    } else {
        let ch_image = || {
            Ok(std::env::current_exe()
                .map_err(|e| RunError::io("can't find own executable", &e))?
                .with_file_name("ch-image"))
        };
        match image_arg.to_str() {
            Some(arg) => {
                grove::runname::locate(arg, &storage, write, cli.write, cli.unsafe_, ch_image)?
            }
            // Not UTF-8, so no image name: a path, as Charliecloud takes any bytes.
            None => (
                run::locate_image_path(image_arg.as_ref(), &storage, cli.write, cli.unsafe_)?,
                write,
            ),
        }
    };
    grove::verbose!("verbosity: {}", grove::log::level());
    grove::verbose!("image: {}", image.path.display());
    grove::verbose!("storage: {}", storage.display());
    if cli.mount.as_ref().is_some_and(|m| m.is_empty()) {
        return Err(RunError::msg("mount point can't be empty string"));
    }
    if cli.mount.is_some() && image.kind == run::ImageKind::Dir {
        grove::warn!("--mount invalid with directory image, ignoring");
    }

    // Like Charliecloud: ch-ssh is installed next to ch-run.
    let ch_ssh = if cli.ch_ssh {
        let exe = std::env::current_exe()
            .map_err(|e| RunError::io("can't find ch-run's own path", &e))?;
        Some(exe.with_file_name("ch-ssh"))
    } else {
        None
    };
    let spec = RunSpec {
        image,
        cmd: cli.cmd,
        uid,
        gid,
        write,
        binds,
        build_mounts,
        cd: cli.cd,
        private_tmp: cli.private_tmp,
        home: cli.home,
        no_passwd: cli.no_passwd,
        seccomp: cli.seccomp,
        env: env_args.into_iter().map(|(_, a)| a).collect(),
        join,
        squash_mount: cli.mount.map(PathBuf::from),
        quiet: cli.quiet,
        user,
        ch_ssh,
        no_network: cli.no_network,
    };
    run::run(&spec)
}

/// argp's message for an option given without its argument (`option requires an argument
/// -- 'b'`, or `option '--bind' requires an argument` for the long form), from clap's
/// error; `None` for other errors.
fn missing_argument(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::InvalidValue {
        return None;
    }
    match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if v.is_empty() => {}
        _ => return None,
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.split([' ', '=']).next()?.strip_prefix("--")?;
    let cmd = Cli::command();
    let short = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_short());
    // The form the user typed: the last option word that names it.
    // Any bytes: an argument need not be UTF-8.
    let typed_short = std::env::args_os().rev().find_map(|w| {
        let w = w.to_string_lossy();
        if w == format!("--{long}") || w.starts_with(&format!("--{long}=")) {
            Some(false)
        } else if let Some(c) = short {
            (w.starts_with('-') && !w.starts_with("--") && w.ends_with(c)).then_some(true)
        } else {
            None
        }
    });
    Some(match (typed_short, short) {
        (Some(true), Some(c)) => format!("option requires an argument -- '{c}'"),
        _ => format!("option '--{long}' requires an argument"),
    })
}

/// argp's (getopt's) message for an option ch-run does not have (`unrecognized option
/// '--foo'`, or `invalid option -- 'Z'` for a short one), from clap's error; `None` for
/// other errors.
fn unknown_option(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    argp_unknown(arg)
}

/// The words of getopt for an unknown option word as clap names it. Pure.
fn argp_unknown(arg: &str) -> Option<String> {
    if arg.starts_with("--") && arg.len() > 2 {
        Some(format!("unrecognized option '{arg}'"))
    } else {
        let c = arg.strip_prefix('-')?.chars().next()?;
        Some(format!("invalid option -- '{c}'"))
    }
}

/// A numeric option value (a uid, gid, PID or count) in Charliecloud's words when bad.
fn number(opt: &str, v: &str) -> Result<u32, RunError> {
    run::parse_id(v).map_err(|why| RunError::msg(format!("{opt}: {why}")))
}
