//! The plan stage of a build: a pure function from the parsed Dockerfile, the build
//! arguments and each stage's state (the base image's environment) to a list of steps,
//! each with the instruction as it will execute and its cache-key input, encoded by hand
//! (docs/cache-keys.md). The executor ([`super::exec`]) performs the steps: it resolves
//! bases, adds the parts of a key that need I/O (the content hash of COPY and ADD sources,
//! the commit of a `COPY --from` stage), looks keys up and executes misses.
//!
//! Invariants: planning reads no file, store or environment variable (the build's
//! options and `SOURCE_DATE_EPOCH` come in as [`PlanOptions`]); a key input is a
//! sequence of length-prefixed fields written field by field below, never the `Debug`
//! text of a parser type, so renaming a field of the AST changes no key. Any change to the
//! bytes [`Planner::step`] encodes for an input bumps [`super::key::SCHEMA`]; the golden
//! tests below pin them.

use super::dockerfile::{CmdForm, CopyArgs, CopySource, Dockerfile, Flags, InstrKind, Instruction};
use super::exec::Force;
use super::subst::{self, SubstError, Vars};

/// ARGs that never cause a cache miss (keyed by name only) and come from the host
/// environment.
pub const MAGIC_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSH_AUTH_SOCK",
    "USER",
];

/// What a build decides once, before planning, that changes what steps produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Root emulation for RUN (`--force`).
    pub force: Force,
    /// `--xattrs` (`$CH_XATTRS`): COPY and ADD keep `user.*` extended attributes.
    pub xattrs: bool,
    /// `SOURCE_DATE_EPOCH`: in RUN's environment, and the latest time a step writes.
    pub source_date_epoch: Option<i64>,
}

/// One planned step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Instruction number, from 1.
    pub n: usize,
    /// Line of the instruction in the Dockerfile.
    pub line: usize,
    /// The instruction as written (for logs, commit messages and provenance).
    pub text: String,
    pub action: Action,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a stage on a base: a stored or pulled image, an earlier stage, or scratch.
    /// The executor resolves it, then calls [`Planner::enter_base`] with its environment.
    From {
        image: String,
        /// Lowercased.
        alias: Option<String>,
        platform: Option<String>,
    },
    /// An ARG before the first FROM: declares a global ARG, builds nothing.
    Global,
    /// An instruction Grove does not support (USER, EXPOSE, ...): warned about, ignored.
    Ignored,
    /// An instruction that makes a commit: `instruction` substituted as Docker
    /// substitutes, `key` its key input.
    Commit {
        instruction: InstrKind,
        key: KeyInput,
    },
}

/// The part of a step's cache key known before execution: `encoding` (the fields below).
/// COPY and ADD add their sources' content hash, which needs I/O, as the key's `extra`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInput {
    pub encoding: Vec<u8>,
}

/// Length-prefixed fields (`u64` little-endian length, then the bytes).
struct Enc(Vec<u8>);

