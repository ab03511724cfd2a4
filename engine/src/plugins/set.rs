//! The active plugins as one `Hooks` implementation. A set is immutable: the
//! registry builds a new one on every change and the processor swaps it in
//! between batches, so a batch runs on exactly one set.
//!
//! Policy fails closed: a fault in the describer, the converter or a
//! validator fails the transfer (`plugin_failed`). The one exception is a
//! validator its operator uploaded as `advisory`: its rejections and faults
//! are recorded (the decision says `advisory: true`) and the transfer goes on.
//!
//! Each plugin may have a shadow: another version of the same name and kind
//! that an operator is trying out (`plugins shadow`). It is asked right
//! after the active version, on the same input, whatever the active one
//! answered; its decision is recorded with role `shadow` and never enforced,
//! and its faults never fail the transfer. A shadow describer's text and a
//! shadow converter's amount are never used; their decision says `differs`
//! when they answered otherwise than the active version.
//!
//! A validator may have a canary: another version that decides in its place
//! for a sticky share of senders (`plugins canary`, see `rollback::bucket`).
//! Its decision is enforced like the active version's and recorded with role
//! `canary`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::bindings::types;
use super::rollback;
use super::{Fault, LoadedPlugin, guard};
use crate::domain::{Amount, Currency, Metadata, Money, Reason, Submission};
use crate::hooks::{self, AccountFacts, Context, ContextNeeds, Decision, HookError, HookPoint, Hooks, Role};

/// Longest rejection message kept from a plugin; longer ones are cut.
const PLUGIN_MESSAGE_CHARS_MAX: usize = 512;
/// Longest rejection code accepted from a plugin.
const PLUGIN_CODE_CHARS_MAX: usize = 64;

pub struct PluginSet {
    pub describer: Option<Arc<LoadedPlugin>>,
    pub converter: Option<Arc<LoadedPlugin>>,
    /// In the operator's order; the first rejection wins.
    pub validators: Vec<Arc<LoadedPlugin>>,
    /// A version running in shadow beside an active validator, by name.
    pub shadows: HashMap<String, Arc<LoadedPlugin>>,
    /// A version running in shadow beside the active describer, and converter.
    pub describer_shadow: Option<Arc<LoadedPlugin>>,
    pub converter_shadow: Option<Arc<LoadedPlugin>>,
    /// A version deciding in place of an active validator for some senders, by name.
    pub canaries: HashMap<String, Canary>,
    pub description_chars_max: usize,
    /// Bumped by the registry on every change; which set this is.
    pub generation: i64,
}

impl PluginSet {
    pub fn empty(description_chars_max: usize) -> Self {
        Self {
            describer: None,
            converter: None,
            validators: Vec::new(),
            shadows: HashMap::new(),
            describer_shadow: None,
            converter_shadow: None,
            canaries: HashMap::new(),
            description_chars_max,
            generation: 0,
        }
    }
}

/// A canary version and the share of senders it decides for.
pub struct Canary {
    pub plugin: Arc<LoadedPlugin>,
    /// 1 to 99.
    pub percent: u8,
}

impl Canary {
    fn decides_for(&self, s: &Submission) -> bool {
        rollback::bucket(&self.plugin.meta.name, self.plugin.meta.version, s.sender.get()) < self.percent
    }
}

fn currency(c: Currency) -> types::Currency {
    types::Currency { code: c.code().to_owned(), exponent: c.exponent() }
}

fn money(m: Money) -> types::Money {
    types::Money { amount_minor: m.amount.minor(), currency: currency(m.currency) }
}

fn metadata(m: &Metadata) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn transfer(s: &Submission, amount: Option<Amount>, description: Option<&str>) -> types::Transfer {
    types::Transfer {
        id: s.id.to_string(),
        sender_id: s.sender.get(),
        receiver_id: s.receiver.get(),
        currency: currency(s.currency),
        amount_minor: amount.map(Amount::minor),
        original: s.original().map(money),
        description: description.map(str::to_owned),
        submitted_at_ms: s.submitted_at.timestamp_millis(),
        metadata: metadata(&s.metadata),
    }
}

