//! The three policy hooks every transfer passes, in this order: description
//! rules, currency conversion (only when the client gave another currency),
//! then validation. `run` applies them to a submission and yields the
//! ledger's verdict, with a record of what each plugin decided.
//!
//! `plugins::PluginSet` implements them over sandboxed WebAssembly
//! components; an empty set accepts everything as given.
//!
//! Validators that declared context (`context`) are not run here but by
//! the ledger, under the batch's account locks (`Verdict::Validate`).

pub mod context;

pub use context::{AccountFacts, BatchDebits, Context, ContextNeeds, NeedsError, VelocityWindow, WindowTotal};

use crate::domain::{Amount, Currency, Money, Reason, Rejection, Requested, Submission, TransferId};
use crate::ledger::Verdict;

/// The hooks a batch runs on, swapped as a whole between batches.
pub type HookSet = std::sync::Arc<dyn Hooks>;

/// A hook's answer when it does not let the transfer through unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookError {
    /// The policy refused the transfer: it becomes `rejected`.
    Reject(Reason),
    /// The hook itself failed (trap, fuel or memory exhausted, nonsense): it becomes `failed`.
    Fail(Reason),
}

/// Which hook a decision was made in.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    Describe,
    Convert,
    Validate,
}

impl HookPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Describe => "describe",
            Self::Convert => "convert",
            Self::Validate => "validate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Describe, Self::Convert, Self::Validate].into_iter().find(|h| h.as_str() == s)
    }
}

/// What one plugin decided for one transfer: recorded with the transfer, in
/// the same transaction, so every outcome can be traced to an exact plugin.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub hook: HookPoint,
    pub plugin: String,
    pub version: i32,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// allowed, rewritten, converted, rejected or failed.
    pub outcome: String,
    pub code: Option<String>,
    pub message: Option<String>,
    pub duration_us: i32,
    /// The plugin was uploaded as advisory (a validator in shadow mode): its
    /// `rejected` or `failed` did not stop the transfer. Absent (false) for
    /// every binding plugin, and in records written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advisory: bool,
    /// With `failed`: what stopped the plugin, one of `fuel_exhausted`,
    /// `wall_clock_backstop`, `memory_exceeded`, `trap`, `nonsense`,
    /// `config_refused`, `instantiate_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Which version decided: the name's active one, a canary in its place,
    /// or a shadow beside it (recorded, never enforced). Records written before roles existed have
    /// none and were all `active`.
    #[serde(default)]
    pub role: Role,
    /// A shadow describer or converter that answered as the active version
    /// did (both rewrote, both converted) but with another text or amount.
    /// The shadow's text is never stored: it may mask less.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub differs: bool,
}

/// The part a plugin version played in a decision.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The name's active version: its decision is enforced.
    #[default]
    Active,
    /// Run beside the active version (`plugins shadow`): recorded, never
    /// enforced, and its faults never fail a transfer.
    Shadow,
    /// Decided in place of the active version for a sticky share of senders
    /// (`plugins canary`): enforced like the active version.
    Canary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Shadow => "shadow",
            Self::Canary => "canary",
        }
    }
}

/// The policy hooks. Implementations must be cheap to call and must never
/// panic; each appends what a plugin decided (if one did) to `decisions`.
pub trait Hooks: Send + Sync {
    /// Returns the description to store (rewritten), or refuses it.
    fn describe(&self, description: &str, submission: &Submission, decisions: &mut Vec<Decision>) -> Result<String, HookError>;
    /// Converts `source` into `target` minor units. `description` is the
    /// describer's answer (never the unreviewed text).
    fn convert(
        &self,
        source: Money,
        target: Currency,
        submission: &Submission,
        description: Option<&str>,
        decisions: &mut Vec<Decision>,
    ) -> Result<Amount, HookError>;
    /// Decides whether the transfer (with its final amount) may go ahead,
    /// given the facts `needs` asked for (empty when it asks for none).
    fn validate(
        &self,
        submission: &Submission,
        amount: Amount,
        description: Option<&str>,
        context: &Context,
        decisions: &mut Vec<Decision>,
    ) -> Result<(), HookError>;
    /// What the validators need beside the transfer. Anything at all, and
    /// validation moves from `run` into the ledger's commit.
    fn needs(&self) -> ContextNeeds {
        ContextNeeds::default()
    }
}

