//! Scheduling as clients see it (contract.md, "Scheduling, in words" and the
//! coverage rules of "zones/NAME.yaml"), with the shipped pops.yaml, zone and
//! demo databases.
//!
//! Expected POPs come from the config, worked out by hand with the contract's
//! formula: estimated rtt = great-circle km / 50 (km_per_ms) + 40 (cross_isp_ms)
//! when a POP is on one ISP's network and it is not the client's; POPs within
//! 5 ms (spread_ms) of the best share traffic, so a client may get any of them.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::rr::RecordType;

const WWW: &str = "www.aliyundoc.com.example.com."; // coverage global, answers 1
const CN: &str = "cn.aliyundoc.com.example.com."; // coverage mainland
const IMG: &str = "pics.img.example.com."; // `*.img`: coverage mainland
const INTL: &str = "intl.aliyundoc.com.example.com."; // global-excluding-mainland, answers 2

/// pops.yaml: id, IPv4, IPv6, on the Chinese mainland, multi-line (no `isp`).
const POPS: &[(&str, &str, &str, bool, bool)] = &[
    ("cn-zj-ct-1", "192.0.2.10", "2001:db8:10::1", true, false),
    ("cn-gd-ct-1", "192.0.2.11", "2001:db8:11::1", true, false),
    ("cn-sc-ct-1", "192.0.2.12", "2001:db8:12::1", true, false),
    ("cn-bj-cu-1", "192.0.2.20", "2001:db8:20::1", true, false),
    ("cn-sh-cu-1", "192.0.2.21", "2001:db8:21::1", true, false),
    ("cn-gd-cm-1", "192.0.2.30", "2001:db8:30::1", true, false),
    ("cn-js-cm-1", "192.0.2.31", "2001:db8:31::1", true, false),
    ("cn-hb-bgp-1", "192.0.2.40", "2001:db8:40::1", true, true),
    ("cn-sn-bgp-1", "192.0.2.41", "2001:db8:41::1", true, true),
    ("hk-hkg-1", "198.51.100.10", "2001:db8:100::1", false, true),
    ("jp-tyo-1", "198.51.100.20", "2001:db8:120::1", false, true),
    ("sg-sin-1", "198.51.100.30", "2001:db8:130::1", false, true),
    ("in-bom-1", "198.51.100.40", "2001:db8:140::1", false, true),
    ("de-fra-1", "203.0.113.10", "2001:db8:210::1", false, true),
    ("uk-lon-1", "203.0.113.20", "2001:db8:220::1", false, true),
    ("us-east-1", "203.0.113.30", "2001:db8:230::1", false, true),
    ("us-west-1", "203.0.113.40", "2001:db8:240::1", false, true),
    ("br-sao-1", "203.0.113.50", "2001:db8:250::1", false, true),
    ("au-syd-1", "203.0.113.60", "2001:db8:260::1", false, true),
];

/// Regional (L2) POPs: never answered to users.
const REGIONAL: &[&str] = &["192.0.2.200", "203.0.113.200"];

