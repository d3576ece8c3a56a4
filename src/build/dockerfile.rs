//! Dockerfile parser: text in, an AST with spans out.
//!
//! Owns the Dockerfile *syntax*: parser directives, comments, line continuations,
//! heredocs, instruction keywords, `--flag=value` options, JSON (exec) and shell forms.
//! The rules follow Docker's (BuildKit's) parser; `docs/dockerfile.md` lists them and the
//! places where Grove deliberately differs.
//!
//! Invariants:
//! - The AST holds *raw* values: no variable is substituted and no quote is removed from
//!   words that Docker substitutes. The builder expands them in order, with the variables
//!   of each stage, through [`crate::build::subst`]. Words that Docker would substitute are
//!   syntax-checked here, so a malformed `${` is reported with its `file:line:col`.
//! - Every [`Instruction`] carries the [`Span`] of source lines it came from (including
//!   continuation lines and heredoc bodies) and its joined source text.
//! - Errors are [`ParseError`]s naming `file:line:col` and quoting the offending line.
//!
//! Must not depend on: the store, `run`, the file system (the caller reads the file), or
//! the process environment. Pure functions only; nothing is printed (warnings are
//! returned in [`Dockerfile::warnings`]).

use std::fmt;

use thiserror::Error;

use crate::build::subst;

/// The default escape character (`# escape=\`).
pub const DEFAULT_ESCAPE: char = '\\';

/// A parse error at a position in a Dockerfile.
///
/// Displays as `FILE:LINE:COL: MESSAGE`, then the offending line and a caret under the
/// column.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}:{line}:{col}: {}{}", crate::log::shown(.file), crate::log::shown(.message), excerpt(*.line, *.col, .line_text))]
pub struct ParseError {
    /// Name of the Dockerfile as given by the caller (e.g. `Dockerfile` or `-`).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// Text of the offending line (without its newline); empty if there is none.
    pub line_text: String,
}

/// Renders the `\n  3 | FORM alpine\n    | ^` excerpt below an error message.
struct Excerpt<'a> {
    line: usize,
    col: usize,
    text: &'a str,
}

fn excerpt(line: usize, col: usize, text: &str) -> Excerpt<'_> {
    Excerpt { line, col, text }
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            return Ok(());
        }
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        // A Dockerfile from elsewhere may hold control characters (an ESC sequence, a
        // carriage return): shown escaped, as every read command does (docs/security.md).
        // Tabs before the column are kept so the caret lines up in a terminal; an escaped
        // character takes the width of its escape.
        let before: String = self.text.chars().take(self.col.saturating_sub(1)).collect();
        let lead: String = crate::log::shown(&before)
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(
            f,
            "\n {num} | {}\n {pad} | {lead}^",
            crate::log::shown(self.text)
        )
    }
}

/// A warning found while parsing (not printed: the caller decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line the warning is about.
    pub line: usize,
    /// Lowercase message.
    pub message: String,
}

/// A parser directive (`# name=value` at the very top of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lowercased name: `escape`, `syntax` or `check`.
    pub name: String,
    /// Value, whitespace-trimmed.
    pub value: String,
    /// 1-based line.
    pub line: usize,
}

/// Parser directives in effect for a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Escape character: `\` (default) or `` ` ``. It is also the line continuation
    /// character and the escape character in variable substitution.
    pub escape: char,
    /// All recognized directives in source order (`syntax` and `check` are kept but
    /// ignored).
    pub all: Vec<Directive>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: DEFAULT_ESCAPE,
            all: Vec::new(),
        }
    }
}

/// Lines of the source an instruction came from, 1-based and inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Line of the keyword.
    pub start_line: usize,
    /// Last line consumed: last continuation line or heredoc terminator.
    pub end_line: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start_line == self.end_line {
            write!(f, "{}", self.start_line)
        } else {
            write!(f, "{}-{}", self.start_line, self.end_line)
        }
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// File name used in error messages.
    pub file: String,
    /// Parser directives.
    pub directives: Directives,
    /// Instructions in source order. The first is `ARG` or `FROM`; at least one `FROM`.
    pub instructions: Vec<Instruction>,
    /// Warnings: ignored directives, empty continuation lines, legacy `ENV k v` form.
    pub warnings: Vec<Warning>,
    /// Source lines (without newlines), for error excerpts.
    lines: Vec<String>,
}

impl Dockerfile {
    /// The escape character in effect (from `# escape=`).
    pub fn escape(&self) -> char {
        self.directives.escape
    }

    /// Text of 1-based line `line`, if it exists.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        line.checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .map(String::as_str)
    }

    /// An error at `line:col` of this file, quoting the line (for errors the builder finds
    /// later, e.g. a failed substitution or a missing stage).
    pub fn error_at(&self, line: usize, col: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
            line_text: self.line_text(line).unwrap_or_default().to_string(),
        }
    }

    /// An error about instruction `instr` (at its first line, column of the keyword).
    pub fn error_in(&self, instr: &Instruction, message: impl Into<String>) -> ParseError {
        self.error_at(instr.span.start_line, instr.col, message)
    }
}

/// One instruction with its position and source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Source lines.
    pub span: Span,
    /// 1-based column of the keyword on `span.start_line`.
    pub col: usize,
    /// Parsed instruction with raw (unsubstituted) values.
    pub kind: InstrKind,
    /// The logical line as written, continuations joined, comment and empty lines inside
    /// the continuation dropped, leading and trailing whitespace trimmed. Heredoc bodies
    /// are not included (see [`InstrKind::heredocs`]).
    pub original_text: String,
}

impl Instruction {
    /// Canonical one-line text: keyword uppercase, then the arguments exactly as written
    /// (after continuation joining). For log lines and cache keys; heredoc bodies are
    /// not part of it, so a cache key must also hash [`InstrKind::heredocs`].
    pub fn display(&self) -> String {
        display_text(&self.original_text)
    }

    /// The instruction keyword.
    pub fn keyword(&self) -> Keyword {
        self.kind.keyword()
    }
}

fn display_text(original: &str) -> String {
    let t = original.trim();
    match t.find(is_cmd_space) {
        Some(i) => format!(
            "{} {}",
            t[..i].to_ascii_uppercase(),
            t[i..].trim_start_matches(is_cmd_space)
        ),
        None => t.to_ascii_uppercase(),
    }
}

/// Instruction keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyword {
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
}

impl Keyword {
    /// All keywords.
    pub const ALL: [Keyword; 18] = [
        Keyword::Add,
        Keyword::Arg,
        Keyword::Cmd,
        Keyword::Copy,
        Keyword::Entrypoint,
        Keyword::Env,
        Keyword::Expose,
        Keyword::From,
        Keyword::Healthcheck,
        Keyword::Label,
        Keyword::Maintainer,
        Keyword::Onbuild,
        Keyword::Run,
        Keyword::Shell,
        Keyword::Stopsignal,
        Keyword::User,
        Keyword::Volume,
        Keyword::Workdir,
    ];

    /// Uppercase name, e.g. `"RUN"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Add => "ADD",
            Keyword::Arg => "ARG",
            Keyword::Cmd => "CMD",
            Keyword::Copy => "COPY",
            Keyword::Entrypoint => "ENTRYPOINT",
            Keyword::Env => "ENV",
            Keyword::Expose => "EXPOSE",
            Keyword::From => "FROM",
            Keyword::Healthcheck => "HEALTHCHECK",
            Keyword::Label => "LABEL",
            Keyword::Maintainer => "MAINTAINER",
            Keyword::Onbuild => "ONBUILD",
            Keyword::Run => "RUN",
            Keyword::Shell => "SHELL",
            Keyword::Stopsignal => "STOPSIGNAL",
            Keyword::User => "USER",
            Keyword::Volume => "VOLUME",
            Keyword::Workdir => "WORKDIR",
        }
    }

    /// Case-insensitive lookup.
    pub fn from_word(word: &str) -> Option<Keyword> {
        Keyword::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(word))
    }

    /// Whether Docker substitutes variables in this instruction's arguments.
    pub fn substitutes(self) -> bool {
        matches!(
            self,
            Keyword::Add
                | Keyword::Arg
                | Keyword::Copy
                | Keyword::Env
                | Keyword::Expose
                | Keyword::From
                | Keyword::Label
                | Keyword::Stopsignal
                | Keyword::User
                | Keyword::Volume
                | Keyword::Workdir
        )
    }
}

impl fmt::Display for Keyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--name[=value]` option before an instruction's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// Name without the leading `--`.
    pub name: String,
    /// Raw value after `=`; `None` for a bare boolean flag like `--link`.
    pub value: Option<String>,
}

/// The options of one instruction, in source order. Names are validated per
/// instruction; only multi-valued ones (`--mount`, `--exclude`) may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(pub Vec<Flag>);

impl Flags {
    /// Raw value of the (single-valued) flag `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.value.as_deref())
    }

    /// Raw values of a repeatable flag like `mount`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |f| f.name == name)
            .filter_map(|f| f.value.as_deref())
    }

    /// Whether flag `name` is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|f| f.name == name)
    }

    /// Value of a boolean flag: absent = false, `--x` = true, `--x=false` = false.
    pub fn bool(&self, name: &str) -> bool {
        match self.0.iter().find(|f| f.name == name) {
            None => false,
            Some(f) => f
                .value
                .as_deref()
                .is_none_or(|v| !v.eq_ignore_ascii_case("false")),
        }
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Command form of RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdForm {
    /// Shell form: text passed to the shell (from `SHELL`, default `/bin/sh -c`).
    /// Continuations are joined; the text is not substituted.
    Shell(String),
    /// Exec (JSON) form: argv, JSON escapes decoded. An empty vector is allowed
    /// (`CMD []`).
    Exec(Vec<String>),
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Delimiter with quotes removed (`EOF` for `<<"EOF"`).
    pub name: String,
    /// Body: every line up to the terminator, each ending in `\n`. With `<<-`, leading
    /// tabs of every body line are already removed.
    pub content: String,
    /// False if the delimiter was quoted: the body must not be expanded.
    pub expand: bool,
    /// `<<-`: leading tabs stripped from the body and the terminator.
    pub chomp: bool,
    /// File descriptor prefix (`3<<EOF`), if any.
    pub fd: Option<u32>,
    /// The word as written in the instruction, e.g. `<<-"EOF"`.
    pub word: String,
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    /// A raw path word (quotes still present in shell form; to be expanded).
    Path(String),
    /// An inline file from a heredoc; the file is named after the heredoc.
    Heredoc(Heredoc),
}

/// COPY and ADD arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// Options: `--from`, `--chown`, `--chmod`, `--link`, ...
    pub options: Flags,
    /// Whether the JSON form was used.
    pub json: bool,
    /// Sources, in order, at least one.
    pub sources: Vec<CopySource>,
    /// Raw destination.
    pub dest: String,
}

