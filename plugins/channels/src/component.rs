//! WebAssembly glue: maps the 0.2.0 `validator` world onto [`crate::policy`].

use std::sync::Mutex;

use crate::policy::Channels;

use transfer_plugin::validator::{Context, Guest, Needs, Rejection, Transfer, Verdict};
use transfer_plugin::{Level, log};

/// The checked config. `None` until `configure` succeeds; the engine always
/// configures an instance before use, and until then the empty config
/// applies (it blocks nothing, as `{}` does).
static CHANNELS: Mutex<Option<Channels>> = Mutex::new(None);

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<Needs, String> {
        let channels = Channels::from_json(&config).map_err(|e| e.to_string())?;
        log(Level::Info, &channels.summary());
        let needs = channels.needs();
        *CHANNELS.lock().unwrap_or_else(|e| e.into_inner()) = Some(channels);
        Ok(Needs {
            accounts: needs.accounts,
            velocity_windows_seconds: needs.velocity_windows_seconds,
        })
    }

    fn validate(transfer: Transfer, context: Context) -> Verdict {
        let sender = context.sender.as_ref().map(|a| a.metadata.as_slice());
        let receiver = context.receiver.as_ref().map(|a| a.metadata.as_slice());
        let guard = CHANNELS.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match guard.as_ref() {
            Some(channels) => channels.check(&transfer.metadata, sender, receiver),
            None => Channels::default().check(&transfer.metadata, sender, receiver),
        };
        match outcome {
            Ok(()) => Verdict::Allow,
            Err(refusal) => Verdict::Reject(Rejection {
                code: refusal.code().to_string(),
                message: refusal.to_string(),
            }),
        }
    }
}

transfer_plugin::validator::export_validator!(Plugin);
