//! Integration tests: the real binaries, run as an unprivileged user even when the suite
//! runs as root. One module per source module.

mod build;
mod common;
mod registry;
mod convert;
mod run;
mod store;
