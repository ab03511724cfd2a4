#!/usr/bin/env bash
# Builds this crate into dist/{{name}}.wasm, a WebAssembly component of
# transfer-engine's `{{world}}` world (wit/plugin.wit). It takes the first
# route that is installed:
#   a) rustup with the wasm32-unknown-unknown target (a normal machine);
#   b) Debian's rustc-web 1.96+ with std's source and wasm-component-ld
#      (machines that cannot download a rustup target): std is compiled from
#      source with -Zbuild-std.
# Every setting is passed here, not in .cargo/config.toml, so that one route
# never disturbs the other and `cargo test` on the host stays plain.
set -euo pipefail
cd "$(dirname "$0")"

out="dist/{{name}}.wasm"
# Explicit, so that a CARGO_TARGET_DIR meant for other work is not used.
target_dir=target
built="$target_dir/wasm32-unknown-unknown/release/{{crate_name}}.wasm"
debian_rustc=/usr/bin/rustc
debian_src=/usr/lib/rustlib/src/rust/library
debian_ld=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld

if command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    # rustup toolchains ship wasm-component-ld beside rust-lld: as the linker
    # it writes a finished component, so no separate step is needed.
    component_ld="$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/wasm-component-ld 2>/dev/null | head -n 1 || true)"
    [[ -n "$component_ld" ]] || component_ld="$(command -v wasm-component-ld || true)"
    if [[ -n "$component_ld" ]]; then
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$component_ld" \
            cargo build --release --target wasm32-unknown-unknown --target-dir "$target_dir"
    else
        # An older toolchain: link a core module, then wrap it into a component.
        command -v wasm-tools >/dev/null || {
            echo "build.sh: this toolchain has no wasm-component-ld; install wasm-tools (cargo install wasm-tools) or update Rust (rustup update)" >&2
            exit 1
        }
        cargo build --release --target wasm32-unknown-unknown --target-dir "$target_dir"
        wasm-tools component new "$built" -o "$built.component"
        built="$built.component"
    fi
elif [[ "$("$debian_rustc" -vV 2>/dev/null | sed -n 's/^release: //p')" =~ ^1\.(9[6-9]|[1-9][0-9][0-9])\. ]] \
    && [[ -d "$debian_src" && -x "$debian_ld" ]] && command -v cargo >/dev/null; then
    # build-std is unstable: RUSTC_BOOTSTRAP lets a stable cargo and rustc use it.
    RUSTC_BOOTSTRAP=1 CARGO_BUILD_RUSTC="$debian_rustc" CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$debian_ld" \
        cargo build --release --target wasm32-unknown-unknown --target-dir "$target_dir" -Zbuild-std=std,panic_abort
else
    cat >&2 <<'HELP'
build.sh: no Rust toolchain that can build a WebAssembly component was found. Install one of:
  a) with rustup (https://rustup.rs), on a machine with internet access:
       rustup target add wasm32-unknown-unknown
  b) Debian's Rust 1.96 toolchain, on a machine without rustup targets:
       apt-get update
       DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           rustc-web cargo-web rust-web-src rust-web-llvm lld-22
Then run ./build.sh again.
HELP
    exit 1
fi

# A component starts with "\0asm", version 0x0d, layer 1 (a core module has layer 0).
if [[ "$(head -c 8 "$built" | od -An -tx1 | tr -d ' \n')" != 0061736d0d000100 ]]; then
    echo "build.sh: $built is not a WebAssembly component" >&2
    exit 1
fi
mkdir -p dist
cp "$built" "$out"
echo "$out: $(wc -c < "$out") bytes"