impl CopyArgs {
    /// Raw `--from` value.
    pub fn from(&self) -> Option<&str> {
        self.options.get("from")
    }
    /// Raw `--chown` value.
    pub fn chown(&self) -> Option<&str> {
        self.options.get("chown")
    }
    /// Raw `--chmod` value.
    pub fn chmod(&self) -> Option<&str> {
        self.options.get("chmod")
    }
}

/// One `ARG` declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// Name (raw).
    pub name: String,
    /// Raw default after `=`, if given (`ARG A=` gives `Some("")`).
    pub default: Option<String>,
}

/// HEALTHCHECK arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`.
    None,
    /// `HEALTHCHECK [options] CMD command`.
    Cmd { options: Flags, cmd: CmdForm },
}

/// A parsed instruction. All strings are raw: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstrKind {
    /// `FROM [--platform=P] IMAGE [AS NAME]`; `alias` is lowercased.
    From {
        platform: Option<String>,
        image: String,
        alias: Option<String>,
    },
    /// `RUN [--mount=...] command`.
    Run {
        options: Flags,
        form: CmdForm,
        heredocs: Vec<Heredoc>,
    },
    /// `CMD`.
    Cmd(CmdForm),
    /// `ENTRYPOINT`.
    Entrypoint(CmdForm),
    /// `SHELL ["exe", "arg"]` (exec form only, non-empty).
    Shell(Vec<String>),
    /// `COPY`.
    Copy(CopyArgs),
    /// `ADD`.
    Add(CopyArgs),
    /// `ARG A [B=x ...]`.
    Arg(Vec<ArgDecl>),
    /// `ENV K=V ...` or legacy `ENV K V`: `(key, raw value)` pairs in order.
    Env(Vec<(String, String)>),
    /// `LABEL K=V ...`: `(key, raw value)` pairs in order.
    Label(Vec<(String, String)>),
    /// `WORKDIR path` (the whole rest of the line).
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `EXPOSE port[/proto] ...`.
    Expose(Vec<String>),
    /// `VOLUME` paths (JSON or whitespace-separated).
    Volume(Vec<String>),
    /// `STOPSIGNAL signal`.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `MAINTAINER text` (deprecated).
    Maintainer(String),
    /// `ONBUILD INSTRUCTION`: the trigger and its text (e.g. `RUN make`).
    Onbuild {
        trigger: Box<InstrKind>,
        text: String,
    },
}

impl InstrKind {
    /// The keyword of this instruction.
    pub fn keyword(&self) -> Keyword {
        match self {
            InstrKind::From { .. } => Keyword::From,
            InstrKind::Run { .. } => Keyword::Run,
            InstrKind::Cmd(_) => Keyword::Cmd,
            InstrKind::Entrypoint(_) => Keyword::Entrypoint,
            InstrKind::Shell(_) => Keyword::Shell,
            InstrKind::Copy(_) => Keyword::Copy,
            InstrKind::Add(_) => Keyword::Add,
            InstrKind::Arg(_) => Keyword::Arg,
            InstrKind::Env(_) => Keyword::Env,
            InstrKind::Label(_) => Keyword::Label,
            InstrKind::Workdir(_) => Keyword::Workdir,
            InstrKind::User(_) => Keyword::User,
            InstrKind::Expose(_) => Keyword::Expose,
            InstrKind::Volume(_) => Keyword::Volume,
            InstrKind::Stopsignal(_) => Keyword::Stopsignal,
            InstrKind::Healthcheck(_) => Keyword::Healthcheck,
            InstrKind::Maintainer(_) => Keyword::Maintainer,
            InstrKind::Onbuild { .. } => Keyword::Onbuild,
        }
    }

    /// Heredocs of RUN, COPY or ADD (empty for others).
    pub fn heredocs(&self) -> Vec<&Heredoc> {
        match self {
            InstrKind::Run { heredocs, .. } => heredocs.iter().collect(),
            InstrKind::Copy(c) | InstrKind::Add(c) => c
                .sources
                .iter()
                .filter_map(|s| match s {
                    CopySource::Heredoc(h) => Some(h),
                    CopySource::Path(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Shell text for a shell-form RUN with heredocs, the way Docker hands it to the shell:
/// the command line, then each heredoc body and terminator. For `RUN <<EOF` alone Docker
/// instead runs the body itself as the script; see `docs/dockerfile.md`.
pub fn shell_script_with_heredocs(cmd: &str, heredocs: &[Heredoc]) -> String {
    let mut s = cmd.to_string();
    for h in heredocs {
        s.push('\n');
        s.push_str(&h.content);
        s.push_str(&h.name);
    }
    s
}

/// Parse Dockerfile `text`; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, ParseError> {
    Parser::new(text, file).run()
}

// ----------------------------------------------------------------------------------------
// Logical lines: continuation joining with a map back to source positions.

/// A piece of a logical line copied from one source line.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Byte offset of the piece in the joined text.
    at: usize,
    /// 1-based source line.
    line: usize,
    /// 1-based character column of the piece's first character in the source line.
    col: usize,
}

#[derive(Debug, Default)]
struct Logical {
    text: String,
    segs: Vec<Seg>,
}

impl Logical {
    fn push(&mut self, piece: &str, line: usize, col: usize) {
        self.segs.push(Seg {
            at: self.text.len(),
            line,
            col,
        });
        self.text.push_str(piece);
    }

    /// Source `(line, col)` of byte offset `off` in the joined text.
    fn pos(&self, off: usize) -> (usize, usize) {
        let off = off.min(self.text.len());
        let seg = self
            .segs
            .iter()
            .rev()
            .find(|s| s.at <= off)
            .or(self.segs.first())
            .copied()
            .unwrap_or(Seg {
                at: 0,
                line: 1,
                col: 1,
            });
        let start = seg.at.min(off);
        let chars = self.text.get(start..off).map_or(0, |s| s.chars().count());
        (seg.line, seg.col + chars)
    }
}

/// Whitespace as Docker's `reWhitespace` (`[\t\v\f\r ]`).
fn is_cmd_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

/// Whitespace as Go's `unicode.IsSpace`.
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Leading spaces and tabs, as Docker's `trimLeadingWhitespace`.
fn trim_leading_ws(s: &str) -> (&str, usize) {
    let t = s.trim_start_matches([' ', '\t']);
    (t, s.len() - t.len())
}

fn is_comment(line: &str) -> bool {
    trim_leading_ws(line).0.starts_with('#')
}

/// Strip a trailing continuation (escape char + optional spaces/tabs). Returns the text
/// before it and whether the line continues. As in BuildKit's `lineContinuationRegex`
/// (`([^\\])\\[ \t]*$|^\\[ \t]*$`), an escape character preceded by another one is an
/// escaped escape, not a continuation: `RUN echo \\` ends the instruction.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(before) if !before.ends_with(escape) => (before, true),
        _ => (line, false),
    }
}

/// Match `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (Go `\s`).
fn match_directive(line: &str) -> Option<(String, String)> {
    let ws = [' ', '\t', '\n', '\x0c', '\r'];
    let s = line.strip_prefix('#')?.trim_start_matches(ws);
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let end = chars
        .find(|(_, c)| !c.is_ascii_alphanumeric())
        .map_or(s.len(), |(i, _)| i);
    let name = &s[..end];
    let rest = s[end..].trim_start_matches(ws).strip_prefix('=')?;
    let value = rest.trim_matches(ws);
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.to_string()))
}

// ----------------------------------------------------------------------------------------
// Word splitting.

/// Split `rest` into words as Docker's `parseWords` does: whitespace separates words
/// except inside quotes; quotes and escapes are *kept* in the words (they are removed
/// later by substitution, [`subst::expand_word`]). Returns `(byte offset, word)` pairs.
pub fn split_words_at(rest: &str, escape: char) -> Vec<(usize, String)> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut start = 0;
    let mut blank_ok = false;
    let mut it = rest.char_indices().peekable();
    while let Some((pos, ch)) = it.next() {
        match phase {
            Phase::Spaces => {
                if is_space(ch) {
                    continue;
                }
                phase = Phase::Word;
                start = pos;
                blank_ok = false;
                word.clear();
            }
            Phase::Quote(q) => {
                if ch == q {
                    phase = Phase::Word;
                    word.push(ch);
                } else if ch == escape && q != '\'' {
                    word.push(ch);
                    match it.next() {
                        Some((_, c)) => word.push(c),
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
                continue;
            }
            Phase::Word => {}
        }
        // Phase::Word (possibly just entered).
        if is_space(ch) {
            phase = Phase::Spaces;
            if blank_ok || !word.is_empty() {
                words.push((start, std::mem::take(&mut word)));
            }
            continue;
        }
        if ch == '\'' || ch == '"' {
            phase = Phase::Quote(ch);
            blank_ok = true;
            word.push(ch);
            continue;
        }
        if ch == escape {
            match it.next() {
                // An escape at the very end of the input is dropped.
                None => continue,
                Some((_, c)) => {
                    word.push(ch);
                    word.push(c);
                }
            }
            continue;
        }
        word.push(ch);
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push((start, word));
    }
    words
}

/// [`split_words_at`] without offsets: the shell-words splitter for COPY/ADD sources,
/// ENV/LABEL/ARG pairs. Quotes are kept; expand each word with
/// [`subst::expand_word`] to remove them.
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    split_words_at(rest, escape)
        .into_iter()
        .map(|(_, w)| w)
        .collect()
}

/// Split on Docker's `[\t\v\f\r ]+` with no quote handling (FROM, EXPOSE, VOLUME).
fn split_plain(rest: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in rest.char_indices() {
        match (is_cmd_space(c), start) {
            (true, Some(s)) => {
                out.push((s, rest[s..i].to_string()));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, rest[s..].to_string()));
    }
    out
}

