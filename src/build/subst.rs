//! Variable substitution in Dockerfile words, and Docker's ARG/ENV scoping.
//!
//! Owns: expanding one word (`$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`,
//! `${VAR+w}`, `${VAR:?w}`, `${VAR?w}`, `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`,
//! `${VAR/p/r}`, `${VAR//p/r}`, quotes, the escape character) the way Docker's
//! `shell.Lex.ProcessWord` does; which instructions and fields Docker substitutes
//! ([`expand_instruction`]); and the variables visible at each point of a build
//! ([`Vars`]: global ARGs only in FROM lines, per-stage ARGs, persistent ENV, ENV over
//! ARG, `--build-arg` over ARG defaults, all reads of one instruction before its writes).
//!
//! Invariants: undefined variables expand to the empty string; expansion is a pure
//! function of the word, the escape character and the lookup; errors carry the byte
//! offset in the word where the bad construct starts.
//!
//! Must not depend on: the store, `run`, the file system, the process environment.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use thiserror::Error;

use crate::build::dockerfile::{
    flag_is_substituted, CopyArgs, CopySource, Flag, Flags, InstrKind, Keyword,
};

/// A substitution error in one word.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}")]
pub struct SubstError {
    /// Byte offset in the word where the offending construct starts.
    pub offset: usize,
    /// What went wrong.
    pub kind: SubstErrorKind,
}

impl SubstError {
    /// 1-based column (in characters) of the error in `word`, the word that was expanded.
    pub fn col_in(&self, word: &str) -> usize {
        word.get(..self.offset).map_or(1, |w| w.chars().count() + 1)
    }
}

/// Kinds of [`SubstError`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SubstErrorKind {
    /// `${` without its `}`.
    #[error("syntax error: missing '}}' in variable substitution")]
    MissingBrace,
    /// `${}`, `${:x}`, `${{x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${A:x}`, `${A:#x}`, `${A=x}` and other operators Docker does not support.
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${A/pat}` without the `/` before the replacement.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// A `#`, `%` or `/` pattern with a bad escape (`\x` for x other than `*`, `?`, `\\`,
    /// `}`, `/`).
    #[error("invalid pattern ({pattern}) in substitution: {message}")]
    InvalidPattern { pattern: String, message: String },
    /// A pattern and value whose product of lengths exceeds [`MAX_PATTERN_WORK`].
    #[error("pattern ({0}) too long for the value it is matched against")]
    PatternTooLong(String),
    /// More `#`, `%` and `/` matching in one build than [`MAX_BUILD_PATTERN_WORK`].
    #[error(
        "too much pattern matching in variable substitutions (the build's matches have \
         used up {MAX_BUILD_PATTERN_WORK} steps)"
    )]
    TooMuchMatching,
    /// More bytes of variable values substituted in one build than
    /// [`MAX_BUILD_SUBSTITUTED`].
    #[error(
        "too much variable substitution (the build's substitutions have copied \
         {MAX_BUILD_SUBSTITUTED} bytes of values)"
    )]
    TooMuchSubstituted,
    /// A quote without its closing quote.
    #[error("unexpected end of statement while looking for matching {0}")]
    UnterminatedQuote(&'static str),
    /// `${...}` nested deeper than [`MAX_NESTING`].
    #[error("variable substitution nested too deeply")]
    TooDeep,
    /// An expansion more than [`MAX_GROWTH`] bytes longer than the word.
    #[error(
        "variable substitution result too long (more than {MAX_GROWTH} bytes longer than \
         the text it expands)"
    )]
    TooLong,
    /// `${A?msg}` with A unset, or `${A:?msg}` with A unset or empty.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    /// An ENV, ARG or LABEL name that is empty once substituted (`ENV ${UNSET}=1`), as the
    /// parser refuses `ENV =1`: ENV would write a `=1` line that ch-run can't read.
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
}

/// Deepest `${A:-${B:-...}}` nesting accepted (keeps the recursive expander's stack
/// bounded on hostile input).
pub const MAX_NESTING: usize = 64;

/// Most bytes the expansion of one word (or heredoc body) may add to its length. Values
/// built from variables that repeat variables grow exponentially: ten `ARG` lines of 16
/// `$PREV` each ask for 16^10 bytes, and took 19 GB of memory in a minute before this bound.
/// A variable that big could not reach a RUN anyway (Linux passes at most 128 KiB in one
/// environment string).
pub const MAX_GROWTH: usize = 1 << 20;

/// Largest (pattern length + 1) x (value length + 1) matched by `#`, `%` and `/`; the
/// matcher takes time proportional to it.
pub const MAX_PATTERN_WORK: usize = 1 << 26;

/// Most matching work, as [`MAX_PATTERN_WORK`] counts it, that all the `#`, `%` and `/`
/// matches of one build ([`Vars`]) may take together: two of the largest. Without it a
/// Dockerfile of 909 bytes (a variable doubled to 1 MiB, then ten `${A//<62 ?>/}`) took
/// 13 s (debug build), and every further 80 bytes another second.
pub const MAX_BUILD_PATTERN_WORK: usize = 2 * MAX_PATTERN_WORK;

/// Most bytes of variable values that the substitutions of one build ([`Vars`]) may copy
/// together. [`MAX_GROWTH`] bounds one word, not their number: a Dockerfile of 3 KiB (a
/// variable doubled to 1 MiB, then `ENV B0=$A B1=$A ...` 300 times) took 950 MB of memory
/// and 4.3 s to plan, and every 10 more bytes another MiB. (More than the 64 MiB a
/// config.json may hold, so that a build that asks for a bigger one fails as one.)
pub const MAX_BUILD_SUBSTITUTED: usize = 1 << 27;

/// Where variable values come from.
pub trait Lookup {
    /// Value of `name`, or `None` if it is not set (which differs from set-but-empty for
    /// `${A-x}` and `${A+x}`).
    fn lookup(&self, name: &str) -> Option<String>;

    /// Take `work` (as [`MAX_PATTERN_WORK`] counts it) from the budget of matching this
    /// lookup allows; `false` if that is spent. Only [`Vars`] has a budget (a build's,
    /// [`MAX_BUILD_PATTERN_WORK`]); other lookups allow any amount.
    fn charge(&self, _work: usize) -> bool {
        true
    }

