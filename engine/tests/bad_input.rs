//! Bad input, end to end on real services (issue 7, "Reliability suite"):
//! - generated malformed requests for every endpoint, each with one of the
//!   `Credentials`: never a 5xx, every refusal is `{"error": {"code", "message"}}`;
//!   a credential that may not call the route gets its exact code whatever the
//!   body says (401 `unauthorized` with `WWW-Authenticate: Bearer`, 403
//!   `scope_missing` or `owner_not_permitted`, 404 `transfer_not_found`) and
//!   changes nothing; a 2xx only for a permitted caller and input that a small
//!   model of the API (the `*_may_succeed` functions) calls valid;
//! - every route by hand with every unfit credential: its exact code, nothing
//!   changed, and then the same request succeeds with a fit one;
//! - admin routes refuse missing, wrong or misplaced admin tokens with 401
//!   and change nothing.
//!
//! The request fuzzers are plain `#[test]`s that own a tokio runtime: proptest's
//! runner is synchronous, so each generated request is sent with `block_on`
//! against the one engine the test started, and a failure is shrunk to a
//! minimal request before it is reported.

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use common::{ADMIN_TOKEN, TestApp, assert_audit_passes, create_client, plugin_bytes, test_settings};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::runtime::Runtime;
use transfer_engine::auth::Scope;
use transfer_engine::startup::Role;

// ---------------------------------------------------------------------------
// Credentials: what a probe presents, and the keys behind the names.
// ---------------------------------------------------------------------------

/// The owner the `OtherOwner` key is bound to. No probe's account or
/// transfer is hers: the generators' owner ids are small, i64 edges or random.
const OTHER_OWNER: i64 = 424_242;

/// How a probe presents itself (the keys are in `Keys`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Credentials {
    /// No `Authorization` header.
    Missing,
    /// A broken `Authorization` header around the `Client` key, which is valid on its own.
    Malformed(Malformed),
    /// A token that is nobody's: random text, a near miss of the admin token, a well-formed key of no client.
    Wrong(String),
    /// The `Client` key's id with another secret.
    WrongSecret,
    /// A key with every scope, revoked before the first probe.
    Revoked,
    /// A key with every scope, bound to `OTHER_OWNER`.
    OtherOwner,
    /// A key with every scope but the one the probe's route needs.
    ScopeMissing,
    /// A key with every scope, for any owner (the `TestApp`'s own).
    Client,
    /// The admin token.
    Admin,
}

/// Broken `Authorization` headers, each around a key that is valid on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Malformed {
    /// `Bearer` and no token.
    SchemeAlone,
    /// The key without a scheme.
    NoScheme,
    /// `Basic base64(key:)`.
    Basic,
    /// `Token <key>`.
    OtherScheme,
    /// `Bearer: <key>`.
    ColonAfterScheme,
    /// `Bearer<TAB><key>`: the scheme ends at a space (RFC 7235, `1*SP`).
    TabAfterScheme,
    /// `Bearer "<key>"`.
    Quoted,
    /// The key without its last character.
    CutShort,
    /// The key with one more hex digit.
    Suffixed,
    /// `TEK_...`: the key's prefix is lower case.
    UpperCase,
    /// The key followed by a byte that is not UTF-8.
    NotUtf8,
    /// Two `Authorization` headers, both with the key: ambiguous, so refused.
    Twice,
}

const MALFORMED: [Malformed; 12] = [
    Malformed::SchemeAlone,
    Malformed::NoScheme,
    Malformed::Basic,
    Malformed::OtherScheme,
    Malformed::ColonAfterScheme,
    Malformed::TabAfterScheme,
    Malformed::Quoted,
    Malformed::CutShort,
    Malformed::Suffixed,
    Malformed::UpperCase,
    Malformed::NotUtf8,
    Malformed::Twice,
];

impl Malformed {
    /// The `Authorization` values this shape sends around `key`.
    fn headers(self, key: &str) -> Vec<HeaderValue> {
        let value = |text: String| HeaderValue::from_str(&text).expect("visible ASCII");
        match self {
            Self::SchemeAlone => vec![value("Bearer".into())],
            Self::NoScheme => vec![value(key.into())],
            Self::Basic => vec![value(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))))],
            Self::OtherScheme => vec![value(format!("Token {key}"))],
            Self::ColonAfterScheme => vec![value(format!("Bearer: {key}"))],
            Self::TabAfterScheme => vec![value(format!("Bearer\t{key}"))],
            Self::Quoted => vec![value(format!("Bearer \"{key}\""))],
            Self::CutShort => vec![value(format!("Bearer {}", &key[..key.len() - 1]))],
            Self::Suffixed => vec![value(format!("Bearer {key}0"))],
            Self::UpperCase => vec![value(format!("Bearer {}", key.to_uppercase()))],
            Self::NotUtf8 => vec![HeaderValue::from_bytes(&[format!("Bearer {key}").as_bytes(), b"\xff"].concat()).unwrap()],
            Self::Twice => vec![value(format!("Bearer {key}")), value(format!("Bearer {key}"))],
        }
    }
}

/// Tokens that are nobody's, for `Credentials::Wrong`.
fn wrong_tokens() -> Vec<String> {
    vec![
        "wrong".into(),
        "null".into(),
        ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1].to_owned(),
        format!("{ADMIN_TOKEN}x"),
        ADMIN_TOKEN.to_uppercase(),
        format!("tek_{}_{}", uuid::Uuid::nil().simple(), "0".repeat(64)),
    ]
}

/// The keys the probes present, made before the first probe.
struct Keys {
    /// Every scope, any owner.
    client: String,
    revoked: String,
    other_owner: String,
    /// For each scope, a key with every other one.
    lacking: Vec<(Scope, String)>,
}

impl Keys {
    async fn make(app: &TestApp) -> Self {
        let other_owner = create_client(&app.db.pool, "other-owner", &Scope::ALL, Some(&[OTHER_OWNER])).await;
        let mut lacking = Vec::new();
        for scope in Scope::ALL {
            let others: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s != scope).collect();
            lacking.push((scope, create_client(&app.db.pool, &format!("lacks {}", scope.as_str()), &others, None).await));
        }
        // Made and revoked over the API, as an operator does it.
        let created = app.admin_post("/v1/admin/clients", &json!({"name": "revoked", "scopes": Scope::ALL.map(Scope::as_str)})).await;
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.unwrap();
        let revoke = format!("/v1/admin/clients/{}", created["client_id"].as_str().unwrap());
        let revoked = app.client.delete(app.url(&revoke)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(revoked.status(), 204);
        Self { client: app.key.clone(), revoked: created["key"].as_str().unwrap().to_owned(), other_owner, lacking }
    }

    /// The key without the scope `need` asks for; any such key where it asks for none.
    fn lacking(&self, need: Option<Need>) -> &str {
        let scope = match need {
            Some(Need::Scope(scope, _)) => scope,
            _ => Scope::TransfersWrite,
        };
        &self.lacking.iter().find(|(s, _)| *s == scope).expect("a key for every scope").1
    }

    /// The `Authorization` values sent with `credentials` to a route that needs `need`.
    fn authorization(&self, credentials: &Credentials, need: Option<Need>) -> Vec<HeaderValue> {
        let bearer = |token: &str| vec![HeaderValue::from_str(&format!("Bearer {token}")).expect("visible ASCII")];
        match credentials {
            Credentials::Missing => Vec::new(),
            Credentials::Malformed(shape) => shape.headers(&self.client),
            Credentials::Wrong(token) => bearer(token),
            Credentials::WrongSecret => bearer(&format!("{}{}", &self.client[..self.client.len() - 64], "0".repeat(64))),
            Credentials::Revoked => bearer(&self.revoked),
            Credentials::OtherOwner => bearer(&self.other_owner),
            Credentials::ScopeMissing => bearer(self.lacking(need)),
            Credentials::Client => bearer(&self.client),
            Credentials::Admin => bearer(ADMIN_TOKEN),
        }
    }
}

/// Credentials for a probe of a route that needs `need`: a fit one half the
/// time (the admin token mostly, for admin routes), so that the body model
/// is exercised too; the fuzzers' case counts are twice what that half needs.
fn credentials(need: Need) -> BoxedStrategy<Credentials> {
    let (admin, client) = if matches!(need, Need::Admin) { (8, 1) } else { (4, 4) };
    prop_oneof![
        admin => Just(Credentials::Admin),
        client => Just(Credentials::Client),
        1 => Just(Credentials::OtherOwner),
        6 => unfit_credentials(),
    ]
    .boxed()
}

