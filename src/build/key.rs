//! Build-cache keys (schema in docs/cache-keys.md): a blake3 hash chain.
//!
//! `key(FROM) = H(schema, "FROM", base commit id)`; every later instruction's key is
//! `H(schema, "STEP", parent key, input, extra)` where `input` is the step's key input as
//! [`super::plan`] encodes it (the instruction as it will execute, and the build options
//! that change its result) and `extra` what only execution can tell: the content hash of
//! COPY/ADD sources, the commit of a `COPY --from` stage. Fields are length-prefixed, so no
//! two inputs collide by concatenation. Golden tests here and in [`super::plan`] pin the
//! bytes: changing them requires a new schema version.

/// Version tag hashed into every key.
pub const SCHEMA: &[u8] = b"grove-cache-key 4";

/// A cache key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key(pub [u8; 32]);

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

impl Key {
    /// Key of a stage's start: the base image's commit id (equal content, equal key).
    pub fn from_base(commit_hex: &str) -> Key {
        let mut h = blake3::Hasher::new();
        field(&mut h, SCHEMA);
        field(&mut h, b"FROM");
        field(&mut h, commit_hex.as_bytes());
        Key(*h.finalize().as_bytes())
    }

    /// Key of the instruction that follows `self`: `input` is its encoded key input.
    pub fn child(&self, input: &[u8], extra: &[u8]) -> Key {
        let mut h = blake3::Hasher::new();
        field(&mut h, SCHEMA);
        field(&mut h, b"STEP");
        field(&mut h, &self.0);
        field(&mut h, input);
        field(&mut h, extra);
        Key(*h.finalize().as_bytes())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Short form for logs.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden values: if these change, bump SCHEMA and say so in docs/cache-keys.md.
    #[test]
    fn key_bytes_are_pinned() {
        let base = Key::from_base("0000000000000000000000000000000000000000");
        assert_eq!(base.hex(), GOLDEN_BASE);
        let run = base.child(b"RUN echo hello", b"seccomp");
        assert_eq!(run.hex(), GOLDEN_RUN);
    }

    const GOLDEN_BASE: &str = "f78a31f6333bc532a715425897c4e48809565c02045835408d69f928764fb547";
    const GOLDEN_RUN: &str = "af0afd336153ec1585bcce39c8981ba54475e99b125a3037a0c976a7c1ef5497";

    #[test]
    fn fields_do_not_run_together() {
        let k = Key::from_base("abc");
        assert_ne!(k.child(b"RUN a", b"b"), k.child(b"RUN ab", b""));
        assert_ne!(
            k.child(b"RUN a", b""),
            Key::from_base("abd").child(b"RUN a", b"")
        );
    }
}
