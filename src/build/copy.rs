//! COPY and ADD into a layer directory, with the semantics of the ch-image man page
//! (Docker's legacy builder): a directory source copies its contents; the destination is
//! a directory if it ends in `/`, if there are several sources, if the single source is a
//! directory, or if it already is a directory in the image; top-level symlinks among the
//! sources are followed (they were resolved by [`super::context::expand`]), deeper ones are
//! copied as symlinks; the destination is resolved inside the image, following the image's
//! own symlinks (absolute ones against the image root).
//!
//! Files are written into a fresh layer directory (an overlay upper directory in the
//! making); parents that exist in the image get the image's modes and times so that the
//! layer does not change them. Copied entries keep their source's modification time
//! (symlinks and directories too, directories set after their contents).

use crate::error::{IoError, IoResultExt};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::context::Ignore;
use crate::store::checkout::set_time;
use crate::store::model::{Dir, Mtime, Node, Times, XattrPolicy, Xattrs};

/// Errors of COPY/ADD.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("destination escapes the image or loops through symlinks: {0}")]
    Dest(String),
    /// Copying a file failed: reading it or writing its copy (a full disk names the
    /// copy, which is where the space ran out).
    #[error("can't copy {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("can't write to {0}: not a directory (a file in the image is in the way)")]
    NotDir(String),
    #[error("can't extract {member} from archive {}", archive.display())]
    Extract {
        archive: PathBuf,
        member: String,
        #[source]
        source: io::Error,
    },
    #[error("unsafe member in archive {}: {member}: {reason}", archive.display())]
    UnsafeMember {
        archive: PathBuf,
        member: String,
        reason: String,
    },
}

/// Resolve an absolute image path through the image's symlinks (all components, the
/// last one too if `follow_last`). Returns components of the real path.
pub fn resolve(model: &Dir, path: &str, follow_last: bool) -> Result<Vec<Vec<u8>>, CopyError> {
    let symlink = |p: &[u8]| -> Result<Option<Vec<u8>>, CopyError> {
        Ok(match model.get(p) {
            Some(Node::Symlink { target }) => Some(target.clone()),
            _ => None,
        })
    };
    resolve_with(path, follow_last, symlink)?.ok_or_else(|| CopyError::Dest(path.to_string()))
}

/// [`resolve`] with `symlink` telling the target of the image's symlink at a path
/// (components joined by `/`), `None` for anything else; `Ok(None)` when the path loops
/// through symlinks.
pub fn resolve_with<E>(
    path: &str,
    follow_last: bool,
    mut symlink: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, E>,
) -> Result<Option<Vec<Vec<u8>>>, E> {
    let mut todo: Vec<Vec<u8>> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(|c| c.as_bytes().to_vec())
        .collect();
    todo.reverse();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        out.push(c);
        let is_last = todo.is_empty();
        if is_last && !follow_last {
            break;
        }
        let joined = out.join(&b'/');
        if let Some(target) = symlink(&joined)? {
            hops += 1;
            if hops > 40 {
                return Ok(None);
            }
            out.pop();
            if target.first() == Some(&b'/') {
                out.clear();
            }
            for t in target.split(|b| *b == b'/').filter(|c| !c.is_empty()).rev() {
                todo.push(t.to_vec());
            }
        }
    }
    Ok(Some(out))
}

fn bytes_path(comps: &[Vec<u8>]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(&comps.join(&b'/')))
}

/// Create `comps` as directories under `layer`, giving existing image directories their
/// image modes.
pub fn make_parents(layer: &Path, model: &Dir, comps: &[Vec<u8>]) -> Result<PathBuf, CopyError> {
    let mut p = layer.to_path_buf();
    for i in 0..comps.len() {
        p.push(std::ffi::OsStr::from_bytes(&comps[i]));
        let image_path = comps[..=i].join(&b'/');
        let mode = match model.get(&image_path) {
            Some(Node::Dir(d)) => d.mode | 0o700,
            Some(_) => {
                return Err(CopyError::NotDir(
                    String::from_utf8_lossy(&image_path).into_owned(),
                ))
            }
            None => 0o755,
        };
        if !p.is_dir() {
            fs::create_dir(&p).at("create directory", &p)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).at("chmod", &p)?;
        }
    }
    Ok(p)
}

