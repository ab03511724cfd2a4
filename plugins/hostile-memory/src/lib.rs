//! Hostile fixture for the host's sandbox tests: `validate` allocates 1 MiB
//! chunks forever, writing every byte, until the store's memory limit traps
//! it (or, with no limit, until 4 GiB of linear memory run out and it aborts).
#![cfg(target_arch = "wasm32")]

use std::hint::black_box;

wit_bindgen::generate!({ world: "validator", path: "../../wit/0.1.0" });

const CHUNK_BYTES: usize = 1 << 20;

struct Plugin;

impl Guest for Plugin {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn validate(_transfer: Transfer) -> Verdict {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
            // Write every byte, with a non-zero value, so the memory is really
            // used; vec![0; n] may take already-zero fresh pages without writing.
            chunk.resize(CHUNK_BYTES, 0xA5);
            hoard.push(black_box(chunk));
        }
    }
}

export!(Plugin);