fn account(a: &AccountFacts) -> types::Account {
    types::Account {
        owner_id: a.owner.get(),
        balance_minor: a.balance_minor,
        floor_minor: a.floor_minor,
        opened_at_ms: a.opened_at.timestamp_millis(),
        metadata: metadata(&a.metadata),
    }
}

/// The part of the set's context one validator declared, in its order.
fn context_for(needs: &ContextNeeds, context: &Context) -> types::Context {
    let (sender, receiver) =
        if needs.accounts { (context.sender.as_ref().map(account), context.receiver.as_ref().map(account)) } else { (None, None) };
    let velocity = needs
        .windows
        .iter()
        .map(|window| {
            let total = context.total(*window);
            types::WindowTotal { window_seconds: window.seconds(), count: total.count, sum_minor: total.sum_minor }
        })
        .collect();
    types::Context { sender, receiver, velocity }
}

fn decision(
    plugin: &LoadedPlugin,
    hook: HookPoint,
    started: Instant,
    outcome: &str,
    code: Option<&str>,
    message: Option<String>,
) -> Decision {
    Decision {
        hook,
        plugin: plugin.meta.name.clone(),
        version: plugin.meta.version,
        sha256: hex::encode(plugin.meta.sha256),
        outcome: outcome.to_owned(),
        code: code.map(str::to_owned),
        message,
        duration_us: i32::try_from(started.elapsed().as_micros()).unwrap_or(i32::MAX),
        advisory: plugin.advisory,
        fault: None,
        role: Role::Active,
        differs: false,
    }
}

/// The decision for a fault: `failed`, with the fault's code.
fn failed(plugin: &LoadedPlugin, hook: HookPoint, started: Instant, fault: &Fault, reason: &Reason) -> Decision {
    Decision {
        fault: Some(fault.code().to_owned()),
        ..decision(plugin, hook, started, "failed", Some(&reason.code), Some(reason.message.clone()))
    }
}

/// A plugin's rejection, checked: a malformed code is nonsense, a long message is cut.
fn rejection(r: types::Rejection) -> Result<Reason, Fault> {
    let well_formed = r.code.len() <= PLUGIN_CODE_CHARS_MAX
        && r.code.starts_with(|c: char| c.is_ascii_lowercase())
        && r.code.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(Fault::Nonsense(format!(
            "rejection code {:?} is not snake_case of at most {PLUGIN_CODE_CHARS_MAX} characters",
            guard::clean(&r.code, 80)
        )));
    }
    Ok(Reason { code: r.code, message: guard::clean(&r.message, PLUGIN_MESSAGE_CHARS_MAX) })
}

/// One validator's verdict on a transfer, its rejection checked.
fn ask(plugin: &LoadedPlugin, seen: &types::Transfer, context: &Context) -> Result<Option<Reason>, Fault> {
    plugin.validate(seen, &context_for(&plugin.needs, context)).and_then(|verdict| verdict.map(rejection).transpose())
}

/// A validator's verdict on a submission with `amount` and `description`, as
/// the engine asks it (replay asks the same way).
pub fn verdict(
    plugin: &LoadedPlugin,
    s: &Submission,
    amount: Amount,
    description: Option<&str>,
    context: &Context,
) -> Result<Option<Reason>, Fault> {
    ask(plugin, &transfer(s, Some(amount), description), context)
}

/// The decision record of a validator's verdict, whatever it was.
fn validated(plugin: &LoadedPlugin, started: Instant, verdict: &Result<Option<Reason>, Fault>) -> Decision {
    match verdict {
        Ok(None) => decision(plugin, HookPoint::Validate, started, "allowed", None, None),
        Ok(Some(reason)) => decision(plugin, HookPoint::Validate, started, "rejected", Some(&reason.code), Some(reason.message.clone())),
        Err(fault) => failed(plugin, HookPoint::Validate, started, fault, &failure(plugin, fault)),
    }
}

