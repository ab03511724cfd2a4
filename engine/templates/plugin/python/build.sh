#!/usr/bin/env bash
# Builds app.py into dist/{{name}}.wasm, a WebAssembly component of
# transfer-engine's `{{world}}` world (wit/plugin.wit).
#
# componentize-py is pinned and installed once into a virtualenv outside this
# folder, under PLUGIN_TOOLS_DIR (default ~/.cache/transfer-engine/plugin-tools),
# so every plugin on the machine shares it and this folder stays small.
set -euo pipefail
cd "$(dirname "$0")"

version=0.25.1
tools_dir="${PLUGIN_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/transfer-engine/plugin-tools}"
venv="$tools_dir/py-componentize-$version"
out="dist/{{name}}.wasm"

# .installed is written last, so an interrupted install is redone, not trusted.
if [[ ! -f "$venv/.installed" ]]; then
    command -v python3 >/dev/null || {
        echo "build.sh: python3 is needed (Debian/Ubuntu: apt-get install python3 python3-venv; macOS: brew install python)" >&2
        exit 1
    }
    echo "build.sh: installing componentize-py $version into $venv (once)" >&2
    rm -rf "$venv"
    mkdir -p "$tools_dir"
    python3 -m venv "$venv" || {
        echo "build.sh: python3 could not create a virtualenv (Debian/Ubuntu: apt-get install python3-venv)" >&2
        rm -rf "$venv"
        exit 1
    }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$version" || {
        echo "build.sh: pip could not install componentize-py==$version (is PyPI reachable?)" >&2
        rm -rf "$venv"
        exit 1
    }
    touch "$venv/.installed"
fi

mkdir -p dist
# -p . : app.py is found in this folder; the bindings for the world are
# generated into the component, never into this folder.
"$venv/bin/componentize-py" -d wit -w {{world}} componentize -p . app -o "$out.tmp" >/dev/null
# A component starts with "\0asm", version 0x0d, layer 1 (a core module has layer 0).
if [[ "$(head -c 8 "$out.tmp" | od -An -tx1 | tr -d ' \n')" != 0061736d0d000100 ]]; then
    echo "build.sh: $out.tmp is not a WebAssembly component" >&2
    exit 1
fi
mv "$out.tmp" "$out"
echo "$out: $(wc -c < "$out") bytes"
