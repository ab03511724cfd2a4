//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "transfer-engine", description = "Submit money transfers; read balances and statuses."),
    paths(
        super::transfers::submit,
        super::transfers::get,
        super::accounts::create,
        super::accounts::get,
        super::accounts::transfers,
        super::accounts::deposit,
        super::accounts::withdraw,
        super::admin::upload,
        super::admin::list,
        super::admin::activate,
        super::admin::deactivate,
        super::admin::set_validation_order,
        super::clients::create,
        super::clients::list,
        super::clients::revoke,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

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
