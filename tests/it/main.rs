//! Integration tests: the real binaries, run as an unprivileged user even when the suite
//! runs as root. One module per source module.

mod common;
mod build;
mod convert;
mod run;
mod store;
