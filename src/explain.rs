//! Why a client gets the answer it gets: the same decision the DNS path makes,
//! with every candidate's score components and the filters that removed POPs.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::config::Snapshot;
use crate::pops::Family;
use crate::quality::Quality;
use crate::scheduler::{self, Client, Source};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("`{0}` is not a scheduled name in any zone")]
    NotScheduled(String),
    #[error("`{0}` is not an ECS subnet (ADDRESS/PREFIX)")]
    BadEcs(String),
    #[error("type `{0}` is not A or AAAA")]
    BadType(String),
}

/// The client as the DNS path would see it: `ecs` (a CIDR) when given with a
/// non-zero prefix, else `resolver`.
pub fn client(snap: &Snapshot, resolver: IpAddr, ecs_net: Option<&str>) -> Result<Client, ExplainError> {
    match ecs_net {
        Some(s) => {
            let net: ipnet::IpNet = s.parse().map_err(|_| ExplainError::BadEcs(s.to_string()))?;
            if net.prefix_len() == 0 {
                Ok(Client::from_resolver(snap, resolver))
            } else {
                Ok(Client::from_ecs(snap, net.addr(), net.prefix_len()))
            }
        }
        None => Ok(Client::from_resolver(snap, resolver)),
    }
}

/// The explain JSON of the contract.
pub fn explain(
    snap: &Snapshot,
    quality: &Quality,
    name: &str,
    resolver: IpAddr,
    ecs_net: Option<&str>,
    qtype: &str,
) -> Result<Value, ExplainError> {
    let family = match qtype.to_ascii_uppercase().as_str() {
        "A" => Family::V4,
        "AAAA" => Family::V6,
        _ => return Err(ExplainError::BadType(qtype.to_string())),
    };
    let sid = snap.zones.find_scheduled(name).ok_or_else(|| ExplainError::NotScheduled(name.to_string()))?;
    let sched = snap.zones.sched(sid);
    let client = client(snap, resolver, ecs_net)?;
    let mut cands = Vec::new();
    let d = scheduler::decide(snap, quality, &client, sched, family, &mut cands);
    let loc = &client.info.location;
    let fqdn = name.trim_end_matches('.').to_ascii_lowercase();
    let prefix = format!("{}/{}", client.ip, client.source_prefix);
    let candidates: Vec<Value> = cands
        .iter()
        .map(|c| {
            let pop = snap.pops.get(c.pop);
            json!({
                "pop": pop.id,
                "distance_km": c.distance_km.map(round1),
                "isp_match": c.isp_match,
                "rtt_ms": round1(c.rtt_ms),
                "loss": c.loss,
                "group": c.group.map(|g| g.display(&snap.isps)),
                "estimated": c.estimated,
                "load": c.load,
                "health": c.health.as_str(),
                "drained": c.drained,
                "score": round1(c.score),
                "removed_by": c.removed_by.map(|r| r.as_str()),
            })
        })
        .collect();
    let pick = scheduler::address_index(&client);
    let answer: Vec<String> =
        d.pops().iter().filter_map(|id| snap.pops.get(*id).address(family, pick).map(|a| a.to_string())).collect();
    Ok(json!({
        "name": fqdn,
        "type": if family == Family::V4 { "A" } else { "AAAA" },
        "client": {
            "address": client.ip.to_string(),
            "source": client.source.as_str(),
            "prefix": prefix,
            "country": loc.country.map(|c| c.as_str().to_string()),
            "region": match (loc.country, loc.region) {
                (Some(c), Some(r)) => Some(format!("{}-{}", c.as_str(), r.as_str())),
                _ => None,
            },
            "continent": loc.continent.map(|c| c.as_str().to_string()),
            "coords": loc.coords.map(|c| [round4(c.lat()), round4(c.lon())]),
            "asn": snap.geo.records(client.ip, &snap.isps).asn,
            "isp": snap.isps.name(client.info.isp),
        },
        "rule": null,
        "candidates": candidates,
        "answer": answer,
        "pops": d.pops().iter().map(|id| snap.pops.get(*id).id.clone()).collect::<Vec<_>>(),
        // As the DNS answer says: NODATA (no POP of the family) is the same
        // for every client, so its scope is 0.
        "scope": if client.source == Source::Ecs && !d.pops().is_empty() { client.scope } else { 0 },
        "fallback": d.fallback.map(|f| f.as_str()),
        "signed": false,
    }))
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The explain JSON as a few readable lines.
pub fn to_text(v: &Value) -> String {
    let mut s = String::new();
    let c = &v["client"];
    s.push_str(&format!(
        "{} {}\nclient {} ({}) prefix {}: country {} region {} continent {} coords {} asn {} isp {}\n",
        v["name"].as_str().unwrap_or(""),
        v["type"].as_str().unwrap_or(""),
        c["address"].as_str().unwrap_or(""),
        c["source"].as_str().unwrap_or(""),
        c["prefix"].as_str().unwrap_or(""),
        c["country"],
        c["region"],
        c["continent"],
        c["coords"],
        c["asn"],
        c["isp"],
    ));
    s.push_str(&format!(
        "{:<16} {:>9} {:>5} {:>8} {:>6} {:>5} {:<8} {:>8}  {}\n",
        "pop", "km", "isp", "rtt_ms", "loss", "load", "health", "score", "removed_by/group"
    ));
    for cand in v["candidates"].as_array().into_iter().flatten() {
        let num = |k: &str| cand[k].as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
        let note = match (cand["removed_by"].as_str(), cand["group"].as_str()) {
            (Some(r), _) => format!("removed: {r}"),
            (None, Some(g)) => format!("measured: {g}"),
            (None, None) => "estimated".to_string(),
        };
        s.push_str(&format!(
            "{:<16} {:>9} {:>5} {:>8} {:>6} {:>5} {:<8} {:>8}  {}\n",
            cand["pop"].as_str().unwrap_or(""),
            num("distance_km"),
            if cand["isp_match"].as_bool() == Some(true) { "same" } else { "cross" },
            num("rtt_ms"),
            num("loss"),
            num("load"),
            cand["health"].as_str().unwrap_or(""),
            num("score"),
            note
        ));
    }
    s.push_str(&format!(
        "answer {} pops {} scope /{} fallback {}\n",
        v["answer"], v["pops"], v["scope"], v["fallback"]
    ));
    s
}
