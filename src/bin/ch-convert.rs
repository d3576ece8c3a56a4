//! `ch-convert [-i FMT] [-o FMT] IN OUT`: convert images between the store (`ch-image`),
//! directories (`dir`), tarballs (`tar`), SquashFS (`squash`), OCI image layouts (`oci`)
//! and Docker's or Podman's storage (`docker`, `podman`, through those commands). Thin:
//! the work is in the library.

#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use grove::convert::{self, Format, TarCompression};
use grove::reference::Reference;
use grove::store::export::SquashComp;
use grove::store::{checkout, export, git, import, oci, Dir, ImageConfig, Store};
use grove::{cli, info, warn};
use std::process::{Command, Stdio};

#[derive(Parser)]
#[command(
    disable_version_flag = true,
    about = "Convert an image from one format to another",
    after_help = "FORMATS:
  ch-image  image in Grove's storage (inferred for names)
  dir       directory (inferred for paths starting with / ./ ../ or existing directories)
  tar       tarball; compression from the extension: .tar .tar.gz/.tgz .tar.zst/.tzst .tar.xz/.txz
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
  and machine: entries in byte order, owner root:root, every timestamp $SOURCE_DATE_EPOCH
  (0 if unset), no extended attributes, gzip without name or time.

MOUNT POINTS:
  SquashFS images are read-only, so ch-run cannot create the paths it binds. Missing ones
  are added to squash output: empty directories (mode 0755) /bin /dev /etc /mnt /mnt/0-9
  /proc /sys /tmp /usr and empty files (mode 0644) /etc/hosts /etc/resolv.conf. Existing
  entries, symlinks included, are left alone."
)]
struct Cli {
    /// Input format (ch-image, dir, tar, squash, oci, docker, podman); inferred if absent
    #[arg(short = 'i', long = "in-fmt", value_name = "FMT")]
    in_fmt: Option<String>,
    /// Output format (ch-image, dir, tar, squash, oci, docker, podman); inferred if absent
    #[arg(short = 'o', long = "out-fmt", value_name = "FMT")]
    out_fmt: Option<String>,
    /// Replace an existing output
    #[arg(short = 'f', long)]
    force: bool,
    /// Refuse to replace an existing output (the default; accepted for compatibility)
    #[arg(long)]
    no_clobber: bool,
    /// SquashFS compression: zstd (default, level 3), gzip, xz or lz4, optionally with a
    /// level as ALG:LEVEL (e.g. zstd:19)
    #[arg(long, value_name = "ALG[:LEVEL]")]
    compression: Option<String>,
    /// Dry run: print what would be done
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Keep extended attributes (user.*) through the conversion ($CH_XATTRS)
    #[arg(long, overrides_with = "no_xattrs")]
    xattrs: bool,
    /// Don't keep extended attributes (the default)
    #[arg(long = "no-xattrs")]
    no_xattrs: bool,
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

/// Whether `prog` is an executable on `$PATH`.
fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// An image read from the input: its files, config, tag and, for named inputs, its full
/// name.
struct Input {
    root: Dir,
    cfg: ImageConfig,
    tag: String,
    name: Option<String>,
}

fn full_name(name: &str) -> Option<String> {
    Reference::parse(name)
        .ok()
        .map(|r| r.with_default_tag().to_string())
}

fn tag_of(name: &str) -> String {
    Reference::parse(name)
        .map(|r| r.with_default_tag().tag.unwrap_or_else(|| "latest".into()))
        .unwrap_or_else(|_| "latest".into())
}

/// Read the input image into the store's object database (no ref) as a model.
fn read_input(store: &Store, fin: Format, input: &str, scratch: &Path) -> anyhow::Result<Input> {
    let ts = store.thread_safe();
    let warn_all = |w: Vec<String>| {
        for w in w {
            warn!("{w}");
        }
    };
    let path = Path::new(input);
    Ok(match fin {
        Format::ChImage => {
            let name = Reference::parse(input)?.with_default_tag();
            let commit = store.require_image(&name)?;
            let (root, cfg) = git::read_image(&store.repo(), commit)?;
            Input {
                root,
                cfg,
                tag: tag_of(input),
                name: Some(name.to_string()),
            }
        }
        Format::Dir | Format::Tar => {
            let (root, w) =
                import::import_path(ts, path).with_context(|| format!("can't read {input}"))?;
            warn_all(w);
            Input {
                root,
                cfg: ImageConfig::default(),
                tag: "latest".into(),
                name: None,
            }
        }
        Format::Squash => {
            let (root, w) = import::import_squash(ts, path, scratch)
                .with_context(|| format!("can't read {input}"))?;
            warn_all(w);
            Input {
                root,
                cfg: ImageConfig::default(),
                tag: "latest".into(),
                name: None,
            }
        }
        Format::Oci => {
            let md = fs::metadata(path).with_context(|| format!("can't read {input}"))?;
            let (root, cfg, w) = if md.is_dir() {
                oci::read_layout(ts, path)
            } else {
                let r =
                    oci::unpack_archive(path, scratch).and_then(|()| oci::read_layout(ts, scratch));
                let _ = checkout::remove_tree(scratch);
                r
            }
            .with_context(|| format!("can't read {input}"))?;
            warn_all(w);
            Input {
                root,
                cfg,
                tag: "latest".into(),
                name: None,
            }
        }
        Format::Docker | Format::Podman => {
            let tool = fin.tool().expect("docker and podman have tools");
            fs::create_dir_all(scratch)
                .with_context(|| format!("can't create {}", scratch.display()))?;
            let archive = scratch.join("image.tar");
            if input.starts_with('-') {
                bail!(
                    "image name must not start with '-' (it would be an option of {tool}): {input}"
                );
            }
            let mut cmd = Command::new(tool);
            cmd.arg("save");
            if fin == Format::Podman {
                cmd.args(["--format", "oci-archive"]);
            }
            cmd.arg("-o").arg(&archive).arg(input);
            let r = (|| -> anyhow::Result<Input> {
                let st = cmd.status().with_context(|| format!("can't run {tool}"))?;
                if !st.success() {
                    bail!("{tool} save {input} failed ({st})");
                }
                let layout = scratch.join("layout");
                oci::unpack_archive(&archive, &layout)?;
                fs::remove_file(&archive).ok();
                let (root, cfg, w) = oci::read_layout(ts, &layout)?;
                warn_all(w);
                Ok(Input {
                    root,
                    cfg,
                    tag: tag_of(input),
                    name: full_name(input),
                })
            })();
            let _ = checkout::remove_tree(scratch);
            r.with_context(|| format!("can't read {input} from {tool}"))?
        }
    })
}

/// `TOOL import` the image as NAME, with its config as `--change` instructions.
fn write_dockman(store: &Store, tool: &str, img: &Input, name: &str) -> anyhow::Result<()> {
    if name.starts_with('-') {
        bail!("image name must not start with '-' (it would be an option of {tool}): {name}");
    }
    let mut cmd = Command::new(tool);
    cmd.arg("import");
    for (k, v) in &img.cfg.env {
        cmd.arg("--change").arg(format!("ENV {k}={v}"));
    }
    if img.cfg.cwd != "/" {
        cmd.arg("--change").arg(format!("WORKDIR {}", img.cfg.cwd));
    }
    if let Some(c) = &img.cfg.cmd {
        cmd.arg("--change")
            .arg(format!("CMD {}", serde_json::to_string(c)?));
    }
    if let Some(e) = &img.cfg.entrypoint {
        cmd.arg("--change")
            .arg(format!("ENTRYPOINT {}", serde_json::to_string(e)?));
    }
    cmd.arg("-")
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut child = cmd.spawn().with_context(|| format!("can't run {tool}"))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let written = export::write_tar(&store.repo(), &img.root, std::io::BufWriter::new(stdin))
        .map_err(anyhow::Error::from)
        .and_then(|mut w| Ok(w.flush()?));
    let st = child.wait().with_context(|| format!("can't run {tool}"))?;
    if !st.success() {
        bail!("{tool} import failed ({st})");
    }
    written.with_context(|| format!("can't send the image to {tool}"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    cli::set_verbosity(cli.verbose, cli.quiet)?;
    let env_xattrs = std::env::var_os("CH_XATTRS").is_some_and(|v| !v.is_empty());
    grove::store::model::set_xattrs(!cli.no_xattrs && (cli.xattrs || env_xattrs));
    let mut fin = fmt_arg(&cli.in_fmt, &cli.input)?;
    // A plain tarball that holds an OCI layout is an oci-archive; one that holds a
    // `docker save` manifest is a docker-archive, read the same way.
    if cli.in_fmt.is_none()
        && fin == Format::Tar
        && convert::tar_compression(&cli.input) == TarCompression::None
        && (oci::is_oci_archive(Path::new(&cli.input))
            || oci::is_docker_archive(Path::new(&cli.input)))
    {
        fin = Format::Oci;
    }
    let fout = fmt_arg(&cli.out_fmt, &cli.output)?;
    if fin == Format::Dir && fout.tool().is_none() {
        // Read the user's 0000 files and directories without changing their modes (not
        // when docker or podman run later: they must see the user as the user).
        if let Err(e) = grove::run::setup::read_own_files_as_root() {
            grove::verbose!("reading as the user only: {}", e.report());
        }
    }
    if fin == fout {
        bail!(
            "input and output formats must be different: both {}",
            fin.name()
        );
    }
    for f in [fin, fout] {
        if let Some(tool) = f.tool() {
            if !on_path(tool) {
                bail!(
                    "format {}: the {tool} command is not installed (not found on $PATH)",
                    f.name()
                );
            }
        }
    }
    let (comp, level) = match &cli.compression {
        None => (SquashComp::Zstd, None),
        Some(_) if fout != Format::Squash => {
            bail!("--compression applies to squash output only; tar compression follows the output's extension")
        }
        Some(c) => {
            let (alg, level) = match c.split_once(':') {
                Some((a, l)) => (
                    a,
                    Some(l.parse::<u32>().ok().with_context(|| {
                        format!("invalid compression level in {c}: want ALG:NUMBER")
                    })?),
                ),
                None => (c.as_str(), None),
            };
            let alg = SquashComp::parse(alg).with_context(|| {
                format!("unknown SquashFS compression: {alg} (zstd, gzip, xz, lz4)")
            })?;
            (alg, level)
        }
    };
    if fout == Format::Squash {
        export::find_squash_tool()?;
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
        let scratch = store.scratch_path("convert");
        let img = read_input(&store, fin, &cli.input, &scratch)?;
        store
            .import_model(&lock, img.root, img.cfg, &name)
            .with_context(|| format!("can't convert {}", cli.input))?;
        return Ok(());
    }
    if let Some(tool) = fout.tool() {
        let img = read_input(
            &store,
            fin,
            &cli.input,
            &std::env::temp_dir().join(format!("ch-convert.{}", std::process::id())),
        )?;
        return write_dockman(&store, tool, &img, &cli.output);
    }

    let out = PathBuf::from(&cli.output);
    if fs::symlink_metadata(&out).is_ok() && !cli.force {
        bail!("exists, not replacing (use --force): {}", out.display());
    }
    let tmp = staging(&out);
    let scratch = tmp.with_extension("in");
    let img = read_input(&store, fin, &cli.input, &scratch)?;
    let repo = store.repo();
    let root = &img.root;
    let result = (|| -> anyhow::Result<()> {
        match fout {
            Format::Dir => {
                checkout::materialize(store.thread_safe(), root, &tmp, checkout::Policy::Exact)?
            }
            Format::Tar => {
                let f = fs::File::create(&tmp)
                    .with_context(|| format!("can't create {}", tmp.display()))?;
                let w = std::io::BufWriter::with_capacity(1 << 20, f);
                let mut w = match convert::tar_compression(&cli.output) {
                    TarCompression::None => export::write_tar(&repo, root, w)?,
                    TarCompression::Gzip => {
                        export::write_tar(&repo, root, export::ParGz::new(w, export::GZIP_LEVEL))?
                            .finish()?
                    }
                    TarCompression::Zstd => {
                        let mut z = zstd::stream::write::Encoder::new(w, 3)?;
                        z.multithread(
                            std::thread::available_parallelism()
                                .map(|n| n.get() as u32)
                                .unwrap_or(1),
                        )?;
                        export::write_tar(&repo, root, z)?.finish()?
                    }
                    TarCompression::Xz => {
                        export::write_tar(&repo, root, xz2::write::XzEncoder::new(w, 6))?
                            .finish()?
                    }
                };
                w.flush()?;
                w.get_ref().sync_all().ok();
            }
            Format::Squash => {
                let with_mounts = export::with_mount_points(root);
                let opts = export::SquashOptions {
                    comp,
                    level,
                    processors: std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1),
                    mtime: export::fixed_mtime(),
                    root_mode: root.mode,
                };
                export::write_squash(&repo, &with_mounts, &tmp, &opts)?;
            }
            Format::Oci => {
                let (root, dropped) = oci::without_whiteout_names(root);
                for p in dropped {
                    warn!("OCI layers can't hold names starting with .wh. (whiteouts): leaving out {p}");
                }
                let root = &root;
                if convert::oci_is_archive(&cli.output) {
                    let layout = tmp.with_extension("layout");
                    let r = oci::write_layout(
                        &repo,
                        root,
                        &img.cfg,
                        &img.tag,
                        img.name.as_deref(),
                        &layout,
                    )
                    .and_then(|()| oci::write_archive(&layout, &tmp));
                    let _ = checkout::remove_tree(&layout);
                    r?;
                } else {
                    oci::write_layout(&repo, root, &img.cfg, &img.tag, img.name.as_deref(), &tmp)?;
                }
            }
            Format::ChImage | Format::Docker | Format::Podman => unreachable!("handled above"),
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
    match run(grove::cli::parse_last_wins::<Cli>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::report(&e);
            ExitCode::from(1)
        }
    }
}
