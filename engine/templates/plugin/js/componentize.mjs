// Builds a JavaScript plugin into a WebAssembly component with
// componentize-js's API (build.sh runs it):
//   node componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm
// The `http` and `fetch-event` features are off because they import
// wasi:http, which the engine does not offer (it refuses such an upload).
// stdio, random and clocks stay: the engine's WASI gives them, deterministically.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const [sourcePath, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm');
  process.exit(2);
}
const { component } = await componentize({ sourcePath, witPath, worldName, disableFeatures: ['http', 'fetch-event'] });
await writeFile(out, component);
