//! Grove: unprivileged container image tools built on a git object database.
//!
//! Module boundaries (see `../shared/STYLE.md` and `docs/`):
//! - [`store`] stores trees, metadata and refs; it knows nothing of Dockerfiles.
//! - [`run`] runs a command in a root filesystem path; it knows nothing of the store.
//! - [`build`] is the only module that uses both.
//! - `src/bin/` is thin: arguments, settings, errors, exit codes.
//!
//! `unsafe` code is denied everywhere but in `run::sys`, the one module that needs it
//! (a lint, checked by `cargo clippy` in CI, not a convention).

#![deny(unsafe_code)]

pub mod build;
pub mod cli;
pub mod convert;
pub mod error;
pub mod fromhost;
pub mod glob;
pub mod hint;
pub mod image;
pub mod interrupt;
pub mod log;
pub mod oci;
pub mod progress;
pub mod provenance;
pub mod reference;
pub mod registry;
pub mod run;
pub mod runname;
pub mod store;
pub mod version;
