//! Plugin settings of the previous release that this one removed, and what
//! happens to a settings file that still has them. Unknown keys stay an
//! error; these are known, so each gets a deliberate answer:
//!
//! - `plugin_failure_mode = "closed"`: what the engine now always does;
//!   accepted and ignored, with a warning at start-up.
//! - `plugin_failure_mode = "open"`: refused at start-up. Letting faults
//!   through is now a per-plugin choice (`"advisory": true` at upload, for
//!   validators only); the engine will not widen it to every plugin.
//! - `plugin_call_ms_max`, `plugin_configure_ms_max`: the limit is fuel now
//!   (`plugin_call_fuel_max`, `plugin_configure_fuel_max`), with a fixed
//!   wall-clock backstop; accepted and ignored, with a warning.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::Settings;

/// What `plugin_failure_mode` may still say: only what is now the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovedFailureMode {
    Closed,
}

pub const FAILURE_MODE_OPEN_REFUSED: &str = "plugin_failure_mode = \"open\" was removed: a faulting plugin now always fails its \
     transfer (policy fails closed). Remove the setting (TRANSFER_ENGINE_PLUGIN_FAILURE_MODE) to start. To let one validator's \
     rejections and faults through while they are recorded, upload that validator with \"advisory\": true";

impl<'de> Deserialize<'de> for RemovedFailureMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "closed" => Ok(Self::Closed),
            "open" => Err(D::Error::custom(FAILURE_MODE_OPEN_REFUSED)),
            other => Err(D::Error::custom(format!(
                "plugin_failure_mode = {other:?}: the setting was removed (policy always fails closed); remove it"
            ))),
        }
    }
}

/// One warning per removed setting still present, for the log at start-up.
pub fn removed_in_use(settings: &Settings) -> Vec<String> {
    let mut warnings = Vec::new();
    if settings.plugin_failure_mode.is_some() {
        warnings.push(
            "plugin_failure_mode = \"closed\" is ignored: the setting was removed and policy always fails closed; remove it".to_owned(),
        );
    }
    if let Some(ms) = settings.plugin_call_ms_max {
        warnings.push(format!(
            "plugin_call_ms_max = {ms} is ignored: a plugin call is limited by fuel, plugin_call_fuel_max = {} (deterministic, \
             unlike time), with a fixed wall-clock backstop of {} ms; remove it",
            settings.plugin_call_fuel_max,
            super::sandbox::WALL_CLOCK_BACKSTOP_MS
        ));
    }
    if let Some(ms) = settings.plugin_configure_ms_max {
        warnings.push(format!(
            "plugin_configure_ms_max = {ms} is ignored: instantiation and configure are limited by fuel, \
             plugin_configure_fuel_max = {}; remove it",
            settings.plugin_configure_fuel_max
        ));
    }
    warnings
}

#[cfg(test)]
// figment's Jail closures return its own (large) error type; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_previous_release_settings_file_with_failure_mode_closed_starts_with_a_warning() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("engine.toml", "plugin_failure_mode = \"closed\"\nplugin_call_ms_max = 5\n")?;
            let settings = Settings::load(Some(Path::new("engine.toml"))).unwrap();
            let warnings = removed_in_use(&settings);
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(warnings[0].contains("plugin_failure_mode") && warnings[1].contains("plugin_call_fuel_max"), "{warnings:?}");
            assert!(removed_in_use(&Settings::default()).is_empty());
            Ok(())
        });
    }

    #[test]
    fn failure_mode_open_is_refused_at_start_up_naming_the_setting_and_the_alternative() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("engine.toml", "plugin_failure_mode = \"open\"\n")?;
            let error = Settings::load(Some(Path::new("engine.toml"))).unwrap_err().to_string();
            assert!(error.contains("plugin_failure_mode") && error.contains("advisory"), "{error}");
            jail.clear_env();
            jail.create_file("empty.toml", "")?;
            jail.set_env("TRANSFER_ENGINE_PLUGIN_FAILURE_MODE", "open");
            let error = Settings::load(Some(Path::new("empty.toml"))).unwrap_err().to_string();
            assert!(error.contains("plugin_failure_mode = \"open\" was removed"), "{error}");
            // Unknown keys are still an error.
            jail.set_env("TRANSFER_ENGINE_PLUGIN_FAILURE_MODE", "closed");
            jail.create_file("typo.toml", "plugin_call_fuel_mox = 5\n")?;
            assert!(Settings::load(Some(Path::new("typo.toml"))).is_err());
            Ok(())
        });
    }
}
