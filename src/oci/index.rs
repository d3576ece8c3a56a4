//! Image indexes (manifest lists), image manifests and their descriptors (OCI image-spec
//! and Docker schema 2), parsing of either kind of document, and the choice of a manifest
//! from an index by platform.
//!
//! Fields are declared in sorted order, so written documents have sorted keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::{BadDigest, Digest};
use super::platform::Platform;
use super::{DOCKER_LIST, DOCKER_MANIFEST, DOCKER_V1, DOCKER_V1_SIGNED, INDEX, MANIFEST};

/// Why a document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{what}: not valid JSON for its kind")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported manifest kind {0:?} (Docker schema 1 manifests are not supported)")]
    Unsupported(String),
    #[error("Docker schema 1 manifest: {0}")]
    Schema1(String),
    #[error(
        "image manifest lists {n} layers, more than Grove pulls ({max} at most; Docker \
         refuses more than 125)"
    )]
    TooManyLayers { n: usize, max: usize },
    #[error("{what}: {source}")]
    BadDigest {
        what: &'static str,
        #[source]
        source: BadDigest,
    },
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Checked by [`Document::parse`] ([`Digest::parse`]).
    pub digest: String,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    pub size: u64,
    /// Where else the blob may be fetched from (a foreign layer's, such as a Windows base
    /// layer's): read to say so in an error, never followed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A descriptor of `size` bytes of digest `digest`, without platform or annotations.
    pub fn new(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        Descriptor {
            annotations: BTreeMap::new(),
            digest: digest.to_string(),
            media_type: media_type.into(),
            platform: None,
            size,
            urls: Vec::new(),
        }
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
}

/// An image index or manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(rename = "schemaVersion", default = "two")]
    pub schema_version: u32,
}

fn two() -> u32 {
    2
}

/// A manifest or an index: what a manifest request or a blob named by an index holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

fn json<'a, T: Deserialize<'a>>(what: &'static str, body: &'a [u8]) -> Result<T, DocumentError> {
    serde_json::from_slice(body).map_err(|source| DocumentError::Json { what, source })
}

fn check(what: &'static str, digest: &str) -> Result<(), DocumentError> {
    Digest::parse(digest)
        .map(drop)
        .map_err(|source| DocumentError::BadDigest { what, source })
}

impl Document {
    /// Parse a manifest or index; `media_type` is what the container says it is (an HTTP
    /// `Content-Type`, a descriptor's `mediaType`; may be empty), the document's own
    /// `mediaType` taking precedence. Every digest in it is checked.
    pub fn parse(media_type: &str, body: &[u8]) -> Result<Document, DocumentError> {
        let probe: Probe = json("manifest", body)?;
        let ct = media_type.split(';').next().unwrap_or("").trim();
        let kind = probe
            .media_type
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| ct.to_string());
        if probe.schema_version == 1 || kind == DOCKER_V1 || kind == DOCKER_V1_SIGNED {
            return Err(DocumentError::Unsupported(kind));
        }
        if kind == INDEX || kind == DOCKER_LIST || probe.manifests.is_some() {
            let idx: Index = json("image index", body)?;
            for d in &idx.manifests {
                check("image index entry", &d.digest)?;
            }
            return Ok(Document::Index(idx));
        }
        if kind.is_empty() || kind == MANIFEST || kind == DOCKER_MANIFEST || ct.contains("json") {
            let m: Manifest = json("image manifest", body)?;
            if m.layers.len() > super::MAX_LAYERS {
                return Err(DocumentError::TooManyLayers {
                    n: m.layers.len(),
                    max: super::MAX_LAYERS,
                });
            }
            check("config", &m.config.digest)?;
            for l in &m.layers {
                check("layer", &l.digest)?;
            }
            return Ok(Document::Manifest(m));
        }
        Err(DocumentError::Unsupported(kind))
    }
}

impl Document {
    /// Whether a registry's `Content-Type`, when it is a manifest or index type Grove
    /// reads, disagrees with the document: with its own `mediaType`, or if it names none,
    /// with its kind (an index has `manifests`). `Some((content type, what the body
    /// says))` if so, for the error. Docker's client refuses the same ("mediaType in
    /// manifest should be X not Y"), and containerd a kind that is not the descriptor's;
    /// a generic type (`application/json`, none) leaves the body to say.
    pub fn disagrees_with(&self, content_type: &str) -> Option<(String, String)> {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let ct_index = match ct {
            INDEX | DOCKER_LIST => true,
            MANIFEST | DOCKER_MANIFEST => false,
            _ => return None,
        };
        let (own, is_index) = match self {
            Document::Index(i) => (&i.media_type, true),
            Document::Manifest(m) => (&m.media_type, false),
        };
        if !own.is_empty() {
            return (own != ct).then(|| (ct.to_string(), own.clone()));
        }
        (is_index != ct_index).then(|| {
            let kind = if is_index {
                "an index (no mediaType)"
            } else {
                "an image manifest (no mediaType)"
            };
            (ct.to_string(), kind.to_string())
        })
    }
}

