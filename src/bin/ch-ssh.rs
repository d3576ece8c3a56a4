//! ch-ssh: run a command in a Charliecloud container on another host, through ssh.
//!
//! Thin: build the ssh command line with [`grove::run::ssh::ssh_argv`] and exec ssh.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

const USAGE: &str = "Usage: CH_RUN_ARGS=\"IMAGE [ARG...]\" ch-ssh [SSH-OPTION...] HOST CMD [ARG...]

Run a command in a Charliecloud container on HOST: runs
`ssh [SSH-OPTION...] HOST ch-run $CH_RUN_ARGS CMD [ARG...]`.

$CH_RUN_ARGS holds ch-run's arguments, including the image. Its words are
separated by spaces only; it is not shell syntax (no quotes or backslashes).

Example:

  $ export CH_RUN_ARGS=/data/foo
  $ ch-ssh example.com -- echo hello
  hello";

fn fail(msg: &str) -> ! {
    eprintln!("ch-ssh[{}]: error: {msg}", std::process::id());
    std::process::exit(1);
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("--help" | "-?") => {
            grove::dataln!("{USAGE}");
            return;
        }
        Some("--version") => {
            grove::dataln!("{}", env!("CARGO_PKG_VERSION"));
            return;
        }
        _ => {}
    }
    let argv = grove::run::ssh::ssh_argv(&args, std::env::var_os("CH_RUN_ARGS").as_deref())
        .unwrap_or_else(|e| fail(&e.to_string()));
    let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    fail(&format!("can't execute ssh: {err}"));
}
