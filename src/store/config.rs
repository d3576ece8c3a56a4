//! The image config blob (`config.json` in every image commit; format in
//! docs/store-format.md): environment, working directory, labels, shell, cmd, entrypoint,
//! architecture and history. JSON with sorted keys, so the blob is deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Current version of the config blob.
pub const CONFIG_VERSION: u32 = 1;

fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

fn default_cwd() -> String {
    "/".into()
}

/// An image's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default = "default_cwd")]
    pub cwd: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_shell")]
    pub shell: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub history: Vec<History>,
    /// Free-form provenance (base image, build args, ...), sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, serde_json::Value>,
}

/// One history entry, as in OCI image configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub created_by: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            version: CONFIG_VERSION,
            arch: None,
            env: Vec::new(),
            cwd: default_cwd(),
            labels: BTreeMap::new(),
            shell: default_shell(),
            cmd: None,
            entrypoint: None,
            history: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// Why a config blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("image config: unsupported version {0} (this Grove reads version {CONFIG_VERSION})")]
    Version(u32),
    #[error("image config is not valid JSON")]
    Json(#[from] serde_json::Error),
}

impl ImageConfig {
    /// Set an environment variable, keeping the position of an existing one.
    pub fn set_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
    }

    /// The image's `/ch/environment` as Charliecloud writes it: one `NAME=VALUE` line per
    /// variable, sorted by name, newline-terminated (a lone newline when there is none).
    /// `ch-run --set-env` with no argument reads it. The format has no quoting, so a
    /// variable with a newline in its name or value is left out (see [`Self::unwritable_env`]):
    /// written, its second line would be read as a variable of its own.
    pub fn environment_file(&self) -> Vec<u8> {
        let mut vars: Vec<&(String, String)> =
            self.env.iter().filter(|(k, v)| env_line_ok(k, v)).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (i, (k, v)) in vars.iter().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'\n');
        out
    }

    /// Names of the variables that [`Self::environment_file`] leaves out (a newline in the
    /// name or value), in the config's order.
    pub fn unwritable_env(&self) -> Vec<&str> {
        self.env
            .iter()
            .filter(|(k, v)| !env_line_ok(k, v))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("config serializes");
        v.push(b'\n');
        v
    }

    pub fn decode(data: &[u8]) -> Result<ImageConfig, ConfigError> {
        let c: ImageConfig = serde_json::from_slice(data)?;
        if c.version != CONFIG_VERSION {
            return Err(ConfigError::Version(c.version));
        }
        Ok(c)
    }
}

/// Whether a variable can be one `NAME=VALUE` line of `/ch/environment`.
pub fn env_line_ok(name: &str, value: &str) -> bool {
    !name.contains('\n') && !value.contains('\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_file_is_sorted_name_value_lines() {
        let mut c = ImageConfig::default();
        assert_eq!(c.environment_file(), b"\n");
        c.set_env("PATH", "/usr/bin:/bin");
        c.set_env("A", "x=y z");
        assert_eq!(c.environment_file(), b"A=x=y z\nPATH=/usr/bin:/bin\n");
        assert!(c.unwritable_env().is_empty());
    }

    #[test]
    fn environment_file_leaves_out_variables_with_a_newline() {
        // Written, `Y=a` then `b=c` would set a variable b in `ch-run --set-env`.
        let mut c = ImageConfig::default();
        c.set_env("Y", "a\nb=c");
        c.set_env("A", "1");
        c.set_env("N\nM", "2");
        assert_eq!(c.environment_file(), b"A=1\n");
        assert_eq!(c.unwritable_env(), ["Y", "N\nM"]);
    }

    #[test]
    fn config_round_trips_and_is_deterministic() {
        let mut c = ImageConfig::default();
        c.set_env("PATH", "/bin");
        c.set_env("A", "1");
        c.set_env("PATH", "/usr/bin");
        c.labels.insert("z".into(), "1".into());
        c.labels.insert("a".into(), "2".into());
        assert_eq!(c.env[0], ("PATH".to_string(), "/usr/bin".to_string()));
        let blob = c.encode();
        assert_eq!(blob, ImageConfig::decode(&blob).unwrap().encode());
    }

    #[test]
    fn future_version_is_refused() {
        assert!(matches!(
            ImageConfig::decode(br#"{"version": 9}"#),
            Err(ConfigError::Version(9))
        ));
    }
}
