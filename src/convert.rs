//! Format inference and conversion plans for `ch-convert` (pure; the binary performs them).

use std::path::Path;

/// Image formats ch-convert knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    ChImage,
    Dir,
    Tar,
    Squash,
    /// An OCI image layout: a directory, or a tar of one (oci-archive) when the path
    /// ends in `.tar`.
    Oci,
    /// An image in Docker's storage, through the `docker` command.
    Docker,
    /// An image in Podman's storage, through the `podman` command.
    Podman,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "ch-image" => Format::ChImage,
            "dir" => Format::Dir,
            "tar" => Format::Tar,
            "squash" => Format::Squash,
            "oci" => Format::Oci,
            "docker" => Format::Docker,
            "podman" => Format::Podman,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::ChImage => "ch-image",
            Format::Dir => "dir",
            Format::Tar => "tar",
            Format::Squash => "squash",
            Format::Oci => "oci",
            Format::Docker => "docker",
            Format::Podman => "podman",
        }
    }

    /// The external command a format goes through, if any.
    pub fn tool(self) -> Option<&'static str> {
        match self {
            Format::Docker => Some("docker"),
            Format::Podman => Some("podman"),
            _ => None,
        }
    }

    /// Whether the format names an image in some storage rather than a path.
    pub fn is_named(self) -> bool {
        matches!(self, Format::ChImage | Format::Docker | Format::Podman)
    }
}

/// Whether an OCI path is the archive form (a tar of the layout).
pub fn oci_is_archive(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".tar")
}

/// Infer a format from an argument as Charliecloud does: SquashFS and tar by extension,
/// a directory if the argument is a path (starts with `/` or `./`, or is an existing
/// directory), else an image name in the store. An existing directory holding an
/// `oci-layout` file is an OCI layout. Docker and Podman are never inferred (their names
/// look like store names), nor is the archive form of OCI (it looks like a tarball).
pub fn infer(arg: &str) -> Format {
    if Path::new(arg).join("oci-layout").is_file() {
        return Format::Oci;
    }
    let lower = arg.to_ascii_lowercase();
    let ext = |e: &str| lower.ends_with(e);
    if ext(".sqfs") || ext(".squash") || ext(".squashfs") {
        return Format::Squash;
    }
    let tar_like = ext(".tar") || ext(".tgz") || ext(".txz") || ext(".tzst") || {
        match lower.rfind(".tar.") {
            Some(i) => {
                let rest = &lower[i + 5..];
                !rest.is_empty() && rest.len() <= 4 && !rest.contains('/')
            }
            None => false,
        }
    };
    if tar_like {
        return Format::Tar;
    }
    if arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || Path::new(arg).is_dir()
    {
        return Format::Dir;
    }
    Format::ChImage
}

/// Compression of a tar output, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Gzip,
    Zstd,
    Xz,
}

pub fn tar_compression(path: &str) -> TarCompression {
    let l = path.to_ascii_lowercase();
    if l.ends_with(".gz") || l.ends_with(".tgz") {
        TarCompression::Gzip
    } else if l.ends_with(".zst") || l.ends_with(".tzst") {
        TarCompression::Zstd
    } else if l.ends_with(".xz") || l.ends_with(".txz") {
        TarCompression::Xz
    } else {
        TarCompression::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_inferred_like_charliecloud() {
        assert_eq!(infer("foo.sqfs"), Format::Squash);
        assert_eq!(infer("foo.tar.gz"), Format::Tar);
        assert_eq!(infer("foo.tgz"), Format::Tar);
        assert_eq!(infer("foo.tar.zst"), Format::Tar);
        assert_eq!(infer("/tmp/foo"), Format::Dir);
        assert_eq!(infer("./foo"), Format::Dir);
        assert_eq!(infer("foo:latest"), Format::ChImage);
        assert_eq!(infer("debian"), Format::ChImage);
    }

    #[test]
    fn tar_compression_follows_the_extension() {
        assert_eq!(tar_compression("a.tar.gz"), TarCompression::Gzip);
        assert_eq!(tar_compression("a.tar.zst"), TarCompression::Zstd);
        assert_eq!(tar_compression("a.tar"), TarCompression::None);
    }
}
