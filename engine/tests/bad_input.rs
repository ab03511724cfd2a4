//! Bad input, end to end on real services (issue 7, "Reliability suite"):
//! - generated malformed requests for every endpoint: never a 5xx, every
//!   refusal is `{"error": {"code", "message"}}`, and a 2xx only for input a
//!   small model of the API (the `*_may_succeed` functions) calls valid;
//! - poison Kafka records: dead-lettered with a reason, or rejected with a
//!   code, and a later transfer on the same partition still completes;
//! - admin routes refuse missing, wrong or misplaced credentials with 401
//!   and change nothing.
//!
//! The request fuzzers are plain `#[test]`s that own a tokio runtime: proptest's
//! runner is synchronous, so each generated request is sent with `block_on`
//! against the one engine the test started, and a failure is shrunk to a
//! minimal request before it is reported.

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::{ADMIN_TOKEN, TestApp, assert_audit_passes, eur, owner, plugin_bytes, test_settings};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use transfer_engine::domain::TransferId;
use transfer_engine::kafka;
use transfer_engine::startup::Role;

// ---------------------------------------------------------------------------
// The request fuzzer: probes, how they are sent, what every answer must be.
// ---------------------------------------------------------------------------

/// The engine's default `request_body_bytes_max`, which the tests do not change.
const BODY_BYTES_MAX: usize = 16 * 1024;
/// The engine's default `description_chars_max`.
const DESCRIPTION_CHARS_MAX: usize = 280;
/// Longest deposit or withdrawal reference.
const REFERENCE_CHARS_MAX: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Credentials {
    Missing,
    Wrong,
    Admin,
}

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
    fn new(method: Method, target: String) -> Self {
        Self { method, target, content_type: None, credentials: Credentials::Missing, body: Vec::new() }
    }

    /// The body as JSON, if it is JSON (duplicate keys collapse: the model is
    /// only ever asked whether a 2xx was allowed, and the engine refuses them).
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// What every JSON endpoint needs before it looks at the body.
    fn sends_json(&self, method: &Method) -> bool {
        self.method == *method && is_json_content_type(self.content_type) && self.body.len() <= BODY_BYTES_MAX
    }
}

struct Answer {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    body: Vec<u8>,
}

