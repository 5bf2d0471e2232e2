//! The route-quality table: POP health, load and measured route quality per
//! client group, fed by authenticated UDP reports.
//!
//! - `group.rs`: client groups (`CN-ZJ/chinatelecom`, `CN`, `continent:AS`, `*`)
//! - `table.rs`: the immutable [`Quality`] snapshot the query path reads
//! - `feed.rs`: datagram -> verified report (pure: no I/O, no clock reads)
//! - `writer.rs`: the single writer thread that applies reports and publishes snapshots

pub mod feed;
pub mod group;
pub mod table;
pub mod writer;

pub use group::GroupKey;
pub use table::{PopState, Quality, Route};