impl Enc {
    fn new(kind: &str) -> Enc {
        let mut e = Enc(Vec::new());
        e.str(kind);
        e
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Enc {
        self.0.extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Enc {
        self.bytes(s.as_bytes())
    }
    /// A count, as decimal text, before that many items.
    fn count(&mut self, n: usize) -> &mut Enc {
        self.str(&n.to_string())
    }
    fn list(&mut self, v: &[String]) -> &mut Enc {
        self.count(v.len());
        for s in v {
            self.str(s);
        }
        self
    }
    /// `-` for none; `=` and the value for some.
    fn opt(&mut self, v: Option<&str>) -> &mut Enc {
        match v {
            None => self.str("-"),
            Some(v) => self.str("=").str(v),
        }
    }
    fn flag(&mut self, on: bool) -> &mut Enc {
        self.str(if on { "1" } else { "0" })
    }
    fn pairs(&mut self, v: &[(String, String)]) -> &mut Enc {
        self.count(v.len());
        for (k, x) in v {
            self.str(k).str(x);
        }
        self
    }
    fn flags(&mut self, f: &Flags) -> &mut Enc {
        self.count(f.0.len());
        for x in &f.0 {
            self.str(&x.name).opt(x.value.as_deref());
        }
        self
    }
    fn form(&mut self, f: &CmdForm) -> &mut Enc {
        match f {
            CmdForm::Shell(s) => self.str("shell").str(s),
            CmdForm::Exec(v) => self.str("exec").list(v),
        }
    }
    /// Every key ends with the build's `SOURCE_DATE_EPOCH`.
    fn finish(mut self, o: &PlanOptions) -> KeyInput {
        let t = o.source_date_epoch.map(|t| t.to_string());
        self.opt(t.as_deref());
        KeyInput { encoding: self.0 }
    }
}

/// The key input of a substituted instruction that makes a commit, `None` for the
/// others. `vars` are the variables after the instruction (for ARG's effective values).
pub fn key_input(sub: &InstrKind, vars: &Vars, o: &PlanOptions) -> Option<KeyInput> {
    let e = match sub {
        // RUN: the command as written (the shell substitutes, from an environment that
        // the ARG and ENV keys before it cover), heredocs, and the root-emulation mode.
        InstrKind::Run {
            options,
            form,
            heredocs,
        } => {
            let mut e = Enc::new("RUN");
            e.flags(options).form(form).count(heredocs.len());
            for h in heredocs {
                e.str(&h.word).str(&h.content);
            }
            e.str(o.force.tag());
            e
        }
        InstrKind::Copy(a) => copy_args(Enc::new("COPY"), a, o),
        InstrKind::Add(a) => copy_args(Enc::new("ADD"), a, o),
        // ARG: names and effective values (after --build-arg and substitution); the magic
        // ARGs by name only (`*`), so that their values never cause a miss.
        InstrKind::Arg(decls) => {
            let mut e = Enc::new("ARG");
            e.count(decls.len());
            for d in decls {
                e.str(&d.name);
                if MAGIC_ARGS.contains(&d.name.as_str()) {
                    e.str("*");
                } else {
                    e.opt(subst::Lookup::lookup(vars, &d.name).as_deref());
                }
            }
            e
        }
        InstrKind::Env(pairs) => {
            let mut e = Enc::new("ENV");
            e.pairs(pairs);
            e
        }
        InstrKind::Label(pairs) => {
            let mut e = Enc::new("LABEL");
            e.pairs(pairs);
            e
        }
        InstrKind::Workdir(d) => {
            let mut e = Enc::new("WORKDIR");
            e.str(d);
            e
        }
        InstrKind::Shell(argv) => {
            let mut e = Enc::new("SHELL");
            e.list(argv);
            e
        }
        InstrKind::Cmd(f) => {
            let mut e = Enc::new("CMD");
            e.form(f);
            e
        }
        InstrKind::Entrypoint(f) => {
            let mut e = Enc::new("ENTRYPOINT");
            e.form(f);
            e
        }
        InstrKind::From { .. }
        | InstrKind::User(_)
        | InstrKind::Expose(_)
        | InstrKind::Volume(_)
        | InstrKind::Healthcheck(_)
        | InstrKind::Stopsignal(_)
        | InstrKind::Maintainer(_)
        | InstrKind::Onbuild { .. } => return None,
    };
    Some(e.finish(o))
}

/// COPY and ADD: options in source order, form, sources (paths as substituted, heredocs by
/// name and body), destination, and whether extended attributes are kept.
fn copy_args(mut e: Enc, a: &CopyArgs, o: &PlanOptions) -> Enc {
    e.flags(&a.options).flag(a.json).count(a.sources.len());
    for s in &a.sources {
        match s {
            CopySource::Path(p) => e.str("path").str(p),
            CopySource::Heredoc(h) => e.str("heredoc").str(&h.name).str(&h.content),
        };
    }
    e.str(&a.dest).flag(o.xattrs);
    e
}

/// Plans a Dockerfile one instruction at a time, keeping the variables in scope.
pub struct Planner {
    vars: Vars,
    opts: PlanOptions,
}

impl Planner {
    pub fn new(build_args: &[(String, String)], escape: char, opts: PlanOptions) -> Planner {
        Planner {
            vars: Vars::new(build_args.iter().cloned(), escape),
            opts,
        }
    }

    /// The step for `ins` (the `n`th instruction): substitution, classification, key
    /// input. Pure: reads nothing but its arguments and the planner's variables.
    pub fn step(&mut self, n: usize, ins: &Instruction) -> Result<Step, SubstError> {
        let text = ins.display();
        let sub = self.vars.step(&ins.kind)?;
        let action = match sub {
            InstrKind::From {
                image,
                alias,
                platform,
            } => Action::From {
                image,
                alias,
                platform,
            },
            _ if !self.vars.in_stage() => Action::Global,
            sub => match key_input(&sub, &self.vars, &self.opts) {
                Some(key) => Action::Commit {
                    instruction: sub,
                    key,
                },
                None => Action::Ignored,
            },
        };
        Ok(Step {
            n,
            line: ins.span.start_line,
            text,
            action,
        })
    }

    /// Enter the stage a FROM step started: `env` is its base's environment (the image
    /// config's ENV, or the earlier stage's), in scope for what follows.
    pub fn enter_base(&mut self, env: &[(String, String)]) {
        for (k, v) in env {
            self.vars.set_env(k, v);
        }
    }

    /// The variables in scope after the last step.
    pub fn vars(&self) -> &Vars {
        &self.vars
    }
}

/// A Dockerfile that can't be planned: an instruction whose variables can't be
/// substituted.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: can't substitute variables")]
pub struct PlanError {
    pub file: String,
    pub line: usize,
    #[source]
    pub source: SubstError,
}

/// The whole plan of `df`: `base_env` gives the environment of a FROM's base (by the
/// substituted image name or stage alias). A build plans step by step with [`Planner`]
/// instead, as it resolves bases.
pub fn plan(
    df: &Dockerfile,
    build_args: &[(String, String)],
    opts: PlanOptions,
    mut base_env: impl FnMut(&str) -> Vec<(String, String)>,
) -> Result<Vec<Step>, PlanError> {
    let mut p = Planner::new(build_args, df.escape(), opts);
    let mut out = Vec::new();
    for (i, ins) in df.instructions.iter().enumerate() {
        let s = p.step(i + 1, ins).map_err(|source| PlanError {
            file: df.file.clone(),
            line: ins.span.start_line,
            source,
        })?;
        if let Action::From { image, .. } = &s.action {
            p.enter_base(&base_env(image));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::dockerfile;
    use crate::build::key::Key;

    /// The fields of an encoding, `|`-separated (the lengths checked on the way).
    fn fields(b: &[u8]) -> String {
        let mut out = Vec::new();
        let mut rest = b;
        while !rest.is_empty() {
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().unwrap()) as usize;
            let (f, tail) = tail.split_at(len);
            out.push(String::from_utf8(f.to_vec()).unwrap());
            rest = tail;
        }
        out.join("|")
    }

    const OPTS: PlanOptions = PlanOptions {
        force: Force::Seccomp,
        xattrs: false,
        source_date_epoch: None,
    };

    fn steps(df: &str, opts: PlanOptions) -> Vec<Step> {
        let df = dockerfile::parse(df, "Dockerfile").unwrap();
        plan(&df, &[("B".into(), "cli".into())], opts, |image| {
            if image == "base" {
                vec![("PATH".into(), "/bin".into())]
            } else {
                Vec::new()
            }
        })
        .unwrap()
    }

    /// Fields and key (from a fixed parent) of the last step of `df`.
    fn last(df: &str, opts: PlanOptions) -> (String, String) {
        let s = steps(df, opts).pop().unwrap();
        let Action::Commit { key, .. } = s.action else {
            panic!("not a commit: {:?}", s.action)
        };
        let parent = Key::from_base("0000000000000000000000000000000000000000");
        (
            fields(&key.encoding),
            parent.child(&key.encoding, b"").hex(),
        )
    }

    #[test]
    fn key_input_is_length_prefixed_fields() {
        let s = steps("FROM base\nWORKDIR /a\n", OPTS).pop().unwrap();
        let Action::Commit { key, .. } = s.action else {
            panic!()
        };
        assert_eq!(
            key.encoding,
            b"\x07\0\0\0\0\0\0\0WORKDIR\x02\0\0\0\0\0\0\0/a\x01\0\0\0\0\0\0\0-"
        );
    }

    // Golden key inputs, one per instruction kind: if one changes, bump key::SCHEMA and
    // say so in docs/cache-keys.md.
    #[test]
    fn key_inputs_are_pinned_for_every_instruction_kind() {
        let cases: &[(&str, &str)] = &[
            ("RUN echo $PATH", "RUN|0|shell|echo $PATH|0|S|-"),
            (
                "RUN [\"/bin/echo\", \"a b\"]",
                "RUN|0|exec|2|/bin/echo|a b|0|S|-",
            ),
            (
                "RUN --mount=type=cache,target=/c <<EOF\necho hi\nEOF",
                "RUN|1|mount|=|type=cache,target=/c|shell|<<EOF|1|<<EOF|echo hi\n|S|-",
            ),
            (
                "ARG B\nCOPY --chmod=644 a $B /d/",
                "COPY|1|chmod|=|644|0|2|path|a|path|cli|/d/|0|-",
            ),
            (
                "COPY --from=s [\"x\", \"/y\"]",
                "COPY|1|from|=|s|1|1|path|x|/y|0|-",
            ),
            ("COPY <<F /f\nbody\nF", "COPY|0|0|1|heredoc|F|body\n|/f|0|-"),
            ("ADD x.tar /x/", "ADD|0|0|1|path|x.tar|/x/|0|-"),
            (
                "ARG B A=1 C HTTP_PROXY=p",
                "ARG|4|B|=|cli|A|=|1|C|-|HTTP_PROXY|*|-",
            ),
            ("ENV A=1 B=\"x y\"", "ENV|2|A|1|B|x y|-"),
            ("LABEL a=b", "LABEL|1|a|b|-"),
            ("WORKDIR $PATH/w", "WORKDIR|/bin/w|-"),
            ("SHELL [\"/bin/bash\", \"-c\"]", "SHELL|2|/bin/bash|-c|-"),
            ("CMD echo hi", "CMD|shell|echo hi|-"),
            ("ENTRYPOINT [\"/e\"]", "ENTRYPOINT|exec|1|/e|-"),
        ];
        let mut keys = Vec::new();
        for (ins, want) in cases {
            let (f, k) = last(&format!("FROM base\n{ins}\n"), OPTS);
            assert_eq!(f, *want, "{ins}");
            keys.push(k);
        }
        assert_eq!(keys, GOLDEN_KEYS, "keys changed: bump key::SCHEMA");
    }

    const GOLDEN_KEYS: &[&str] = &[
        "9a0a869d67e42e955e5b7b75922249279e5257c678d02a9fa5618d3affb48aab",
        "4c2531718eef35d0f88e6cf19781e5693b9bce954833650ef843f7634bc3643e",
        "20110626dab9b8e9cdf6daa0da5cc686c1c6bfb871226481f5b8292b555c18cb",
        "16394b90eacc6fb8242807978ee088f598ded930395a730df1eee41b8613d385",
        "994d6def09ff227e1020e5e8ba1fede2bedcd9366eaa857146ef6832a1829538",
        "e9ccd2bb9b85f85c339d0416f78bc54198d244c87d1e39633c4614f23585d09e",
        "5beb10f923e7812de6138712f967720a6308b96820d0c821f3637a71a83c7674",
        "0f540bc4e6ac8693df3c0614db0a8b28c12dea2a2142f48a1ad0a2dc8e48fa6e",
        "06706d4c4f6062675e850a5d58d0b63a6637bd5042ea65d90b5152db27c18c95",
        "b5ad85f8847d51fc49d01e7e687926722cfe00e8832ab6eb5b4eeee321bec209",
        "ec3913a64453c1ce0927e8fd02dd42b5e0108659f71ae2727365d9251c15bea8",
        "65f7af04eb3a86347c5667a1f2a470128df3d77ba342dc4a1e0733ae6884dba0",
        "707470620881fcd1495f62e0c0b30c92692a3e65b2593344eacd41fcf153f513",
        "cd080ad9425a55dfa9898a799fa433c0bc4b8a30cb00eb8e61eb650573d4038f",
    ];

    #[test]
    fn options_that_change_results_are_in_the_key_input() {
        let x = PlanOptions {
            xattrs: true,
            ..OPTS
        };
        assert_eq!(
            last("FROM base\nCOPY a /a\n", x).0,
            "COPY|0|0|1|path|a|/a|1|-"
        );
        let f = PlanOptions {
            force: Force::None,
            source_date_epoch: Some(1700000000),
            ..OPTS
        };
        assert_eq!(
            last("FROM base\nRUN true\n", f).0,
            "RUN|0|shell|true|0|N|=|1700000000"
        );
    }

    #[test]
    fn global_args_and_unsupported_instructions_make_no_commit() {
        let s = steps("ARG X=1\nFROM base\nUSER nobody\nEXPOSE 80\n", OPTS);
        assert_eq!(s[0].action, Action::Global);
        assert!(matches!(&s[1].action, Action::From { image, .. } if image == "base"));
        assert_eq!(s[2].action, Action::Ignored);
        assert_eq!(s[3].action, Action::Ignored);
        assert_eq!(s[2].line, 3);
    }

    #[test]
    fn a_bad_substitution_names_the_file_and_line() {
        let df = dockerfile::parse("FROM base\nENV A=${B:?unset}\n", "Dockerfile").unwrap();
        let e = plan(&df, &[], OPTS, |_| Vec::new()).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("Dockerfile", 2));
        assert_eq!(e.to_string(), "Dockerfile:2: can't substitute variables");
    }

    #[test]
    fn keyword_case_comments_and_line_numbers_do_not_change_key_inputs() {
        let a = last("FROM base\nrun echo hi\n", OPTS);
        let b = last("# c\n\nFROM base\n# c\nRUN echo hi\n", OPTS);
        assert_eq!(a, b);
    }
}