/// The `plugin_failed` reason for a fault: names the plugin, version and cause.
fn failure(plugin: &LoadedPlugin, fault: &Fault) -> Reason {
    Reason { code: "plugin_failed".into(), message: format!("plugin {} {fault}", plugin.meta.label()) }
}

impl PluginSet {
    /// A describer's answer, checked: a text too long or with NUL is nonsense.
    fn rewrite(&self, plugin: &LoadedPlugin, description: &str, s: &Submission) -> Result<Result<String, Reason>, Fault> {
        plugin.rewrite(description, &transfer(s, s.amount(), Some(description))).and_then(|answer| match answer {
            Ok(text) if text.chars().count() > self.description_chars_max => {
                Err(Fault::Nonsense(format!("a description longer than {} characters", self.description_chars_max)))
            }
            // PostgreSQL text cannot hold NUL: stored as is, it would fail the batch on every retry.
            Ok(text) if text.contains('\0') => Err(Fault::Nonsense("a description with a NUL character".into())),
            Ok(text) => Ok(Ok(text)),
            Err(r) => rejection(r).map(Err),
        })
    }
}

/// The decision record of a describer's answer, whatever it was.
fn described(plugin: &LoadedPlugin, started: Instant, answer: &Result<Result<String, Reason>, Fault>) -> Decision {
    match answer {
        Ok(Ok(_)) => decision(plugin, HookPoint::Describe, started, "rewritten", None, None),
        Ok(Err(reason)) => decision(plugin, HookPoint::Describe, started, "rejected", Some(&reason.code), Some(reason.message.clone())),
        Err(fault) => failed(plugin, HookPoint::Describe, started, fault, &failure(plugin, fault)),
    }
}

/// A converter's answer, checked: the amount must be positive.
fn exchange(
    plugin: &LoadedPlugin,
    source: Money,
    target: Currency,
    seen: &types::Transfer,
) -> Result<Result<(Amount, types::Rate), Reason>, Fault> {
    plugin.convert(&money(source), &currency(target), seen).and_then(|answer| match answer {
        Ok(c) => match Amount::from_minor(c.amount_minor) {
            Ok(amount) => Ok(Ok((amount, c.rate))),
            Err(_) => Err(Fault::Nonsense(format!("a converted amount of {} (must be positive)", c.amount_minor))),
        },
        Err(r) => rejection(r).map(Err),
    })
}

/// The decision record of a converter's answer, whatever it was.
fn converted(
    plugin: &LoadedPlugin,
    started: Instant,
    source: Money,
    target: Currency,
    answer: &Result<Result<(Amount, types::Rate), Reason>, Fault>,
) -> Decision {
    match answer {
        Ok(Ok((amount, rate))) => {
            // The rate as exact decimal text: {9215, 4} is "0.9215".
            let rate = crate::domain::format_minor(rate.mantissa, rate.scale);
            let message = format!("{} {} -> {} {} at rate {rate}", source.amount.minor(), source.currency, amount.minor(), target);
            decision(plugin, HookPoint::Convert, started, "converted", None, Some(message))
        }
        Ok(Err(reason)) => decision(plugin, HookPoint::Convert, started, "rejected", Some(&reason.code), Some(reason.message.clone())),
        Err(fault) => failed(plugin, HookPoint::Convert, started, fault, &failure(plugin, fault)),
    }
}