/// Every network of geo/demo-city.csv: the POPs near-equal at the best score
/// for the global name and for the mainland names, and the two POPs `intl`
/// (answers: 2) returns.
/// (network, global near set, mainland near set, intl's two POPs)
type Expected = (&'static str, &'static [&'static str], &'static [&'static str], [&'static str; 2]);

const EXPECTED: &[Expected] = &[
    // CN-ZJ chinatelecom: cn-zj-ct-1 3 km; outside the mainland hk (21.4 ms), jp (38.3)
    ("115.236.0.0/16", &["cn-zj-ct-1"], &["cn-zj-ct-1"], ["hk-hkg-1", "jp-tyo-1"]),
    // CN-SC chinatelecom: cn-sc-ct-1; hk 27.3, sg 65.2, jp 66.9
    ("118.112.0.0/13", &["cn-sc-ct-1"], &["cn-sc-ct-1"], ["hk-hkg-1", "sg-sin-1"]),
    // CN-BJ chinaunicom (AS4808): cn-bj-cu-1; hk 39.3, jp 41.9
    ("123.112.0.0/12", &["cn-bj-cu-1"], &["cn-bj-cu-1"], ["hk-hkg-1", "jp-tyo-1"]),
    // CN-SH chinaunicom (AS17621): cn-sh-cu-1
    ("58.246.0.0/16", &["cn-sh-cu-1"], &["cn-sh-cu-1"], ["hk-hkg-1", "jp-tyo-1"]),
    // CN-GD chinamobile (AS24400): cn-gd-cm-1 0.04 ms, and hk-hkg-1 (multi-line) 2.6 ms
    ("120.204.0.0/14", &["cn-gd-cm-1", "hk-hkg-1"], &["cn-gd-cm-1"], ["hk-hkg-1", "sg-sin-1"]),
    // CN-JS chinamobile (AS9808): cn-js-cm-1
    ("221.130.0.0/16", &["cn-js-cm-1"], &["cn-js-cm-1"], ["hk-hkg-1", "jp-tyo-1"]),
    // CN-ZJ chinamobile (AS56041): no mobile POP in ZJ; cn-js-cm-1 (Nanjing) 4.7 ms
    // beats cn-zj-ct-1 (0 km but cross-ISP: 40 ms) and cn-hb-bgp-1 (11.2 ms)
    ("36.134.0.0/16", &["cn-js-cm-1"], &["cn-js-cm-1"], ["hk-hkg-1", "jp-tyo-1"]),
    // CN-GD chinatelecom (IPv6): cn-gd-ct-1, and hk-hkg-1 2.6 ms
    ("240e::/20", &["cn-gd-ct-1", "hk-hkg-1"], &["cn-gd-ct-1"], ["hk-hkg-1", "sg-sin-1"]),
    // CN-BJ CERNET (AS4538, ISP other): the multi-line cn-sn-bgp-1 18.1 and cn-hb-bgp-1 21.1
    // beat cn-bj-cu-1 (40)
    ("2001:da8::/32", &["cn-sn-bgp-1", "cn-hb-bgp-1"], &["cn-sn-bgp-1", "cn-hb-bgp-1"], ["hk-hkg-1", "jp-tyo-1"]),
    // HK: hk-hkg-1; mainland: cn-hb-bgp-1 18.5 (cn-gd-* cross-ISP)
    ("203.198.0.0/16", &["hk-hkg-1"], &["cn-hb-bgp-1"], ["hk-hkg-1", "sg-sin-1"]),
    ("126.0.0.0/8", &["jp-tyo-1"], &["cn-hb-bgp-1"], ["jp-tyo-1", "hk-hkg-1"]),
    ("175.156.0.0/16", &["sg-sin-1"], &["cn-hb-bgp-1"], ["sg-sin-1", "hk-hkg-1"]),
    ("2.16.0.0/16", &["de-fra-1"], &["cn-sn-bgp-1"], ["de-fra-1", "uk-lon-1"]),
    ("81.2.69.0/24", &["uk-lon-1"], &["cn-sn-bgp-1"], ["uk-lon-1", "de-fra-1"]),
    ("3.0.0.0/16", &["us-east-1"], &["cn-sn-bgp-1"], ["us-east-1", "us-west-1"]),
    // US-CA: us-west-1; mainland: cn-hb-bgp-1 209.0 and cn-sn-bgp-1 209.1
    ("8.8.8.0/24", &["us-west-1"], &["cn-hb-bgp-1", "cn-sn-bgp-1"], ["us-west-1", "us-east-1"]),
    ("2600:1f00::/24", &["us-east-1"], &["cn-sn-bgp-1"], ["us-east-1", "us-west-1"]),
    ("200.160.0.0/20", &["br-sao-1"], &["cn-sn-bgp-1"], ["br-sao-1", "us-east-1"]),
    ("1.1.1.0/24", &["au-syd-1"], &["cn-hb-bgp-1"], ["au-syd-1", "sg-sin-1"]),
    ("49.36.0.0/16", &["in-bom-1"], &["cn-sn-bgp-1"], ["in-bom-1", "sg-sin-1"]),
];

/// Addresses the databases do not locate (private, documentation, unannounced).
const UNKNOWN: &[&str] = &[
    "10.0.0.0/24",
    "10.1.2.0/24",
    "172.16.5.0/24",
    "192.168.1.0/24",
    "192.0.2.0/24",
    "100.64.1.0/24",
    "44.1.2.0/24",
    "2001:db8::/48",
    "2001:db8:ffff:ff00::/56",
    "fc00::/56",
    "2a00:1450::/32",
];

fn pop(id: &str) -> &'static (&'static str, &'static str, &'static str, bool, bool) {
    POPS.iter().find(|p| p.0 == id).unwrap_or_else(|| panic!("no POP {id}"))
}

