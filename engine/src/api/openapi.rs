//! The OpenAPI document, generated from the handlers' annotations.
//!
//! Clients generate their SDKs from it, so it states exactly what the server
//! does: every status an operation can answer, and request schemas that
//! allow what the server accepts and nothing it refuses (`scripts/contract`
//! runs Schemathesis against the two). Here:
//! - `ApiDoc`: the operations, and the `bearer` scheme each one declares;
//! - the error answers that many operations share, as response components;
//! - `document`: the document as served, with this engine's configured limits.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToResponse};

use super::error::ErrorBody;
use super::schema::{CurrencyCode, DecimalAmount, OwnerIdSchema, PluginNameSchema};
use crate::config::Settings;

#[derive(OpenApi)]
#[openapi(
    info(title = "transfer-engine", description = "Submit money transfers; read balances and statuses."),
    paths(
        super::transfers::submit,
        super::transfers::get,
        super::transfers::conflicts,
        super::accounts::create,
        super::accounts::get,
        super::accounts::update_metadata,
        super::accounts::transfers,
        super::accounts::deposit,
        super::accounts::withdraw,
        super::admin::upload,
        super::admin::list,
        super::admin::activate,
        super::admin::deactivate,
        super::admin::shadow,
        super::admin::unshadow,
        super::admin::canary,
        super::admin::uncanary,
        super::admin::report,
        super::admin::set_validation_order,
        super::clients::create,
        super::clients::list,
        super::clients::revoke,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::delete,
        super::webhooks::deliveries,
        super::webhooks::resend,
    ),
    components(
        schemas(ErrorBody, CurrencyCode, DecimalAmount, OwnerIdSchema, PluginNameSchema, crate::auth::Scope),
        responses(BadRequest, Unauthorized, PayloadTooLarge, UnsupportedMediaType, Unavailable),
    ),
    tags(
        (name = "transfers", description = "Submit transfers and read their status."),
        (name = "accounts", description = "Open accounts, read balances, set their metadata; deposits and withdrawals (admin token)."),
        (name = "plugins", description = "Policy plugins (admin token)."),
        (name = "clients", description = "API clients and their keys (admin token)."),
        (name = "webhooks", description = "Endpoints that receive the engine's events, signed (admin token)."),
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as this engine serves it: limits that come from its settings
/// are filled in, so the document holds for this server, not only for the defaults.
pub fn document(settings: &Settings) -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    if let Some(description) = property(&mut doc, "SubmitTransfer", "description") {
        description.max_length = Some(settings.description_chars_max);
    }
    let mut doc = serde_json::to_value(doc).expect("the document serializes");
    camel_case_links(&mut doc);
    doc
}

/// utoipa 5.5 serializes a Link object's fields in snake case
/// (`operation_id`), which OpenAPI does not know: without this, readers see
/// links that point nowhere.
fn camel_case_links(doc: &mut serde_json::Value) {
    let operations = doc["paths"].as_object_mut().into_iter().flat_map(|paths| paths.values_mut()).filter_map(|item| item.as_object_mut());
    let responses = operations
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let links = response.get_mut("links").and_then(|l| l.as_object_mut()).into_iter().flat_map(|links| links.values_mut());
        for link in links.filter_map(|link| link.as_object_mut()) {
            for (snake, camel) in [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
}

/// A property of a component schema, to adjust a generated limit.
fn property<'a>(doc: &'a mut utoipa::openapi::OpenApi, schema: &str, name: &str) -> Option<&'a mut Object> {
    let components = doc.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else { return None };
    match object.properties.get_mut(name)? {
        RefOr::T(Schema::Object(property)) => Some(property),
        _ => None,
    }
}

/// One scheme for both credentials: an API key (`tek_...`), or the admin token.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key (`tek_...`, made with `POST /v1/admin/clients`) with the operation's scope, or the admin token. \
                 Deposits, withdrawals and `/v1/admin/*` take the admin token only.",
            ))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// An answer with the JSON error body.
fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
}

/// Declares a shared error answer as a response component.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident: $description:expr;)*) => {$(
        $(#[$doc])*
        pub struct $name;
        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description).build().into())
            }
        }
    )*};
}