/// Credentials that no `/v1` route accepts.
fn unfit_credentials() -> BoxedStrategy<Credentials> {
    let random_key = ("[0-9a-f]{32}", "[0-9a-f]{64}").prop_map(|(id, secret)| format!("tek_{id}_{secret}"));
    let wrong = prop_oneof![select(wrong_tokens()), "[!-~]{1,64}", random_key];
    prop_oneof![
        Just(Credentials::Missing),
        select(MALFORMED.to_vec()).prop_map(Credentials::Malformed),
        wrong.prop_map(Credentials::Wrong),
        Just(Credentials::WrongSecret),
        Just(Credentials::Revoked),
        Just(Credentials::ScopeMissing),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// Routes: what each needs of its caller, and where a path leads.
// ---------------------------------------------------------------------------

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// No credential (health, metrics, the OpenAPI document).
    Nothing,
    /// A key with the scope, or the admin token; a key bound to owners is limited as `Bound` says.
    Scope(Scope, Bound),
    /// The admin token only.
    Admin,
}

/// Where a route finds the owner that a bound key must be allowed to act for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    /// This field of the JSON body (the body is read first: a bad one is refused for itself).
    BodyField(&'static str),
    /// This path segment (counted after the leading `/`).
    PathSegment(usize),
    /// The transfer's sender or receiver; others get 404 `transfer_not_found`.
    TransferParty,
}

/// A route as the API's contract (README, OpenAPI) states it.
#[derive(Debug, PartialEq, Eq)]
struct Route {
    method: &'static str,
    /// `{...}` segments are parameters.
    template: &'static str,
    need: Need,
}

const fn route(method: &'static str, template: &'static str, need: Need) -> Route {
    Route { method, template, need }
}

/// Every route the API role serves.
static ROUTES: &[Route] = &[
    route("POST", "/v1/transfers", Need::Scope(Scope::TransfersWrite, Bound::BodyField("sender_id"))),
    route("GET", "/v1/transfers/{id}", Need::Scope(Scope::TransfersRead, Bound::TransferParty)),
    route("POST", "/v1/accounts", Need::Scope(Scope::AccountsWrite, Bound::BodyField("owner_id"))),
    route("GET", "/v1/accounts/{owner_id}/{currency}", Need::Scope(Scope::AccountsRead, Bound::PathSegment(2))),
    route("PATCH", "/v1/accounts/{owner_id}/{currency}", Need::Scope(Scope::AccountsWrite, Bound::PathSegment(2))),
    route("GET", "/v1/accounts/{owner_id}/{currency}/transfers", Need::Scope(Scope::AccountsRead, Bound::PathSegment(2))),
    route("POST", "/v1/deposits", Need::Admin),
    route("POST", "/v1/withdrawals", Need::Admin),
    route("GET", "/v1/admin/plugins", Need::Admin),
    route("POST", "/v1/admin/plugins", Need::Admin),
    route("POST", "/v1/admin/plugins/{name}/activate", Need::Admin),
    route("POST", "/v1/admin/plugins/{name}/deactivate", Need::Admin),
    route("POST", "/v1/admin/plugins/{name}/shadow", Need::Admin),
    route("DELETE", "/v1/admin/plugins/{name}/shadow", Need::Admin),
    route("POST", "/v1/admin/plugins/{name}/canary", Need::Admin),
    route("DELETE", "/v1/admin/plugins/{name}/canary", Need::Admin),
    route("GET", "/v1/admin/plugins/{name}/versions/{version}/report", Need::Admin),
    route("PUT", "/v1/admin/validation-order", Need::Admin),
    route("GET", "/v1/admin/clients", Need::Admin),
    route("POST", "/v1/admin/clients", Need::Admin),
    route("DELETE", "/v1/admin/clients/{client_id}", Need::Admin),
    route("GET", "/v1/admin/transfer-conflicts", Need::Admin),
    route("GET", "/v1/admin/webhooks", Need::Admin),
    route("POST", "/v1/admin/webhooks", Need::Admin),
    route("DELETE", "/v1/admin/webhooks/{webhook_id}", Need::Admin),
    route("GET", "/v1/admin/webhooks/{webhook_id}/deliveries", Need::Admin),
    route("POST", "/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/resend", Need::Admin),
    route("GET", "/healthz", Need::Nothing),
    route("GET", "/readyz", Need::Nothing),
    route("GET", "/metrics", Need::Nothing),
    route("GET", "/openapi.json", Need::Nothing),
];

impl Route {
    /// `POST /v1/transfers`: how the fuzzers name their endpoint.
    fn endpoint(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

/// The route named `endpoint` (`"GET /v1/transfers/{id}"`).
fn route_named(endpoint: &str) -> &'static Route {
    ROUTES.iter().find(|r| r.endpoint() == endpoint).unwrap_or_else(|| panic!("no route {endpoint}"))
}

/// Where a request leads.
#[derive(Clone, Copy, Debug)]
enum Reached {
    /// No route has this path: 404 `not_found`, whatever the credential.
    Nowhere,
    /// A route has this path but not this method: 405 `method_not_allowed`, whatever the credential.
    OtherMethod,
    Route(&'static Route),
}

/// Where `method` and `path` (as sent: still percent-encoded, dot segments
/// resolved) lead. As axum's router (matchit): the raw path is matched, a
/// parameter is one segment, empty only if another follows (`/v1/accounts//EUR`
/// is routed, `/v1/transfers/` is not), and HEAD is served by GET.
fn reach(method: &Method, path: &str) -> Reached {
    let path: Vec<&str> = path.split('/').collect();
    let fits = |template: &str| {
        let template: Vec<&str> = template.split('/').collect();
        let last = template.len() - 1;
        template.len() == path.len()
            && template.iter().zip(&path).enumerate().all(|(i, (t, p))| if t.starts_with('{') { i < last || !p.is_empty() } else { t == p })
    };
    let mut at_path = ROUTES.iter().filter(|r| fits(r.template)).peekable();
    if at_path.peek().is_none() {
        return Reached::Nowhere;
    }
    let serves = |r: &&Route| r.method == method.as_str() || (*method == Method::HEAD && r.method == "GET");
    at_path.find(serves).map_or(Reached::OtherMethod, Reached::Route)
}

/// The path a probe's target is sent as: the URL parser resolves dot segments.
fn sent_path(app: &TestApp, target: &str) -> String {
    reqwest::Url::parse(&app.url(target)).expect("a probe's URL parses").path().to_owned()
}

// ---------------------------------------------------------------------------
// The request fuzzer: probes, how they are sent, what every answer must be.
// ---------------------------------------------------------------------------

/// The engine's default `request_body_bytes_max`, which the tests do not change.
const BODY_BYTES_MAX: usize = 16 * 1024;
/// `POST /v1/admin/clients` takes at least this much, so that a client bound to
/// the most owners the document allows fits.
const CLIENT_CREATE_BODY_BYTES_MAX: usize = 64 * 1024;
/// The routes that take metadata (submitting a transfer, opening an account,
/// replacing its metadata) take at least this much, so that the largest
/// metadata the document allows fits.
const METADATA_BODY_BYTES_MAX: usize = 64 * 1024;

/// The body limit of the route a target reaches.
fn body_bytes_max(target: &str) -> usize {
    match segments(target)[..] {
        ["v1", "admin", "clients"] => CLIENT_CREATE_BODY_BYTES_MAX,
        ["v1", "transfers"] | ["v1", "accounts"] | ["v1", "accounts", _, _] => METADATA_BODY_BYTES_MAX,
        _ => BODY_BYTES_MAX,
    }
}
/// The engine's default `description_chars_max`.
const DESCRIPTION_CHARS_MAX: usize = 280;
/// Longest deposit or withdrawal reference.
const REFERENCE_CHARS_MAX: usize = 128;
/// Most keys a metadata object may have.
const METADATA_KEYS_MAX: usize = 16;
/// Longest metadata key (of `[a-z0-9_.-]`, at least one).
const METADATA_KEY_CHARS_MAX: usize = 64;
/// Longest metadata value.
const METADATA_VALUE_CHARS_MAX: usize = 256;

/// One generated HTTP request.
#[derive(Clone)]
struct Probe {
    method: Method,
    /// Path and query, percent-encoded as sent.
    target: String,
    content_type: Option<&'static str>,
    credentials: Credentials,
    /// Empty: no body.
    body: Vec<u8>,
}

impl fmt::Debug for Probe {
    // Bodies can be 40 KB of padding: show their start and length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = String::from_utf8_lossy(&self.body).chars().take(400).collect();
        let target: String = self.target.chars().take(400).collect();
        write!(
            f,
            "{} {target} content-type={:?} credentials={:?} body({} bytes)={shown:?}",
            self.method,
            self.content_type,
            self.credentials,
            self.body.len()
        )
    }
}

impl Probe {
    /// A request with no body, sent with the `Client` key.
    fn new(method: Method, target: String) -> Self {
        Self { method, target, content_type: None, credentials: Credentials::Client, body: Vec::new() }
    }

    /// The body as JSON, if it is JSON (duplicate keys collapse: the generators
    /// serialize maps, so only raw bytes could repeat a key, and by luck only).
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// What every JSON endpoint needs before it looks at the body.
    fn sends_json(&self, method: &Method) -> bool {
        self.method == *method && is_json_content_type(self.content_type) && self.body.len() <= body_bytes_max(&self.target)
    }
}

struct Answer {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    body: Vec<u8>,
}

/// Sends a probe. A transport error is returned, not judged: see `Fuzzer::run`.
async fn send(client: &reqwest::Client, app: &TestApp, keys: &Keys, probe: &Probe) -> Result<Answer, reqwest::Error> {
    let mut request = client.request(probe.method.clone(), app.url(&probe.target));
    if let Some(content_type) = probe.content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let need = match reach(&probe.method, &sent_path(app, &probe.target)) {
        Reached::Route(route) => Some(route.need),
        Reached::Nowhere | Reached::OtherMethod => None,
    };
    for value in keys.authorization(&probe.credentials, need) {
        request = request.header(AUTHORIZATION, value);
    }
    if !probe.body.is_empty() {
        request = request.body(probe.body.clone());
    }
    Ok(into_answer(request.send().await?).await)
}

async fn into_answer(response: reqwest::Response) -> Answer {
    let header = |name| response.headers().get(name).map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let content_type = header(CONTENT_TYPE).unwrap_or_default();
    let www_authenticate = header(WWW_AUTHENTICATE);
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("the answer's body arrives").to_vec();
    Answer { status, content_type, www_authenticate, body }
}

/// A stable snake_case code: `insufficient_funds`, `invalid_body`, ...
fn is_snake_case(code: &str) -> bool {
    code.starts_with(|c: char| c.is_ascii_lowercase())
        && code.split('_').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The error code of a refusal, or why the answer is not `{"error": {"code", "message"}}` JSON.
fn error_code(answer: &Answer) -> Result<String, String> {
    let text = String::from_utf8_lossy(&answer.body);
    if !answer.content_type.starts_with("application/json") {
        return Err(format!("content-type {:?}, body {text:?}", answer.content_type));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("not JSON ({e}): {text:?}"))?;
    let code = body["error"]["code"].as_str().ok_or_else(|| format!("no error.code: {body}"))?;
    if !is_snake_case(code) {
        return Err(format!("error.code {code:?} is not snake_case: {body}"));
    }
    if !body["error"]["message"].is_string() {
        return Err(format!("no error.message: {body}"));
    }
    Ok(code.to_owned())
}

/// What the engine must answer a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// This status and code, whatever the body, path or query hold.
    Exactly(u16, &'static str),
    /// Up to the input: a 2xx only if `may_succeed`, else a 4xx that is never
    /// a 401 (the credential is valid) and is a 403 only with code `forbidden`.
    ByInput { may_succeed: bool, forbidden: Option<&'static str> },
}

/// What `probe`, sent as `path`, must get: from where it leads, its
/// credential, and `may_succeed`, the model of `intended` (the route it was
/// generated for; `None`: no route in particular) for a caller that may act
/// for its owner. A path that dot segments led to another route has no
/// model there: it is judged invalid.
fn expected(probe: &Probe, path: &str, intended: Option<&Route>, may_succeed: impl Fn(&Probe) -> bool) -> Expected {
    let route = match reach(&probe.method, path) {
        Reached::Nowhere => return Expected::Exactly(404, "not_found"),
        Reached::OtherMethod => return Expected::Exactly(405, "method_not_allowed"),
        Reached::Route(route) => route,
    };
    let valid = intended.is_none_or(|i| i == route) && may_succeed(probe);
    let by_input = |forbidden| Expected::ByInput { may_succeed: valid, forbidden };
    let bound = match (&probe.credentials, route.need) {
        (_, Need::Nothing) => return by_input(None),
        (Credentials::Missing | Credentials::Malformed(_) | Credentials::Wrong(_) | Credentials::WrongSecret | Credentials::Revoked, _) => {
            return Expected::Exactly(401, "unauthorized");
        }
        (Credentials::ScopeMissing, _) | (Credentials::Client | Credentials::OtherOwner, Need::Admin) => {
            return Expected::Exactly(403, "scope_missing");
        }
        (Credentials::Admin | Credentials::Client, _) => return by_input(None),
        (Credentials::OtherOwner, Need::Scope(_, bound)) => bound,
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let owner = match bound {
        Bound::BodyField(field) => probe.json().and_then(|body| json_integer(body.get(field)?)),
        Bound::PathSegment(i) => segments.get(i).and_then(|s| text_integer(&decoded_segment(s)?)),
        Bound::TransferParty => None,
    };
    match (valid, bound) {
        _ if owner == Some(OTHER_OWNER) => by_input(None),
        // No transfer of the test's ledger is hers: it answers as if none existed.
        (true, Bound::TransferParty) => Expected::Exactly(404, "transfer_not_found"),
        (true, _) => Expected::Exactly(403, "owner_not_permitted"),
        // The owner is known only once the body, path and query are read: bad ones are refused for themselves.
        (false, _) => by_input(Some("owner_not_permitted")),
    }
}

/// The property every answer must have: what `expected` says, a 4xx with the
/// JSON error shape for any refusal, `WWW-Authenticate: Bearer` with any 401.
/// Never a 5xx, 1xx or 3xx.
fn check(answer: &Answer, expected: Expected) -> Result<(), TestCaseError> {
    let text = || String::from_utf8_lossy(&answer.body).chars().take(600).collect::<String>();
    prop_assert!(answer.status < 500, "answered {}: {}", answer.status, text());
    if (200..300).contains(&answer.status) {
        let allowed = matches!(expected, Expected::ByInput { may_succeed: true, .. });
        prop_assert!(allowed, "accepted ({}) what it should refuse ({:?}): {}", answer.status, expected, text());
        return Ok(());
    }
    prop_assert!((400..500).contains(&answer.status), "answered {}: {}", answer.status, text());
    let code = error_code(answer).map_err(|why| TestCaseError::fail(format!("a {} without the JSON error shape: {why}", answer.status)))?;
    if answer.status == 401 {
        prop_assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
    }
    match expected {
        Expected::Exactly(status, want) => prop_assert_eq!((answer.status, code.as_str()), (status, want), "{}", text()),
        Expected::ByInput { forbidden, .. } => {
            prop_assert!(answer.status != 401, "a valid credential was refused: {}", text());
            if answer.status == 403 {
                prop_assert_eq!(Some(code.as_str()), forbidden, "{}", text());
            }
        }
    }
    Ok(())
}

/// What a request could change, as counts and digests: a request refused for
/// its credential must leave all of it as it was.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    accounts: i64,
    /// Digest of every account's metadata.
    metadata: String,
    /// (transfers, digest of every balance); `None` when not compared (see `Fuzzer::processor_running`).
    ledger: Option<(i64, String)>,
    /// (clients, revoked clients).
    clients: (i64, i64),
    /// Digests of the plugin versions (with which is active) and of the validation order, the shadows and canaries, and the plugin generation.
    plugins: (String, String, i64),
    /// Digest of the webhooks (with which are deleted) and of their deliveries' states and schedules.
    webhooks: String,
}

async fn footprint(pool: &PgPool, with_ledger: bool) -> Footprint {
    let row: (i64, String, i64, String, i64, i64, String, String, i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM accounts),
                (SELECT coalesce(md5(string_agg(account_id || ':' || metadata::text, ',' ORDER BY account_id)), '') FROM accounts),
                (SELECT count(*) FROM transfers),
                (SELECT coalesce(md5(string_agg(account_id || ':' || balance_minor, ',' ORDER BY account_id)), '') FROM accounts),
                (SELECT count(*) FROM api_clients),
                (SELECT count(*) FROM api_clients WHERE revoked_at IS NOT NULL),
                (SELECT coalesce(md5(string_agg(name || ':' || version || ':' || active, ',' ORDER BY name, version)), '') FROM plugins),
                (SELECT coalesce(md5(string_agg(name || ':' || position, ',' ORDER BY name)), '') FROM validation_order)
                    || (SELECT coalesce(md5(string_agg(name || ':' || version || ':' || (stopped_at IS NULL), ',' ORDER BY name, version, started_at)), '')
                          FROM plugin_shadows)
                    || (SELECT coalesce(md5(string_agg(name || ':' || version || ':' || percent || ':' || coalesce(stop_reason, 'running'), ',' ORDER BY id)), '')
                          FROM plugin_canaries),
                (SELECT generation FROM plugin_generation),
                (SELECT coalesce(md5(string_agg(webhook_id || ':' || url || ':' || (deleted_at IS NULL), ',' ORDER BY webhook_id)), '') FROM webhooks)
                    || (SELECT coalesce(md5(string_agg(delivery_id || ':' || state || ':' || next_attempt_at || ':' || retry_until, ',' ORDER BY delivery_id)), '')
                          FROM webhook_deliveries)",
    )
    .fetch_one(pool)
    .await
    .expect("the footprint query runs");
    let (accounts, metadata, transfers, balances, clients, revoked, plugins, order, generation, webhooks) = row;
    Footprint {
        accounts,
        metadata,
        ledger: with_ledger.then_some((transfers, balances)),
        clients: (clients, revoked),
        plugins: (plugins, order, generation),
        webhooks,
    }
}

/// What a fuzzing run sent, and what the engine accepted.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Requests sent, shrinking a failure included.
    tried: usize,
    /// 2xx answers.
    accepted: usize,
    /// 201 and 202 answers: something new was made or published (a 200 is a read or a replay).
    fresh: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.tried += other.tried;
        self.accepted += other.accepted;
        self.fresh += other.fresh;
    }
}

/// An engine on a runtime of its own, and the keys its probes present.
struct Fuzzer {
    rt: Runtime,
    app: TestApp,
    keys: Keys,
    /// A processor commits accepted transfers beside the probes, so the
    /// ledger's transfers and balances move on their own: they are not
    /// compared around each refused probe (the test counts them at its end).
    processor_running: bool,
}

impl Fuzzer {
    /// Starts the engine as `role` (the API alone where no test needs the
    /// processor: stopping an engine whose consumer is still joining its group
    /// takes seconds) and makes the keys.
    fn start(role: Role) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let app = rt.block_on(spawn(role));
        let keys = rt.block_on(Keys::make(&app));
        Self { rt, app, keys, processor_running: matches!(role, Role::All) }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.rt.block_on(future)
    }

    /// Sends `cases` probes from `strategy`, checking each answer against
    /// `expected` with `may_succeed` as the model of `endpoint` (a route's
    /// name, or anything else for no route in particular), and the footprint
    /// around each probe that must be refused whatever its body says, or that
    /// a bound key sends. Panics with the minimal failing probe.
    fn run<S>(&self, endpoint: &str, cases: u32, strategy: S, may_succeed: impl Fn(&Probe) -> bool) -> Tally
    where
        S: Strategy<Value = Probe>,
    {
        let started = std::time::Instant::now();
        let intended = ROUTES.iter().find(|r| r.endpoint() == endpoint);
        // A fresh connection per request. The engine refuses some requests without
        // reading their body (past the size limit, no credentials), and hyper then
        // closes the connection: a pooled one could be reused just as it closes,
        // which fails the next request on the client's side, not the engine's.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
        let tally = std::cell::Cell::new(Tally::default());
        let (cut_off, watched) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        // No failure file: the tests live outside `src`, and a failure prints its minimal probe.
        let config = Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |probe| {
            tally.set(Tally { tried: tally.get().tried + 1, ..tally.get() });
            let path = sent_path(&self.app, &probe.target);
            let expected = expected(&probe, &path, intended, &may_succeed);
            // One query on each side of the probe: cheap enough for every one.
            let watch = matches!(expected, Expected::Exactly(..)) || probe.credentials == Credentials::OtherOwner;
            let before = watch.then(|| self.block_on(footprint(&self.app.db.pool, !self.processor_running)));
            let answer = match self.block_on(send(&client, &self.app, &self.keys, &probe)) {
                Ok(answer) => Some(answer),
                // The engine answered (413, 401...) and closed while the client was
                // still writing a body past the limit: the client sees a broken pipe
                // or a reset instead of the answer. An HTTP/1.1 fact, not a failure.
                Err(e) if probe.body.len() > body_bytes_max(&probe.target) && e.is_request() => {
                    cut_off.set(cut_off.get() + 1);
                    None
                }
                Err(e) => return Err(TestCaseError::fail(format!("no answer: {e:?}"))),
            };
            if let Some(answer) = &answer {
                check(answer, expected)?;
                if (200..300).contains(&answer.status) {
                    let fresh = usize::from(matches!(answer.status, 201 | 202));
                    tally.set(Tally { accepted: tally.get().accepted + 1, fresh: tally.get().fresh + fresh, ..tally.get() });
                }
            }
            let refused = answer.as_ref().is_none_or(|a| !(200..300).contains(&a.status));
            if let Some(before) = before.filter(|_| refused) {
                watched.set(watched.get() + 1);
                let after = self.block_on(footprint(&self.app.db.pool, !self.processor_running));
                prop_assert_eq!(after, before, "a refused request changed something");
            }
            Ok(())
        });
        if let Err(failure) = result {
            panic!("{endpoint}: {failure}");
        }
        let tally = tally.get();
        eprintln!(
            "bad_input: {endpoint}: {} inputs tried in {:.1} s, {} accepted as valid, {} refusals seen to change nothing, {} oversized cut off mid-body",
            tally.tried,
            started.elapsed().as_secs_f64(),
            tally.accepted,
            watched.get(),
            cut_off.get(),
        );
        tally
    }

    fn stop(self) {
        let Self { rt, app, .. } = self;
        rt.block_on(app.stop());
    }
}