/// Give the directories of `comps` that exist in the image their exact image modes and
/// times again (deepest first), and the layer's root the image root's mode and time, once
/// the layer is populated: [`make_parents`] made them owner-writable so that files could
/// go in (and a COPY of a directory's contents into `/` gave the root that directory's),
/// and the layer's modes and times become the image's.
pub fn restore_parent_modes(layer: &Path, model: &Dir, comps: &[Vec<u8>]) -> Result<(), CopyError> {
    for i in (0..comps.len()).rev() {
        let rel = comps[..=i].join(&b'/');
        if let Some(Node::Dir(d)) = model.get(&rel) {
            let p = layer_path(layer, &comps[..=i]);
            if p.is_dir() {
                fs::set_permissions(&p, fs::Permissions::from_mode(d.mode)).at("chmod", &p)?;
                if let Some(t) = model.times.get(&rel) {
                    set_time(&p, t).at("set time of", &p)?;
                }
            }
        }
    }
    fs::set_permissions(layer, fs::Permissions::from_mode(model.mode)).at("chmod", layer)?;
    if let Some(t) = model.times.get(b"") {
        set_time(layer, t).at("set time of", layer)?;
    }
    Ok(())
}

/// What a source is, for deciding the destination's shape.
pub fn dest_is_dir(
    dest: &str,
    n_sources: usize,
    single_is_dir: bool,
    model: &Dir,
    dest_comps: &[Vec<u8>],
) -> bool {
    dest.ends_with('/')
        || n_sources > 1
        || single_is_dir
        || matches!(model.get(&dest_comps.join(&b'/')), Some(Node::Dir(_)))
}

/// The entries a COPY writes when it is made over the layer of an earlier run of the same
/// instruction on the same parent (a delta layer, docs/store-format.md): the sources'
/// entries that changed or are new, by path relative to the context (bytes, as the cache
/// key's manifest names them), and every directory above one, which the layer must hold
/// too (an overlay directory shows the attributes of its topmost copy).
#[derive(Debug, Default, Clone)]
pub struct Only {
    paths: std::collections::HashSet<Vec<u8>>,
    /// How many changed entries it was made from.
    changed: usize,
}

impl Only {
    /// From the changed entries' context-relative paths.
    pub fn new(changed: impl IntoIterator<Item = Vec<u8>>) -> Only {
        let mut o = Only::default();
        for p in changed {
            o.changed += 1;
            let mut end = p.len();
            while let Some(i) = p[..end].iter().rposition(|b| *b == b'/') {
                if !o.paths.insert(p[..i].to_vec()) {
                    break;
                }
                end = i;
            }
            o.paths.insert(p);
        }
        o
    }

    /// Whether the entry at context-relative `rel` is written.
    pub fn wants(&self, rel: &[u8]) -> bool {
        self.paths.contains(rel)
    }

    /// How many changed entries it was made from.
    pub fn changed(&self) -> usize {
        self.changed
    }
}

