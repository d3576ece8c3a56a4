//! The metadata blob: what a git tree cannot say about an image (format in
//! docs/store-format.md, "meta" blob, version 2; version 1, without times, is still read
//! and written for images that have no times).
//!
//! Git trees hold regular files (0644 or 0755), symlinks and directories that contain
//! something. This blob records, one line per path, everything else: exact permission bits
//! where they differ from what the tree implies, empty directories, FIFOs and hard links,
//! and modification times that differ from the image's default time (in the header).
//! Lines are sorted (depth-first, byte order), so the blob is deterministic and `git diff`
//! shows metadata changes line by line. Pure data, no I/O.

use std::fmt::Write as _;

use super::model::Mtime;

/// One metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Permission bits of a file or directory present in the git tree.
    Mode { mode: u32, path: Vec<u8> },
    /// A directory absent from the git tree (nothing below it is a file or symlink).
    Dir { mode: u32, path: Vec<u8> },
    /// A named pipe.
    Fifo { mode: u32, path: Vec<u8> },
    /// `path` is a hard link to `primary` (which is a file in the git tree).
    Link { primary: Vec<u8>, path: Vec<u8> },
    /// An extended attribute of `path` (recorded with `--xattrs`).
    Xattr {
        name: Vec<u8>,
        value: Vec<u8>,
        path: Vec<u8>,
    },
    /// The modification time of `path` (`b""`: the root directory, written `.`), where it
    /// differs from the blob's default time.
    Time { time: Mtime, path: Vec<u8> },
}

impl Record {
    /// The paths a record names (a link names two).
    pub fn paths(&self) -> Vec<&[u8]> {
        match self {
            Record::Mode { path, .. }
            | Record::Dir { path, .. }
            | Record::Fifo { path, .. }
            | Record::Xattr { path, .. }
            | Record::Time { path, .. } => vec![path],
            Record::Link { primary, path } => vec![primary, path],
        }
    }
}

/// First line of a metadata blob without times.
pub const HEADER: &str = "grove-meta 1";
/// First word of the first line of a metadata blob with times: `grove-meta 2 DEFAULT`.
pub const HEADER_2: &str = "grove-meta 2";

/// `SECONDS` or `SECONDS.NNNNNNNNN`.
pub fn format_time(t: Mtime) -> String {
    if t.nsec == 0 {
        t.sec.to_string()
    } else {
        format!("{}.{:09}", t.sec, t.nsec)
    }
}

/// Reverse of [`format_time`] (exactly its output: nine digits of nanoseconds, not zero).
pub fn parse_time(s: &str) -> Option<Mtime> {
    let (sec, nsec) = match s.split_once('.') {
        None => (s, None),
        Some((a, b)) => (a, Some(b)),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let unsigned = sec.strip_prefix('-').unwrap_or(sec);
    if !digits(unsigned) || (unsigned.len() > 1 && unsigned.starts_with('0')) {
        return None;
    }
    let sec: i64 = sec.parse().ok()?;
    let nsec = match nsec {
        None => 0,
        Some(n) if n.len() == 9 && digits(n) => {
            let n: u32 = n.parse().ok()?;
            if n == 0 {
                return None;
            }
            n
        }
        Some(_) => return None,
    };
    Some(Mtime::new(sec, nsec))
}

/// Why a metadata blob could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetaError {
    #[error(
        "metadata blob: unsupported header {0:?} (expected {HEADER:?} or {HEADER_2:?} and a time)"
    )]
    Header(String),
    #[error("metadata blob line {line}: {what}")]
    Line { line: usize, what: &'static str },
}

