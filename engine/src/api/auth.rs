//! Credentials on every `/v1/*` route, checked before the body is read.
//!
//! - `Authorized<S>`: any valid credential holding scope `S` (the admin token holds every scope).
//! - `Admin`: the admin token only (deposits, withdrawals, `/v1/admin/*`).
//!
//! Extractors rather than calls inside handlers, so they run before the body
//! extractor: an unauthenticated request is refused before its body is read
//! or validated, learns nothing about the schema, and cannot make the engine
//! buffer a large upload.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::auth::{ApiKey, AuthError, Principal, Scope};
use crate::config::Settings;

/// The bearer token of the request's one `Authorization` header.
///
/// The scheme is matched without regard to case (RFC 7235 section 2.1: `bearer`
/// is the same scheme) and may be followed by several spaces (`1*SP`); the
/// token is taken exactly. A request with more than one `Authorization`
/// header carries ambiguous credentials and is refused rather than judged by
/// whichever header comes first. The credential is read from this header
/// only: never from the query string (it would end up in access logs) nor
/// from any other header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthorized);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start_matches(' '))
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized)
}

/// Is `token` the admin token? Compared in constant time; an unset or empty
/// admin token matches nothing.
fn is_admin_token(settings: &Settings, token: &str) -> bool {
    settings
        .admin_token
        .as_ref()
        .filter(|expected| !expected.expose().is_empty())
        .is_some_and(|expected| bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())))
}

/// The principal the request's credential acts as: 401 for none, a malformed
/// one, or an unknown or revoked key; 503 if the clients cannot be read.
async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let token = bearer_token(&parts.headers)?;
    if is_admin_token(&state.settings, token) {
        return Ok(Principal::admin());
    }
    let key = ApiKey::parse(token).ok_or(ApiError::Unauthorized)?;
    state.clients.authenticate(&key).await.map_err(|e| match e {
        AuthError::Refused => ApiError::Unauthorized,
        AuthError::Ledger(e) => e.into(),
    })
}

/// A scope that a route needs, as a type (see `Authorized`).
pub trait RequiredScope {
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($name:ident),*) => {$(
        #[doc = concat!("Marker for `Scope::", stringify!($name), "`.")]
        pub struct $name;
        impl RequiredScope for $name {
            const SCOPE: Scope = Scope::$name;
        }
    )*};
}
scopes!(TransfersWrite, TransfersRead, AccountsWrite, AccountsRead);

/// A caller whose credential holds scope `S`; 403 `scope_missing` for a known client without it.
pub struct Authorized<S>(pub Principal, pub PhantomData<S>);

impl<S: RequiredScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = principal(parts, state).await?;
        if !principal.has(S::SCOPE) {
            return Err(ApiError::Forbidden {
                code: "scope_missing",
                message: format!("this credential lacks the scope {}", S::SCOPE.as_str()),
            });
        }
        Ok(Self(principal, PhantomData))
    }
}

/// Proof that a request carries the admin token. A client key, however
/// scoped, gets 403 `scope_missing`: no scope reaches these routes.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if principal(parts, state).await?.is_admin() {
            Ok(Admin)
        } else {
            Err(ApiError::Forbidden { code: "scope_missing", message: "this route needs the admin token".into() })
        }
    }
}

/// 403 `owner_not_permitted` unless the principal may act for `owner`.
pub fn require_owner(principal: &Principal, owner: crate::domain::OwnerId) -> Result<(), ApiError> {
    if principal.may_act_for(owner) {
        Ok(())
    } else {
        Err(ApiError::Forbidden { code: "owner_not_permitted", message: format!("this credential may not act for owner {owner}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_case_and_the_token_exactly() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])).unwrap(), "abc");
        assert_eq!(bearer_token(&headers(&["bearer   abc"])).unwrap(), "abc");
        for refused in [&["Basic abc"][..], &["Bearer"], &["Bearer "], &["abc"], &["Bearer a", "Bearer a"], &[]] {
            assert!(bearer_token(&headers(refused)).is_err(), "{refused:?} was accepted");
        }
    }

    #[test]
    fn an_empty_admin_token_matches_nothing() {
        let empty = Settings { admin_token: Some(Secret::new("")), ..Settings::default() };
        assert!(!is_admin_token(&empty, ""));
        let set = Settings { admin_token: Some(Secret::new("s3cret")), ..Settings::default() };
        assert!(is_admin_token(&set, "s3cret") && !is_admin_token(&set, "s3cre"));
        assert!(!is_admin_token(&Settings::default(), "anything"));
    }
}