/// Join a context-relative path and a name (bytes).
fn join_bytes(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = rel.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

/// Copy a host path (file, or directory contents) to `to` inside the layer. `rel` is the
/// source's path relative to the context (`rel_bytes` the same as bytes); entries below
/// it that `ignore` excludes (`.dockerignore`) are not copied, as they are not hashed into
/// the cache key either. With `only`, entries it does not want are skipped (a source
/// directory itself is always written, with its mode, attributes and time, as a full copy
/// writes it); returns how many entries were written.
///
/// `exclude` holds the step's `--exclude` patterns, matched against paths relative to
/// `src` (BuildKit's rule), with `.dockerignore`'s syntax.
#[allow(clippy::too_many_arguments)]
pub fn copy_host(
    src: &Path,
    (rel, rel_bytes): (&str, &[u8]),
    ignore: &Ignore,
    exclude: &Ignore,
    to: &Path,
    xattrs: XattrPolicy,
    only: Option<&Only>,
) -> Result<usize, CopyError> {
    let md = fs::metadata(src).at("stat", src)?;
    let mut n = 1;
    if md.is_dir() {
        if !to.is_dir() {
            fs::create_dir_all(to).at("create directory", to)?;
        }
        n += copy_dir_contents(
            src,
            (rel, rel_bytes),
            "",
            (ignore, exclude),
            to,
            xattrs,
            only,
        )?;
        copy_xattrs(src, to, xattrs)?;
        let mode = md.permissions().mode() & 0o7777;
        fs::set_permissions(to, fs::Permissions::from_mode(mode | 0o700)).at("chmod", to)?;
        set_time(to, Mtime::of(&md)).at("set time of", to)?;
    } else if only.is_some_and(|o| !o.wants(rel_bytes)) {
        n = 0;
    } else if md.is_file() {
        copy_file(src, to, &md, xattrs)?;
    } else {
        // Opening a FIFO would wait for a writer forever; devices and sockets have no
        // content to copy.
        warn_skipped(src, &md);
    }
    Ok(n)
}

/// Expand a `COPY --from` source with wildcards (`*`, `?`, `[...]` in any component)
/// against another stage's tree: the matching absolute paths, sorted. Intermediate
/// symlinks are followed inside the image, as [`resolve`] does; as for context sources
/// (Python glob semantics, the man page), a wildcard does not match a leading dot unless
/// the pattern component starts with one. Names that are not UTF-8 are not matched.
pub fn glob_model(model: &Dir, pattern: &str) -> Result<Vec<String>, CopyError> {
    let comps: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut found: Vec<String> = vec![String::new()];
    for c in comps {
        let mut next = Vec::new();
        for prefix in &found {
            if !super::context::has_glob(c) {
                next.push(format!("{prefix}/{c}"));
                continue;
            }
            let real = resolve(model, if prefix.is_empty() { "/" } else { prefix }, true)?;
            let dir = if real.is_empty() {
                Some(model)
            } else {
                match model.get(&real.join(&b'/')) {
                    Some(Node::Dir(d)) => Some(d),
                    _ => None,
                }
            };
            let Some(dir) = dir else { continue };
            let glob = crate::glob::Glob::python(c);
            for name in dir.children.keys() {
                let Ok(name) = std::str::from_utf8(name) else {
                    continue;
                };
                if name.starts_with('.') && !c.starts_with('.') {
                    continue;
                }
                if glob.matches(name) {
                    next.push(format!("{prefix}/{name}"));
                }
            }
        }
        found = next;
    }
    // Literal components after a wildcard may name nothing (`/d/*/x`): keep what exists.
    found.retain(|p| {
        !p.is_empty()
            && resolve(model, p, false)
                .ok()
                .is_some_and(|c| c.is_empty() || model.get(&c.join(&b'/')).is_some())
    });
    // A pattern ending in `/` matches directories only (symlinks to them too), as
    // Python's glob, which Charliecloud's COPY uses: `COPY --from=s /d/*/ /x/` copies
    // the contents of `/d`'s directories, not its files.
    if pattern.ends_with('/') {
        found.retain(|p| {
            resolve(model, p, true).ok().is_some_and(|c| {
                c.is_empty() || matches!(model.get(&c.join(&b'/')), Some(Node::Dir(_)))
            })
        });
    }
    found.sort();
    Ok(found)
}

/// For `COPY --parents`: create under `dir` the directories leading to context path
/// `rel` (its parents, not `rel` itself), each with the mode (kept owner-accessible) of
/// the context directory it stands for. Their times go to `times`, for the caller to set
/// once everything is copied into them.
pub fn make_context_parents(
    context: &Path,
    rel: &[u8],
    dir: &Path,
    times: &mut Vec<(PathBuf, Mtime)>,
) -> Result<(), CopyError> {
    let comps: Vec<&[u8]> = rel
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut src = context.to_path_buf();
    let mut to = dir.to_path_buf();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        let c = std::ffi::OsStr::from_bytes(c);
        src.push(c);
        to.push(c);
        // `symlink_metadata`: a symlink in the layer is replaced, never followed.
        let is_dir = fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
        if !is_dir {
            if fs::symlink_metadata(&to).is_ok() {
                fs::remove_file(&to).at("replace", &to)?;
            }
            fs::create_dir(&to).at("create directory", &to)?;
            let md = fs::metadata(&src).at("stat", &src)?;
            fs::set_permissions(
                &to,
                fs::Permissions::from_mode((md.permissions().mode() & 0o7777) | 0o700),
            )
            .at("chmod", &to)?;
            times.push((to.clone(), Mtime::of(&md)));
        }
    }
    Ok(())
}

