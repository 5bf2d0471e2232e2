//! Scores in one currency, estimated milliseconds (lower is better).
//!
//! measured: `rtt_ms + loss * loss_ms` from the client's most specific group
//! with fresh data for that POP (it already includes any cross-ISP cost);
//! estimated: `km / km_per_ms`, plus `cross_isp_ms` when the POP sits on one
//! ISP's network and it is not the client's (multi-line POPs match every ISP);
//! both plus the load penalty `load * load_ms`.

use super::{Candidate, filter::Removal};
use crate::config::Snapshot;
use crate::geo::ClientInfo;
use crate::pops::{Coverage, Family, Health, PopId, Tier};
use crate::quality::{GroupKey, Quality, Route, group};

/// How much of a candidate to fill in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Everything explain shows.
    Full,
    /// What the score needs: the distance only where no measurement stands
    /// in for it (the distance formula is most of a candidate's cost).
    Score,
}

/// The route rows that apply to a client: for each of its groups, most
/// specific first, the table's row (looked up once per decision, not per POP).
/// A POP's measurement is the first of these rows that has one.
pub struct Rows<'q> {
    groups: [GroupKey; 6],
    rows: [Option<&'q [Option<Route>]>; 6],
    n: usize,
    /// For a table of the config before a reload: this config's POP ids in
    /// that table (`Snapshot::rows_of`); None when they are the same.
    ids: Option<&'q [Option<PopId>]>,
}

/// Which rows a client's measurements come from: the addresses of its groups'
/// rows that exist, in order (zero beyond). Two clients with the same key get
/// the same measurement for every POP. Rows live as long as their table, and
/// a table is never shared by two generations, so within one generation an
/// address names one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RowsKey(pub [usize; 6]);

impl<'q> Rows<'q> {
    /// No rows when the table was built for a config other than this one or
    /// the one it replaced: its POP indices would not be this config's.
    pub fn of(snap: &'q Snapshot, quality: &'q Quality, client: &ClientInfo) -> Rows<'q> {
        let (groups, n) = group::client_groups(client);
        let mut rows = [None; 6];
        let ids = snap.rows_of(quality.config_generation);
        if ids.is_some() && !quality.routes.is_empty() {
            for (row, g) in rows.iter_mut().zip(&groups[..n]) {
                *row = quality.routes.get(g).map(|r| &r[..]);
            }
        }
        Rows { groups, rows, n, ids: ids.flatten() }
    }

    pub fn key(&self) -> RowsKey {
        let mut k = RowsKey::default();
        for (slot, row) in k.0.iter_mut().zip(self.rows.iter().flatten()) {
            *slot = row.as_ptr() as usize;
        }
        k
    }

    /// The measurement for POP `id` and the group it is from.
    fn measured(&self, id: PopId) -> Option<(Route, GroupKey)> {
        let id = match self.ids {
            None => id,
            Some(ids) => ids.get(id.0 as usize).copied().flatten()?,
        };
        self.rows[..self.n]
            .iter()
            .zip(&self.groups)
            .find_map(|(row, g)| row.and_then(|r| r.get(id.0 as usize).copied().flatten()).map(|r| (r, *g)))
    }
}

/// Fill `out` with one scored candidate per POP of `pops`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    snap: &Snapshot,
    quality: &Quality,
    client: &ClientInfo,
    rows: &Rows<'_>,
    coverage: Coverage,
    pops: impl Iterator<Item = PopId>,
    family: Family,
    detail: Detail,
    out: &mut Vec<Candidate>,
) {
    out.clear();
    let s = &snap.scoring;
    let client_unit = client.location.coords.map(|c| c.unit());
    for id in pops {
        let pop = snap.pops.get(id);
        let state = snap.quality_id(quality.config_generation, id).map_or_else(Default::default, |q| quality.pop(q));
        let up = match state.health {
            Health::Up => true,
            Health::Down => false,
            Health::Unknown => pop.default_up,
        };
        let load = state.load.unwrap_or(0.0);
        let overloaded = load >= s.overload;
        let isp_match = pop.isp.is_none_or(|i| i == client.isp);
        let measured = rows.measured(id);
        let distance_km = match (measured, detail) {
            (Some(_), Detail::Score) => None,
            _ => client_unit.map(|u| u.distance_km(&pop.unit)),
        };
        let (rtt_ms, loss, group, base) = match measured {
            Some((r, g)) => (r.rtt_ms, Some(r.loss), Some(g), r.rtt_ms + r.loss * s.loss_ms),
            None => {
                let est = distance_km.unwrap_or(0.0) / s.km_per_ms + if isp_match { 0.0 } else { s.cross_isp_ms };
                (est, None, None, est)
            }
        };
        let removed_by = if pop.tier != Tier::Edge {
            Some(Removal::Tier)
        } else if !coverage.admits(pop) {
            Some(Removal::Coverage)
        } else if !pop.has_family(family) {
            Some(Removal::Family)
        } else if !up {
            Some(Removal::Health)
        } else if state.drained {
            Some(Removal::Drained)
        } else if overloaded {
            Some(Removal::Overload)
        } else {
            None
        };
        out.push(Candidate {
            pop: id,
            distance_km,
            isp_match,
            rtt_ms,
            loss,
            group,
            estimated: measured.is_none(),
            load,
            health: state.health,
            up,
            drained: state.drained,
            overloaded,
            score: base + load * s.load_ms,
            removed_by,
        });
    }
}