    /// Take `bytes` of a value substituted from the budget this lookup allows; `false` if
    /// that is spent. Only [`Vars`] has a budget (a build's, [`MAX_BUILD_SUBSTITUTED`]).
    fn charge_copy(&self, _bytes: usize) -> bool {
        true
    }
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn lookup(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Lookup for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Lookup for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl Lookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// A lookup in which nothing is set.
pub struct NoVars;

impl Lookup for NoVars {
    fn lookup(&self, _: &str) -> Option<String> {
        None
    }
}

/// Expand one word as Docker does: variables substituted, quotes removed (`'...'` is
/// literal, `"..."` allows `$` and escapes of `"`, `$` and the escape character), the
/// escape character makes the next character literal (`\$HOME` is `$HOME`). Whitespace is
/// kept: the word is not split.
pub fn expand_word<L: Lookup + ?Sized>(
    word: &str,
    escape: char,
    vars: &L,
) -> Result<String, SubstError> {
    Expander {
        s: word,
        pos: 0,
        escape,
        vars,
        check: false,
        raw_quotes: false,
        raw_escapes: false,
        depth: 0,
        limit: word.len().saturating_add(MAX_GROWTH),
    }
    .word(None)
}

/// Names of the variables that expanding `word` looks up and finds unset, in order of
/// first use (none if `word` does not expand). A FROM whose reference is invalid names them.
pub fn undefined_names<L: Lookup + ?Sized>(word: &str, escape: char, vars: &L) -> Vec<String> {
    let missing = std::cell::RefCell::new(Vec::<String>::new());
    let record = |name: &str| {
        let v = vars.lookup(name);
        let mut m = missing.borrow_mut();
        if v.is_none() && !m.iter().any(|x| x == name) {
            m.push(name.to_string());
        }
        v
    };
    if expand_word(word, escape, &record).is_err() {
        return Vec::new();
    }
    missing.into_inner()
}

/// Check the syntax of `word` without looking anything up (`${A?x}` never fails here).
pub fn check_word(word: &str, escape: char) -> Result<(), SubstError> {
    Expander {
        s: word,
        pos: 0,
        escape,
        vars: &NoVars,
        check: true,
        raw_quotes: false,
        raw_escapes: false,
        depth: 0,
        limit: word.len().saturating_add(MAX_GROWTH),
    }
    .word(None)
    .map(|_| ())
}

/// Expand a heredoc body as a POSIX shell expands an unquoted here-document: `$`
/// expansions are substituted; the escape character is removed only before `$`, the escape
/// character itself, `` ` `` and a newline (which it joins); quotes are literal.
pub fn expand_heredoc<L: Lookup + ?Sized>(
    content: &str,
    escape: char,
    vars: &L,
) -> Result<String, SubstError> {
    let mut ex = Expander {
        s: content,
        pos: 0,
        escape,
        vars,
        check: false,
        raw_quotes: true,
        raw_escapes: false,
        depth: 0,
        limit: content.len().saturating_add(MAX_GROWTH),
    };
    let mut out = String::with_capacity(content.len());
    while let Some(ch) = ex.peek() {
        if ch == '$' {
            let at = ex.pos;
            out.push_str(&ex.dollar()?);
            ex.bounded(&out, at)?;
            continue;
        }
        ex.next();
        if ch == escape {
            match ex.peek() {
                Some('\n') => {
                    ex.next();
                }
                Some(c) if c == '$' || c == '`' || c == escape => {
                    ex.next();
                    out.push(c);
                }
                _ => out.push(ch),
            }
        } else {
            out.push(ch);
        }
    }
    Ok(out)
}

/// Split `text` into shell words and remove their quotes, without substituting
/// variables (`$X` stays `$X`). For COPY/ADD shell-form sources when no substitution is
/// wanted; [`crate::build::dockerfile::split_words`] + [`expand_word`] is the usual path.
pub fn shell_words(text: &str, escape: char) -> Result<Vec<String>, SubstError> {
    let keep = |name: &str| Some(format!("${{{name}}}"));
    crate::build::dockerfile::split_words(text, escape)
        .iter()
        .map(|w| {
            // Protect `$` so that only quoting is processed.
            let protected = escape_dollars(w, escape);
            expand_word(&protected, escape, &keep)
        })
        .collect()
}

/// Prefix each unescaped `$` outside single quotes with the escape character.
fn escape_dollars(w: &str, escape: char) -> String {
    let mut out = String::with_capacity(w.len());
    let mut quote: Option<char> = None;
    let mut it = w.chars();
    while let Some(c) = it.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), _) => {}
            (_, c) if c == escape => {
                out.push(c);
                if let Some(n) = it.next() {
                    out.push(n);
                }
                continue;
            }
            (_, '$') => out.push(escape),
            _ => {}
        }
        out.push(c);
    }
    out
}

struct Expander<'a, L: ?Sized> {
    s: &'a str,
    pos: usize,
    escape: char,
    vars: &'a L,
    /// Syntax check only: nothing is set and `?` never fails.
    check: bool,
    /// Heredoc mode: quotes inside `${...}` words are kept.
    raw_quotes: bool,
    /// Pattern mode (`#`, `%`, `/` words): escape characters are kept in the result, as
    /// Docker's `processStopOn(.., rawEscapes=true)` keeps them for the pattern compiler.
    raw_escapes: bool,
    /// Current `${` nesting.
    depth: usize,
    /// Longest result: the word's length plus [`MAX_GROWTH`].
    limit: usize,
}

impl<L: Lookup + ?Sized> Expander<'_, L> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// The value of `name` (for the expansion at `at`), charged to the lookup's budget.
    fn get(&self, name: &str, at: usize) -> Result<Option<String>, SubstError> {
        if self.check {
            return Ok(None);
        }
        let value = self.vars.lookup(name);
        match &value {
            Some(v) if !self.vars.charge_copy(v.len()) => {
                Err(self.err(at, SubstErrorKind::TooMuchSubstituted))
            }
            _ => Ok(value),
        }
    }

    fn err(&self, offset: usize, kind: SubstErrorKind) -> SubstError {
        SubstError { offset, kind }
    }

    /// Charge the match of `pattern` against `value`, done, to the lookup's budget (in
    /// bytes: at least the characters [`check_work`] counts); an error once it is spent.
    fn charge(&self, pattern: &str, value: &str, at: usize) -> Result<(), SubstError> {
        let work = (pattern.len() + 1).saturating_mul(value.len() + 1);
        if self.vars.charge(work) {
            Ok(())
        } else {
            Err(self.err(at, SubstErrorKind::TooMuchMatching))
        }
    }

    /// `out`, the result so far, after the expansion that starts at `at`: an error if it
    /// is longer than [`Self::limit`].
    fn bounded(&self, out: &str, at: usize) -> Result<(), SubstError> {
        if out.len() > self.limit {
            return Err(self.err(at, SubstErrorKind::TooLong));
        }
        Ok(())
    }

    /// Docker's `processStopOn`: read up to `stop` (consumed) or the end.
    fn word(&mut self, stop: Option<char>) -> Result<String, SubstError> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok(out);
            }
            match ch {
                '\'' if !self.raw_quotes => out.push_str(&self.single_quote()?),
                '"' if !self.raw_quotes => out.push_str(&self.double_quote()?),
                '$' => {
                    let at = self.pos;
                    out.push_str(&self.dollar()?);
                    self.bounded(&out, at)?;
                }
                _ => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.next() {
                            Some(c) => out.push(c),
                            None => break,
                        }
                    } else {
                        out.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(_) => Err(self.err(self.pos, SubstErrorKind::MissingBrace)),
            None => Ok(out),
        }
    }

    fn single_quote(&mut self) -> Result<String, SubstError> {
        let start = self.pos;
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(self.err(start, SubstErrorKind::UnterminatedQuote("single-quote")))
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, SubstError> {
        let start = self.pos;
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.err(start, SubstErrorKind::UnterminatedQuote("double-quote")))
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => {
                    let at = self.pos;
                    out.push_str(&self.dollar()?);
                    self.bounded(&out, at)?;
                }
                Some(_) => {
                    let mut ch = self.next().expect("peeked");
                    if ch == self.escape {
                        if self.raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = self.next().expect("peeked");
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// The word of a `${NAME<op>word}` up to `stop` (consumed), with escapes kept if
    /// `raw_escapes`. Running out of input is `missing` at `start`.
    fn sub_word(
        &mut self,
        start: usize,
        stop: char,
        raw_escapes: bool,
        missing: SubstErrorKind,
    ) -> Result<String, SubstError> {
        if self.depth >= MAX_NESTING {
            return Err(self.err(start, SubstErrorKind::TooDeep));
        }
        self.depth += 1;
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let word = self.word(Some(stop));
        self.raw_escapes = saved;
        self.depth -= 1;
        match word {
            Ok(w) => Ok(w),
            Err(_) if self.peek().is_none() => Err(self.err(start, missing)),
            Err(e) => Err(e),
        }
    }

    /// Docker's `processName`: a run of letters, digits and `_`; or digits only if it
    /// starts with one; or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        if let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!') {
                self.next();
                name.push(c);
                return name;
            }
        }
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_') {
            self.next();
            name.push(c);
        }
        name
    }

    fn dollar(&mut self) -> Result<String, SubstError> {
        let start = self.pos;
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get(&name, start)?.unwrap_or_default());
        }
        self.next();
        match self.peek() {
            None => return Err(self.err(start, SubstErrorKind::MissingBrace)),
            Some('{' | '}' | ':') => return Err(self.err(start, SubstErrorKind::BadSubstitution)),
            Some(_) => {}
        }
        let name = self.name();
        let op_at = self.pos;
        let Some(op) = self.next() else {
            return Err(self.err(start, SubstErrorKind::MissingBrace));
        };
        let unsupported = |m: String| SubstError {
            offset: op_at,
            kind: SubstErrorKind::UnsupportedModifier(m),
        };
        let (colon, modifier) = match op {
            '}' => return Ok(self.get(&name, start)?.unwrap_or_default()),
            ':' => match self.next() {
                None => return Err(self.err(start, SubstErrorKind::MissingBrace)),
                Some(m @ ('-' | '+' | '?')) => (true, m),
                Some(m) => return Err(unsupported(format!(":{m}"))),
            },
            '-' | '+' | '?' => (false, op),
            '#' | '%' => {
                let word = self.sub_word(start, '}', true, SubstErrorKind::MissingBrace)?;
                let value = self.get(&name, start)?.unwrap_or_default();
                let out = trim(&value, &word, op).map_err(|kind| self.err(start, kind))?;
                self.charge(&word, &value, start)?;
                return Ok(out);
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pattern = self.sub_word(start, '/', true, SubstErrorKind::MissingSlash)?;
                let with = self.sub_word(start, '}', true, SubstErrorKind::MissingBrace)?;
                let value = self.get(&name, start)?.unwrap_or_default();
                let out = replace(&value, &pattern, &with, all, self.limit)
                    .map_err(|kind| self.err(start, kind))?;
                self.charge(&pattern, &value, start)?;
                return Ok(out);
            }
            m => return Err(unsupported(m.to_string())),
        };
        let word = self.sub_word(start, '}', false, SubstErrorKind::MissingBrace)?;
        let value = self.get(&name, start)?;
        let empty = value.as_deref().is_none_or(str::is_empty);
        let missing = if colon { empty } else { value.is_none() };
        Ok(match modifier {
            '-' => {
                if missing {
                    word
                } else {
                    value.unwrap_or_default()
                }
            }
            '+' => {
                if missing {
                    String::new()
                } else {
                    word
                }
            }
            _ => {
                if missing && !self.check {
                    let message = if !word.is_empty() {
                        word
                    } else if colon && value.is_some() {
                        "is not allowed to be empty".to_string()
                    } else {
                        "is not allowed to be unset".to_string()
                    };
                    return Err(self.err(start, SubstErrorKind::Required { name, message }));
                }
                value.unwrap_or_default()
            }
        })
    }
}