/// The mode of `COPY --chmod=MODE`: octal digits (Docker's `0644`, `755`), at most
/// `07777`. `None` if `s` is not such a mode.
pub fn parse_chmod(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// Give `path` and, if it is a directory, everything below it the permission bits `mode`
/// (`COPY --chmod`; symlinks have none). As for every copied entry, directories stay
/// owner-accessible and files owner-readable so that the layer can be read back; times are
/// kept (chmod changes none).
pub fn chmod_tree(path: &Path, mode: u32) -> Result<(), CopyError> {
    let md = fs::symlink_metadata(path).at("stat", path)?;
    if md.file_type().is_symlink() {
        return Ok(());
    }
    if md.is_dir() {
        for e in fs::read_dir(path).at("read directory", path)? {
            let e = e.at("read directory", path)?;
            chmod_tree(&e.path(), mode)?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700)).at("chmod", path)?;
    } else {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o400)).at("chmod", path)?;
    }
    Ok(())
}

/// Warn that a FIFO, socket or device file of the context is not copied.
fn warn_skipped(path: &Path, md: &fs::Metadata) {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    let kind = if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "device file"
    } else {
        "special file"
    };
    // No keyword: COPY, ADD and a `RUN --mount=type=bind` copy of the context all come
    // here, under the progress line of their step.
    crate::warn!("not copying {kind}: {}", path.display());
}

/// With `--xattrs` (`$CH_XATTRS`), give `to` the `user.*` extended attributes of `src`,
/// as import does; the layer records them. `to` is made owner-writable first (the kernel
/// checks write permission for `user.*` attributes); the caller sets its final mode.
fn copy_xattrs(src: &Path, to: &Path, xattrs: XattrPolicy) -> Result<(), CopyError> {
    if !xattrs.record() {
        return Ok(());
    }
    set_xattrs(&crate::store::model::read_xattrs(src), to)
}

/// Give `to` the extended attributes `attrs` (`user.*` only: the others are not the
/// user's to set; not `user.overlay.*`, which the layer would read as a whiteout or an
/// opaque directory: [`crate::store::model::is_image_xattr`]), making it owner-writable
/// first; the caller sets its final mode.
pub fn set_xattrs(attrs: &[(Vec<u8>, Vec<u8>)], to: &Path) -> Result<(), CopyError> {
    use crate::store::model::is_image_xattr;
    if !attrs.iter().any(|(n, _)| is_image_xattr(n)) {
        return Ok(());
    }
    let mode = fs::metadata(to).at("stat", to)?.permissions().mode();
    fs::set_permissions(to, fs::Permissions::from_mode(mode | 0o600)).at("chmod", to)?;
    for (name, value) in attrs.iter().filter(|(n, _)| is_image_xattr(n)) {
        xattr::set(to, std::ffi::OsStr::from_bytes(name), value)
            .at("set extended attribute on", to)?;
    }
    Ok(())
}

/// Copy a regular file with its permission bits (kept readable by the owner, so that the
/// layer can be read back; a read-only file stays read-only) and its modification time.
fn copy_file(
    src: &Path,
    to: &Path,
    md: &fs::Metadata,
    xattrs: XattrPolicy,
) -> Result<(), CopyError> {
    let mode = md.permissions().mode() & 0o7777;
    if let Ok(m) = fs::symlink_metadata(to) {
        if m.is_dir() {
            fs::remove_dir_all(to).at("replace", to)?;
        } else {
            fs::remove_file(to).at("replace", to)?;
        }
    }
    fs::copy(src, to).map_err(|source| CopyError::Copy {
        from: src.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })?;
    copy_xattrs(src, to, xattrs)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode | 0o400)).at("chmod", to)?;
    set_time(to, Mtime::of(md)).at("set time of", to)?;
    Ok(())
}