async fn spawn(role: Role) -> TestApp {
    let db = common::TestDb::new().await;
    let settings = test_settings(&db);
    TestApp::spawn_with(db, settings, role).await
}

// ---------------------------------------------------------------------------
// Generators: JSON values, strings, numbers, bodies, paths, queries, headers.
// ---------------------------------------------------------------------------

/// Strings that have broken parsers before, or that sit on a boundary.
const NASTY_STRINGS: &[&str] = &[
    "",
    " ",
    "EUR",
    "eur",
    "Eur",
    "EURO",
    "EU",
    "XAU",
    "XXX",
    "JPY",
    "BHD",
    "0",
    "1",
    "-1",
    "+1",
    "1.00",
    "0.00",
    "0.01",
    "0.001",
    "1.001",
    "1e2",
    "1E-2",
    ".5",
    "5.",
    "1,00",
    "0x10",
    " 1",
    "NaN",
    "Infinity",
    "null",
    "true",
    "[]",
    "{}",
    "99999999999999999999",
    "92233720368547758.07",
    "92233720368547758.08",
    "9223372036854775807",
    "-9223372036854775808",
    "\0",
    "a\0b",
    "\u{7f}",
    "\u{feff}1",
    "\u{202e}RUE",
    "\u{ff11}",
    "\u{0663}",
    "\u{1d11e}",
    "\u{fffd}",
    "\r\n",
    "../../etc/passwd",
    "%00",
    "%FF",
    "' OR '1'='1",
    "<script>",
    "limits",
    "Limits",
    "a-b_c",
    "validator",
    "converter",
    "describer",
    "VALIDATOR",
    "00000000-0000-0000-0000-000000000000",
    "0194f1e2-7a3b-7c4d-8e5f-000000000001",
    "0194F1E2-7A3B-7C4D-8E5F-000000000001",
    "0194f1e27a3b7c4d8e5f000000000001",
    "{0194f1e2-7a3b-7c4d-8e5f-000000000001}",
    "urn:uuid:0194f1e2-7a3b-7c4d-8e5f-000000000001",
    "0194f1e2-7a3b-7c4d-8e5f-00000000000",
];

/// Number texts on the edges of i32, i64, u64, f64 and exact decimals.
const NASTY_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "1",
    "-1",
    "1.0",
    "1.5",
    "0.01",
    "12.34",
    "12.345",
    "0.1e1",
    "1e2",
    "1E+2",
    "1e-2",
    "1e400",
    "-1e400",
    "2147483647",
    "2147483648",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "92233720368547758.07",
    "100000000000000000000.00",
    "99999999999999999999999999999999999999999999999999",
];

/// Any text: nasty cases, arbitrary characters (NUL and controls included),
/// decimals, and huge repeats (past every length limit and the body limit).
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(NASTY_STRINGS).prop_map(str::to_owned),
        3 => vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => "[0-9]{1,24}(\\.[0-9]{1,6})?",
        1 => (select(&['x', '\0', '\u{e9}', '\u{1d11e}'][..]), 100..20_000usize).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(NASTY_NUMBERS).prop_map(|text| serde_json::from_str(text).expect("a JSON number")),
        "-?(0|[1-9][0-9]{0,29})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?".prop_filter_map("a JSON number", |t| serde_json::from_str(&t).ok()),
    ]
    .boxed()
}

/// Every field name some endpoint knows, so that "extra" fields sometimes collide.
const FIELD_NAMES: &[&str] = &[
    "transfer_id",
    "sender_id",
    "receiver_id",
    "amount",
    "currency",
    "description",
    "original_amount",
    "original_currency",
    "owner_id",
    "reference",
    "name",
    "kind",
    "config",
    "component",
    "activate",
    "version",
    "names",
    "scopes",
    "owners",
    "metadata",
];

fn key() -> BoxedStrategy<String> {
    prop_oneof![select(FIELD_NAMES).prop_map(str::to_owned), "[a-z_]{1,12}", text()].boxed()
}

/// Any JSON value, nested a little.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String)];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key(), inner), 0..4).prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
    .boxed()
}

#[derive(Clone, Debug)]
enum Edit {
    /// A known field gets another value (wrong type, out of range...), or an unknown field is added.
    Set(String, Value),
    Remove(&'static str),
}

/// Byte snippets spliced into a valid body: bad UTF-8, a lone surrogate
/// (raw and escaped), NUL, a BOM, stray JSON punctuation.
const SNIPPETS: &[&[u8]] = &[
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\\ud800",
    b"\\u0000",
    b"\0",
    b"\xef\xbb\xbf",
    b"\"",
    b",",
    b"}",
    b"{",
    b"]",
    b"/*",
    b"NaN",
    b"\\",
];

/// Bodies around a valid `base`: field edits (most often), raw bytes, other
/// JSON, a cut-short or tampered body, deep nesting, and bodies past the
/// route's limit, `body_bytes_max`.
fn body_around(base: Value, fields: &'static [&'static str], body_bytes_max: usize) -> BoxedStrategy<Vec<u8>> {
    let base_bytes = serde_json::to_vec(&base).unwrap();
    let len = base_bytes.len();
    let edit = prop_oneof![
        3 => (select(fields), json_value()).prop_map(|(field, value)| Edit::Set(field.to_owned(), value)),
        1 => select(fields).prop_map(Edit::Remove),
        1 => (key(), json_value()).prop_map(|(key, value)| Edit::Set(key, value)),
    ];
    let edited = vec(edit, 0..3).prop_map(move |edits| {
        let mut body = base.clone();
        let object = body.as_object_mut().expect("bases are objects");
        for edit in edits {
            match edit {
                Edit::Set(key, value) => object.insert(key, value),
                Edit::Remove(key) => object.remove(key),
            };
        }
        serde_json::to_vec(&body).unwrap()
    });
    // Enough padding to pass the limit (the upload route's base is past it already).
    let pad_min = body_bytes_max.saturating_sub(len) + 1;
    let (cut, spliced, padded) = (base_bytes.clone(), base_bytes.clone(), base_bytes);
    prop_oneof![
        8 => edited,
        1 => vec(any::<u8>(), 0..512),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (0..len).prop_map(move |n| cut[..n].to_vec()),
        1 => (select(SNIPPETS), 0..=len).prop_map(move |(snippet, at)| [&spliced[..at], snippet, &spliced[at..]].concat()),
        1 => (1..20_000usize).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
        1 => (pad_min..pad_min + 2 * body_bytes_max).prop_map(move |n| [&padded[..], &vec![b' '; n][..]].concat()),
    ]
    .boxed()
}

/// Content types: mostly JSON, else missing, wrong or unparsable.
fn content_type() -> BoxedStrategy<Option<&'static str>> {
    prop_oneof![
        8 => Just(Some("application/json")),
        2 => select(vec![
            None,
            Some("application/json; charset=utf-8"),
            Some("application/problem+json"),
            Some("text/plain"),
            Some("text/json"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonp"),
            Some("application/"),
            Some("json"),
            Some(";;;"),
        ]),
    ]
    .boxed()
}

/// What axum's JSON extractor accepts: `application/json` or `application/*+json`.
fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(essence) = content_type.and_then(|c| c.split(';').next()) else { return false };
    let essence = essence.trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The route's method, else (one time in ten) another one.
