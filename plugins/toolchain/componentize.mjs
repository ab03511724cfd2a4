// Builds a JavaScript plugin into a component with componentize-js's API:
//   node componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm
// WASI features that need an interface the engine does not offer are off:
// `http` and `fetch-event` import wasi:http. stdio, random and clocks stay:
// the engine's WASI gives them, deterministically (see the plugins README).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const [sourcePath, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs SOURCE.js WIT_DIR WORLD OUT.wasm');
  process.exit(2);
}
const { component } = await componentize({ sourcePath, witPath, worldName, disableFeatures: ['http', 'fetch-event'] });
await writeFile(out, component);