/// Sends a probe. A transport error is returned, not judged: see `fuzz`.
async fn send(client: &reqwest::Client, app: &TestApp, probe: &Probe) -> Result<Answer, reqwest::Error> {
    let mut request = client.request(probe.method.clone(), app.url(&probe.target));
    if let Some(content_type) = probe.content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    match probe.credentials {
        Credentials::Missing => {}
        Credentials::Wrong => request = request.bearer_auth("not-the-admin-token"),
        Credentials::Admin => request = request.bearer_auth(ADMIN_TOKEN),
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

/// The property every answer must have: a 2xx only if the model allows it,
/// else a 4xx with the JSON error shape. Never a 5xx, 1xx or 3xx.
fn check(answer: &Answer, may_succeed: bool) -> Result<(), TestCaseError> {
    let text = || String::from_utf8_lossy(&answer.body).chars().take(600).collect::<String>();
    prop_assert!(answer.status < 500, "answered {}: {}", answer.status, text());
    if (200..300).contains(&answer.status) {
        prop_assert!(may_succeed, "accepted ({}) input the API should refuse: {}", answer.status, text());
        return Ok(());
    }
    prop_assert!((400..500).contains(&answer.status), "answered {}: {}", answer.status, text());
    if let Err(why) = error_code(answer) {
        return Err(TestCaseError::fail(format!("a {} without the JSON error shape: {why}", answer.status)));
    }
    if answer.status == 401 {
        prop_assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
    }
    Ok(())
}

/// Sends `cases` probes from `strategy` to `app`, checking each answer
/// against `may_succeed`. Returns how many requests were sent (shrinking a
/// failure included); panics with the minimal failing probe.
fn fuzz<S>(rt: &Runtime, app: &TestApp, endpoint: &str, cases: u32, strategy: S, may_succeed: impl Fn(&Probe) -> bool) -> usize
where
    S: Strategy<Value = Probe>,
{
    let started = std::time::Instant::now();
    // A fresh connection per request. The engine refuses some requests without
    // reading their body (past the size limit, no credentials), and hyper then
    // closes the connection: a pooled one could be reused just as it closes,
    // which fails the next request on the client's side, not the engine's.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(30)).build().unwrap();
    let tried = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let cut_off = AtomicUsize::new(0);
    // No failure file: the tests live outside `src`, and a failure prints its minimal probe.
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 256, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |probe| {
        tried.fetch_add(1, Ordering::Relaxed);
        let answer = match rt.block_on(send(&client, app, &probe)) {
            Ok(answer) => answer,
            // The engine answered (413, 401...) and closed while the client was
            // still writing a body past the limit: the client sees a broken pipe
            // or a reset instead of the answer. An HTTP/1.1 fact, not a failure.
            Err(e) if probe.body.len() > BODY_BYTES_MAX && e.is_request() => {
                cut_off.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("no answer: {e:?}"))),
        };
        check(&answer, may_succeed(&probe))?;
        if (200..300).contains(&answer.status) {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    let (tried, accepted, cut_off) = (tried.into_inner(), accepted.into_inner(), cut_off.into_inner());
    if let Err(failure) = result {
        panic!("{endpoint}: {failure}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "bad_input: {endpoint}: {tried} inputs tried in {elapsed:.1} s, {accepted} accepted as valid, {cut_off} oversized cut off mid-body"
    );
    tried
}

/// A runtime of its own and an engine on it, for a fuzzing test.
fn start(role: Role) -> (Runtime, TestApp) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = rt.block_on(spawn(role));
    (rt, app)
}

/// The API alone where no test needs the processor: stopping an engine
/// whose consumer is still joining its group takes seconds.
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
/// JSON, a cut-short or tampered body, deep nesting, and bodies past the limit.
fn body_around(base: Value, fields: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
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
    let pad_min = BODY_BYTES_MAX.saturating_sub(len) + 1;
    let (cut, spliced, padded) = (base_bytes.clone(), base_bytes.clone(), base_bytes);
    prop_oneof![
        8 => edited,
        1 => vec(any::<u8>(), 0..512),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (0..len).prop_map(move |n| cut[..n].to_vec()),
        1 => (select(SNIPPETS), 0..=len).prop_map(move |(snippet, at)| [&spliced[..at], snippet, &spliced[at..]].concat()),
        1 => (1..20_000usize).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
        1 => (pad_min..pad_min + 2 * BODY_BYTES_MAX).prop_map(move |n| [&padded[..], &vec![b' '; n][..]].concat()),
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

fn credentials() -> BoxedStrategy<Credentials> {
    prop_oneof![8 => Just(Credentials::Admin), 1 => Just(Credentials::Missing), 1 => Just(Credentials::Wrong)].boxed()
}

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

/// A JSON integer the engine reads as an owner id (a positive i64).
fn owner_id(value: Option<&Value>) -> Option<i64> {
    value.and_then(Value::as_i64).filter(|id| *id > 0)
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
    &["transfer_id", "sender_id", "receiver_id", "amount", "currency", "description", "original_amount", "original_currency"];

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
    sender != receiver && id_ok && description_ok && amount_ok
}

const ACCOUNT_FIELDS: &[&str] = &["owner_id", "currency"];

/// `POST /v1/accounts`.
fn account_may_succeed(body: &Value) -> bool {
    body.as_object().is_some_and(|o| {
        only_fields(o, ACCOUNT_FIELDS) && owner_id(o.get("owner_id")).is_some() && currency_of(o.get("currency")).is_some()
    })
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

const UPLOAD_FIELDS: &[&str] = &["name", "kind", "config", "component", "activate"];

/// `POST /v1/admin/plugins`: a real component is only ever the unedited one.
fn upload_may_succeed(body: &Value, component: &str) -> bool {
    let Some(o) = body.as_object().filter(|o| only_fields(o, UPLOAD_FIELDS)) else { return false };
    let kind_ok = present(o, "kind").is_none_or(|k| matches!(k.as_str(), Some("validator" | "converter" | "describer")));
    let activate_ok = o.get("activate").is_none_or(Value::is_boolean);
    o.get("name").and_then(Value::as_str).is_some_and(is_plugin_name)
        && o.get("component").and_then(Value::as_str) == Some(component)
        && kind_ok
        && activate_ok
}

/// `PUT /v1/admin/validation-order`: distinct, well-formed names.
fn order_may_succeed(body: &Value) -> bool {
    let Some(names) = body.as_object().filter(|o| only_fields(o, &["names"])).and_then(|o| o.get("names")).and_then(Value::as_array) else {
        return false;
    };
    let names: Option<Vec<&str>> = names.iter().map(Value::as_str).collect();
    names.is_some_and(|names| names.iter().all(|n| is_plugin_name(n)) && names.iter().collect::<BTreeSet<_>>().len() == names.len())
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

/// An owner id in a path: Rust's i64 parse, so a leading `+` or zeros are tolerated.
fn path_owner_ok(segment: &str) -> bool {
    decoded_segment(segment).and_then(|s| s.parse::<i64>().ok()).is_some_and(|id| id > 0)
}

fn path_currency_ok(segment: &str) -> bool {
    decoded_segment(segment).is_some_and(|s| currency_exponent(&s).is_some())
}

// ---------------------------------------------------------------------------
// 1. Generated malformed requests, one engine per test.
// ---------------------------------------------------------------------------

#[test]
fn malformed_transfer_requests_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let (rt, app) = start(Role::All);
    rt.block_on(async {
        app.open_account(1, "EUR", "1000000.00").await;
        app.open_account(2, "EUR", "0").await;
    });
    let seeded = rt.block_on(app.post("/v1/transfers", &json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})));
    assert_eq!(seeded.status(), 202);
    let seeded_id = rt.block_on(seeded.json::<Value>()).unwrap()["transfer_id"].as_str().unwrap().to_owned();

    let base = json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR", "description": "fuzz"});
    let submits = (method(Method::POST, NOT_POST), content_type(), body_around(base, TRANSFER_FIELDS), query()).prop_map(
        |(method, content_type, body, query)| Probe { content_type, body, ..Probe::new(method, format!("/v1/transfers{query}")) },
    );
    let mut tried = fuzz(&rt, &app, "POST /v1/transfers", 400, submits, |p| {
        p.sends_json(&Method::POST) && p.json().is_some_and(|b| transfer_may_succeed(&b))
    });

    let ids = vec![seeded_id.clone(), seeded_id.to_uppercase(), seeded_id.replace('-', ""), uuid::Uuid::new_v4().to_string()];
    let reads = (method(Method::GET, NOT_GET), segment(ids), query())
        .prop_map(|(method, id, query)| Probe::new(method, format!("/v1/transfers/{id}{query}")));
    tried += fuzz(&rt, &app, "GET /v1/transfers/{id}", 200, reads, |p| {
        p.method == Method::GET && decoded_segment(segments(&p.target)[2]).is_some_and(|id| uuid::Uuid::parse_str(&id).is_ok())
    });
    eprintln!("bad_input: transfers: {tried} inputs in all");
    rt.block_on(async {
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
        assert_audit_passes(&app.ledger()).await;
        app.stop().await;
    });
}

#[test]
fn malformed_account_requests_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let (rt, app) = start(Role::Api);
    rt.block_on(app.open_account(1, "EUR", "10.00"));

    let base = json!({"owner_id": 3, "currency": "EUR"});
    let creates = (method(Method::POST, NOT_POST), content_type(), body_around(base, ACCOUNT_FIELDS))
        .prop_map(|(method, content_type, body)| Probe { content_type, body, ..Probe::new(method, "/v1/accounts".to_owned()) });
    let mut tried = fuzz(&rt, &app, "POST /v1/accounts", 200, creates, |p| {
        p.sends_json(&Method::POST) && p.json().is_some_and(|b| account_may_succeed(&b))
    });

    let owners = || {
        segment(
            ["1", "2", "+1", "01", "0", "-1", "9223372036854775807", "9223372036854775808", "1.0", "1e2", "%31", "%201"]
                .map(String::from)
                .to_vec(),
        )
    };
    let currencies = || segment(["EUR", "eur", "JPY", "EU", "EURO", "%45UR", "XAU", "E%00R"].map(String::from).to_vec());
    let reads = (method(Method::GET, NOT_GET), owners(), currencies(), query())
        .prop_map(|(method, owner, currency, query)| Probe::new(method, format!("/v1/accounts/{owner}/{currency}{query}")));
    tried += fuzz(&rt, &app, "GET /v1/accounts/{owner_id}/{currency}", 200, reads, |p| {
        let s = segments(&p.target);
        p.method == Method::GET && path_owner_ok(s[2]) && path_currency_ok(s[3])
    });

    let pages = (method(Method::GET, NOT_GET), owners(), currencies(), query())
        .prop_map(|(method, owner, currency, query)| Probe::new(method, format!("/v1/accounts/{owner}/{currency}/transfers{query}")));
    tried += fuzz(&rt, &app, "GET /v1/accounts/{owner_id}/{currency}/transfers", 300, pages, |p| {
        let s = segments(&p.target);
        p.method == Method::GET && path_owner_ok(s[2]) && path_currency_ok(s[3]) && page_query_ok(&p.target)
    });
    eprintln!("bad_input: accounts: {tried} inputs in all");
    rt.block_on(app.stop());
}

#[test]
fn malformed_deposits_and_withdrawals_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let (rt, app) = start(Role::Api);
    rt.block_on(async {
        app.open_account(1, "EUR", "1000.00").await;
        app.open_account(2, "JPY", "1000").await;
    });
    let mut tried = 0;
    for (path, amount) in [("/v1/deposits", "1.00"), ("/v1/withdrawals", "0.01")] {
        let base = json!({"owner_id": 1, "currency": "EUR", "amount": amount, "reference": format!("fuzz{path}")});
        let moves = (method(Method::POST, NOT_POST), content_type(), credentials(), body_around(base, MOVE_FIELDS)).prop_map(
            move |(method, content_type, credentials, body)| Probe {
                content_type,
                credentials,
                body,
                ..Probe::new(method, path.to_owned())
            },
        );
        tried += fuzz(&rt, &app, &format!("POST {path}"), 250, moves, |p| {
            p.credentials == Credentials::Admin && p.sends_json(&Method::POST) && p.json().is_some_and(|b| move_may_succeed(&b))
        });
    }
    eprintln!("bad_input: deposits and withdrawals: {tried} inputs in all");
    rt.block_on(async {
        assert_audit_passes(&app.ledger()).await;
        app.stop().await;
    });
}

#[test]
fn malformed_admin_plugin_requests_never_get_a_5xx_and_every_refusal_is_a_json_error() {
    let (rt, app) = start(Role::Api);
    rt.block_on(app.upload_plugin("limits", "limits", "validator", json!({}), true));
    let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes("limits"));
    let names =
        || segment(["limits", "fuzzed", "nope", "LIMITS", "limits%00", "-limits", "l".repeat(64).as_str()].map(String::from).to_vec());
    let admin = |p: &Probe| p.credentials == Credentials::Admin;

    let lists = (method(Method::GET, NOT_GET_OR_POST), credentials(), query())
        .prop_map(|(method, credentials, query)| Probe { credentials, ..Probe::new(method, format!("/v1/admin/plugins{query}")) });
    let mut tried = fuzz(&rt, &app, "GET /v1/admin/plugins", 60, lists, |p| admin(p) && p.method == Method::GET);

    let base = json!({"name": "fuzzed", "kind": "validator", "config": {}, "component": component.clone(), "activate": false});
    let uploads = (method(Method::POST, NOT_GET_OR_POST), content_type(), credentials(), body_around(base, UPLOAD_FIELDS)).prop_map(
        |(method, content_type, credentials, body)| Probe {
            content_type,
            credentials,
            body,
            ..Probe::new(method, "/v1/admin/plugins".to_owned())
        },
    );
    tried += fuzz(&rt, &app, "POST /v1/admin/plugins", 80, uploads, |p| {
        // The upload route has its own, larger body limit.
        admin(p)
            && p.method == Method::POST
            && is_json_content_type(p.content_type)
            && p.json().is_some_and(|b| upload_may_succeed(&b, &component))
    });

    let activations =
        (method(Method::POST, NOT_POST), content_type(), credentials(), names(), body_around(json!({"version": 1}), &["version"]))
            .prop_map(|(method, content_type, credentials, name, body)| Probe {
                content_type,
                credentials,
                body,
                ..Probe::new(method, format!("/v1/admin/plugins/{name}/activate"))
            });
    tried += fuzz(&rt, &app, "POST /v1/admin/plugins/{name}/activate", 150, activations, |p| {
        let version_ok = p
            .json()
            .and_then(|b| b.as_object().filter(|o| only_fields(o, &["version"])).and_then(|o| o.get("version")).and_then(Value::as_i64));
        admin(p)
            && p.sends_json(&Method::POST)
            && decoded_segment(segments(&p.target)[3]).is_some_and(|n| is_plugin_name(&n))
            && version_ok.is_some_and(|v| i32::try_from(v).is_ok())
    });

    let deactivations = (method(Method::POST, NOT_POST), credentials(), names(), query()).prop_map(|(method, credentials, name, query)| {
        Probe { credentials, ..Probe::new(method, format!("/v1/admin/plugins/{name}/deactivate{query}")) }
    });
    tried += fuzz(&rt, &app, "POST /v1/admin/plugins/{name}/deactivate", 100, deactivations, |p| {
        admin(p) && p.method == Method::POST && decoded_segment(segments(&p.target)[3]).is_some_and(|n| is_plugin_name(&n))
    });

    // Lists of known, unknown, malformed and repeated names, besides the usual bodies.
    let name_lists = vec(select(&["limits", "limits", "fuzzed", "nope", "Limits", "limits\0", ""][..]), 0..4)
        .prop_map(|names| serde_json::to_vec(&json!({ "names": names })).unwrap());
    let order_bodies = prop_oneof![body_around(json!({"names": ["limits"]}), &["names"]), name_lists];
    let orders = (method(Method::PUT, NOT_PUT), content_type(), credentials(), order_bodies).prop_map(
        |(method, content_type, credentials, body)| Probe {
            content_type,
            credentials,
            body,
            ..Probe::new(method, "/v1/admin/validation-order".to_owned())
        },
    );
    tried += fuzz(&rt, &app, "PUT /v1/admin/validation-order", 150, orders, |p| {
        admin(p) && p.sends_json(&Method::PUT) && p.json().is_some_and(|b| order_may_succeed(&b))
    });
    eprintln!("bad_input: admin plugins: {tried} inputs in all");
    rt.block_on(app.stop());
}

#[test]
fn unknown_paths_and_unrouted_methods_answer_json_errors() {
    let (rt, app) = start(Role::Api);
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
        "healthz",
        "metrics",
        "openapi.json",
        "1",
        "EUR",
    ];
    let words = words.map(String::from).to_vec();
    let paths = (select(&["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"][..]), vec(segment(words), 0..6), query()).prop_map(
        |(method, segments, query)| Probe::new(Method::from_bytes(method.as_bytes()).unwrap(), format!("/{}{query}", segments.join("/"))),
    );
    let tried = fuzz(&rt, &app, "any path", 300, paths, |p| {
        // Nothing exists in this engine and no request carries credentials or a
        // body: only the probes without parameters can answer 2xx. The URL
        // parser may resolve dot segments, so judge the path it sends.
        let sent = reqwest::Url::parse(&app.url(&p.target)).unwrap();
        p.method == Method::GET && ["/healthz", "/metrics", "/openapi.json"].contains(&sent.path())
    });
    eprintln!("bad_input: paths: {tried} inputs in all");
    rt.block_on(app.stop());
}

