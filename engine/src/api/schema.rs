//! Request schemas that a derive cannot state exactly: the currencies this
//! engine supports, decimal amounts, owner ids, and lists whose items must be
//! unique. Each says what the server's own check accepts, no more and no
//! less, because clients generate their SDKs from the document
//! (`scripts/contract` checks the two against each other). The server still
//! checks everything itself: these are documentation.

use std::borrow::Cow;
use std::sync::OnceLock;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{Currency, METADATA_KEYS_MAX, METADATA_VALUE_CHARS_MAX};

/// Plugin names as `plugins::valid_name` accepts them.
const PLUGIN_NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,62}$";
/// Metadata keys as `Metadata::new` accepts them (1 to `METADATA_KEY_CHARS_MAX` characters; a test checks the two agree).
const METADATA_KEY_PATTERN: &str = "^[a-z0-9_.-]{1,64}$";
/// Text without NUL, which PostgreSQL text cannot hold (the server refuses it).
const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";
/// Text without control characters (`char::is_control`: Unicode category Cc).
const NO_CONTROL_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";
/// Canonical standard base64 with padding, as the `base64` crate's `STANDARD` engine decodes it.
const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";
/// Longest API client name (`NewClient::new` refuses longer; a test checks the two agree).
const CLIENT_NAME_CHARS_MAX: usize = 128;

/// Every code `Currency::parse` accepts, in order. Every three-letter
/// upper-case code is tried (26^3 = 17,576, once per process), so the list is
/// the parser's by construction, whatever the ISO table of the day holds.
pub fn supported_currency_codes() -> &'static [&'static str] {
    static CODES: OnceLock<Vec<&'static str>> = OnceLock::new();
    CODES.get_or_init(|| {
        let letters = b'A'..=b'Z';
        let mut codes = Vec::new();
        for a in letters.clone() {
            for b in letters.clone() {
                for c in letters.clone() {
                    if let Ok(currency) = Currency::parse(std::str::from_utf8(&[a, b, c]).expect("ASCII")) {
                        codes.push(currency.code());
                    }
                }
            }
        }
        codes
    })
}

/// The `CurrencyCode` schema: an enum of the supported codes.
pub struct CurrencyCode;

impl PartialSchema for CurrencyCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(supported_currency_codes().iter().copied()))
            .description(Some(
                "An ISO 4217 code, upper case, of a currency with a minor unit (EUR, JPY, BHD...). \
                 Codes without one (XAU, XXX...) are not supported.",
            ))
            .examples(["EUR"])
            .into()
    }
}

impl ToSchema for CurrencyCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CurrencyCode")
    }
}

/// The `DecimalAmount` schema: a positive decimal as a string or a JSON number.
pub struct DecimalAmount;

/// `parse_decimal_minor`'s input limit (bytes; the accepted text is ASCII).
const DECIMAL_TEXT_CHARS_MAX: usize = 40;

impl PartialSchema for DecimalAmount {
    fn schema() -> RefOr<Schema> {
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]+(\\.[0-9]+)?$"))
            .max_length(Some(DECIMAL_TEXT_CHARS_MAX))
            .examples(["12.34"]);
        let number = ObjectBuilder::new().schema_type(Type::Number).exclusive_minimum(Some(0)).examples([12.34]);
        OneOfBuilder::new()
            .item(text)
            .item(number)
            .description(Some(
                "A positive amount, exact: decimal text (\"12.34\") or a JSON number written without an exponent (12.34). \
                 At most as many decimal places as the currency has (EUR 2, JPY 0, BHD 3; \"1.230\" is refused for EUR, \
                 never rounded), and at most 9223372036854775807 minor units. Refused with 422 `amount_invalid`, \
                 `amount_must_be_positive`, `amount_precision_exceeded` or `amount_out_of_range`.",
            ))
            .into()
    }
}

impl ToSchema for DecimalAmount {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DecimalAmount")
    }
}

/// The `OwnerId` schema (`OwnerId::new`: a positive `i64`). The maximum is
/// explicit because `format: int64` alone bounds nothing for most validators.
/// Owner 0 holds the system accounts and is never named by a client.
pub struct OwnerIdSchema;

impl PartialSchema for OwnerIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(i64::MAX))
            .description(Some("An account owner's id: a positive 64-bit integer."))
            .examples([1])
            .into()
    }
}

impl ToSchema for OwnerIdSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OwnerId")
    }
}

fn schema_ref<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
}

/// The `PluginName` schema: what `plugins::valid_name` accepts.
pub struct PluginNameSchema;

impl PartialSchema for PluginNameSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(PLUGIN_NAME_PATTERN))
            .description(Some("A plugin's name: 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter."))
            .examples(["limits"])
            .into()
    }
}

impl ToSchema for PluginNameSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PluginName")
    }
}