fn addr_of(id: &str, t: RecordType) -> &'static str {
    if t == RecordType::A { pop(id).1 } else { pop(id).2 }
}

fn id_of(addr: &str) -> &'static str {
    POPS.iter().find(|p| p.1 == addr || p.2 == addr).map_or("(not an edge POP)", |p| p.0)
}

/// The networks of geo/demo-city.csv.
fn demo_networks() -> Vec<String> {
    let csv = std::fs::read_to_string(repo().join("geo/demo-city.csv")).unwrap();
    csv.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("network") && !l.trim().is_empty())
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect()
}

/// Client subnets inside a network: its first and a middle /24 (IPv4) or /56 (IPv6).
fn clients_in(net: &str) -> Vec<String> {
    let (a, p) = net.split_once('/').unwrap();
    let p: u32 = p.parse().unwrap();
    match a.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => {
            let base = u32::from(v4);
            let mid = if p >= 24 { base } else { (base + (1u32 << (32 - p)) / 2) & !0xFF };
            let last = if p >= 24 { base } else { (base + (1u32 << (32 - p)) - 1) & !0xFF };
            [base, mid, last].iter().map(|x| format!("{}/24", std::net::Ipv4Addr::from(*x))).collect()
        }
        IpAddr::V6(v6) => {
            let base = u128::from(v6);
            let mid = (base + (1u128 << (128 - p)) / 2) & !((1u128 << 72) - 1);
            let last = (base + (1u128 << (128 - p)) - 1) & !((1u128 << 72) - 1);
            [base, mid, last].iter().map(|x| format!("{}/56", std::net::Ipv6Addr::from(*x))).collect()
        }
    }
}

fn ask_type(s: &Srv, name: &str, t: RecordType, ecs: Option<&str>) -> Vec<String> {
    let m = udp(s.udp, &query_msg(name, t, ecs));
    assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::NoError, "{name} {t} {ecs:?}");
    addrs(&m)
}

#[test]
fn the_four_demo_subnets_and_every_other_demo_network_get_their_nearest_pop() {
    let s = Srv::start();
    let csv = demo_networks();
    let table: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    assert_eq!(csv, table, "geo/demo-city.csv changed: update EXPECTED");
    for (net, global, mainland, _) in EXPECTED {
        for client in clients_in(net) {
            for t in [RecordType::A, RecordType::AAAA] {
                for (name, want) in [(WWW, global), (CN, mainland), (IMG, mainland)] {
                    let got = ask_type(&s, name, t, Some(&client));
                    let allowed: Vec<&str> = want.iter().map(|id| addr_of(id, t)).collect();
                    assert_eq!(got.len(), 1, "{name} {t} for {client}: {got:?}");
                    assert!(
                        allowed.contains(&got[0].as_str()),
                        "{name} {t} for {client} (in {net}): got {} ({}), expected one of {want:?}",
                        got[0],
                        id_of(&got[0])
                    );
                }
            }
        }
    }
    // The four from smoke.rs, exactly.
    assert_eq!(ask(s.udp, WWW, "115.236.1.0/24"), ["192.0.2.10"]);
    assert_eq!(ask(s.udp, WWW, "123.125.1.0/24"), ["192.0.2.20"]);
    assert_eq!(ask(s.udp, WWW, "2.16.1.0/24"), ["203.0.113.10"]);
    assert_eq!(ask(s.udp, WWW, "8.8.8.0/24"), ["203.0.113.40"]);
}

