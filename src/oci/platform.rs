//! Platforms: the OCI `architecture` / `variant` / `os` fields, and Charliecloud's single
//! string spelling of an architecture (`amd64`, `arm64/v8`, `arm/v7`), which is what Grove
//! stores (`arch` in the image config blob) and what `--arch` takes.
//!
//! Invariant: the single string is only ever a spelling; whatever goes into an OCI
//! document goes through [`Platform`], so a variant is always its own field there.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OCI platform (image-spec "Image Index", `platform`; the config's `architecture`,
/// `os` and `variant` are the same fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A Linux platform from Charliecloud's spelling: `arm64/v8` is architecture `arm64`,
    /// variant `v8`; `amd64` has no variant (nor has `arm64/`).
    pub fn parse(arch: &str) -> Platform {
        let (architecture, variant) = match arch.split_once('/') {
            Some((a, v)) => (a, Some(v).filter(|v| !v.is_empty())),
            None => (arch, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".into(),
            variant: variant.map(str::to_string),
        }
    }

    /// The host's platform, from `uname -m` ([`Platform::from_uname`]).
    pub fn host() -> Platform {
        let m = nix::sys::utsname::uname()
            .map(|u| u.machine().to_string_lossy().into_owned())
            .unwrap_or_else(|_| std::env::consts::ARCH.to_string());
        Platform::from_uname(&m)
    }

    /// The platform a `uname -m` machine name stands for, with the variant registries
    /// list it under (as Charliecloud translates it).
    pub fn from_uname(m: &str) -> Platform {
        Platform::parse(match m {
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
        })
    }

    /// Whether an image of this platform runs on Linux (an empty `os` is taken for Linux).
    pub fn is_linux(&self) -> bool {
        self.os.is_empty() || self.os == "linux"
    }

    /// Whether `offered` (an index entry, an image config) is what `self`, a wanted
    /// architecture, names. Only architecture and variant count. A wanted variant must
    /// match; a missing wanted variant matches any (`arm64` takes `arm64/v8`), and
    /// `arm64/v8` also takes an `arm64` entry without variant (v8 is arm64's only one).
    pub fn matches(&self, offered: &Platform) -> bool {
        if offered.architecture != self.architecture {
            return false;
        }
        match (self.variant.as_deref(), offered.variant.as_deref()) {
            (None, _) => true,
            (Some(v), Some(pv)) => v == pv,
            (Some(v), None) => self.architecture == "arm64" && v == "v8",
        }
    }
}

/// Charliecloud's spelling: `architecture[/variant]`.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.variant.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => write!(f, "{}/{v}", self.architecture),
            None => f.write_str(&self.architecture),
        }
    }
}

/// The host's architecture in Charliecloud's spelling (`amd64`, `arm64/v8`).
pub fn host_arch() -> String {
    Platform::host().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_parses_into_architecture_and_variant_and_back() {
        for (s, arch, variant) in [
            ("amd64", "amd64", None),
            ("arm64/v8", "arm64", Some("v8")),
            ("arm/v7", "arm", Some("v7")),
            ("386", "386", None),
        ] {
            let p = Platform::parse(s);
            assert_eq!(p.architecture, arch, "{s}");
            assert_eq!(p.variant.as_deref(), variant, "{s}");
            assert_eq!(p.os, "linux");
            assert_eq!(p.to_string(), s);
        }
        let p = Platform::parse("arm64/");
        assert_eq!(
            (p.architecture.as_str(), p.variant.as_deref()),
            ("arm64", None)
        );
        assert_eq!(p.to_string(), "arm64");
    }

    #[test]
    fn uname_names_translate() {
        assert_eq!(Platform::from_uname("x86_64").to_string(), "amd64");
        assert_eq!(Platform::from_uname("aarch64").to_string(), "arm64/v8");
        assert_eq!(Platform::from_uname("armv7l").to_string(), "arm/v7");
        assert_eq!(Platform::from_uname("sparc").to_string(), "sparc");
    }

    #[test]
    fn a_wanted_variant_must_match_and_a_missing_one_matches_any() {
        let m = |w: &str, o: &str| Platform::parse(w).matches(&Platform::parse(o));
        assert!(m("arm64", "arm64/v8"));
        assert!(m("arm64/v8", "arm64/v8"));
        assert!(m("arm64/v8", "arm64"));
        assert!(!m("arm/v7", "arm/v6"));
        assert!(!m("arm/v7", "arm"));
        assert!(m("arm", "arm/v7"));
        assert!(!m("amd64", "arm64"));
    }
}
