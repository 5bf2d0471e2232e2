//! EDNS Client Subnet (RFC 7871) as popdns answers it: the echo, the scope,
//! source-prefix truncation, IPv6, and FORMERR (with an OPT, without an ECS
//! option) for every malformed option (contract.md, "Protocol behaviour").
//!
//! The demo databases (geo/demo-*.csv) hold each network as one record in
//! both the location and the ASN database, so the scope of a scheduled answer
//! is that record's prefix: 115.236.0.0/16 -> 16, 8.8.8.0/24 -> 24, ...

mod common;
use common::*;

use std::net::IpAddr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const WWW: &str = "www.aliyundoc.com.example.com";

// ---------------------------------------------------------------- raw helpers (the reply parser is in common)

/// ECS option bytes for a subnet written `addr/prefix`: ceil(prefix/8) address bytes.
fn ecs_bytes(subnet: &str) -> Vec<u8> {
    let (addr, prefix) = subnet.split_once('/').unwrap();
    let prefix: u8 = prefix.parse().unwrap();
    let ip: IpAddr = addr.parse().unwrap();
    let (family, octets) = match ip {
        IpAddr::V4(a) => (1, a.octets().to_vec()),
        IpAddr::V6(a) => (2, a.octets().to_vec()),
    };
    ecs_option(family, prefix, 0, &octets[..(prefix as usize).div_ceil(8)])
}

/// Ask with a raw ECS option over UDP; the raw reply parsed by hand and by hickory.
fn ask_raw(s: &Srv, id: u16, name: &str, qtype: u16, ecs: &[u8]) -> (Raw, Message) {
    let reply = udp_raw(s.udp, &raw_query(id, name, qtype, Some((1232, 0, ecs)))).expect("no UDP answer");
    let m = Message::from_vec(&reply).unwrap();
    let r = parse_raw(&reply);
    assert_eq!(r.id, id);
    (r, m)
}

/// The expected echo: FAMILY, SOURCE and ADDRESS as sent, with this SCOPE.
fn echo(sent: &[u8], scope: u8) -> Vec<u8> {
    let mut v = sent[4..].to_vec();
    v[3] = scope;
    v
}

// ---------------------------------------------------------------- echo and scope

#[test]
fn echo_keeps_family_source_and_address_and_sets_the_real_scope() {
    let s = Srv::start();
    // (subnet, qtype, answer, scope = the demo record's prefix)
    let cases: &[(&str, u16, &str, u8)] = &[
        ("115.236.1.0/24", 1, "192.0.2.10", 16), // 115.236.0.0/16 CN-ZJ chinatelecom -> cn-zj-ct-1
        ("115.236.1.0/24", 28, "2001:db8:10::1", 16),
        ("115.236.0.0/16", 1, "192.0.2.10", 16),
        ("8.8.8.0/24", 1, "203.0.113.40", 24),   // 8.8.8.0/24 US-CA -> us-west-1
        ("2.16.1.0/24", 1, "203.0.113.10", 16),  // 2.16.0.0/16 DE -> de-fra-1
        ("123.125.1.0/24", 1, "192.0.2.20", 12), // 123.112.0.0/12 CN-BJ chinaunicom -> cn-bj-cu-1
        ("126.1.2.0/24", 1, "198.51.100.20", 8), // 126.0.0.0/8 JP -> jp-tyo-1
        ("2600:1f00:0:ab00::/56", 28, "2001:db8:230::1", 24), // 2600:1f00::/24 US-VA -> us-east-1
        ("2600:1f00:0:ab00::/56", 1, "203.0.113.30", 24),
        ("2600:1f00::/24", 28, "2001:db8:230::1", 24),
    ];
    for (i, (subnet, qtype, answer, scope)) in cases.iter().enumerate() {
        let sent = ecs_bytes(subnet);
        let what = format!("{subnet} type {qtype}");
        let (r, m) = ask_raw(&s, 0x1000 + i as u16, WWW, *qtype, &sent);
        assert_eq!(r.rcode(), 0, "{what}");
        assert_eq!(addrs(&m), [*answer], "{what}");
        assert_eq!(r.ecs_count(), 1, "{what}: ECS options in the reply");
        assert_eq!(r.ecs().unwrap(), echo(&sent, *scope), "{what}: echo (family, source, scope, address)");
    }
    // The same over TCP, through hickory's client-side encoder.
    let m = s.tcp.msg(&query_msg(WWW, RecordType::A, Some("115.236.1.0/24")));
    assert_eq!(addrs(&m), ["192.0.2.10"]);
    assert_eq!(ecs_of(&m), Some((24, 16)), "over TCP");
}

