//! Binds every socket, starts the workers, owns shutdown.
//!
//! `start` returns a [`ServerHandle`] that knows the addresses it bound (tests
//! bind port 0) and stops everything on `shutdown`. The query path reads
//! `Shared::snapshot` and `Shared::quality`; each has exactly one writer
//! (reload for the first, the feed writer thread for the second).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Snapshot;
use crate::dns::{self, Transport, answer::Summary};
use crate::quality::{Quality, writer};

/// Counters the query path bumps (exported by the metrics endpoint later).
#[derive(Default)]
pub struct Stats {
    /// [transport][rcode bucket]
    pub queries: [[AtomicU64; 8]; 2],
    pub ecs_present: AtomicU64,
    pub ecs_absent: AtomicU64,
    pub truncated: AtomicU64,
    /// Datagrams that got no answer (too short, or a response).
    pub dropped: AtomicU64,
    /// Queries whose answer panicked (a bug): dropped, the worker goes on.
    pub panics: AtomicU64,
}

impl Stats {
    pub fn record(&self, t: Transport, s: &Summary) {
        let bucket = match s.rcode {
            0..=5 => s.rcode as usize,
            16 => 6,
            _ => 7,
        };
        self.queries[t as usize][bucket].fetch_add(1, Ordering::Relaxed);
        if s.ecs { &self.ecs_present } else { &self.ecs_absent }.fetch_add(1, Ordering::Relaxed);
        if s.truncated {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What every worker reads.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub quality: ArcSwap<Quality>,
    pub stats: Stats,
    pub feed_stats: writer::FeedStats,
    pub stopping: AtomicBool,
}

impl Shared {
    /// The state of a server starting on `snapshot`, with no route-quality data yet.
    pub fn new(snapshot: Snapshot) -> Shared {
        let quality = Quality { config_generation: snapshot.generation, ..Default::default() };
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            quality: ArcSwap::from_pointee(quality),
            stats: Stats::default(),
            feed_stats: writer::FeedStats::default(),
            stopping: AtomicBool::new(false),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {proto} {addr}: {source}")]
    Bind { proto: &'static str, addr: SocketAddr, source: std::io::Error },
}

pub struct ServerHandle {
    pub dns_udp: Vec<SocketAddr>,
    pub dns_tcp: Vec<SocketAddr>,
    pub feed: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    cancel: CancellationToken,
    threads: Vec<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Bind everything the snapshot's `listen` names and start serving. Must run
/// inside a tokio runtime (TCP and HTTP are tasks; UDP workers and the feed writer are threads).
pub async fn start(snapshot: Snapshot) -> Result<ServerHandle, ServerError> {
    let shared = Arc::new(Shared::new(snapshot));
    let snap = shared.snapshot.load_full();
    let cancel = CancellationToken::new();
    let mut handle = ServerHandle {
        dns_udp: vec![],
        dns_tcp: vec![],
        feed: None,
        http: None,
        shared: shared.clone(),
        cancel: cancel.clone(),
        threads: vec![],
        tasks: vec![],
    };
    let mut skipped = None;
    for addr in &snap.listen.dns {
        let bind_err = |proto, source| ServerError::Bind { proto, addr: *addr, source };
        let (udp, sockets, tcp) = match bind_dns(*addr, snap.server.workers) {
            Ok(bound) => bound,
            Err((proto, e)) if ipv6_loopback_missing(addr, &e) => {
                tracing::warn!(%addr, error = %e, "this host has no IPv6 loopback: not listening there");
                skipped = Some(bind_err(proto, e));
                continue;
            }
            Err((proto, e)) => return Err(bind_err(proto, e)),
        };
        info!(proto = %"udp", addr = %udp, "listening");
        handle.threads.extend(dns::udp::spawn(sockets, shared.clone()).map_err(|e| bind_err("udp", e))?);
        handle.dns_udp.push(udp);
        let tcp_addr = tcp.local_addr().map_err(|e| bind_err("tcp", e))?;
        info!(proto = %"tcp", addr = %tcp_addr, "listening");
        handle.dns_tcp.push(tcp_addr);
        handle.tasks.push(tokio::spawn(dns::tcp::serve(tcp, shared.clone(), cancel.clone())));
    }
    if let (true, Some(e)) = (handle.dns_udp.is_empty(), skipped) {
        return Err(e);
    }
    if let Some(addr) = snap.listen.feed {
        let (bound, thread) =
            writer::start(addr, shared.clone()).map_err(|source| ServerError::Bind { proto: "feed", addr, source })?;
        info!(proto = %"feed", addr = %bound, "listening");
        handle.feed = Some(bound);
        handle.threads.push(thread);
    }
    if let Some(addr) = snap.listen.http {
        let bind_err = |source| ServerError::Bind { proto: "http", addr, source };
        let l = tokio::net::TcpListener::bind(addr).await.map_err(bind_err)?;
        let bound = l.local_addr().map_err(bind_err)?;
        info!(proto = %"http", addr = %bound, "listening");
        handle.http = Some(bound);
        handle.tasks.push(tokio::spawn(crate::http::serve(l, shared.clone(), cancel.clone())));
    }
    Ok(handle)
}

/// Whether binding `addr` failed only because the host has no IPv6 loopback
/// (IPv6 disabled, as in many containers). The shipped config listens on
/// 127.0.0.1 and [::1]; on such a host the server starts on the first and
/// says so, instead of refusing to start. Any other address that cannot be
/// bound, or every address failing, is still an error.
fn ipv6_loopback_missing(addr: &SocketAddr, e: &std::io::Error) -> bool {
    let missing = e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT);
    addr.is_ipv6() && addr.ip().is_loopback() && missing
}

/// UDP sockets and a TCP listener on the same port. With port 0 the port is
/// the one UDP got; if TCP cannot have it (another socket holds it), try again
/// with a fresh port, a few times.
#[allow(clippy::type_complexity)]
fn bind_dns(
    addr: SocketAddr,
    workers: usize,
) -> Result<(SocketAddr, Vec<std::net::UdpSocket>, tokio::net::TcpListener), (&'static str, std::io::Error)> {
    let mut attempt = 0;
    loop {
        let (udp, sockets) = dns::udp::bind(addr, workers).map_err(|e| ("udp", e))?;
        match dns::tcp::bind(udp) {
            Ok(tcp) => return Ok((udp, sockets, tcp)),
            Err(e) if addr.port() == 0 && attempt < 16 && e.kind() == std::io::ErrorKind::AddrInUse => attempt += 1,
            Err(e) => return Err(("tcp", e)),
        }
    }
}

impl ServerHandle {
    /// Load the config again and swap it in whole; on any error the running
    /// snapshot keeps serving. Listening addresses are bound once: a change
    /// there needs a restart (logged).
    pub fn reload(&self, path: &std::path::Path) -> Result<u64, crate::config::ConfigError> {
        let old = self.shared.snapshot.load_full();
        let new = crate::config::load_after(path, Some(&old))?;
        if new.listen.dns != old.listen.dns || new.listen.feed != old.listen.feed {
            tracing::warn!("listen addresses changed: restart to bind them");
        }
        let generation = new.generation;
        self.shared.snapshot.store(Arc::new(new));
        writer::config_changed(&self.shared);
        Ok(generation)
    }

    /// Stop every task and worker and wait for them.
    pub async fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        writer::config_changed(&self.shared); // wakes the feed writer to see `stopping`
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    /// Only a missing IPv6 loopback is passed over; every other bind error,
    /// and the same error on any other address, stops the start.
    #[test]
    fn only_a_missing_ipv6_loopback_is_passed_over() {
        let v6: SocketAddr = "[::1]:5300".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let other: SocketAddr = "[2001:db8::1]:5300".parse().unwrap();
        let not_here = || Error::from(ErrorKind::AddrNotAvailable);
        assert!(ipv6_loopback_missing(&v6, &not_here()));
        assert!(ipv6_loopback_missing(&v6, &Error::from_raw_os_error(libc::EAFNOSUPPORT)));
        assert!(ipv6_loopback_missing(&v6, &Error::from_raw_os_error(libc::EADDRNOTAVAIL)));
        assert!(!ipv6_loopback_missing(&v6, &Error::from(ErrorKind::AddrInUse)), "port taken: an error");
        assert!(!ipv6_loopback_missing(&v6, &Error::from(ErrorKind::PermissionDenied)));
        assert!(!ipv6_loopback_missing(&v4, &not_here()), "IPv4 loopback missing: an error");
        assert!(!ipv6_loopback_missing(&other, &not_here()), "a configured global address: an error");
    }
}