/// The code a transfer fails with when the engine itself failed while
/// running its hooks (a bug in host code, never a plugin's doing: plugin
/// faults are values), or committed it without them.
pub const HOOK_FAILED_CODE: &str = "hook_failed";

/// Runs hook code for one transfer; a panic in it (a bug in host code) fails
/// only this transfer, with `hook_failed`, instead of stopping the processor.
pub fn unless_panicked<T>(transfer_id: TransferId, run: impl FnOnce() -> T) -> Result<T, Reason> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).map_err(|_| {
        tracing::error!(transfer_id = %transfer_id, "The policy hooks panicked; failing the transfer.");
        Reason { code: HOOK_FAILED_CODE.into(), message: "the engine failed while running the policy hooks".into() }
    })
}

/// Where `run` leaves validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Validate now, with an empty context: the validators need none.
    Now,
    /// Leave it to the commit (`Verdict::Validate`), which supplies the context.
    InCommit,
}

impl Validation {
    pub fn for_needs(needs: &ContextNeeds) -> Self {
        if needs.is_empty() { Self::Now } else { Self::InCommit }
    }
}

/// Conversion with no converter: the same currency is 1:1, any other is refused.
pub fn convert_without_rates(source: Money, target: Currency) -> Result<Amount, HookError> {
    if source.currency == target {
        return Ok(source.amount);
    }
    let rejection = Rejection::ConversionUnavailable { from: source.currency.code().into(), to: target.code().into() };
    Err(HookError::Reject(rejection.to_reason()))
}

/// What the hooks made of a submission: the ledger's verdict, plus the
/// (possibly rewritten) description and the final amount when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOutcome {
    pub verdict: Verdict,
    pub description: Option<String>,
    pub amount: Option<Amount>,
    /// What each plugin decided, in the order the hooks ran.
    pub decisions: Vec<Decision>,
}

/// Runs the hooks in their fixed order; the first refusal or failure wins.
/// With `Validation::InCommit`, a transfer the first hooks let through comes
/// out as `Verdict::Validate`; with `Now`, validators see an empty context.
pub fn run(hooks: &dyn Hooks, submission: &Submission, validation: Validation) -> HookOutcome {
    match validation {
        Validation::Now => run_in_context(hooks, submission, &Context::default()),
        Validation::InCommit => run_hooks(hooks, submission, None),
    }
}

/// Runs all the hooks, the validators with `context` (offline testing).
pub fn run_in_context(hooks: &dyn Hooks, submission: &Submission, context: &Context) -> HookOutcome {
    run_hooks(hooks, submission, Some(context))
}

fn run_hooks(hooks: &dyn Hooks, submission: &Submission, context: Option<&Context>) -> HookOutcome {
    let mut description = submission.description.clone();
    let mut amount = submission.amount();
    let mut decisions = Vec::new();
    let verdict = match decide(hooks, submission, context, &mut description, &mut amount, &mut decisions) {
        Ok(amount) if context.is_none() => Verdict::Validate(amount),
        Ok(amount) => Verdict::Apply(amount),
        Err(HookError::Reject(reason)) => Verdict::Reject(reason),
        Err(HookError::Fail(reason)) => Verdict::Fail(reason),
    };
    HookOutcome { verdict, description, amount, decisions }
}

/// The hook sequence; records the rewritten description and the converted
/// amount as soon as each is known, so a later refusal still stores them (a
/// description the describer did not accept is not stored at all).
fn decide(
    hooks: &dyn Hooks,
    s: &Submission,
    context: Option<&Context>,
    description: &mut Option<String>,
    amount: &mut Option<Amount>,
    decisions: &mut Vec<Decision>,
) -> Result<Amount, HookError> {
    if let Some(original) = &s.description {
        // Nothing of the client's text is kept until the describer has
        // answered: if it refuses or faults, the transfer is stored without a
        // description rather than with text no policy reviewed (or masked).
        *description = None;
        *description = Some(hooks.describe(original, s, decisions)?);
    }
    let converted = match s.requested {
        Requested::Amount(a) => a,
        // Only a different currency needs the converter.
        Requested::Original(source) if source.currency == s.currency => source.amount,
        Requested::Original(source) => hooks.convert(source, s.currency, s, description.as_deref(), decisions)?,
    };
    *amount = Some(converted);
    if let Some(context) = context {
        hooks.validate(s, converted, description.as_deref(), context, decisions)?;
    }
    Ok(converted)
}