/// Copy the entries of directory `src` into `to`; returns how many were written.
/// `srel` is `src` relative to the COPY source (for `exclude`), `rel` relative to the
/// context (for `ignore`).
fn copy_dir_contents(
    src: &Path,
    (rel, rel_bytes): (&str, &[u8]),
    srel: &str,
    (ignore, exclude): (&Ignore, &Ignore),
    to: &Path,
    xattrs: XattrPolicy,
    only: Option<&Only>,
) -> Result<usize, CopyError> {
    let mut names: Vec<_> = fs::read_dir(src)
        .at("read directory", src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .at("read directory", src)?;
    names.sort();
    let mut written = 0;
    for n in names {
        let r = if rel.is_empty() {
            n.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", n.to_string_lossy())
        };
        let sr = if srel.is_empty() {
            n.to_string_lossy().into_owned()
        } else {
            format!("{srel}/{}", n.to_string_lossy())
        };
        // An excluded directory is still walked for what a `!` rule re-includes; it is
        // kept only if something below it is (Docker's rule).
        let (ig, ex) = (ignore.excluded(&r), exclude.excluded(&sr));
        let reinclude_only = ig || ex;
        let dropped =
            (ig && !ignore.may_reinclude_below(&r)) || (ex && !exclude.may_reinclude_below(&sr));
        if dropped {
            continue;
        }
        let rb = join_bytes(rel_bytes, n.as_bytes());
        if only.is_some_and(|o| !o.wants(&rb)) {
            continue;
        }
        let s = src.join(&n);
        let d = to.join(&n);
        let md = fs::symlink_metadata(&s).at("stat", &s)?;
        let ft = md.file_type();
        if reinclude_only {
            if !ft.is_dir() {
                continue;
            }
            // An earlier source of the step may have put a symlink or file here: never
            // descend through it (that would write onto its target).
            let existed = match fs::symlink_metadata(&d) {
                Ok(m) if m.is_dir() => true,
                Ok(_) => {
                    fs::remove_file(&d).at("replace", &d)?;
                    false
                }
                Err(_) => false,
            };
            if !existed {
                fs::create_dir(&d).at("create directory", &d)?;
            }
            let below = copy_dir_contents(&s, (&r, &rb), &sr, (ignore, exclude), &d, xattrs, only)?;
            // Over an earlier layer (`only`) the directory is written when it changed
            // itself (its key entry, recorded when something below is re-included).
            if below == 0 && only.is_none() {
                if !existed {
                    fs::remove_dir(&d).at("remove", &d)?;
                }
                continue;
            }
            written += 1 + below;
            fs::set_permissions(
                &d,
                fs::Permissions::from_mode((md.permissions().mode() & 0o7777) | 0o700),
            )
            .at("chmod", &d)?;
            set_time(&d, Mtime::of(&md)).at("set time of", &d)?;
            continue;
        }
        written += 1;
        if ft.is_symlink() {
            let t = fs::read_link(&s).at("read symlink", &s)?;
            let _ = fs::remove_file(&d);
            std::os::unix::fs::symlink(&t, &d).at("create symlink", &d)?;
            set_time(&d, Mtime::of(&md)).at("set time of", &d)?;
        } else if ft.is_dir() {
            if fs::symlink_metadata(&d).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&d).at("replace", &d)?;
            }
            if !d.is_dir() {
                fs::create_dir(&d).at("create directory", &d)?;
            }
            written += copy_dir_contents(&s, (&r, &rb), &sr, (ignore, exclude), &d, xattrs, only)?;
            copy_xattrs(&s, &d, xattrs)?;
            fs::set_permissions(
                &d,
                fs::Permissions::from_mode((md.permissions().mode() & 0o7777) | 0o700),
            )
            .at("chmod", &d)?;
            set_time(&d, Mtime::of(&md)).at("set time of", &d)?;
        } else if ft.is_file() {
            copy_file(&s, &d, &md, xattrs)?;
        } else {
            // FIFOs, sockets and devices in a context are not copied.
            warn_skipped(&s, &md);
        }
    }
    Ok(written)
}

