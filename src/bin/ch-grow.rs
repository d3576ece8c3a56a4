//! `ch-grow`: Charliecloud's earlier name for `ch-image`, kept so that scripts written for
//! it work unchanged. Runs the `ch-image` installed beside it with the same arguments.

#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let image = match std::env::current_exe() {
        Ok(p) => p.with_file_name("ch-image"),
        Err(e) => {
            eprintln!("ch-grow: error: can't find own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let err = Command::new(&image)
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("ch-grow: error: can't execute {}: {err}", image.display());
    ExitCode::from(1)
}