// ----------------------------------------------------------------------------------------
// Shell patterns of `${A#p}`, `${A%p}`, `${A/p/r}`, as BuildKit's `convertShellPatternToRegex`
// reads them: `*` any run of characters, `?` one character (neither matches a newline, as
// Go's `.` does not), no bracket expressions; `\*`, `\?`, `\\` are literal; `\}` and `\/` are
// `}` and `/` (the escape only protects them from the `${...}` scanner); any other `\x` is
// an error. Matching follows Go's leftmost-first rule: among the matches starting at the
// leftmost position, the one a backtracking matcher would find first, with `*` preferring
// the shortest run (`#`, `%`) or the longest (`##`, `%%`, `/`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

fn compile_pattern(pattern: &str) -> Result<Vec<Tok>, SubstErrorKind> {
    let bad = |message: String| SubstErrorKind::InvalidPattern {
        pattern: pattern.to_string(),
        message,
    };
    let mut out = Vec::new();
    let mut it = pattern.chars().peekable();
    while let Some(c) = it.next() {
        out.push(match c {
            '*' => Tok::Star,
            '?' => Tok::Any,
            '\\' => match it.peek() {
                Some('}' | '/') => continue,
                Some(&n @ ('*' | '?' | '\\')) => {
                    it.next();
                    Tok::Lit(n)
                }
                Some(&n) => return Err(bad(format!("invalid escape '\\{n}'"))),
                None => return Err(bad("invalid escape at end of pattern".to_string())),
            },
            c => Tok::Lit(c),
        });
    }
    Ok(out)
}

/// For each start position `j` in `text`, the end of the preferred match of `pat` anchored
/// at `j`, if any. Dynamic programming over pattern suffixes, one row at a time: time
/// `O(|pat| * |text|)`, memory `O(|text|)`.
fn match_ends(pat: &[Tok], text: &[char], greedy: bool) -> Vec<Option<usize>> {
    let n = text.len();
    // Row for the empty pattern suffix: matches at once.
    let mut next: Vec<Option<usize>> = (0..=n).map(Some).collect();
    for tok in pat.iter().rev() {
        let mut row = vec![None; n + 1];
        match *tok {
            Tok::Lit(c) => {
                for j in 0..n {
                    if text[j] == c {
                        row[j] = next[j + 1];
                    }
                }
            }
            Tok::Any => {
                for j in 0..n {
                    if text[j] != '\n' {
                        row[j] = next[j + 1];
                    }
                }
            }
            Tok::Star => {
                // The star at j may take text[j] (if not a newline) and then behaves as the
                // star at j + 1; lazy prefers taking nothing, greedy taking all it can.
                row[n] = next[n];
                for j in (0..n).rev() {
                    row[j] = if text[j] == '\n' {
                        next[j]
                    } else if greedy {
                        row[j + 1].or(next[j])
                    } else {
                        next[j].or(row[j + 1])
                    };
                }
            }
        }
        next = row;
    }
    next
}

fn check_work(pattern: &str, pat: &[Tok], value: &[char]) -> Result<(), SubstErrorKind> {
    if (pat.len() + 1).saturating_mul(value.len() + 1) > MAX_PATTERN_WORK {
        return Err(SubstErrorKind::PatternTooLong(shortened(pattern)));
    }
    Ok(())
}

/// `s` as an error quotes it in parentheses ([`crate::log::short`]): whole up to
/// [`crate::log::QUOTED_MAX`] characters, else its start and its length (a pattern refused
/// for its length may be megabytes).
fn shortened(s: &str) -> String {
    crate::log::short(s, str::to_string, |n| format!("{n} characters"))
}

/// `${value#word}`, `${value##word}` (`op` `#`) or `${value%word}`, `${value%%word}`
/// (`op` `%`): a leading `op` in `word` makes the match greedy, as in BuildKit.
fn trim(value: &str, word: &str, op: char) -> Result<String, SubstErrorKind> {
    let (greedy, pattern) = match word.strip_prefix(op) {
        Some(p) => (true, p),
        None => (false, word),
    };
    let mut pat = compile_pattern(pattern)?;
    let mut text: Vec<char> = value.chars().collect();
    check_work(pattern, &pat, &text)?;
    if op == '%' {
        // The shortest or longest suffix is the same search on the reversed text.
        pat.reverse();
        text.reverse();
    }
    let mut rest: Vec<char> = match match_ends(&pat, &text, greedy)[0] {
        Some(end) => text[end..].to_vec(),
        None => text,
    };
    if op == '%' {
        rest.reverse();
    }
    Ok(rest.into_iter().collect())
}

/// `${value/pattern/with}` (first match) or `${value//pattern/with}` (`all`): matches are
/// leftmost and greedy; with `all`, as Go's `ReplaceAllString`, an empty match right
/// after a previous match is not replaced and the search always advances.
fn replace(
    value: &str,
    pattern: &str,
    with: &str,
    all: bool,
    limit: usize,
) -> Result<String, SubstErrorKind> {
    let pat = compile_pattern(pattern)?;
    let text: Vec<char> = value.chars().collect();
    check_work(pattern, &pat, &text)?;
    let ends = match_ends(&pat, &text, true);
    let n = text.len();
    // first[s]: the leftmost match starting at s or later.
    let mut first: Vec<Option<(usize, usize)>> = vec![None; n + 2];
    for s in (0..=n).rev() {
        first[s] = ends[s].map(|e| (s, e)).or(first[s + 1]);
    }
    let mut out = String::with_capacity(value.len());
    let mut last_end = 0;
    let mut search = 0;
    while search <= n {
        let Some((a, b)) = first[search] else { break };
        out.extend(&text[last_end..a]);
        if b > last_end || a == 0 {
            out.push_str(with);
            // `${V//?/$W}` is |V| copies of W.
            if out.len() > limit {
                return Err(SubstErrorKind::TooLong);
            }
        }
        last_end = b;
        if !all {
            break;
        }
        search = if search + 1 > b { search + 1 } else { b };
    }
    out.extend(&text[last_end..]);
    Ok(out)
}