/// Copy an image path of another stage (`COPY --from`) to `to` inside the layer, reading
/// file contents from the object database. `times` are the times of `node` (`b""`) and
/// below, as [`Times::subtree`] gives them; `xattrs` the extended attributes of `node`
/// and below, as [`xattrs_subtree`] gives them (empty without `--xattrs`, `$CH_XATTRS`).
pub fn copy_from_model(
    repo: &gix::Repository,
    node: &Node,
    to: &Path,
    times: &Times,
    xattrs: &Xattrs,
) -> Result<(), CopyError> {
    copy_node(repo, node, to, times, xattrs, &mut Vec::new())
}

/// The extended attributes of image path `prefix` (as `b""`) and below (relative to it),
/// from an image root's attributes by path.
pub fn xattrs_subtree(all: &Xattrs, prefix: &[u8]) -> Xattrs {
    if prefix.is_empty() {
        return all.clone();
    }
    let mut lo = prefix.to_vec();
    lo.push(b'/');
    let mut hi = prefix.to_vec();
    hi.push(b'/' + 1);
    let mut out: Xattrs = all
        .range(lo.clone()..hi)
        .map(|(k, v)| (k[lo.len()..].to_vec(), v.clone()))
        .collect();
    if let Some(v) = all.get(prefix) {
        out.insert(Vec::new(), v.clone());
    }
    out
}

fn copy_node(
    repo: &gix::Repository,
    node: &Node,
    to: &Path,
    times: &Times,
    xattrs: &Xattrs,
    rel: &mut Vec<u8>,
) -> Result<(), CopyError> {
    match node {
        Node::Dir(d) => {
            if !to.is_dir() {
                let _ = fs::remove_file(to);
                fs::create_dir_all(to).at("create directory", to)?;
            }
            for (name, child) in &d.children {
                let len = rel.len();
                if len > 0 {
                    rel.push(b'/');
                }
                rel.extend_from_slice(name);
                copy_node(
                    repo,
                    child,
                    &to.join(std::ffi::OsStr::from_bytes(name)),
                    times,
                    xattrs,
                    rel,
                )?;
                rel.truncate(len);
            }
            if let Some(x) = xattrs.get(rel.as_slice()) {
                set_xattrs(x, to)?;
            }
            fs::set_permissions(to, fs::Permissions::from_mode(d.mode | 0o700)).at("chmod", to)?;
        }
        Node::File(f) => {
            // Streamed, with bounded memory (a big blob is never held whole; holes stay
            // holes), as a checkout writes it.
            let blob = crate::store::git::open_blob(repo, f.oid).map_err(|e| {
                CopyError::Io(IoError {
                    action: "read blob for",
                    path: to.to_path_buf(),
                    source: io::Error::other(e.to_string()),
                })
            })?;
            let _ = fs::remove_file(to);
            let mut file = fs::File::create(to).at("create file", to)?;
            crate::store::checkout::write_blob(blob, &mut file).at("write", to)?;
            drop(file);
            fs::set_permissions(to, fs::Permissions::from_mode((f.mode & !0o6000) | 0o600))
                .at("chmod", to)?;
            if let Some(x) = xattrs.get(rel.as_slice()) {
                set_xattrs(x, to)?;
            }
        }
        Node::Symlink { target } => {
            let _ = fs::remove_file(to);
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), to)
                .at("create symlink", to)?;
        }
        Node::Fifo { .. } => return Ok(()),
    }
    if let Some(t) = times.get(rel) {
        set_time(to, t).at("set time of", to)?;
    }
    Ok(())
}