#[test]
fn coverage_holds_for_clients_everywhere() {
    // mainland: only POPs in CN; global-excluding-mainland: never one; regional
    // POPs never; for every demo network, unknown addresses, IPv4 and IPv6 ECS,
    // A and AAAA, and queries without ECS (the resolver 127.0.0.1).
    let s = Srv::start();
    let mut clients: Vec<Option<String>> = vec![None, Some("0.0.0.0/0".into())];
    for net in demo_networks() {
        clients.extend(clients_in(&net).into_iter().map(Some));
    }
    clients.extend(UNKNOWN.iter().map(|c| Some(c.to_string())));
    for client in &clients {
        for t in [RecordType::A, RecordType::AAAA] {
            for name in [CN, IMG, "a.b.img.example.com.", INTL, WWW] {
                let got = ask_type(&s, name, t, client.as_deref());
                let what = format!("{name} {t} for {client:?}");
                assert!(!got.is_empty(), "{what}: no answer");
                for a in &got {
                    assert!(!REGIONAL.contains(&a.as_str()), "{what}: regional POP {a} answered");
                    let p = POPS.iter().find(|p| p.1 == a || p.2 == a);
                    let p = p.unwrap_or_else(|| panic!("{what}: {a} is no edge POP's address"));
                    let want_family = if t == RecordType::A { p.1 } else { p.2 };
                    assert_eq!(a, want_family, "{what}: wrong family");
                    match name {
                        INTL => assert!(!p.3, "{what}: mainland POP {} for global-excluding-mainland", p.0),
                        WWW => {}
                        _ => assert!(p.3, "{what}: {} is outside the mainland", p.0),
                    }
                }
            }
        }
    }
}

#[test]
fn intl_answers_two_distinct_pops_outside_the_mainland() {
    let s = Srv::start();
    for (net, _, _, two) in EXPECTED {
        for client in clients_in(net) {
            for t in [RecordType::A, RecordType::AAAA] {
                let got: BTreeSet<String> = ask_type(&s, INTL, t, Some(&client)).into_iter().collect();
                let want: BTreeSet<String> = two.iter().map(|id| addr_of(id, t).to_string()).collect();
                assert_eq!(got, want, "intl {t} for {client} (in {net}): expected {two:?}");
            }
        }
    }
    // Unknown clients: two distinct multi-line POPs outside the mainland.
    for client in UNKNOWN {
        for t in [RecordType::A, RecordType::AAAA] {
            let got = ask_type(&s, INTL, t, Some(client));
            assert_eq!(got.len(), 2, "intl {t} for {client}: {got:?}");
            assert_ne!(got[0], got[1], "intl {t} for {client}: the same POP twice");
            for a in &got {
                let p = POPS.iter().find(|p| p.1 == a || p.2 == a).unwrap();
                assert!(!p.3 && p.4, "intl {t} for {client}: {}", p.0);
            }
        }
    }
}

#[test]
fn unknown_clients_still_get_an_answer() {
    // Contract, Scheduling 7: no location, ISP `other`, no distance term: every
    // POP on one ISP's network carries cross_isp_ms, so a multi-line POP answers.
    let s = Srv::start();
    let mut clients: Vec<Option<&str>> = UNKNOWN.iter().map(|c| Some(*c)).collect();
    clients.push(None);
    for client in clients {
        for t in [RecordType::A, RecordType::AAAA] {
            let got = ask_type(&s, WWW, t, client);
            assert_eq!(got.len(), 1, "{t} for {client:?}: {got:?}");
            let p = POPS.iter().find(|p| p.1 == got[0] || p.2 == got[0]).expect("not a POP address");
            assert!(p.4, "{t} for {client:?}: {} is on one ISP's network", p.0);
            let got = ask_type(&s, CN, t, client);
            let allowed = [addr_of("cn-hb-bgp-1", t), addr_of("cn-sn-bgp-1", t)];
            assert!(got.len() == 1 && allowed.contains(&got[0].as_str()), "mainland {t} for {client:?}: {got:?}");
        }
    }
}

#[test]
fn load_spreads_among_near_equal_pops() {
    // Unknown clients tie on every multi-line POP (score 0): across many
    // different client networks, more than one POP must answer.
    let s = Srv::start();
    let mut seen = BTreeSet::new();
    for first in (1u8..=223).step_by(3) {
        let client = format!("{first}.77.0.0/24");
        seen.insert(ask_type(&s, WWW, RecordType::A, Some(&client))[0].clone());
    }
    assert!(seen.len() >= 3, "only {seen:?} across 75 client networks");
}