fn method(routed: Method, others: &'static [&'static str]) -> BoxedStrategy<Method> {
    prop_oneof![
        9 => Just(routed),
        1 => select(others).prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
    .boxed()
}

const NOT_GET: &[&str] = &["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"];
const NOT_POST: &[&str] = &["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"];
const NOT_PUT: &[&str] = &["GET", "POST", "PATCH", "DELETE", "OPTIONS", "PURGE"];
const NOT_GET_OR_POST: &[&str] = &["PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"];
const NOT_DELETE: &[&str] = &["GET", "POST", "PUT", "PATCH", "OPTIONS", "PURGE"];
/// Not GET either: the PATCH route's path also serves GET, which needs no body.
const NOT_PATCH_NOR_GET: &[&str] = &["POST", "PUT", "DELETE", "OPTIONS", "PURGE"];

/// Percent-encodes every byte but the unreserved ones (RFC 3986).
fn percent_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Decodes `%XX` (and, in query strings, `+` as a space); a `%` not followed
/// by two hex digits stays as it is, as in the URL standard.
fn percent_decode(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) if bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A path segment as the handler sees it, if it is UTF-8.
fn decoded_segment(segment: &str) -> Option<String> {
    String::from_utf8(percent_decode(segment, false)).ok()
}

/// Segments with the parts that trip decoders: bad UTF-8, NUL, an encoded
/// slash, dot segments, stray `%`, a long one.
const SEGMENT_TRICKS: &[&str] =
    &["%FF", "%C3%28", "%ED%A0%80", "%00", "a%00b", "%2F", "a%2Fb", "%2e%2e", "..", ".", "%20", "%", "%ZZ", "%%", "+", "%2B1"];

/// A path segment: one of `valid` (already encoded), encoded text, encoded
/// random bytes (mostly not UTF-8), or a trick.
fn segment(valid: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(valid),
        2 => text().prop_map(|t| percent_encode(&t.as_bytes()[..t.len().min(600)])),
        2 => vec(any::<u8>(), 1..24).prop_map(|b| percent_encode(&b)),
        1 => select(SEGMENT_TRICKS).prop_map(str::to_owned),
        1 => (1..4_000usize).prop_map(|n| "7".repeat(n)),
    ]
    .boxed()
}

/// A query string (with its `?`), mostly absent, else built from keys and
/// values around `limit` and `before`, raw garbage included.
fn query() -> BoxedStrategy<String> {
    let key = prop_oneof![
        4 => select(&["limit", "before"][..]).prop_map(str::to_owned),
        1 => select(&["token", "access_token", "x", "", "limit[]", "li%6Dit", "%FF", "LIMIT", "limit%00"][..]).prop_map(str::to_owned),
    ];
    let value = prop_oneof![
        3 => any::<i64>().prop_map(|n| n.to_string()),
        3 => select(
            &[
                "", "0", "1", "-1", "50", "200", "201", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1.5",
                "1e2", "abc", "%FF", "%", "%zz", "+1", "%2B1", "1%00", "%EF%BC%91", " 1", "1+", "null", "[]",
            ][..]
        )
        .prop_map(str::to_owned),
        1 => vec(any::<u8>(), 0..12).prop_map(|b| percent_encode(&b)),
    ];
    let pair = prop_oneof![
        6 => (key, value).prop_map(|(k, v)| format!("{k}={v}")),
        1 => select(&["limit", "=", "&", "==", "limit==1", "=1"][..]).prop_map(str::to_owned),
    ];
    prop_oneof![
        3 => Just(String::new()),
        1 => Just("?".to_owned()),
        3 => vec(pair, 1..4).prop_map(|pairs| format!("?{}", pairs.join("&"))),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// The model: when may the engine answer 2xx? Written from the API's contract
// (README, OpenAPI), independently of the engine's parsers.
// ---------------------------------------------------------------------------

/// A JSON number the engine reads as an integer: JSON Schema calls every
/// spelling of a whole value an integer (`7`, `7.0`, `70e-1`). Judged on the
/// number's exact text (serde_json keeps it: `arbitrary_precision`), not
/// through f64, which rounds `92233720368547758.07` to a whole number.
fn json_integer(value: &Value) -> Option<i64> {
    let Value::Number(number) = value else { return None };
    exact_whole(&number.to_string())
}

/// The value of JSON number text if it is exactly whole and fits an `i64`:
/// the digits with the point removed, shifted by the exponent, where every
/// digit shifted out must be 0.
fn exact_whole(text: &str) -> Option<i64> {
    let (negative, unsigned) = text.strip_prefix('-').map_or((false, text), |rest| (true, rest));
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{int}{fraction}");
    if int.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^shift
    let shift = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    let digits = digits.trim_start_matches('0');
    let whole: i128 = if digits.is_empty() {
        0
    } else if shift >= 0 {
        // More than 19 significant digits after the shift cannot fit an i64.
        if digits.len() as i64 + shift > 19 {
            return None;
        }
        digits.parse::<i128>().ok()? * 10i128.pow(u32::try_from(shift).ok()?)
    } else {
        let cut = usize::try_from(-shift).ok()?;
        if cut >= digits.len() {
            return None; // nonzero digits all behind the point
        }
        let (kept, dropped) = digits.split_at(digits.len() - cut);
        if dropped.bytes().any(|b| b != b'0') || kept.len() > 19 {
            return None;
        }
        kept.parse::<i128>().ok()?
    };
    i64::try_from(if negative { -whole } else { whole }).ok()
}

/// An integer in a path segment: what Rust's `i64` parse reads (`+5`, `007`), or
/// any JSON spelling of a whole number (`5.0`, `5e0`; not `5.` nor `+5.0`).
fn text_integer(text: &str) -> Option<i64> {
    let number_only = text.bytes().all(|b| b.is_ascii_digit() || b"-.eE+".contains(&b)); // serde_json allows spaces around
    text.parse::<i64>().ok().or_else(|| {
        number_only.then(|| serde_json::from_str::<serde_json::Number>(text).ok()).flatten().and_then(|n| json_integer(&Value::Number(n)))
    })
}

/// A JSON integer the engine reads as an owner id (a positive i64).
fn owner_id(value: Option<&Value>) -> Option<i64> {
    value.and_then(json_integer).filter(|id| *id > 0)
}

/// The minor-unit exponent of an ISO 4217 code the engine supports (upper case, with a minor unit).
fn currency_exponent(code: &str) -> Option<u32> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let exponent = u32::from(iso_currency::Currency::from_code(code)?.exponent()?);
    (exponent <= 18).then_some(exponent)
}

fn currency_of(value: Option<&Value>) -> Option<u32> {
    value.and_then(Value::as_str).and_then(currency_exponent)
}

/// Whether a JSON string or number is an exact, positive amount of a
/// currency with `exponent` minor digits that fits an i64 of minor units.
fn is_amount(value: &Value, exponent: u32) -> bool {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (text.contains('.') && !digits(fraction)) || fraction.len() > exponent as usize {
        return false;
    }
    let padded = format!("{whole}{fraction:0<width$}", width = exponent as usize);
    let minor = padded
        .bytes()
        .try_fold(0i128, |acc, b| acc.checked_mul(10)?.checked_add(i128::from(b - b'0')).filter(|m| *m <= i128::from(i64::MAX)));
    minor.is_some_and(|m| m > 0)
}

fn only_fields(object: &serde_json::Map<String, Value>, allowed: &[&str]) -> bool {
    object.keys().all(|k| allowed.contains(&k.as_str()))
}

/// A field that may be absent: JSON null reads as absent.
fn present<'a>(object: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|v| !v.is_null())
}

const TRANSFER_FIELDS: &[&str] =
    &["transfer_id", "sender_id", "receiver_id", "amount", "currency", "description", "original_amount", "original_currency", "metadata"];

/// A metadata object within every bound: at most 16 keys of `[a-z0-9_.-]{1,64}`,
/// each with a string of at most 256 characters and no NUL.
fn is_metadata(value: &Value) -> bool {
    let key_ok = |k: &str| {
        (1..=METADATA_KEY_CHARS_MAX).contains(&k.chars().count())
            && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    };
    let value_ok = |v: &Value| v.as_str().is_some_and(|v| v.chars().count() <= METADATA_VALUE_CHARS_MAX && !v.contains('\0'));
    value.as_object().is_some_and(|o| o.len() <= METADATA_KEYS_MAX && o.iter().all(|(k, v)| key_ok(k) && value_ok(v)))
}

/// `POST /v1/transfers`: well-formed (accounts and funds aside: refusing for those is a 4xx).
fn transfer_may_succeed(body: &Value) -> bool {
    let Some(o) = body.as_object().filter(|o| only_fields(o, TRANSFER_FIELDS)) else { return false };
    let (Some(sender), Some(receiver)) = (owner_id(o.get("sender_id")), owner_id(o.get("receiver_id"))) else { return false };
    let Some(exponent) = currency_of(o.get("currency")) else { return false };
    let id_ok = present(o, "transfer_id").is_none_or(|id| id.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()));
    let description_ok = present(o, "description")
        .is_none_or(|d| d.as_str().is_some_and(|d| d.chars().count() <= DESCRIPTION_CHARS_MAX && !d.contains('\0')));
    let amount_ok = match (present(o, "amount"), present(o, "original_amount"), present(o, "original_currency")) {
        (Some(amount), None, None) => is_amount(amount, exponent),
        (None, Some(amount), Some(code)) => currency_of(Some(code)).is_some_and(|e| is_amount(amount, e)),
        _ => false,
    };
    let metadata_ok = present(o, "metadata").is_none_or(is_metadata);
    sender != receiver && id_ok && description_ok && amount_ok && metadata_ok
}

const ACCOUNT_FIELDS: &[&str] = &["owner_id", "currency", "metadata"];

/// `POST /v1/accounts`.
fn account_may_succeed(body: &Value) -> bool {
    body.as_object().is_some_and(|o| {
        only_fields(o, ACCOUNT_FIELDS)
            && owner_id(o.get("owner_id")).is_some()
            && currency_of(o.get("currency")).is_some()
            && present(o, "metadata").is_none_or(is_metadata)
    })
}

const METADATA_UPDATE_FIELDS: &[&str] = &["metadata"];

/// The body of `PATCH /v1/accounts/{owner_id}/{currency}`: the metadata is required, and null is no metadata object.
fn metadata_update_may_succeed(body: &Value) -> bool {
    body.as_object().is_some_and(|o| only_fields(o, METADATA_UPDATE_FIELDS) && o.get("metadata").is_some_and(is_metadata))
}

const MOVE_FIELDS: &[&str] = &["owner_id", "currency", "amount", "reference"];

/// `POST /v1/deposits` and `/v1/withdrawals` (credentials aside).
fn move_may_succeed(body: &Value) -> bool {
    let Some(o) = body.as_object().filter(|o| only_fields(o, MOVE_FIELDS)) else { return false };
    let Some(exponent) = currency_of(o.get("currency")) else { return false };
    let reference_ok = o.get("reference").and_then(Value::as_str).is_some_and(|r| {
        let chars = r.chars().count();
        (1..=REFERENCE_CHARS_MAX).contains(&chars) && !r.contains('\0')
    });
    owner_id(o.get("owner_id")).is_some() && o.get("amount").is_some_and(|a| is_amount(a, exponent)) && reference_ok
}

/// Plugin names as the registry stores them.
fn is_plugin_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

const UPLOAD_FIELDS: &[&str] = &["name", "kind", "config", "component", "activate", "advisory"];

/// `POST /v1/admin/plugins`: a real component is only ever the unedited one.
fn upload_may_succeed(body: &Value, component: &str) -> bool {
    let Some(o) = body.as_object().filter(|o| only_fields(o, UPLOAD_FIELDS)) else { return false };
    let kind_ok = present(o, "kind").is_none_or(|k| matches!(k.as_str(), Some("validator" | "converter" | "describer")));
    let activate_ok = o.get("activate").is_none_or(Value::is_boolean);
    // The component is the `limits` validator: it may be advisory whatever the body says its kind is not.
    let advisory_ok = o.get("advisory").is_none_or(|a| a == &Value::Bool(false) || (a == &Value::Bool(true) && kind_ok));
    o.get("name").and_then(Value::as_str).is_some_and(is_plugin_name)
        && o.get("component").and_then(Value::as_str) == Some(component)
        && kind_ok
        && activate_ok
        && advisory_ok
}

/// `PUT /v1/admin/validation-order`: distinct, well-formed names.
fn order_may_succeed(body: &Value) -> bool {
    let Some(names) = body.as_object().filter(|o| only_fields(o, &["names"])).and_then(|o| o.get("names")).and_then(Value::as_array) else {
        return false;
    };
    let names: Option<Vec<&str>> = names.iter().map(Value::as_str).collect();
    names.is_some_and(|names| names.iter().all(|n| is_plugin_name(n)) && names.iter().collect::<BTreeSet<_>>().len() == names.len())
}

const CLIENT_FIELDS: &[&str] = &["name", "scopes", "owners"];
/// The scopes a client may be given.
const SCOPES: &[&str] = &["transfers:write", "transfers:read", "accounts:write", "accounts:read"];
/// Most owners a client may be bound to.
const CLIENT_OWNERS_MAX: usize = 1_000;
/// Longest client name.
const CLIENT_NAME_CHARS_MAX: usize = 128;

