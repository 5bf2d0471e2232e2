//! The HTTP side (`listen.http`): for now `GET /healthz` and
//! `GET /api/v1/explain`, which `popdns explain --server` asks for live health
//! and route quality. The operations issue adds metrics, the POP list, drain
//! and reload here; the modes issue adds DoH, the JSON API and 302.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/explain", get(explain))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path") })
        .with_state(shared)
}

fn error(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    (code, Json(json!({ "error": msg.to_string() }))).into_response()
}

async fn explain(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(name) = q.get("name") else { return error(StatusCode::BAD_REQUEST, "missing `name`") };
    let client: IpAddr = match q.get("client").map(|c| c.parse()) {
        Some(Ok(ip)) => ip,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "`client` is not an IP address"),
        None => return error(StatusCode::BAD_REQUEST, "missing `client`"),
    };
    let qtype = q.get("type").map_or("A", String::as_str);
    let ecs = q.get("ecs").map(String::as_str).filter(|e| !e.is_empty());
    let snap = shared.snapshot.load_full();
    let quality = shared.quality.load_full();
    match crate::explain::explain(&snap, &quality, name, client, ecs, qtype) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Serve HTTP on an already bound listener until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let app = router(shared).into_make_service_with_connect_info::<SocketAddr>();
    let _ = axum::serve(listener, app).with_graceful_shutdown(async move { cancel.cancelled().await }).await;
}