/// Substitute the fields Docker substitutes in one instruction and return the result.
///
/// Substituted: ADD, COPY (sources, destination, `--from`/`--chown`/`--chmod`/`--checksum`/
/// `--exclude`, unquoted heredoc bodies), ARG (names and defaults), ENV and LABEL (keys and
/// values), EXPOSE, FROM (image and `--platform`; the caller passes the global-ARG lookup),
/// STOPSIGNAL, USER, VOLUME, WORKDIR, and RUN `--mount` values. Not substituted (returned
/// unchanged): RUN/CMD/ENTRYPOINT commands in either form (the shell or the program does
/// it), SHELL, HEALTHCHECK, MAINTAINER, ONBUILD. Every field is read against `vars` as it
/// was before the instruction, so `ENV A=1 B=$A` uses the old `A`.
pub fn expand_instruction<L: Lookup + ?Sized>(
    kind: &InstrKind,
    escape: char,
    vars: &L,
) -> Result<InstrKind, SubstError> {
    let x = |w: &str| expand_word(w, escape, vars);
    let xs = |ws: &[String]| ws.iter().map(|w| x(w)).collect::<Result<Vec<_>, _>>();
    let xname = |kw: &'static str, w: &str| {
        let name = x(w)?;
        if name.is_empty() {
            return Err(SubstError {
                offset: 0,
                kind: SubstErrorKind::BlankName(kw),
            });
        }
        Ok(name)
    };
    let xpairs = |kw: &'static str, ps: &[(String, String)]| {
        ps.iter()
            .map(|(k, v)| Ok((xname(kw, k)?, x(v)?)))
            .collect::<Result<Vec<_>, SubstError>>()
    };
    let xflags = |kw: Keyword, flags: &Flags| -> Result<Flags, SubstError> {
        flags
            .0
            .iter()
            .map(|f| {
                let value = match &f.value {
                    Some(v) if flag_is_substituted(kw, &f.name) => Some(x(v)?),
                    other => other.clone(),
                };
                Ok(Flag {
                    name: f.name.clone(),
                    value,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Flags)
    };
    let xcopy = |kw: Keyword, c: &CopyArgs| -> Result<CopyArgs, SubstError> {
        let sources = c
            .sources
            .iter()
            .map(|s| match s {
                CopySource::Path(p) => Ok(CopySource::Path(x(p)?)),
                CopySource::Heredoc(h) if h.expand => {
                    let mut h = h.clone();
                    h.content = expand_heredoc(&h.content, escape, vars)?;
                    Ok(CopySource::Heredoc(h))
                }
                other => Ok(other.clone()),
            })
            .collect::<Result<Vec<_>, SubstError>>()?;
        Ok(CopyArgs {
            options: xflags(kw, &c.options)?,
            json: c.json,
            sources,
            dest: x(&c.dest)?,
        })
    };
    Ok(match kind {
        InstrKind::From {
            platform,
            image,
            alias,
        } => InstrKind::From {
            platform: platform.as_deref().map(x).transpose()?,
            image: x(image)?,
            alias: alias.clone(),
        },
        InstrKind::Run {
            options,
            form,
            heredocs,
        } => InstrKind::Run {
            options: xflags(Keyword::Run, options)?,
            form: form.clone(),
            heredocs: heredocs.clone(),
        },
        InstrKind::Copy(c) => InstrKind::Copy(xcopy(Keyword::Copy, c)?),
        InstrKind::Add(c) => InstrKind::Add(xcopy(Keyword::Add, c)?),
        InstrKind::Arg(decls) => InstrKind::Arg(
            decls
                .iter()
                .map(|d| {
                    Ok(crate::build::dockerfile::ArgDecl {
                        name: xname("ARG", &d.name)?,
                        default: d.default.as_deref().map(x).transpose()?,
                    })
                })
                .collect::<Result<Vec<_>, SubstError>>()?,
        ),
        InstrKind::Env(ps) => InstrKind::Env(xpairs("ENV", ps)?),
        InstrKind::Label(ps) => InstrKind::Label(xpairs("LABEL", ps)?),
        InstrKind::Workdir(s) => InstrKind::Workdir(x(s)?),
        InstrKind::User(s) => InstrKind::User(x(s)?),
        InstrKind::Stopsignal(s) => InstrKind::Stopsignal(x(s)?),
        InstrKind::Expose(v) => InstrKind::Expose(xs(v)?),
        InstrKind::Volume(v) => InstrKind::Volume(xs(v)?),
        other @ (InstrKind::Cmd(_)
        | InstrKind::Entrypoint(_)
        | InstrKind::Shell(_)
        | InstrKind::Healthcheck(_)
        | InstrKind::Maintainer(_)
        | InstrKind::Onbuild { .. }) => other.clone(),
    })
}

/// Build variables through a Dockerfile, with Docker's scoping:
///
/// - ARGs before the first FROM are *global*: visible only in FROM lines (image and
///   `--platform`), and as the value of a same-named `ARG NAME` (no default) in a stage.
/// - Each FROM starts a stage with no ARGs and an empty ENV (the caller then adds the
///   base image's ENV with [`Vars::set_env`]).
/// - A `--build-arg` overrides the default of a declared ARG (global or stage); undeclared
///   build args are not visible ([`Vars::unconsumed_build_args`] lists them).
/// - ENV wins over an ARG of the same name, whatever the order.
/// - An instruction reads all variables before its own assignments take effect.
///
/// ```
/// use grove::build::dockerfile::{parse, InstrKind};
/// use grove::build::subst::Vars;
///
/// let df = parse("ARG TAG=3.19\nFROM alpine:$TAG\nENV A=1 B=$A\nWORKDIR /$A\n", "Dockerfile")?;
/// let mut vars = Vars::new([("TAG".to_string(), "edge".to_string())], df.escape());
/// let mut out = Vec::new();
/// for instr in &df.instructions {
///     let kind = vars.step(&instr.kind).map_err(|e| df.error_in(instr, e.to_string()))?;
///     // After FROM the builder adds the base image's ENV: vars.set_env(k, v).
///     out.push(kind);
/// }
/// assert_eq!(out[1], InstrKind::From { platform: None, image: "alpine:edge".into(), alias: None });
/// assert_eq!(out[3], InstrKind::Workdir("/1".into()));
/// assert_eq!(vars.env()[1], ("B".to_string(), String::new()));
/// # Ok::<(), grove::build::dockerfile::ParseError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Vars {
    escape: char,
    build_args: BTreeMap<String, String>,
    consumed: BTreeSet<String>,
    global: BTreeMap<String, Option<String>>,
    in_stage: bool,
    stage_args: BTreeMap<String, Option<String>>,
    env: Vec<(String, String)>,
    /// BuildKit's automatic platform ARGs ([`platform_args`]): global, and in a stage
    /// once declared with `ARG NAME`.
    auto: BTreeMap<String, String>,
    /// What is left of the build's pattern matching budget ([`MAX_BUILD_PATTERN_WORK`]).
    pattern_work: std::cell::Cell<usize>,
    /// What is left of the build's budget of bytes substituted ([`MAX_BUILD_SUBSTITUTED`]).
    copy_left: std::cell::Cell<usize>,
}

/// Take `work` from `budget` if it holds that much.
fn charge_budget(budget: &std::cell::Cell<usize>, work: usize) -> bool {
    match budget.get().checked_sub(work) {
        Some(left) => {
            budget.set(left);
            true
        }
        None => false,
    }
}

/// BuildKit's automatic platform ARGs for a build on and for `p` (Grove builds only for
/// the host): `TARGETPLATFORM` (`linux/amd64`, `linux/arm/v7`; arm64's only variant v8 is
/// left out, as BuildKit normalizes it), `TARGETOS`, `TARGETARCH`, `TARGETVARIANT`, and
/// the same four for `BUILD`.
pub fn platform_args(p: &crate::oci::platform::Platform) -> Vec<(String, String)> {
    let os = if p.os.is_empty() { "linux" } else { &p.os };
    let variant = match (p.architecture.as_str(), p.variant.as_deref()) {
        ("arm64", Some("v8")) | (_, None) => "",
        (_, Some(v)) => v,
    };
    let platform = if variant.is_empty() {
        format!("{os}/{}", p.architecture)
    } else {
        format!("{os}/{}/{variant}", p.architecture)
    };
    let mut out = Vec::new();
    for side in ["TARGET", "BUILD"] {
        out.push((format!("{side}PLATFORM"), platform.clone()));
        out.push((format!("{side}OS"), os.to_string()));
        out.push((format!("{side}ARCH"), p.architecture.clone()));
        out.push((format!("{side}VARIANT"), variant.to_string()));
    }
    out
}

/// The global-ARG view of [`Vars`], used for FROM lines.
struct Global<'a>(&'a Vars);