/// `POST /v1/admin/clients`: a name, known scopes each at most once, and owners if bound.
fn client_may_succeed(body: &Value) -> bool {
    let Some(o) = body.as_object().filter(|o| only_fields(o, CLIENT_FIELDS)) else { return false };
    let name_ok = o
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|name| (1..=CLIENT_NAME_CHARS_MAX).contains(&name.chars().count()) && !name.chars().any(char::is_control));
    let scopes: Option<Vec<&str>> = o.get("scopes").and_then(Value::as_array).and_then(|s| s.iter().map(Value::as_str).collect());
    let scopes_ok =
        scopes.is_some_and(|s| !s.is_empty() && s.iter().all(|s| SCOPES.contains(s)) && s.iter().collect::<BTreeSet<_>>().len() == s.len());
    let owners_ok = present(o, "owners").is_none_or(|owners| {
        owners
            .as_array()
            .is_some_and(|ids| (1..=CLIENT_OWNERS_MAX).contains(&ids.len()) && ids.iter().all(|id| owner_id(Some(id)).is_some()))
    });
    name_ok && scopes_ok && owners_ok
}

/// The `limit` and `before` query of an account's transfers: each at most
/// once, each an i64, nothing else (decoded as `application/x-www-form-urlencoded`).
fn page_query_ok(target: &str) -> bool {
    let Some((_, query)) = target.split_once('?') else { return true };
    let mut seen = BTreeSet::new();
    query.split('&').filter(|pair| !pair.is_empty()).all(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = String::from_utf8_lossy(&percent_decode(key, true)).into_owned();
        let value = String::from_utf8_lossy(&percent_decode(value, true)).into_owned();
        matches!(key.as_str(), "limit" | "before") && seen.insert(key) && value.parse::<i64>().is_ok()
    })
}

/// The path of a target, split into its segments (query dropped).
fn segments(target: &str) -> Vec<&str> {
    target.split('?').next().unwrap_or_default().trim_start_matches('/').split('/').collect()
}

/// An owner id in a path: Rust's i64 parse (a leading `+` or zeros are
/// tolerated) or a JSON spelling of a whole number.
fn path_owner_ok(segment: &str) -> bool {
    decoded_segment(segment).and_then(|s| text_integer(&s)).is_some_and(|id| id > 0)
}

fn path_currency_ok(segment: &str) -> bool {
    decoded_segment(segment).is_some_and(|s| currency_exponent(&s).is_some())
}

// ---------------------------------------------------------------------------
// 1. Generated malformed requests, one engine per test.
// ---------------------------------------------------------------------------

#[test]
fn malformed_transfer_requests_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let f = Fuzzer::start(Role::All);
    f.block_on(async {
        f.app.open_account(1, "EUR", "1000000.00").await;
        f.app.open_account(2, "EUR", "0").await;
    });
    let seeded = f.block_on(f.app.post("/v1/transfers", &json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})));
    assert_eq!(seeded.status(), 202);
    let seeded_id = f.block_on(seeded.json::<Value>()).unwrap()["transfer_id"].as_str().unwrap().to_owned();

    let base = json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR", "description": "fuzz", "metadata": {"channel": "fuzz"}});
    let need = route_named("POST /v1/transfers").need;
    let bodies = body_around(base, TRANSFER_FIELDS, METADATA_BODY_BYTES_MAX);
    let submits = (method(Method::POST, NOT_POST), content_type(), credentials(need), bodies, query()).prop_map(
        |(method, content_type, credentials, body, query)| Probe {
            content_type,
            credentials,
            body,
            ..Probe::new(method, format!("/v1/transfers{query}"))
        },
    );
    let submitted =
        f.run("POST /v1/transfers", 800, submits, |p| p.sends_json(&Method::POST) && p.json().is_some_and(|b| transfer_may_succeed(&b)));

    let ids = vec![seeded_id.clone(), seeded_id.to_uppercase(), seeded_id.replace('-', ""), uuid::Uuid::new_v4().to_string()];
    let need = route_named("GET /v1/transfers/{id}").need;
    let reads = (method(Method::GET, NOT_GET), credentials(need), segment(ids), query())
        .prop_map(|(method, credentials, id, query)| Probe { credentials, ..Probe::new(method, format!("/v1/transfers/{id}{query}")) });
    let read = f.run("GET /v1/transfers/{id}", 400, reads, |p| {
        p.method == Method::GET && decoded_segment(segments(&p.target)[2]).is_some_and(|id| uuid::Uuid::parse_str(&id).is_ok())
    });
    eprintln!("bad_input: transfers: {} inputs in all", submitted.tried + read.tried);
    f.block_on(async {
        let app = &f.app;
        // The accepted transfers were processed: a last one from each sender
        // (the key of a partition) completes behind them. Owner 2 is topped up
        // first, so that what the fuzzed transfers took cannot refuse it.
        let top_up = json!({"owner_id": 2, "currency": "EUR", "amount": "100.00", "reference": "top-up"});
        assert_eq!(app.admin_post("/v1/deposits", &top_up).await.status(), 201);
        for sender in [1, 2] {
            let last = json!({"sender_id": sender, "receiver_id": 3 - sender, "amount": "0.01", "currency": "EUR"});
            let accepted: Value = app.post("/v1/transfers", &last).await.json().await.unwrap();
            let id = accepted["transfer_id"].as_str().unwrap_or_else(|| panic!("{accepted}"));
            let done = app.wait_final(id).await;
            assert_eq!(done["status"], "completed", "{done}");
        }
        // Each transfer in the ledger was answered 202 (a replay is a 200): no refused one was published.
        let (transfers,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM transfers WHERE kind = 'transfer'").fetch_one(&app.db.pool).await.unwrap();
        assert_eq!(transfers, i64::try_from(submitted.fresh + 3).unwrap(), "the fuzzed 202s, the seeded and the two last transfers");
        assert_audit_passes(&app.ledger()).await;
    });
    f.stop();
}

#[test]
fn malformed_account_requests_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let f = Fuzzer::start(Role::Api);
    f.block_on(async {
        f.app.open_account(1, "EUR", "10.00").await;
        // More of the accounts the path generators name exist, so that more reads and metadata updates get past "no such account".
        for (owner, currency) in [(2, "EUR"), (1, "JPY"), (2, "JPY")] {
            f.app.open_account(owner, currency, "0").await;
        }
    });
    let accounts_before = f.block_on(footprint(&f.app.db.pool, true)).accounts;

    let base = json!({"owner_id": 3, "currency": "EUR", "metadata": {"kyc_tier": "basic"}});
    let need = route_named("POST /v1/accounts").need;
    let bodies = body_around(base, ACCOUNT_FIELDS, METADATA_BODY_BYTES_MAX);
    let creates = (method(Method::POST, NOT_POST), content_type(), credentials(need), bodies).prop_map(
        |(method, content_type, credentials, body)| Probe {
            content_type,
            credentials,
            body,
            ..Probe::new(method, "/v1/accounts".to_owned())
        },
    );
    let created =
        f.run("POST /v1/accounts", 400, creates, |p| p.sends_json(&Method::POST) && p.json().is_some_and(|b| account_may_succeed(&b)));

    let owners = || {
        segment(
            ["1", "2", "+1", "01", "0", "-1", "9223372036854775807", "9223372036854775808", "1.0", "1e2", "%31", "%201"]
                .map(String::from)
                .to_vec(),
        )
    };
    let currencies = || segment(["EUR", "eur", "JPY", "EU", "EURO", "%45UR", "XAU", "E%00R"].map(String::from).to_vec());
    let need = route_named("GET /v1/accounts/{owner_id}/{currency}").need;
    let reads = (method(Method::GET, NOT_GET), credentials(need), owners(), currencies(), query()).prop_map(
        |(method, credentials, owner, currency, query)| Probe {
            credentials,
            ..Probe::new(method, format!("/v1/accounts/{owner}/{currency}{query}"))
        },
    );
    let mut tally = f.run("GET /v1/accounts/{owner_id}/{currency}", 400, reads, |p| {
        let s = segments(&p.target);
        p.method == Method::GET && path_owner_ok(s[2]) && path_currency_ok(s[3])
    });

    let need = route_named("PATCH /v1/accounts/{owner_id}/{currency}").need;
    let bodies = body_around(json!({"metadata": {"kyc_tier": "verified"}}), METADATA_UPDATE_FIELDS, METADATA_BODY_BYTES_MAX);
    let updates = (method(Method::PATCH, NOT_PATCH_NOR_GET), content_type(), credentials(need), owners(), currencies(), bodies).prop_map(
        |(method, content_type, credentials, owner, currency, body)| Probe {
            content_type,
            credentials,
            body,
            ..Probe::new(method, format!("/v1/accounts/{owner}/{currency}"))
        },
    );
    tally += f.run("PATCH /v1/accounts/{owner_id}/{currency}", 600, updates, |p| {
        let s = segments(&p.target);
        p.sends_json(&Method::PATCH)
            && path_owner_ok(s[2])
            && path_currency_ok(s[3])
            && p.json().is_some_and(|b| metadata_update_may_succeed(&b))
    });

    let need = route_named("GET /v1/accounts/{owner_id}/{currency}").need;
    let pages = (method(Method::GET, NOT_GET), credentials(need), owners(), currencies(), query()).prop_map(
        |(method, credentials, owner, currency, query)| Probe {
            credentials,
            ..Probe::new(method, format!("/v1/accounts/{owner}/{currency}/transfers{query}"))
        },
    );
    tally += f.run("GET /v1/accounts/{owner_id}/{currency}/transfers", 600, pages, |p| {
        let s = segments(&p.target);
        p.method == Method::GET && path_owner_ok(s[2]) && path_currency_ok(s[3]) && page_query_ok(&p.target)
    });
    tally += created;
    eprintln!("bad_input: accounts: {} inputs in all", tally.tried);
    // Each account was opened by a request answered 201.
    let accounts = f.block_on(footprint(&f.app.db.pool, true)).accounts;
    assert_eq!(accounts, accounts_before + i64::try_from(created.fresh).unwrap());
    f.stop();
}

#[test]
fn malformed_deposits_and_withdrawals_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let f = Fuzzer::start(Role::Api);
    f.block_on(async {
        f.app.open_account(1, "EUR", "1000.00").await;
        f.app.open_account(2, "JPY", "1000").await;
    });
    let mut tried = 0;
    for (path, amount) in [("/v1/deposits", "1.00"), ("/v1/withdrawals", "0.01")] {
        let base = json!({"owner_id": 1, "currency": "EUR", "amount": amount, "reference": format!("fuzz{path}")});
        let moves =
            (method(Method::POST, NOT_POST), content_type(), credentials(Need::Admin), body_around(base, MOVE_FIELDS, BODY_BYTES_MAX))
                .prop_map(move |(method, content_type, credentials, body)| Probe {
                    content_type,
                    credentials,
                    body,
                    ..Probe::new(method, path.to_owned())
                });
        tried += f
            .run(&format!("POST {path}"), 400, moves, |p| p.sends_json(&Method::POST) && p.json().is_some_and(|b| move_may_succeed(&b)))
            .tried;
    }
    eprintln!("bad_input: deposits and withdrawals: {tried} inputs in all");
    f.block_on(assert_audit_passes(&f.app.ledger()));
    f.stop();
}

