//! Fuzz OCI layer application (registry pull, `ch-convert` from OCI layouts and `docker
//! save` archives): the input is split into two layers applied bottom first with
//! whiteouts on. No input may panic, and whatever applies must commit, read back and
//! check out without creating anything outside the destination directory.
//!
//! Run with `cargo +nightly fuzz run apply_layer fuzz/seeds/apply_layer` from the
//! repository root, or `bench/fuzz.sh`.

#![no_main]

use grove::store::import::{apply_layer, Whiteouts};
use grove::store::Dir;
use libfuzzer_sys::fuzz_target;

#[path = "common/mod.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // The first two bytes say where the second layer starts (in 512-byte blocks).
    let (split, rest) = match data {
        [a, b, rest @ ..] => ((usize::from(*a) << 8 | usize::from(*b)) * 512, rest),
        _ => return,
    };
    let (lower, upper) = rest.split_at(split.min(rest.len()));
    let ctx = common::context();
    let mut root = Dir::new(0o755);
    for (i, layer) in [lower, upper].into_iter().enumerate() {
        let label = format!("layer{i}");
        if apply_layer(
            ctx.store.thread_safe(),
            &mut root,
            layer,
            std::path::Path::new(&label),
            Whiteouts::Apply,
        )
        .is_err()
        {
            return;
        }
    }
    common::commit_and_check_out(ctx, root);
});
