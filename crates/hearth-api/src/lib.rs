//! hearth-api: `hearth serve`, REST + JSON under `/v1` over the engine's operations. Handlers
//! (one file per group in [`routes`]) parse a request, call one [`hearth_engine::Engine`]
//! method and map its result; an [`hearth_engine::EngineError`] becomes the one error body
//! with the status its kind picks ([`error`]). [`auth`] checks bearer keys kept as hashes;
//! [`openapi`] builds the OpenAPI document from the same types; [`metrics`] serves
//! Prometheus metrics; [`mcp`] the same operations as MCP tools; [`server`] binds TCP and Unix
//! listeners and serves until shutdown; [`e2b`] and [`computesdk`] speak those SDKs' protocols on listeners of their own.

pub mod auth;
pub mod computesdk;
pub mod e2b;
pub mod error;
mod extract;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;

pub use auth::{ApiKeys, AuthError};
pub use server::{router, AppState, ServeConfig, ServeError, Server};
