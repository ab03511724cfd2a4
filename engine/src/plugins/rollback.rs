//! Canaries' sticky split, and the guard that withdraws a faulting version.
//!
//! A canary decides for a share of senders chosen by a stable hash, so a
//! sender's transfers always go the same way for a given canary, on every
//! engine and across restarts; raising its percent keeps every sender it had.
//!
//! The guard counts, over a sliding window, the calls and faults of every
//! watched version: a running canary, and a version activated within
//! `plugin_rollback_recent_minutes` that replaced an older one. Past its
//! fault rate (with at least `plugin_rollback_calls_min` calls in the window)
//! the processor asks the registry to withdraw it. Each engine judges the
//! traffic it processed; the withdrawal itself is one database change every
//! engine follows.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::domain::{format_minor, parse_decimal_minor};
use crate::hooks::{Decision, Role};

/// Sender buckets a canary's percent counts.
const BUCKETS: u64 = 100;

/// The bucket (0..100) of `sender` for version `version` of `name`: the first
/// 8 bytes of SHA-256 of `name:version:sender`, big-endian, modulo 100. The
/// canary decides for the senders whose bucket is below its percent. Written
/// out so an operator can tell which senders a canary will see.
pub fn bucket(name: &str, version: i32, sender: i64) -> u8 {
    let digest = Sha256::digest(format!("{name}:{version}:{sender}"));
    let head = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"));
    u8::try_from(head % BUCKETS).expect("below 100")
}

/// A share of calls that faulted, in parts per million: exact, no float.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultRate(u32);

impl FaultRate {
    pub const PPM_MAX: u32 = 1_000_000;
    /// Decimal places `parse` accepts: a millionth.
    const DIGITS: u8 = 6;

    pub fn from_ppm(ppm: u32) -> Option<Self> {
        (ppm <= Self::PPM_MAX).then_some(Self(ppm))
    }

    /// A fraction from 0 to 1 as decimal text, such as "0.05".
    pub fn parse(text: &str) -> Result<Self, String> {
        let refused = || format!("a fault rate is a fraction from 0 to 1 with at most 6 decimals, such as \"0.05\"; not {text:?}");
        let ppm = parse_decimal_minor(text, Self::DIGITS).map_err(|_| refused())?;
        u32::try_from(ppm).ok().and_then(Self::from_ppm).ok_or_else(refused)
    }

    pub fn ppm(self) -> u32 {
        self.0
    }

    /// Whether `faults` of `calls` is more than this rate.
    pub fn exceeded_by(self, calls: u64, faults: u64) -> bool {
        u128::from(faults) * u128::from(Self::PPM_MAX) > u128::from(self.0) * u128::from(calls)
    }
}

impl fmt::Display for FaultRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format_minor(i64::from(self.0), Self::DIGITS);
        f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
    }
}

impl serde::Serialize for FaultRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FaultRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How the guard judges (from the settings).
#[derive(Clone, Copy, Debug)]
pub struct RollbackSettings {
    pub window: Duration,
    /// Fewer calls than this in the window prove nothing.
    pub calls_min: u64,
    /// For recent activations, and canaries started without their own.
    pub fault_rate_max: FaultRate,
    /// How long after its activation a version is watched (zero: never).
    pub recent: Duration,
}

impl Default for RollbackSettings {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), calls_min: 20, fault_rate_max: FaultRate(50_000), recent: Duration::from_secs(10 * 60) }
    }
}

/// What a watched version is, and what withdrawing it means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A running canary: withdrawing it stops it.
    Canary { id: i64 },
    /// A recent activation: withdrawing it makes `replaced_version` active again.
    Activation { activated_at: DateTime<Utc>, replaced_version: i32, watched_until: DateTime<Utc> },
}

/// A version the guard watches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Watch {
    pub name: String,
    pub version: i32,
    pub subject: Subject,
    pub fault_rate_max: FaultRate,
}

impl Watch {
    /// The role its decisions are recorded with.
    pub fn role(&self) -> Role {
        match self.subject {
            Subject::Canary { .. } => Role::Canary,
            Subject::Activation { .. } => Role::Active,
        }
    }

