//! `grove-gen`: write the man pages and shell completions of the commands, generated from
//! the same clap definitions as their `--help` (packaging only; not installed).
//!
//! `grove-gen man OUTDIR` writes `ch-image.1`, `ch-image-SUBCOMMAND.1`, `ch-run.1`,
//! `ch-convert.1` (clap_mangen, followed by the prose of `packaging/man/*.sections`), and
//! `ch-ssh.1`, `ch-fromhost.1` (hand-written: those commands parse their arguments by
//! hand). `grove-gen completions OUTDIR` writes `bash/CMD`, `zsh/_CMD` and `fish/CMD.fish`
//! for `ch-image`, `ch-grow`, `ch-run` and `ch-convert` (clap_complete), the bash ones
//! completing image names from `ch-image list` where a command takes one.
//!
//! The commands' `Cli` types are reached by compiling their files here as modules; their
//! `main` functions are unused in this program.

#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[allow(dead_code)]
#[path = "ch-image.rs"]
mod ch_image;

#[allow(dead_code)]
#[path = "ch-run.rs"]
mod ch_run;

#[allow(dead_code)]
#[path = "ch-convert.rs"]
mod ch_convert;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commands with clap definitions, by name, each with the prose of its man page.
fn commands() -> Vec<(&'static str, clap::Command, &'static str)> {
    vec![
        (
            "ch-image",
            ch_image::Cli::command(),
            include_str!("../../packaging/man/ch-image.sections"),
        ),
        (
            "ch-run",
            ch_run::Cli::command(),
            include_str!("../../packaging/man/ch-run.sections"),
        ),
        (
            "ch-convert",
            ch_convert::Cli::command(),
            include_str!("../../packaging/man/ch-convert.sections"),
        ),
    ]
}

/// Pages written by hand, by file name.
const HAND_PAGES: [(&str, &str); 2] = [
    ("ch-ssh.1", include_str!("../../packaging/man/ch-ssh.1")),
    (
        "ch-fromhost.1",
        include_str!("../../packaging/man/ch-fromhost.1"),
    ),
];

/// `cmd` named `name` everywhere (clap's derive names it after the package otherwise).
fn named(cmd: clap::Command, name: &'static str) -> clap::Command {
    let mut cmd = cmd.name(name).bin_name(name).display_name(name);
    cmd.build();
    cmd
}

fn man_page(cmd: &clap::Command, extra: &str, see_also: &str) -> anyhow::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("Grove {VERSION}"))
        .manual("Grove manual");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        // clap_mangen calls the after-help text EXTRA; it holds notes and examples.
        let mut extra = Vec::new();
        man.render_extra_section(&mut extra)?;
        // The text is laid out already (tables, examples): no filling.
        let extra = String::from_utf8_lossy(&extra).replacen(".SH EXTRA\n", ".SH NOTES\n.nf\n", 1);
        out.extend_from_slice(extra.as_bytes());
        if !extra.ends_with('\n') {
            out.push(b'\n');
        }
        out.extend_from_slice(b".fi\n");
    }
    out.extend_from_slice(extra.as_bytes());
    if !extra.is_empty() && !extra.ends_with('\n') {
        out.push(b'\n');
    }
    writeln!(out, ".SH \"SEE ALSO\"\n{see_also}")?;
    Ok(out)
}

const SEE_ALSO: &str = "\\fBch-image\\fR(1), \\fBch-run\\fR(1), \\fBch-convert\\fR(1), \
\\fBch-ssh\\fR(1), \\fBch-fromhost\\fR(1); the differences from Charliecloud: \
/usr/share/doc/grove/docs/compatibility.md (docs/compatibility.md in the source)";

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("can't write {}", path.display()))
}

fn man(out: &Path) -> anyhow::Result<()> {
    for (name, cmd, extra) in commands() {
        let cmd = named(cmd, name);
        write(
            &out.join(format!("{name}.1")),
            &man_page(&cmd, extra, SEE_ALSO)?,
        )?;
        // One page per subcommand, as git's: `man ch-image-build`.
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let full = format!("{name}-{}", sub.get_name());
            let sub = sub.clone().display_name(full.clone());
            let see = format!("\\fB{name}\\fR(1)");
            write(&out.join(format!("{full}.1")), &man_page(&sub, "", &see)?)?;
        }
    }
    for (file, text) in HAND_PAGES {
        write(
            &out.join(file),
            text.replace("@VERSION@", VERSION).as_bytes(),
        )?;
    }
    Ok(())
}

