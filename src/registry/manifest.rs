//! Registry documents, parsed and written without I/O: image indexes (manifest lists),
//! image manifests (Docker schema 2 and OCI), image configs, and architecture names.
//!
//! Pure functions only; unit tests beside them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::config::{History, ImageConfig};

pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The `Accept` header of manifest requests: every kind we read.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Why a registry document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{what}: not valid JSON for its kind")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported manifest kind {0:?} (Docker schema 1 manifests are not supported)")]
    Unsupported(String),
    #[error("{what}: invalid digest {digest:?}")]
    BadDigest { what: &'static str, digest: String },
    #[error("requested architecture {wanted} not available; available: {}", available.join(" "))]
    NoArch {
        wanted: String,
        available: Vec<String>,
    },
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Charliecloud's single-string form: `arm64/v8`, `amd64`.
    pub fn arch_string(&self) -> String {
        match &self.variant {
            Some(v) if !v.is_empty() => format!("{}/{v}", self.architecture),
            _ => self.architecture.clone(),
        }
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index or manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Index {
    pub manifests: Vec<Descriptor>,
}

/// What a manifest request returned.
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

fn json<'a, T: Deserialize<'a>>(what: &'static str, body: &'a [u8]) -> Result<T, ManifestError> {
    serde_json::from_slice(body).map_err(|source| ManifestError::Json { what, source })
}

/// Parse a manifest response, by its `Content-Type` (may be empty) and its body.
pub fn parse_document(content_type: &str, body: &[u8]) -> Result<Document, ManifestError> {
    let probe: Probe = json("manifest", body)?;
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let kind = probe
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| ct.to_string());
    if probe.schema_version == 1 || kind == DOCKER_V1 || kind == DOCKER_V1_SIGNED {
        return Err(ManifestError::Unsupported(kind));
    }
    let is_index = kind == OCI_INDEX || kind == DOCKER_LIST || probe.manifests.is_some();
    if is_index {
        let idx: Index = json("image index", body)?;
        for d in &idx.manifests {
            check_digest("image index entry", &d.digest)?;
        }
        return Ok(Document::Index(idx));
    }
    if kind.is_empty() || kind == OCI_MANIFEST || kind == DOCKER_MANIFEST || ct.contains("json") {
        let m: Manifest = json("image manifest", body)?;
        check_digest("config", &m.config.digest)?;
        for l in &m.layers {
            check_digest("layer", &l.digest)?;
        }
        return Ok(Document::Manifest(m));
    }
    Err(ManifestError::Unsupported(kind))
}

/// The hex part of a `sha256:HEX` digest, checked.
pub fn check_digest<'d>(what: &'static str, digest: &'d str) -> Result<&'d str, ManifestError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(ManifestError::BadDigest {
            what,
            digest: digest.to_string(),
        }),
    }
}

/// `sha256:HEX` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The registry name of the host's architecture (`uname -m` translated), as Charliecloud
/// spells it.
pub fn host_arch() -> String {
    let m = nix::sys::utsname::uname()
        .map(|u| u.machine().to_string_lossy().into_owned())
        .unwrap_or_else(|_| std::env::consts::ARCH.to_string());
    arch_from_uname(&m)
}

/// Translate a `uname -m` name into a registry architecture.
pub fn arch_from_uname(m: &str) -> String {
    match m {
        "x86_64" => "amd64",
        "aarch64" | "arm64" => "arm64/v8",
        "armv7l" | "armv7" => "arm/v7",
        "armv6l" => "arm/v6",
        "armv5l" | "armv5tel" => "arm/v5",
        "i386" | "i486" | "i586" | "i686" => "386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "mips64" => "mips64le",
        "riscv64" => "riscv64",
        other => other,
    }
    .to_string()
}

/// Whether `platform` is what `wanted` (Charliecloud's single-string form) names. A
/// wanted variant must match; a missing wanted variant matches any (`arm64` takes
/// `arm64/v8`), and `arm64/v8` also takes an `arm64` entry without variant.
pub fn arch_matches(wanted: &str, platform: &Platform) -> bool {
    let (arch, variant) = match wanted.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (wanted, None),
    };
    if platform.architecture != arch {
        return false;
    }
    match (variant, platform.variant.as_deref()) {
        (None, _) => true,
        (Some(v), Some(pv)) => v == pv,
        (Some(v), None) => arch == "arm64" && v == "v8",
    }
}

/// Pick the manifest of architecture `wanted` from an index (entries that are not for
/// Linux, such as attestation manifests marked `unknown`, never match).
pub fn select_arch<'i>(idx: &'i Index, wanted: &str) -> Result<&'i Descriptor, ManifestError> {
    let usable = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os.is_empty() || p.os == "linux")
    };
    idx.manifests
        .iter()
        .filter(usable)
        .find(|d| arch_matches(wanted, d.platform.as_ref().expect("filtered")))
        .ok_or_else(|| ManifestError::NoArch {
            wanted: wanted.to_string(),
            available: index_archs(idx),
        })
}

