//! Build-cache keys (schema in docs/cache-keys.md): a blake3 hash chain.
//!
//! `key(FROM) = H(schema, "FROM", base commit id)`; every later instruction's key is
//! `H(schema, "STEP", parent key, instruction text, extra)` where the instruction text is
//! the instruction as it will execute (after substitution where Docker substitutes) and
//! `extra` holds what else decides the result: the content hash of COPY/ADD sources, the
//! root-emulation mode of RUN. Fields are length-prefixed, so no two inputs collide by
//! concatenation. Golden tests pin the bytes: changing them requires a new schema version.

/// Version tag hashed into every key.
pub const SCHEMA: &[u8] = b"grove-cache-key 3";

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

    /// Key of the instruction that follows `self`.
    pub fn child(&self, instruction: &str, extra: &[u8]) -> Key {
        let mut h = blake3::Hasher::new();
        field(&mut h, SCHEMA);
        field(&mut h, b"STEP");
        field(&mut h, &self.0);
        field(&mut h, instruction.as_bytes());
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
        let run = base.child("RUN echo hello", b"seccomp");
        assert_eq!(run.hex(), GOLDEN_RUN);
    }

    const GOLDEN_BASE: &str = "8db7283ff74e535338291be9b840e7443f0c73fd2aaa2260aa499a3a61aa7441";
    const GOLDEN_RUN: &str = "ada016bf671e1b9ee17bfdeb37b113d3b9952243ba091a7e49cb3b772094ff1c";

    #[test]
    fn fields_do_not_run_together() {
        let k = Key::from_base("abc");
        assert_ne!(k.child("RUN a", b"b"), k.child("RUN ab", b""));
        assert_ne!(
            k.child("RUN a", b""),
            Key::from_base("abd").child("RUN a", b"")
        );
    }
}
