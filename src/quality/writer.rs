//! The single writer of the route-quality table (stub until the feed lands).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::server::Shared;

#[derive(Default)]
pub struct FeedStats {}

pub async fn start(
    addr: SocketAddr,
    _shared: Arc<Shared>,
    _cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, Vec<tokio::task::JoinHandle<()>>)> {
    let sock = tokio::net::UdpSocket::bind(addr).await?;
    let bound = sock.local_addr()?;
    Ok((bound, vec![]))
}

/// Tell the writer the config changed (POP ids may have moved).
pub fn config_changed(_shared: &Shared) {}