/// Architectures an index offers, sorted.
pub fn index_archs(idx: &Index) -> Vec<String> {
    let mut v: Vec<String> = idx
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os.is_empty() || p.os == "linux")
        .filter(|p| p.architecture != "unknown")
        // Names for messages and listings: the registry's text, escaped.
        .map(|p| super::escape(&p.arch_string()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// An image config as registries carry it (OCI image spec, "Image Configuration"); only
/// the fields Grove keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default)]
    pub config: OciRunConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<OciHistory>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRunConfig {
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciHistory {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Parse an image config blob.
pub fn parse_config(body: &[u8]) -> Result<OciConfig, ManifestError> {
    json("image config", body)
}

/// Grove's image config from a pulled one.
pub fn to_image_config(oci: &OciConfig) -> ImageConfig {
    let mut c = ImageConfig::default();
    if !oci.architecture.is_empty() {
        c.arch = Some(
            Platform {
                architecture: oci.architecture.clone(),
                os: oci.os.clone(),
                variant: oci.variant.clone(),
            }
            .arch_string(),
        );
    }
    for e in oci.config.env.iter().flatten() {
        match e.split_once('=') {
            Some((k, v)) => c.set_env(k, v),
            None => c.set_env(e, ""),
        }
    }
    if let Some(w) = oci.config.working_dir.as_ref().filter(|w| !w.is_empty()) {
        c.cwd = w.clone();
    }
    c.cmd = oci.config.cmd.clone();
    c.entrypoint = oci.config.entrypoint.clone();
    if let Some(l) = &oci.config.labels {
        c.labels = l.clone();
    }
    if let Some(s) = oci.config.shell.as_ref().filter(|s| !s.is_empty()) {
        c.shell = s.clone();
    }
    c.history = oci
        .history
        .iter()
        .map(|h| History {
            created_by: h.created_by.clone().unwrap_or_default(),
            empty_layer: h.empty_layer,
        })
        .collect();
    c
}

/// An OCI config for pushing Grove's image config with the given layer diff ids.
pub fn from_image_config(c: &ImageConfig, diff_ids: Vec<String>) -> OciConfig {
    let arch = c.arch.clone().unwrap_or_else(host_arch);
    let (architecture, variant) = match arch.split_once('/') {
        Some((a, v)) => (a.to_string(), Some(v.to_string())),
        None => (arch, None),
    };
    OciConfig {
        architecture,
        variant,
        os: "linux".into(),
        config: OciRunConfig {
            env: Some(c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(c.cwd.clone()),
            cmd: c.cmd.clone(),
            entrypoint: c.entrypoint.clone(),
            labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
            shell: None,
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history: vec![OciHistory {
            created_by: Some("grove ch-image push".into()),
            empty_layer: false,
        }],
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
            {{"mediaType":"{OCI_MANIFEST}","digest":"{DG}","size":4,"platform":{{"architecture":"unknown","os":"unknown"}}}}]}}"#
        )
    }

    #[test]
    fn manifest_list_selects_architecture() {
        let Document::Index(idx) = parse_document("", index_json().as_bytes()).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(select_arch(&idx, "amd64").unwrap().size, 1);
        assert_eq!(select_arch(&idx, "arm64/v8").unwrap().size, 2);
        assert_eq!(select_arch(&idx, "arm64").unwrap().size, 2);
        assert_eq!(select_arch(&idx, "arm/v7").unwrap().size, 3);
        match select_arch(&idx, "ppc64le") {
            Err(ManifestError::NoArch { available, .. }) => {
                assert_eq!(available, ["amd64", "arm/v7", "arm64/v8"])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oci_index_without_media_type_is_recognised_by_content_type() {
        let body = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_document(OCI_INDEX, body.as_bytes()).unwrap(),
            Document::Index(_)
        ));
    }

    #[test]
    fn image_manifest_parses_and_checks_digests() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{DG}","size":7}},
            "layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{DG}","size":9}}]}}"#
        );
        let Document::Manifest(m) = parse_document("", body.as_bytes()).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.layers.len(), 1);
        let bad = body.replacen("sha256:0123", "sha256:../x", 1);
        assert!(matches!(
            parse_document("", bad.as_bytes()),
            Err(ManifestError::BadDigest { .. })
        ));
    }

    #[test]
    fn schema_1_manifests_are_refused() {
        let body = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(matches!(
            parse_document(DOCKER_V1_SIGNED, body),
            Err(ManifestError::Unsupported(_))
        ));
    }

    #[test]
    fn config_converts_both_ways() {
        let body = br#"{"architecture":"arm64","variant":"v8","os":"linux",
            "config":{"Env":["PATH=/bin","X=a=b"],"WorkingDir":"/w","Cmd":["sh"],
            "Labels":{"l":"v"}},"rootfs":{"type":"layers","diff_ids":[]},
            "history":[{"created_by":"x"},{"created_by":"y","empty_layer":true}]}"#;
        let c = to_image_config(&parse_config(body).unwrap());
        assert_eq!(c.arch.as_deref(), Some("arm64/v8"));
        assert_eq!(c.env[1], ("X".to_string(), "a=b".to_string()));
        assert_eq!(c.cwd, "/w");
        assert_eq!(c.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert!(c.history[1].empty_layer);
        let back = from_image_config(&c, vec![DG.into()]);
        assert_eq!(back.architecture, "arm64");
        assert_eq!(back.variant.as_deref(), Some("v8"));
        assert_eq!(back.config.env.unwrap()[1], "X=a=b");
    }

    #[test]
    fn uname_names_translate() {
        assert_eq!(arch_from_uname("x86_64"), "amd64");
        assert_eq!(arch_from_uname("aarch64"), "arm64/v8");
        assert_eq!(arch_from_uname("sparc"), "sparc");
    }

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