impl Index {
    /// The entry for architecture `wanted` (Charliecloud's spelling, [`Platform::matches`]):
    /// the first Linux entry that matches. Entries without a platform, or not for Linux
    /// (attestation manifests are `unknown/unknown`), never match.
    pub fn select(&self, wanted: &str) -> Option<&Descriptor> {
        let wanted = Platform::parse(wanted);
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.is_linux() && wanted.matches(p))
        })
    }

    /// The first entry not marked `unknown` (`--arch yolo`: whatever the index lists
    /// first).
    pub fn first_known(&self) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| p.architecture != "unknown")
        })
    }

    /// The entry to use when no architecture is asked for (an image layout read): the
    /// host's ([`Index::select`] with `host`), else [`Index::first_known`], else the first.
    pub fn select_or_first(&self, host: &str) -> Option<&Descriptor> {
        self.select(host)
            .or_else(|| self.first_known())
            .or_else(|| self.manifests.first())
    }

    /// The architectures the index offers for Linux, in Charliecloud's spelling, sorted,
    /// each once (`unknown` left out). Registry text, not escaped.
    pub fn archs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .filter(|p| p.is_linux() && p.architecture != "unknown")
            .map(Platform::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DG: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{DG}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{DG}","size":2,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{DG}","size":3,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}},
            {{"mediaType":"{MANIFEST}","digest":"{DG}","size":4,"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#
        )
    }

    fn index() -> Index {
        let Document::Index(idx) = Document::parse("", index_json().as_bytes()).unwrap() else {
            panic!("not an index")
        };
        idx
    }

    #[test]
    fn index_selects_the_architecture() {
        let idx = index();
        let size = |w: &str| idx.select(w).map(|d| d.size);
        assert_eq!(size("amd64"), Some(1));
        assert_eq!(size("arm64/v8"), Some(2));
        assert_eq!(size("arm64"), Some(2));
        assert_eq!(size("arm/v7"), Some(3));
        assert_eq!(size("arm/v6"), None);
        assert_eq!(size("ppc64le"), None);
        assert_eq!(size("unknown"), None);
        assert_eq!(idx.archs(), ["amd64", "arm/v7", "arm64/v8"]);
    }

    #[test]
    fn without_a_match_the_first_known_entry_is_used() {
        let mut idx = index();
        assert_eq!(idx.select_or_first("arm/v7").map(|d| d.size), Some(3));
        assert_eq!(idx.select_or_first("ppc64le").map(|d| d.size), Some(1));
        idx.manifests.rotate_left(3);
        assert_eq!(idx.select_or_first("ppc64le").map(|d| d.size), Some(1));
        idx.manifests.truncate(1);
        assert_eq!(idx.select_or_first("ppc64le").map(|d| d.size), Some(4));
        idx.manifests.clear();
        assert!(idx.select_or_first("amd64").is_none());
    }

    #[test]
    fn content_type_that_disagrees_with_the_body_is_told() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"digest":"{DG}","size":1}},"layers":[]}}"#
        );
        let d = Document::parse(INDEX, m.as_bytes()).unwrap();
        assert_eq!(
            d.disagrees_with(INDEX),
            Some((INDEX.to_string(), DOCKER_MANIFEST.to_string()))
        );
        assert_eq!(
            d.disagrees_with(MANIFEST),
            Some((MANIFEST.to_string(), DOCKER_MANIFEST.to_string()))
        );
        assert_eq!(
            d.disagrees_with(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
            None
        );
        assert_eq!(d.disagrees_with("application/json"), None);
        assert_eq!(d.disagrees_with(""), None);
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        let d = Document::parse("", bare.as_bytes()).unwrap();
        assert_eq!(d.disagrees_with(DOCKER_LIST), None);
        assert_eq!(
            d.disagrees_with(MANIFEST).map(|p| p.1),
            Some("an index (no mediaType)".to_string())
        );
    }

    #[test]
    fn oci_index_without_media_type_is_recognised_by_content_type() {
        let body = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Document::parse(INDEX, body.as_bytes()).unwrap(),
            Document::Index(_)
        ));
    }

    #[test]
    fn image_manifest_parses_and_checks_digests() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{{"mediaType":"{}","digest":"{DG}","size":7}},
            "layers":[{{"mediaType":"{}","digest":"{DG}","size":9}}]}}"#,
            super::super::CONFIG,
            super::super::LAYER_GZIP
        );
        let Document::Manifest(m) = Document::parse("", body.as_bytes()).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers.len(), 1);
        let bad = body.replacen("sha256:0123", "sha256:../x", 1);
        assert!(matches!(
            Document::parse("", bad.as_bytes()),
            Err(DocumentError::BadDigest { .. })
        ));
    }

    #[test]
    fn a_manifest_of_more_than_max_layers_is_refused() {
        let layers = |n: usize| {
            let l = format!(
                r#"{{"mediaType":"{}","digest":"{DG}","size":9}}"#,
                super::super::LAYER_GZIP
            );
            format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"{DG}","size":7}},"layers":[{}]}}"#,
                vec![l; n].join(",")
            )
        };
        let max = super::super::MAX_LAYERS;
        assert!(matches!(
            Document::parse(MANIFEST, layers(max).as_bytes()),
            Ok(Document::Manifest(m)) if m.layers.len() == max
        ));
        assert!(matches!(
            Document::parse(MANIFEST, layers(max + 1).as_bytes()),
            Err(DocumentError::TooManyLayers { n, .. }) if n == max + 1
        ));
    }

    #[test]
    fn schema_1_manifests_are_refused() {
        let body = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(matches!(
            Document::parse(DOCKER_V1_SIGNED, body),
            Err(DocumentError::Unsupported(_))
        ));
    }

    #[test]
    fn written_documents_have_sorted_keys() {
        let d = Digest::parse(DG).unwrap();
        let m = Manifest {
            config: Descriptor::new(super::super::CONFIG, &d, 7),
            layers: vec![Descriptor::new(super::super::LAYER_GZIP, &d, 9)],
            media_type: MANIFEST.into(),
            schema_version: 2,
        };
        let s = serde_json::to_string(&m).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(s, v.to_string(), "keys of {s} are not sorted");
    }
}
