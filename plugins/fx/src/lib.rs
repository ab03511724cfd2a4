//! `fx`: a converter plugin with a fixed table of exact decimal rates.
//!
//! The arithmetic lives in [`rates`] as plain Rust so it can be unit tested on
//! the host; `component` is only the wit-bindgen glue.

pub mod rates;

#[cfg(target_arch = "wasm32")]
mod component;
