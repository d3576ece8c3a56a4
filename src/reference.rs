//! Image references (FAQ 11.4.4): `[HOST[:PORT]/][PATH/]NAME[:TAG|@sha256:HEX]`.
//!
//! Pure parsing and formatting, no I/O. A reference also has a filename form in which `/`
//! becomes `%` and `:` becomes `+`; neither character is legal in a reference, so the
//! mapping is reversible, and the filename form is accepted wherever a reference is.

use std::fmt;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Vec<String>,
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Why a string is not an image reference. The message is Charliecloud's (`image ref
/// syntax, char N: TEXT`, N counting characters from 1, or `at end`), which its test
/// suite and scripts compare; the reason is in the hint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("image ref syntax, {}: {text}", match at {
    Some(i) => format!("char {}", text[..*i].chars().count() + 1),
    None => "at end".to_string(),
})]
pub struct ReferenceError {
    pub text: String,
    pub reason: &'static str,
    /// Byte offset in `text` of the first character that can't be there; `None` when the
    /// text ends where more was needed.
    pub at: Option<usize>,
}

/// Charliecloud's FAQ entry on references (11.4.4), which Grove follows.
const FAQ: &str = "https://hpc.github.io/charliecloud/faq.html#how-do-i-specify-an-image-reference";

impl ReferenceError {
    /// The FAQ entry and what was wrong (the message gives only where).
    pub fn hint(&self) -> Option<String> {
        Some(format!("{FAQ} ({})", self.reason))
    }
}

/// Offset of the first character of `s` that `ok` refuses, `s` starting at offset `base`.
fn first_bad(s: &str, base: usize, ok: impl Fn(char) -> bool) -> Option<usize> {
    s.char_indices()
        .find(|(_, c)| !ok(*c))
        .map(|(i, _)| base + i)
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

impl Reference {
    /// Parse a reference, in normal or filename (`%`/`+`) form.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let len = text.len();
        let err = |reason, at: Option<usize>| ReferenceError {
            text: text.to_string(),
            reason,
            at: at.filter(|&i| i < len),
        };
        // `%` and `+` are one byte each, as `/` and `:`: offsets in `s` are offsets in `text`.
        let s: String = text.replace('%', "/").replace('+', ":");
        if s.is_empty() {
            return Err(err("empty", None));
        }
        // Split off a digest, then a tag (a colon after the last slash).
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let at = r.len();
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| err("digest must start with sha256:", Some(at)))?;
                let hex_at = at + 1 + "sha256:".len();
                if let Some(i) = first_bad(hex, hex_at, |c| c.is_ascii_hexdigit()) {
                    return Err(err("digest is not hexadecimal", Some(i)));
                }
                if hex.is_empty() {
                    return Err(err("digest is not hexadecimal", None));
                }
                (r, Some(hex.to_ascii_lowercase()))
            }
            None => (s.as_str(), None),
        };
        // The tag starts at the first colon after the last slash, as in Charliecloud's
        // grammar: `a:b:c` is the name `a` and a tag refused at its `:` (char 4).
        let after_slash = rest.rfind('/').map_or(0, |j| j + 1);
        let (rest, tag) = match rest[after_slash..].find(':').map(|i| i + after_slash) {
            Some(i) => {
                let t = &rest[i + 1..];
                if digest.is_some() {
                    // Charliecloud's grammar stops at the `@` after a tag.
                    return Err(err("both tag and digest given", Some(rest.len())));
                }
                if t.is_empty() {
                    return Err(err("empty tag after ':'", Some(i + 1)));
                }
                if let Some(b) = first_bad(t, i + 1, is_tag_char) {
                    let reason = if s[b..].starts_with(':') {
                        "one ':' separates name and tag; a tag has no ':'"
                    } else {
                        "a tag must match [A-Za-z0-9_.-]+"
                    };
                    return Err(err(reason, Some(b)));
                }
                if t.starts_with(['.', '-']) {
                    return Err(err("tags must not start with '.' or '-'", Some(i + 1)));
                }
                (&rest[..i], Some(t.to_string()))
            }
            _ => (rest, None),
        };
        // Each component with its offset.
        let mut parts: Vec<(usize, &str)> = Vec::new();
        let mut off = 0;
        for c in rest.split('/') {
            parts.push((off, c));
            off += c.len() + 1;
        }
        let mut host = None;
        let mut port = None;
        if parts.len() > 1 {
            let (at, first) = parts[0];
            let (h, p) = match first.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            // A first component is a host if it has a port or a dot (FAQ 11.4.4).
            if p.is_some() || h.contains('.') || h == "localhost" {
                if h.is_empty() {
                    return Err(err("invalid host name", Some(at)));
                }
                if let Some(b) = first_bad(h, at, is_host_char) {
                    return Err(err("invalid host name", Some(b)));
                }
                // `.` and `..` (and anything else with a leading dot or dash) are never
                // names: a name must not read as a relative path (`ch-run ../x` is the
                // directory) nor as an option of a program it is handed to.
                if h.starts_with(['.', '-']) {
                    return Err(err("components must not start with '.' or '-'", Some(at)));
                }
                if let Some(p) = p {
                    let p_at = at + h.len() + 1;
                    if let Some(b) = first_bad(p, p_at, |c| c.is_ascii_digit()) {
                        return Err(err("invalid port", Some(b)));
                    }
                    port = Some(
                        p.parse::<u16>()
                            .map_err(|_| err("a port is a number up to 65535", Some(p_at)))?,
                    );
                }
                host = Some(h.to_string());
                parts.remove(0);
            }
        }
        for &(at, c) in &parts {
            if c.is_empty() {
                return Err(err("empty name or path component", Some(at)));
            }
            if let Some(b) = first_bad(c, at, is_path_char) {
                return Err(err(
                    "path components and names must match [a-z0-9_.-]+",
                    Some(b),
                ));
            }
            if c.starts_with(['.', '-']) {
                return Err(err("components must not start with '.' or '-'", Some(at)));
            }
        }
        let (_, name) = parts.pop().expect("split yields at least one part");
        Ok(Reference {
            host,
            port,
            path: parts.iter().map(|(_, s)| s.to_string()).collect(),
            name: name.to_string(),
            tag,
            digest,
        })
    }

    /// The reference with `:latest` added when it has neither tag nor digest: the name
    /// under which an image is stored.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_string());
        }
        self
    }

    /// Filename form ([`path_form`]).
    pub fn for_path(&self) -> String {
        path_form(&self.to_string())
    }
}

