//! transfer-engine: a money-transfer engine with sandboxed WebAssembly policy plugins.
//!
//! The pipeline, module by module:
//! - `api`: HTTP (axum): cheap checks, publish to Kafka, answer at once.
//! - `auth`: API clients, their keys and scopes, and the principal a request acts as.
//! - `processor`: consumes the topic in batches, runs the hooks, commits.
//! - `hooks`: description rules, currency conversion and validation.
//! - `plugins`: the sandboxed WebAssembly plugins behind the hooks, and their registry.
//! - `ledger`: PostgreSQL, the source of truth; `commit_batch` moves money.
//! - `dead_letters`: the operator command for records the processor kept aside.
//! - `history`: the operator command for the status history's retention.
//! - `cache`: Redis balance cache and versioned status view (never the truth).
//! - `kafka`: client settings, topics, the record format.
//! - `domain`: pure types: currencies, amounts, ids, rejections.
//! - `views`: the JSON a client sees for a transfer.
//! - `loadgen`: the load generator behind `transfer-engine loadgen` and the benchmarks.
//! - `config`, `startup`, `telemetry`, `metrics`: settings, the `Application`, logs, Prometheus.

pub mod api;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod dead_letters;
pub mod domain;
pub mod events;
pub mod history;
pub mod hooks;
pub mod kafka;
pub mod ledger;
pub mod loadgen;
pub mod metrics;
pub mod plugins;
pub mod processor;
pub mod startup;
pub mod telemetry;
pub mod views;
