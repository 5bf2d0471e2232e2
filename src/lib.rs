//! popdns: an authoritative GeoDNS scheduler, the routing system of a CDN.
//!
//! Data flows one way: configuration and the route-quality feed build immutable
//! snapshots; the query path only reads them.
//!
//! - [`config`]: popdns.yaml, pops.yaml, zones/*.yaml, feed keys -> one validated [`config::Snapshot`]
//! - [`geo`]: the location and ASN databases (MaxMind DB) -> a client's location, ISP and cell prefix
//! - [`pops`]: the POP inventory: ids, coordinates, ISPs, tiers, coverage
//! - [`zones`]: zone index (longest match), static RRsets in wire form, scheduled names, wildcards
//! - [`quality`]: the route-quality table, fed by authenticated UDP reports
//! - [`scheduler`]: pure functions over the snapshots: filters, scores, spread, ECS scope
//! - [`dns`]: query bytes -> answer bytes (the one function every transport calls), UDP and TCP
//! - [`explain`]: why a client gets the answer it gets
//! - [`http`]: health, explain (and later metrics, admin, DoH, JSON, 302) over HTTP
//! - [`server`]: binds sockets, spawns workers, owns shutdown
//! - [`hash`]: the fast hash of the maps queries read
//! - [`pages`]: the large tables queries read, on huge pages

pub mod config;
pub mod dns;
pub mod explain;
pub mod geo;
pub mod hash;
pub mod http;
pub mod pages;
pub mod pops;
pub mod quality;
pub mod scheduler;
pub mod server;
pub mod zones;

#[cfg(test)]
mod testing;