#[test]
fn every_address_inside_the_returned_scope_gets_the_same_answer() {
    // Contract, Scheduling 5: the scope is a network in which every address gets
    // the same answer. Ask at several /24s inside the scope the first reply gave.
    let s = Srv::start();
    for subnet in
        ["115.236.1.0/24", "123.125.1.0/24", "58.246.7.0/24", "2.16.200.0/24", "126.99.1.0/24", "120.205.3.0/24"]
    {
        let m = udp(s.udp, &query_msg(WWW, RecordType::A, Some(subnet)));
        let first = addrs(&m);
        let (_, scope) = ecs_of(&m).expect("no ECS in the reply");
        assert!((1..=24).contains(&scope), "{subnet}: scope {scope}");
        let base: u32 = u32::from(subnet.split_once('/').unwrap().0.parse::<std::net::Ipv4Addr>().unwrap());
        let net = base & (u32::MAX << (32 - scope));
        let size = 1u64 << (32 - scope);
        for k in [0u64, 1, size / 3, size / 2, size - 256] {
            let a = std::net::Ipv4Addr::from((net + k as u32) & !0xFF);
            let other = format!("{a}/24");
            let m2 = udp(s.udp, &query_msg(WWW, RecordType::A, Some(&other)));
            assert_eq!(addrs(&m2), first, "{other} is inside {subnet}'s scope /{scope} but answered differently");
            assert_eq!(ecs_of(&m2).map(|e| e.1), Some(scope), "{other}");
        }
    }
}

#[test]
fn source_prefix_zero_uses_the_resolver_address_and_scope_zero() {
    let s = Srv::start();
    // The resolver is 127.0.0.1, which the databases do not locate: ISP `other`,
    // so POPs on one ISP's network carry cross_isp_ms and a multi-line POP answers.
    let multi_line_v4 = [
        "192.0.2.40",
        "192.0.2.41",
        "198.51.100.10",
        "198.51.100.20",
        "198.51.100.30",
        "198.51.100.40",
        "203.0.113.10",
        "203.0.113.20",
        "203.0.113.30",
        "203.0.113.40",
        "203.0.113.50",
        "203.0.113.60",
    ];
    let no_ecs = addrs(&udp(s.udp, &query_msg(WWW, RecordType::A, None)));
    for (i, family) in [1u16, 2].into_iter().enumerate() {
        let sent = ecs_option(family, 0, 0, &[]);
        let (r, m) = ask_raw(&s, 0x2000 + i as u16, WWW, 1, &sent);
        let got = addrs(&m);
        assert_eq!(got.len(), 1, "family {family}");
        assert!(multi_line_v4.contains(&got[0].as_str()), "family {family}: {got:?} is not a multi-line POP");
        assert_eq!(got, no_ecs, "family {family}: /0 must schedule like a query without ECS (the resolver)");
        assert_eq!(r.ecs().unwrap(), [0, family as u8, 0, 0], "family {family}: echo with scope 0");
    }
}

