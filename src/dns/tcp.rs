//! DNS over TCP (RFC 7766): two-byte length framing, pipelined queries
//! answered in order, an idle timeout and a cap on connections.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::answer::{Scratch, Transport, answer};
use super::wire;
use crate::server::Shared;

/// Bind a TCP listener (SO_REUSEADDR, so a restart does not wait out TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let limit = Arc::new(Semaphore::new(shared.snapshot.load().server.tcp_clients));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        // Over the cap: close at once rather than queue (RFC 7766 §6.2.2 lets us).
        let Ok(permit) = limit.clone().try_acquire_owned() else { continue };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = connection(stream, peer, shared) => {}
            }
            drop(permit);
        });
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let idle = shared.snapshot.load().server.tcp_idle;
    let mut scratch = Scratch::default();
    let mut inbuf = vec![0u8; 65535];
    let mut outbuf = vec![0u8; 65535 + 2];
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(n)) => n as usize,
            _ => return,
        };
        match tokio::time::timeout(idle, stream.read_exact(&mut inbuf[..len])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let result = {
            let snap = shared.snapshot.load();
            let quality = shared.quality.load();
            answer(&snap, &quality, &mut scratch, &inbuf[..len], peer.ip(), Transport::Tcp, &mut outbuf[2..])
        };
        let Some((n, summary)) = result else {
            // A response (QR set) is ignored and the queries pipelined after
            // it are still answered; anything shorter than a header means the
            // stream is not DNS, and the connection ends.
            shared.stats.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if len >= wire::HEADER_LEN {
                continue;
            }
            return;
        };
        outbuf[..2].copy_from_slice(&(n as u16).to_be_bytes());
        if stream.write_all(&outbuf[..n + 2]).await.is_err() {
            return;
        }
        shared.stats.record(Transport::Tcp, &summary);
    }
}
