//! Docker image manifest schema 1 (`application/vnd.docker.distribution.manifest.v1+json`,
//! and `…v1+prettyjws` when signed), deprecated since 2017 but still served for old images
//! by some registries. Charliecloud 0.31 pulls them: the layers are `fsLayers[].blobSum`,
//! top layer first (so reversed to apply), and there is no config blob. Grove takes the
//! config Docker takes when it converts one (`history[0].v1Compatibility`, the top
//! layer's v1 image JSON: architecture, environment, working directory, command…), and
//! a history entry per layer (`container_config.Cmd`, `throwaway` for an empty layer).
//!
//! A schema 1 manifest declares no layer sizes: whoever downloads them must bound them
//! otherwise (the registry client asks the registry, [`crate::registry`]). Every digest
//! is checked here, as [`super::Document::parse`] does.
//!
//! The digest of a signed manifest (the one a registry names it by) is that of its JWS
//! payload, the document without its `signatures`: the first `formatLength` bytes of the
//! body followed by the decoded `formatTail`, both from a signature's protected header.

use base64::Engine as _;
use serde::Deserialize;

use super::config::{ConfigDoc, HistoryEntry};
use super::digest::Digest;
use super::index::DocumentError;
use super::{DOCKER_V1, DOCKER_V1_SIGNED};

/// A schema 1 manifest, as Grove uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema1 {
    /// Layer digests (checked), in the order they apply: the bottom layer first.
    pub layers: Vec<String>,
    /// The image config, from the top layer's `v1Compatibility`, with a history entry per
    /// layer, bottom first.
    pub config: ConfigDoc,
    /// The digest a registry names the manifest by: of the JWS payload if signed, else of
    /// the body.
    pub digest: Digest,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(default)]
    architecture: String,
    #[serde(rename = "fsLayers")]
    fs_layers: Vec<FsLayer>,
    #[serde(default)]
    history: Vec<V1History>,
    #[serde(default)]
    signatures: Vec<Signature>,
}

#[derive(Deserialize)]
struct FsLayer {
    #[serde(rename = "blobSum")]
    blob_sum: String,
}

#[derive(Deserialize)]
struct V1History {
    #[serde(rename = "v1Compatibility")]
    v1_compatibility: String,
}

#[derive(Deserialize)]
struct Signature {
    protected: String,
}

/// What a signature's protected header says of the payload.
#[derive(Deserialize)]
struct Protected {
    #[serde(rename = "formatLength")]
    format_length: usize,
    #[serde(rename = "formatTail")]
    format_tail: String,
}

/// The parts of a `v1Compatibility` JSON used for the history.
#[derive(Deserialize, Default)]
struct V1Compat {
    #[serde(default)]
    throwaway: bool,
    #[serde(default)]
    container_config: Option<ContainerConfig>,
}

#[derive(Deserialize, Default)]
struct ContainerConfig {
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

/// Whether a manifest (of `Content-Type` `media_type`, may be empty) is schema 1: its
/// media type, or its `schemaVersion` if the body is JSON.
pub fn is_schema1(media_type: &str, body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
    }
    let ct = media_type.split(';').next().unwrap_or("").trim();
    ct == DOCKER_V1
        || ct == DOCKER_V1_SIGNED
        || serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.schema_version == 1)
}

fn bad(reason: impl Into<String>) -> DocumentError {
    DocumentError::Schema1(reason.into())
}

impl Schema1 {
    /// Parse a schema 1 manifest; every layer digest is checked, and so is the number of
    /// layers ([`super::MAX_LAYERS`]).
    pub fn parse(body: &[u8]) -> Result<Schema1, DocumentError> {
        let raw: Raw = serde_json::from_slice(body).map_err(|source| DocumentError::Json {
            what: "schema 1 manifest",
            source,
        })?;
        if raw.schema_version != 1 {
            return Err(bad(format!(
                "schemaVersion is {}, not 1",
                raw.schema_version
            )));
        }
        let n = raw.fs_layers.len();
        if n > super::MAX_LAYERS {
            return Err(DocumentError::TooManyLayers {
                n,
                max: super::MAX_LAYERS,
            });
        }
        // Docker refuses these too: history[i] describes fsLayers[i].
        if raw.history.len() != n {
            return Err(bad(format!(
                "{} history entries for {n} layers",
                raw.history.len()
            )));
        }
        let mut layers = Vec::with_capacity(n);
        for l in raw.fs_layers.iter().rev() {
            let d = Digest::parse(&l.blob_sum).map_err(|source| DocumentError::BadDigest {
                what: "layer",
                source,
            })?;
            layers.push(d.to_string());
        }
        let mut config = match raw.history.first() {
            Some(h) => ConfigDoc::parse(h.v1_compatibility.as_bytes()).map_err(|e| match e {
                DocumentError::Json { source, .. } => DocumentError::Json {
                    what: "schema 1 manifest: history[0].v1Compatibility",
                    source,
                },
                e => e,
            })?,
            None => ConfigDoc::default(),
        };
        if config.architecture.is_empty() {
            config.architecture = raw.architecture.clone();
        }
        config.rootfs = Default::default();
        config.history = raw
            .history
            .iter()
            .rev()
            .map(|h| {
                let c: V1Compat = serde_json::from_str(&h.v1_compatibility).unwrap_or_default();
                HistoryEntry {
                    created_by: c
                        .container_config
                        .and_then(|c| c.cmd)
                        .map(|cmd| cmd.join(" ")),
                    empty_layer: c.throwaway,
                }
            })
            .collect();
        let digest = match raw.signatures.first() {
            None => Digest::of(body),
            Some(s) => Digest::of(&payload(body, &s.protected)?),
        };
        Ok(Schema1 {
            layers,
            config,
            digest,
        })
    }
}

