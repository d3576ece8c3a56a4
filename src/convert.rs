//! Format inference and conversion plans for `ch-convert` (pure; the binary performs them).

use std::path::Path;

/// Image formats ch-convert knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    ChImage,
    Dir,
    Tar,
    Squash,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "ch-image" => Format::ChImage,
            "dir" => Format::Dir,
            "tar" => Format::Tar,
            "squash" => Format::Squash,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::ChImage => "ch-image",
            Format::Dir => "dir",
            Format::Tar => "tar",
            Format::Squash => "squash",
        }
    }
}

/// Infer a format from an argument as Charliecloud does: SquashFS and tar by extension,
/// a directory if the argument is a path (starts with `/` or `./`, or is an existing
/// directory), else an image name in the store.
pub fn infer(arg: &str) -> Format {
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
