//! Configuration: popdns.yaml, pops.yaml, zones/*.yaml and the feed keys,
//! compiled into one immutable [`Snapshot`].
//!
//! `check`, `serve` and reload all call [`load`]: one compile path, so what
//! `check` accepts is exactly what the server will run. A snapshot never
//! changes once built; a reload builds a new one beside it and swaps the pointer.

mod compile;
pub mod error;
pub mod raw;
pub mod yaml;

pub use compile::{
    DEMO_FEED_KEY, EcsLimits, FeedConfig, GeoStamp, Listen, Quorum, Scoring, ServerConfig, Snapshot, load, load_after,
    parse_duration,
};
pub use error::{ConfigError, ConfigWarning};
