//! {{name}}: a transfer-engine describer plugin.
//!
//! The policy: trim the description and collapse every run of whitespace
//! into one space; reject a description that contains a blocked word
//! (ignoring case) with `description_blocked`. Config example:
//! `{"blocked_words": ["casino"]}`; without a `blocked_words` key,
//! [`DEFAULT_BLOCKED_WORDS`] apply.
//!
//! The rule is plain Rust ([`Config`], [`rewrite_text`]), so `cargo test`
//! runs it on the host; the `component` module at the bottom is the
//! WebAssembly glue. Change `rewrite_text` (and `Config`) to write your own rule.

use serde::Deserialize;

/// The plugin's name, as its config errors give it.
const NAME: &str = "{{name}}";

/// The blocked words when the config gives no `blocked_words`.
pub const DEFAULT_BLOCKED_WORDS: &[&str] = &["casino"];

/// The operator's JSON. Unknown keys are refused, so that a misspelt key
/// cannot silently leave the default in force.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    blocked_words: Option<Vec<String>>,
}

/// The checked config: the blocked words, trimmed and in lower case.
#[derive(Debug)]
pub struct Config {
    blocked_words: Vec<String>,
}

impl Config {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format!("invalid {NAME} config: {e}"))?;
        let words = raw.blocked_words.unwrap_or_else(|| DEFAULT_BLOCKED_WORDS.iter().map(|w| w.to_string()).collect());
        // An empty word would be found in every description.
        if words.iter().any(|w| w.trim().is_empty()) {
            return Err(format!("invalid {NAME} config: blocked_words must be non-empty strings"));
        }
        Ok(Self { blocked_words: words.iter().map(|w| w.trim().to_lowercase()).collect() })
    }
}

/// Why a transfer is refused: a stable snake_case code and a sentence for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// The rule itself: the cleaned description, or a refusal.
pub fn rewrite_text(config: &Config, description: &str) -> Result<String, Refusal> {
    let cleaned = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let lowered = cleaned.to_lowercase();
    if let Some(word) = config.blocked_words.iter().find(|w| lowered.contains(w.as_str())) {
        return Err(Refusal { code: "description_blocked", message: format!("The description contains the blocked word \"{word}\".") });
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_collapsed_and_a_blocked_word_is_found_in_any_case() {
        let config = Config::from_json("{}").unwrap();
        assert_eq!(rewrite_text(&config, "  rent   for\tMarch \n"), Ok("rent for March".to_string()));
        assert_eq!(rewrite_text(&config, "   "), Ok(String::new()));
        assert_eq!(rewrite_text(&config, "CASINO winnings").unwrap_err().code, "description_blocked");
        let config = Config::from_json(r#"{"blocked_words": ["Lottery"]}"#).unwrap();
        assert!(rewrite_text(&config, "casino winnings").is_ok());
        assert!(rewrite_text(&config, "lottery ticket").is_err());
    }

    #[test]
    fn an_empty_blocked_word_or_an_unknown_key_is_refused() {
        assert!(Config::from_json(r#"{"blocked_words": [" "]}"#).is_err());
        assert!(Config::from_json(r#"{"blocked": ["casino"]}"#).is_err());
    }
}

/// The WebAssembly glue: the `describer` world of `wit/plugin.wit`, mapped onto the rule above.
#[cfg(target_arch = "wasm32")]
mod component {
    use std::sync::Mutex;

    use crate::{Config, rewrite_text};

    wit_bindgen::generate!({ world: "describer", path: "wit" });

    /// Set by `configure`. The engine configures every fresh instance before
    /// it calls `rewrite`, so each call sees exactly the operator's config.
    static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

    struct Plugin;

    impl Guest for Plugin {
        fn configure(config: String) -> Result<(), String> {
            let config = Config::from_json(&config)?;
            *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
            Ok(())
        }

        fn rewrite(description: String, _transfer: Transfer) -> Result<String, Rejection> {
            let reject = |code: &str, message: String| Rejection { code: code.to_string(), message };
            let guard = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
            let config = guard.as_ref().ok_or_else(|| reject("not_configured", "The plugin was not configured.".to_string()))?;
            rewrite_text(config, &description).map_err(|refusal| reject(refusal.code, refusal.message))
        }
    }

    export!(Plugin);
}
