//! Everything a plugin hands back to the host is bounded and cleaned here
//! before it reaches a log, a decision record or a client: text (fault texts,
//! `configure` errors, rejection messages, log lines) and log volume.
//!
//! - `clean`: cut to a length, control and invisible format characters
//!   escaped, so a plugin cannot forge a log record (a newline followed by a
//!   fake one), rewrite a terminal (ANSI escapes) or store NUL in PostgreSQL.
//! - `LogBudget`: a token bucket per plugin version, shared by all its calls,
//!   so a plugin cannot flood the engine's log however many transfers it sees.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

/// Log lines a plugin version may write per second, sustained (all calls together).
pub const LOG_LINES_PER_S_MAX: u32 = 50;
/// Log lines a plugin version may write in a burst before the rate applies.
pub const LOG_LINES_BURST_MAX: u32 = 200;
/// How often, at most, the engine reports a plugin's dropped lines (itself a log line).
pub const DROPPED_REPORT_INTERVAL_S: u64 = 10;

/// At most `chars_max` characters of `text` (counted before escaping, then
/// marked "…" when cut), with every control character (C0, DEL, C1: newline,
/// carriage return, escape, NUL) and every invisible format character that
/// can reorder or hide text (bidi overrides, line and paragraph separators,
/// zero-width characters) written as a visible `\u{..}` escape. The result
/// is one line of printable text.
pub fn clean(text: &str, chars_max: usize) -> String {
    let mut cleaned = String::with_capacity(text.len().min(chars_max * 4));
    let mut chars = text.chars();
    for c in chars.by_ref().take(chars_max) {
        if c.is_control() || is_invisible_format(c) {
            let _ = write!(cleaned, "\\u{{{:x}}}", c as u32);
        } else {
            cleaned.push(c);
        }
    }
    if chars.next().is_some() {
        cleaned.push('…');
    }
    cleaned
}

/// Unicode format characters that change how surrounding text displays.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}' | '\u{061c}')
}

/// A token bucket of log lines for one plugin version.
#[derive(Debug)]
pub struct LogBudget {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Lines that may be written now; refills at `LOG_LINES_PER_S_MAX` up to the burst.
    tokens: f64,
    refilled_at: Instant,
    /// Lines refused and not yet reported.
    dropped: u64,
    /// When dropped lines were last reported (None: never).
    reported_at: Option<Instant>,
}

/// Whether a line may be written, and how many dropped lines to report with
/// it (non-zero at most once per `DROPPED_REPORT_INTERVAL_S`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogPermit {
    Write { dropped_before: u64 },
    Drop,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl LogBudget {
    pub fn new(now: Instant) -> Self {
        Self { state: Mutex::new(Bucket { tokens: f64::from(LOG_LINES_BURST_MAX), refilled_at: now, dropped: 0, reported_at: None }) }
    }

    /// Takes one line's token at `now`, or counts the line as dropped.
    pub fn take(&self, now: Instant) -> LogPermit {
        // A poisoned lock only means a panic while holding plain numbers; they are still valid.
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed_s = now.saturating_duration_since(b.refilled_at).as_secs_f64();
        b.tokens = (b.tokens + elapsed_s * f64::from(LOG_LINES_PER_S_MAX)).min(f64::from(LOG_LINES_BURST_MAX));
        b.refilled_at = b.refilled_at.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            let report_due = b.reported_at.is_none_or(|at| now.saturating_duration_since(at).as_secs() >= DROPPED_REPORT_INTERVAL_S);
            if b.dropped > 0 && report_due {
                b.reported_at = Some(now);
                return LogPermit::Write { dropped_before: std::mem::take(&mut b.dropped) };
            }
            LogPermit::Write { dropped_before: 0 }
        } else {
            b.dropped += 1;
            LogPermit::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_forged_log_record_stays_on_one_visible_line() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR transfer_engine: forged\r\u{1b}[31m\u{0}\u{202e}\u{2028}";
        let cleaned = clean(forged, 1_000);
        assert!(!cleaned.chars().any(|c| c.is_control() || is_invisible_format(c)), "{cleaned}");
        assert_eq!(cleaned, "ok\\u{a}2026-01-01T00:00:00Z ERROR transfer_engine: forged\\u{d}\\u{1b}[31m\\u{0}\\u{202e}\\u{2028}");
        assert_eq!(clean("héllo wörld", 5), "héllo…");
        assert_eq!(clean("short", 5), "short");
    }

    #[test]
    fn a_flooding_plugin_gets_its_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let budget = LogBudget::new(start);
        let written = (0..10_000).filter(|_| matches!(budget.take(start), LogPermit::Write { .. })).count();
        assert_eq!(written, LOG_LINES_BURST_MAX as usize);
        // One second later, a second's worth is back, and the first line says how many were dropped.
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.take(later), LogPermit::Write { dropped_before: 10_000 - u64::from(LOG_LINES_BURST_MAX) });
        let more = (0..10_000).filter(|_| matches!(budget.take(later), LogPermit::Write { .. })).count();
        assert_eq!(more + 1, LOG_LINES_PER_S_MAX as usize);
        // The next report waits for the interval, however many lines are dropped meanwhile.
        let soon = later + Duration::from_secs(1);
        assert_eq!(budget.take(soon), LogPermit::Write { dropped_before: 0 });
        let due = later + Duration::from_secs(DROPPED_REPORT_INTERVAL_S);
        assert_eq!(budget.take(due), LogPermit::Write { dropped_before: 10_000 - more as u64 });
    }
}
