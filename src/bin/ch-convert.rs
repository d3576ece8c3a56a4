//! `ch-convert [-i FMT] [-o FMT] IN OUT`: convert images between the store (`ch-image`),
//! directories (`dir`), tarballs (`tar`), SquashFS (`squash`), OCI image layouts (`oci`)
//! and Docker's or Podman's storage (`docker`, `podman`, through those commands). Thin:
//! the work is in the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use grove::cli;
use grove::store::layout::{self, RelativeVariable};

#[derive(Parser)]
#[command(
    disable_version_flag = true,
    about = "Convert an image from one format to another",
    after_help = "FORMATS:
  ch-image  image in Grove's storage (inferred for names, even where a directory of that
            name exists: inference goes by the name only, as Charliecloud's)
  dir       directory (inferred for paths starting with / ./ or ../)
  tar       tarball; output compression from the extension: .tar .tar.gz/.tgz .tar.zst/.tzst
            .tar.xz/.txz .tar.bz2/.tbz2; input compression from the content
  squash    SquashFS file (inferred for .sqfs .squash .squashfs), written straight from
            storage as a tar stream into tar2sqfs (squashfs-tools-ng) or else sqfstar,
            read back through sqfs2tar or else unsquashfs; ch-run runs it directly
  oci       OCI image layout directory (inferred when it holds oci-layout), or a tar of one
            (oci-archive) when the path ends in .tar; readable by skopeo, umoci, podman,
            buildah (one layer; the history marks the last layer-making step non-empty).
            An uncompressed tarball holding an OCI layout or a docker save manifest
            (docker-archive) is read as an image, not as a root filesystem
  docker    image in Docker's storage (needs the docker command; never inferred)
  podman    image in Podman's storage (needs the podman command; never inferred)

REPRODUCIBILITY:
  tar, squash and oci outputs of the same image are byte-for-byte identical on every run
  and machine: entries in byte order, owner root:root, each file's recorded time (whole
  seconds; $SOURCE_DATE_EPOCH, else 0, where none is recorded), extended attributes only
  where the image recorded them (tar and oci; never in squash), gzip without name or time.

MOUNT POINTS:
  SquashFS images are read-only, so ch-run cannot create the paths it binds. Missing ones
  are added to squash and dir output (as Charliecloud's ch-convert does for directories,
  so that `ch-run -b SRC:/mnt/0 DIR` works): empty directories (mode 0755) /bin /dev /etc
  /mnt /mnt/0-9 /proc /sys /tmp /usr and empty files (mode 0644) /etc/hosts
  /etc/resolv.conf. Existing entries, symlinks included, are left alone. What a tarball
  input holds under /dev is left out (ch-run mounts the host's /dev there)."
)]
pub(crate) struct Cli {
    /// Input format (ch-image, dir, tar, squash, oci, docker, podman); inferred if absent
    #[arg(short = 'i', long = "in-fmt", value_name = "FMT")]
    in_fmt: Option<String>,
    /// Output format (ch-image, dir, tar, squash, oci, docker, podman); inferred if absent
    #[arg(short = 'o', long = "out-fmt", value_name = "FMT")]
    out_fmt: Option<String>,
    /// Replace an existing output: the default, as Charliecloud's ch-convert (a
    /// directory only if it is empty or looks like an image: has bin, dev and usr);
    /// accepted for scripts written for earlier Grove releases
    #[arg(short = 'f', long)]
    force: bool,
    /// Error if the output already exists, rather than replacing it
    #[arg(long)]
    no_clobber: bool,
    /// SquashFS compression: zstd (default, level 3), gzip, xz or lz4, optionally with a
    /// level as ALG:LEVEL (e.g. zstd:19)
    #[arg(long, value_name = "ALG[:LEVEL]")]
    compression: Option<String>,
    /// Dry run: print what would be done
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Read the input's extended attributes (user.*: a directory's, a tarball's PAX
    /// records) into the output ($CH_XATTRS); an image in storage always gives those it
    /// recorded
    #[arg(long, overrides_with = "no_xattrs")]
    xattrs: bool,
    /// Don't read the input's extended attributes (the default)
    #[arg(long = "no-xattrs")]
    no_xattrs: bool,
    /// Storage directory for the ch-image format (read or written only by conversions
    /// from or to that format)
    #[arg(short = 's', long = "storage", value_name = "DIR")]
    storage: Option<PathBuf>,
    /// Make the temporary directory of a conversion that does not touch the storage
    /// directory (the input's files, as objects, and scratch) in DIR; removed at the end,
    /// after a failure too [default: $TMPDIR, else /var/tmp]
    #[arg(long = "tmp", value_name = "DIR")]
    tmp: Option<PathBuf>,
    /// Print extra chatter; repeat for more
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print less; repeat for less
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
    /// Input image
    input: String,
    /// Output image
    output: String,
}

fn main() -> ExitCode {
    use clap::CommandFactory;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.is_empty() {
        // Bare `ch-convert`: the usage on stderr, and failure, as Charliecloud's.
        eprintln!("{}", cli::last_wins(Cli::command()).render_help());
        return ExitCode::from(1);
    }
    if args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--version")
    {
        // As Charliecloud's ch-convert: the bare version on standard error.
        eprintln!("{}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let cli = grove::cli::parse_last_wins::<Cli>();
    if let Err(e) = cli::set_verbosity(cli.verbose, cli.quiet) {
        cli::report(&e);
        return ExitCode::from(1);
    }
    let req = grove::convert::Request {
        xattrs: cli::xattrs_setting(cli.xattrs, cli.no_xattrs),
        storage: layout::storage_dir_from_env(cli.storage.as_deref(), RelativeVariable::Refuse),
        input: cli.input,
        output: cli.output,
        in_fmt: cli.in_fmt,
        out_fmt: cli.out_fmt,
        no_clobber: cli.no_clobber,
        compression: cli.compression,
        dry_run: cli.dry_run,
        tmp: cli.tmp,
    };
    // Only a conversion from or to the ch-image format reads or writes the storage
    // directory: no other is told about it, or reclaims anything in it.
    let storage = req.storage.as_deref().ok().filter(|_| req.touches_store());
    // SIGINT and SIGTERM end the conversion through its error path (grove::interrupt):
    // the partial output and the scratch space go, what it wrote to the store is
    // reclaimed, then the process dies of the signal. Blocked here, while the process
    // has one thread; the conversion listens once it has entered the user namespace
    // that reads a directory input, if it enters one.
    if !req.dry_run {
        if let Err(e) = grove::interrupt::install() {
            grove::warn!("can't handle SIGINT and SIGTERM: {e}");
        }
    }
    let result = grove::convert::convert(&req);
    if let Some(sig) = grove::interrupt::signal() {
        match result {
            Ok(()) => grove::info!(
                "{}: the conversion had finished; its output is kept",
                sig.as_str()
            ),
            Err(e) => {
                cli::report(&e);
                if !grove::interrupt::is_interrupted(&e) {
                    grove::log::write_line(&format!("error: interrupted by {}", sig.as_str()));
                }
                cli::reclaim_after_failure(storage);
            }
        }
        grove::run::sys::die_of(sig);
        return ExitCode::from(128 + sig as u8);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A storage directory the user can't write says so, as ch-image does.
            match storage.and_then(|s| cli::read_only_storage(&e, s)) {
                Some(why) => cli::report(&*anyhow::Error::from(e).context(why)),
                None => cli::report(&e),
            }
            cli::reclaim_after_failure(storage);
            ExitCode::from(1)
        }
    }
}
