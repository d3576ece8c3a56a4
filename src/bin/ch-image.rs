//! `ch-image` (also answering to `ch-grow`): build and manage images in the storage
//! directory. Thin: parse arguments, resolve settings, call the library, render errors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use grove::reference::Reference;
use grove::store::Store;
use grove::{cli, info, warn};

#[derive(Parser)]
#[command(
    version,
    about = "Build and manage images; completely unprivileged",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
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
}

#[derive(Subcommand)]
enum Cmd {
    /// Import a directory or tarball as an image
    Import {
        /// Directory or tarball (plain, gzip, zstd, xz)
        path: PathBuf,
        /// Image name
        image_ref: String,
    },
    /// List images, or show details of one
    List {
        image_ref: Option<String>,
        /// Long listing (commit ids too)
        #[arg(short, long)]
        long: bool,
    },
    /// Delete images (names may be globs)
    Delete {
        #[arg(required = true)]
        image_glob: Vec<String>,
    },
    /// Restore a deleted image
    Undelete { image_ref: String },
    /// Delete the whole storage directory
    Reset,
    /// Print the storage directory path
    StoragePath,
    /// Print information about this installation
    Gestalt {
        #[command(subcommand)]
        what: Gestalt,
    },
}

#[derive(Subcommand)]
enum Gestalt {
    /// Print the storage directory path
    StoragePath,
}

fn parse_ref(s: &str) -> anyhow::Result<Reference> {
    Ok(Reference::parse(s)?.with_default_tag())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    cli::set_verbosity(cli.common.verbose, cli.common.quiet);
    let storage = cli::storage_dir(cli.common.storage.clone())?;
    match cli.cmd {
        Cmd::StoragePath
        | Cmd::Gestalt {
            what: Gestalt::StoragePath,
        } => {
            println!("{}", storage.display());
        }
        Cmd::Reset => {
            Store::reset(&storage)?;
            info!("deleted storage directory: {}", storage.display());
            Store::open(&storage)?;
        }
        Cmd::Import { path, image_ref } => {
            let name = parse_ref(&image_ref)?;
            if !path.exists() {
                bail!("can't import: not found: {}", path.display());
            }
            let store = Store::open(&storage)?;
            let lock = store.lock()?;
            info!("importing: {}", path.display());
            let t = std::time::Instant::now();
            let (commit, warnings) = store
                .import(&lock, &path, &name)
                .with_context(|| format!("can't import {}", path.display()))?;
            for w in &warnings {
                warn!("{w}");
            }
            info!(
                "imported: {name} ({}) in {:.2}s",
                &commit.to_string()[..12],
                t.elapsed().as_secs_f64()
            );
        }
        Cmd::List {
            image_ref: None,
            long,
        } => {
            let store = Store::open(&storage)?;
            for (name, commit) in store.list()? {
                if long {
                    println!("{name}\t{commit}");
                } else {
                    println!("{name}");
                }
            }
        }
        Cmd::List {
            image_ref: Some(r), ..
        } => {
            let name = parse_ref(&r)?;
            let store = Store::open(&storage)?;
            println!("details of image:    {name}");
            match store.image(&name)? {
                Some(commit) => {
                    let (_, cfg) = store.read(commit)?;
                    println!("in local storage:    yes");
                    println!("commit:              {commit}");
                    println!(
                        "checkout:            {}",
                        store.checkout_link(&name).display()
                    );
                    if let Some(a) = cfg.arch {
                        println!("architecture:        {a}");
                    }
                }
                None => println!("in local storage:    no"),
            }
        }
        Cmd::Delete { image_glob } => {
            let store = Store::open(&storage)?;
            let lock = store.lock()?;
            let all = store.list()?;
            for g in &image_glob {
                let pattern = if g.contains(':') || g.contains('*') || g.contains('?') {
                    g.clone()
                } else {
                    format!("{g}:latest")
                };
                let matches: Vec<&String> = all
                    .iter()
                    .map(|(n, _)| n)
                    .filter(|n| cli::glob_match(&pattern, n))
                    .collect();
                if matches.is_empty() {
                    bail!("no matching image, can't delete: {g}");
                }
                for m in matches {
                    store.delete(&lock, &parse_ref(m)?)?;
                    info!("deleted image: {m}");
                }
            }
        }
        Cmd::Undelete { image_ref } => {
            let name = parse_ref(&image_ref)?;
            let store = Store::open(&storage)?;
            let lock = store.lock()?;
            store.undelete(&lock, &name)?;
            info!("undeleted image: {name}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::report(&e);
            ExitCode::from(1)
        }
    }
}
