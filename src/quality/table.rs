//! The immutable route-quality snapshot the query path reads.
//!
//! Indexed by the `PopId`s of the config generation it was built for
//! (`config_generation`); a POP index out of range reads as "no data", so a
//! snapshot built for an older config never misleads, it only informs less.

use std::collections::HashMap;
use std::sync::Arc;

use super::GroupKey;
use crate::pops::{Health, PopId};

/// A route measurement: the median of the fresh reports of its reporters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Route {
    pub rtt_ms: f64,
    pub loss: f64,
}

/// What the feed says of one POP right now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PopState {
    pub health: Health,
    /// Median of the fresh load reports; None before the first one.
    pub load: Option<f64>,
    pub drained: bool,
    /// Unix milliseconds of the newest accepted report on this POP.
    pub last_report_ms: Option<u64>,
}

impl Default for PopState {
    fn default() -> Self {
        PopState { health: Health::Unknown, load: None, drained: false, last_report_ms: None }
    }
}

#[derive(Debug, Default)]
pub struct Quality {
    /// Bumped on every publish: unique per table. The query workers' ranking
    /// caches key on it, so two different tables must never share one.
    pub generation: u64,
    /// The config generation whose POP ids index this table.
    pub config_generation: u64,
    pub pops: Vec<PopState>,
    /// Group -> per-POP route measurement. Rows are shared between
    /// generations: a publish rebuilds only the rows a report touched.
    pub routes: RouteRows,
}

pub type RouteRows = HashMap<GroupKey, Arc<[Option<Route>]>, crate::hash::Fast>;

impl Quality {
    pub fn pop(&self, id: PopId) -> PopState {
        self.pops.get(id.0 as usize).copied().unwrap_or_default()
    }
}