impl Lookup for Global<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        match self.0.global.get(name) {
            Some(v) => v.clone(),
            None => self.0.auto.get(name).cloned(),
        }
    }

    fn charge(&self, work: usize) -> bool {
        charge_budget(&self.0.pattern_work, work)
    }

    fn charge_copy(&self, bytes: usize) -> bool {
        charge_budget(&self.0.copy_left, bytes)
    }
}

impl Lookup for Vars {
    fn lookup(&self, name: &str) -> Option<String> {
        if !self.in_stage {
            return Global(self).lookup(name);
        }
        if let Some((_, v)) = self.env.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if name == "PATH" {
            // A base image without PATH in its config still has one in a build: RUN gets
            // the default (invocation::run_env), and `ENV PATH=/x:$PATH` extends it, as in
            // Docker (which adds it to every stage's ENV) and Charliecloud.
            return Some(super::invocation::DEFAULT_PATH.to_string());
        }
        self.stage_args.get(name).cloned().flatten()
    }

    fn charge(&self, work: usize) -> bool {
        charge_budget(&self.pattern_work, work)
    }

    fn charge_copy(&self, bytes: usize) -> bool {
        charge_budget(&self.copy_left, bytes)
    }
}

impl Vars {
    /// Start a build with `--build-arg` values and the Dockerfile's escape character.
    pub fn new(build_args: impl IntoIterator<Item = (String, String)>, escape: char) -> Self {
        Vars {
            escape,
            build_args: build_args.into_iter().collect(),
            consumed: BTreeSet::new(),
            global: BTreeMap::new(),
            in_stage: false,
            stage_args: BTreeMap::new(),
            env: Vec::new(),
            auto: platform_args(&crate::oci::platform::Platform::host())
                .into_iter()
                .collect(),
            pattern_work: std::cell::Cell::new(MAX_BUILD_PATTERN_WORK),
            copy_left: std::cell::Cell::new(MAX_BUILD_SUBSTITUTED),
        }
    }

    /// Whether a FROM has been seen.
    pub fn in_stage(&self) -> bool {
        self.in_stage
    }

    /// Substitute `kind` with the variables in scope and apply its effect on them: FROM
    /// starts a new stage, ARG declares, ENV sets. Returns the substituted instruction.
    pub fn step(&mut self, kind: &InstrKind) -> Result<InstrKind, SubstError> {
        let out = match kind {
            InstrKind::From { .. } => expand_instruction(kind, self.escape, &Global(self))?,
            _ => expand_instruction(kind, self.escape, self)?,
        };
        match &out {
            InstrKind::From { .. } => {
                self.in_stage = true;
                self.stage_args.clear();
                self.env.clear();
            }
            InstrKind::Arg(decls) => {
                for d in decls {
                    self.declare_arg(&d.name, d.default.as_deref());
                }
            }
            InstrKind::Env(pairs) => {
                for (k, v) in pairs {
                    self.set_env(k, v);
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Declare ARG `name` with an already-substituted `default` in the current scope.
    pub fn declare_arg(&mut self, name: &str, default: Option<&str>) {
        let from_cli = self.build_args.get(name).cloned();
        if from_cli.is_some() {
            self.consumed.insert(name.to_string());
        }
        if !self.in_stage {
            let value = from_cli
                .or_else(|| default.map(str::to_string))
                .or_else(|| self.auto.get(name).cloned());
            self.global.insert(name.to_string(), value);
            return;
        }
        let value = from_cli
            .or_else(|| default.map(str::to_string))
            .or_else(|| Global(self).lookup(name));
        self.stage_args.insert(name.to_string(), value);
    }

    /// Set ENV `key` (replacing its earlier value in place, keeping order otherwise).
    pub fn set_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
    }

    /// The stage's ENV in definition order (what the image's config records).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// ARGs of the current stage that have a value, sorted by name.
    pub fn stage_args(&self) -> Vec<(String, String)> {
        self.stage_args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect()
    }

    /// Environment of a RUN: the stage's ARGs with values (unless ENV has the same name),
    /// then ENV.
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .stage_args()
            .into_iter()
            .filter(|(k, _)| !self.env.iter().any(|(e, _)| e == k))
            .collect();
        out.extend(self.env.iter().cloned());
        out
    }

    /// Value of a global ARG (for FROM lines), if declared with a value.
    pub fn global_arg(&self, name: &str) -> Option<String> {
        Global(self).lookup(name)
    }

    /// `--build-arg` names never declared by an ARG so far.
    pub fn unconsumed_build_args(&self) -> Vec<&str> {
        self.build_args
            .keys()
            .filter(|k| !self.consumed.contains(*k))
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::dockerfile::{parse, ArgDecl};

    fn vars(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn x(word: &str) -> Result<String, SubstError> {
        let m = vars(&[
            ("A", "a"),
            ("EMPTY", ""),
            ("B", "b c"),
            ("HOME", "/root"),
            ("É", "e"),
        ]);
        expand_word(word, '\\', &m)
    }

    fn ok(word: &str) -> String {
        match x(word) {
            Ok(s) => s,
            Err(e) => panic!("{word}: {e}"),
        }
    }

    #[test]
    fn a_pattern_too_long_is_quoted_by_its_start_and_length() {
        let long = "y".repeat(10_000);
        let m = vars(&[("A", &"x".repeat(10_000))]);
        let e = expand_word(&format!("${{A#{long}}}"), '\\', &m).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "pattern ({}… 10000 characters) too long",
                "y".repeat(64)
            )),
            "{msg}"
        );
        assert!(msg.len() < 300, "{msg}");
        // A short one is quoted whole.
        assert_eq!(shortened("ab*"), "ab*");
        assert_eq!(shortened(&"é".repeat(64)), "é".repeat(64));
        assert_eq!(
            shortened(&"é".repeat(65)),
            format!("{}… 65 characters", "é".repeat(64))
        );
    }

    #[test]
    fn a_builds_pattern_matching_is_bounded_in_total() {
        let mut v = Vars::new(Vec::new(), '\\');
        v.step(&InstrKind::From {
            image: "scratch".into(),
            alias: None,
            platform: None,
        })
        .unwrap();
        // Each match takes 63 x (2^20 + 1) of the budget: 2 fit, the 3rd is refused.
        v.set_env("A", &"x".repeat(1 << 20));
        let word = format!("${{A//{}/}}", "?".repeat(62));
        for _ in 0..MAX_BUILD_PATTERN_WORK / (63 * ((1 << 20) + 1)) {
            assert_eq!(expand_word(&word, '\\', &v), Ok("x".repeat((1 << 20) % 62)));
        }
        let e = expand_word(&format!("x{word}"), '\\', &v).unwrap_err();
        assert_eq!((e.offset, e.kind), (1, SubstErrorKind::TooMuchMatching));
    }

    #[test]
    fn a_builds_substituted_bytes_are_bounded_in_total() {
        let mut v = Vars::new(Vec::new(), '\\');
        v.step(&InstrKind::From {
            image: "scratch".into(),
            alias: None,
            platform: None,
        })
        .unwrap();
        v.set_env("A", &"x".repeat(1 << 20));
        v.set_env("E", "");
        for _ in 0..MAX_BUILD_SUBSTITUTED >> 20 {
            assert_eq!(expand_word("$A", '\\', &v).map(|s| s.len()), Ok(1 << 20));
        }
        // Empty and unset values cost nothing; a value over the budget is refused.
        assert_eq!(expand_word("$E${U}${U:-u}", '\\', &v), Ok("u".to_string()));
        let e = expand_word("a ${A:+x}", '\\', &v).unwrap_err();
        assert_eq!((e.offset, e.kind), (2, SubstErrorKind::TooMuchSubstituted));
        // Other lookups have no budget.
        let m = vars(&[("A", &"x".repeat(1 << 20))]);
        for _ in 0..(MAX_BUILD_SUBSTITUTED >> 20) + 1 {
            assert!(expand_word("$A", '\\', &m).is_ok());
        }
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(ok("$A"), "a");
        assert_eq!(ok("${A}x"), "ax");
        assert_eq!(ok("$Ax"), "");
        assert_eq!(ok("pre-$A-post"), "pre-a-post");
        assert_eq!(ok("$HOME/bin"), "/root/bin");
        assert_eq!(ok("$B"), "b c");
        assert_eq!(ok("$É"), "e");
    }

    #[test]
    fn platform_args_spell_the_platform_as_buildkit() {
        use crate::oci::platform::Platform;
        let get = |arch: &str, k: &str| {
            platform_args(&Platform::parse(arch))
                .into_iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v)
                .expect("defined")
        };
        assert_eq!(get("amd64", "TARGETPLATFORM"), "linux/amd64");
        assert_eq!(get("amd64", "TARGETARCH"), "amd64");
        assert_eq!(get("amd64", "BUILDOS"), "linux");
        assert_eq!(get("arm64/v8", "TARGETPLATFORM"), "linux/arm64");
        assert_eq!(get("arm64/v8", "TARGETVARIANT"), "");
        assert_eq!(get("arm/v7", "BUILDPLATFORM"), "linux/arm/v7");
        assert_eq!(get("arm/v7", "TARGETVARIANT"), "v7");
    }

