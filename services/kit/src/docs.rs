//! A service's API documentation: its OpenAPI 3 document at `/openapi.json` and a
//! browsable Swagger UI at `/docs`, served from the binary (no internet needed).

use axum::Router;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

/// The JSON error envelope every error response carries.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// One line a person understands.
    pub error: String,
}

/// Adds the bearer-token security scheme (`bearer`) that protected routes name.
pub fn with_bearer(mut openapi: OpenApi) -> OpenApi {
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A token from PUT /api/v1/user/login (AUTH_MODE=jwt), or any value (AUTH_MODE=presence).",
                ))
                .build(),
        ),
    );
    openapi
}

/// `/openapi.json` and `/docs` for `openapi`.
pub fn router<S: Clone + Send + Sync + 'static>(openapi: OpenApi) -> Router<S> {
    Router::from(SwaggerUi::new("/docs").url("/openapi.json", openapi)).with_state(())
}