/// An image name in filename form, as Charliecloud names its image directories: `/`
/// becomes `%`, `:` becomes `+`.
pub fn path_form(name: &str) -> String {
    name.replace('/', "%").replace(':', "+")
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.host {
            f.write_str(h)?;
            if let Some(p) = self.port {
                write!(f, ":{p}")?;
            }
            f.write_str("/")?;
        }
        for p in &self.path {
            write!(f, "{p}/")?;
        }
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@sha256:{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_reference_with_host_port_path_and_tag() {
        let r = Reference::parse("example.com:8080/foo/bar/hello-world:version1.0").unwrap();
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert_eq!(r.port, Some(8080));
        assert_eq!(r.path, vec!["foo", "bar"]);
        assert_eq!(r.name, "hello-world");
        assert_eq!(r.tag.as_deref(), Some("version1.0"));
        assert_eq!(
            r.to_string(),
            "example.com:8080/foo/bar/hello-world:version1.0"
        );
    }

    #[test]
    fn digest_reference() {
        let r =
            Reference::parse("example.com:8080/foo/bar/hello-world@sha256:f6c68e2ad82a").unwrap();
        assert_eq!(r.digest.as_deref(), Some("f6c68e2ad82a"));
        assert_eq!(r.tag, None);
    }

    #[test]
    fn first_component_without_dot_is_a_path() {
        let r = Reference::parse("foo/bar/baz").unwrap();
        assert_eq!(r.host, None);
        assert_eq!(r.path, vec!["foo", "bar"]);
        let r = Reference::parse("foo.org/bar").unwrap();
        assert_eq!(r.host.as_deref(), Some("foo.org"));
    }

    #[test]
    fn filename_form_round_trips() {
        let r = Reference::parse("localhost:5000/a/b:1.0").unwrap();
        assert_eq!(r.for_path(), "localhost+5000%a%b+1.0");
        assert_eq!(Reference::parse(&r.for_path()).unwrap(), r);
    }

    #[test]
    fn default_tag_is_latest() {
        assert_eq!(
            Reference::parse("debian")
                .unwrap()
                .with_default_tag()
                .to_string(),
            "debian:latest"
        );
        let d = Reference::parse("debian@sha256:ab")
            .unwrap()
            .with_default_tag();
        assert_eq!(d.tag, None);
    }

    #[test]
    fn invalid_references_are_refused() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a:",
            "a@md5:12",
            "a b",
            "a/:x",
            "-/",
            "x@sha256:zz",
            "../x",
            "..%x",
            "./x",
            "a/../b",
            "a/.b",
            ".x",
            "..",
            "-x",
            "a/-b",
            ".host.com/x",
            "x:.t",
            "x:-t",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn errors_give_charliecloud_position_of_the_first_bad_character() {
        // Charliecloud 0.31's test suite (build/40_pull.bats, "image ref parsing") and
        // its messages for `import` and `FROM`.
        for (bad, msg) in [
            ("name*", "image ref syntax, char 5: name*"),
            (
                "example.com:/path1/name",
                "image ref syntax, char 13: example.com:/path1/name",
            ),
            ("/path1/name", "image ref syntax, char 1: /path1/name"),
            ("path1/", "image ref syntax, at end: path1/"),
            (
                "name@sha512:feeddad",
                "image ref syntax, char 5: name@sha512:feeddad",
            ),
            (
                "name:tag@sha512:feeddad",
                "image ref syntax, char 9: name:tag@sha512:feeddad",
            ),
            ("badchar*", "image ref syntax, char 8: badchar*"),
            ("/alpine:3.9", "image ref syntax, char 1: /alpine:3.9"),
            ("", "image ref syntax, at end: "),
            // Checked against 0.31 and 0.38 (`pull --parse-only`): the tag starts at the
            // first colon after the last slash.
            ("a::b", "image ref syntax, char 3: a::b"),
            ("a:b:c", "image ref syntax, char 4: a:b:c"),
            ("h:5/a:b:c", "image ref syntax, char 8: h:5/a:b:c"),
            ("a//b", "image ref syntax, char 3: a//b"),
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert_eq!(e.to_string(), msg, "{bad:?}");
            assert!(e.hint().unwrap().starts_with("https://"), "{bad:?}");
        }
    }
}
