#!/usr/bin/env bash
# Runs the plugins' unit tests (their pure logic) natively on the host.
#
# .cargo/config.toml pins this workspace to wasm32 with Debian's rustc and
# build-std; here that is all overridden: the host target, rustup's rustc
# (whatever rustup selects for this directory), and no build-std (cargo only
# reads [unstable] when RUSTC_BOOTSTRAP or a nightly cargo allows it).
# Extra arguments go to cargo test, e.g. ./test.sh -p fx.
set -euo pipefail
cd "$(dirname "$0")"
host="$(rustc -vV | sed -n 's/^host: //p')"
unset RUSTC_BOOTSTRAP
export CARGO_BUILD_RUSTC=rustc CARGO_BUILD_RUSTDOC=rustdoc
# Own target dir: host artifacts never invalidate the wasm build's, and a
# CARGO_TARGET_DIR meant for the host workspace is not used.
exec cargo test --locked --target "$host" --target-dir "${PLUGINS_TARGET_DIR:-target}/host" "$@"
