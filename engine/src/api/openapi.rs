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
    ),
    modifiers(&AdminToken)
)]
pub struct ApiDoc;

struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}