/// Docker's `extractBuilderFlags`: leading `--words` (quote-aware, `\` escapes) up to the
/// first word not starting with `--` or a lone `--`. Returns the flag words with offsets
/// and the offset where the arguments begin.
fn extract_flags(line: &str) -> (Vec<(usize, String)>, usize) {
    let b = line.as_bytes();
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && (b[pos] as char).is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= b.len() {
            return (words, b.len());
        }
        if !(b[pos] == b'-' && b.get(pos + 1) == Some(&b'-')) {
            return (words, pos);
        }
        let start = pos;
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut it = line[pos..].char_indices().peekable();
        let mut end = line.len();
        while let Some((i, ch)) = it.next() {
            match quote {
                None if ch.is_whitespace() => {
                    end = pos + i;
                    break;
                }
                None if ch == '\'' || ch == '"' => quote = Some(ch),
                Some(q) if ch == q => quote = None,
                _ if ch == '\\' => {
                    if let Some((_, c)) = it.next() {
                        word.push(c);
                    }
                }
                _ => word.push(ch),
            }
        }
        pos = end;
        if word == "--" {
            return (words, pos);
        }
        words.push((start, word));
    }
}

/// Result of trying to read text as a JSON array of strings.
enum Json {
    /// Not JSON at all: use the shell form.
    Text,
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// A JSON array with a non-string element: an error in Docker.
    NotStrings,
}

fn parse_json_array(rest: &str) -> Json {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Json::Text;
    }
    match serde_json::from_str::<serde_json::Value>(t) {
        Ok(serde_json::Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(out)
        }
        _ => Json::Text,
    }
}

/// Why `rest`, which looks like a JSON array of strings (`["…" … "…"]`), is not one:
/// Docker then silently runs or copies it in shell form, which fails in a confusing way
/// (`/bin/sh: [echo,: not found`), so the parser warns. `None` if it is valid JSON or
/// does not look like an attempt at it.
fn json_near_miss(rest: &str) -> Option<String> {
    let t = rest.trim();
    let body = t.strip_prefix('[')?.strip_suffix(']')?;
    // A list attempt: `["…` or items separated by commas; not a shell test such as
    // `[ "$x" = "y" ]`.
    let list = body.starts_with('"') || body.contains("\",");
    if !(list && body.trim().starts_with('"') && body.trim().ends_with('"')) {
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(t) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

const NOT_STRINGS: &str = "when using JSON array syntax, arrays must be comprised of strings only";

// ----------------------------------------------------------------------------------------
// Flags per instruction.

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    /// `--name=value`, at most once.
    Value,
    /// `--name` or `--name=true|false`, at most once.
    Bool,
    /// `--name=value`, repeatable.
    Multi,
}

fn flag_spec(kw: Keyword) -> &'static [(&'static str, FlagKind)] {
    use FlagKind::*;
    match kw {
        // `--arg=NAME=VALUE` is Charliecloud's (Docker has no such flag).
        Keyword::From => &[("platform", Value), ("arg", Multi)],
        Keyword::Run => &[("mount", Multi), ("network", Value), ("security", Value)],
        Keyword::Copy => &[
            ("from", Value),
            ("chown", Value),
            ("chmod", Value),
            ("link", Bool),
            ("parents", Bool),
            ("exclude", Multi),
        ],
        Keyword::Add => &[
            ("chown", Value),
            ("chmod", Value),
            ("link", Bool),
            ("checksum", Value),
            ("keep-git-dir", Bool),
            ("unpack", Bool),
            ("exclude", Multi),
        ],
        Keyword::Healthcheck => &[
            ("interval", Value),
            ("timeout", Value),
            ("start-period", Value),
            ("start-interval", Value),
            ("retries", Value),
        ],
        _ => &[],
    }
}

// ----------------------------------------------------------------------------------------
// The parser proper.

struct Parser<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    directives: Directives,
    directives_done: bool,
    warnings: Vec<Warning>,
    /// Set while parsing an ONBUILD trigger: its words are substituted in a later build.
    checking_disabled: bool,
    /// Charliecloud's `FROM --arg=NAME=VALUE` of the FROM just parsed: emitted as an
    /// `ARG NAME=VALUE` right after it.
    from_args: Vec<ArgDecl>,
}

