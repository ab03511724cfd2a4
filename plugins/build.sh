#!/usr/bin/env bash
# Builds every plugin crate as a WebAssembly component and copies the results
# to dist/<name>.wasm (the stable place to load them from), then the Python
# and JavaScript plugins (below). Needs Debian's rustc-web toolchain (see
# README.md), python3 and node with npm, and crates.io, PyPI and npm. Cargo's own caching makes a rebuild with no changes
# take about a second; dist/ files are only rewritten when they changed.
#
#   plugins/build.sh              everything
#   plugins/build.sh --rust-only  the Rust plugins only (no Python or JavaScript toolchain needed)
set -euo pipefail
cd "$(dirname "$0")"
rust_only=0
case "${1:-}" in
    "") ;;
    --rust-only) rust_only=1 ;;
    *) echo "build.sh: unknown argument $1 (see the head of this script)" >&2; exit 2 ;;
esac

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
    # A library member (the transfer-plugin SDK) builds no component.
    grep -q '"cdylib"' "$member/Cargo.toml" || continue
    # A component starts with "\0asm", version 0x0d, layer 1 (a core module has layer 0).
    if [[ "$(head -c 8 "$built" | od -An -tx1 | tr -d ' \n')" != 0061736d0d000100 ]]; then
        echo "build.sh: $built is not a WebAssembly component" >&2
        exit 1
    fi
    # The engine would link a WASI import (see README.md, the sandbox), but
    # the Rust examples need none; keeping them free of it keeps them the
    # smallest and cheapest, and this catches a dependency that pulls it in.
    if grep -aqE 'wasi:|wasi_snapshot' "$built"; then
        echo "build.sh: $built imports WASI; the Rust examples import only transfer:plugin/host" >&2
        exit 1
    fi
    cmp -s "$built" "dist/$name.wasm" || cp "$built" "dist/$name.wasm"
    printf '%-28s %8d bytes\n' "dist/$name.wasm" "$(stat -c %s "dist/$name.wasm")"
done

[[ $rust_only == 0 ]] || exit 0

# Python (componentize-py) and JavaScript (componentize-js) plugins: each
# directory named *-py or *-js holds one validator (app.py or <name>.js).
# The tools are pinned (toolchain/) and installed once, outside the clone, in
# PLUGIN_TOOLS_DIR; a plugin is rebuilt only when its inputs changed (the
# sha256 of its sources, the WIT and the pins, kept beside its output).
tools_dir="${PLUGIN_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/transfer-engine/plugin-tools}"
pins_sha="$(cat toolchain/requirements.txt toolchain/package-lock.json | sha256sum | cut -c1-16)"
# The build script `plugins new` gives JavaScript plugins, used here too.
componentize_mjs=../engine/templates/plugin/js/componentize.mjs
py_tools="$tools_dir/py-$pins_sha"
js_tools="$tools_dir/js-$pins_sha"

ensure_py_tools() {
    [[ -x "$py_tools/bin/componentize-py" ]] && return
    command -v python3 >/dev/null || { echo "build.sh: python3 is needed for the Python plugins" >&2; exit 1; }
    rm -rf "$py_tools" && mkdir -p "$tools_dir"
    python3 -m venv "$py_tools" || { echo "build.sh: could not create a venv (apt-get install python3-venv)" >&2; exit 1; }
    "$py_tools/bin/pip" install -q --require-hashes -r toolchain/requirements.txt \
        || { echo "build.sh: pip install componentize-py failed (is PyPI reachable?)" >&2; rm -rf "$py_tools"; exit 1; }
}

ensure_js_tools() {
    [[ -d "$js_tools/node_modules/@bytecodealliance/componentize-js" ]] && return
    command -v npm >/dev/null || { echo "build.sh: node and npm are needed for the JavaScript plugins (apt-get install nodejs npm)" >&2; exit 1; }
    rm -rf "$js_tools" && mkdir -p "$js_tools"
    cp toolchain/package.json toolchain/package-lock.json "$js_tools/"
    (cd "$js_tools" && npm ci --no-audit --no-fund --loglevel=error >&2) \
        || { echo "build.sh: npm ci failed (is the npm registry reachable?)" >&2; rm -rf "$js_tools"; exit 1; }
}

shopt -s nullglob
for dir in *-py *-js; do
    [[ -d "$dir" ]] || continue
    name="${dir//-/_}"
    out="dist/$name.wasm"
    sources=("$dir"/*.py "$dir"/*.js)
    inputs="$(cat "${sources[@]}" ../wit/plugin.wit toolchain/* "$componentize_mjs" | sha256sum | cut -c1-64)"
    if [[ -f "$out" && "$(cat "dist/.$name.inputs" 2>/dev/null)" == "$inputs" ]]; then
        printf '%-28s %8d bytes (up to date)\n' "$out" "$(stat -c %s "$out")"
        continue
    fi
    # Built before from the same inputs (another clone sharing PLUGINS_TARGET_DIR,
    # as CI's fresh clones do): the same bytes, so the engine's compiled copy
    # of them (plugin_compiled_dir, keyed by their sha256) is reused too.
    kept="$target_dir/componentized/$name-$inputs.wasm"
    if [[ -f "$kept" ]]; then
        cp "$kept" "$out.tmp" && mv "$out.tmp" "$out"
        echo "$inputs" > "dist/.$name.inputs"
        printf '%-28s %8d bytes (built before from the same inputs)\n' "$out" "$(stat -c %s "$out")"
        continue
    fi
    case "$dir" in
        *-py)
            ensure_py_tools
            "$py_tools/bin/componentize-py" -d ../wit -w validator componentize -p "$dir" app -o "$out.tmp" >/dev/null
            ;;
        *-js)
            ensure_js_tools
            # Beside node_modules, where its import resolves; copied on every build so it is never stale.
            cp "$componentize_mjs" "$js_tools/componentize.mjs"
            node "$js_tools/componentize.mjs" "${sources[0]}" ../wit validator "$out.tmp"
            ;;
    esac
    mkdir -p "$target_dir/componentized"
    rm -f "$target_dir/componentized/$name-"*.wasm
    cp "$out.tmp" "$kept"
    mv "$out.tmp" "$out"
    echo "$inputs" > "dist/.$name.inputs"
    printf '%-28s %8d bytes\n' "$out" "$(stat -c %s "$out")"
done
