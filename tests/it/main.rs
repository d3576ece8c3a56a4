//! Integration tests: the real binaries, run as an unprivileged user even when the suite
//! runs as root. One module per source module.

mod bats_build;
mod bats_run;
mod build;
mod charliecloud_cli;
mod ci_doc;
mod common;
mod compact;
mod conformance;
mod convert;
mod convert_formats;
mod environment;
mod fromhost;
mod hostile;
mod interop;
mod join_slurm;
mod listing;
mod modes;
mod mount;
mod oci;
mod packaging;
mod pool;
mod progress;
mod provenance;
mod registry;
mod run;
mod run_conformance;
mod security;
mod settings;
mod slurm;
mod squash_export;
mod store;
mod stranger_build;
mod stranger_run;
mod stranger_store;
mod times;
