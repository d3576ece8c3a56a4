//! Shared by the store fuzz targets: one store per process, and the checks every
//! imported model must pass.

use std::path::PathBuf;
use std::sync::OnceLock;

use grove::store::checkout::{self, Policy};
use grove::store::{git, Dir, ImageConfig, Store};

pub struct Context {
    pub store: Store,
    /// Parent of each checkout: must hold nothing but the checkout afterwards.
    pub jail: PathBuf,
}

/// The process's scratch store (under `$TMPDIR`, named by pid).
pub fn context() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("grove-fuzz-{}", std::process::id()));
        let _ = checkout::remove_tree(&base);
        std::fs::create_dir_all(&base).expect("create fuzz scratch directory");
        let store = Store::open(&base.join("storage")).expect("open fuzz store");
        let jail = base.join("jail");
        Context { store, jail }
    })
}

/// Commit `root`, read it back (as a fetched commit would be), check it out and export
/// it; nothing may appear outside the checkout directory.
pub fn commit_and_check_out(ctx: &Context, mut root: Dir) {
    let repo = ctx.store.repo();
    let Ok(commit) =
        git::write_image_commit(&repo, &mut root, &ImageConfig::default(), None, "IMPORT")
    else {
        return;
    };
    let (back, _) = git::read_image(&repo, commit).expect("a commit Grove wrote reads back");
    let _ = checkout::remove_tree(&ctx.jail);
    std::fs::create_dir(&ctx.jail).expect("create jail");
    let dest = ctx.jail.join("root");
    let _ = checkout::materialize(ctx.store.thread_safe(), &back, &dest, Policy::Exact);
    let names: Vec<_> = std::fs::read_dir(&ctx.jail)
        .expect("read jail")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        names.iter().all(|n| n == "root"),
        "checkout wrote outside its directory: {names:?}"
    );
    let _ = grove::store::export::write_tar(&repo, &back, std::io::sink());
}