/// Escape a path so that it is one space-free, printable-ASCII field: bytes outside
/// 0x21..=0x7e, and `\`, become `\xNN`.
pub fn escape(path: &[u8]) -> String {
    let mut s = String::with_capacity(path.len());
    for &b in path {
        if (0x21..=0x7e).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// Reverse of [`escape`].
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) != Some(&b'x') || i + 4 > b.len() {
                return None;
            }
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Serialize records (in the order given, which callers keep sorted) with the default
/// time of entries without a `time` record. Without a default time and `time` records the
/// blob is version 1.
pub fn encode(records: &[Record], default_time: Option<Mtime>) -> Vec<u8> {
    let mut s = match default_time {
        Some(t) => format!("{HEADER_2} {}", format_time(t)),
        None => String::from(HEADER),
    };
    s.push('\n');
    for r in records {
        let _ = match r {
            Record::Mode { mode, path } => writeln!(s, "mode {mode:04o} {}", escape(path)),
            Record::Dir { mode, path } => writeln!(s, "dir {mode:04o} {}", escape(path)),
            Record::Fifo { mode, path } => writeln!(s, "fifo {mode:04o} {}", escape(path)),
            Record::Link { primary, path } => {
                writeln!(s, "link {} {}", escape(primary), escape(path))
            }
            Record::Xattr { name, value, path } => {
                let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
                let hex = if hex.is_empty() { "-".to_string() } else { hex };
                writeln!(s, "xattr {} {hex} {}", escape(name), escape(path))
            }
            Record::Time { time, path } => {
                let p = if path.is_empty() {
                    ".".to_string()
                } else {
                    escape(path)
                };
                writeln!(s, "time {} {p}", format_time(*time))
            }
        };
    }
    s.into_bytes()
}

/// Parse a metadata blob (the records only; see [`decode_with_time`]).
pub fn decode(data: &[u8]) -> Result<Vec<Record>, MetaError> {
    decode_with_time(data).map(|(r, _)| r)
}

/// Parse a metadata blob: its records and its default time (version 2).
pub fn decode_with_time(data: &[u8]) -> Result<(Vec<Record>, Option<Mtime>), MetaError> {
    let text = std::str::from_utf8(data).map_err(|_| MetaError::Line {
        line: 0,
        what: "not ASCII",
    })?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let default_time = if header == HEADER {
        None
    } else {
        match header
            .strip_prefix(HEADER_2)
            .and_then(|r| r.strip_prefix(' '))
        {
            Some(t) => Some(parse_time(t).ok_or_else(|| MetaError::Header(header.to_string()))?),
            None => return Err(MetaError::Header(header.to_string())),
        }
    };
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let bad = |what| MetaError::Line {
            line: line_no,
            what,
        };
        let f: Vec<&str> = line.split(' ').collect();
        if f.first() == Some(&"xattr") {
            if f.len() != 4 {
                return Err(bad("expected four fields"));
            }
            let value = if f[2] == "-" {
                Vec::new()
            } else {
                (0..f[2].len() / 2)
                    .map(|i| u8::from_str_radix(f[2].get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| bad("bad xattr value"))?
            };
            out.push(Record::Xattr {
                name: unescape(f[1]).ok_or_else(|| bad("bad name escape"))?,
                value,
                path: unescape(f[3]).ok_or_else(|| bad("bad path escape"))?,
            });
            continue;
        }
        if f.len() != 3 {
            return Err(bad("expected three fields"));
        }
        if f[0] == "time" {
            if default_time.is_none() {
                return Err(bad("time record in a version 1 blob"));
            }
            let time = parse_time(f[1]).ok_or_else(|| bad("bad time"))?;
            let path = if f[2] == "." {
                Vec::new()
            } else {
                unescape(f[2]).ok_or_else(|| bad("bad path escape"))?
            };
            out.push(Record::Time { time, path });
            continue;
        }
        let path = unescape(f[2]).ok_or_else(|| bad("bad path escape"))?;
        let mode = || {
            u32::from_str_radix(f[1], 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| bad("bad mode"))
        };
        out.push(match f[0] {
            "mode" => Record::Mode {
                mode: mode()?,
                path,
            },
            "dir" => Record::Dir {
                mode: mode()?,
                path,
            },
            "fifo" => Record::Fifo {
                mode: mode()?,
                path,
            },
            "link" => Record::Link {
                primary: unescape(f[1]).ok_or_else(|| bad("bad path escape"))?,
                path,
            },
            _ => return Err(bad("unknown record kind")),
        });
    }
    Ok((out, default_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips_every_byte() {
        let all: Vec<u8> = (1..=255u8).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert_eq!(escape(b"a b\\c\xff"), "a\\x20b\\x5cc\\xff");
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            Record::Mode {
                mode: 0o4755,
                path: b"bin/su".to_vec(),
            },
            Record::Dir {
                mode: 0,
                path: b"locked dir".to_vec(),
            },
            Record::Fifo {
                mode: 0o644,
                path: b"run/p\xfe".to_vec(),
            },
            Record::Link {
                primary: b"a".to_vec(),
                path: b"b".to_vec(),
            },
            Record::Xattr {
                name: b"user.x y".to_vec(),
                value: vec![0, 255, b'v'],
                path: b"bin/su".to_vec(),
            },
            Record::Xattr {
                name: b"user.empty".to_vec(),
                value: Vec::new(),
                path: b"a".to_vec(),
            },
        ];
        let blob = encode(&recs, None);
        assert!(blob.starts_with(b"grove-meta 1\nmode 4755 bin/su\ndir 0000 locked\\x20dir\n"));
        assert_eq!(decode(&blob).unwrap(), recs);
    }

    #[test]
    fn times_round_trip_with_the_default_in_the_header() {
        let recs = vec![
            Record::Time {
                time: Mtime::new(5, 0),
                path: Vec::new(),
            },
            Record::Time {
                time: Mtime::new(-1, 1),
                path: b"a b".to_vec(),
            },
        ];
        let blob = encode(&recs, Some(Mtime::new(1663632000, 123)));
        assert_eq!(
            String::from_utf8(blob.clone()).unwrap(),
            "grove-meta 2 1663632000.000000123\ntime 5 .\ntime -1.000000001 a\\x20b\n"
        );
        assert_eq!(
            decode_with_time(&blob).unwrap(),
            (recs, Some(Mtime::new(1663632000, 123)))
        );
        for bad in ["1.5", "01", "1.000000000", "", "-", "1e3", " 1"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        assert!(matches!(
            decode(b"grove-meta 1\ntime 5 a\n"),
            Err(MetaError::Line { line: 2, .. })
        ));
    }

    #[test]
    fn unknown_version_is_refused() {
        assert_eq!(
            decode(b"grove-meta 2\n"),
            Err(MetaError::Header("grove-meta 2".into()))
        );
        assert_eq!(
            decode(b"grove-meta 3 0\n"),
            Err(MetaError::Header("grove-meta 3 0".into()))
        );
        assert!(matches!(
            decode(b"grove-meta 1\nmode 99999 x\n"),
            Err(MetaError::Line { line: 2, .. })
        ));
    }
}