#[test]
fn static_nxdomain_and_nodata_answers_have_scope_zero() {
    let s = Srv::start();
    let sent = ecs_bytes("115.236.1.0/24");
    let cases: &[(&str, u16, u16, usize)] = &[
        ("mail.example.com", 1, 0, 1),               // static A
        ("example.com", 2, 0, 2),                    // static NS
        ("foo.static.example.com", 1, 0, 1),         // static wildcard
        ("www.example.com", 5, 0, 1),                // the CNAME itself
        ("nope.example.com", 1, 3, 0),               // NXDOMAIN
        ("mail.example.com", 28, 0, 0),              // NODATA
        ("_udp.example.com", 33, 0, 0),              // empty non-terminal
        ("www.aliyundoc.com.example.com", 15, 0, 0), // NODATA at a scheduled name
        ("x.img.example.com", 16, 0, 0),             // NODATA at a scheduled wildcard
    ];
    for (i, (name, qtype, rcode, answers)) in cases.iter().enumerate() {
        let what = format!("{name} type {qtype}");
        let (r, _) = ask_raw(&s, 0x3000 + i as u16, name, *qtype, &sent);
        assert_eq!(r.rcode(), *rcode, "{what}");
        assert_eq!(r.counts[1] as usize, *answers, "{what}");
        assert_eq!(r.ecs().unwrap_or_else(|| panic!("{what}: no ECS echo")), echo(&sent, 0), "{what}: scope");
    }
    // A CNAME to a scheduled name is answered alone, unscoped: the tailored
    // answer is for the query of the target itself (RFC 7871 §7.2.1).
    let (r, m) = ask_raw(&s, 0x3100, "www.example.com", 1, &sent);
    assert_eq!(r.counts[1], 1, "CNAME to a scheduled name");
    assert!(addrs(&m).is_empty(), "CNAME to a scheduled name: {:?}", addrs(&m));
    assert_eq!(r.ecs().unwrap(), echo(&sent, 0), "CNAME to a scheduled name");
}

#[test]
fn long_source_prefixes_are_truncated_to_max_source() {
    // ecs.max_source_v4 24, max_source_v6 56: a longer source is looked up
    // truncated, echoed as sent, and the scope can vouch for at most 24 / 56 bits.
    let s = Srv::start();
    let cases: &[(&str, u16, &str, u8)] = &[
        ("8.8.8.8/32", 1, "203.0.113.40", 24), // record /24: scope 24
        ("8.8.8.128/25", 1, "203.0.113.40", 24),
        ("115.236.1.77/32", 1, "192.0.2.10", 16), // record /16: scope 16
        ("2600:1f00::1/128", 28, "2001:db8:230::1", 24),
        ("2600:1f00:0:ab12::/64", 28, "2001:db8:230::1", 24),
    ];
    for (i, (subnet, qtype, answer, scope)) in cases.iter().enumerate() {
        let sent = ecs_bytes(subnet);
        let (r, m) = ask_raw(&s, 0x4000 + i as u16, WWW, *qtype, &sent);
        assert_eq!(addrs(&m), [*answer], "{subnet}");
        let got = r.ecs().unwrap();
        assert_eq!(got[..3], sent[4..7], "{subnet}: family and source echoed as sent");
        assert_eq!(got[4..], sent[8..], "{subnet}: address echoed as sent");
        assert!(got[3] <= if *qtype == 1 { 24 } else { 56 }, "{subnet}: scope {} over max_source", got[3]);
        assert_eq!(got[3], *scope, "{subnet}: scope");
    }
}

