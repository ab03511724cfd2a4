//! Hostile fixture for the host's isolation tests. `validate` keeps the
//! previous transfer (id and description) in a global and rejects every
//! transfer with a message that carries it, so a host that reuses one
//! instance across transfers leaks one customer's data into another's
//! rejection. It also tries to forge log lines (a newline followed by a fake
//! record, an ANSI escape) and to flood the log, and `configure` refuses a
//! config of `"refuse"` with a long, multi-line error.
#![cfg(target_arch = "wasm32")]

use std::sync::Mutex;

wit_bindgen::generate!({ world: "validator", path: "../../wit/0.1.0" });

use transfer::plugin::host::{Level, log};

/// (calls so far, the previous transfer's id and description): what must not survive a call.
static SEEN: Mutex<(u64, Option<String>)> = Mutex::new((0, None));

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        if config.contains("refuse") {
            return Err(format!("refused\nlevel=ERROR msg=\"forged by configure\"\u{1b}[2J{}", "x".repeat(10_000)));
        }
        Ok(())
    }

    fn validate(transfer: Transfer) -> Verdict {
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        seen.0 += 1;
        let previous = seen.1.replace(format!("{} {}", transfer.id, transfer.description.clone().unwrap_or_default()));
        log(Level::Error, "hostile-state\n2026-01-01T00:00:00Z ERROR transfer_engine: forged line\u{1b}[31m\r");
        for line in 0..40 {
            log(Level::Info, &format!("hostile-state flood {line}"));
        }
        Verdict::Reject(Rejection {
            code: "state_seen".into(),
            message: format!("call {} of this instance; previous transfer: {}", seen.0, previous.as_deref().unwrap_or("none")),
        })
    }
}

export!(Plugin);
