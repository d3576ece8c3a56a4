//! Fuzz tarball import (the code `ch-image import`, `pull` and `ch-convert` share): no
//! input may panic or overflow the stack, and whatever imports must commit, read back
//! and check out without creating anything outside the destination directory.
//!
//! Run with `cargo +nightly fuzz run import_tar fuzz/seeds/import_tar` from the
//! repository root, or `bench/fuzz.sh`.

#![no_main]

use grove::store::import::{apply_layer, Whiteouts};
use grove::store::Dir;
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let ctx = common::context();
    let mut root = Dir::new(0o755);
    if apply_layer(
        ctx.store.thread_safe(),
        &mut root,
        data,
        std::path::Path::new("fuzz.tar"),
        Whiteouts::Keep,
    )
    .is_ok()
    {
        common::commit_and_check_out(ctx, root);
    }
});