#[test]
fn malformed_admin_plugin_requests_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let f = Fuzzer::start(Role::Api);
    f.block_on(f.app.upload_plugin("limits", "limits", "validator", json!({}), true));
    let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes("limits"));
    let names =
        || segment(["limits", "fuzzed", "nope", "LIMITS", "limits%00", "-limits", "l".repeat(64).as_str()].map(String::from).to_vec());

    let lists = (method(Method::GET, NOT_GET_OR_POST), credentials(Need::Admin), query())
        .prop_map(|(method, credentials, query)| Probe { credentials, ..Probe::new(method, format!("/v1/admin/plugins{query}")) });
    let mut tried = f.run("GET /v1/admin/plugins", 100, lists, |p| p.method == Method::GET).tried;

    let base = json!({"name": "fuzzed", "kind": "validator", "config": {}, "component": component.clone(), "activate": false});
    let uploads =
        (method(Method::POST, NOT_GET_OR_POST), content_type(), credentials(Need::Admin), body_around(base, UPLOAD_FIELDS, BODY_BYTES_MAX))
            .prop_map(|(method, content_type, credentials, body)| Probe {
                content_type,
                credentials,
                body,
                ..Probe::new(method, "/v1/admin/plugins".to_owned())
            });
    tried += f
        .run("POST /v1/admin/plugins", 130, uploads, |p| {
            // The upload route has its own, larger body limit.
            p.method == Method::POST && is_json_content_type(p.content_type) && p.json().is_some_and(|b| upload_may_succeed(&b, &component))
        })
        .tried;

    let activations = (
        method(Method::POST, NOT_POST),
        content_type(),
        credentials(Need::Admin),
        names(),
        body_around(json!({"version": 1}), &["version"], BODY_BYTES_MAX),
    )
        .prop_map(|(method, content_type, credentials, name, body)| Probe {
            content_type,
            credentials,
            body,
            ..Probe::new(method, format!("/v1/admin/plugins/{name}/activate"))
        });
    tried += f
        .run("POST /v1/admin/plugins/{name}/activate", 240, activations, |p| {
            let version_ok = p
                .json()
                .and_then(|b| b.as_object().filter(|o| only_fields(o, &["version"])).and_then(|o| o.get("version")).and_then(json_integer));
            p.sends_json(&Method::POST)
                && decoded_segment(segments(&p.target)[3]).is_some_and(|n| is_plugin_name(&n))
                && version_ok.is_some_and(|v| i32::try_from(v).is_ok())
        })
        .tried;

    let deactivations =
        (method(Method::POST, NOT_POST), credentials(Need::Admin), names(), query()).prop_map(|(method, credentials, name, query)| Probe {
            credentials,
            ..Probe::new(method, format!("/v1/admin/plugins/{name}/deactivate{query}"))
        });
    tried += f
        .run("POST /v1/admin/plugins/{name}/deactivate", 160, deactivations, |p| {
            p.method == Method::POST && decoded_segment(segments(&p.target)[3]).is_some_and(|n| is_plugin_name(&n))
        })
        .tried;

    // Lists of known, unknown, malformed and repeated names, besides the usual bodies.
    let name_lists = vec(select(&["limits", "limits", "fuzzed", "nope", "Limits", "limits\0", ""][..]), 0..4)
        .prop_map(|names| serde_json::to_vec(&json!({ "names": names })).unwrap());
    let order_bodies = prop_oneof![body_around(json!({"names": ["limits"]}), &["names"], BODY_BYTES_MAX), name_lists];
    let orders = (method(Method::PUT, NOT_PUT), content_type(), credentials(Need::Admin), order_bodies).prop_map(
        |(method, content_type, credentials, body)| Probe {
            content_type,
            credentials,
            body,
            ..Probe::new(method, "/v1/admin/validation-order".to_owned())
        },
    );
    tried += f
        .run("PUT /v1/admin/validation-order", 240, orders, |p| {
            p.sends_json(&Method::PUT) && p.json().is_some_and(|b| order_may_succeed(&b))
        })
        .tried;
    eprintln!("bad_input: admin plugins: {tried} inputs in all");
    f.stop();
}

#[test]
fn malformed_admin_client_requests_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let f = Fuzzer::start(Role::Api);
    // The only client the probes may revoke: the keys they present stay valid.
    let victim = f.block_on(create_client(&f.app.db.pool, "victim", &[Scope::AccountsRead], None));
    let clients_before = f.block_on(footprint(&f.app.db.pool, true)).clients.0;

    let lists = (method(Method::GET, NOT_GET_OR_POST), credentials(Need::Admin), query())
        .prop_map(|(method, credentials, query)| Probe { credentials, ..Probe::new(method, format!("/v1/admin/clients{query}")) });
    let mut tally = f.run("GET /v1/admin/clients", 100, lists, |p| p.method == Method::GET);

    let base = json!({"name": "fuzzed", "scopes": ["transfers:read", "accounts:read"], "owners": [1, 2]});
    let creates =
        (method(Method::POST, NOT_GET_OR_POST), content_type(), credentials(Need::Admin), body_around(base, CLIENT_FIELDS, BODY_BYTES_MAX))
            .prop_map(|(method, content_type, credentials, body)| Probe {
                content_type,
                credentials,
                body,
                ..Probe::new(method, "/v1/admin/clients".to_owned())
            });
    let created =
        f.run("POST /v1/admin/clients", 240, creates, |p| p.sends_json(&Method::POST) && p.json().is_some_and(|b| client_may_succeed(&b)));

    let id = client_id_of(&victim);
    let ids = [
        id.hyphenated().to_string(),
        id.simple().to_string(),
        id.hyphenated().to_string().to_uppercase(),
        id.braced().to_string(),
        id.urn().to_string(),
        uuid::Uuid::nil().to_string(),
        uuid::Uuid::new_v4().to_string(),
    ];
    let ids = ids.iter().map(|id| percent_encode(id.as_bytes())).collect();
    let revokes = (method(Method::DELETE, NOT_DELETE), credentials(Need::Admin), segment(ids), query())
        .prop_map(|(method, credentials, id, query)| Probe { credentials, ..Probe::new(method, format!("/v1/admin/clients/{id}{query}")) });
    tally += f.run("DELETE /v1/admin/clients/{client_id}", 240, revokes, |p| {
        p.method == Method::DELETE && decoded_segment(segments(&p.target)[3]).is_some_and(|id| uuid::Uuid::try_parse(&id).is_ok())
    });
    tally += created;
    eprintln!("bad_input: admin clients: {} inputs in all", tally.tried);
    // Each client was made by a request answered 201.
    let clients = f.block_on(footprint(&f.app.db.pool, true)).clients.0;
    assert_eq!(clients, clients_before + i64::try_from(created.fresh).unwrap());
    f.stop();
}

