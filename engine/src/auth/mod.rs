//! Who is calling, and what they may do.
//!
//! - `key`: the API key format (`tek_<client id>_<secret>`), generation and hashing.
//! - `principal`: scopes and the `Principal` a request acts as (admin or a client).
//! - `clients`: the API clients in PostgreSQL and the in-memory cache of verified keys.
//!
//! The admin token acts as an unbound principal with every scope; a client
//! acts with its own scopes, for any owner or only for the owners it is bound to.

mod clients;
mod key;
mod principal;

pub use clients::{AuthError, ClientInfo, ClientStore, NewClient, NewClientError};
pub use key::{ApiKey, KEY_PREFIX, KeySecret};
pub use principal::{ClientId, Principal, Scope, Scopes};
