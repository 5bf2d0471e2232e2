//! The UDP fast path: one SO_REUSEPORT socket per worker thread, each a plain
//! loop (no task per packet) that answers into its own reused buffer.
//!
//! Worker threads are OS threads, not tokio tasks: a packet costs a recv, one
//! `answer` call and a send, and nothing waits on anything else.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::answer::{Scratch, Transport, answer};
use crate::server::Shared;

/// Bind one UDP socket with SO_REUSEPORT (so several workers share the port).
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    // Wake up now and then to notice shutdown.
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(s.into())
}

/// Bind `workers` sockets on `addr` (port 0: the first one picks the port) and
/// start one thread on each. Returns the bound address.
pub fn start(
    addr: SocketAddr,
    workers: usize,
    shared: Arc<Shared>,
) -> std::io::Result<(SocketAddr, Vec<JoinHandle<()>>)> {
    let first = bind_reuseport(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind_reuseport(bound)?);
    }
    let mut threads = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        let shared = shared.clone();
        threads.push(std::thread::Builder::new().name(format!("popdns-udp-{i}")).spawn(move || worker(sock, shared))?);
    }
    Ok((bound, threads))
}

fn worker(sock: UdpSocket, shared: Arc<Shared>) {
    let mut scratch = Scratch::default();
    let mut inbuf = vec![0u8; 65535];
    let mut outbuf = vec![0u8; 65535];
    while !shared.stopping.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut inbuf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => continue,
        };
        let snap = shared.snapshot.load();
        let quality = shared.quality.load();
        let started = std::time::Instant::now();
        if let Some((len, summary)) =
            answer(&snap, &quality, &mut scratch, &inbuf[..n], peer.ip(), Transport::Udp, &mut outbuf)
        {
            let _ = sock.send_to(&outbuf[..len], peer);
            shared.stats.record(Transport::Udp, &summary, started.elapsed());
        } else {
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
