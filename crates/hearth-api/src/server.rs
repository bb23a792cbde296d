//! The router and the listeners: which routes need a key, the body limits, and serving on TCP
//! and a Unix socket until shutdown.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use hearth_engine::Engine;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::auth::{self, ApiKeys};
use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::routes::{exec, files, images, sandboxes, snapshots, system, terminal};

/// Largest JSON body: requests are small; file contents go to the file route.
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// The DNS server sandboxes' forwarders ask; `None`: the host's.
    pub dns_upstream: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    /// Permits to boot: create and start requests hold one while their sandbox boots.
    pub starts: Arc<tokio::sync::Semaphore>,
    /// Host dirs under which API clients may mount host paths (`hearth serve
    /// --allow-host-dir`); empty allows named volumes only.
    pub host_dirs: Arc<Vec<PathBuf>>,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, dns_upstream: Option<SocketAddr>, max_starts: usize) -> Self {
        AppState {
            engine,
            dns_upstream,
            metrics: Arc::default(),
            starts: Arc::new(tokio::sync::Semaphore::new(max_starts)),
            host_dirs: Arc::default(),
        }
    }

    /// Waits for a turn to boot a sandbox; held until the boot is done.
    pub async fn boot_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        self.starts.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            )
        })
    }
}

/// How `hearth serve` listens and who it lets in.
#[derive(Debug)]
pub struct ServeConfig {
    /// A TCP address; with neither this nor `unix`, nothing is served.
    pub listen: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    /// `None` serves without keys, which only loopback and Unix sockets allow.
    pub keys: Option<ApiKeys>,
    pub dns_upstream: Option<SocketAddr>,
    /// Sandboxes booting at once; further create and start requests wait.
    pub max_starts: usize,
    /// A second TCP listener that speaks E2B's protocols ([`crate::e2b`]).
    pub e2b: Option<(SocketAddr, crate::e2b::E2bConfig)>,
    /// A TCP listener that speaks ComputeSDK's gateway protocol ([`crate::computesdk`]).
    pub computesdk: Option<(SocketAddr, crate::e2b::TokenKey)>,
    /// See [`AppState::host_dirs`].
    pub host_dirs: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to serve {0} without API keys: only loopback addresses and Unix sockets may go without")]
    PublicWithoutKeys(SocketAddr),
    #[error("nothing to listen on: give a TCP address or a Unix socket path")]
    NoListener,
    #[error("failed to listen on {0}")]
    BindTcp(SocketAddr, #[source] std::io::Error),
    #[error("failed to listen on `{}`", .0.display())]
    BindUnix(PathBuf, #[source] std::io::Error),
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
}

/// A server bound to its listeners, not yet answering.
#[derive(Debug)]
pub struct Server {
    tcp: Option<TcpListener>,
    unix: Option<(UnixListener, PathBuf)>,
    router: Router,
    /// The SDK protocols' listeners: E2B, then ComputeSDK.
    sdks: Vec<(&'static str, TcpListener, Router)>,
    stop: CancellationToken,
}

/// Every route; all but `/health` behind the key check when there are keys. Cancelling
/// `stop` ends MCP calls in flight.
pub fn router(state: AppState, keys: Option<ApiKeys>, stop: CancellationToken) -> Router {
    let mcp = crate::mcp::http_service(state.clone(), keys.is_some(), stop);
    let tracked = axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track);
    let file_content = get(files::read)
        .put(files::write)
        .layer(DefaultBodyLimit::max(files::MAX_FILE_BYTES));
    let v1 = Router::new()
        .route("/version", get(system::version))
        .route("/openapi.json", get(system::openapi))
        .route("/sandboxes", post(sandboxes::create).get(sandboxes::list))
        .route(
            "/sandboxes/{sandbox}",
            get(sandboxes::get).delete(sandboxes::delete),
        )
        .route("/sandboxes/{sandbox}/start", post(sandboxes::start))
        .route("/sandboxes/{sandbox}/stop", post(sandboxes::stop))
        .route("/sandboxes/{sandbox}/kill", post(sandboxes::kill))
        .route("/sandboxes/{sandbox}/timeout", post(sandboxes::set_timeout))
        .route("/sandboxes/{sandbox}/exec", post(exec::exec))
        .route("/sandboxes/{sandbox}/exec/stream", post(exec::exec_stream))
        .route("/sandboxes/{sandbox}/terminal", get(terminal::terminal))
        .route("/sandboxes/{sandbox}/files/content", file_content)
        .route("/sandboxes/{sandbox}/files/stat", get(files::stat))
        .route("/sandboxes/{sandbox}/files/list", get(files::list))
        .route("/sandboxes/{sandbox}/files/mkdir", post(files::mkdir))
        .route(
            "/sandboxes/{sandbox}/files",
            axum::routing::delete(files::remove),
        )
        .route("/sandboxes/{sandbox}/snapshots", post(snapshots::create))
        .route("/snapshots", get(snapshots::list))
        .route(
            "/snapshots/{name}",
            get(snapshots::get).delete(snapshots::remove),
        )
        .route("/images", get(images::list))
        .route("/images/pull", post(images::pull))
        .route("/images/{*name}", axum::routing::delete(images::remove))
        .route_layer(tracked)
        .fallback(no_route)
        .method_not_allowed_fallback(no_method);
    let mut keyed = Router::new()
        .route("/metrics", get(metrics::serve))
        .nest_service("/mcp", mcp)
        .nest("/v1", v1);
    if let Some(keys) = keys {
        keyed = keyed.layer(axum::middleware::from_fn_with_state(
            Arc::new(keys),
            auth::require_key,
        ));
    }
    Router::new()
        .route("/health", get(system::health))
        .merge(keyed)
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(state)
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn no_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

impl Server {
    /// Binds the listeners `config` names. Refuses a non-loopback TCP address without keys.
    pub async fn bind(engine: Arc<Engine>, config: ServeConfig) -> Result<Self, ServeError> {
        if config.listen.is_none() && config.unix.is_none() {
            return Err(ServeError::NoListener);
        }
        let public = config
            .listen
            .iter()
            .chain(config.e2b.iter().map(|(addr, _)| addr));
        for addr in public {
            if config.keys.is_none() && !addr.ip().is_loopback() {
                return Err(ServeError::PublicWithoutKeys(*addr));
            }
        }
        let tcp = match config.listen {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        let unix = match config.unix {
            Some(path) => Some((bind_unix(&path)?, path)),
            None => None,
        };
        let mut state = AppState::new(engine, config.dns_upstream, config.max_starts);
        state.host_dirs = Arc::new(config.host_dirs);
        let mut sdks = Vec::new();
        if let Some((addr, e2b)) = config.e2b {
            let router = crate::e2b::router(state.clone(), config.keys.clone(), e2b);
            sdks.push(("e2b", bind_tcp(addr).await?, router));
        }
        if let Some((addr, tokens)) = config.computesdk {
            let router = crate::computesdk::router(state.clone(), config.keys.clone(), tokens);
            sdks.push(("computesdk", bind_tcp(addr).await?, router));
        }
        let stop = CancellationToken::new();
        Ok(Server {
            tcp,
            unix,
            router: router(state, config.keys, stop.clone()),
            sdks,
            stop,
        })
    }

    /// The bound TCP address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound addresses of the SDK listeners, each with its protocol's name.
    pub fn sdk_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        self.sdks
            .iter()
            .filter_map(|(name, l, _)| Some((*name, l.local_addr().ok()?)))
            .collect()
    }

    /// Answers until `shutdown` completes, then lets requests in flight finish. Sandboxes are
    /// their supervisors' and keep running.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
        let stop_mcp = self.stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop_mcp.cancel();
            let _ = stop_tx.send(());
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
            let _ = rx.changed().await;
        };
        let mut servers: Vec<futures::future::BoxFuture<'static, std::io::Result<()>>> = Vec::new();
        let tcp_listeners = self.tcp.map(|l| (l, self.router.clone())).into_iter();
        let sdks = self
            .sdks
            .into_iter()
            .map(|(_, listener, router)| (listener, router));
        for (listener, router) in tcp_listeners.chain(sdks) {
            let serve =
                axum::serve(listener, router).with_graceful_shutdown(stopped(stop_rx.clone()));
            servers.push(Box::pin(serve.into_future()));
        }
        let unix_path = self.unix.as_ref().map(|(_, path)| path.clone());
        if let Some((listener, _)) = self.unix {
            let serve = axum::serve(listener, self.router.clone())
                .with_graceful_shutdown(stopped(stop_rx.clone()));
            servers.push(Box::pin(serve.into_future()));
        }
        let result = futures::future::try_join_all(servers).await.map(|_| ());
        if let Some(path) = unix_path {
            let _ = std::fs::remove_file(path);
        }
        result.map_err(ServeError::Serve)
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::BindTcp(addr, e))
}

/// Binds a Unix socket at `path`, replacing a stale socket a previous server left.
fn bind_unix(path: &std::path::Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|e| ServeError::BindUnix(path.to_owned(), e))
}
