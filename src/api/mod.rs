//! The HTTP API for the billing system and other internal services: customers, billing schedules,
//! invoices, payment attempts, payment settings and payment methods. Every route requires Basic
//! credentials (`Caller`); the OpenAPI document is generated from the same route list that builds
//! the router, so the two cannot drift apart.

pub mod customers;
pub mod error;
pub mod extract;
pub mod invoices;
pub mod methods;
pub mod settings;
pub mod validate;

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::startup::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "settle", description = "Payment reconciliation API for internal services."),
    modifiers(&BasicAuth),
    security(("basic" = []))
)]
struct ApiDoc;

/// Declares the Basic-auth scheme every route uses.
struct BasicAuth;

impl utoipa::Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The API routes and their OpenAPI document, built from one list.
pub fn router_and_document() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(settings::put_customer, settings::get_customer))
        .routes(routes!(
            settings::put_billing_schedule,
            settings::get_billing_schedule
        ))
        .routes(routes!(settings::put_invoice, settings::get_invoice))
        .routes(routes!(settings::effective))
        .routes(routes!(customers::create))
        .routes(routes!(customers::get, customers::update))
        .routes(routes!(methods::put))
        .routes(routes!(methods::list))
        .routes(routes!(invoices::create_billing_schedule))
        .routes(routes!(invoices::get_billing_schedule))
        .routes(routes!(invoices::create_invoice, invoices::list_invoices))
        .routes(routes!(invoices::get_invoice))
        .routes(routes!(invoices::create_payment))
        .routes(routes!(invoices::get_payment))
        .split_for_parts()
}

/// The API with `GET /openapi.json`.
pub fn router() -> Router<AppState> {
    let (router, document) = router_and_document();
    let document = std::sync::Arc::new(document);
    router.route(
        "/openapi.json",
        get(move || {
            let document = document.clone();
            async move { axum::Json(document.as_ref().clone()) }
        }),
    )
}
