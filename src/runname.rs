//! `ch-run IMAGE`: which root filesystem `IMAGE` names. A name of an image in the store
//! runs from its checkout, or from the union of its kept layers; anything else is a path
//! ([`crate::run::locate_image`]). The bridge between the store and `run`, which knows
//! nothing of the store (as `build` is for builds).
//!
//! Running by name takes the store's run lease ([`Store::run_lease`]) before the name is
//! resolved and holds it for the container's life, so no writer removes the directories.
//! A checkout or layer changed behind the store's back is refused (its stamp,
//! docs/store-format.md). Errors are [`RunError`]s, in ch-run's format.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::reference::Reference;
use crate::run::{self, Image, ImageKind, RunError, WriteMode};
use crate::store::{Layout, Store};

/// The image `arg` names, and the write mode to run it with (`write` as the options gave
/// it, turned into a union of layers for an image stored as layers). `write_flag` is
/// `-w`, refused by name; `unsafe_` is `--unsafe`. `ch_image` finds the `ch-image` that
/// checks an image out when it has no checkout yet.
pub fn locate(
    arg: &str,
    storage: &Path,
    write: WriteMode,
    write_flag: bool,
    unsafe_: bool,
    ch_image: impl FnOnce() -> Result<PathBuf, RunError>,
) -> Result<(Image, WriteMode), RunError> {
    if let Some(lowers) = stored_image(arg, storage, write_flag, ch_image)? {
        let write = match write {
            _ if lowers.len() == 1 => write,
            // -W over the layers: no checkout needed.
            WriteMode::Fake { size } => WriteMode::LayersFake {
                lowers: lowers.clone(),
                size,
            },
            _ => WriteMode::Layers {
                lowers: lowers.clone(),
                upper: None,
            },
        };
        let image = Image {
            path: lowers[0].clone(),
            kind: ImageKind::Dir,
            by_name: true,
        };
        return Ok((image, write));
    }
    // A name (not a path: no leading `/` or `.`) that is neither stored nor a file: the
    // FAQ's message, `can't find image: foo`.
    if !arg.starts_with(['/', '.'])
        && Reference::parse(arg).is_ok()
        && std::fs::symlink_metadata(arg).is_err()
        && !run::storage_image_path(storage, arg).is_dir()
    {
        return Err(RunError::io(
            format!("can't find image: {arg}"),
            &std::io::Error::from_raw_os_error(libc::ENOENT),
        ));
    }
    let image = run::locate_image(arg, storage, write_flag, unsafe_)?;
    if write_flag && image.kind == ImageKind::Dir {
        // Inside a storage directory other than the one in use (`-s`, or none given): a
        // checkout's files are shared with other images' through the pool, and a write
        // would change them all. Refused as for the one in use.
        if let Some(other) = image.path.ancestors().skip(1).find(|a| is_storage(a)) {
            return Err(RunError::msg(format!(
                "--write: can't write to the storage directory: {} (in {})",
                image.path.display(),
                other.display()
            ))
            .with_hint("run by name (read-only), or with -W for throwaway changes"));
        }
    }
    Ok((image, write))
}

/// Whether `dir` is a Grove storage directory (its `version` file names Grove's layout).
fn is_storage(dir: &Path) -> bool {
    std::fs::read(Layout::new(dir).version_file()).is_ok_and(|v| v.starts_with(b"grove "))
}

