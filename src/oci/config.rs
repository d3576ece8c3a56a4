//! The OCI image config document (image-spec "Image Configuration"; Docker's is the same
//! for the fields Grove keeps) and its conversion to and from Grove's stored metadata
//! ([`ImageConfig`]).
//!
//! Fields are declared in sorted order, so a serialized document has sorted keys (as the
//! `ch-convert -o oci` output always had: its bytes, and so its digest, are part of the
//! reproducibility contract). Reading is lenient where real images are: `null` for a
//! list or object, labels whose values are not strings (dropped).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::platform::{host_arch, Platform};
use crate::store::config::{History, ImageConfig};

/// An image config document; only the fields Grove keeps (others are ignored on read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDoc {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub config: RunConfig,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<HistoryEntry>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, deserialize_with = "null_default")]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// The `config` object: how to run the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "string_labels",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
    #[serde(rename = "type", default = "layers")]
    pub kind: String,
}

fn layers() -> String {
    "layers".into()
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            diff_ids: Vec::new(),
            kind: layers(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn string_labels<'de, D>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error>
where
    D: Deserializer<'de>,
{
    let m = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?;
    Ok(m.map(|m| {
        m.into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect()
    }))
}

impl ConfigDoc {
    /// Parse an image config blob.
    pub fn parse(body: &[u8]) -> Result<ConfigDoc, super::DocumentError> {
        serde_json::from_slice(body).map_err(|source| super::DocumentError::Json {
            what: "image config",
            source,
        })
    }

    /// The platform the document names (architecture and variant; os `linux` if empty).
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: if self.os.is_empty() {
                "linux".into()
            } else {
                self.os.clone()
            },
            variant: self.variant.clone().filter(|v| !v.is_empty()),
        }
    }

    /// Grove's stored metadata for an image with this config. The architecture is kept
    /// in Charliecloud's spelling (`arm64/v8`).
    pub fn to_image_config(&self) -> ImageConfig {
        let mut c = ImageConfig::default();
        if !self.architecture.is_empty() {
            c.arch = Some(self.platform().to_string());
        }
        for e in self.config.env.iter().flatten() {
            match e.split_once('=') {
                Some((k, v)) => c.set_env(k, v),
                None => c.set_env(e, ""),
            }
        }
        if let Some(w) = self.config.working_dir.as_ref().filter(|w| !w.is_empty()) {
            c.cwd = w.clone();
        }
        c.cmd = self.config.cmd.clone();
        c.entrypoint = self.config.entrypoint.clone();
        if let Some(l) = &self.config.labels {
            c.labels = l.clone();
        }
        if let Some(s) = self.config.shell.as_ref().filter(|s| !s.is_empty()) {
            c.shell = s.clone();
        }
        c.history = self
            .history
            .iter()
            .map(|h| History {
                created_by: h.created_by.clone().unwrap_or_default(),
                empty_layer: h.empty_layer,
            })
            .collect();
        c
    }

    /// The document for an image with metadata `c` written as one layer of uncompressed
    /// digest `diff_id` (`ch-convert -o oci`, `ch-image push`). Pure, no timestamps. The
    /// architecture is `c`'s (else the host's), its variant a field of its own; the
    /// history is [`layer_history`] with `fallback`; empty lists and the default shell are
    /// left out.
    pub fn from_image_config(c: &ImageConfig, diff_id: &str, fallback: &str) -> ConfigDoc {
        let p = Platform::parse(&c.arch.clone().unwrap_or_else(host_arch));
        ConfigDoc {
            architecture: p.architecture,
            variant: p.variant,
            os: "linux".into(),
            config: RunConfig {
                env: (!c.env.is_empty())
                    .then(|| c.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                working_dir: (!c.cwd.is_empty()).then(|| c.cwd.clone()),
                cmd: c.cmd.clone(),
                entrypoint: c.entrypoint.clone(),
                labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
                shell: (c.shell != ImageConfig::default().shell).then(|| c.shell.clone()),
            },
            rootfs: RootFs {
                diff_ids: vec![diff_id.to_string()],
                kind: "layers".into(),
            },
            history: layer_history(c, fallback)
                .into_iter()
                .map(|h| HistoryEntry {
                    created_by: Some(h.created_by),
                    empty_layer: h.empty_layer,
                })
                .collect(),
        }
    }

    /// The serialized document (sorted keys, compact).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("image config serializes")
    }
}