error_responses! {
    /// 400: from `JsonBody` and `PathParams` (see `error`).
    BadRequest: "The request cannot be read: `malformed_json` (the body is not JSON), `invalid_body` (it could not be \
                 read), or `invalid_path` (a path segment is not UTF-8 once percent-decoded).";
    /// 413: `DefaultBodyLimit` (`request_body_bytes_max`; the routes that take metadata, client creation and plugin uploads have their own).
    PayloadTooLarge: "`body_too_large`: the body is longer than the route allows (`request_body_bytes_max`, 16 KiB by \
                      default; submitting a transfer, opening an account, replacing its metadata and creating an API \
                      client: at least 64 KiB; plugin uploads: the component's limit, base64-encoded, plus 64 KiB).";
    /// 415: a body sent without `Content-Type: application/json`.
    UnsupportedMediaType: "`unsupported_media_type`: the body must be sent with `Content-Type: application/json`.";
    /// 503: a dependency is away (`database_unavailable`, `broker_unavailable`) or the engine is at a limit
    /// (`overloaded`, `request_timeout`).
    Unavailable: "`database_unavailable` or `broker_unavailable`: a dependency is away; `overloaded`: the engine has \
                  its most requests in progress; `request_timeout`: the request outlived the engine's time limit. \
                  Retry later; with the same transfer id or reference, a retry cannot apply twice.";
}

/// 401, with the challenge every 401 carries.
pub struct Unauthorized;

impl<'r> ToResponse<'r> for Unauthorized {
    fn response() -> (&'r str, RefOr<Response>) {
        let challenge = HeaderBuilder::new()
            .schema(Object::builder().schema_type(Type::String).enum_values(Some(["Bearer"])))
            .description(Some("Always `Bearer`."))
            .build();
        let response = error_response(
            "`unauthorized`: no `Authorization: Bearer` header, more than one, an unknown or revoked API key, or a wrong \
             admin token.",
        )
        .header("www-authenticate", challenge)
        .build();
        ("Unauthorized", response.into())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn served() -> Value {
        document(&Settings::default())
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut found = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                found.push((method.to_uppercase(), path.clone(), operation));
            }
        }
        found
    }

    fn statuses(operation: &Value) -> BTreeSet<&str> {
        operation["responses"].as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn every_operation_declares_the_bearer_scheme_and_the_answers_of_its_extractors() {
        let doc = served();
        let operations = operations(&doc);
        assert_eq!(operations.len(), 27);
        for (method, path, operation) in operations {
            let name = format!("{method} {path}");
            assert_eq!(operation["security"], serde_json::json!([{"bearer": []}]), "{name}");
            let statuses = statuses(operation);
            // Every credential extractor can answer these (503: a client key is looked up in PostgreSQL).
            for status in ["401", "403", "503"] {
                assert!(statuses.contains(status), "{name} does not list {status}");
            }
            if !operation["requestBody"].is_null() {
                for status in ["400", "413", "415", "422"] {
                    assert!(statuses.contains(status), "{name} reads a body but does not list {status}");
                }
            }
            if path.contains('{') {
                assert!(statuses.contains("400"), "{name} has path parameters but does not list 400 `invalid_path`");
            }
            assert!(statuses.iter().any(|s| s.starts_with('2')), "{name} lists no success");
        }
    }

    #[test]
    fn operation_ids_are_unique_so_generated_sdks_have_one_method_each() {
        let doc = served();
        let ids: Vec<&str> = operations(&doc).iter().map(|(_, _, o)| o["operationId"].as_str().unwrap()).collect();
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "{ids:?}");
    }

    #[test]
    fn links_name_operations_that_exist_in_openapi_spelling() {
        let doc = served();
        let ids: BTreeSet<&str> = operations(&doc).iter().map(|(_, _, o)| o["operationId"].as_str().unwrap()).collect();
        let mut links = 0;
        for (method, path, operation) in operations(&doc) {
            for response in operation["responses"].as_object().unwrap().values() {
                for link in response["links"].as_object().into_iter().flat_map(|l| l.values()) {
                    let target = link["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: {link}"));
                    assert!(ids.contains(target), "{method} {path} links to no operation {target}");
                    assert!(link.get("operation_id").is_none());
                    links += 1;
                }
            }
        }
        assert!(links >= 5, "only {links} links");
    }

    #[test]
    fn every_answer_with_metadata_carries_it_and_every_operation_that_takes_it_lists_metadata_invalid() {
        let doc = served();
        for schema in ["TransferStatusView", "AccountBody"] {
            let required = doc["components"]["schemas"][schema]["required"].as_array().unwrap();
            assert!(required.contains(&serde_json::json!("metadata")), "{schema} does not require metadata");
        }
        for (path, method) in [("/v1/transfers", "post"), ("/v1/accounts", "post"), ("/v1/accounts/{owner_id}/{currency}", "patch")] {
            let refusals = doc["paths"][path][method]["responses"]["422"]["description"].as_str().unwrap_or_default();
            assert!(refusals.contains("`metadata_invalid`"), "{method} {path}: {refusals:?}");
        }
    }

    #[test]
    fn the_served_document_carries_the_configured_description_limit() {
        let description = |doc: &Value| doc["components"]["schemas"]["SubmitTransfer"]["properties"]["description"]["maxLength"].clone();
        assert_eq!(description(&served()), 280);
        let settings = Settings { description_chars_max: 40, ..Settings::default() };
        assert_eq!(description(&document(&settings)), 40);
    }
}