#[test]
fn ipv6_ecs() {
    let s = Srv::start();
    // 240e::/20 CN-GD chinatelecom: cn-gd-ct-1, or hk-hkg-1 (2.6 ms away, within
    // spread_ms 5 and multi-line) for the global name; only cn-gd-ct-1 for mainland.
    let sent = ecs_bytes("240e:0:0:1200::/56");
    let (r, m) = ask_raw(&s, 0x5000, WWW, 28, &sent);
    let got = addrs(&m);
    assert!(["2001:db8:11::1", "2001:db8:100::1"].contains(&got[0].as_str()) && got.len() == 1, "{got:?}");
    let scope = r.ecs().unwrap()[3];
    assert!((20..=56).contains(&scope), "scope {scope} for a client in 240e::/20");
    let (r, m) = ask_raw(&s, 0x5001, "cn.aliyundoc.com.example.com", 28, &sent);
    assert_eq!(addrs(&m), ["2001:db8:11::1"]);
    assert_eq!(r.ecs().unwrap(), echo(&sent, 20));
    let (r, m) = ask_raw(&s, 0x5002, "cn.aliyundoc.com.example.com", 1, &sent);
    assert_eq!(addrs(&m), ["192.0.2.11"], "A for an IPv6 client");
    assert_eq!(r.ecs().unwrap(), echo(&sent, 20));
    // hickory's encoder, IPv6 over TCP and UDP.
    for m in [
        udp(s.udp, &query_msg(WWW, RecordType::AAAA, Some("2600:1f00:0:ab00::/56"))),
        s.tcp.msg(&query_msg(WWW, RecordType::AAAA, Some("2600:1f00:0:ab00::/56"))),
    ] {
        assert_eq!(addrs(&m), ["2001:db8:230::1"]);
        assert_eq!(ecs_of(&m), Some((56, 24)));
    }
}

// ---------------------------------------------------------------- malformed ECS

#[test]
fn malformed_ecs_is_formerr_with_an_opt_and_no_ecs() {
    let s = Srv::start();
    let short = [0u8, 8, 0, 3, 0, 1, 24]; // option length 3: under 4 bytes
    let two = [ecs_bytes("115.236.1.0/24"), ecs_bytes("8.8.8.0/24")].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("payload under 4 bytes", short.to_vec()),
        ("payload of 0 bytes", vec![0, 8, 0, 0]),
        ("family 3", ecs_option(3, 24, 0, &[115, 236, 1])),
        ("family 0", ecs_option(0, 0, 0, &[])),
        ("IPv4 source 33", ecs_option(1, 33, 0, &[115, 236, 1, 0, 0])),
        ("IPv6 source 129", ecs_option(2, 129, 0, &[0x24; 17])),
        ("address longer than ceil(source/8)", ecs_option(1, 24, 0, &[115, 236, 1, 0])),
        ("address shorter than ceil(source/8)", ecs_option(1, 24, 0, &[115, 236])),
        ("address bytes with source 0", ecs_option(1, 0, 0, &[115])),
        ("bits set beyond the source prefix", ecs_option(1, 20, 0, &[115, 236, 0x0F])),
        ("bits set beyond an IPv6 prefix", ecs_option(2, 33, 0, &[0x24, 0x0e, 0, 0, 0x01])),
        ("non-zero scope in the query", ecs_option(1, 24, 16, &[115, 236, 1])),
        ("two ECS options", two),
    ];
    for (i, (what, option)) in cases.iter().enumerate() {
        let id = 0x6000 + i as u16;
        let query = raw_query(id, WWW, 1, Some((1232, 0, option)));
        for (proto, reply) in [("udp", udp_raw(s.udp, &query).expect("no UDP answer")), ("tcp", s.tcp.raw(&query))] {
            let what = format!("{what} over {proto}");
            let r = parse_raw(&reply);
            assert_eq!(r.id, id, "{what}");
            assert!(r.flags & 0x8000 != 0, "{what}: QR");
            assert_eq!(r.rcode(), 1, "{what}: not FORMERR");
            let opt = r.opt.as_ref().unwrap_or_else(|| panic!("{what}: FORMERR without an OPT"));
            assert_eq!(opt.version, 0, "{what}");
            assert_eq!(opt.udp_size, 1232, "{what}");
            assert_eq!(r.ecs_count(), 0, "{what}: ECS option in the FORMERR");
            assert_eq!(r.counts[1], 0, "{what}: answers");
        }
    }
    // And a well-formed ECS still works on the same server.
    let m = udp(s.udp, &query_msg(WWW, RecordType::A, Some("115.236.1.0/24")));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&m), ["192.0.2.10"]);
}
