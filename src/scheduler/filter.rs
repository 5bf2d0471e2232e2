//! The filters, and the order in which they are relaxed when nothing passes.

use super::{Candidate, Fallback};

/// Why a candidate was removed; the first failing filter in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    Tier,
    Coverage,
    Family,
    Health,
    Drained,
    Overload,
}

impl Removal {
    pub fn as_str(self) -> &'static str {
        match self {
            Removal::Tier => "tier",
            Removal::Coverage => "coverage",
            Removal::Family => "family",
            Removal::Health => "health",
            Removal::Drained => "drained",
            Removal::Overload => "overload",
        }
    }
}

/// Which removals a relaxation level forgives.
#[derive(Clone, Copy)]
pub struct Level {
    load: bool,
    health: bool,
    drain: bool,
}

/// Strict first, then fail open: load, health, drain (coverage and family kept);
/// outside coverage (the last resort) the same levels again.
pub const LEVELS: [(Level, Option<Fallback>); 4] = [
    (Level { load: false, health: false, drain: false }, None),
    (Level { load: true, health: false, drain: false }, Some(Fallback::Load)),
    (Level { load: true, health: true, drain: false }, Some(Fallback::Health)),
    (Level { load: true, health: true, drain: true }, Some(Fallback::Drain)),
];

/// Does the candidate pass at this level? Every filter is re-checked, not only
/// the first failing one, so relaxing health cannot let a drained POP through.
pub fn passes(c: &Candidate, level: Level) -> bool {
    match c.removed_by {
        None => true,
        Some(Removal::Tier | Removal::Coverage | Removal::Family) => false,
        Some(_) => (level.health || c.up) && (level.drain || !c.drained) && (level.load || !c.overloaded),
    }
}