#[test]
fn sources_that_look_up_the_same_address_get_the_same_pop() {
    // With ecs.max_source_v4 at 8, a /16, /24 or /32 source is looked up at
    // its first /8, the same address as the /8 source: the POP must be the
    // same, whichever scope each returns (the scope of a truncated source is
    // capped at 8, the others' is their cell's). spread_ms is wide, so every
    // POP is near-equal and the hash alone decides.
    let extra = "ecs:\n  max_source_v4: 8\nscoring:\n  spread_ms: 100000\n".to_string();
    let s = Srv::start_with(&Setup { extra, ..Setup::default() });
    let mut seen = BTreeSet::new();
    for first in (1u8..=223).filter(|&a| a != 10 && a != 127) {
        let wide = ask_type(&s, WWW, RecordType::A, Some(&format!("{first}.0.0.0/8")));
        for longer in [format!("{first}.0.0.0/16"), format!("{first}.0.0.0/24"), format!("{first}.0.0.1/32")] {
            let got = ask_type(&s, WWW, RecordType::A, Some(&longer));
            assert_eq!(got, wide, "{longer} against {first}.0.0.0/8");
        }
        seen.insert(wide[0].clone());
    }
    assert!(seen.len() >= 5, "the draw did not spread: {seen:?}");
}

#[test]
fn the_same_subnet_keeps_its_answer() {
    let s = Srv::start();
    let mut subnets: Vec<String> = UNKNOWN.iter().map(|c| c.to_string()).collect();
    subnets.extend(["120.204.9.0/24", "240e:0:0:100::/56", "2001:da8:1::/48", "8.8.8.0/24"].map(String::from));
    let mut first = Vec::new();
    for sub in &subnets {
        for name in [WWW, INTL, CN] {
            let a = ask_type(&s, name, RecordType::A, Some(sub));
            for _ in 0..10 {
                assert_eq!(ask_type(&s, name, RecordType::A, Some(sub)), a, "{name} for {sub} changed");
            }
            let t = addrs(&s.tcp.msg(&query_msg(name, RecordType::A, Some(sub))));
            assert_eq!(t, a, "{name} for {sub}: TCP and UDP differ");
            first.push(a);
        }
    }
    // A stable hash: the same answers from a freshly started server.
    drop(s);
    let s2 = Srv::start();
    let mut i = 0;
    for sub in &subnets {
        for name in [WWW, INTL, CN] {
            assert_eq!(ask_type(&s2, name, RecordType::A, Some(sub)), first[i], "{name} for {sub} after a restart");
            i += 1;
        }
    }
}

#[test]
fn pops_within_spread_ms_of_the_best_share_traffic() {
    // For unknown clients (ISP `other`, no distance term) multi-line POPs score 0
    // and single-ISP POPs cross_isp_ms. At 3 ms they are within spread_ms (5) of
    // the best and must get a share of the client networks; at 6 ms never.
    let clients: Vec<String> = (1u8..=223).step_by(3).map(|first| format!("{first}.77.0.0/24")).collect();
    for (cross_isp_ms, shared) in [(3, true), (6, false)] {
        let extra = format!("scoring:\n  cross_isp_ms: {cross_isp_ms}\n");
        let s = Srv::start_with(&Setup { extra, ..Setup::default() });
        let (mut single, mut multi) = (BTreeSet::new(), BTreeSet::new());
        for client in &clients {
            let got = ask_type(&s, WWW, RecordType::A, Some(client));
            let p = POPS.iter().find(|p| p.1 == got[0]).unwrap_or_else(|| panic!("{client}: {got:?}"));
            if p.4 {
                multi.insert(p.0)
            } else {
                single.insert(p.0)
            };
        }
        assert!(!multi.is_empty(), "cross_isp_ms {cross_isp_ms}: no multi-line POP answered");
        if shared {
            assert!(!single.is_empty(), "cross_isp_ms 3 (within spread_ms 5): only {multi:?} answered");
        } else {
            assert!(single.is_empty(), "cross_isp_ms 6 (beyond spread_ms 5): {single:?} answered");
        }
    }
}