/// `SubmitTransfer.description`: the limit shown is the default; the served
/// document carries the engine's configured `description_chars_max` (see `openapi::document`).
pub fn transfer_description() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(NO_NUL_PATTERN))
        .max_length(Some(crate::config::Settings::default().description_chars_max))
        .description(Some(
            "Free text stored with the transfer (a describer plugin may rewrite it); no NUL. Longer: 422 `description_too_long`.",
        ))
        .into()
}

/// A metadata object as `Metadata::new` bounds it: at most 16 keys of
/// `[a-z0-9_.-]{1,64}`, string values of at most 256 characters without NUL.
fn metadata_object() -> ObjectBuilder {
    let key = ObjectBuilder::new().schema_type(Type::String).pattern(Some(METADATA_KEY_PATTERN));
    let value = ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL_PATTERN)).max_length(Some(METADATA_VALUE_CHARS_MAX));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(key))
        .additional_properties(Some(value))
        .max_properties(Some(METADATA_KEYS_MAX))
        .examples([serde_json::json!({"kyc_tier": "verified", "country": "DE"})])
}

/// What every metadata field of a request says about its bounds.
const METADATA_RULES: &str = "At most 16 keys, each 1 to 64 characters of a-z, 0-9, '_', '.' and '-'; \
     values are strings of at most 256 characters, without NUL. Anything else: 422 `metadata_invalid`, whose message names the rule.";

/// `SubmitTransfer.metadata` and `CreateAccount.metadata`: optional; null or absent is none.
pub fn metadata_optional() -> Schema {
    metadata_object()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(format!(
            "Your own labels, passed to the plugins. {METADATA_RULES} Absent or null: none. On a transfer, part of what its id \
             means: the same id again with other metadata is 409 `idempotency_conflict`."
        )))
        .into()
}

/// `UpdateAccountMetadata.metadata`: required, replaces the account's whole metadata (`{}` clears it).
pub fn metadata_replacement() -> Schema {
    metadata_object()
        .description(Some(format!("The account's new metadata, replacing all of the old (`{{}}` clears it). {METADATA_RULES}")))
        .into()
}

/// Metadata in an answer: always present, `{}` when there is none.
pub fn metadata_view() -> Schema {
    metadata_object().description(Some("Metadata as submitted or last set; `{}` when there is none.")).into()
}

/// `MoveMoney.reference`: `accounts::move_money`'s check.
pub fn move_reference() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NO_NUL_PATTERN))
        .min_length(Some(1))
        .max_length(Some(super::accounts::REFERENCE_CHARS_MAX))
        .description(Some("Your id for this movement (1 to 128 characters, no NUL): the same reference again returns the first result."))
        .examples(["payout-2024-001"])
        .into()
}

/// `CreateClient.name`: `NewClient::new`'s check.
pub fn client_name() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NO_CONTROL_PATTERN))
        .min_length(Some(1))
        .max_length(Some(CLIENT_NAME_CHARS_MAX))
        .description(Some("What the client is, for people: 1 to 128 characters, no control characters."))
        .examples(["web-shop"])
        .into()
}

/// `UploadPlugin.component`: what the upload handler's base64 decoder accepts.
pub fn plugin_component() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(BASE64_PATTERN))
        .content_encoding("base64")
        .description(Some(
            "The component's bytes (a WebAssembly component exporting one of the plugin worlds), in standard base64 with padding.",
        ))
        .into()
}

/// Most owners one client may be bound to (`NewClient::new` refuses more; a test checks the two agree).
const CLIENT_OWNERS_MAX: usize = 1_000;

/// `CreateClient.owners`: absent or null for any owner; else 1 to 1,000 ids. Repeats are allowed (they are merged).
pub fn client_owners() -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(schema_ref::<OwnerIdSchema>())
        .min_items(Some(1))
        .max_items(Some(CLIENT_OWNERS_MAX))
        .description(Some(
            "The owner ids the client may act for (1 to 1,000; repeats are merged). Absent or null: any owner (a trusted back-end).",
        ))
        .into()
}

/// `CreateClient.scopes`: one to four distinct scopes.
pub fn client_scopes() -> Schema {
    ArrayBuilder::new()
        .items(schema_ref::<crate::auth::Scope>())
        .min_items(Some(1))
        .max_items(Some(crate::auth::Scope::ALL.len()))
        .unique_items(true)
        .description(Some("The operations the client may call, each at most once."))
        .into()
}

/// `ValidationOrder.names`: distinct plugin names.
pub fn plugin_names() -> Schema {
    ArrayBuilder::new()
        .items(schema_ref::<PluginNameSchema>())
        .unique_items(true)
        .description(Some(
            "Validator names, each at most once; first runs first. Validators not listed run after these. \
             A name that is no validator answers 404 `plugin_not_found`.",
        ))
        .into()
}

