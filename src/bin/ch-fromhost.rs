//! ch-fromhost: inject host files (shared libraries, executables) into an image directory
//! or an image in the store, as Charliecloud's `ch-fromhost(1)` does.
//!
//! Thin: parse the arguments with [`grove::fromhost::parse_args`], resolve the image, call
//! [`grove::fromhost::fromhost`], report errors.

#![forbid(unsafe_code)]

use grove::fromhost::{self, Request, Target, Tools};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "Inject files from the host into an image, with various magic.

Usage:

  $ ch-fromhost [OPTION ...] [FILE_OPTION ...] IMAGE

IMAGE is an image directory (changed in place) or the name of an image in the
storage directory (changed by a new commit that `ch-image history` shows).

Which files to inject (one or more required; can be repeated):

  -c, --cmd CMD    listed in the standard output of CMD
  -f, --file FILE  listed in file FILE
  -p, --path PATH  inject the file at PATH
  --nvidia         recommended by NVIDIA (via \"nvidia-container-cli list\")

Destination within image:

  -d, --dest DST   place following files in IMAGE/DST, overriding inference

Options:

  --print-lib, --lib-path
                      print inferred destination for shared libraries
  --no-ldconfig       don't run ldconfig even if we injected shared libraries
  -s, --storage DIR   storage directory for IMAGE names (default: as ch-image)
  -h, --help          print this help and exit
  -q, --quiet         print less; can be repeated
  -v, --verbose       list the injected files; can be repeated
  --version           print version and exit";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    }
    let args = match fromhost::parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ch-fromhost: error: {e}");
            eprintln!("hint: see ch-fromhost --help");
            return ExitCode::from(1);
        }
    };
    if args.help {
        grove::cli::write_stdout(&format!("{USAGE}\n"));
        return ExitCode::SUCCESS;
    }
    if args.version {
        grove::cli::write_stdout(&format!("{}\n", env!("CARGO_PKG_VERSION")));
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            grove::cli::report(&*e);
            ExitCode::from(1)
        }
    }
}

fn run(args: fromhost::Args) -> anyhow::Result<()> {
    grove::cli::set_verbosity(args.verbose, args.quiet)?;
    let image = args
        .image
        .ok_or_else(|| anyhow::anyhow!("no image specified"))?;
    if args.cray_mpi {
        anyhow::bail!("{}", fromhost::cray_mpi_refusal());
    }
    let as_dir = PathBuf::from(&image);
    let target = if grove::cli::is_image_dir_argument(&image) || as_dir.is_dir() {
        Target::Dir(as_dir)
    } else {
        Target::Stored {
            storage: grove::store::layout::storage_dir_from_env(
                args.storage.as_deref(),
                grove::store::layout::RelativeVariable::Refuse,
            )?,
            name: image,
        }
    };
    let req = Request {
        wanted: fromhost::collect_wanted(&args.files)?,
        print_lib: args.print_lib,
        no_ldconfig: args.no_ldconfig,
    };
    if let Some(lib) = fromhost::fromhost(&Tools::beside_self()?, &target, &req)? {
        grove::cli::write_stdout(&format!("{}\n", lib.display()));
    }
    Ok(())
}