/// The image's history as it must read in an OCI config whose files are all in one
/// layer: tools that add layers on top (Buildah, Podman) check that the non-empty
/// entries count the layers (`rootfs.diff_ids`). Every entry of `cfg.history` is kept,
/// in order, marked `empty_layer` except the last one that made a layer in Grove, which
/// stands for the single layer; with no such entry, one entry created by `fallback` is
/// appended. Pure.
pub fn layer_history(cfg: &ImageConfig, fallback: &str) -> Vec<History> {
    let mut out: Vec<History> = cfg
        .history
        .iter()
        .map(|h| History {
            created_by: h.created_by.clone(),
            empty_layer: true,
        })
        .collect();
    match cfg.history.iter().rposition(|h| !h.empty_layer) {
        Some(i) => out[i].empty_layer = false,
        None => out.push(History {
            created_by: fallback.to_string(),
            empty_layer: false,
        }),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(entries: &[(&str, bool)]) -> Vec<History> {
        entries
            .iter()
            .map(|(c, e)| History {
                created_by: c.to_string(),
                empty_layer: *e,
            })
            .collect()
    }

    #[test]
    fn written_config_has_sorted_keys_and_a_separate_variant() {
        // The bytes `ch-convert -o oci` has always written for this image: a change here
        // changes the digest of every exported layout.
        let mut cfg = ImageConfig::default();
        cfg.set_env("PATH", "/bin");
        cfg.cmd = Some(vec!["sh".into()]);
        cfg.cwd = "/work".into();
        cfg.labels.insert("a".into(), "b".into());
        cfg.arch = Some("arm64/v8".into());
        cfg.history = hist(&[("RUN a", false), ("CMD x", true)]);
        let doc = ConfigDoc::from_image_config(&cfg, "sha256:00", "fb");
        assert_eq!(
            String::from_utf8(doc.to_bytes()).unwrap(),
            r#"{"architecture":"arm64","config":{"Cmd":["sh"],"Env":["PATH=/bin"],"Labels":{"a":"b"},"WorkingDir":"/work"},"history":[{"created_by":"RUN a"},{"created_by":"CMD x","empty_layer":true}],"os":"linux","rootfs":{"diff_ids":["sha256:00"],"type":"layers"},"variant":"v8"}"#
        );
    }

    #[test]
    fn config_converts_both_ways() {
        for arch in ["amd64", "arm64/v8", "arm/v7"] {
            let mut cfg = ImageConfig::default();
            cfg.set_env("PATH", "/bin");
            cfg.set_env("X", "a=b");
            cfg.cmd = Some(vec!["sh".into()]);
            cfg.entrypoint = Some(vec!["/e".into()]);
            cfg.cwd = "/work".into();
            cfg.shell = vec!["/bin/bash".into(), "-c".into()];
            cfg.labels.insert("a".into(), "b".into());
            cfg.arch = Some(arch.into());
            cfg.history = hist(&[("RUN a", false)]);
            let doc = ConfigDoc::from_image_config(&cfg, "sha256:00", "fb");
            let p = Platform::parse(arch);
            assert_eq!(doc.architecture, p.architecture);
            assert_eq!(doc.variant, p.variant);
            assert!(!doc.architecture.contains('/'));
            let back: ConfigDoc = serde_json::from_slice(&doc.to_bytes()).unwrap();
            assert_eq!(back.to_image_config(), cfg);
        }
    }

    #[test]
    fn pulled_config_reads_leniently() {
        let body = br#"{"architecture":"arm","variant":"v7","os":"linux","created":"x",
            "config":{"Env":["PATH=/bin","X=a=b","Y"],"WorkingDir":"","Cmd":["sh"],
            "Labels":{"l":"v","n":1},"Shell":[]},"rootfs":{"type":"layers","diff_ids":null},
            "history":[{"created_by":"x"},{"empty_layer":true}]}"#;
        let c = serde_json::from_slice::<ConfigDoc>(body)
            .unwrap()
            .to_image_config();
        assert_eq!(c.arch.as_deref(), Some("arm/v7"));
        assert_eq!(c.env[1], ("X".to_string(), "a=b".to_string()));
        assert_eq!(c.env[2], ("Y".to_string(), String::new()));
        assert_eq!(c.cwd, "/");
        assert_eq!(c.shell, ImageConfig::default().shell);
        assert_eq!(c.labels.len(), 1);
        assert_eq!(c.history, hist(&[("x", false), ("", true)]));
        let c = serde_json::from_slice::<ConfigDoc>(br#"{"config":null,"history":null}"#)
            .unwrap()
            .to_image_config();
        assert_eq!(c, ImageConfig::default());
    }

    #[test]
    fn history_has_one_non_empty_entry_for_the_one_layer() {
        let cfg = ImageConfig {
            history: hist(&[
                ("ch-image import", false),
                ("ENV A=1", true),
                ("RUN a", false),
                ("RUN b", false),
                ("CMD x", true),
            ]),
            ..Default::default()
        };
        assert_eq!(
            layer_history(&cfg, "fb"),
            hist(&[
                ("ch-image import", true),
                ("ENV A=1", true),
                ("RUN a", true),
                ("RUN b", false),
                ("CMD x", true),
            ])
        );
        let doc = ConfigDoc::from_image_config(&cfg, "sha256:00", "fb");
        let non_empty = doc.history.iter().filter(|e| !e.empty_layer).count();
        assert_eq!(non_empty, doc.rootfs.diff_ids.len());
    }

    #[test]
    fn history_without_a_layer_entry_gets_one() {
        let mut cfg = ImageConfig::default();
        assert_eq!(layer_history(&cfg, "fb"), hist(&[("fb", false)]));
        cfg.history = hist(&[("ENV A=1", true)]);
        assert_eq!(
            layer_history(&cfg, "fb"),
            hist(&[("ENV A=1", true), ("fb", false)])
        );
    }
}