    #[test]
    fn platform_args_are_global_and_in_a_stage_once_declared() {
        let df = parse(
            "ARG TARGETARCH\nFROM a-$BUILDARCH\nRUN x\nARG TARGETARCH\nARG BUILDOS=other\n",
            "Dockerfile",
        )
        .expect("parses");
        let mut vars = Vars::new(Vec::new(), '\\');
        let mut out = Vec::new();
        for i in &df.instructions {
            out.push(vars.step(&i.kind).expect("substitutes"));
        }
        let arch = crate::oci::platform::Platform::host().architecture;
        assert_eq!(
            out[1],
            InstrKind::From {
                platform: None,
                image: format!("a-{arch}"),
                alias: None
            }
        );
        assert_eq!(
            vars.stage_args(),
            vec![
                ("BUILDOS".to_string(), "other".to_string()),
                ("TARGETARCH".to_string(), arch)
            ]
        );
    }

    #[test]
    fn path_defaults_in_a_stage_whose_env_has_none() {
        let df = parse(
            "ARG P=$PATH\nFROM a\nENV PATH=/x:$PATH\nFROM b\nENV PATH=/y\nENV Q=$PATH\n",
            "Dockerfile",
        )
        .expect("parses");
        let mut vars = Vars::new(Vec::new(), '\\');
        let mut out = Vec::new();
        for i in &df.instructions {
            out.push(vars.step(&i.kind).expect("substitutes"));
        }
        let default = crate::build::invocation::DEFAULT_PATH;
        // Global scope (FROM lines) has no PATH.
        assert_eq!(
            out[0],
            InstrKind::Arg(vec![ArgDecl {
                name: "P".into(),
                default: Some(String::new())
            }])
        );
        assert_eq!(
            out[2],
            InstrKind::Env(vec![("PATH".into(), format!("/x:{default}"))])
        );
        assert_eq!(out[5], InstrKind::Env(vec![("Q".into(), "/y".into())]));
    }

    #[test]
    fn undefined_names_lists_unset_variables_once() {
        let v = vars(&[("a", "1")]);
        assert_eq!(undefined_names("$a${b}x$b$c", '\\', &v), vec!["b", "c"]);
        assert!(undefined_names("$a", '\\', &v).is_empty());
        assert!(undefined_names("${b:-x}", '\\', &v) == vec!["b"]);
    }

    #[test]
    fn undefined_variables_expand_to_empty() {
        assert_eq!(ok("x${NOPE}y$NOPE"), "xy");
    }

    #[test]
    fn lone_dollar_is_literal() {
        assert_eq!(ok("a$"), "a$");
        assert_eq!(ok("$/x"), "$/x");
        assert_eq!(ok("cost: 5$ "), "cost: 5$ ");
    }

    #[test]
    fn colon_default_and_alternative() {
        assert_eq!(ok("${NOPE:-def}"), "def");
        assert_eq!(ok("${EMPTY:-def}"), "def");
        assert_eq!(ok("${A:-def}"), "a");
        assert_eq!(ok("${NOPE:+alt}"), "");
        assert_eq!(ok("${EMPTY:+alt}"), "");
        assert_eq!(ok("${A:+alt}"), "alt");
    }

    #[test]
    fn dash_and_plus_without_colon_distinguish_unset_from_empty() {
        assert_eq!(ok("${NOPE-def}"), "def");
        assert_eq!(ok("${EMPTY-def}"), "");
        assert_eq!(ok("${A-def}"), "a");
        assert_eq!(ok("${NOPE+alt}"), "");
        assert_eq!(ok("${EMPTY+alt}"), "alt");
        assert_eq!(ok("${A+alt}"), "alt");
    }

    #[test]
    fn nested_words_in_defaults() {
        assert_eq!(ok("${NOPE:-${A}}"), "a");
        assert_eq!(ok("${NOPE:-${NOPE2:-deep}-$A}"), "deep-a");
        assert_eq!(ok("${NOPE:-\"x y\"}"), "x y");
        assert_eq!(ok("${NOPE:-a\\}b}"), "a}b");
        assert_eq!(ok("${A:+[$HOME]}"), "[/root]");
    }

    #[test]
    fn required_variables() {
        assert_eq!(ok("${A:?msg}"), "a");
        assert_eq!(ok("${EMPTY?msg}"), "");
        assert_eq!(
            x("${NOPE?must be set}").map_err(|e| e.to_string()),
            Err("NOPE: must be set".to_string())
        );
        assert_eq!(
            x("${EMPTY:?}").map_err(|e| e.to_string()),
            Err("EMPTY: is not allowed to be empty".to_string())
        );
        assert!(check_word("${NOPE:?}", '\\').is_ok());
    }

