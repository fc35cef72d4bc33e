#!/usr/bin/env bash
# Builds the Debian package of the gateway (docs/OPERATIONS.md, "Install"):
# target/debian/vigie-gateway_<version>-1_<arch>.deb. Installs cargo-deb when missing.
# The binary is a release build; man pages and shell completions come from the binary's
# own command-line definitions.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version >/dev/null 2>&1; then
    echo "==> installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

cargo build --release --quiet -p gateway --bin gateway
rm -rf target/package
target/release/gateway generate --out-dir target/package
gzip -9n target/package/man/*.1
cargo deb -p gateway --no-build --quiet
ls target/debian/vigie-gateway_*.deb
