//! The OpenAPI document, generated from the handlers' annotations and the request and response
//! types, so it describes exactly what the server does.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
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
    modifiers(&BearerKey, &TaggedOperationIds),
    security(("api_key" = [])),
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerKey;

/// The key scheme, and the 401 every keyed route answers without a valid key.
impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let unauthorized = ResponseBuilder::new()
            .description("no key, or not a valid one")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            if path == "/health" {
                continue;
            }
            for operation in operations(item) {
                operation
                    .responses
                    .responses
                    .insert("401".to_owned(), unauthorized.clone().into());
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// Handlers in different groups share names (`list`, `create`, `remove`), and operation ids
/// must be unique for clients generated from the document: each becomes `<tag>_<handler>`.
#[derive(Debug)]
struct TaggedOperationIds;

impl Modify for TaggedOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let tag = operation
                    .tags
                    .as_ref()
                    .and_then(|tags| tags.first())
                    .cloned();
                if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
                    if !id.starts_with(&format!("{tag}_")) {
                        *id = format!("{tag}_{id}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_operation_ids_are_unique_and_query_parameters_are_in_the_query() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "{method} {path}: `{id}` twice");
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let name = parameter["name"].as_str().unwrap();
                    let in_path = path.contains(&format!("{{{name}}}"));
                    let want = if in_path { "path" } else { "query" };
                    assert_eq!(parameter["in"], want, "{method} {path} `{name}`");
                }
            }
        }
        assert!(ids.contains("sandboxes_list") && ids.contains("images_list"));
        let list = &document["paths"]["/v1/sandboxes"]["get"]["responses"];
        assert!(list["401"].is_object(), "{list}");
        assert!(document["paths"]["/health"]["get"]["responses"]["401"].is_null());
    }
}