/// Subcommands of `ch-image` whose operands are images.
const IMAGE_SUBCOMMANDS: &str = "history|inspect|list|delete|undelete|push|diff|verify";

/// Bash code appended to a command's generated completion (whose completion function is
/// `generated`): complete image names from the storage directory (`ch-image list`) where
/// an image is expected, as well as what clap's function offers.
fn bash_images(name: &str, cmd: &clap::Command, generated: &str) -> String {
    // Options whose value is the next word, so that it is not taken for an operand.
    let mut value_opts = Vec::new();
    for a in cmd.get_arguments().filter(|a| !a.is_positional()) {
        let takes = a.get_num_args().is_some_and(|n| n.min_values() > 0)
            || (a.get_num_args().is_none() && a.get_action().takes_values());
        if takes && !a.is_require_equals_set() {
            value_opts.extend(a.get_short().map(|c| format!("-{c}")));
            value_opts.extend(a.get_long().map(|l| format!("--{l}")));
        }
    }
    let value_opts = if value_opts.is_empty() {
        "--".to_string() // matches nothing: "--" is handled before
    } else {
        value_opts.join("|")
    };
    let subs: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
    // What to do with operand word w (before the cursor); then whether to offer images.
    let (on_operand, offer) = if subs.is_empty() {
        // ch-run: IMAGE is the first operand; ch-convert: both operands may be images.
        let first_only = if name == "ch-run" { "return" } else { ":" };
        (first_only.to_string(), "true".to_string())
    } else {
        (
            format!(
                "[ -n \"$sub\" ] || case $w in {}) sub=$w ;; esac",
                subs.join("|")
            ),
            format!("case $sub in {IMAGE_SUBCOMMANDS}) true ;; *) false ;; esac"),
        )
    };
    let fun = format!("_grove_{}", name.replace('-', "_"));
    format!(
        r#"
# Grove: also image names from the storage directory where an image is expected.
{fun}() {{
    {generated} "$@"
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev= sub= w i
    case $cur in -*) return ;; esac
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        [ "$w" = -- ] && return
        case $prev in {value_opts}) prev=; continue ;; esac
        prev=$w
        case $w in -*) continue ;; esac
        {on_operand}
    done
    case ${{COMP_WORDS[COMP_CWORD-1]}} in {value_opts}) return ;; esac
    {offer} || return
    local IFS=$'\n'
    COMPREPLY+=($(compgen -W "$(ch-image list 2>/dev/null)" -- "$cur"))
}}
complete -F {fun} -o bashdefault -o default {name}
"#
    )
}

/// The function a generated bash completion registers (`complete -F FUNCTION ...`).
fn bash_function(script: &str) -> anyhow::Result<String> {
    script
        .lines()
        .find_map(|l| l.trim().strip_prefix("complete -F "))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .context("generated bash completion registers no function")
}

fn completions(out: &Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    let dirs = [
        ("bash", Shell::Bash),
        ("zsh", Shell::Zsh),
        ("fish", Shell::Fish),
    ];
    for (dir, _) in dirs {
        fs::create_dir_all(out.join(dir))
            .with_context(|| format!("can't create {}", out.join(dir).display()))?;
    }
    let mut all = commands();
    all.push(("ch-grow", ch_image::Cli::command(), ""));
    for (name, cmd, _) in all {
        let mut cmd = named(cmd, name);
        for (dir, shell) in dirs {
            let file = match shell {
                Shell::Zsh => format!("_{name}"),
                Shell::Fish => format!("{name}.fish"),
                _ => name.to_string(),
            };
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd, name, &mut text);
            if shell == Shell::Bash {
                let generated = bash_function(&String::from_utf8_lossy(&text))?;
                text.extend_from_slice(bash_images(name, &cmd, &generated).as_bytes());
            }
            write(&out.join(dir).join(file), &text)?;
        }
    }
    Ok(())
}

const USAGE: &str = "usage: grove-gen man OUTDIR | grove-gen completions OUTDIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (what, out) = match args.as_slice() {
        [w, o] => (w.as_str(), PathBuf::from(o)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(64);
        }
    };
    let done = fs::create_dir_all(&out)
        .with_context(|| format!("can't create {}", out.display()))
        .and_then(|()| match what {
            "man" => man(&out),
            "completions" => completions(&out),
            _ => anyhow::bail!("unknown target: {what}\n{USAGE}"),
        });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            grove::cli::report(&*e);
            ExitCode::from(1)
        }
    }
}
