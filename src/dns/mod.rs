//! DNS over UDP and TCP.
//!
//! - `wire.rs`: parsing a query and writing an answer, straight on bytes
//! - `ecs.rs`: EDNS Client Subnet (RFC 7871)
//! - `answer.rs`: query bytes -> answer bytes, the one function every transport calls
//! - `udp.rs`: the fast path: one SO_REUSEPORT socket and one plain loop per worker
//! - `tcp.rs`: RFC 7766 framing on tokio
//!
//! Why not hickory-server's `Server` on the query path: it spawns a task per
//! datagram, goes through generic parse/build paths (0.3-0.45x a bare responder
//! in ../shared/design/bench-notes.md), and answers a malformed ECS with FORMERR
//! *without* an OPT, which RFC 7871 and our contract do not want.

pub mod answer;
pub mod ecs;
pub mod tcp;
pub mod udp;
pub mod wire;

pub use answer::{Scratch, Transport, answer};
