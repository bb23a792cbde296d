//! The OpenAPI document, generated from the handlers' annotations and the request and response
//! types, so it describes exactly what the server does.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{exec, files, images, sandboxes, snapshots, system, terminal};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "hearth", description = "Sandboxes in microVMs: create them, run commands \
        and move files in them. Every route but `/health` needs `Authorization: Bearer KEY`. \
        Errors are `{\"error\":{\"code\",\"message\"}}`."),
    paths(
        system::health, system::version, system::openapi,
        sandboxes::create, sandboxes::list, sandboxes::get, sandboxes::start, sandboxes::stop,
        sandboxes::kill, sandboxes::set_timeout, sandboxes::delete,
        exec::exec, exec::exec_stream, terminal::terminal,
        files::read, files::write, files::stat, files::list, files::mkdir, files::remove,
        images::pull, images::list, images::remove,
        snapshots::create, snapshots::list, snapshots::get, snapshots::remove,
    ),
    modifiers(&BearerKey),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
