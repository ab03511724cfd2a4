//! `channels`: a validator plugin that refuses transfers by where they come
//! from: a channel named in the transfer's metadata (for example
//! `{"channel": "crypto_atm"}`), or a country in the sender's or receiver's
//! account metadata.
//!
//! It asks the engine for the accounts only when it blocks countries, and
//! for no velocity windows: a validator that needs nothing costs nothing.
//! The policy itself lives in [`policy`] as plain Rust so it can be unit
//! tested on the host; `component` is only the wit-bindgen glue.

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod component;