#[test]
fn unknown_paths_and_unrouted_methods_answer_json_errors() {
    let f = Fuzzer::start(Role::Api);
    let words = [
        "v1",
        "transfers",
        "accounts",
        "deposits",
        "withdrawals",
        "admin",
        "plugins",
        "activate",
        "deactivate",
        "validation-order",
        "clients",
        "healthz",
        "metrics",
        "openapi.json",
        "1",
        "EUR",
    ];
    let words = words.map(String::from).to_vec();
    let methods = select(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"][..]);
    let paths = (methods, unfit_credentials(), vec(segment(words), 0..6), query()).prop_map(|(method, credentials, segments, query)| {
        Probe { credentials, ..Probe::new(Method::from_bytes(method.as_bytes()).unwrap(), format!("/{}{query}", segments.join("/"))) }
    });
    // Nothing exists in this engine, no probe has a body, and no credential
    // here is fit for a `/v1` route: only the public routes answer 2xx.
    let tried = f.run("any path", 300, paths, |_| true).tried;
    eprintln!("bad_input: paths: {tried} inputs in all");
    f.stop();
}

/// Hand-picked cases the generators reach only by luck, each with the exact code intended.
#[test]
fn hand_picked_bad_requests_answer_their_exact_codes() {
    let f = Fuzzer::start(Role::Api);
    f.block_on(async {
        f.app.open_account(1, "EUR", "10.00").await;
        f.app.open_account(2, "EUR", "0").await;
    });
    let transfer =
        |description: &str| json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR", "description": description});
    let deposit = |reference: &str| json!({"owner_id": 1, "currency": "EUR", "amount": "1.00", "reference": reference});
    let with_metadata =
        |metadata: Value| json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR", "metadata": metadata});
    let sent_as = |credentials: Credentials, probe: Probe| Probe { credentials, ..probe };
    let cases: Vec<(Probe, u16, &str)> = vec![
        // PostgreSQL text cannot hold NUL: refused at the door, not at the ledger.
        (json_probe(Method::POST, "/v1/transfers", &transfer("rent\0"), Credentials::Client), 422, "description_invalid"),
        (json_probe(Method::POST, "/v1/deposits", &deposit("wire\0"), Credentials::Admin), 422, "reference_invalid"),
        (json_probe(Method::POST, "/v1/withdrawals", &deposit("\0"), Credentials::Admin), 422, "reference_invalid"),
        // Metadata: every rule, and every shape that is not an object of strings, is `metadata_invalid`.
        (json_probe(Method::POST, "/v1/transfers", &with_metadata(json!({"note": "a\0b"})), Credentials::Client), 422, "metadata_invalid"),
        (json_probe(Method::POST, "/v1/transfers", &with_metadata(json!({"Note": "x"})), Credentials::Client), 422, "metadata_invalid"),
        (json_probe(Method::POST, "/v1/transfers", &with_metadata(json!({"note": 7})), Credentials::Client), 422, "metadata_invalid"),
        (json_probe(Method::POST, "/v1/transfers", &with_metadata(json!([])), Credentials::Client), 422, "metadata_invalid"),
        (
            json_probe(
                Method::POST,
                "/v1/accounts",
                &json!({"owner_id": 3, "currency": "EUR", "metadata": {"k": "v".repeat(257)}}),
                Credentials::Client,
            ),
            422,
            "metadata_invalid",
        ),
        (
            json_probe(Method::POST, "/v1/accounts", &json!({"owner_id": 3, "currency": "EUR", "metadata": "k=v"}), Credentials::Client),
            422,
            "metadata_invalid",
        ),
        (json_probe(Method::PATCH, "/v1/accounts/1/EUR", &json!({"metadata": null}), Credentials::Client), 422, "metadata_invalid"),
        (
            json_probe(Method::PATCH, "/v1/accounts/1/EUR", &json!({"metadata": {"k": {"v": "w"}}}), Credentials::Client),
            422,
            "metadata_invalid",
        ),
        (json_probe(Method::PATCH, "/v1/accounts/1/EUR", &json!({}), Credentials::Client), 422, "invalid_body"),
        (json_probe(Method::PATCH, "/v1/accounts/1/EUR", &json!([{}]), Credentials::Client), 422, "invalid_body"),
        // The system accounts (owner 0) are refused as every route refuses owner 0.
        (json_probe(Method::PATCH, "/v1/accounts/0/EUR", &json!({"metadata": {}}), Credentials::Admin), 422, "owner_id_invalid"),
        (json_probe(Method::PATCH, "/v1/accounts/1/USD", &json!({"metadata": {}}), Credentials::Client), 404, "account_not_found"),
        // Path segments that are not UTF-8, or that no plugin can be named.
        (Probe::new(Method::GET, "/v1/transfers/%FF%FE".into()), 400, "invalid_path"),
        (Probe::new(Method::GET, "/v1/accounts/%C3%28/EUR".into()), 400, "invalid_path"),
        (Probe::new(Method::GET, "/v1/accounts/1/%ED%A0%80/transfers".into()), 400, "invalid_path"),
        (Probe::new(Method::GET, "/v1/accounts/1/E%00R".into()), 422, "currency_not_supported"),
        (json_probe(Method::POST, "/v1/admin/plugins/%FF/activate", &json!({"version": 1}), Credentials::Admin), 400, "invalid_path"),
        (
            json_probe(Method::POST, "/v1/admin/plugins/limits%00/activate", &json!({"version": 1}), Credentials::Admin),
            404,
            "plugin_not_found",
        ),
        (sent_as(Credentials::Admin, Probe::new(Method::POST, "/v1/admin/plugins/%00/deactivate".into())), 404, "plugin_not_found"),
        (sent_as(Credentials::Admin, Probe::new(Method::DELETE, "/v1/admin/clients/not-a-uuid".into())), 404, "client_not_found"),
        // Queries.
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?limit=%FF".into()), 422, "invalid_query"),
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?limit=1&limit=2".into()), 422, "invalid_query"),
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?before=9223372036854775808".into()), 422, "invalid_query"),
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?token=x".into()), 422, "invalid_query"),
        // Methods a route does not take, whatever the credential.
        (Probe::new(Method::DELETE, "/v1/transfers".into()), 405, "method_not_allowed"),
        (sent_as(Credentials::Missing, Probe::new(Method::GET, "/v1/deposits".into())), 405, "method_not_allowed"),
        (Probe::new(Method::OPTIONS, "/v1/accounts/1/EUR".into()), 405, "method_not_allowed"),
        (Probe::new(Method::from_bytes(b"PURGE").unwrap(), "/v1/admin/validation-order".into()), 405, "method_not_allowed"),
        // Bodies: nesting past serde_json's recursion limit, bad UTF-8, a lone surrogate.
        (raw_probe("/v1/transfers", nested_amount(5_000)), 400, "malformed_json"),
        (raw_probe("/v1/transfers", b"{\"sender_id\": 1, \"description\": \"\xff\"}".to_vec()), 400, "malformed_json"),
        (raw_probe("/v1/transfers", br#"{"sender_id": 1, "description": "\ud800"}"#.to_vec()), 400, "malformed_json"),
        (raw_probe("/v1/accounts", br#"{"owner_id": 1, "currency": "EUR", "owner_id": 2}"#.to_vec()), 422, "invalid_body"),
        (raw_probe("/v1/accounts", Vec::new()), 400, "malformed_json"),
        // A derived struct also reads a JSON array of its fields in order (`[[]]`
        // as `{"names": []}`); every body here is an object, and nothing else is.
        (json_probe(Method::PUT, "/v1/admin/validation-order", &json!([[]]), Credentials::Admin), 422, "invalid_body"),
        (json_probe(Method::POST, "/v1/accounts", &json!([3, "EUR"]), Credentials::Admin), 422, "invalid_body"),
        (json_probe(Method::POST, "/v1/deposits", &json!([1, "EUR", "1.00", "wire-7"]), Credentials::Admin), 422, "invalid_body"),
        (json_probe(Method::POST, "/v1/admin/clients", &json!(["shop", ["transfers:write"]]), Credentials::Admin), 422, "invalid_body"),
        (raw_probe("/v1/transfers", b" [1, 2, \"1.00\", \"EUR\"]".to_vec()), 422, "invalid_body"),
        // The credential is judged before the path, query or body is read...
        (sent_as(Credentials::Missing, raw_probe("/v1/transfers", b"{not json".to_vec())), 401, "unauthorized"),
        (sent_as(Credentials::Revoked, Probe::new(Method::GET, "/v1/transfers/%FF%FE".into())), 401, "unauthorized"),
        (sent_as(Credentials::ScopeMissing, raw_probe("/v1/transfers", nested_amount(5_000))), 403, "scope_missing"),
        (
            sent_as(Credentials::ScopeMissing, Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?limit=%FF".into())),
            403,
            "scope_missing",
        ),
        (sent_as(Credentials::Client, raw_probe("/v1/deposits", b"{not json".to_vec())), 403, "scope_missing"),
        (sent_as(Credentials::OtherOwner, raw_probe("/v1/admin/clients", Vec::new())), 403, "scope_missing"),
        // ...but a bound key's owner is in the body, path or query, which must be read first.
        (json_probe(Method::POST, "/v1/transfers", &transfer("rent"), Credentials::OtherOwner), 403, "owner_not_permitted"),
        (
            json_probe(
                Method::POST,
                "/v1/transfers",
                &json!({"sender_id": "1", "receiver_id": 2, "amount": "1", "currency": "EUR"}),
                Credentials::OtherOwner,
            ),
            422,
            "invalid_body",
        ),
        (sent_as(Credentials::OtherOwner, Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?limit=x".into())), 422, "invalid_query"),
        (sent_as(Credentials::OtherOwner, Probe::new(Method::GET, "/v1/transfers/not-a-uuid".into())), 422, "transfer_id_invalid"),
    ];
    let before = f.block_on(footprint(&f.app.db.pool, true));
    for (probe, status, code) in cases {
        let answer = f.block_on(send(&f.app.client, &f.app, &f.keys, &probe)).unwrap();
        let got = error_code(&answer).unwrap_or_else(|why| panic!("{probe:?}: {why}"));
        assert_eq!((answer.status, got.as_str()), (status, code), "{probe:?}");
    }
    // None of the refused requests changed anything, nor reached the ledger.
    assert_eq!(f.block_on(footprint(&f.app.db.pool, true)), before);
    f.stop();
}

#[test]
fn a_repeated_name_in_the_validation_order_is_refused_and_the_order_is_unchanged() {
    let f = Fuzzer::start(Role::Api);
    f.block_on(async {
        let app = &f.app;
        app.upload_plugin("limits", "limits", "validator", json!({}), true).await;
        let order = json_probe(Method::PUT, "/v1/admin/validation-order", &json!({"names": ["limits", "limits"]}), Credentials::Admin);
        let answer = send(&app.client, app, &f.keys, &order).await.unwrap();
        assert_eq!((answer.status, error_code(&answer).as_deref()), (422, Ok("validation_order_invalid")));
        let listed: Value =
            app.client.get(app.url("/v1/admin/plugins")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["plugins"][0]["position"], 1, "{listed}");
    });
    f.stop();
}

fn json_probe(method: Method, path: &str, body: &Value, credentials: Credentials) -> Probe {
    Probe {
        content_type: Some("application/json"),
        credentials,
        body: serde_json::to_vec(body).unwrap(),
        ..Probe::new(method, path.to_owned())
    }
}

/// A transfer whose amount is nested `depth` arrays deep.
fn nested_amount(depth: usize) -> Vec<u8> {
    format!(r#"{{"sender_id": 1, "receiver_id": 2, "currency": "EUR", "amount": {}1{}}}"#, "[".repeat(depth), "]".repeat(depth))
        .into_bytes()
}

fn raw_probe(path: &str, body: Vec<u8>) -> Probe {
    Probe { content_type: Some("application/json"), body, ..Probe::new(Method::POST, path.to_owned()) }
}

/// The client id in an API key (`tek_<32 hex>_<secret>`).
fn client_id_of(key: &str) -> uuid::Uuid {
    let id = &key["tek_".len()..];
    uuid::Uuid::parse_str(&id[..32]).expect("a key holds its client's id")
}

// ---------------------------------------------------------------------------
// 2. Every route, with every credential that may not call it.
// ---------------------------------------------------------------------------

/// A request that `fit` credentials get `fit_status` for, and a variant
/// whose body or path is bad (target, body, and the status and code for any
/// caller that gets past the credential check).
struct ByHand {
    endpoint: &'static str,
    target: String,
    body: Option<Value>,
    fit: Credentials,
    fit_status: u16,
    bad: Option<(&'static str, &'static [u8], u16, &'static str)>,
}

impl ByHand {
    fn probe(&self, credentials: Credentials, bad: bool) -> Probe {
        let method = Method::from_bytes(route_named(self.endpoint).method.as_bytes()).unwrap();
        let (target, body) = match (&self.bad, bad) {
            (Some((target, body, ..)), true) => ((*target).to_owned(), body.to_vec()),
            _ => (self.target.clone(), self.body.as_ref().map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default()),
        };
        let content_type = (!body.is_empty()).then_some("application/json");
        Probe { method, target, content_type, credentials, body }
    }
}

#[test]
fn every_route_refuses_unfit_credentials_with_exact_codes_and_no_change_then_serves_fit_ones() {
    let f = Fuzzer::start(Role::Api);
    let app = &f.app;
    let (deposit_id, victim) = f.block_on(async {
        app.open_account(1, "EUR", "10.00").await;
        app.open_account(2, "EUR", "0").await;
        app.upload_plugin("limits", "limits", "validator", json!({}), true).await;
        // Version 2, for the fit shadow requests.
        app.upload_plugin("limits", "limits", "validator", json!({}), false).await;
        let deposit = json!({"owner_id": 1, "currency": "EUR", "amount": "1.00", "reference": "read-me"});
        let deposited: Value = app.admin_post("/v1/deposits", &deposit).await.json().await.unwrap();
        let victim = create_client(&app.db.pool, "victim", &[Scope::AccountsRead], None).await;
        (deposited["transfer_id"].as_str().unwrap().to_owned(), client_id_of(&victim))
    });
    // A webhook with a failed delivery, for the fit webhook requests (an API
    // engine runs no relay, so the delivery is written as the relay would).
    let (webhook, delivery) = f.block_on(async {
        let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["transfer.completed"]});
        let created: Value = app.admin_post("/v1/admin/webhooks", &hook).await.json().await.unwrap();
        let webhook = created["webhook_id"].as_str().unwrap().to_owned();
        let delivery: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, body, state, next_attempt_at, retry_until, finished_at)
             VALUES ($1::uuid, gen_random_uuid(), 'transfer.completed', '{}', 'failed', now(), now(), now()) RETURNING delivery_id",
        )
        .bind(&webhook)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        (webhook, delivery)
    });
    let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes("limits"));
    let not_json: &[u8] = b"{not json";
    let by_hand = |endpoint, target: &str, body: Option<Value>, fit, fit_status, bad| ByHand {
        endpoint,
        target: target.to_owned(),
        body,
        fit,
        fit_status,
        bad,
    };
    // In the order the fit requests are sent at the end (deactivate, then activate again).
    let routes = vec![
        by_hand(
            "POST /v1/transfers",
            "/v1/transfers",
            Some(json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})),
            Credentials::Client,
            202,
            Some(("/v1/transfers", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "GET /v1/transfers/{id}",
            &format!("/v1/transfers/{deposit_id}"),
            None,
            Credentials::Client,
            200,
            Some(("/v1/transfers/%FF", b"", 400, "invalid_path")),
        ),
        by_hand(
            "POST /v1/accounts",
            "/v1/accounts",
            Some(json!({"owner_id": 3, "currency": "EUR"})),
            Credentials::Client,
            201,
            Some(("/v1/accounts", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "GET /v1/accounts/{owner_id}/{currency}",
            "/v1/accounts/1/EUR",
            None,
            Credentials::Client,
            200,
            Some(("/v1/accounts/%FF/EUR", b"", 400, "invalid_path")),
        ),
        by_hand(
            "PATCH /v1/accounts/{owner_id}/{currency}",
            "/v1/accounts/1/EUR",
            Some(json!({"metadata": {"kyc_tier": "verified"}})),
            Credentials::Client,
            200,
            Some(("/v1/accounts/1/EUR", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "GET /v1/accounts/{owner_id}/{currency}/transfers",
            "/v1/accounts/1/EUR/transfers",
            None,
            Credentials::Client,
            200,
            Some(("/v1/accounts/1/EUR/transfers?limit=x", b"", 422, "invalid_query")),
        ),
        by_hand(
            "POST /v1/deposits",
            "/v1/deposits",
            Some(json!({"owner_id": 1, "currency": "EUR", "amount": "1.00", "reference": "by-hand"})),
            Credentials::Admin,
            201,
            Some(("/v1/deposits", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "POST /v1/withdrawals",
            "/v1/withdrawals",
            Some(json!({"owner_id": 1, "currency": "EUR", "amount": "0.50", "reference": "by-hand"})),
            Credentials::Admin,
            201,
            Some(("/v1/withdrawals", not_json, 400, "malformed_json")),
        ),
        by_hand("GET /v1/admin/plugins", "/v1/admin/plugins", None, Credentials::Admin, 200, None),
        by_hand(
            "POST /v1/admin/plugins",
            "/v1/admin/plugins",
            Some(json!({"name": "second", "kind": "validator", "component": component, "activate": false})),
            Credentials::Admin,
            201,
            Some(("/v1/admin/plugins", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "POST /v1/admin/plugins/{name}/deactivate",
            "/v1/admin/plugins/limits/deactivate",
            None,
            Credentials::Admin,
            204,
            Some(("/v1/admin/plugins/%FF/deactivate", b"", 400, "invalid_path")),
        ),
        by_hand(
            "POST /v1/admin/plugins/{name}/activate",
            "/v1/admin/plugins/limits/activate",
            Some(json!({"version": 1})),
            Credentials::Admin,
            204,
            Some(("/v1/admin/plugins/limits/activate", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "POST /v1/admin/plugins/{name}/shadow",
            "/v1/admin/plugins/limits/shadow",
            Some(json!({"version": 2})),
            Credentials::Admin,
            204,
            Some(("/v1/admin/plugins/limits/shadow", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "GET /v1/admin/plugins/{name}/versions/{version}/report",
            "/v1/admin/plugins/limits/versions/2/report",
            None,
            Credentials::Admin,
            200,
            Some(("/v1/admin/plugins/limits/versions/x/report", b"", 404, "plugin_not_found")),
        ),
        by_hand(
            "DELETE /v1/admin/plugins/{name}/shadow",
            "/v1/admin/plugins/limits/shadow",
            None,
            Credentials::Admin,
            204,
            Some(("/v1/admin/plugins/%FF/shadow", b"", 400, "invalid_path")),
        ),
        by_hand(
            "POST /v1/admin/plugins/{name}/canary",
            "/v1/admin/plugins/limits/canary",
            Some(json!({"version": 2, "percent": 10, "max_fault_rate": "0.1"})),
            Credentials::Admin,
            204,
            Some(("/v1/admin/plugins/limits/canary", br#"{"version": 2, "percent": 0}"#, 422, "canary_percent_invalid")),
        ),
        by_hand(
            "DELETE /v1/admin/plugins/{name}/canary",
            "/v1/admin/plugins/limits/canary",
            None,
            Credentials::Admin,
            204,
            Some(("/v1/admin/plugins/nobody/canary", b"", 404, "plugin_not_found")),
        ),
        by_hand(
            "PUT /v1/admin/validation-order",
            "/v1/admin/validation-order",
            Some(json!({"names": ["second", "limits"]})),
            Credentials::Admin,
            204,
            Some(("/v1/admin/validation-order", not_json, 400, "malformed_json")),
        ),
        by_hand("GET /v1/admin/clients", "/v1/admin/clients", None, Credentials::Admin, 200, None),
        by_hand("GET /v1/admin/transfer-conflicts", "/v1/admin/transfer-conflicts", None, Credentials::Admin, 200, None),
        by_hand(
            "POST /v1/admin/clients",
            "/v1/admin/clients",
            Some(json!({"name": "by-hand", "scopes": ["accounts:read"]})),
            Credentials::Admin,
            201,
            Some(("/v1/admin/clients", not_json, 400, "malformed_json")),
        ),
        by_hand(
            "DELETE /v1/admin/clients/{client_id}",
            &format!("/v1/admin/clients/{victim}"),
            None,
            Credentials::Admin,
            204,
            Some(("/v1/admin/clients/not-a-uuid", b"", 404, "client_not_found")),
        ),
        by_hand("GET /v1/admin/webhooks", "/v1/admin/webhooks", None, Credentials::Admin, 200, None),
        by_hand(
            "POST /v1/admin/webhooks",
            "/v1/admin/webhooks",
            Some(json!({"url": "https://hooks.example.com/in", "events": ["transfer.completed"]})),
            Credentials::Admin,
            201,
            Some(("/v1/admin/webhooks", br#"{"url": "ftp://example.com/", "events": ["transfer.completed"]}"#, 422, "webhook_url_invalid")),
        ),
        by_hand(
            "GET /v1/admin/webhooks/{webhook_id}/deliveries",
            &format!("/v1/admin/webhooks/{webhook}/deliveries"),
            None,
            Credentials::Admin,
            200,
            Some(("/v1/admin/webhooks/not-a-uuid/deliveries", b"", 404, "webhook_not_found")),
        ),
        by_hand(
            "POST /v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/resend",
            &format!("/v1/admin/webhooks/{webhook}/deliveries/{delivery}/resend"),
            None,
            Credentials::Admin,
            202,
            Some(("/v1/admin/webhooks/not-a-uuid/deliveries/1/resend", b"", 404, "delivery_not_found")),
        ),
        by_hand(
            "DELETE /v1/admin/webhooks/{webhook_id}",
            &format!("/v1/admin/webhooks/{webhook}"),
            None,
            Credentials::Admin,
            204,
            Some(("/v1/admin/webhooks/not-a-uuid", b"", 404, "webhook_not_found")),
        ),
        by_hand("GET /healthz", "/healthz", None, Credentials::Missing, 200, None),
        by_hand("GET /readyz", "/readyz", None, Credentials::Missing, 200, None),
        by_hand("GET /metrics", "/metrics", None, Credentials::Missing, 200, None),
        by_hand("GET /openapi.json", "/openapi.json", None, Credentials::Missing, 200, None),
    ];
    assert_eq!(routes.len(), ROUTES.len(), "every route is called by hand");

    let mut credentials = vec![
        Credentials::Missing,
        Credentials::WrongSecret,
        Credentials::Revoked,
        Credentials::ScopeMissing,
        Credentials::OtherOwner,
        Credentials::Client,
        Credentials::Admin,
    ];
    credentials.extend(MALFORMED.map(Credentials::Malformed));
    credentials.extend(wrong_tokens().into_iter().map(Credentials::Wrong));
    let before = f.block_on(footprint(&app.db.pool, true));
    let mut refused = 0;
    for case in &routes {
        let route = route_named(case.endpoint);
        let fit = |c: &Credentials| match route.need {
            Need::Nothing => false,
            Need::Scope(..) => matches!(c, Credentials::Admin | Credentials::Client),
            Need::Admin => *c == Credentials::Admin,
        };
        for c in credentials.iter().filter(|c| !fit(c)) {
            for bad in [false, true].into_iter().filter(|bad| !bad || case.bad.is_some()) {
                let probe = case.probe(c.clone(), bad);
                let path = sent_path(app, &probe.target);
                let want = match expected(&probe, &path, Some(route), |_| !bad) {
                    Expected::Exactly(status, code) => Some((status, code)),
                    // Past the credential check: the bad variant's own code, or a public route's answer.
                    Expected::ByInput { .. } => case.bad.filter(|_| bad).map(|(_, _, status, code)| (status, code)),
                };
                let answer = f.block_on(send(&app.client, app, &f.keys, &probe)).unwrap();
                match want {
                    Some((status, code)) => {
                        check(&answer, Expected::Exactly(status, code)).unwrap_or_else(|e| panic!("{probe:?}: {e}"));
                        refused += 1;
                    }
                    None => assert_eq!(answer.status, case.fit_status, "{probe:?}"),
                }
                assert_eq!(f.block_on(footprint(&app.db.pool, true)), before, "{probe:?} changed something");
            }
        }
    }
    eprintln!("bad_input: by hand: {refused} requests refused with their exact code and nothing changed");

    // The same requests, from a fit caller: the bad variant is refused for itself, the good one served.
    for case in &routes {
        if let Some((_, _, status, code)) = case.bad {
            let probe = case.probe(case.fit.clone(), true);
            let answer = f.block_on(send(&app.client, app, &f.keys, &probe)).unwrap();
            check(&answer, Expected::Exactly(status, code)).unwrap_or_else(|e| panic!("{probe:?}: {e}"));
        }
        let probe = case.probe(case.fit.clone(), false);
        let answer = f.block_on(send(&app.client, app, &f.keys, &probe)).unwrap();
        assert_eq!(answer.status, case.fit_status, "{probe:?}: {}", String::from_utf8_lossy(&answer.body));
    }
    f.stop();
}

// ---------------------------------------------------------------------------
// 3. Admin credentials.
// ---------------------------------------------------------------------------

/// A way to present (or not) the admin token: what it is, the headers it
/// adds, and the query key it puts the token under ("": none).
type Presentation = (&'static str, Vec<(&'static str, HeaderValue)>, &'static str);

/// Ways to present (or not) the admin token that must not be accepted.
fn refused_credentials() -> Vec<Presentation> {
    let value = |s: String| HeaderValue::from_str(&s).unwrap();
    let basic = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
    let token = ADMIN_TOKEN;
    vec![
        ("no credentials", vec![], ""),
        ("a wrong token", vec![("authorization", value("Bearer wrong".into()))], ""),
        ("an empty bearer token", vec![("authorization", value("Bearer ".into()))], ""),
        ("the scheme alone", vec![("authorization", value("Bearer".into()))], ""),
        ("the token cut short", vec![("authorization", value(format!("Bearer {}", &token[..token.len() - 1])))], ""),
        ("the token with a suffix", vec![("authorization", value(format!("Bearer {token}x")))], ""),
        ("the token in another case", vec![("authorization", value(format!("Bearer {}", token.to_uppercase())))], ""),
        ("the token without a scheme", vec![("authorization", value(token.into()))], ""),
        ("the token as Basic credentials", vec![("authorization", value(basic(&format!("admin:{token}"))))], ""),
        ("the token as a Basic password alone", vec![("authorization", value(basic(token)))], ""),
        ("another scheme", vec![("authorization", value(format!("Token {token}")))], ""),
        ("a colon after the scheme", vec![("authorization", value(format!("Bearer: {token}")))], ""),
        ("the token in X-Admin-Token", vec![("x-admin-token", value(token.into()))], ""),
        ("the token in Proxy-Authorization", vec![("proxy-authorization", value(format!("Bearer {token}")))], ""),
        ("the token in a cookie", vec![("cookie", value(format!("token={token}")))], ""),
        ("the token in the query string", vec![], "token"),
        ("the token as access_token in the query string", vec![], "access_token"),
        ("a header that is not UTF-8", vec![("authorization", HeaderValue::from_bytes(b"Bearer \xfftest-admin-token").unwrap())], ""),
        (
            "a wrong and then the right token",
            vec![("authorization", value("Bearer wrong".into())), ("authorization", value(format!("Bearer {token}")))],
            "",
        ),
        (
            "the right and then a wrong token",
            vec![("authorization", value(format!("Bearer {token}"))), ("authorization", value("Bearer wrong".into()))],
            "",
        ),
    ]
}

#[tokio::test]
async fn admin_routes_refuse_missing_wrong_or_misplaced_credentials_with_401_and_change_nothing() {
    let app = spawn(Role::Api).await;
    app.open_account(1, "EUR", "10.00").await;
    app.upload_plugin("limits", "limits", "validator", json!({}), true).await;
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100}}), false).await;
    app.upload_plugin("other", "limits", "validator", json!({}), true).await;

    let victim = client_id_of(&create_client(&app.db.pool, "victim", &[Scope::AccountsRead], None).await);
    let before = footprint(&app.db.pool, true).await;

    let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes("limits"));
    let revoke = format!("/v1/admin/clients/{victim}");
    let routes: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/v1/admin/plugins", None),
        (Method::POST, "/v1/admin/plugins", Some(json!({"name": "sneaky", "component": component, "activate": true}))),
        (Method::POST, "/v1/admin/plugins/limits/activate", Some(json!({"version": 2}))),
        (Method::POST, "/v1/admin/plugins/limits/deactivate", None),
        (Method::PUT, "/v1/admin/validation-order", Some(json!({"names": ["other", "limits"]}))),
        (Method::POST, "/v1/deposits", Some(json!({"owner_id": 1, "currency": "EUR", "amount": "5.00", "reference": "sneaky-deposit"}))),
        (
            Method::POST,
            "/v1/withdrawals",
            Some(json!({"owner_id": 1, "currency": "EUR", "amount": "5.00", "reference": "sneaky-withdrawal"})),
        ),
        (Method::GET, "/v1/admin/clients", None),
        (Method::POST, "/v1/admin/clients", Some(json!({"name": "sneaky", "scopes": ["transfers:write"]}))),
        (Method::DELETE, &revoke, None),
        (Method::GET, "/v1/admin/webhooks", None),
        (Method::POST, "/v1/admin/webhooks", Some(json!({"url": "https://sneaky.example/in", "events": ["transfer.completed"]}))),
    ];
    let mut tried = 0;
    for (method, path, body) in &routes {
        for (how, headers, query_key) in refused_credentials() {
            let url = if query_key.is_empty() { app.url(path) } else { app.url(&format!("{path}?{query_key}={ADMIN_TOKEN}")) };
            let mut request = app.client.request(method.clone(), url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = into_answer(request.send().await.unwrap()).await;
            assert_eq!(answer.status, 401, "{method} {path} with {how}: {}", String::from_utf8_lossy(&answer.body));
            assert_eq!(error_code(&answer).as_deref(), Ok("unauthorized"), "{method} {path} with {how}");
            assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"), "{method} {path} with {how}");
            tried += 1;
        }
        // Credentials are checked before the body is read: a malformed or
        // oversized body without them is a 401 too, not a 400, 422 or 413.
        if body.is_some() {
            // Just past the 16 KiB limit, so that the body fits the socket's buffers and the 401 is read.
            for bad_body in [b"{not json".to_vec(), vec![b' '; BODY_BYTES_MAX + 1024]] {
                let request = app.client.request(method.clone(), app.url(path)).header(CONTENT_TYPE, "application/json").body(bad_body);
                let answer = into_answer(request.send().await.unwrap()).await;
                assert_eq!((answer.status, error_code(&answer).as_deref()), (401, Ok("unauthorized")), "{method} {path} with a bad body");
                tried += 1;
            }
        }
    }
    eprintln!("bad_input: admin credentials: {tried} refused requests");
    assert_eq!(footprint(&app.db.pool, true).await, before, "a refused request changed something");

    // The scheme is case-insensitive (RFC 7235) and may be followed by more than one space.
    for header in [format!("bearer {ADMIN_TOKEN}"), format!("BEARER {ADMIN_TOKEN}"), format!("Bearer   {ADMIN_TOKEN}")] {
        let r = app.client.get(app.url("/v1/admin/plugins")).header(AUTHORIZATION, &header).send().await.unwrap();
        assert_eq!(r.status(), 200, "{header}");
    }
    assert_eq!(footprint(&app.db.pool, true).await, before);
    app.stop().await;
}

#[tokio::test]
async fn without_a_configured_admin_token_every_admin_route_answers_401() {
    let db = common::TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.admin_token = None;
    let app = TestApp::spawn_with(db, settings, Role::Api).await;
    for (method, path) in [
        (Method::GET, "/v1/admin/plugins"),
        (Method::POST, "/v1/admin/plugins"),
        (Method::POST, "/v1/admin/plugins/limits/activate"),
        (Method::POST, "/v1/admin/plugins/limits/deactivate"),
        (Method::PUT, "/v1/admin/validation-order"),
        (Method::POST, "/v1/deposits"),
        (Method::POST, "/v1/withdrawals"),
        (Method::GET, "/v1/admin/clients"),
        (Method::POST, "/v1/admin/clients"),
        (Method::DELETE, "/v1/admin/clients/00000000-0000-0000-0000-000000000001"),
    ] {
        for header in ["", "Bearer ", "Bearer test-admin-token", "Bearer null"] {
            let mut request = app.client.request(method.clone(), app.url(path)).json(&json!({}));
            if !header.is_empty() {
                request = request.header(AUTHORIZATION, header);
            }
            let answer = into_answer(request.send().await.unwrap()).await;
            assert_eq!((answer.status, error_code(&answer).as_deref()), (401, Ok("unauthorized")), "{method} {path} {header:?}");
        }
    }
    app.stop().await;
}

#[test]
fn the_model_reads_a_number_as_an_owner_only_when_its_exact_value_is_whole() {
    for (text, whole) in [
        ("7", Some(7)),
        ("7.0", Some(7)),
        ("70e-1", Some(7)),
        ("0.7e1", Some(7)),
        ("-0", Some(0)),
        ("9223372036854775807", Some(i64::MAX)),
        ("-9223372036854775808", Some(i64::MIN)),
        ("9223372036854775808", None),
        // f64 would round these to whole numbers.
        ("92233720368547758.07", None),
        ("5.0000000000000001", None),
        ("0.5", None),
        ("1e400", None),
        ("1e-400", None),
    ] {
        assert_eq!(exact_whole(text), whole, "{text}");
    }
}
