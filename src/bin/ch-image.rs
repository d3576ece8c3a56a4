//! `ch-image` (also answering to `ch-grow`): build and manage images in the storage
//! directory. Thin: parse arguments, resolve settings, call the library, render errors.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use grove::image;
use grove::reference::Reference;
use grove::store::layout::{self, RelativeVariable};
use grove::store::model::XattrPolicy;
use grove::store::{Layout, Store};
use grove::{cli, info, warn};

#[derive(Parser)]
#[command(
    about = "Build and manage images; completely unprivileged",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
pub(crate) struct Cli {
    #[command(flatten)]
    common: Common,
    /// Print version and exit; with -v, also the git commit, build profile, gix version
    /// and the optional tools found
    #[arg(long)]
    version: bool,
    /// Print any missing dependencies and exit (no output and success if all is well)
    #[arg(long)]
    dependencies: bool,
    /// None only with --version or no arguments at all.
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Args, Clone)]
struct Common {
    /// Storage directory (default: $CH_IMAGE_STORAGE, else /var/tmp/$USER.grove)
    #[arg(short = 's', long = "storage", global = true, value_name = "DIR")]
    storage: Option<PathBuf>,
    /// Print extra chatter; repeat for more
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print less; repeat for less
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    /// Record extended attributes (user.*, but never user.overlay.*) of imported and built
    /// files ($CH_XATTRS)
    #[arg(long, global = true, overrides_with = "no_xattrs")]
    xattrs: bool,
    /// Don't record extended attributes (the default)
    #[arg(long = "no-xattrs", global = true)]
    no_xattrs: bool,
    /// Architecture for registry operations: host (default), yolo, or a name like arm64/v8
    #[arg(short = 'a', long = "arch", global = true, value_name = "ARCH")]
    arch: Option<String>,
    /// Authenticate with the registry even when not required (also $CH_IMAGE_AUTH=yes)
    #[arg(long, global = true)]
    auth: bool,
    /// Download everything again when pulling, ignoring what is already in storage
    #[arg(long = "always-download", global = true)]
    always_download: bool,
    /// Don't verify registry TLS certificates (do not use unless you understand the risks)
    #[arg(long = "tls-no-verify", global = true)]
    tls_no_verify: bool,
    /// Use the build cache (default)
    #[arg(long, global = true, conflicts_with_all = ["no_cache", "rebuild"])]
    cache: bool,
    /// Don't use the build cache
    #[arg(long = "no-cache", global = true, conflicts_with = "rebuild")]
    no_cache: bool,
    /// Execute all instructions, but still write the cache
    #[arg(long, global = true)]
    rebuild: bool,
    /// Large file threshold in MiB (accepted for Charliecloud compatibility; Grove keeps
    /// every file in its object store and ignores it)
    #[arg(long = "cache-large", global = true, value_name = "SIZE")]
    cache_large: Option<String>,
    /// Re-prompt each time a registry password is needed (accepted for Charliecloud
    /// compatibility and ignored: Grove asks once per registry and command)
    #[arg(long = "password-many", global = true)]
    password_many: bool,
    /// Add short traceback to fatal error hints (accepted for Charliecloud
    /// compatibility; Grove's errors print their causes and ignore it)
    #[arg(long, global = true)]
    debug: bool,
    /// Allow concurrent storage directory access (accepted for Charliecloud
    /// compatibility; Grove's commands share the storage directory safely and ignore it)
    #[arg(long = "no-lock", global = true)]
    no_lock: bool,
    /// Dump profile to "./profile.{p,txt}" (accepted for Charliecloud compatibility;
    /// Grove has no Python profiler and ignores it)
    #[arg(long, global = true)]
    profile: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an image from a Dockerfile
    Build(BuildArgs),
    /// Show how an image was built, one line per instruction, oldest first
    History {
        /// Image name, NAME~N (N states before) or a commit id prefix
        image_ref: String,
        /// JSON output
        #[arg(long)]
        json: bool,
        /// Per step of the image's last build: a cache hit, or why it was executed
        #[arg(long)]
        why: bool,
    },
    /// Files added, removed and changed between two images or image states
    /// (IMAGE, IMAGE~N, or a commit id)
    Diff {
        /// Image name, NAME~N or a commit id prefix (at least four hex digits)
        a: String,
        /// The same, compared with A
        b: String,
        /// Totals only
        #[arg(long)]
        stat: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Show an image's config and provenance
    Inspect {
        /// Image name, NAME~N or a commit id prefix
        image_ref: String,
        /// JSON output
        #[arg(long)]
        json: bool,
        /// Print the image's build provenance as an in-toto Statement v1 with a SLSA
        /// Provenance v1 predicate (docs/provenance.md)
        #[arg(long, conflicts_with = "json")]
        provenance: bool,
    },
    /// Check a provenance statement (from inspect --provenance) against the image in
    /// storage: one line per claim (match, mismatch, not checkable); fails if any differs
    Verify {
        /// Image name (the one the statement is of)
        image_ref: String,
        /// The statement file (JSON)
        statement: PathBuf,
    },
    /// Build cache: summary, or maintenance with the options
    BuildCache(BuildCacheArgs),
    /// Check the store's integrity
    Fsck {
        /// JSON output (`ok`, the list of `problems`, and the `leftovers` of writers that
        /// are gone)
        #[arg(long)]
        json: bool,
    },
    /// Import a directory or tarball as an image
    Import {
        /// Directory or tarball (plain, gzip, zstd, xz, bzip2, lzma; known by its content)
        path: PathBuf,
        /// Image name
        image_ref: String,
    },
    /// Pull an image from a registry into storage, or unpack it into a directory
    Pull {
        /// Image reference in the registry
        image_ref: String,
        /// Name to store it under (default: IMAGE_REF); or, if it reads as a path (starts
        /// with / or ., or ends with /), a directory to unpack into instead of storage
        #[arg(value_name = "DEST_REF|IMAGE_DIR")]
        dest: Option<String>,
        /// Print how IMAGE_REF parses and exit, without using the network or storage
        #[arg(long = "parse-only")]
        parse_only: bool,
    },
    /// Push an image to a registry
    Push {
        /// Push the unpacked image in DIR instead of an image in storage
        #[arg(long = "image", value_name = "DIR")]
        image: Option<PathBuf>,
        /// Image to push
        image_ref: String,
        /// Destination reference (default: IMAGE_REF)
        dest_ref: Option<String>,
    },
    /// List images, or show details of one
    List {
        /// Image name: show its details (in storage and in its registry)
        image_ref: Option<String>,
        /// Long listing (commit ids too)
        #[arg(short, long)]
        long: bool,
        /// List the deleted images that `undelete` can restore
        #[arg(short, long, conflicts_with = "image_ref")]
        undeletable: bool,
        /// JSON output (the list of images; with IMAGE_REF, its details)
        #[arg(long)]
        json: bool,
    },
    /// Delete images (names may be globs)
    Delete {
        /// Image name, or a glob of names as `list` shows them (`*`, `?` and `[...]` as
        /// Python's fnmatch reads them, as Charliecloud: `[!a]` negates)
        #[arg(required = true)]
        image_glob: Vec<String>,
    },
    /// Restore a deleted image
    Undelete {
        /// Name of the deleted image (`list -u` lists them)
        image_ref: String,
    },
    /// Delete the whole storage directory
    Reset,
    /// Print the storage directory path
    StoragePath,
    /// Check an image out (if needed) and print its directory; with --view, print the
    /// directories whose union is the image instead (top first, each followed by a NUL
    /// byte), checking out only what the kept layers lack (or the image, when what they
    /// lack is no image's checkout), each checked against its stamp (reading what
    /// changed; a copy that differs from what Grove made is removed and made again); with
    /// --verify, only check them
    #[command(hide = true)]
    Checkout {
        #[arg(long, conflicts_with = "view")]
        verify: bool,
        #[arg(long)]
        view: bool,
        /// The commit NAME named when the caller (ch-run) resolved it: what is checked
        /// out or verified, whatever NAME names now (a build may tag it again meanwhile)
        #[arg(long, value_name = "COMMIT")]
        commit: Option<String>,
        image_ref: String,
    },
    /// Query the configuration and available features (for testing and debugging)
    Gestalt {
        #[command(subcommand)]
        what: Option<Gestalt>,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// Context directory, or `-` to read the Dockerfile from standard input with no
    /// context
    context: PathBuf,
    /// Name of the image to create (default: inferred from the Dockerfile or context name)
    #[arg(short = 't', long = "tag")]
    tag: Option<String>,
    /// Dockerfile to use (default: CONTEXT/Dockerfile; `-` reads standard input)
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Set build-time variable KEY (from the environment if no VALUE)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_arg: Vec<String>,
    /// Don't execute instructions
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Stop after parsing the Dockerfile
    #[arg(long = "parse-only")]
    parse_only: bool,
    /// Say why each instruction that was not a cache hit missed (also at -v)
    #[arg(long)]
    explain: bool,
    /// Bind-mount SRC at DST for RUN instructions
    #[arg(short = 'b', long = "bind", value_name = "SRC[:DST]")]
    bind: Vec<String>,
    /// A secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (BuildKit's
    /// syntax); never stored in the image, the cache or the logs
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    secret: Vec<String>,
    /// Root emulation for RUN: seccomp (default), fakeroot or none
    #[arg(long = "force", value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "seccomp")]
    force: Option<String>,
    /// Accepted for Charliecloud 0.31 compatibility; Grove does no --force detection
    #[arg(long = "no-force-detect")]
    no_force_detect: bool,
    /// FROM may name the image being built, which the build then extends (how
    /// ch-fromhost injects files into a stored image, with no temporary name)
    #[arg(long, hide = true)]
    extend: bool,
}

fn build(
    storage: &std::path::Path,
    common: &Common,
    xattrs: XattrPolicy,
    registry: grove::registry::Settings,
    a: BuildArgs,
) -> anyhow::Result<()> {
    let cache = image::cache_mode(
        common.no_cache,
        common.rebuild,
        common.cache,
        std::env::var("CH_IMAGE_CACHE").ok().as_deref(),
    )?;
    let build_args = image::build_args(&a.build_arg, |k| std::env::var(k).ok())?;
    let ch_run = std::env::current_exe()
        .context("can't find own executable")?
        .with_file_name("ch-run");
    let req = image::BuildRequest {
        context: a.context,
        tag: a.tag,
        file: a.file,
        build_args,
        dry_run: a.dry_run,
        parse_only: a.parse_only,
        binds: a.bind,
        force: a.force,
        cache,
        ch_run,
        registry,
        explain: a.explain,
        secrets: a.secret,
        extend: a.extend,
    };
    let open = || Ok(Store::open(storage)?.with_xattrs(xattrs));
    Ok(image::build(open, &Layout::new(storage), req)?)
}

#[derive(Args)]
struct BuildCacheArgs {
    /// Delete all cache entries and layers (images stay)
    #[arg(long)]
    reset: bool,
    /// Remove what no image reaches
    #[arg(long)]
    gc: bool,
    /// With --gc: keep the most recently used RUN cache mounts, downloaded layers,
    /// checkouts and layers up to SIZE in all (bytes, or with K, M, G, T), removing the
    /// least recently used first; removed checkouts and layers are made again from the git
    /// objects when next used (default: remove every cache mount and downloaded layer,
    /// keep checkouts and layers; 0: remove them all)
    #[arg(long = "keep-storage", value_name = "SIZE", requires = "gc")]
    keep_storage: Option<String>,
    /// Compress the packs import and pull store uncompressed (they start this in the
    /// background when they stored 8 MiB or more; CH_IMAGE_AUTO_COMPACT=no turns that off;
    /// =wait, or CI set, makes them wait for it)
    #[arg(long)]
    compact: bool,
    /// With --compact: at the lowest CPU and I/O priority, the compaction lock inherited
    /// locked from the command that started it (how import and pull start it)
    #[arg(long, hide = true, requires = "compact")]
    background: bool,
    /// Print the build graph as a text tree
    #[arg(long)]
    tree: bool,
    /// Print the build graph in Graphviz dot; with =PATH, write it to PATH.gv instead
    /// and render PATH.pdf with Graphviz's dot if installed (as Charliecloud's --dot)
    #[arg(long, value_name = "PATH", num_args = 0..=1, require_equals = true)]
    dot: Option<Option<PathBuf>>,
    /// push REMOTE | fetch REMOTE: share images and cache entries through a git remote
    #[arg(num_args = 0..=2, value_names = ["ACTION", "REMOTE"])]
    action: Vec<String>,
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

/// After a command that may have stored packs uncompressed (import, pull, a build that
/// pulled or imported its base): compress them in the background (store::compaction).
fn compact_later(storage: &std::path::Path) {
    if let Ok(exe) = std::env::current_exe() {
        if grove::store::compaction::start_in_background(storage, &exe) {
            grove::verbose!("compressing the packs this command stored, in the background");
        }
    }
}

/// Write a command's output to stdout ([`cli::write_stdout`]: a closed pipe ends the
/// program quietly).
fn emit(text: &str) -> anyhow::Result<()> {
    cli::write_stdout(text);
    Ok(())
}

#[derive(Subcommand)]
enum Gestalt {
    /// Exit successfully if the build cache is available (always, in Grove)
    Bucache,
    /// Exit successfully if build cache DOT trees can be written (always: Grove writes
    /// them itself)
    BucacheDot,
    /// Print the storage directory path
    StoragePath,
    /// Print the path of the program in use (Grove has no Python interpreter)
    PythonPath,
    /// Print logging messages at all levels
    Logging {
        /// Also generate a fatal error
        #[arg(long)]
        fail: bool,
    },
}

/// `ch-image gestalt SELECTOR`: Charliecloud's selectors, answered for Grove.
fn gestalt(storage: &std::path::Path, what: Option<Gestalt>) -> anyhow::Result<()> {
    match what {
        // As Charliecloud 0.38: no selector, nothing to say, success.
        None => {}
        Some(Gestalt::Bucache) => {
            grove::verbose!(
                "build cache: built in (git object database through gix), no git(1) needed"
            );
        }
        Some(Gestalt::BucacheDot) => {
            grove::verbose!("build cache DOT trees: written by ch-image itself (build-cache --dot), no git2dot.py needed");
        }
        Some(Gestalt::StoragePath) => grove::dataln!("{}", storage.display()),
        Some(Gestalt::PythonPath) => {
            let exe = std::env::current_exe().context("can't find own executable")?;
            grove::dataln!("{}", exe.display());
        }
        Some(Gestalt::Logging { fail }) => {
            grove::trace!("trace");
            grove::debug!("debug");
            grove::verbose!("verbose");
            info!("info");
            warn!("warning");
            grove::log::write_line("error: error");
            if fail {
                bail!("the program failed inexplicably");
            }
        }
    }
    Ok(())
}

/// `--dependencies`: Grove needs no external program for its own work but `ch-run` beside
/// `ch-image` (RUN instructions execute through it). Problems go to stdout, as the man
/// page says; none gives no output.
fn dependencies() -> ExitCode {
    let ch_run = std::env::current_exe().map(|e| e.with_file_name("ch-run"));
    match ch_run {
        Ok(p) if p.is_file() => ExitCode::SUCCESS,
        Ok(p) => {
            grove::dataln!("missing dependency: ch-run not found: {}", p.display());
            ExitCode::from(1)
        }
        Err(e) => {
            grove::dataln!("missing dependency: can't find own executable: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    Ok(image::parse_ref(s)?)
}

fn registry_settings(c: &Common) -> grove::registry::Settings {
    let mut s = grove::registry::Settings::from_env();
    if let Some(a) = &c.arch {
        s.arch = grove::registry::Arch::parse(a);
    }
    s.auth |= c.auth;
    s.tls_no_verify = c.tls_no_verify;
    s.always_download = c.always_download;
    s
}

fn run(cli: Cli, cmd: Cmd) -> anyhow::Result<()> {
    cli::set_verbosity(cli.common.verbose, cli.common.quiet)?;
    // `pull --parse-only` touches no storage (not even creating it) and no network.
    if let Cmd::Pull {
        image_ref,
        parse_only: true,
        ..
    } = &cmd
    {
        return emit(&image::parse_report(image_ref)?);
    }
    // Settings, resolved once and passed down.
    let xattrs = cli::xattrs_setting(cli.common.xattrs, cli.common.no_xattrs);
    let storage =
        layout::storage_dir_from_env(cli.common.storage.as_deref(), RelativeVariable::Refuse)?;
    let settings = registry_settings(&cli.common);
    let open = || Ok(Store::open(&storage)?.with_xattrs(xattrs));
    grove::verbose!("version: {}", env!("CARGO_PKG_VERSION"));
    grove::verbose!(
        "verbose level: {} ({})",
        grove::log::level(),
        match grove::log::level() {
            ..=-3 => "QUIET_STDERR",
            -2 => "STDERR",
            -1 => "WARNING",
            0 => "INFO",
            1 => "VERBOSE",
            2 => "DEBUG",
            _ => "TRACE",
        }
    );
    grove::verbose!("save xattrs: {}", xattrs.record());
    grove::verbose!("storage directory: {}", storage.display());
    grove::debug!(
        "host architecture for registry: {}",
        grove::oci::host_arch()
    );
    grove::debug!("registry authentication: {}", settings.auth);
    if let Some(n) = &cli.common.cache_large {
        grove::verbose!("--cache-large {n}: ignored (Grove keeps large files in its object store)");
    }
    for (given, option) in [
        (cli.common.debug, "--debug"),
        (cli.common.no_lock, "--no-lock"),
        (cli.common.password_many, "--password-many"),
        (cli.common.profile, "--profile"),
    ] {
        if given {
            grove::verbose!("{option}: accepted for Charliecloud compatibility and ignored");
        }
    }
    let common = cli.common.clone();
    match cmd {
        Cmd::Pull {
            image_ref, dest, ..
        } => {
            // As the seed man page: `pull --no-cache` downloads everything again.
            let mut settings = settings;
            settings.always_download |= common.no_cache;
            image::pull(open, &image_ref, dest.as_deref(), &settings, xattrs)?;
            compact_later(&storage);
        }
        Cmd::Push {
            image,
            image_ref,
            dest_ref,
        } => image::push(
            open,
            image.as_deref(),
            &image_ref,
            dest_ref.as_deref(),
            &settings,
        )?,
        Cmd::Build(a) => {
            build(&storage, &common, xattrs, settings, a)?;
            compact_later(&storage);
        }
        Cmd::History {
            image_ref,
            json,
            why: true,
        } => emit(&image::history_why(
            &Store::open_existing(&storage)?,
            &image_ref,
            json,
        )?)?,
        Cmd::History {
            image_ref,
            json,
            why: false,
        } => emit(&image::history(
            &Store::open_existing(&storage)?,
            &image_ref,
            json,
        )?)?,
        Cmd::Diff { a, b, stat, json } => emit(&image::diff(
            &Store::open_existing(&storage)?,
            &a,
            &b,
            stat,
            json,
        )?)?,
        Cmd::Inspect {
            image_ref,
            provenance: true,
            ..
        } => emit(&image::inspect_provenance(
            &Store::open_existing(&storage)?,
            &image_ref,
        )?)?,
        Cmd::Inspect {
            image_ref, json, ..
        } => emit(&image::inspect(
            &Store::open_existing(&storage)?,
            &image_ref,
            json,
        )?)?,
        Cmd::Verify {
            image_ref,
            statement,
        } => {
            let v = image::verify(&Store::open_existing(&storage)?, &image_ref, &statement)?;
            emit(&v.report)?;
            v.check()?;
            info!("statement matches {image_ref}");
        }
        Cmd::BuildCache(a) => {
            if a.background {
                // Best effort: at normal priority it is only less polite.
                let _ = grove::run::sys::background_priority();
            }
            let req = image::BuildCacheRequest {
                compact: a.compact,
                compact_lock_inherited: a.background,
                reset: a.reset,
                gc: a.gc,
                tree: a.tree,
                dot: matches!(a.dot, Some(None)),
                dot_file: a.dot.flatten(),
                action: a.action,
                json: a.json,
                keep_storage: a
                    .keep_storage
                    .as_deref()
                    .map(image::parse_size)
                    .transpose()?,
            };
            if a.background {
                // Started by another command: a store removed since is not made again.
                let Ok(store) = Store::open_existing(&storage) else {
                    return Ok(());
                };
                image::build_cache(&store, &req)?;
            } else {
                emit(&image::build_cache(&Store::open(&storage)?, &req)?)?
            }
        }
        Cmd::Fsck { json: false } => image::fsck(&Store::open_existing(&storage)?)?,
        Cmd::Fsck { json: true } => emit(&image::fsck_json(&Store::open_existing(&storage)?)?)?,
        Cmd::Checkout {
            image_ref,
            verify,
            view,
            commit,
        } => {
            let name = parse_ref(&image_ref)?;
            let store = Store::open_existing(&storage)?;
            let lock = match store.lock() {
                Ok(l) => Ok(l),
                // A read-only storage directory (a copy on a read-only file system): what
                // exists of the view is checked as it is, its files read at every use (a
                // stamp can't be written), and one that is not Grove's is the error.
                Err(e) if (verify || view) && cli::read_only_storage(&e, &storage).is_some() => {
                    Err(e)
                }
                Err(e) => return Err(e.into()),
            };
            let named = store.require_image(&name)?;
            let commit = match commit {
                Some(hex) => store.image_commit(&hex)?,
                None => named,
            };
            let print_view = |dirs: Vec<std::path::PathBuf>| {
                let mut out = Vec::new();
                for dir in dirs {
                    out.extend_from_slice(dir.as_os_str().as_encoded_bytes());
                    out.push(0);
                }
                cli::write_stdout_bytes(&out);
            };
            let lock = match lock {
                Ok(l) => l,
                Err(e) => {
                    let dirs = store.view_existing(commit)?.ok_or_else(|| {
                        grove::store::StoreError::NotCheckedOut {
                            name: name.to_string(),
                            storage: storage.clone(),
                            source: Box::new(e),
                        }
                    })?;
                    for d in &dirs {
                        if !store.verify_tree(d, true)? {
                            anyhow::bail!("{} changed while it was read", d.display());
                        }
                    }
                    if view {
                        print_view(dirs);
                    }
                    return Ok(());
                }
            };
            if verify {
                store.view_verified(&lock, commit)?;
            } else if view {
                print_view(store.view_verified(&lock, commit)?);
            } else {
                grove::dataln!("{}", store.checkout(&lock, commit)?.display());
            }
        }
        Cmd::StoragePath => grove::dataln!("{}", storage.display()),
        Cmd::Gestalt { what } => gestalt(&storage, what)?,
        Cmd::Reset => {
            Store::reset(&storage)?;
            info!("deleted storage directory: {}", storage.display());
            open()?;
        }
        Cmd::Import { path, image_ref } => {
            image::import(open, &path, &image_ref)?;
            compact_later(&storage);
        }
        Cmd::List {
            image_ref: None,
            long,
            undeletable: false,
            json,
        } => emit(&image::list(&open()?, long, json)?)?,
        Cmd::List {
            image_ref: None,
            long,
            undeletable: true,
            json,
        } => emit(&image::list_undeletable(&open()?, long, json)?)?,
        Cmd::List {
            image_ref: Some(r),
            json: true,
            ..
        } => emit(&image::list_details_json(&open()?, &r, &settings)?)?,
        Cmd::List {
            image_ref: Some(r), ..
        } => image::list_details(&open()?, &r, &settings)?,
        Cmd::Delete { image_glob } => {
            let store = open()?;
            let lock = store.lock()?;
            image::delete(&store, &lock, &image_glob)?;
        }
        Cmd::Undelete { image_ref } => {
            let name = parse_ref(&image_ref)?;
            let store = open()?;
            let lock = store.lock()?;
            store.undelete(&lock, &name)?;
            info!("undeleted image: {name}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    use clap::CommandFactory;
    let mut cli = grove::cli::parse_last_wins::<Cli>();
    if cli.version {
        // As Charliecloud's ch-image: the bare version on standard output; with -v, what
        // this build is and which optional tools it finds (Grove's gestalt).
        if cli.common.verbose > 0 {
            cli::write_stdout(&grove::version::detail(grove::run::find_program));
        } else {
            grove::dataln!("{}", grove::version::VERSION);
        }
        return ExitCode::SUCCESS;
    }
    if cli.dependencies {
        return dependencies();
    }
    let Some(cmd) = cli.cmd.take() else {
        // Bare `ch-image` (or only common options): the help on stderr, and failure, as
        // Charliecloud's argparse setup does.
        eprintln!("{}", cli::last_wins(Cli::command()).render_help());
        return ExitCode::from(1);
    };
    let storage =
        layout::storage_dir_from_env(cli.common.storage.as_deref(), RelativeVariable::Refuse).ok();
    // The commands that write images (and push, which writes a temporary export and
    // talks to a registry), and the build cache's maintenance, end on SIGINT and SIGTERM
    // through their error path (grove::interrupt), blocked before any thread is started;
    // import listens once it has entered its user namespace, if it enters one.
    let maintenance = |a: &BuildCacheArgs| a.gc || a.reset || a.compact;
    if matches!(
        cmd,
        Cmd::Import { .. } | Cmd::Pull { .. } | Cmd::Push { .. } | Cmd::Build(_)
    ) || matches!(cmd, Cmd::BuildCache(ref a) if maintenance(a))
    {
        let r = grove::interrupt::install().and_then(|()| match cmd {
            Cmd::Import { .. } => Ok(()),
            _ => grove::interrupt::listen(),
        });
        if let Err(e) = r {
            grove::warn!("can't handle SIGINT and SIGTERM: {e}");
        }
    }
    let result = run(cli, cmd);
    if let Some(sig) = grove::interrupt::signal() {
        match result {
            Ok(()) => grove::info!(
                "{}: the command had finished; its image is kept",
                sig.as_str()
            ),
            Err(e) => {
                // The error says where the work stopped (its cause: "interrupted by
                // SIGINT"); an error that came before the signal is followed by it.
                cli::report(&*e);
                if !grove::interrupt::is_interrupted(&*e) {
                    grove::log::write_line(&format!("error: interrupted by {}", sig.as_str()));
                }
                cli::reclaim_after_failure(storage.as_deref());
            }
        }
        grove::run::sys::die_of(sig);
        return ExitCode::from(128 + sig as u8);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A storage directory the user can't write says so: the raw "Permission
            // denied" on some lock or object file does not tell.
            let e = match storage
                .as_deref()
                .and_then(|s| cli::read_only_storage(&*e, s))
            {
                Some(why) => e.context(why),
                None => e,
            };
            cli::report(&*e);
            cli::reclaim_after_failure(storage.as_deref());
            ExitCode::from(1)
        }
    }
}
