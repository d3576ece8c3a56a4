//! Content digests (`sha256:HEX`, the only algorithm Grove reads or writes) and the hashing
//! reader/writer that computes them while data passes through.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest, `sha256:` and 64 lowercase hex digits (OCI image-spec,
/// "Digests"; the registered sha256 encoding is lowercase). Valid by construction, so its
/// hex part is always safe as a file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// A digest that is not `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?} (expected sha256: and 64 lowercase hex digits)")]
pub struct BadDigest(pub String);

impl Digest {
    /// Check `s`.
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        match s.strip_prefix("sha256:") {
            Some(h)
                if h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(Digest(s.to_string()))
            }
            _ => Err(BadDigest(s.to_string())),
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_hash(Sha256::digest(data).as_slice())
    }

    fn from_hash(h: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h)))
    }

    /// The whole digest, `sha256:HEX`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// Where an OCI image layout keeps this blob, relative to the layout.
    pub fn blob_path(&self) -> PathBuf {
        PathBuf::from("blobs/sha256").join(self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// A reader or writer that hashes (sha256) and counts the bytes that pass through it.
pub struct Hashing<T> {
    inner: T,
    hash: Sha256,
    len: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes passed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing passed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The inner reader or writer, the digest and the length of what passed.
    pub fn finish(self) -> (T, Digest, u64) {
        (
            self.inner,
            Digest::from_hash(self.hash.finalize().as_slice()),
            self.len,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The digest and length of everything `r` reads.
pub fn hash_reader(r: impl Read) -> io::Result<(Digest, u64)> {
    let mut h = Hashing::new(r);
    io::copy(&mut h, &mut io::sink())?;
    let (_, d, n) = h.finish();
    Ok((d, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(Digest::of(b"").as_str(), EMPTY);
        assert_eq!(
            hash_reader(&b""[..]).unwrap(),
            (Digest::parse(EMPTY).unwrap(), 0)
        );
    }

    #[test]
    fn hashing_writer_and_reader_agree_with_the_digest_of_the_bytes() {
        let mut w = Hashing::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (out, d, n) = w.finish();
        assert_eq!(out, b"hello world");
        assert_eq!((d.clone(), n), (Digest::of(b"hello world"), 11));
        assert_eq!(hash_reader(&b"hello world"[..]).unwrap(), (d, 11));
    }

    #[test]
    fn bad_digests_are_refused() {
        for bad in [
            "sha256:../../etc/passwd",
            "md5:00",
            "sha256:",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha512:{}", "a".repeat(64)),
        ] {
            assert_eq!(Digest::parse(bad), Err(BadDigest(bad.to_string())), "{bad}");
        }
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(
            d.blob_path(),
            PathBuf::from(format!("blobs/sha256/{}", "a".repeat(64)))
        );
        assert_eq!(d.hex(), "a".repeat(64));
    }
}
