//! Whether the processor is alive and making progress, for `/readyz` and
//! the metrics. A processor task that died (a panic, a stage that stopped)
//! or that has made no progress while records wait for longer than
//! `processor_stall_limit_ms` makes the engine not ready, so a load balancer
//! stops sending it transfers it would accept but never process.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What `/readyz` reports about the processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessorState {
    /// This process runs no processor (the API role).
    NotRunning,
    /// Started, and progressing or caught up.
    Running,
    /// Records wait (behind the partitions' ends, or read and not finished)
    /// and no batch finished for this long.
    Stalled { since_progress_ms: u64, lag_records: i64 },
    /// The task ended without being asked to stop.
    Dead,
    /// Stopped on request (shutdown).
    Stopped,
}

const NOT_RUNNING: u8 = 0;
const RUNNING: u8 = 1;
const DEAD: u8 = 2;
const STOPPED: u8 = 3;
/// The lag before it was first measured.
const LAG_UNKNOWN: i64 = -1;

/// Shared by the processor (which reports) and the HTTP handlers (which read).
pub struct ProcessorHealth {
    stall_limit: Duration,
    /// The clock `last_progress_ms` counts from.
    epoch: Instant,
    /// Milliseconds since `epoch` of the last finished batch, or of the last
    /// lag reading of zero (a processor with nothing to do is not stalled).
    last_progress_ms: AtomicU64,
    /// Records behind the partitions' ends at the last reading, summed.
    lag_records: AtomicI64,
    /// Records read from the topic whose batch has not finished: the lag
    /// alone misses them, as the consumer's position is already past them.
    in_flight_records: AtomicI64,
    state: AtomicU8,
}

impl ProcessorHealth {
    pub fn new(stall_limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            stall_limit,
            epoch: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            lag_records: AtomicI64::new(LAG_UNKNOWN),
            in_flight_records: AtomicI64::new(0),
            state: AtomicU8::new(NOT_RUNNING),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The processor started; the returned guard marks it dead when dropped
    /// unless `stopping` was called first (so a panic or an early return counts).
    pub fn started(self: &Arc<Self>) -> AliveGuard {
        self.progressed();
        self.state.store(RUNNING, Ordering::Relaxed);
        AliveGuard { health: self.clone() }
    }

    /// Shutdown was requested: the task ending is expected from now on.
    pub fn stopping(&self) {
        self.state.store(STOPPED, Ordering::Relaxed);
    }

    pub fn progressed(&self) {
        self.last_progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A batch of `records` was read from the topic.
    pub fn received(&self, records: usize) {
        self.in_flight_records.fetch_add(i64::try_from(records).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// A batch of `records` finished (committed, cached, offsets stored).
    pub fn finished(&self, records: usize) {
        self.in_flight_records.fetch_sub(i64::try_from(records).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.progressed();
    }

    fn waiting_records(&self) -> i64 {
        self.lag_records.load(Ordering::Relaxed).max(0).saturating_add(self.in_flight_records.load(Ordering::Relaxed).max(0))
    }

    pub fn lag_measured(&self, lag_records: i64) {
        self.lag_records.store(lag_records, Ordering::Relaxed);
        if self.waiting_records() == 0 {
            self.progressed();
        }
    }

    pub fn state(&self) -> ProcessorState {
        self.state_at(self.now_ms())
    }

    fn state_at(&self, now_ms: u64) -> ProcessorState {
        match self.state.load(Ordering::Relaxed) {
            NOT_RUNNING => ProcessorState::NotRunning,
            DEAD => ProcessorState::Dead,
            STOPPED => ProcessorState::Stopped,
            _ => {
                let since_progress_ms = now_ms.saturating_sub(self.last_progress_ms.load(Ordering::Relaxed));
                let lag_records = self.waiting_records();
                if lag_records > 0 && since_progress_ms > u64::try_from(self.stall_limit.as_millis()).unwrap_or(u64::MAX) {
                    ProcessorState::Stalled { since_progress_ms, lag_records }
                } else {
                    ProcessorState::Running
                }
            }
        }
    }
}

/// Marks the processor dead when dropped, unless it was stopping.
pub struct AliveGuard {
    health: Arc<ProcessorHealth>,
}

impl Drop for AliveGuard {
    fn drop(&mut self) {
        if self.health.state.load(Ordering::Relaxed) != STOPPED {
            tracing::error!("The processor stopped without being asked to; the engine reports itself not ready.");
            self.health.state.store(DEAD, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_processor_that_panics_is_reported_dead() {
        let health = ProcessorHealth::new(Duration::from_secs(60));
        let in_task = health.clone();
        let ended = std::thread::spawn(move || {
            let _alive = in_task.started();
            panic!("a bug in the processor");
        })
        .join();
        assert!(ended.is_err());
        assert_eq!(health.state(), ProcessorState::Dead);
    }

    #[test]
    fn a_processor_asked_to_stop_is_reported_stopped_not_dead() {
        let health = ProcessorHealth::new(Duration::from_secs(60));
        let alive = health.started();
        assert_eq!(health.state(), ProcessorState::Running);
        health.stopping();
        drop(alive);
        assert_eq!(health.state(), ProcessorState::Stopped);
    }

    #[test]
    fn a_processor_is_stalled_only_while_records_wait_past_the_limit() {
        let health = ProcessorHealth::new(Duration::from_millis(1_000));
        let _alive = health.started();
        let start = health.last_progress_ms.load(Ordering::Relaxed);
        health.lag_measured(5);
        assert_eq!(health.state_at(start + 1_000), ProcessorState::Running, "within the limit");
        assert_eq!(health.state_at(start + 1_001), ProcessorState::Stalled { since_progress_ms: 1_001, lag_records: 5 });
        health.lag_measured(0);
        let caught_up = health.last_progress_ms.load(Ordering::Relaxed);
        assert_eq!(health.state_at(caught_up + 5_000), ProcessorState::Running, "nothing to do is not a stall");
        health.lag_measured(3);
        assert!(matches!(health.state_at(caught_up + 5_000), ProcessorState::Stalled { .. }), "waiting records and no progress");
        health.progressed();
        let progressed = health.last_progress_ms.load(Ordering::Relaxed);
        assert_eq!(health.state_at(progressed + 1_000), ProcessorState::Running, "a finished batch is progress");
    }

    #[test]
    fn records_read_but_not_finished_count_as_waiting_even_at_zero_lag() {
        let health = ProcessorHealth::new(Duration::from_millis(1_000));
        let _alive = health.started();
        health.received(3);
        health.lag_measured(0);
        let at = health.last_progress_ms.load(Ordering::Relaxed);
        assert_eq!(health.state_at(at + 1_001), ProcessorState::Stalled { since_progress_ms: 1_001, lag_records: 3 });
        health.finished(3);
        health.lag_measured(0);
        let at = health.last_progress_ms.load(Ordering::Relaxed);
        assert_eq!(health.state_at(at + 10_000), ProcessorState::Running);
    }
}
