//! The OCI image model, shared by the store (OCI layout export and import,
//! [`crate::store::oci`]) and the registry client ([`crate::registry`]): the one place that
//! knows how OCI and Docker spell things.
//!
//! Owns, without I/O beyond the reader or writer it is handed:
//! - [`platform`]: architectures. Grove stores an architecture as Charliecloud's single
//!   string (`amd64`, `arm64/v8`, `arm/v7`); OCI documents carry `architecture` and
//!   `variant` as separate fields. [`Platform`] is the only conversion between the two,
//!   and the host's architecture ([`host_arch`]) is spelled here only.
//! - [`config`]: the image config document ([`ConfigDoc`]) and its conversion to and from
//!   Grove's stored metadata ([`crate::store::ImageConfig`]).
//! - [`index`]: manifests, indexes, descriptors, parsing of either ([`Document::parse`],
//!   every digest checked), and the choice of a manifest from an index by platform.
//! - [`digest`]: the `sha256:HEX` [`Digest`] type and the [`Hashing`] reader/writer.
//! - [`schema1`]: Docker's deprecated schema 1 manifests ([`Schema1`]), which registries
//!   may still serve (never found in a layout).
//!
//! Invariants: documents are written with sorted keys and no timestamps (so exports are
//! reproducible); a digest read from a document is checked before it names a file or a
//! URL; an architecture with a variant is never written as one `architecture` string.
//!
//! Depends only on the stored metadata type ([`crate::store::config`], plain data); must
//! not depend on the store's object database, on HTTP or on the file system, so the store
//! and the registry client both build on it.

pub mod config;
pub mod digest;
pub mod index;
pub mod platform;
pub mod schema1;

pub use config::{layer_history, ConfigDoc};
pub use digest::{hash_reader, BadDigest, Digest, Hashing};
pub use index::{Descriptor, Document, DocumentError, Index, Manifest};
pub use platform::{host_arch, Platform};
pub use schema1::Schema1;

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Largest manifest or index read (from a registry or a layout).
pub const MAX_MANIFEST: u64 = 16 << 20;
/// Most layers an image manifest (from a registry, an OCI layout or a `docker save`
/// archive) may list. Grove flattens layers, so no kernel limit applies, but each one
/// is applied in turn: a 7.5 MB manifest listing one tiny layer 50,000 times took 52 s
/// to pull. Real images have a few dozen; Docker refuses more than 125 (moby's layer
/// store `maxLayerDepth`), so 1024 is well above anything another tool produces.
pub const MAX_LAYERS: usize = 1024;
/// Largest image config read (from a registry or a layout).
pub const MAX_CONFIG: u64 = 64 << 20;
