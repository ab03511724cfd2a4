//! `velocity`: a validator plugin that caps what a sender sends per currency
//! over a trailing 24 hours, with the cap chosen by the sender's tier (a key
//! of the sender account's metadata, for example `kyc_tier`).
//!
//! It is the template for interface 0.2.0: its `configure` answers the
//! `needs` (the sender's account and the 24 h velocity window), and
//! `validate` reads them from the `context`. The policy itself lives in
//! [`policy`] as plain Rust so it can be unit tested on the host;
//! `component` is only the wit-bindgen glue.

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod component;