/// The JWS payload of a signed manifest whose first signature's protected header is
/// `protected` (base64url): `body` up to `formatLength`, then the decoded `formatTail`.
fn payload(body: &[u8], protected: &str) -> Result<Vec<u8>, DocumentError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64
        .decode(protected.trim_end_matches('='))
        .map_err(|e| bad(format!("signature header is not base64url ({e})")))?;
    let p: Protected = serde_json::from_slice(&header).map_err(|source| DocumentError::Json {
        what: "schema 1 manifest: signature header",
        source,
    })?;
    if p.format_length > body.len() {
        return Err(bad(format!(
            "signature header's formatLength {} is beyond the manifest's {} bytes",
            p.format_length,
            body.len()
        )));
    }
    let tail = b64
        .decode(p.format_tail.trim_end_matches('='))
        .map_err(|e| bad(format!("formatTail is not base64url ({e})")))?;
    let mut out = body[..p.format_length].to_vec();
    out.extend_from_slice(&tail);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const L2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(extra: &str) -> String {
        format!(
            r##"{{"schemaVersion":1,"name":"a/b","tag":"latest","architecture":"amd64","fsLayers":[{{"blobSum":"{L2}"}},{{"blobSum":"{L1}"}}],"history":[{{"v1Compatibility":"{{\"architecture\":\"arm64\",\"os\":\"linux\",\"config\":{{\"Env\":[\"A=1\"],\"WorkingDir\":\"/w\",\"Cmd\":[\"sh\"]}},\"container_config\":{{\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) CMD [\\\"sh\\\"]\"]}},\"throwaway\":true}}"}},{{"v1Compatibility":"{{\"container_config\":{{\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) ADD file:x in /\"]}}}}"}}]{extra}}}"##
        )
    }

    #[test]
    fn layers_apply_bottom_first_and_the_config_is_the_top_history_entry() {
        let body = manifest("");
        assert!(is_schema1("", body.as_bytes()));
        assert!(is_schema1(DOCKER_V1_SIGNED, b"{}"));
        assert!(!is_schema1("", br#"{"schemaVersion":2}"#));
        let m = Schema1::parse(body.as_bytes()).unwrap();
        assert_eq!(m.layers, vec![L1.to_string(), L2.to_string()]);
        assert_eq!(m.digest, Digest::of(body.as_bytes()));
        let c = m.config.to_image_config();
        assert_eq!(c.arch.as_deref(), Some("arm64"));
        assert_eq!(c.cwd, "/w");
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        assert!(
            c.env.iter().any(|(k, v)| k == "A" && v == "1"),
            "{:?}",
            c.env
        );
        let h: Vec<_> = c
            .history
            .iter()
            .map(|h| (h.created_by.as_str(), h.empty_layer))
            .collect();
        assert_eq!(
            h,
            vec![
                ("/bin/sh -c #(nop) ADD file:x in /", false),
                ("/bin/sh -c #(nop) CMD [\"sh\"]", true)
            ]
        );
    }

    #[test]
    fn a_signed_manifest_is_named_by_the_digest_of_its_payload() {
        let unsigned = manifest("");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // libtrust's form: the payload's closing brace is the tail, the signatures are
        // inserted before it.
        let len = unsigned.len() - 1;
        let protected = b64.encode(format!(
            r#"{{"formatLength":{len},"formatTail":"{}","time":"2016-01-01T00:00:00Z"}}"#,
            b64.encode("}")
        ));
        let signed = format!(
            r#"{},"signatures":[{{"header":{{"alg":"ES256"}},"signature":"xx","protected":"{protected}"}}]}}"#,
            &unsigned[..len]
        );
        let m = Schema1::parse(signed.as_bytes()).unwrap();
        assert_eq!(m.digest, Digest::of(unsigned.as_bytes()));
        assert_ne!(m.digest, Digest::of(signed.as_bytes()));
    }

    #[test]
    fn bad_digests_and_mismatched_history_are_refused() {
        let body = manifest("").replace(L1, "sha256:../../etc");
        let e = Schema1::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("layer"), "{e}");
        let body = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:1111111111111111111111111111111111111111111111111111111111111111"}],"history":[]}"#;
        let e = Schema1::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("0 history entries for 1 layers"), "{e}");
    }
}