/// `CreateWebhook.url`: the checks `webhooks::check_target` makes that a schema can state.
pub fn webhook_url() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uri".into())))
        .pattern(Some("^[Hh][Tt][Tt][Pp][Ss]?://"))
        .min_length(Some(1))
        .max_length(Some(crate::events::webhooks::URL_CHARS_MAX))
        .description(Some(
            "Where deliveries are POSTed: an http or https URL with a host and no user name or password, at most 2,048 \
             characters, whose host the engine's `webhook_hosts_allowed` admits when it is set.",
        ))
        .examples(["https://hooks.example.com/transfers"])
        .into()
}

/// `CreateWebhook.events`: one to twelve distinct event types.
pub fn webhook_events() -> Schema {
    let types = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(crate::events::EVENT_TYPES));
    ArrayBuilder::new()
        .items(types)
        .min_items(Some(1))
        .max_items(Some(crate::events::EVENT_TYPES.len()))
        .unique_items(true)
        .description(Some("The event types to receive, each at most once."))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_currency_enum_is_exactly_what_the_parser_accepts() {
        let codes = supported_currency_codes();
        for code in ["EUR", "USD", "JPY", "BHD", "CHF"] {
            assert!(codes.contains(&code), "{code} is missing");
        }
        for code in ["XAU", "XXX", "ZZZ"] {
            assert!(!codes.contains(&code), "{code} is listed");
        }
        assert!(codes.iter().all(|c| Currency::parse(c).is_ok()));
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "sorted and without repeats");
    }

    #[test]
    fn the_client_limits_are_the_ones_new_client_enforces() {
        let scopes = ["transfers:read".to_owned()];
        assert!(crate::auth::NewClient::new(&"n".repeat(CLIENT_NAME_CHARS_MAX), &scopes, None).is_ok());
        assert!(crate::auth::NewClient::new(&"n".repeat(CLIENT_NAME_CHARS_MAX + 1), &scopes, None).is_err());
        let owners: Vec<i64> = (1..=CLIENT_OWNERS_MAX as i64 + 1).collect();
        assert!(crate::auth::NewClient::new("shop", &scopes, Some(&owners[..CLIENT_OWNERS_MAX])).is_ok());
        assert!(crate::auth::NewClient::new("shop", &scopes, Some(&owners)).is_err());
    }

    #[test]
    fn the_metadata_schema_states_the_bounds_metadata_new_enforces() {
        use crate::domain::METADATA_KEY_CHARS_MAX;
        for schema in [metadata_optional(), metadata_replacement(), metadata_view()] {
            let schema = serde_json::to_value(schema).unwrap();
            assert_eq!(schema["maxProperties"], METADATA_KEYS_MAX, "{schema}");
            assert_eq!(schema["additionalProperties"]["maxLength"], METADATA_VALUE_CHARS_MAX, "{schema}");
            assert_eq!(schema["propertyNames"]["pattern"], METADATA_KEY_PATTERN, "{schema}");
        }
        assert!(METADATA_KEY_PATTERN.ends_with(&format!("{{1,{METADATA_KEY_CHARS_MAX}}}$")));
        for bound in [METADATA_KEYS_MAX, METADATA_KEY_CHARS_MAX, METADATA_VALUE_CHARS_MAX] {
            assert!(METADATA_RULES.contains(&format!(" {bound} ")), "the description names {bound}");
        }
    }

    /// Text matching a whole-string pattern (proptest generates from the pattern without its anchors).
    fn matching(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
        let body = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')).expect("the patterns are anchored");
        proptest::string::string_regex(body).expect("a pattern proptest can generate from")
    }

    proptest::proptest! {
        /// One direction of "the pattern says what the check says": text the
        /// pattern allows passes the server's check. (The other direction,
        /// refusals, is what `scripts/contract`'s negative cases probe.)
        #[test]
        fn text_the_patterns_allow_passes_the_servers_checks(
            encoded in matching(BASE64_PATTERN),
            name in matching(PLUGIN_NAME_PATTERN),
            reference in matching(&NO_NUL_PATTERN.replace('*', "{1,8}")),
            client in matching(&NO_CONTROL_PATTERN.replace('*', "{1,8}")),
            metadata_key in matching(METADATA_KEY_PATTERN),
            metadata_value in matching(&NO_NUL_PATTERN.replace('*', &format!("{{{METADATA_VALUE_CHARS_MAX}}}"))),
        ) {
            use base64::Engine as _;
            proptest::prop_assert!(base64::engine::general_purpose::STANDARD.decode(&encoded).is_ok(), "{encoded:?}");
            proptest::prop_assert!(crate::plugins::valid_name(&name), "{name:?}");
            proptest::prop_assert!(!reference.contains('\0'));
            proptest::prop_assert!(!client.chars().any(char::is_control), "{client:?}");
            let entries = std::collections::BTreeMap::from([(metadata_key.clone(), metadata_value)]);
            proptest::prop_assert!(crate::domain::Metadata::new(entries).is_ok(), "{metadata_key:?}");
        }
    }
}
