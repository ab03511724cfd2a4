//! The three policy hooks every transfer passes, in this order: description
//! rules, currency conversion (only when the client gave another currency),
//! then validation. `run` applies them to a submission and yields the
//! ledger's verdict.
//!
//! `PassThrough` is the built-in policy (accept as given); the plugin host
//! provides the same interface over sandboxed WebAssembly components.

use crate::domain::{Amount, Currency, Money, Reason, Rejection, Requested, Submission};
use crate::ledger::Verdict;

/// The hooks a batch runs on, swapped as a whole between batches.
pub type HookSet = std::sync::Arc<dyn Hooks>;

/// A hook's answer when it does not let the transfer through unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookError {
    /// The policy refused the transfer: it becomes `rejected`.
    Reject(Reason),
    /// The hook itself failed (trap, timeout, nonsense): it becomes `failed`.
    Fail(Reason),
}

/// The policy hooks. Implementations must be cheap to call and must never panic.
pub trait Hooks: Send + Sync {
    /// Returns the description to store (rewritten), or refuses it.
    fn describe(&self, description: &str, submission: &Submission) -> Result<String, HookError>;
    /// Converts `source` into `target` minor units.
    fn convert(
        &self,
        source: Money,
        target: Currency,
        submission: &Submission,
    ) -> Result<Amount, HookError>;
    /// Decides whether the transfer (with its final amount) may go ahead.
    fn validate(
        &self,
        submission: &Submission,
        amount: Amount,
        description: Option<&str>,
    ) -> Result<(), HookError>;
}

/// Accepts everything as given; converts only between equal currencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThrough;

impl Hooks for PassThrough {
    fn describe(&self, description: &str, _: &Submission) -> Result<String, HookError> {
        Ok(description.to_owned())
    }

    fn convert(
        &self,
        source: Money,
        target: Currency,
        _: &Submission,
    ) -> Result<Amount, HookError> {
        if source.currency == target {
            return Ok(source.amount);
        }
        let rejection = Rejection::ConversionUnavailable {
            from: source.currency.code().into(),
            to: target.code().into(),
        };
        Err(HookError::Reject(rejection.to_reason()))
    }

    fn validate(&self, _: &Submission, _: Amount, _: Option<&str>) -> Result<(), HookError> {
        Ok(())
    }
}

/// What the hooks made of a submission: the ledger's verdict, plus the
/// (possibly rewritten) description and the final amount when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOutcome {
    pub verdict: Verdict,
    pub description: Option<String>,
    pub amount: Option<Amount>,
}

/// Runs the hooks in their fixed order; the first refusal or failure wins.
pub fn run(hooks: &dyn Hooks, submission: &Submission) -> HookOutcome {
    let mut description = submission.description.clone();
    let mut amount = submission.amount();
    let decided = decide(hooks, submission, &mut description, &mut amount);
    let verdict = match decided {
        Ok(amount) => Verdict::Apply(amount),
        Err(HookError::Reject(reason)) => Verdict::Reject(reason),
        Err(HookError::Fail(reason)) => Verdict::Fail(reason),
    };
    HookOutcome {
        verdict,
        description,
        amount,
    }
}

/// The hook sequence; records the rewritten description and the converted
/// amount as soon as each is known, so a later refusal still stores them.
fn decide(
    hooks: &dyn Hooks,
    s: &Submission,
    description: &mut Option<String>,
    amount: &mut Option<Amount>,
) -> Result<Amount, HookError> {
    if let Some(original) = &s.description {
        *description = Some(hooks.describe(original, s)?);
    }
    let converted = match s.requested {
        Requested::Amount(a) => a,
        Requested::Original(source) => hooks.convert(source, s.currency, s)?,
    };
    *amount = Some(converted);
    hooks.validate(s, converted, description.as_deref())?;
    Ok(converted)
}