impl Hooks for PluginSet {
    fn describe(&self, description: &str, s: &Submission, decisions: &mut Vec<Decision>) -> Result<String, HookError> {
        let Some(plugin) = &self.describer else { return Ok(description.to_owned()) };
        let started = Instant::now();
        let answer = self.rewrite(plugin, description, s);
        decisions.push(described(plugin, started, &answer));
        if let Some(shadow) = &self.describer_shadow {
            let started = Instant::now();
            let shadowed = self.rewrite(shadow, description, s);
            let differs = matches!((&answer, &shadowed), (Ok(Ok(a)), Ok(Ok(b))) if a != b);
            decisions.push(Decision { role: Role::Shadow, differs, ..described(shadow, started, &shadowed) });
        }
        match answer {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(reason)) => Err(HookError::Reject(reason)),
            // Never the unreviewed text: a describer is never advisory, so a fault fails the transfer.
            Err(fault) => Err(HookError::Fail(failure(plugin, &fault))),
        }
    }

    fn convert(
        &self,
        source: Money,
        target: Currency,
        s: &Submission,
        description: Option<&str>,
        decisions: &mut Vec<Decision>,
    ) -> Result<Amount, HookError> {
        let Some(plugin) = &self.converter else { return hooks::convert_without_rates(source, target) };
        let seen = transfer(s, None, description);
        let started = Instant::now();
        let answer = exchange(plugin, source, target, &seen);
        decisions.push(converted(plugin, started, source, target, &answer));
        if let Some(shadow) = &self.converter_shadow {
            let started = Instant::now();
            let shadowed = exchange(shadow, source, target, &seen);
            let differs = matches!((&answer, &shadowed), (Ok(Ok((a, _))), Ok(Ok((b, _)))) if a != b);
            decisions.push(Decision { role: Role::Shadow, differs, ..converted(shadow, started, source, target, &shadowed) });
        }
        match answer {
            Ok(Ok((amount, _))) => Ok(amount),
            Ok(Err(reason)) => Err(HookError::Reject(reason)),
            // Without a converted amount there is nothing to move (and a converter is never advisory).
            Err(fault) => Err(HookError::Fail(failure(plugin, &fault))),
        }
    }

    fn needs(&self) -> ContextNeeds {
        let canaries = self.canaries.values().map(|c| &c.plugin);
        ContextNeeds::union(self.validators.iter().chain(self.shadows.values()).chain(canaries).map(|v| &v.needs))
    }

    fn validate(
        &self,
        s: &Submission,
        amount: Amount,
        description: Option<&str>,
        context: &Context,
        decisions: &mut Vec<Decision>,
    ) -> Result<(), HookError> {
        let seen = transfer(s, Some(amount), description);
        for active in &self.validators {
            let (plugin, role) = match self.canaries.get(&active.meta.name) {
                Some(canary) if canary.decides_for(s) => (&canary.plugin, Role::Canary),
                _ => (active, Role::Active),
            };
            let started = Instant::now();
            let verdict = ask(plugin, &seen, context);
            decisions.push(Decision { role, ..validated(plugin, started, &verdict) });
            // Asked before the verdict takes effect, so the shadow is compared
            // on every transfer the name decides (but never with itself).
            if let Some(shadow) = self.shadows.get(&plugin.meta.name).filter(|shadow| shadow.meta.version != plugin.meta.version) {
                let started = Instant::now();
                let shadowed = ask(shadow, &seen, context);
                decisions.push(Decision { role: Role::Shadow, ..validated(shadow, started, &shadowed) });
            }
            // An advisory validator's rejections and faults are recorded, not enforced.
            match verdict {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) if plugin.advisory => {}
                Ok(Some(reason)) => return Err(HookError::Reject(reason)),
                Err(fault) => return Err(HookError::Fail(failure(plugin, &fault))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_rejection_message_is_cut_and_its_control_characters_escaped() {
        let reason = rejection(types::Rejection { code: "too_big".into(), message: format!("a\0b{}", "x".repeat(1_000)) }).unwrap();
        // 512 characters kept; the NUL became the 5 characters `\u{0}`, and "…" marks the cut.
        assert_eq!(reason.message.chars().count(), PLUGIN_MESSAGE_CHARS_MAX + 4 + 1);
        assert!(reason.message.ends_with("x…"));
        assert!(reason.message.starts_with("a\\u{0}b") && !reason.message.contains('\0'));
        assert!(matches!(rejection(types::Rejection { code: "Bad Code".into(), message: String::new() }), Err(Fault::Nonsense(_))));
    }
}
