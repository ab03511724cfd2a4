#!/usr/bin/env bash
# Builds every plugin crate as a WebAssembly component and copies the results
# to dist/<name>.wasm (the stable place to load them from). Needs Debian's rustc-web toolchain (see README.md) and
# crates.io, nothing else. Cargo's own caching makes a rebuild with no changes
# take about a second; dist/ files are only rewritten when they changed.
set -euo pipefail
cd "$(dirname "$0")"

apt_packages="rustc-web cargo-web rust-web-src rust-web-llvm lld-22"
component_ld=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld
missing=()
rustc_release="$(/usr/bin/rustc -vV 2>/dev/null | sed -n 's/^release: //p' || true)"
# wit-bindgen 0.63 needs a recent rustc; Debian's rustc-web 1.96 is what this was tested with.
[[ "$rustc_release" == 1.9[6-9].* ]] || missing+=("/usr/bin/rustc 1.96+ (rustc-web)")
[[ -d /usr/lib/rustlib/src/rust/library ]] || missing+=("std source (rust-web-src)")
[[ -x "$component_ld" ]] || missing+=("wasm-component-ld (rust-web-llvm)")
if ((${#missing[@]})); then
    echo "build.sh: the plugin toolchain is not installed; missing: ${missing[*]}" >&2
    echo "Install it with:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $apt_packages" >&2
    exit 1
fi

# PLUGINS_TARGET_DIR lets CI keep the build outside a fresh clone. The explicit
# --target-dir also keeps a CARGO_TARGET_DIR meant for the host out of it.
target_dir="${PLUGINS_TARGET_DIR:-target}"

# build-std is unstable; RUSTC_BOOTSTRAP lets the stable cargo use it. The
# target, rustc and linker come from .cargo/config.toml.
RUSTC_BOOTSTRAP=1 cargo build --release --locked --target-dir "$target_dir"

# Crate names from the workspace members (hyphens become underscores in file names).
mkdir -p dist
for member in $(sed -n '/^members = \[/,/^\]/s/^ *"\([^"]*\)",\{0,1\}$/\1/p' Cargo.toml); do
    name="${member//-/_}"
    built="$target_dir/wasm32-unknown-unknown/release/$name.wasm"
    # A component starts with "\0asm", version 0x0d, layer 1 (a core module has layer 0).
    if [[ "$(head -c 8 "$built" | od -An -tx1 | tr -d ' \n')" != 0061736d0d000100 ]]; then
        echo "build.sh: $built is not a WebAssembly component" >&2
        exit 1
    fi
    # The engine links nothing but transfer:plugin/host; a WASI import would fail there.
    if grep -aqE 'wasi:|wasi_snapshot' "$built"; then
        echo "build.sh: $built imports WASI; plugins must import only transfer:plugin/host" >&2
        exit 1
    fi
    cmp -s "$built" "dist/$name.wasm" || cp "$built" "dist/$name.wasm"
    printf '%-28s %7d bytes\n' "dist/$name.wasm" "$(stat -c %s "dist/$name.wasm")"
done