/// The layer path for image path components.
pub fn layer_path(layer: &Path, comps: &[Vec<u8>]) -> PathBuf {
    layer.join(bytes_path(comps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Dir;

    #[test]
    fn wildcards_expand_against_a_stage_tree() {
        let mut d = Dir::new(0o755);
        for f in [
            &b"rd/a.txt"[..],
            b"rd/b.txt",
            b"rd/.h.txt",
            b"rd/sub/i.txt",
            b"x",
        ] {
            d.insert(f, Node::Fifo { mode: 0o644 }).unwrap();
        }
        d.insert(
            b"link",
            Node::Symlink {
                target: b"rd".to_vec(),
            },
        )
        .unwrap();
        assert_eq!(
            glob_model(&d, "/rd/*.txt").unwrap(),
            ["/rd/a.txt", "/rd/b.txt"]
        );
        assert_eq!(glob_model(&d, "/rd/.*.txt").unwrap(), ["/rd/.h.txt"]);
        assert_eq!(glob_model(&d, "/link/[a]*").unwrap(), ["/link/a.txt"]);
        assert_eq!(
            glob_model(&d, "/*/*/i.txt").unwrap(),
            ["/link/sub/i.txt", "/rd/sub/i.txt"]
        );
        assert!(glob_model(&d, "/rd/*/nope").unwrap().is_empty());
        assert!(glob_model(&d, "/x/*").unwrap().is_empty());
    }

    #[test]
    fn chmod_modes_are_octal_up_to_07777() {
        assert_eq!(parse_chmod("0644"), Some(0o644));
        assert_eq!(parse_chmod("755"), Some(0o755));
        assert_eq!(parse_chmod("4755"), Some(0o4755));
        assert_eq!(parse_chmod("07777"), Some(0o7777));
        for bad in ["", "u+x", "0o644", "8", "17777", "-1", "644 ", "000000"] {
            assert_eq!(parse_chmod(bad), None, "{bad:?}");
        }
    }

    fn model() -> Dir {
        let mut d = Dir::new(0o755);
        d.insert(b"usr/bin", Node::Dir(Dir::new(0o755))).unwrap();
        d.insert(
            b"bin",
            Node::Symlink {
                target: b"usr/bin".to_vec(),
            },
        )
        .unwrap();
        d.insert(
            b"abs",
            Node::Symlink {
                target: b"/usr".to_vec(),
            },
        )
        .unwrap();
        d.insert(
            b"loop",
            Node::Symlink {
                target: b"loop".to_vec(),
            },
        )
        .unwrap();
        d
    }

    #[test]
    fn destination_follows_image_symlinks_inside_the_image() {
        let m = model();
        assert_eq!(
            resolve(&m, "/bin/foo", true).unwrap(),
            vec![b"usr".to_vec(), b"bin".to_vec(), b"foo".to_vec()]
        );
        assert_eq!(
            resolve(&m, "/abs/bin", true).unwrap(),
            vec![b"usr".to_vec(), b"bin".to_vec()]
        );
        assert_eq!(
            resolve(&m, "/../../etc", true).unwrap(),
            vec![b"etc".to_vec()]
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        assert!(matches!(
            resolve(&model(), "/loop/x", true),
            Err(CopyError::Dest(_))
        ));
    }

    #[test]
    fn only_wants_changed_entries_and_the_directories_above_them() {
        let o = Only::new([b"src/a/b/f".to_vec(), b"src/g".to_vec(), b"top".to_vec()]);
        for want in [
            &b"src"[..],
            b"src/a",
            b"src/a/b",
            b"src/a/b/f",
            b"src/g",
            b"top",
        ] {
            assert!(o.wants(want), "{}", String::from_utf8_lossy(want));
        }
        for not in [&b"src/a/b/h"[..], b"src/h", b"sr", b"src/a/b/f/x", b""] {
            assert!(!o.wants(not), "{}", String::from_utf8_lossy(not));
        }
        assert_eq!(o.changed(), 3);
    }

    #[test]
    fn destination_shape() {
        let m = model();
        let c = resolve(&m, "/usr/bin", true).unwrap();
        assert!(dest_is_dir("/usr/bin", 1, false, &m, &c));
        let c = resolve(&m, "/x", true).unwrap();
        assert!(!dest_is_dir("/x", 1, false, &m, &c));
        assert!(dest_is_dir("/x/", 1, false, &m, &c));
        assert!(dest_is_dir("/x", 2, false, &m, &c));
    }
}
