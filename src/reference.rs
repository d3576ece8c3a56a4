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

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {text:?}: {reason}")]
pub struct ReferenceError {
    pub text: String,
    pub reason: &'static str,
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
        let err = |reason| ReferenceError {
            text: text.to_string(),
            reason,
        };
        let s: String = text.replace('%', "/").replace('+', ":");
        if s.is_empty() {
            return Err(err("empty"));
        }
        // Split off a digest, then a tag (a colon after the last slash).
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| err("digest must start with sha256:"))?;
                if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(err("digest is not hexadecimal"));
                }
                (r, Some(hex.to_ascii_lowercase()))
            }
            None => (s.as_str(), None),
        };
        let last_slash = rest.rfind('/');
        let (rest, tag) = match rest.rfind(':') {
            Some(i) if last_slash.is_none_or(|j| i > j) => {
                let t = &rest[i + 1..];
                if t.is_empty() || !t.chars().all(is_tag_char) {
                    return Err(err("invalid tag"));
                }
                (&rest[..i], Some(t.to_string()))
            }
            _ => (rest, None),
        };
        if digest.is_some() && tag.is_some() {
            return Err(err("both tag and digest given"));
        }
        let mut parts: Vec<&str> = rest.split('/').collect();
        let mut host = None;
        let mut port = None;
        if parts.len() > 1 {
            let first = parts[0];
            let (h, p) = match first.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            // A first component is a host if it has a port or a dot (FAQ 11.4.4).
            if p.is_some() || h.contains('.') || h == "localhost" {
                if h.is_empty() || !h.chars().all(is_host_char) {
                    return Err(err("invalid host name"));
                }
                if let Some(p) = p {
                    port = Some(p.parse::<u16>().map_err(|_| err("invalid port"))?);
                }
                host = Some(h.to_string());
                parts.remove(0);
            }
        }
        // `.` and `..` (and anything else with a leading dot or dash) are never names: a
        // name must not read as a relative path (`ch-run ../x` is the directory) nor as
        // an option of a program it is handed to.
        if let Some(h) = &host {
            if h.starts_with(['.', '-']) {
                return Err(err("components must not start with '.' or '-'"));
            }
        }
        if tag.as_deref().is_some_and(|t| t.starts_with(['.', '-'])) {
            return Err(err("tags must not start with '.' or '-'"));
        }
        if parts.iter().any(|c| c.starts_with(['.', '-'])) {
            return Err(err("components must not start with '.' or '-'"));
        }
        let name = parts.pop().expect("split yields at least one part");
        for c in parts.iter().chain(std::iter::once(&name)) {
            if c.is_empty() || !c.chars().all(is_path_char) {
                return Err(err("path components and names must match [a-z0-9_.-]+"));
            }
        }
        Ok(Reference {
            host,
            port,
            path: parts.iter().map(|s| s.to_string()).collect(),
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

    /// Filename form: `/` becomes `%`, `:` becomes `+`.
    pub fn for_path(&self) -> String {
        self.to_string().replace('/', "%").replace(':', "+")
    }
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
}