    /// Results as BuildKit's lexer gives them (frontend/dockerfile/shell/lex.go:
    /// `trimPrefix`, `trimSuffix`, `convertShellPatternToRegex`, `ReplaceAllString`).
    #[test]
    fn pattern_trims_and_replacements_give_dockers_results() {
        let v = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let vars = v(&[
            ("P", "/usr/local/share/ca.tar.gz"),
            ("S", "aabbccdd"),
            ("D", "--x--"),
            ("H", "hello"),
            ("E", ""),
            ("STAR", "a*b*c"),
            ("NL", "a\nb/c"),
        ]);
        let t = |w: &str| expand_word(w, '\\', &vars).map_err(|e| e.to_string());
        let ok = |w: &str| t(w).unwrap_or_else(|e| panic!("{w}: {e}"));
        // Prefixes: shortest (#) and longest (##).
        assert_eq!(ok("${P#*/}"), "usr/local/share/ca.tar.gz");
        assert_eq!(ok("${P##*/}"), "ca.tar.gz");
        assert_eq!(ok("${S#*b}"), "bccdd");
        assert_eq!(ok("${S##*b}"), "ccdd");
        assert_eq!(ok("${S#a?}"), "bbccdd");
        assert_eq!(ok("${S#x*}"), "aabbccdd");
        // Suffixes: shortest (%) and longest (%%).
        assert_eq!(ok("${P%.*}"), "/usr/local/share/ca.tar");
        assert_eq!(ok("${P%%.*}"), "/usr/local/share/ca");
        assert_eq!(ok("${P%/*}"), "/usr/local/share");
        assert_eq!(ok("${S%c*}"), "aabbc");
        assert_eq!(ok("${S%%c*}"), "aabb");
        // Everything can go, and a literal pattern must match exactly.
        assert_eq!(
            [ok("${D%%-*}"), ok("${D%-*}"), ok("${D#*-}"), ok("${D##*-}")],
            ["", "--x-", "-x--", ""]
        );
        assert_eq!(ok("${H#hello}"), "");
        assert_eq!(ok("${H%helloo}"), "hello");
        // Unset and empty values give empty results.
        assert_eq!(ok("${NOPE#x}${E%%*}"), "");
        // Replacement: first (/) or all (//) greedy, leftmost matches.
        assert_eq!(ok("${H/l/L}"), "heLlo");
        assert_eq!(ok("${H//l/L}"), "heLLo");
        assert_eq!(ok("${H/l*/Z}"), "heZ");
        assert_eq!(ok("${H//?/.}"), ".....");
        assert_eq!(ok("${H/x/y}"), "hello");
        assert_eq!(ok("${H//l/}"), "heo");
        assert_eq!(ok("${P//\\//-}"), "-usr-local-share-ca.tar.gz");
        // An empty pattern matches between characters, as Go's ReplaceAllString does.
        assert_eq!(ok("${H///-}"), "-h-e-l-l-o-");
        // `${H//}` reads `}` as part of the pattern and then misses its `/`.
        assert!(t("${H//}").unwrap_err().contains("missing '/'"));
        // Escaped pattern characters are literal; `\}` is `}`.
        assert_eq!(ok("${STAR//\\*/+}"), "a+b+c");
        assert_eq!(ok("${STAR#a\\*}"), "b*c");
        // Like Go's `.`, `*` and `?` do not match a newline.
        assert_eq!(ok("${NL#*/}"), "a\nb/c");
        assert_eq!(ok("${NL##a?b}"), "a\nb/c");
        // Variables and quotes in patterns and replacements.
        assert_eq!(ok("${H/${E}l/\"L\"}"), "heLlo");
        assert_eq!(ok("${P##*'/'}"), "ca.tar.gz");
        // Errors: bad escapes, colon forms, a missing separator.
        assert!(t("${H#\\x}").unwrap_err().contains("invalid pattern"));
        assert_eq!(
            t("${H:#x}").unwrap_err(),
            "unsupported modifier (:#) in substitution"
        );
        assert_eq!(t("${H/x}").unwrap_err(), "syntax error: missing '/' in ${}");
        assert!(t("${H#x").unwrap_err().contains("missing '}'"));
        assert!(check_word("${A%%.*}", '\\').is_ok());
        assert!(check_word("${A#\\q}", '\\').is_err());
    }

    #[test]
    fn escaped_dollar_is_literal() {
        assert_eq!(ok("\\$A"), "$A");
        assert_eq!(ok("\\${A}"), "${A}");
        assert_eq!(ok("a\\ b"), "a b");
        assert_eq!(ok("x\\"), "x");
        assert_eq!(
            expand_word("`$A\\$A", '`', &vars(&[("A", "a")])),
            Ok("$A\\a".to_string())
        );
    }

    #[test]
    fn quotes_are_removed_and_single_quotes_are_literal() {
        assert_eq!(ok("'$A'"), "$A");
        assert_eq!(ok("\"$A\""), "a");
        assert_eq!(ok("\"a\\\"b\\$c\\d\""), "a\"b$c\\d");
        assert_eq!(ok("'a\\'"), "a\\");
        assert_eq!(ok("x\"\"y''"), "xy");
    }

