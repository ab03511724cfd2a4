//! WebAssembly glue: maps the `describer` world onto [`crate::rules`].

use std::sync::Mutex;

use crate::rules::Rules;

wit_bindgen::generate!({
    world: "describer",
    path: "../../wit/0.1.0",
});

use transfer::plugin::host::{Level, log};

/// The configured rules. `None` until `configure` succeeds; the engine always
/// configures an instance before use, and until then the defaults apply.
static RULES: Mutex<Option<Rules>> = Mutex::new(None);

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let rules = Rules::from_json(&config).map_err(|e| e.to_string())?;
        log(Level::Info, &rules.summary());
        *RULES.lock().unwrap_or_else(|e| e.into_inner()) = Some(rules);
        Ok(())
    }

    fn rewrite(description: String, _transfer: Transfer) -> Result<String, Rejection> {
        let guard = RULES.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match guard.as_ref() {
            Some(rules) => rules.rewrite(&description),
            None => Rules::default().rewrite(&description),
        };
        outcome.map_err(|e| Rejection {
            code: e.code().to_string(),
            message: e.to_string(),
        })
    }
}

export!(Plugin);
