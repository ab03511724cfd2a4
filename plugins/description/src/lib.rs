//! `description`: a describer plugin that cleans up a transfer's description,
//! masks card numbers, and refuses blocked words or over-long text.
//!
//! The rules live in [`rules`] as plain Rust so they can be unit tested on the
//! host; `component` is only the wit-bindgen glue.

pub mod rules;

#[cfg(target_arch = "wasm32")]
mod component;