    #[test]
    fn malformed_words_are_errors_with_offsets() {
        let e = |w: &str| x(w).err().map(|e| (e.offset, e.kind));
        assert_eq!(e("ab${"), Some((2, SubstErrorKind::MissingBrace)));
        let word = "éé${";
        assert_eq!(x(word).map_err(|e| e.col_in(word)), Err(3));
        assert_eq!(e("ab${A"), Some((2, SubstErrorKind::MissingBrace)));
        assert_eq!(e("${A:-x"), Some((0, SubstErrorKind::MissingBrace)));
        assert_eq!(e("${A:-${B}"), Some((0, SubstErrorKind::MissingBrace)));
        assert_eq!(e("${}"), Some((0, SubstErrorKind::BadSubstitution)));
        assert_eq!(e("${:-x}"), Some((0, SubstErrorKind::BadSubstitution)));
        assert_eq!(
            e("${A:%x}"),
            Some((3, SubstErrorKind::UnsupportedModifier(":%".into())))
        );
        assert_eq!(
            e("${A:=x}"),
            Some((3, SubstErrorKind::UnsupportedModifier(":=".into())))
        );
        assert_eq!(
            e("${A=x}"),
            Some((3, SubstErrorKind::UnsupportedModifier("=".into())))
        );
        assert_eq!(
            e("a'b"),
            Some((1, SubstErrorKind::UnterminatedQuote("single-quote")))
        );
        assert_eq!(
            e("\"b"),
            Some((0, SubstErrorKind::UnterminatedQuote("double-quote")))
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "${A:-".repeat(100_000);
        assert_eq!(x(&deep).map_err(|e| e.kind), Err(SubstErrorKind::TooDeep));
        let ok_depth = format!(
            "{}x{}",
            "${N:-".repeat(MAX_NESTING),
            "}".repeat(MAX_NESTING)
        );
        assert_eq!(x(&ok_depth), Ok("x".to_string()));
    }

    #[test]
    fn expansion_growing_a_word_by_more_than_the_bound_is_an_error() {
        let big = "v".repeat(MAX_GROWTH / 4);
        let m = vars(&[("V", big.as_str()), ("S", "abcdefgh")]);
        let x = |w: &str| expand_word(w, '\\', &m).map_err(|e| (e.offset, e.kind));
        let x = |w: &str| x(w).map(|s| s.len());
        assert_eq!(x("$V$V$V$V"), Ok(MAX_GROWTH));
        // A word of N bytes may expand to MAX_GROWTH + N.
        assert_eq!(x("$V$V$V$V$S"), Ok(MAX_GROWTH + 8));
        assert_eq!(x("$V$V$V$V$S$S"), Err((10, SubstErrorKind::TooLong)));
        assert_eq!(x("$V$V$V$V$V"), Err((8, SubstErrorKind::TooLong)));
        assert_eq!(x("\"$V$V$V$V${V}\""), Err((9, SubstErrorKind::TooLong)));
        // Literal text does not count: only what the expansion adds.
        let long = format!("{}$V$V$V$V", "l".repeat(10));
        assert_eq!(x(&long), Ok(MAX_GROWTH + 10));
        // Replacement multiplies: |V| copies of V.
        assert_eq!(x("${V//?/$V}"), Err((0, SubstErrorKind::TooLong)));
        assert_eq!(
            expand_heredoc("$V$V$V$V$V\n", '\\', &m).map_err(|e| e.kind),
            Err(SubstErrorKind::TooLong)
        );
    }

    #[test]
    fn special_and_positional_parameters_are_empty() {
        assert_eq!(ok("$1x"), "x");
        assert_eq!(ok("$$"), "");
        assert_eq!(ok("$@-"), "-");
    }

    #[test]
    fn lookup_from_closure_and_pairs() {
        let f = |n: &str| (n == "X").then(|| "1".to_string());
        assert_eq!(expand_word("$X$Y", '\\', &f), Ok("1".into()));
        let v = vec![
            ("X".to_string(), "old".to_string()),
            ("X".to_string(), "new".to_string()),
        ];
        assert_eq!(expand_word("$X", '\\', v.as_slice()), Ok("new".into()));
    }

    #[test]
    fn heredoc_expansion_keeps_quotes() {
        let m = vars(&[("A", "a")]);
        assert_eq!(
            expand_heredoc("'$A' \"$A\" \\$A \\\\ \\x ${A:-z}\nl1\\\nl2\n", '\\', &m),
            Ok("'a' \"a\" $A \\ \\x a\nl1l2\n".into())
        );
    }

    #[test]
    fn shell_words_unquote_without_substituting() {
        assert_eq!(
            shell_words("\"my file\" 'b c' $HOME \"$X\" d\\ e", '\\'),
            Ok(vec![
                "my file".into(),
                "b c".into(),
                "$HOME".into(),
                "$X".into(),
                "d e".into()
            ])
        );
    }

    // --- instructions and scoping

    fn build(text: &str, build_args: &[(&str, &str)]) -> (Vec<InstrKind>, Vars) {
        let d = parse(text, "Dockerfile").expect("parses");
        let mut v = Vars::new(
            build_args
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string())),
            d.escape(),
        );
        let out = d
            .instructions
            .iter()
            .map(|i| v.step(&i.kind).expect("substitutes"))
            .collect();
        (out, v)
    }

    #[test]
    fn env_reads_old_values_within_one_instruction() {
        let (ks, v) = build("FROM a\nENV A=0\nENV A=1 B=$A\nENV C=$A\n", &[]);
        assert_eq!(
            ks[2],
            InstrKind::Env(vec![("A".into(), "1".into()), ("B".into(), "0".into())])
        );
        assert_eq!(ks[3], InstrKind::Env(vec![("C".into(), "1".into())]));
        assert_eq!(
            v.env(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "0".into()),
                ("C".into(), "1".into())
            ]
        );
    }

    #[test]
    fn global_args_are_only_visible_in_from() {
        let (ks, _) = build(
            "ARG TAG=3.19\nARG IMG=alpine:${TAG}\nFROM $IMG\nRUN x\nWORKDIR /$TAG\n",
            &[],
        );
        assert_eq!(
            ks[2],
            InstrKind::From {
                platform: None,
                image: "alpine:3.19".into(),
                alias: None
            }
        );
        assert_eq!(ks[4], InstrKind::Workdir("/".into()));
    }

    #[test]
    fn redeclared_arg_without_value_takes_global_value() {
        let (ks, v) = build("ARG V=1\nFROM a\nARG V\nWORKDIR /$V\n", &[]);
        assert_eq!(ks[3], InstrKind::Workdir("/1".into()));
        assert_eq!(v.run_env(), [("V".into(), "1".into())]);
        let (ks, _) = build("ARG V=1\nFROM a\nARG V=2\nWORKDIR /$V\n", &[]);
        assert_eq!(ks[3], InstrKind::Workdir("/2".into()));
    }

    #[test]
    fn build_args_override_defaults_and_are_consumed() {
        let (ks, v) = build(
            "ARG V=1\nFROM a:$V\nARG W=x\nARG V\nUSER $W:$V\n",
            &[("V", "9"), ("W", "w"), ("Z", "z")],
        );
        assert_eq!(
            ks[1],
            InstrKind::From {
                platform: None,
                image: "a:9".into(),
                alias: None
            }
        );
        assert_eq!(ks[4], InstrKind::User("w:9".into()));
        assert_eq!(v.unconsumed_build_args(), ["Z"]);
    }

    #[test]
    fn args_are_per_stage() {
        let (ks, _) = build("FROM a AS one\nARG X=1\nFROM b\nWORKDIR /$X\n", &[]);
        assert_eq!(ks[3], InstrKind::Workdir("/".into()));
    }

    #[test]
    fn env_overrides_arg_of_same_name() {
        let (ks, v) = build(
            "FROM a\nENV V=env\nARG V=arg\nWORKDIR /$V\n",
            &[("V", "cli")],
        );
        assert_eq!(ks[3], InstrKind::Workdir("/env".into()));
        assert_eq!(v.run_env(), [("V".into(), "env".into())]);
    }

    #[test]
    fn arg_defaults_see_earlier_variables() {
        let (ks, _) = build(
            "FROM a\nENV P=/opt\nARG D=$P/bin E\nARG F=${D}x\nWORKDIR $F\n",
            &[],
        );
        assert_eq!(
            ks[2],
            InstrKind::Arg(vec![
                ArgDecl {
                    name: "D".into(),
                    default: Some("/opt/bin".into())
                },
                ArgDecl {
                    name: "E".into(),
                    default: None
                },
            ])
        );
        assert_eq!(ks[4], InstrKind::Workdir("/opt/binx".into()));
    }

    #[test]
    fn run_cmd_and_exec_forms_are_not_substituted() {
        let (ks, _) = build(
            "FROM a\nENV A=1\nRUN echo $A\nRUN [\"echo\", \"$A\"]\nCMD $A\nENTRYPOINT [\"$A\"]\nHEALTHCHECK CMD $A\nMAINTAINER $A\nONBUILD WORKDIR $A\n",
            &[],
        );
        let d = parse(
            "FROM a\nENV A=1\nRUN echo $A\nRUN [\"echo\", \"$A\"]\nCMD $A\nENTRYPOINT [\"$A\"]\nHEALTHCHECK CMD $A\nMAINTAINER $A\nONBUILD WORKDIR $A\n",
            "f",
        )
        .expect("parses");
        for (i, (got, instr)) in ks.iter().zip(&d.instructions).enumerate().skip(2) {
            assert_eq!(*got, instr.kind, "{i}");
        }
    }

    #[test]
    fn copy_fields_and_heredoc_body_are_substituted() {
        let (ks, _) = build(
            "FROM a\nARG U=app\nCOPY --chown=$U:$U --from=${S:-build} \"$U\"dir ['x'] /home/$U/\nCOPY <<EOF <<'RAW' /etc/\nuser=$U\nEOF\nuser=$U\nRAW\n",
            &[],
        );
        match &ks[2] {
            InstrKind::Copy(c) => {
                assert_eq!(c.chown(), Some("app:app"));
                assert_eq!(c.from(), Some("build"));
                assert_eq!(
                    c.sources,
                    vec![
                        CopySource::Path("appdir".into()),
                        CopySource::Path("[x]".into())
                    ]
                );
                assert_eq!(c.dest, "/home/app/");
            }
            k => panic!("{k:?}"),
        }
        let hs = ks[3].heredocs();
        assert_eq!(hs[0].content, "user=app\n");
        assert_eq!(hs[1].content, "user=$U\n");
    }

    #[test]
    fn env_label_expose_volume_stopsignal_are_substituted() {
        let (ks, _) = build(
            "FROM a\nARG P=80\nENV K=\"v $P\" L='$P'\nLABEL port=$P \"k$P\"=x\nEXPOSE $P ${P}/udp\nVOLUME /d$P\nSTOPSIGNAL SIG$P\nENV legacy is \"quoted $P\"\n",
            &[],
        );
        assert_eq!(
            ks[2],
            InstrKind::Env(vec![("K".into(), "v 80".into()), ("L".into(), "$P".into())])
        );
        assert_eq!(
            ks[3],
            InstrKind::Label(vec![
                ("port".into(), "80".into()),
                ("k80".into(), "x".into())
            ])
        );
        assert_eq!(ks[4], InstrKind::Expose(vec!["80".into(), "80/udp".into()]));
        assert_eq!(ks[5], InstrKind::Volume(vec!["/d80".into()]));
        assert_eq!(ks[6], InstrKind::Stopsignal("SIG80".into()));
        assert_eq!(
            ks[7],
            InstrKind::Env(vec![("legacy".into(), "is quoted 80".into())])
        );
    }

    #[test]
    fn from_platform_uses_global_args_and_new_stage_resets_env() {
        let (ks, v) = build(
            "ARG PL=linux/amd64\nFROM --platform=$PL a AS x\nENV E=1\nFROM x\n",
            &[],
        );
        assert_eq!(
            ks[1],
            InstrKind::From {
                platform: Some("linux/amd64".into()),
                image: "a".into(),
                alias: Some("x".into())
            }
        );
        assert!(v.env().is_empty());
        assert_eq!(v.global_arg("PL").as_deref(), Some("linux/amd64"));
    }

    #[test]
    fn backtick_escape_in_substitution() {
        let (ks, _) = build("# escape=`\nFROM a\nENV X=1\nWORKDIR C:\\`$X\\$X\n", &[]);
        assert_eq!(ks[2], InstrKind::Workdir("C:\\$X\\1".into()));
    }
}
