//! The HTTP API for the billing system and other internal services: customers, billing schedules,
//! invoices, payment attempts, payment settings, payment methods, and the payouts that carried
//! their money. Every route but
//! `GET /openapi.json` requires Basic credentials (`Caller`); the OpenAPI document is generated
//! from the same route list that builds the router, so the two cannot drift apart.
//!
//! The API writes PostgreSQL only. One handler reaches into the worker: registering a payment
//! applies the events that waited for it (`payments`), through the worker's own apply path, so
//! the two can never decide differently.

pub mod billing_schedules;
pub mod charges;
pub mod credentials;
pub mod customer_merge;
pub mod customer_search;
pub mod customers;
pub mod customers_bulk;
pub mod error;
pub mod extract;
pub mod invoices;
pub mod ledger;
pub mod pages;
pub mod payment_methods;
pub mod payments;
pub mod payouts;
pub mod refunds;
pub mod schema;
pub mod settings;
pub mod state;
pub mod validate;

pub use self::state::ApiState;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "settle",
        description = "Payment reconciliation API for internal services. Every operation takes HTTP Basic credentials; this document itself (`GET /openapi.json`) is served without them."
    ),
    modifiers(&BasicAuth),
    security(("basic" = []))
)]
struct ApiDoc;

/// Declares the Basic-auth scheme every operation uses.
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

/// Documents the 415 of every operation that takes a body: `extract::ApiBody` refuses a body not
/// sent as `application/json` on every route, so no route lists it itself.
struct JsonBodies;

impl utoipa::Modify for JsonBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::Response;
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.post, &mut item.put, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                if operation.request_body.is_some() {
                    operation
                        .responses
                        .responses
                        .entry("415".to_owned())
                        .or_insert_with(|| {
                            Response::new("the body is not sent as `application/json`").into()
                        });
                }
            }
        }
    }
}

/// The API routes and their OpenAPI document, built from one list.
pub fn router_and_document() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(settings::put_customer, settings::get_customer))
        .routes(routes!(
            settings::put_billing_schedule,
            settings::get_billing_schedule
        ))
        .routes(routes!(settings::put_invoice, settings::get_invoice))
        .routes(routes!(settings::put_account, settings::get_account))
        .routes(routes!(settings::effective))
        .routes(routes!(customers::create, customers::list))
        .routes(routes!(customers::search))
        .routes(routes!(customers_bulk::bulk))
        .routes(routes!(customer_merge::merge))
        .routes(routes!(
            customers::get,
            customers::update,
            customers::patch,
            customers::delete
        ))
        .routes(routes!(payment_methods::put))
        .routes(routes!(payment_methods::list))
        .routes(routes!(payment_methods::remove))
        .routes(routes!(billing_schedules::create))
        .routes(routes!(billing_schedules::get))
        .routes(routes!(invoices::create, invoices::list))
        .routes(routes!(invoices::get))
        .routes(routes!(payments::create))
        // A static segment: matched before `/payments/{id}`, whatever the order here.
        .routes(routes!(payments::unmatched))
        .routes(routes!(payments::get))
        .routes(routes!(refunds::create))
        .routes(routes!(payouts::list))
        .routes(routes!(payouts::get))
        .split_for_parts();
    // After the routes are in: `ApiDoc`'s own modifiers run before there are any.
    utoipa::Modify::modify(&JsonBodies, &mut document);
    (router, document)
}

async fn refuse_until_migrated(
    axum::extract::State(schema): axum::extract::State<tokio::sync::watch::Receiver<bool>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if *schema.borrow() {
        next.run(request).await
    } else {
        crate::http::unavailable(
            "migrations_pending",
            "the database schema is being migrated; retry shortly",
        )
    }
}

/// The API with `GET /openapi.json` (unauthenticated: it is the contract, no data).
pub fn router(state: ApiState) -> Router {
    let (router, document) = router_and_document();
    let document = Arc::new(document);
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.schema.clone(),
            refuse_until_migrated,
        ))
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .with_state(state)
}