/// Heredoc words found on a line, before their bodies are read.
struct HeredocWord {
    off: usize,
    word: String,
    name: String,
    chomp: bool,
    expand: bool,
    fd: Option<u32>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, file: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        if text.ends_with('\n') || text.is_empty() {
            lines.pop();
        }
        Parser {
            file,
            lines,
            directives: Directives::default(),
            directives_done: false,
            warnings: Vec::new(),
            checking_disabled: false,
            from_args: Vec::new(),
        }
    }

    fn err(&self, line: usize, col: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.to_string(),
            line,
            col,
            message: message.into(),
            line_text: line
                .checked_sub(1)
                .and_then(|i| self.lines.get(i))
                .map_or_else(String::new, |s| s.to_string()),
        }
    }

    /// Warn if `args` of `kw` look like a JSON array but are not valid JSON.
    fn warn_json_near_miss(&mut self, ll: &Logical, kw: Keyword, args: &str) {
        if let Some(why) = json_near_miss(args) {
            let (line, _) = ll.pos(0);
            self.warnings.push(Warning {
                line,
                message: format!(
                    "{kw}: not a valid JSON array ({why}): using the shell form, as Docker does"
                ),
            });
        }
    }

    fn err_at(&self, ll: &Logical, off: usize, message: impl Into<String>) -> ParseError {
        let (line, col) = ll.pos(off);
        self.err(line, col, message)
    }

    /// Docker's `possibleParserDirective` on a line with leading whitespace trimmed.
    fn possible_directive(
        &mut self,
        line: &str,
        lineno: usize,
        col: usize,
    ) -> Result<(), ParseError> {
        if self.directives_done {
            return Ok(());
        }
        let Some((name, value)) = match_directive(line) else {
            self.directives_done = true;
            return Ok(());
        };
        if !matches!(name.as_str(), "escape" | "syntax" | "check") {
            // Unknown directives are comments and end the directive block.
            self.directives_done = true;
            return Ok(());
        }
        if self.directives.all.iter().any(|d| d.name == name) {
            return Err(self.err(
                lineno,
                col,
                format!("only one {name} parser directive can be used"),
            ));
        }
        match name.as_str() {
            "escape" => {
                self.directives.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(self.err(
                            lineno,
                            col,
                            format!("invalid escape token '{value}' does not match ` or \\"),
                        ))
                    }
                }
            }
            _ => self.warnings.push(Warning {
                line: lineno,
                message: format!("parser directive '{name}={value}' not supported, ignored"),
            }),
        }
        self.directives.all.push(Directive {
            name,
            value,
            line: lineno,
        });
        Ok(())
    }

    fn run(mut self) -> Result<Dockerfile, ParseError> {
        let mut instructions: Vec<Instruction> = Vec::new();
        let mut i = 0;
        let n = self.lines.len();
        while i < n {
            let lineno = i + 1;
            let (first, lead) = trim_leading_ws(self.lines[i]);
            i += 1;
            self.possible_directive(first, lineno, lead + 1)?;
            if first.starts_with('#') {
                continue;
            }
            let escape = self.directives.escape;
            let (chunk, mut cont) = trim_continuation(first, escape);
            if !cont && chunk.trim().is_empty() {
                continue;
            }
            let mut ll = Logical::default();
            let lead_chars = self.lines[lineno - 1][..lead].chars().count();
            ll.push(chunk, lineno, lead_chars + 1);
            let mut end_line = lineno;
            let mut empty_cont = None;
            while cont && i < n {
                let raw = self.lines[i];
                i += 1;
                end_line = i;
                if is_comment(raw) {
                    continue;
                }
                if trim_leading_ws(raw).0.is_empty() {
                    empty_cont.get_or_insert(i);
                    continue;
                }
                let (chunk, c) = trim_continuation(raw, escape);
                ll.push(chunk, i, 1);
                cont = c;
            }
            if let Some(l) = empty_cont {
                self.warnings.push(Warning {
                    line: l,
                    message: "empty continuation line (an error in future Docker releases)"
                        .to_string(),
                });
            }
            // Trailing whitespace is not part of the instruction.
            let trimmed_len = ll.text.trim_end().len();
            ll.text.truncate(trimmed_len);

            let (kind, hd_words) = self.parse_instruction(&ll, 0, true)?;
            let mut kind = kind;
            if !hd_words.is_empty() {
                let mut docs = Vec::with_capacity(hd_words.len());
                for w in hd_words {
                    let mut content = String::new();
                    let mut terminated = false;
                    while i < n {
                        let raw = self.lines[i];
                        i += 1;
                        end_line = i;
                        let cand = if w.chomp {
                            raw.trim_start_matches('\t')
                        } else {
                            raw
                        };
                        if cand == w.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(cand);
                        content.push('\n');
                    }
                    if !terminated {
                        return Err(self.err_at(
                            &ll,
                            w.off,
                            format!("unterminated heredoc '{}'", w.name),
                        ));
                    }
                    docs.push(Heredoc {
                        name: w.name,
                        content,
                        expand: w.expand,
                        chomp: w.chomp,
                        fd: w.fd,
                        word: w.word,
                    });
                }
                attach_heredocs(&mut kind, docs);
            }
            let (line0, col0) = ll.pos(0);
            let kw = kind.keyword();
            if kw != Keyword::Arg
                && kw != Keyword::From
                && !instructions.iter().any(|x| x.keyword() == Keyword::From)
            {
                return Err(self.err(
                    line0,
                    col0,
                    format!("first instruction must be ARG or FROM, not {kw} (no build stage before the first FROM)"),
                ));
            }
            instructions.push(Instruction {
                span: Span {
                    start_line: line0,
                    end_line,
                },
                col: col0,
                kind,
                original_text: ll.text.clone(),
            });
            if !self.from_args.is_empty() {
                let decls = std::mem::take(&mut self.from_args);
                let text = decls
                    .iter()
                    .map(|d| format!("{}={}", d.name, d.default.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(" ");
                instructions.push(Instruction {
                    span: Span {
                        start_line: line0,
                        end_line,
                    },
                    col: col0,
                    kind: InstrKind::Arg(decls),
                    original_text: format!("ARG {text}"),
                });
            }
        }
        if instructions.is_empty() {
            return Err(self.err(1, 1, format!("no instructions found: {}", self.file)));
        }
        if !instructions.iter().any(|x| x.keyword() == Keyword::From) {
            let last = instructions.last().map_or(1, |x| x.span.start_line);
            return Err(self.err(
                last,
                1,
                "no FROM instruction: the file has no stage to build",
            ));
        }
        Ok(Dockerfile {
            file: self.file.to_string(),
            directives: self.directives,
            instructions,
            warnings: self.warnings,
            lines: self.lines.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Parse the logical line starting at byte `base` of `ll.text`. `top` is false for an
    /// ONBUILD trigger (no heredocs there, as in Docker).
    fn parse_instruction(
        &mut self,
        ll: &Logical,
        base: usize,
        top: bool,
    ) -> Result<(InstrKind, Vec<HeredocWord>), ParseError> {
        let text = &ll.text[base..];
        let lead = text.len() - text.trim_start_matches(is_cmd_space).len();
        let text_t = &text[lead..];
        let kw_end = text_t.find(is_cmd_space).unwrap_or(text_t.len());
        let kw_word = &text_t[..kw_end];
        let kw_off = base + lead;
        let Some(kw) = Keyword::from_word(kw_word) else {
            return Err(self.err_at(
                ll,
                kw_off,
                format!("unknown instruction: {}", kw_word.to_ascii_uppercase()),
            ));
        };
        let after_kw = kw_off + kw_end;
        let (flag_words, args_rel) = extract_flags(&ll.text[after_kw..]);
        let flags = self.check_flags(ll, kw, after_kw, flag_words)?;
        let args_off = after_kw + args_rel;
        let args = ll.text[args_off..].trim_end();
        let esc = self.directives.escape;
        let need = |p: &Self, what: &str| -> ParseError {
            p.err_at(ll, kw_off, format!("{kw} requires {what}"))
        };
        let mut heredocs = Vec::new();

        let kind = match kw {
            Keyword::From => {
                let words = split_plain(args);
                let (image, alias) = match words.as_slice() {
                    [(_, img)] => (img.clone(), None),
                    [(_, img), (_, as_), (aoff, name)] if as_.eq_ignore_ascii_case("as") => {
                        let lower = name.to_ascii_lowercase();
                        if !valid_stage_name(&lower) {
                            return Err(self.err_at(
                                ll,
                                args_off + aoff,
                                format!(
                                    "invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"
                                ),
                            ));
                        }
                        (img.clone(), Some(lower))
                    }
                    _ => {
                        return Err(need(
                            self,
                            "either one or three arguments (IMAGE [AS NAME])",
                        ))
                    }
                };
                self.check_subst(ll, args_off + words[0].0, &image)?;
                let platform = flags.get("platform").map(str::to_string);
                for a in flags.get_all("arg") {
                    match a.split_once('=') {
                        Some((k, v)) if !k.is_empty() => self.from_args.push(ArgDecl {
                            name: k.to_string(),
                            default: Some(v.to_string()),
                        }),
                        _ => {
                            return Err(self.err_at(
                                ll,
                                kw_off,
                                format!("FROM --arg: expected NAME=VALUE, got: {a}"),
                            ))
                        }
                    }
                }
                InstrKind::From {
                    platform,
                    image,
                    alias,
                }
            }
            Keyword::Run | Keyword::Cmd | Keyword::Entrypoint => {
                if args.is_empty() {
                    return Err(need(self, "at least one argument"));
                }
                let form = match parse_json_array(args) {
                    Json::Strings(v) => CmdForm::Exec(v),
                    Json::NotStrings => return Err(self.err_at(ll, args_off, NOT_STRINGS)),
                    Json::Text => {
                        self.warn_json_near_miss(ll, kw, args);
                        CmdForm::Shell(args.to_string())
                    }
                };
                match kw {
                    Keyword::Run => {
                        if top && matches!(form, CmdForm::Shell(_)) && args.contains("<<") {
                            heredocs = heredoc_words(args, args_off);
                        }
                        InstrKind::Run {
                            options: flags,
                            form,
                            heredocs: Vec::new(),
                        }
                    }
                    Keyword::Cmd => InstrKind::Cmd(form),
                    _ => InstrKind::Entrypoint(form),
                }
            }
            Keyword::Shell => match parse_json_array(args) {
                Json::Strings(v) if v.is_empty() => {
                    return Err(need(self, "at least one argument"))
                }
                Json::Strings(v) => InstrKind::Shell(v),
                Json::NotStrings => return Err(self.err_at(ll, args_off, NOT_STRINGS)),
                Json::Text => return Err(need(self, "the arguments to be in JSON form")),
            },
            Keyword::Copy | Keyword::Add => {
                let (json, words) = match parse_json_array(args) {
                    Json::Strings(v) => (true, v.into_iter().map(|w| (0, w)).collect::<Vec<_>>()),
                    Json::NotStrings => return Err(self.err_at(ll, args_off, NOT_STRINGS)),
                    // BuildKit's parseMaybeJSONToList: plain whitespace splitting, no
                    // quote or escape grouping; each word is then expanded on its own.
                    Json::Text => {
                        self.warn_json_near_miss(ll, kw, args);
                        (false, split_plain(args))
                    }
                };
                if words.len() < 2 {
                    return Err(need(
                        self,
                        "at least two arguments: source(s) and destination",
                    ));
                }
                let mut sources = Vec::new();
                let (last, srcs) = words.split_last().expect("at least two words");
                if !json && parse_heredoc_word(&last.1).is_some() {
                    return Err(self.err_at(
                        ll,
                        args_off + last.0,
                        format!("{kw} cannot accept a heredoc as a destination"),
                    ));
                }
                for (off, w) in srcs {
                    if !json && top {
                        if let Some(mut h) = parse_heredoc_word(w) {
                            h.off = args_off + off;
                            heredocs.push(h);
                            sources.push(CopySource::Heredoc(Heredoc {
                                name: String::new(),
                                content: String::new(),
                                expand: true,
                                chomp: false,
                                fd: None,
                                word: w.clone(),
                            }));
                            continue;
                        }
                    }
                    if json {
                        self.check_subst(ll, args_off, w)?;
                    } else {
                        self.check_subst(ll, args_off + off, w)?;
                    }
                    sources.push(CopySource::Path(w.clone()));
                }
                self.check_subst(ll, args_off + if json { 0 } else { last.0 }, &last.1)?;
                let c = CopyArgs {
                    options: flags,
                    json,
                    sources,
                    dest: last.1.clone(),
                };
                if kw == Keyword::Copy {
                    InstrKind::Copy(c)
                } else {
                    InstrKind::Add(c)
                }
            }
            Keyword::Arg => {
                let words = split_words_at(args, esc);
                if words.is_empty() {
                    return Err(need(self, "at least one argument"));
                }
                let mut decls = Vec::new();
                for (off, w) in words {
                    let decl = match w.split_once('=') {
                        Some(("", _)) => {
                            return Err(self.err_at(
                                ll,
                                args_off + off,
                                "ARG names can not be blank",
                            ));
                        }
                        Some((k, v)) => {
                            self.check_subst(ll, args_off + off + k.len() + 1, v)?;
                            ArgDecl {
                                name: k.to_string(),
                                default: Some(v.to_string()),
                            }
                        }
                        None => ArgDecl {
                            name: w,
                            default: None,
                        },
                    };
                    decls.push(decl);
                }
                InstrKind::Arg(decls)
            }
            Keyword::Env | Keyword::Label => {
                let pairs = self.parse_name_val(ll, kw, args, args_off)?;
                if kw == Keyword::Env {
                    InstrKind::Env(pairs)
                } else {
                    InstrKind::Label(pairs)
                }
            }
            Keyword::Workdir | Keyword::User | Keyword::Stopsignal | Keyword::Maintainer => {
                if args.is_empty() {
                    return Err(need(self, "exactly one argument"));
                }
                if kw != Keyword::Maintainer {
                    self.check_subst(ll, args_off, args)?;
                }
                let s = args.to_string();
                match kw {
                    Keyword::Workdir => InstrKind::Workdir(s),
                    Keyword::User => InstrKind::User(s),
                    Keyword::Stopsignal => InstrKind::Stopsignal(s),
                    _ => InstrKind::Maintainer(s),
                }
            }
            Keyword::Expose => {
                let words = split_plain(args);
                if words.is_empty() {
                    return Err(need(self, "at least one argument"));
                }
                for (off, w) in &words {
                    self.check_subst(ll, args_off + off, w)?;
                }
                InstrKind::Expose(words.into_iter().map(|(_, w)| w).collect())
            }
            Keyword::Volume => {
                let (json, words) = match parse_json_array(args) {
                    Json::Strings(v) => (true, v.into_iter().map(|w| (0, w)).collect::<Vec<_>>()),
                    Json::NotStrings => return Err(self.err_at(ll, args_off, NOT_STRINGS)),
                    Json::Text => (false, split_plain(args)),
                };
                if words.is_empty() {
                    return Err(need(self, "at least one argument"));
                }
                for (off, w) in &words {
                    if w.trim().is_empty() {
                        return Err(self.err_at(
                            ll,
                            args_off,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    self.check_subst(ll, args_off + if json { 0 } else { *off }, w)?;
                }
                InstrKind::Volume(words.into_iter().map(|(_, w)| w).collect())
            }
            Keyword::Healthcheck => {
                if args.is_empty() {
                    return Err(need(self, "at least one argument"));
                }
                let typ_end = args.find(is_space).unwrap_or(args.len());
                let typ = &args[..typ_end];
                let rest = args[typ_end..].trim_start();
                if typ.eq_ignore_ascii_case("none") {
                    if !rest.is_empty() || !flags.is_empty() {
                        return Err(self.err_at(
                            ll,
                            args_off,
                            "HEALTHCHECK NONE takes no arguments",
                        ));
                    }
                    InstrKind::Healthcheck(Healthcheck::None)
                } else if typ.eq_ignore_ascii_case("cmd") {
                    if rest.is_empty() {
                        return Err(self.err_at(
                            ll,
                            args_off,
                            "missing command after HEALTHCHECK CMD",
                        ));
                    }
                    let cmd = match parse_json_array(rest) {
                        Json::Strings(v) => CmdForm::Exec(v),
                        Json::NotStrings => return Err(self.err_at(ll, args_off, NOT_STRINGS)),
                        Json::Text => CmdForm::Shell(rest.to_string()),
                    };
                    InstrKind::Healthcheck(Healthcheck::Cmd {
                        options: flags,
                        cmd,
                    })
                } else {
                    return Err(self.err_at(
                        ll,
                        args_off,
                        format!("unknown type \"{typ}\" in HEALTHCHECK (try CMD)"),
                    ));
                }
            }
            Keyword::Onbuild => {
                if args.is_empty() {
                    return Err(need(self, "at least one argument"));
                }
                let sub_kw = args.split(is_cmd_space).next().unwrap_or_default();
                if let Some(k @ (Keyword::Onbuild | Keyword::From | Keyword::Maintainer)) =
                    Keyword::from_word(sub_kw)
                {
                    return Err(self.err_at(
                        ll,
                        args_off,
                        format!("{k} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                // Triggers run in a later build; they are not checked for substitution here.
                let (trigger, _) = self.parse_instruction_nocheck(ll, args_off)?;
                InstrKind::Onbuild {
                    trigger: Box::new(trigger),
                    text: display_text(args),
                }
            }
        };
        Ok((kind, heredocs))
    }

    fn parse_instruction_nocheck(
        &mut self,
        ll: &Logical,
        base: usize,
    ) -> Result<(InstrKind, Vec<HeredocWord>), ParseError> {
        let saved = self.checking_disabled;
        self.checking_disabled = true;
        let r = self.parse_instruction(ll, base, false);
        self.checking_disabled = saved;
        r
    }

    /// Syntax-check a word that Docker substitutes, reporting a malformed `${` at its
    /// source position.
    fn check_subst(&self, ll: &Logical, off: usize, word: &str) -> Result<(), ParseError> {
        if self.checking_disabled {
            return Ok(());
        }
        match subst::check_word(word, self.directives.escape) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The word's offset is exact for shell-form words; JSON words point at `[`.
                let in_line = ll.text.get(off..).is_some_and(|t| t.starts_with(word));
                let at = if in_line { off + e.offset } else { off };
                Err(self.err_at(ll, at, e.to_string()))
            }
        }
    }

    /// ENV and LABEL: `K=V ...` pairs or the legacy `K V` form (Docker's `parseNameVal`).
    fn parse_name_val(
        &mut self,
        ll: &Logical,
        kw: Keyword,
        args: &str,
        args_off: usize,
    ) -> Result<Vec<(String, String)>, ParseError> {
        let esc = self.directives.escape;
        let words = split_words_at(args, esc);
        let Some((_, first)) = words.first() else {
            let (line, col) = ll.pos(0);
            return Err(self.err(line, col, format!("{kw} requires at least one argument")));
        };
        if !first.contains('=') {
            let Some(sep) = args.find(is_cmd_space) else {
                return Err(self.err_at(ll, args_off, format!("{kw} must have two arguments")));
            };
            let key = &args[..sep];
            let value_rel =
                sep + (args[sep..].len() - args[sep..].trim_start_matches(is_cmd_space).len());
            let value = &args[value_rel..];
            self.check_subst(ll, args_off, key)?;
            self.check_subst(ll, args_off + value_rel, value)?;
            let (line, _) = ll.pos(0);
            self.warnings.push(Warning {
                line,
                message: format!("legacy \"{kw} key value\" form: use \"{kw} key=value\""),
            });
            return Ok(vec![(key.to_string(), value.to_string())]);
        }
        let mut pairs = Vec::with_capacity(words.len());
        for (off, w) in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(self.err_at(
                    ll,
                    args_off + off,
                    format!(
                        "syntax error - can't find = in \"{w}\"; must be of the form: name=value"
                    ),
                ));
            };
            if k.is_empty() {
                return Err(self.err_at(
                    ll,
                    args_off + off,
                    format!("{kw} names can not be blank"),
                ));
            }
            self.check_subst(ll, args_off + off, k)?;
            self.check_subst(ll, args_off + off + k.len() + 1, v)?;
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(pairs)
    }

    fn check_flags(
        &self,
        ll: &Logical,
        kw: Keyword,
        base: usize,
        words: Vec<(usize, String)>,
    ) -> Result<Flags, ParseError> {
        let spec = flag_spec(kw);
        let mut flags: Vec<Flag> = Vec::new();
        for (off, w) in words {
            let at = base + off;
            let body = w.strip_prefix("--").unwrap_or(&w);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            let Some(&(_, fk)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(self.err_at(ll, at, format!("{kw}: invalid option --{name}")));
            };
            if fk != FlagKind::Multi && flags.iter().any(|f| f.name == name) {
                return Err(self.err_at(ll, at, format!("{kw}: repeated option --{name}")));
            }
            match (fk, &value) {
                (FlagKind::Value | FlagKind::Multi, None) => {
                    return Err(self.err_at(ll, at, format!("missing a value on flag: --{name}")));
                }
                (FlagKind::Bool, Some(v))
                    if !matches!(v.to_ascii_lowercase().as_str(), "true" | "false") =>
                {
                    return Err(self.err_at(
                        ll,
                        at,
                        format!("expecting boolean value for flag --{name}, not: {v}"),
                    ));
                }
                _ => {}
            }
            if let (true, Some(v)) = (flag_is_substituted(kw, &name), &value) {
                let voff = at + 2 + name.len() + 1;
                self.check_subst(ll, voff, v)?;
            }
            flags.push(Flag { name, value });
        }
        Ok(Flags(flags))
    }
}

/// Whether Docker substitutes variables in the value of flag `name` of `kw`.
pub fn flag_is_substituted(kw: Keyword, name: &str) -> bool {
    matches!(
        (kw, name),
        (Keyword::From, "platform")
            | (
                Keyword::Copy | Keyword::Add,
                "from" | "chown" | "chmod" | "checksum" | "exclude"
            )
            | (Keyword::Run, "mount")
    )
}

/// Docker's `^[a-z][a-z0-9-_.]*$` for stage names.
fn valid_stage_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(|c| c.is_ascii_lowercase())
        && cs.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Heredoc words in a shell-form RUN argument string (Docker's `heredocsFromLine`, which
/// splits with `\` as escape whatever the escape directive says).
///
/// Whitespace right after `<<` is allowed, as BuildKit's lexer has allowed it since v0.22
/// (moby/buildkit#5817: `processPossibleHeredoc` keeps the blanks after `<<` in the word,
/// and `reHeredoc` is `^(\d*)<<(-?)\s*([^<]*)$`): `RUN << EOF` and `RUN <<  EOF  > f` open
/// a heredoc. Blanks after `<<-` do not (`<<- EOF` is not a heredoc in BuildKit either).
fn heredoc_words(args: &str, args_off: usize) -> Vec<HeredocWord> {
    let words = split_words_at(args, '\\');
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let (off, w) = &words[i];
        let lone_op = w.ends_with("<<") && w[..w.len() - 2].bytes().all(|b| b.is_ascii_digit());
        let (text, written) = match words.get(i + 1) {
            Some((noff, next)) if lone_op => {
                i += 1;
                (
                    format!("{w}{next}"),
                    args[*off..noff + next.len()].to_string(),
                )
            }
            _ => (w.clone(), w.clone()),
        };
        i += 1;
        if let Some(mut h) = parse_heredoc_word(&text) {
            h.off = args_off + off;
            h.word = written;
            out.push(h);
        }
    }
    out
}

/// Match `^(\d*)<<(-?)([^<]*)$` and unquote the delimiter (Docker's `ParseHeredoc`).
fn parse_heredoc_word(word: &str) -> Option<HeredocWord> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let (name, quoted) = unquote_delimiter(rest)?;
    if name.is_empty() {
        return None;
    }
    let fd = if digits > 0 {
        word[..digits].parse().ok()
    } else {
        None
    };
    Some(HeredocWord {
        off: 0,
        word: word.to_string(),
        name,
        chomp,
        expand: !quoted,
        fd,
    })
}

/// Remove quotes and backslash escapes from a heredoc delimiter. Returns the name and
/// whether any quoting (which disables expansion) was present; `None` if unbalanced or if
/// the delimiter is more than one word.
fn unquote_delimiter(s: &str) -> Option<(String, bool)> {
    let mut out = String::new();
    let mut quoted = false;
    let mut quote: Option<char> = None;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                quoted = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => out.push(c),
            (_, '\\') => {
                if let Some(n) = it.next() {
                    out.push(n);
                }
            }
            (None, c) if c.is_whitespace() => return None,
            (_, c) => out.push(c),
        }
    }
    if quote.is_some() {
        return None;
    }
    Some((out, quoted))
}

/// Put heredoc bodies, in order, into the instruction.
fn attach_heredocs(kind: &mut InstrKind, docs: Vec<Heredoc>) {
    let docs = docs.into_iter();
    match kind {
        InstrKind::Run { heredocs, .. } => heredocs.extend(docs),
        InstrKind::Copy(c) | InstrKind::Add(c) => {
            let mut docs = docs;
            for s in c.sources.iter_mut() {
                if let CopySource::Heredoc(slot) = s {
                    if let Some(h) = docs.next() {
                        *slot = h;
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Dockerfile {
        match parse(text, "Dockerfile") {
            Ok(d) => d,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn perr(text: &str) -> ParseError {
        match parse(text, "Dockerfile") {
            Ok(d) => panic!("expected an error, got {:#?}", d.instructions),
            Err(e) => e,
        }
    }

    /// Regression: a parse error printed the Dockerfile's line raw, so an ESC sequence in
    /// a Dockerfile from elsewhere drove the terminal (or a CR hid the line).
    #[test]
    fn parse_error_shows_control_characters_escaped_with_the_caret_in_place() {
        let e = perr("FROM busybox\nFORM \x1b[2K\rx\n");
        let shown = e.to_string();
        assert!(
            !shown.contains('\x1b') && !shown.contains('\r'),
            "{shown:?}"
        );
        assert!(
            shown.ends_with("\n 2 | FORM \\u{1b}[2K\\u{d}x\n   | ^"),
            "{shown:?}"
        );
        let e = ParseError {
            file: "Dockerfile".into(),
            line: 1,
            col: 3,
            message: "bad".into(),
            line_text: "\x1bab".into(),
        };
        // The caret stays under `b`, after the six characters of `\u{1b}` and `a`.
        assert!(e.to_string().ends_with("\n   |        ^"), "{e}");
    }

    fn kinds(text: &str) -> Vec<InstrKind> {
        p(text).instructions.into_iter().map(|i| i.kind).collect()
    }

    fn kind(text: &str, idx: usize) -> InstrKind {
        kinds(text).swap_remove(idx)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    // --- structure: comments, blank lines, keywords, spans

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let d = p("# hello\n\nFROM alpine\n  # indented comment\n\nRUN true # not a comment\n");
        assert_eq!(d.instructions.len(), 2);
        assert_eq!(
            d.instructions[1].kind,
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Shell("true # not a comment".into()),
                heredocs: vec![],
            }
        );
        assert_eq!(
            d.instructions[1].span,
            Span {
                start_line: 6,
                end_line: 6
            }
        );
    }

    #[test]
    fn json_lookalike_with_a_bad_escape_warns_and_runs_in_shell_form() {
        let df = parse(
            "FROM a\nRUN [\"echo\", \"a \\$b\"]\nRUN [ \"x\" = \"x\" ]\nCOPY [\"a\\q\", \"/b\"]\nRUN [\"true\"]\n",
            "Dockerfile",
        )
        .expect("parses");
        let w: Vec<(usize, &str)> = df
            .warnings
            .iter()
            .map(|w| (w.line, w.message.as_str()))
            .collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].0, 2);
        assert!(
            w[0].1
                .starts_with("RUN: not a valid JSON array (invalid escape"),
            "{w:?}"
        );
        assert_eq!(w[1].0, 4);
        assert!(w[1].1.starts_with("COPY: not a valid JSON array"), "{w:?}");
        assert!(matches!(
            &df.instructions[1].kind,
            InstrKind::Run {
                form: CmdForm::Shell(_),
                ..
            }
        ));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let d = p("from alpine AS Build\nrUn echo hi\n");
        assert_eq!(
            d.instructions[0].kind,
            InstrKind::From {
                platform: None,
                image: "alpine".into(),
                alias: Some("build".into()),
            }
        );
        assert_eq!(d.instructions[1].display(), "RUN echo hi");
    }

    #[test]
    fn display_uppercases_keyword_and_keeps_arguments() {
        let d = p("from  alpine\ncopy --chown=a:b  x \\\n  y /z\n");
        assert_eq!(d.instructions[0].display(), "FROM alpine");
        assert_eq!(d.instructions[1].display(), "COPY --chown=a:b  x   y /z");
        assert_eq!(
            d.instructions[1].original_text,
            "copy --chown=a:b  x   y /z"
        );
    }

    #[test]
    fn crlf_line_endings_and_bom_are_accepted() {
        let d = p("\u{feff}FROM alpine\r\nRUN a \\\r\n b\r\n");
        assert_eq!(
            kind_of(&d, 1),
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Shell("a  b".into()),
                heredocs: vec![],
            }
        );
    }

    fn kind_of(d: &Dockerfile, i: usize) -> InstrKind {
        d.instructions[i].kind.clone()
    }

    // --- continuations

    #[test]
    fn continuation_joins_lines_keeping_whitespace_before_backslash() {
        let d = p("FROM alpine\nRUN echo a \\\n    b\\   \n c\n");
        assert_eq!(
            kind_of(&d, 1),
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Shell("echo a     b c".into()),
                heredocs: vec![],
            }
        );
        assert_eq!(
            d.instructions[1].span,
            Span {
                start_line: 2,
                end_line: 4
            }
        );
    }

    #[test]
    fn comment_and_empty_lines_inside_continuation_are_skipped() {
        let d = p("FROM alpine\nRUN apt-get install \\\n# a comment\n    # indented comment\n\n   \n    vim\nRUN next\n");
        assert_eq!(
            kind_of(&d, 1),
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Shell("apt-get install     vim".into()),
                heredocs: vec![],
            }
        );
        assert_eq!(
            d.instructions[1].span,
            Span {
                start_line: 2,
                end_line: 7
            }
        );
        assert_eq!(d.instructions[2].span.start_line, 8);
        assert!(d
            .warnings
            .iter()
            .any(|w| w.message.contains("empty continuation line") && w.line == 5));
    }

    #[test]
    fn comment_ending_in_backslash_does_not_continue() {
        let d = p("FROM alpine\n# comment \\\nRUN x\n");
        assert_eq!(d.instructions.len(), 2);
    }

    #[test]
    fn continuation_at_end_of_file_is_accepted() {
        let d = p("FROM alpine\nRUN echo \\");
        assert_eq!(
            kind_of(&d, 1),
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Shell("echo".into()),
                heredocs: vec![],
            }
        );
    }

    #[test]
    fn from_arg_becomes_an_arg_of_the_stage() {
        let d = p("FROM --arg=A=1 --arg=B=x=y alpine\nRUN echo $A\n");
        assert_eq!(d.instructions.len(), 3);
        assert_eq!(d.instructions[1].display(), "ARG A=1 B=x=y");
        assert_eq!(d.instructions[1].span.start_line, 1);
        match kind_of(&d, 1) {
            InstrKind::Arg(decls) => assert_eq!(
                decls
                    .iter()
                    .map(|a| (a.name.as_str(), a.default.as_deref()))
                    .collect::<Vec<_>>(),
                [("A", Some("1")), ("B", Some("x=y"))]
            ),
            k => panic!("{k:?}"),
        }
        assert!(perr("FROM --arg=novalue alpine\n")
            .message
            .contains("NAME=VALUE"));
    }

    #[test]
    fn escaped_backslash_at_end_of_line_does_not_continue_as_in_docker() {
        let d = p("FROM alpine\nRUN echo hello \\\\\nRUN echo world \\\\  \nRUN a \\\\\\\nRUN b\n");
        assert_eq!(d.instructions.len(), 5);
        assert_eq!(
            kind_of(&d, 1),
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Shell("echo hello \\\\".into()),
                heredocs: vec![],
            }
        );
        // Three backslashes: the last is preceded by an escape, so BuildKit's regex does
        // not take it as a continuation either.
        assert_eq!(d.instructions[3].original_text, "RUN a \\\\\\");
        // A lone escape on a continuation line still continues.
        let d = p("FROM alpine\nRUN a \\\n\\\nb\n");
        assert_eq!(d.instructions.len(), 2);
    }

    // --- directives

    #[test]
    fn escape_directive_backtick_for_windows_paths() {
        let text = "# escape=`\n\nFROM mcr.microsoft.com/windows/servercore\nCOPY testfile.txt c:\\\nRUN dir c:\\ `\n    /w\nWORKDIR c:\\Users\n";
        let d = p(text);
        assert_eq!(d.escape(), '`');
        assert_eq!(d.directives.all[0].name, "escape");
        match kind_of(&d, 1) {
            InstrKind::Copy(c) => {
                assert_eq!(c.sources, vec![CopySource::Path("testfile.txt".into())]);
                assert_eq!(c.dest, "c:\\");
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(
            kind_of(&d, 2),
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Shell("dir c:\\     /w".into()),
                heredocs: vec![],
            }
        );
        assert_eq!(kind_of(&d, 3), InstrKind::Workdir("c:\\Users".into()));
        // The backslash is literal in substitution, the backtick escapes.
        let w = crate::build::subst::expand_word(
            "c:\\Users\\`$HOME",
            '`',
            &crate::build::subst::NoVars,
        );
        assert_eq!(w, Ok("c:\\Users\\$HOME".into()));
    }

    #[test]
    fn without_escape_directive_windows_path_continues_the_line() {
        let d = p("FROM a\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
        // The COPY swallows the RUN line, as in Docker.
        assert_eq!(d.instructions.len(), 2);
        match kind_of(&d, 1) {
            InstrKind::Copy(c) => {
                assert_eq!(c.sources.last(), Some(&CopySource::Path("dir".into())));
                assert_eq!(c.dest, "c:");
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn syntax_directive_is_ignored_with_a_warning() {
        let d = p("# syntax=docker/dockerfile:1\nFROM alpine\n");
        assert_eq!(d.directives.all[0].value, "docker/dockerfile:1");
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].message.contains("syntax"));
    }

    #[test]
    fn directives_after_a_comment_or_blank_line_are_comments() {
        let d = p("# hello\n# escape=`\nFROM a\n");
        assert_eq!(d.escape(), '\\');
        assert!(d.directives.all.is_empty());
        let d = p("\n# escape=`\nFROM a\n");
        assert_eq!(d.escape(), '\\');
    }

    #[test]
    fn directive_keys_are_case_insensitive_and_spaces_allowed() {
        let d = p("#  ESCAPE  =  `  \nFROM a\n");
        assert_eq!(d.escape(), '`');
    }

    #[test]
    fn repeated_or_invalid_escape_directive_is_an_error() {
        let e = perr("# escape=`\n# escape=\\\nFROM a\n");
        assert_eq!((e.line, e.col), (2, 1));
        assert!(e.message.contains("only one escape"));
        let e = perr("# escape=x\nFROM a\n");
        assert!(e.message.contains("invalid escape token"), "{e}");
    }

    // --- errors

    #[test]
    fn unknown_instruction_names_line_and_column() {
        let e = perr("FROM alpine\n\n   FORM x\n");
        assert_eq!((e.line, e.col), (3, 4));
        assert_eq!(e.message, "unknown instruction: FORM");
        assert_eq!(e.line_text, "   FORM x");
        assert_eq!(
            e.to_string(),
            "Dockerfile:3:4: unknown instruction: FORM\n 3 |    FORM x\n   |    ^"
        );
    }

    #[test]
    fn first_instruction_must_be_arg_or_from() {
        let e = perr("# c\nRUN true\nFROM a\n");
        assert_eq!((e.line, e.col), (2, 1));
        assert!(
            e.message.contains("first instruction must be ARG or FROM"),
            "{e}"
        );
        let e = perr("ARG X\nENV A=b\nFROM a\n");
        assert_eq!(e.line, 2);
        p("ARG X=1\nARG Y\nFROM a\n");
    }

    #[test]
    fn empty_file_and_file_without_from_are_errors() {
        assert!(perr("").message.contains("no instructions"));
        assert!(perr("# just a comment\n\n")
            .message
            .contains("no instructions"));
        assert!(perr("ARG A=1\n").message.contains("no FROM"));
    }

    #[test]
    fn error_in_a_continuation_line_reports_that_line() {
        let e = perr("FROM a\nENV A=1 \\\n    B=${oops \\\n    C=3\n");
        assert_eq!((e.line, e.col), (3, 7), "{e}");
        assert!(e.message.contains("missing '}'"), "{e}");
        assert_eq!(e.line_text, "    B=${oops \\");
    }

    #[test]
    fn unknown_and_duplicate_flags_are_errors() {
        let e = perr("FROM a\nCOPY --frm=x a b\n");
        assert_eq!((e.line, e.col), (2, 6));
        assert_eq!(e.message, "COPY: invalid option --frm");
        let e = perr("FROM a\nCOPY --from=x --from=y a b\n");
        assert_eq!((e.line, e.col), (2, 15));
        assert_eq!(e.message, "COPY: repeated option --from");
        let e = perr("FROM a\nCOPY --from a b\n");
        assert!(e.message.contains("missing a value"));
        let e = perr("FROM a\nWORKDIR --x=1 /a\n");
        assert_eq!(e.message, "WORKDIR: invalid option --x");
    }

    #[test]
    fn from_argument_count_and_stage_name_are_checked() {
        assert!(perr("FROM\n").message.contains("FROM requires"));
        assert!(perr("FROM a b\n").message.contains("one or three"));
        assert!(perr("FROM a AS b c\n").message.contains("one or three"));
        let e = perr("FROM a AS 1st\n");
        assert_eq!(e.col, 11);
        assert!(e.message.contains("invalid name for build stage"));
    }

    // --- instructions

    #[test]
    fn from_with_platform_and_alias() {
        assert_eq!(
            kind("FROM --platform=$BUILDPLATFORM golang:1.22 as Builder\n", 0),
            InstrKind::From {
                platform: Some("$BUILDPLATFORM".into()),
                image: "golang:1.22".into(),
                alias: Some("builder".into()),
            }
        );
    }

    #[test]
    fn run_exec_form_decodes_json_escapes() {
        assert_eq!(
            kind("FROM a\nRUN [\"echo\", \"a\\\"b\", \"\\u00e9\\n\"]\n", 1),
            InstrKind::Run {
                options: Flags::default(),
                form: CmdForm::Exec(s(&["echo", "a\"b", "é\n"])),
                heredocs: vec![],
            }
        );
    }

    #[test]
    fn invalid_json_falls_back_to_shell_form() {
        for (src, want) in [
            ("RUN ['echo', 'x']", "['echo', 'x']"),
            ("RUN [\"echo\", \"x\",]", "[\"echo\", \"x\",]"),
            ("RUN [\"a\"] trailing", "[\"a\"] trailing"),
            ("CMD [ -f /x ] && echo y", "[ -f /x ] && echo y"),
        ] {
            let k = kind(&format!("FROM a\n{src}\n"), 1);
            let form = match k {
                InstrKind::Run { form, .. } => form,
                InstrKind::Cmd(form) => form,
                k => panic!("{k:?}"),
            };
            assert_eq!(form, CmdForm::Shell(want.into()), "{src}");
        }
    }

    #[test]
    fn json_array_with_non_strings_is_an_error() {
        let e = perr("FROM a\nCMD [\"a\", 1]\n");
        assert_eq!((e.line, e.col), (2, 5));
        assert!(e.message.contains("strings only"));
    }

    #[test]
    fn cmd_entrypoint_shell_forms() {
        let ks = kinds("FROM a\nCMD []\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nSHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\nCMD echo $HOME\n");
        assert_eq!(ks[1], InstrKind::Cmd(CmdForm::Exec(vec![])));
        assert_eq!(
            ks[2],
            InstrKind::Entrypoint(CmdForm::Exec(s(&["/bin/sh", "-c"])))
        );
        assert_eq!(
            ks[3],
            InstrKind::Shell(s(&["/bin/bash", "-eo", "pipefail", "-c"]))
        );
        assert_eq!(ks[4], InstrKind::Cmd(CmdForm::Shell("echo $HOME".into())));
    }

    #[test]
    fn shell_requires_json_form() {
        let e = perr("FROM a\nSHELL /bin/bash -c\n");
        assert!(e.message.contains("JSON form"));
        assert!(perr("FROM a\nSHELL []\n").message.contains("at least one"));
    }

    #[test]
    fn run_flags_are_kept() {
        match kind("FROM a\nRUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=x --network=none make\n", 1) {
            InstrKind::Run { options, form, .. } => {
                assert_eq!(options.get_all("mount").collect::<Vec<_>>(), ["type=cache,target=/root/.cache", "type=secret,id=x"]);
                assert_eq!(options.get("network"), Some("none"));
                assert_eq!(form, CmdForm::Shell("make".into()));
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn copy_shell_form_splits_on_whitespace_like_docker_then_expands_each_word() {
        match kind(
            "FROM a\nCOPY --from=build --chown=1:2 --chmod=755 --link \"my\" 'b' a\\ b d /dst/\n",
            1,
        ) {
            InstrKind::Copy(c) => {
                assert_eq!(c.from(), Some("build"));
                assert_eq!(c.chown(), Some("1:2"));
                assert_eq!(c.chmod(), Some("755"));
                assert!(c.options.bool("link"));
                assert!(!c.json);
                assert_eq!(
                    c.sources,
                    vec![
                        CopySource::Path("\"my\"".into()),
                        CopySource::Path("'b'".into()),
                        CopySource::Path("a\\".into()),
                        CopySource::Path("b".into()),
                        CopySource::Path("d".into()),
                    ]
                );
                assert_eq!(c.dest, "/dst/");
            }
            k => panic!("{k:?}"),
        }
        // BuildKit's parseStringsWhitespaceDelimited: quotes do not group words, so a
        // quoted name with a space is two words, each with an unterminated quote.
        let e = perr("FROM a\nCOPY \"my file\" /dst/\n");
        assert!(e.message.contains("double-quote"), "{e}");
        assert_eq!((e.line, e.col), (2, 6));
    }

    #[test]
    fn copy_json_form_and_add() {
        match kind("FROM a\nADD [\"a b\", \"c\", \"/d\"]\n", 1) {
            InstrKind::Add(c) => {
                assert!(c.json);
                assert_eq!(
                    c.sources,
                    vec![CopySource::Path("a b".into()), CopySource::Path("c".into())]
                );
                assert_eq!(c.dest, "/d");
            }
            k => panic!("{k:?}"),
        }
        assert!(perr("FROM a\nCOPY onlyone\n")
            .message
            .contains("at least two"));
    }

    #[test]
    fn arg_forms() {
        assert_eq!(
            kind("ARG A\nFROM a\nARG B=1 C=\"x y\" D=\n", 2),
            InstrKind::Arg(vec![
                ArgDecl {
                    name: "B".into(),
                    default: Some("1".into())
                },
                ArgDecl {
                    name: "C".into(),
                    default: Some("\"x y\"".into())
                },
                ArgDecl {
                    name: "D".into(),
                    default: Some("".into())
                },
            ])
        );
        assert_eq!(
            kind("ARG A\nFROM a\n", 0),
            InstrKind::Arg(vec![ArgDecl {
                name: "A".into(),
                default: None
            }])
        );
        assert!(perr("FROM a\nARG =x\n").message.contains("blank"));
        assert!(perr("FROM a\nARG\n").message.contains("at least one"));
    }

    #[test]
    fn env_new_and_legacy_forms() {
        assert_eq!(
            kind("FROM a\nENV A=1 B=\"v 2\" C=three\\ words D='$x'\n", 1),
            InstrKind::Env(pairs(&[
                ("A", "1"),
                ("B", "\"v 2\""),
                ("C", "three\\ words"),
                ("D", "'$x'")
            ]))
        );
        let d = p("FROM a\nENV MY_NAME John Doe  x\n");
        assert_eq!(
            kind_of(&d, 1),
            InstrKind::Env(pairs(&[("MY_NAME", "John Doe  x")]))
        );
        assert!(d.warnings.iter().any(|w| w.message.contains("legacy")));
        let e = perr("FROM a\nENV A=1 B\n");
        assert_eq!((e.line, e.col), (2, 9));
        assert!(e.message.contains("can't find ="));
        assert!(perr("FROM a\nENV A\n").message.contains("two arguments"));
    }

    #[test]
    fn label_pairs_with_quotes_and_continuations() {
        assert_eq!(
            kind("FROM a\nLABEL \"com.example.vendor\"=\"ACME\" version=1.0 \\\n  description=\"multi \\\nline\"\n", 1),
            InstrKind::Label(pairs(&[
                ("\"com.example.vendor\"", "\"ACME\""),
                ("version", "1.0"),
                ("description", "\"multi line\""),
            ]))
        );
    }

    #[test]
    fn simple_instructions() {
        let ks = kinds(
            "FROM a\nWORKDIR /a b\nUSER 1000:1000\nEXPOSE 80/tcp 443\nVOLUME /data /logs\nVOLUME [\"/x\"]\nSTOPSIGNAL SIGTERM\nMAINTAINER Me <me@x>\n",
        );
        assert_eq!(ks[1], InstrKind::Workdir("/a b".into()));
        assert_eq!(ks[2], InstrKind::User("1000:1000".into()));
        assert_eq!(ks[3], InstrKind::Expose(s(&["80/tcp", "443"])));
        assert_eq!(ks[4], InstrKind::Volume(s(&["/data", "/logs"])));
        assert_eq!(ks[5], InstrKind::Volume(s(&["/x"])));
        assert_eq!(ks[6], InstrKind::Stopsignal("SIGTERM".into()));
        assert_eq!(ks[7], InstrKind::Maintainer("Me <me@x>".into()));
        assert!(perr("FROM a\nWORKDIR\n").message.contains("exactly one"));
        assert!(perr("FROM a\nVOLUME [\"\"]\n")
            .message
            .contains("empty string"));
    }

    #[test]
    fn healthcheck_forms() {
        let ks = kinds("FROM a\nHEALTHCHECK NONE\nHEALTHCHECK --interval=5m --timeout=3s CMD curl -f http://localhost/ || exit 1\nhealthcheck cmd [\"true\"]\n");
        assert_eq!(ks[1], InstrKind::Healthcheck(Healthcheck::None));
        match &ks[2] {
            InstrKind::Healthcheck(Healthcheck::Cmd { options, cmd }) => {
                assert_eq!(options.get("interval"), Some("5m"));
                assert_eq!(
                    *cmd,
                    CmdForm::Shell("curl -f http://localhost/ || exit 1".into())
                );
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(
            ks[3],
            InstrKind::Healthcheck(Healthcheck::Cmd {
                options: Flags::default(),
                cmd: CmdForm::Exec(s(&["true"]))
            })
        );
        assert!(perr("FROM a\nHEALTHCHECK NONE x\n")
            .message
            .contains("no arguments"));
        assert!(perr("FROM a\nHEALTHCHECK RUN x\n")
            .message
            .contains("try CMD"));
    }

    #[test]
    fn onbuild_keeps_trigger() {
        match kind("FROM a\nONBUILD run echo ${x\n", 1) {
            InstrKind::Onbuild { trigger, text } => {
                assert_eq!(text, "RUN echo ${x");
                assert_eq!(
                    *trigger,
                    InstrKind::Run {
                        options: Flags::default(),
                        form: CmdForm::Shell("echo ${x".into()),
                        heredocs: vec![],
                    }
                );
            }
            k => panic!("{k:?}"),
        }
        // Substitution in triggers is checked by the build that runs them, not here.
        p("FROM a\nONBUILD COPY ${x /y\n");
        assert!(perr("FROM a\nONBUILD ONBUILD RUN x\n")
            .message
            .contains("isn't allowed"));
        assert!(perr("FROM a\nONBUILD FROM x\n")
            .message
            .contains("isn't allowed"));
        let e = perr("FROM a\nONBUILD FOO x\n");
        assert_eq!((e.line, e.col), (2, 9));
    }

    // --- heredocs

    #[test]
    fn run_heredoc_body_and_span() {
        let d = p("FROM a\nRUN <<EOF\napt-get update\napt-get install -y vim\nEOF\nRUN next\n");
        match kind_of(&d, 1) {
            InstrKind::Run { form, heredocs, .. } => {
                assert_eq!(form, CmdForm::Shell("<<EOF".into()));
                assert_eq!(heredocs.len(), 1);
                assert_eq!(heredocs[0].name, "EOF");
                assert_eq!(
                    heredocs[0].content,
                    "apt-get update\napt-get install -y vim\n"
                );
                assert!(heredocs[0].expand);
                assert!(!heredocs[0].chomp);
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(
            d.instructions[1].span,
            Span {
                start_line: 2,
                end_line: 5
            }
        );
        assert_eq!(d.instructions[2].span.start_line, 6);
    }

    #[test]
    fn heredoc_dash_strips_leading_tabs_and_quoted_delimiter_disables_expansion() {
        let d = p("FROM a\nRUN <<-\"END\"\n\techo $HOME\n\t\tx\n\tEND\n");
        match kind_of(&d, 1) {
            InstrKind::Run { heredocs, .. } => {
                assert_eq!(heredocs[0].name, "END");
                assert_eq!(heredocs[0].content, "echo $HOME\nx\n");
                assert!(heredocs[0].chomp);
                assert!(!heredocs[0].expand);
                assert_eq!(heredocs[0].word, "<<-\"END\"");
            }
            k => panic!("{k:?}"),
        }
        let k = kind("FROM a\nRUN <<'EOF'\nx\nEOF\n", 1);
        assert!(!k.heredocs()[0].expand);
    }

    #[test]
    fn multiple_heredocs_in_one_line() {
        let d = p("FROM a\nRUN <<FILE1 cat > /file1 && 3<<FILE2 cat > /file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n");
        match kind_of(&d, 1) {
            InstrKind::Run { form, heredocs, .. } => {
                assert_eq!(
                    form,
                    CmdForm::Shell("<<FILE1 cat > /file1 && 3<<FILE2 cat > /file2".into())
                );
                assert_eq!(heredocs.len(), 2);
                assert_eq!(
                    (heredocs[0].name.as_str(), heredocs[0].content.as_str()),
                    ("FILE1", "I am\nfirst\n")
                );
                assert_eq!(
                    (heredocs[1].name.as_str(), heredocs[1].fd),
                    ("FILE2", Some(3))
                );
                assert_eq!(
                    shell_script_with_heredocs("<<FILE1 cat > /file1", &heredocs[..1]),
                    "<<FILE1 cat > /file1\nI am\nfirst\nFILE1"
                );
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(
            d.instructions[1].span,
            Span {
                start_line: 2,
                end_line: 8
            }
        );
    }

    #[test]
    fn heredoc_after_continuation_and_in_quotes() {
        let d = p("FROM a\nRUN python3 \\\n  <<EOF\nprint(1)\nEOF\nRUN echo \"<<EOF\"\n");
        assert_eq!(d.instructions[1].kind.heredocs()[0].content, "print(1)\n");
        assert!(d.instructions[2].kind.heredocs().is_empty());
        // Exec form has no heredocs.
        assert!(kind("FROM a\nRUN [\"cat\", \"<<EOF\"]\n", 1)
            .heredocs()
            .is_empty());
    }

    #[test]
    fn copy_heredoc_makes_a_file() {
        let d = p(
            "FROM a\nCOPY <<EOF /etc/motd\nhello $USER\nEOF\nCOPY <<A <<\"B\" /dir/\na\nA\nb\nB\n",
        );
        match kind_of(&d, 1) {
            InstrKind::Copy(c) => {
                assert_eq!(c.dest, "/etc/motd");
                match &c.sources[0] {
                    CopySource::Heredoc(h) => {
                        assert_eq!(h.name, "EOF");
                        assert_eq!(h.content, "hello $USER\n");
                    }
                    x => panic!("{x:?}"),
                }
            }
            k => panic!("{k:?}"),
        }
        let hs = d.instructions[2].kind.heredocs();
        assert_eq!(
            hs.iter()
                .map(|h| (h.name.as_str(), h.content.as_str(), h.expand))
                .collect::<Vec<_>>(),
            [("A", "a\n", true), ("B", "b\n", false)]
        );
        assert!(perr("FROM a\nCOPY x <<EOF\nEOF\n")
            .message
            .contains("destination"));
    }

    #[test]
    fn unterminated_heredoc_is_an_error_at_its_word() {
        let e = perr("FROM a\nRUN cat <<EOF\nline\n");
        assert_eq!((e.line, e.col), (2, 9));
        assert!(e.message.contains("unterminated heredoc"));
    }

    #[test]
    fn heredoc_lines_are_not_comments_or_instructions() {
        let d = p("FROM a\nRUN <<EOF\n# not a comment\nFROM nothing \\\n\nEOF\n");
        assert_eq!(d.instructions.len(), 2);
        assert_eq!(
            d.instructions[1].kind.heredocs()[0].content,
            "# not a comment\nFROM nothing \\\n\n"
        );
    }

    #[test]
    fn lone_double_less_than_is_not_a_heredoc() {
        let d = p("FROM a\nRUN echo x<<y && cat <<\n");
        // `x<<y` does not start with `<<`: not a heredoc; `<<` alone has no name.
        assert!(d.instructions[1].kind.heredocs().is_empty());
    }

    #[test]
    fn whitespace_after_double_less_than_opens_a_heredoc_as_in_buildkit() {
        let d = p(
            "FROM a\nRUN << EOF\necho hi\nEOF\nRUN <<  EOF  > /f\nx\nEOF\nRUN 3<< 'Q' cat\ny\nQ\n",
        );
        assert_eq!(d.instructions.len(), 4);
        let h = d.instructions[1].kind.heredocs();
        assert_eq!(
            (h[0].name.as_str(), h[0].content.as_str()),
            ("EOF", "echo hi\n")
        );
        // The word as written, so `RUN << EOF` alone runs the body as the script.
        assert_eq!(h[0].word, "<< EOF");
        let h = d.instructions[2].kind.heredocs();
        assert_eq!((h[0].name.as_str(), h[0].content.as_str()), ("EOF", "x\n"));
        assert_eq!(h[0].word, "<<  EOF");
        let h = d.instructions[3].kind.heredocs();
        assert_eq!(
            (h[0].name.as_str(), h[0].fd, h[0].expand),
            ("Q", Some(3), false)
        );
        // `<<-` followed by blanks is not a heredoc in BuildKit.
        let e = perr("FROM a\nRUN cat <<- EOF\nx\nEOF\n");
        assert!(e.message.contains("unknown instruction: X"), "{e}");
    }

    // --- substitution syntax checked at parse time

    #[test]
    fn malformed_substitution_is_reported_with_column() {
        let e = perr("FROM a\nWORKDIR /x/${oops\n");
        assert_eq!((e.line, e.col), (2, 12));
        let e = perr("FROM ${\n");
        assert_eq!((e.line, e.col), (1, 6));
        let e = perr("FROM a\nCOPY --chown=${u:x} a b\n");
        assert!(e.message.contains("unsupported modifier"), "{e}");
        assert_eq!(e.col, 17);
        // RUN and CMD are not substituted: no check.
        p("FROM a\nRUN echo ${oops\nCMD ${\n");
    }

    #[test]
    fn words_split_like_docker_parse_words() {
        assert_eq!(
            split_words("a \"b c\" d\\ e 'f\\' g", '\\'),
            s(&["a", "\"b c\"", "d\\ e", "'f\\'", "g"])
        );
        assert_eq!(split_words("x=\"\" ''", '\\'), s(&["x=\"\"", "''"]));
        assert_eq!(split_words("  ", '\\'), Vec::<String>::new());
        assert_eq!(split_words("a`  b", '`'), s(&["a` ", "b"]));
    }

    // --- robustness

    /// Tiny xorshift64* RNG so the test needs no dependency and is reproducible.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Parse, substitute and render `text`; any outcome but a panic is fine.
    fn exercise(text: &str) {
        match parse(text, "fuzz") {
            Ok(d) => {
                let mut vars = crate::build::subst::Vars::new(
                    [("A".to_string(), "1".to_string())],
                    d.escape(),
                );
                for i in &d.instructions {
                    let _ = i.display();
                    let _ = vars.step(&i.kind);
                    let _ = d.error_in(i, "x").to_string();
                }
                let _ = vars.run_env();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }

    #[test]
    fn mutated_dockerfiles_never_panic() {
        let seeds = [
            "# escape=`\nFROM a AS b\nRUN x `\n  y\nCOPY c:\\ d\n",
            "# syntax=x\nARG V=${A:-${B:+c}}\nFROM --platform=$P img:$V\nRUN --mount=type=cache,target=/x <<EOF cat\n\thi $A\nEOF\n",
            "FROM a\nCOPY --from=b <<-\"X\" 'q r' [\"/d\"]\n\tx\n\tX\nENV A=1 B=\"2 3\" C\\ D=4\nLABEL a b\n",
            "FROM a\nCMD [\"a\", \"b\\u00e9\"]\nSHELL [\"sh\", \"-c\"]\nHEALTHCHECK --retries=3 CMD x\nONBUILD RUN y\nEXPOSE 1 2\nVOLUME [\"/v\"]\n",
            "FROM a\nRUN a \\\n# c\n\n b\nWORKDIR /${X:?}\nUSER ${U-x}\nSTOPSIGNAL 9\nMAINTAINER m\n",
        ];
        let tokens = [
            "\\",
            "\n",
            "\r\n",
            "$",
            "${",
            "}",
            "\"",
            "'",
            "<<",
            "<<-",
            "EOF",
            "[",
            "]",
            ",",
            "=",
            "--",
            "#",
            " ",
            "\t",
            "`",
            "é",
            ":-",
            ":+",
            "?",
            "FROM ",
            "RUN ",
            "COPY ",
            "ARG ",
            "ENV ",
            "ONBUILD ",
            "# escape=`\n",
            "\u{feff}",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..4000 {
            let mut chars: Vec<char> = seeds[round % seeds.len()].chars().collect();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(chars.len() + 1);
                match rng.below(4) {
                    0 | 1 => {
                        let t = tokens[rng.below(tokens.len())];
                        chars.splice(at..at, t.chars());
                    }
                    2 => {
                        let end = (at + rng.below(8)).min(chars.len());
                        chars.drain(at..end);
                    }
                    _ => {
                        let end = (at + rng.below(16)).min(chars.len());
                        let dup: Vec<char> = chars[at..end].to_vec();
                        chars.splice(at..at, dup);
                    }
                }
            }
            let text: String = chars.into_iter().collect();
            exercise(&text);
        }
    }
}