/// An image name in the store: the directories whose union is its tree (a checkout, or
/// the layers above one). `None` if `arg` is a path or no such image is stored. With
/// `write_flag` (`-w`), a stored image is an error, before anything is checked out.
fn stored_image(
    arg: &str,
    storage: &Path,
    write_flag: bool,
    ch_image: impl FnOnce() -> Result<PathBuf, RunError>,
) -> Result<Option<Vec<PathBuf>>, RunError> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return Ok(None);
    }
    let version = Layout::new(storage).version_file();
    match std::fs::metadata(&version) {
        Ok(m) if m.is_file() => {}
        // A storage directory its user can't enter (another user's, mode 0700 as Grove
        // makes it): said as Charliecloud's ch-run says it, not "can't find image".
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !Path::new(arg).exists() => {
            return Err(RunError::io(
                format!("can't stat: {}", version.display()),
                &e,
            ));
        }
        _ => return Ok(None),
    }
    let Ok(name) = Reference::parse(arg).map(Reference::with_default_tag) else {
        return Ok(None);
    };
    let store = match Store::open_existing(storage) {
        Ok(s) => s,
        // An unusable storage directory does not stop a run from a path.
        Err(_) if Path::new(arg).exists() => return Ok(None),
        Err(e) => return Err(RunError::msg(format!("storage: {e}"))),
    };
    let lookup = || {
        store
            .image(&name)
            .map_err(|e| RunError::msg(format!("storage: {e}")))
    };
    if lookup()?.is_none() {
        return Ok(None);
    }
    // Held by the container until it exits, so that no writer removes its files; the
    // name is resolved again under it.
    store
        .run_lease()
        .map_err(|e| RunError::msg(format!("storage: {e}")))?;
    let Some(commit) = lookup()? else {
        return Ok(None);
    };
    // Not even with --unsafe: the checkout's files would no longer be its commit's, and
    // later runs and builds would use them. Refused here, before a checkout is made for
    // nothing (it was: the whole image, only for this error).
    if write_flag {
        return Err(RunError::msg("--write invalid when running by name"));
    }
    // Checkouts and threads: not in this process (a threaded process can't enter a user
    // namespace), but in `ch-image checkout`, run with ch-run's verbosity (`-v` says what
    // a checkout wrote and linked).
    let ch_image = ch_image()?;
    let run_ch_image = |extra: &[&str]| -> Result<Option<Vec<u8>>, RunError> {
        // `--storage=DIR` and `--`: neither can be taken for another option.
        let mut storage_opt = std::ffi::OsString::from("--storage=");
        storage_opt.push(storage);
        let verbosity: Vec<&str> = match crate::log::level() {
            l if l < 0 => vec!["-q"],
            l => vec!["-v"; l.clamp(0, 3) as usize],
        };
        let out = std::process::Command::new(&ch_image)
            .arg(storage_opt)
            .args(verbosity)
            .arg("checkout")
            .args(extra)
            .arg(format!("--commit={commit}"))
            .args(["--", &name.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| RunError::io(format!("can't execute: {}", ch_image.display()), &e))?;
        Ok(out.status.success().then_some(out.stdout))
    };
    let view = store
        .view_existing(commit)
        .map_err(|e| RunError::msg(format!("storage: {e}")))?;
    let mut ready = view.is_some();
    for d in view.iter().flatten() {
        // Files another checkout linked since the stamp, a copied storage directory, or a
        // change: ch-image reads them against the commit (and refuses a changed tree).
        ready &= unchanged(d)?;
    }
    let dirs = match view {
        Some(v) if ready => {
            // The checkout under the image's layers (another image's, or none's) stays
            // while the image does, as a build's views keep theirs (docs/store-format.md,
            // "View marks"); under the run lease, no writer prunes meanwhile.
            store.mark_view_bottom(commit, &v);
            v
        }
        // ch-image checks out what the kept layers lack (the base below them, or the
        // whole image when none is kept), not the whole image again, and checks every
        // directory against its stamp: it refuses a changed tree, takes its changed
        // files out of the pool, and removes a copy that differs from what Grove made.
        _ => match run_ch_image(&["--view"])? {
            Some(out) => out
                .split(|b| *b == 0)
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(OsStr::from_bytes(d)))
                .collect(),
            None => return Err(RunError::msg(format!("can't use image: {name}"))),
        },
    };
    if dirs.is_empty() {
        return Err(RunError::msg(format!("can't check out image: {name}")));
    }
    Ok(Some(dirs))
}

/// Whether a checkout or layer is as stamped (docs/store-format.md). `false`: some of its
/// files must be read to tell ([`crate::store::stamp::Quick`]), or it changed (the
/// caller has `ch-image checkout --view` say so, which also keeps a checkout's changed
/// files from being shared again).
fn unchanged(dir: &Path) -> Result<bool, RunError> {
    use crate::store::stamp::{verify_quick, Quick, StampError};
    match verify_quick(dir) {
        Ok(q) => Ok(matches!(q, Quick::Same)),
        Err(StampError::Changed { .. }) => Ok(false),
        // Removed meanwhile by a ch-image that found it a copy that differs from what
        // Grove made: ch-image makes the view again.
        Err(StampError::Io(e)) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
    .map_err(|e| {
        let hint = e.hint();
        let e = RunError::msg(format!("storage: {e}"));
        match hint {
            Some(h) => e.with_hint(h),
            None => e,
        }
    })
}