    fn watched_at(&self, now: DateTime<Utc>) -> bool {
        match self.subject {
            Subject::Canary { .. } => true,
            Subject::Activation { watched_until, .. } => now < watched_until,
        }
    }
}

/// A watched version whose fault rate passed its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trip {
    pub watch: Watch,
    /// Calls and faults in the window.
    pub calls: u64,
    pub faults: u64,
    pub window: Duration,
}

/// Calls and faults per second of the window, oldest first.
#[derive(Default)]
struct Tally {
    seconds: VecDeque<(u64, u64, u64)>,
    tripped: bool,
}

pub struct Guard {
    settings: RollbackSettings,
    tallies: HashMap<Watch, Tally>,
}

impl Guard {
    pub fn new(settings: RollbackSettings) -> Self {
        Self { settings, tallies: HashMap::new() }
    }

    /// Lets a watch that tripped trip again (its withdrawal failed).
    pub fn rearm(&mut self, watch: &Watch) {
        if let Some(tally) = self.tallies.get_mut(watch) {
            tally.tripped = false;
        }
    }

    /// Counts the decisions of watched versions (`now_s`: seconds on a
    /// monotonic clock) and returns each version that has just passed its
    /// limit; a version trips once per watch.
    pub fn observe<'a>(
        &mut self,
        watches: &[Watch],
        decisions: impl IntoIterator<Item = &'a Decision>,
        now: DateTime<Utc>,
        now_s: u64,
    ) -> Vec<Trip> {
        self.tallies.retain(|watch, _| watches.contains(watch));
        let watched: HashMap<(&str, i32, Role), &Watch> =
            watches.iter().filter(|w| w.watched_at(now)).map(|w| ((w.name.as_str(), w.version, w.role()), w)).collect();
        if watched.is_empty() {
            return Vec::new();
        }
        for d in decisions {
            let Some(watch) = watched.get(&(d.plugin.as_str(), d.version, d.role)) else { continue };
            let tally = self.tallies.entry((*watch).clone()).or_default();
            match tally.seconds.back_mut() {
                Some((second, calls, faults)) if *second == now_s => {
                    *calls += 1;
                    *faults += u64::from(d.fault.is_some());
                }
                _ => tally.seconds.push_back((now_s, 1, u64::from(d.fault.is_some()))),
            }
        }
        let window_s = self.settings.window.as_secs().max(1);
        let mut trips = Vec::new();
        for (watch, tally) in &mut self.tallies {
            while tally.seconds.front().is_some_and(|(second, _, _)| second + window_s <= now_s) {
                tally.seconds.pop_front();
            }
            let (calls, faults) = tally.seconds.iter().fold((0, 0), |(c, f), (_, calls, faults)| (c + calls, f + faults));
            if !tally.tripped && calls >= self.settings.calls_min && watch.fault_rate_max.exceeded_by(calls, faults) {
                tally.tripped = true;
                trips.push(Trip { watch: watch.clone(), calls, faults, window: self.settings.window });
            }
        }
        trips
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookPoint;

    fn decision(version: i32, role: Role, fault: bool) -> Decision {
        Decision {
            hook: HookPoint::Validate,
            plugin: "limits".into(),
            version,
            sha256: String::new(),
            outcome: if fault { "failed" } else { "allowed" }.into(),
            code: None,
            message: None,
            duration_us: 1,
            advisory: false,
            fault: fault.then(|| "trap".into()),
            role,
            differs: false,
        }
    }

    fn canary(version: i32) -> Watch {
        Watch { name: "limits".into(), version, subject: Subject::Canary { id: 7 }, fault_rate_max: FaultRate::parse("0.1").unwrap() }
    }

    fn settings() -> RollbackSettings {
        RollbackSettings { window: Duration::from_secs(10), calls_min: 10, ..RollbackSettings::default() }
    }

    #[test]
    fn a_fault_rate_is_read_and_written_as_exact_decimal_text() {
        assert_eq!(FaultRate::parse("0.05").unwrap().ppm(), 50_000);
        assert_eq!(FaultRate::parse("1").unwrap().ppm(), 1_000_000);
        assert_eq!(FaultRate::parse("0.000001").unwrap().to_string(), "0.000001");
        assert_eq!(FaultRate::parse("0.25").unwrap().to_string(), "0.25");
        assert_eq!(FaultRate::parse("0").unwrap().to_string(), "0");
        for bad in ["1.5", "-0.1", "0.0000001", "5%", "", "1e-2", " 0.1"] {
            assert!(FaultRate::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(FaultRate::parse("0.1").unwrap().exceeded_by(10, 2));
        assert!(!FaultRate::parse("0.1").unwrap().exceeded_by(10, 1));
    }

    #[test]
    fn a_sender_keeps_its_bucket_and_a_higher_percent_keeps_every_sender_a_lower_one_had() {
        assert_eq!(bucket("limits", 2, 42), bucket("limits", 2, 42));
        let in_canary = |percent: u8| (1..=10_000).filter(|s| bucket("limits", 2, *s) < percent).collect::<Vec<_>>();
        let (ten, thirty) = (in_canary(10), in_canary(30));
        assert!(ten.iter().all(|s| thirty.contains(s)));
        // A fair hash: about 10% and 30% of 10,000 senders.
        assert!((800..1_200).contains(&ten.len()), "{}", ten.len());
        assert!((2_700..3_300).contains(&thirty.len()), "{}", thirty.len());
        // Another version splits the senders another way.
        assert_ne!(ten, (1..=10_000).filter(|s| bucket("limits", 3, *s) < 10).collect::<Vec<_>>());
    }

    #[test]
    fn a_canary_trips_once_past_its_rate_and_only_with_enough_calls() {
        let mut guard = Guard::new(settings());
        let watches = [canary(2)];
        let now = Utc::now();
        let faulty: Vec<Decision> = (0..5).map(|_| decision(2, Role::Canary, true)).collect();
        assert!(guard.observe(&watches, &faulty, now, 100).is_empty(), "5 calls are fewer than calls_min");
        // The active version's faults and another version's are not the canary's.
        let others = [decision(1, Role::Active, true), decision(3, Role::Canary, true), decision(2, Role::Shadow, true)];
        assert!(guard.observe(&watches, &others, now, 100).is_empty());
        let trips = guard.observe(&watches, &faulty, now, 101);
        assert_eq!(trips.len(), 1);
        assert_eq!((trips[0].calls, trips[0].faults), (10, 10));
        assert!(guard.observe(&watches, &faulty, now, 102).is_empty(), "a version trips once");
        // Unless its withdrawal failed: then the next batch past the limit trips it again.
        guard.rearm(&watches[0]);
        assert_eq!(guard.observe(&watches, &faulty, now, 103).len(), 1);
    }

    #[test]
    fn faults_older_than_the_window_are_forgotten() {
        let mut guard = Guard::new(settings());
        let watches = [canary(2)];
        let now = Utc::now();
        let faults: Vec<Decision> = (0..2).map(|_| decision(2, Role::Canary, true)).collect();
        let fine: Vec<Decision> = (0..9).map(|_| decision(2, Role::Canary, false)).collect();
        assert!(guard.observe(&watches, &faults, now, 100).is_empty());
        // 2 of 11 is past 0.1, but only until the faults leave the window.
        assert!(guard.observe(&watches, &fine[..8], now, 110).is_empty(), "the faults at second 100 left a 10 s window");
        assert_eq!(guard.observe(&watches, &faults, now, 111).len(), 1, "2 of 10 in the window is past 0.1");
    }

    #[test]
    fn an_activation_is_watched_only_until_its_time_is_up_and_a_new_watch_starts_afresh() {
        let mut guard = Guard::new(settings());
        let now = Utc::now();
        let activation = |until: DateTime<Utc>| Watch {
            name: "limits".into(),
            version: 2,
            subject: Subject::Activation { activated_at: now, replaced_version: 1, watched_until: until },
            fault_rate_max: FaultRate::parse("0.1").unwrap(),
        };
        let faulty: Vec<Decision> = (0..10).map(|_| decision(2, Role::Active, true)).collect();
        assert!(guard.observe(&[activation(now)], &faulty, now, 100).is_empty(), "past its time");
        assert_eq!(guard.observe(&[activation(now + chrono::Duration::minutes(1))], &faulty, now, 100).len(), 1);
        assert!(guard.observe(&[canary(2)], &faulty[..1], now, 101).is_empty(), "another watch forgets the old tally");
    }
}
