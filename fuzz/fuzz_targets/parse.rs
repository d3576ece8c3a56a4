//! Fuzz the Dockerfile parser and variable substitution: no input may panic.
//!
//! Run with `cargo +nightly fuzz run parse` from the repository root.

#![no_main]

use grove::build::dockerfile::{self, split_words};
use grove::build::subst::{self, Vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The whole text as one word, with both escape characters.
    for escape in ['\\', '`'] {
        let _ = subst::expand_word(text, escape, &|n: &str| {
            (n.len() < 3).then(|| n.to_string())
        });
        let _ = subst::check_word(text, escape);
        let _ = subst::expand_heredoc(text, escape, &subst::NoVars);
        let _ = split_words(text, escape);
        let _ = subst::shell_words(text, escape);
    }
    match dockerfile::parse(text, "fuzz") {
        Ok(d) => {
            let mut vars = Vars::new([("A".to_string(), "1".to_string())], d.escape());
            for i in &d.instructions {
                assert!(i.span.start_line <= i.span.end_line);
                let _ = i.display();
                let _ = vars.step(&i.kind);
            }
            let _ = vars.run_env();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
