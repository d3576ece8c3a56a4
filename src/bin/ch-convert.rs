//! `ch-convert [-i FMT] [-o FMT] IN OUT`: convert images between the store (`ch-image`),
//! directories (`dir`) and tarballs (`tar`). Thin: the work is in the library.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use grove::convert::{self, Format, TarCompression};
use grove::reference::Reference;
use grove::store::{checkout, export, git, Store};
use grove::{cli, info, warn};

#[derive(Parser)]
#[command(version, about = "Convert an image from one format to another")]
struct Cli {
    /// Input format (ch-image, dir, tar); inferred if absent
    #[arg(short = 'i', long = "in-fmt", value_name = "FMT")]
    in_fmt: Option<String>,
    /// Output format (ch-image, dir, tar); inferred if absent
    #[arg(short = 'o', long = "out-fmt", value_name = "FMT")]
    out_fmt: Option<String>,
    /// Replace an existing output
    #[arg(short = 'f', long)]
    force: bool,
    /// Refuse to replace an existing output (the default; accepted for compatibility)
    #[arg(long)]
    no_clobber: bool,
    /// Dry run: print what would be done
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Storage directory for the ch-image format
    #[arg(short = 's', long = "storage", value_name = "DIR")]
    storage: Option<PathBuf>,
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
    /// Input image
    input: String,
    /// Output image
    output: String,
}

fn fmt_arg(given: &Option<String>, arg: &str) -> anyhow::Result<Format> {
    match given {
        Some(f) => Format::parse(f).with_context(|| format!("unknown format: {f}")),
        None => Ok(convert::infer(arg)),
    }
}

/// A path next to `out` for writing before the final rename.
fn staging(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.ch-convert.{}", std::process::id()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    cli::set_verbosity(cli.verbose, cli.quiet);
    let fin = fmt_arg(&cli.in_fmt, &cli.input)?;
    let fout = fmt_arg(&cli.out_fmt, &cli.output)?;
    if fin == fout {
        bail!(
            "input and output formats must be different: both {}",
            fin.name()
        );
    }
    if fin == Format::Squash || fout == Format::Squash {
        bail!("format squash: not yet supported by this ch-convert");
    }
    info!("input:   {:<9} {}", fin.name(), cli.input);
    info!("output:  {:<9} {}", fout.name(), cli.output);
    if cli.dry_run {
        return Ok(());
    }
    let storage = cli::storage_dir(cli.storage.clone())?;
    let store = Store::open(&storage)?;

    if fout == Format::ChImage {
        let name = Reference::parse(&cli.output)?.with_default_tag();
        if store.image(&name)?.is_some() && !cli.force {
            bail!("exists in storage, not replacing (use --force): {name}");
        }
        let lock = store.lock()?;
        let (_, warnings) = store
            .import(&lock, Path::new(&cli.input), &name)
            .with_context(|| format!("can't convert {}", cli.input))?;
        for w in warnings {
            warn!("{w}");
        }
        return Ok(());
    }

    let out = PathBuf::from(&cli.output);
    if fs::symlink_metadata(&out).is_ok() {
        if !cli.force {
            bail!("exists, not replacing (use --force): {}", out.display());
        }
    }
    // The input as a model: from the store, or imported (objects only, no ref).
    let repo = store.repo();
    let root = match fin {
        Format::ChImage => {
            let name = Reference::parse(&cli.input)?.with_default_tag();
            let commit = store.require_image(&name)?;
            git::read_image(&repo, commit)?.0
        }
        _ => {
            let (root, warnings) =
                grove::store::import::import_path(store.thread_safe(), Path::new(&cli.input))
                    .with_context(|| format!("can't read {}", cli.input))?;
            for w in warnings {
                warn!("{w}");
            }
            root
        }
    };
    let tmp = staging(&out);
    let result = (|| -> anyhow::Result<()> {
        match fout {
            Format::Dir => {
                checkout::materialize(store.thread_safe(), &root, &tmp, checkout::Policy::Exact)?
            }
            Format::Tar => {
                let f = fs::File::create(&tmp)
                    .with_context(|| format!("can't create {}", tmp.display()))?;
                let w = std::io::BufWriter::with_capacity(1 << 20, f);
                let mut w = match convert::tar_compression(&cli.output) {
                    TarCompression::None => export::write_tar(&repo, &root, w)?,
                    TarCompression::Gzip => {
                        let gz = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
                        export::write_tar(&repo, &root, gz)?.finish()?
                    }
                    TarCompression::Zstd => {
                        let mut z = zstd::stream::write::Encoder::new(w, 3)?;
                        z.multithread(
                            std::thread::available_parallelism()
                                .map(|n| n.get() as u32)
                                .unwrap_or(1),
                        )?;
                        export::write_tar(&repo, &root, z)?.finish()?
                    }
                    TarCompression::Xz => {
                        export::write_tar(&repo, &root, xz2::write::XzEncoder::new(w, 6))?
                            .finish()?
                    }
                };
                w.flush()?;
                w.get_ref().sync_all().ok();
            }
            Format::ChImage | Format::Squash => unreachable!("handled above"),
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = checkout::remove_tree(&tmp);
        return Err(e);
    }
    if fs::symlink_metadata(&out).is_ok() {
        checkout::remove_tree(&out).with_context(|| format!("can't replace {}", out.display()))?;
    }
    fs::rename(&tmp, &out)
        .with_context(|| format!("can't rename {} to {}", tmp.display(), out.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::report(&e);
            ExitCode::from(1)
        }
    }
}
