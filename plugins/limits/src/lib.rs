//! `limits`: a validator plugin that refuses transfers over a per-currency
//! maximum amount, or from or to a blocked owner.
//!
//! The policy itself lives in [`policy`] as plain Rust so it can be unit
//! tested on the host; `component` is only the wit-bindgen glue.

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod component;
