#!/bin/sh
# Build Grove's Debian package, target/debian/grove_VERSION-1_ARCH.deb: generate the man
# pages and shell completions from the commands' clap definitions (grove-gen), then build
# and package the release binaries with cargo-deb (cargo install cargo-deb --locked).
# Extra arguments go to cargo deb (e.g. --fast).
set -eu
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || {
    echo "build-deb.sh: cargo-deb not found (install it: cargo install cargo-deb --locked)" >&2
    exit 1
}
rm -rf target/packaging
# Release profile: cargo deb then reuses the same build.
cargo run --locked --quiet --release --bin grove-gen -- man target/packaging/man
cargo run --locked --quiet --release --bin grove-gen -- completions target/packaging/completions
cargo deb --locked "$@"
