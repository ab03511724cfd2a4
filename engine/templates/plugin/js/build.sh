#!/usr/bin/env bash
# Builds {{name}}.js into dist/{{name}}.wasm, a WebAssembly component of
# transfer-engine's `{{world}}` world (wit/plugin.wit).
#
# componentize-js is pinned in package.json and installed into node_modules
# here on the first build (npm install; about 400 MB, mostly the JavaScript
# engine it compiles into the component).
set -euo pipefail
cd "$(dirname "$0")"

out="dist/{{name}}.wasm"

command -v node >/dev/null && command -v npm >/dev/null || {
    echo "build.sh: node and npm are needed (Node 18 or later; Debian/Ubuntu: apt-get install nodejs npm; or https://nodejs.org)" >&2
    exit 1
}
if [[ ! -d node_modules/@bytecodealliance/componentize-js ]]; then
    echo "build.sh: installing componentize-js (once, into node_modules)" >&2
    npm install --no-audit --no-fund --loglevel=error >&2 || {
        echo "build.sh: npm install failed (is the npm registry reachable?)" >&2
        exit 1
    }
fi

mkdir -p dist
node componentize.mjs {{name}}.js wit {{world}} "$out.tmp"
# A component starts with "\0asm", version 0x0d, layer 1 (a core module has layer 0).
if [[ "$(head -c 8 "$out.tmp" | od -An -tx1 | tr -d ' \n')" != 0061736d0d000100 ]]; then
    echo "build.sh: $out.tmp is not a WebAssembly component" >&2
    exit 1
fi
mv "$out.tmp" "$out"
echo "$out: $(wc -c < "$out") bytes"