/// Hand-picked cases the generators reach only by luck, each with the exact code intended.
#[tokio::test]
async fn hand_picked_bad_requests_answer_their_exact_codes() {
    let app = spawn(Role::Api).await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let transfer =
        |description: &str| json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR", "description": description});
    let deposit = |reference: &str| json!({"owner_id": 1, "currency": "EUR", "amount": "1.00", "reference": reference});
    let cases: Vec<(Probe, u16, &str)> = vec![
        // PostgreSQL text cannot hold NUL: refused at the door, not at the ledger.
        (json_probe(Method::POST, "/v1/transfers", &transfer("rent\0"), Credentials::Missing), 422, "description_invalid"),
        (json_probe(Method::POST, "/v1/deposits", &deposit("wire\0"), Credentials::Admin), 422, "reference_invalid"),
        (json_probe(Method::POST, "/v1/withdrawals", &deposit("\0"), Credentials::Admin), 422, "reference_invalid"),
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
        (
            Probe { credentials: Credentials::Admin, ..Probe::new(Method::POST, "/v1/admin/plugins/%00/deactivate".into()) },
            404,
            "plugin_not_found",
        ),
        // Queries.
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?limit=%FF".into()), 422, "invalid_query"),
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?limit=1&limit=2".into()), 422, "invalid_query"),
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?before=9223372036854775808".into()), 422, "invalid_query"),
        (Probe::new(Method::GET, "/v1/accounts/1/EUR/transfers?token=x".into()), 422, "invalid_query"),
        // Methods a route does not take.
        (Probe::new(Method::DELETE, "/v1/transfers".into()), 405, "method_not_allowed"),
        (Probe::new(Method::GET, "/v1/deposits".into()), 405, "method_not_allowed"),
        (Probe::new(Method::OPTIONS, "/v1/accounts/1/EUR".into()), 405, "method_not_allowed"),
        (Probe::new(Method::from_bytes(b"PURGE").unwrap(), "/v1/admin/validation-order".into()), 405, "method_not_allowed"),
        // Bodies: nesting past serde_json's recursion limit, bad UTF-8, a lone surrogate.
        (raw_probe("/v1/transfers", nested_amount(5_000)), 400, "malformed_json"),
        (raw_probe("/v1/transfers", b"{\"sender_id\": 1, \"description\": \"\xff\"}".to_vec()), 400, "malformed_json"),
        (raw_probe("/v1/transfers", br#"{"sender_id": 1, "description": "\ud800"}"#.to_vec()), 400, "malformed_json"),
        (raw_probe("/v1/accounts", br#"{"owner_id": 1, "currency": "EUR", "owner_id": 2}"#.to_vec()), 422, "invalid_body"),
        (raw_probe("/v1/accounts", Vec::new()), 400, "malformed_json"),
    ];
    for (probe, status, code) in cases {
        let answer = send(&app.client, &app, &probe).await.unwrap();
        let got = error_code(&answer).unwrap_or_else(|why| panic!("{probe:?}: {why}"));
        assert_eq!((answer.status, got.as_str()), (status, code), "{probe:?}");
    }
    // None of the refused transfers or deposits reached the ledger.
    let (transfers,): (i64,) = sqlx::query_as("SELECT count(*) FROM transfers").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(transfers, 1, "only the opening deposit is recorded");
    app.stop().await;
}

#[test]
fn a_repeated_name_in_the_validation_order_is_refused_and_the_order_is_unchanged() {
    let (rt, app) = start(Role::Api);
    rt.block_on(async {
        app.upload_plugin("limits", "limits", "validator", json!({}), true).await;
        let order = json_probe(Method::PUT, "/v1/admin/validation-order", &json!({"names": ["limits", "limits"]}), Credentials::Admin);
        let answer = send(&app.client, &app, &order).await.unwrap();
        assert_eq!((answer.status, error_code(&answer).as_deref()), (422, Ok("validation_order_invalid")));
        let listed: Value =
            app.client.get(app.url("/v1/admin/plugins")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed["plugins"][0]["position"], 1, "{listed}");
        app.stop().await;
    });
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

// ---------------------------------------------------------------------------
// 2. Poison records on the engine's topic.
// ---------------------------------------------------------------------------

/// A schema-1 transfer record from 1 to 2 (EUR 1.00) with `changes` applied (null removes a field).
fn record(changes: Value) -> Vec<u8> {
    let mut record = json!({
        "schema_version": 1,
        "transfer_id": uuid::Uuid::new_v4(),
        "kind": "transfer",
        "sender_id": 1,
        "receiver_id": 2,
        "currency": "EUR",
        "amount_minor": 100,
        "submitted_at": "2026-01-01T00:00:00Z",
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            record.as_object_mut().unwrap().remove(key);
        } else {
            record[key] = value.clone();
        }
    }
    serde_json::to_vec(&record).unwrap()
}

/// A decodable record and the id to find it by in the ledger.
fn decodable(changes: Value) -> (uuid::Uuid, Vec<u8>) {
    let id = uuid::Uuid::new_v4();
    let mut changes = changes;
    changes["transfer_id"] = json!(id);
    (id, record(changes))
}

/// Reads `<topic>.dlq` until `count` dead letters arrived, then makes sure no
/// more follow. Returns (payload, `dlq.reason`, `dlq.source.topic`, `dlq.source.partition`).
async fn dead_letters(app: &TestApp, count: usize) -> Vec<(Vec<u8>, String, String, String)> {
    let dlq: StreamConsumer = kafka::client_config(&app.settings.kafka_brokers)
        .set("group.id", format!("dlq-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Assigned, not subscribed: no group to join, so the letters arrive at once.
    // The dead-letter topic has one partition (`kafka::ensure_topics`).
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_offset(&app.settings.dlq_topic(), 0, Offset::Beginning).unwrap();
    dlq.assign(&partitions).unwrap();
    let mut letters = Vec::new();
    while letters.len() < count {
        let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} dead letters arrived: {letters:?}", letters.len()))
            .unwrap();
        let headers = m.headers().expect("dead letters carry headers");
        let header = |key: &str| {
            headers.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
        };
        letters.push((
            m.payload().unwrap_or_default().to_vec(),
            header("dlq.reason"),
            header("dlq.source.topic"),
            header("dlq.source.partition"),
        ));
    }
    let extra = tokio::time::timeout(Duration::from_secs(2), dlq.recv()).await;
    assert!(extra.is_err(), "more dead letters than poison records: {:?}", extra.map(|m| m.map(|m| m.detach())));
    // Dropping a consumer blocks (it leaves the group): off the async workers.
    tokio::task::spawn_blocking(move || drop(dlq)).await.unwrap();
    letters
}

#[tokio::test]
async fn poison_records_are_dead_lettered_or_rejected_and_a_later_transfer_on_their_partition_completes() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let producer = kafka::producer(&app.settings.kafka_brokers, 10_000).unwrap();
    let topic = &app.settings.topic;
    // The key the API gives sender 1's EUR transfers: every record below lands
    // on the partition the final, valid transfer uses.
    let key = kafka::record_key(owner(1), eur());

    // Records that cannot become a transfer: dead-lettered, with the reason's code first.
    let undecodable: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed"),
        (Vec::new(), "malformed"),
        (vec![0xff, 0xfe, 0x00, 0x01, 0x80], "malformed"),
        (b"[1, 2, 3]".to_vec(), "malformed"),
        (br#"{"schema_version": 99}"#.to_vec(), "unknown_schema_version"),
        (record(json!({"schema_version": 2, "amount_minor": "lots"})), "unknown_schema_version"),
        (record(json!({"schema_version": "1"})), "malformed"),
        (record(json!({"schema_version": -1})), "malformed"),
        (record(json!({"surprise": true})), "malformed"),
        (record(json!({"submitted_at": null})), "malformed"),
        (record(json!({"transfer_id": "not-a-uuid"})), "malformed"),
        (record(json!({"description": 12})), "malformed"),
        (record(json!({"amount_minor": 18_446_744_073_709_551_615u64})), "malformed"),
        (record(json!({"amount_minor": 1e300})), "malformed"),
        (record(json!({"sender_id": 99_999_999_999_999_999_999_999_999_999.0})), "malformed"),
        (record(json!({"amount_minor": -5})), "invalid"),
        (record(json!({"amount_minor": 0})), "invalid"),
        (record(json!({"amount_minor": i64::MIN})), "invalid"),
        (record(json!({"currency": "XYZ"})), "invalid"),
        (record(json!({"currency": "eur"})), "invalid"),
        (record(json!({"currency": "XAU"})), "invalid"),
        (record(json!({"sender_id": 0})), "invalid"),
        (record(json!({"receiver_id": -2})), "invalid"),
        (record(json!({"kind": "deposit"})), "invalid"),
        (record(json!({"amount_minor": null})), "invalid"),
        (record(json!({"original_amount_minor": 100, "original_currency": "USD"})), "invalid"),
    ];
    for (payload, _) in &undecodable {
        kafka::publish(&producer, topic, &key, payload, None).await.unwrap();
    }
    // A record with no payload at all (a tombstone).
    producer.send(FutureRecord::<str, [u8]>::to(topic).key(&key), Duration::from_secs(0)).await.map_err(|(e, _)| e).unwrap();

    // Records that decode but break a business rule: rejected, with the rule's code.
    let breaking: Vec<((uuid::Uuid, Vec<u8>), &str)> = vec![
        (decodable(json!({"receiver_id": 999})), "account_not_found"),
        (decodable(json!({"sender_id": 998, "receiver_id": 999})), "account_not_found"),
        (decodable(json!({"currency": "JPY"})), "account_not_found"),
        (decodable(json!({"receiver_id": 1})), "accounts_must_be_different"),
        (decodable(json!({"amount_minor": i64::MAX})), "insufficient_funds"),
        (decodable(json!({"amount_minor": 1_001})), "insufficient_funds"),
        (decodable(json!({"amount_minor": null, "original_amount_minor": 100, "original_currency": "USD"})), "conversion_unavailable"),
    ];
    for ((_, payload), _) in &breaking {
        kafka::publish(&producer, topic, &key, payload, None).await.unwrap();
    }

    // Then a valid transfer through the API, on the same key.
    let r = app.post("/v1/transfers", &json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let done = app.wait_final(accepted["transfer_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "the partition stuck behind the poison records: {done}");

    for ((id, _), code) in &breaking {
        let stored = app.ledger().transfer(TransferId(*id)).await.unwrap().unwrap_or_else(|| panic!("{id} ({code}) is in the ledger"));
        assert_eq!(stored.status.as_str(), "rejected", "{id}");
        assert_eq!(stored.reason.as_ref().map(|r| r.code.as_str()), Some(*code), "{id}");
    }

    let letters = dead_letters(&app, undecodable.len() + 1).await;
    eprintln!("bad_input: poison records: {} dead-lettered, {} rejected", letters.len(), breaking.len());
    let partitions: BTreeSet<&str> = letters.iter().map(|(_, _, _, partition)| partition.as_str()).collect();
    assert_eq!(partitions.len(), 1, "one partition: {partitions:?}");
    assert!(letters.iter().all(|(_, _, source, _)| source == topic), "{letters:?}");
    // (payload, the reason's code): the same multiset as what was produced.
    let mut expected: Vec<(Vec<u8>, String)> = undecodable.iter().map(|(p, code)| (p.clone(), code.to_string())).collect();
    expected.push((Vec::new(), "malformed".into()));
    expected.sort();
    let mut got: Vec<(Vec<u8>, String)> = letters
        .iter()
        .map(|(payload, reason, _, _)| {
            let (code, detail) = reason.split_once(": ").unwrap_or_else(|| panic!("a reason is `code: detail`: {reason:?}"));
            assert!(!detail.is_empty(), "{reason:?}");
            (payload.clone(), code.to_owned())
        })
        .collect();
    got.sort();
    let show =
        |v: &[(Vec<u8>, String)]| v.iter().map(|(p, c)| format!("{c}: {}", String::from_utf8_lossy(p))).collect::<Vec<_>>().join("\n");
    assert_eq!(show(&got), show(&expected));

    // Only the valid transfer moved money.
    let balance = |owner: i64| {
        let app = &app;
        async move { app.get(&format!("/v1/accounts/{owner}/EUR")).await.json::<Value>().await.unwrap()["balance_minor"].as_i64().unwrap() }
    };
    assert_eq!((balance(1).await, balance(2).await), (900, 100));
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// PostgreSQL cannot store NUL in text: a record whose description holds one
/// would fail its batch's commit on every retry and stop the partition. The
/// API refuses such descriptions (`description_invalid`), and decoding refuses
/// records from anything else, so they go to the dead-letter topic.
#[tokio::test]
async fn a_record_whose_description_holds_nul_does_not_stall_its_partition() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let producer = kafka::producer(&app.settings.kafka_brokers, 10_000).unwrap();
    let key = kafka::record_key(owner(1), eur());
    let (id, payload) = decodable(json!({"description": "rent\u{0}"}));
    kafka::publish(&producer, &app.settings.topic, &key, &payload, None).await.unwrap();
    let r = app.post("/v1/transfers", &json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(app.wait_final(accepted["transfer_id"].as_str().unwrap()).await["status"], "completed");
    let stored = app.ledger().transfer(TransferId(id)).await.unwrap();
    assert!(stored.is_none(), "a record with NUL in its description must not reach the ledger");
    let letters = dead_letters(&app, 1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
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

/// What the admin routes could change: plugins, validation order, balances, transfers.
async fn admin_state(app: &TestApp) -> (Value, Vec<(String, i32)>, Vec<(i64, i64)>, i64) {
    let plugins: Value = app.client.get(app.url("/v1/admin/plugins")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    let order: Vec<(String, i32)> =
        sqlx::query_as("SELECT name, position FROM validation_order ORDER BY name").fetch_all(&app.db.pool).await.unwrap();
    let balances: Vec<(i64, i64)> =
        sqlx::query_as("SELECT owner_id, balance_minor FROM accounts ORDER BY owner_id, currency").fetch_all(&app.db.pool).await.unwrap();
    let (transfers,): (i64,) = sqlx::query_as("SELECT count(*) FROM transfers").fetch_one(&app.db.pool).await.unwrap();
    (plugins, order, balances, transfers)
}

#[tokio::test]
async fn admin_routes_refuse_missing_wrong_or_misplaced_credentials_with_401_and_change_nothing() {
    let app = spawn(Role::Api).await;
    app.open_account(1, "EUR", "10.00").await;
    app.upload_plugin("limits", "limits", "validator", json!({}), true).await;
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100}}), false).await;
    app.upload_plugin("other", "limits", "validator", json!({}), true).await;
    let before = admin_state(&app).await;

    let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes("limits"));
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
    assert_eq!(admin_state(&app).await, before, "a refused request changed something");

    // The scheme is case-insensitive (RFC 7235) and may be followed by more than one space.
    for header in [format!("bearer {ADMIN_TOKEN}"), format!("BEARER {ADMIN_TOKEN}"), format!("Bearer   {ADMIN_TOKEN}")] {
        let r = app.client.get(app.url("/v1/admin/plugins")).header(AUTHORIZATION, &header).send().await.unwrap();
        assert_eq!(r.status(), 200, "{header}");
    }
    assert_eq!(admin_state(&app).await, before);
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
