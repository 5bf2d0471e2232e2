//! The DNS protocol as a resolver sees it, over real UDP and TCP: static
//! records of every type, scheduled names, wildcards, negative answers, EDNS,
//! truncation, malformed queries, opcodes, header flags.
//!
//! Expected values come from the shipped zones/example.com.yaml and pops.yaml
//! (or from the test zone written below), and from contract.md, "Protocol
//! behaviour fixed here" and "zones/NAME.yaml".

mod common;
use common::*;

use std::net::UdpSocket;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

const ECS_ZJ: &str = "115.236.1.0/24"; // CN-ZJ China Telecom -> cn-zj-ct-1
const SOA_NEG: &str = "example.com. 60 SOA ns1.example.com. hostmaster.example.com. 2026113001 3600 600 1209600 60";

// ---------------------------------------------------------------- helpers

/// A record in presentation form: "owner ttl TYPE rdata", owner lower-cased.
fn rr(r: &Record) -> String {
    let data = match &r.data {
        RData::TXT(t) => {
            t.txt_data.iter().map(|s| format!("\"{}\"", String::from_utf8_lossy(s))).collect::<Vec<_>>().join(" ")
        }
        RData::CAA(c) => format!("{} {} \"{}\"", c.flags(), c.tag, String::from_utf8_lossy(&c.value)),
        d => d.to_string(),
    };
    format!("{} {} {} {}", r.name.to_ascii().to_ascii_lowercase(), r.ttl, r.record_type(), data)
}

fn rrs(v: &[Record]) -> Vec<String> {
    v.iter().map(rr).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn q(name: &str, t: RecordType) -> Message {
    query_msg(name, t, None)
}

fn q_ecs(name: &str, t: RecordType, ecs: &str) -> Message {
    query_msg(name, t, Some(ecs))
}

/// The same query over UDP and over TCP.
fn both(s: &Srv, m: &Message) -> [(&'static str, Message); 2] {
    [("udp", udp(s.udp, m)), ("tcp", s.tcp.msg(m))]
}

/// Set the header flags of a raw query (bytes 2..4).
fn with_flags(mut q: Vec<u8>, flags: u16) -> Vec<u8> {
    q[2..4].copy_from_slice(&flags.to_be_bytes());
    q
}

/// A raw query with an OPT whose flags field (the TTL's low 16 bits) is set.
fn raw_query_opt_flags(id: u16, name: &str, qtype: u16, size: u16, opt_flags: u16, options: &[u8]) -> Vec<u8> {
    let mut v = raw_query(id, name, qtype, Some((size, 0, options)));
    let at = v.len() - options.len() - 4;
    v[at..at + 2].copy_from_slice(&opt_flags.to_be_bytes());
    v
}

fn assert_negative(m: &Message, code: ResponseCode, what: &str) {
    assert_eq!(m.metadata.response_code, code, "{what}: rcode");
    assert!(m.metadata.authoritative, "{what}: AA");
    assert!(m.answers.is_empty(), "{what}: answers {:?}", rrs(&m.answers));
    assert_eq!(rrs(&m.authorities), [SOA_NEG], "{what}: authority");
}

// ---------------------------------------------------------------- static data

#[test]
fn static_records_of_every_type_over_udp_and_tcp() {
    let s = Srv::start();
    let cases: &[(&str, RecordType, &[&str])] = &[
        (
            "example.com.",
            RecordType::SOA,
            &["example.com. 3600 SOA ns1.example.com. hostmaster.example.com. 2026113001 3600 600 1209600 60"],
        ),
        (
            "example.com.",
            RecordType::NS,
            &["example.com. 3600 NS ns1.example.com.", "example.com. 3600 NS ns2.example.com."],
        ),
        ("example.com.", RecordType::MX, &["example.com. 3600 MX 10 mail.example.com."]),
        ("example.com.", RecordType::TXT, &["example.com. 3600 TXT \"v=spf1 -all\""]),
        ("example.com.", RecordType::CAA, &["example.com. 3600 CAA 0 issue \"ca.example.net\""]),
        ("ns1.example.com.", RecordType::A, &["ns1.example.com. 3600 A 192.0.2.53"]),
        ("ns1.example.com.", RecordType::AAAA, &["ns1.example.com. 3600 AAAA 2001:db8::53"]),
        ("ns2.example.com.", RecordType::A, &["ns2.example.com. 3600 A 198.51.100.53"]),
        ("ns2.example.com.", RecordType::AAAA, &["ns2.example.com. 3600 AAAA 2001:db8:1::53"]),
        ("mail.example.com.", RecordType::A, &["mail.example.com. 3600 A 192.0.2.25"]),
        ("sip.example.com.", RecordType::A, &["sip.example.com. 3600 A 192.0.2.60"]),
        ("www.example.com.", RecordType::CNAME, &["www.example.com. 3600 CNAME www.aliyundoc.com.example.com."]),
        ("_sip._udp.example.com.", RecordType::SRV, &["_sip._udp.example.com. 3600 SRV 10 5 5060 sip.example.com."]),
        (
            "1.2.0.192.in-addr.example.com.",
            RecordType::PTR,
            &["1.2.0.192.in-addr.example.com. 3600 PTR host1.example.com."],
        ),
    ];
    for (name, t, want) in cases {
        for (proto, m) in both(&s, &q(name, *t)) {
            let what = format!("{name} {t} over {proto}");
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{what}");
            assert!(m.metadata.authoritative, "{what}: AA");
            assert!(!m.metadata.truncation, "{what}: TC");
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(sorted(rrs(&m.answers)), sorted(want), "{what}");
        }
    }
}

#[test]
fn apex_ns_carries_glue_for_ns1_and_ns2() {
    let s = Srv::start();
    for (proto, m) in both(&s, &q("example.com.", RecordType::NS)) {
        assert_eq!(m.answers.len(), 2, "{proto}");
        assert_eq!(
            sorted(rrs(&m.additionals)),
            [
                "ns1.example.com. 3600 A 192.0.2.53",
                "ns1.example.com. 3600 AAAA 2001:db8::53",
                "ns2.example.com. 3600 A 198.51.100.53",
                "ns2.example.com. 3600 AAAA 2001:db8:1::53",
            ],
            "{proto}: glue in the additional section"
        );
    }
}

#[test]
fn any_answers_one_rrset() {
    // RFC 8482: ANY gets one RRset (or a synthesised HINFO), never everything.
    let s = Srv::start();
    let m = udp(s.udp, &q("example.com.", RecordType::ANY));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.answers.is_empty(), "ANY at the apex answered nothing");
    let mut types: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    types.dedup();
    assert_eq!(types.len(), 1, "ANY answered several RRsets: {:?}", rrs(&m.answers));
}

// ---------------------------------------------------------------- scheduled names and wildcards

#[test]
fn scheduled_names_answer_a_and_aaaa_and_other_types_are_nodata() {
    let s = Srv::start();
    let name = "www.aliyundoc.com.example.com.";
    for (proto, m) in both(&s, &q_ecs(name, RecordType::A, ECS_ZJ)) {
        assert!(m.metadata.authoritative, "{proto}");
        assert_eq!(rrs(&m.answers), ["www.aliyundoc.com.example.com. 60 A 192.0.2.10"], "{proto}");
    }
    for (proto, m) in both(&s, &q_ecs(name, RecordType::AAAA, ECS_ZJ)) {
        assert!(m.metadata.authoritative, "{proto}");
        assert_eq!(rrs(&m.answers), ["www.aliyundoc.com.example.com. 60 AAAA 2001:db8:10::1"], "{proto}");
    }
    for t in [
        RecordType::MX,
        RecordType::TXT,
        RecordType::NS,
        RecordType::SOA,
        RecordType::CNAME,
        RecordType::SRV,
        RecordType::CAA,
        RecordType::PTR,
    ] {
        for (proto, m) in both(&s, &q_ecs(name, t, ECS_ZJ)) {
            assert_negative(&m, ResponseCode::NoError, &format!("{name} {t} over {proto}"));
        }
    }
}

#[test]
fn scheduled_wildcard_answers_names_below_img() {
    let s = Srv::start();
    // `*.img` is mainland, ttl 30: a China Telecom Zhejiang client gets cn-zj-ct-1.
    for name in ["x.img.example.com.", "a.b.img.example.com.", "*.img.example.com."] {
        let m = udp(s.udp, &q_ecs(name, RecordType::A, ECS_ZJ));
        assert!(m.metadata.authoritative, "{name}");
        assert_eq!(rrs(&m.answers), [format!("{name} 30 A 192.0.2.10")], "{name}");
        let m = udp(s.udp, &q_ecs(name, RecordType::AAAA, ECS_ZJ));
        assert_eq!(rrs(&m.answers), [format!("{name} 30 AAAA 2001:db8:10::1")], "{name}");
        let m = udp(s.udp, &q_ecs(name, RecordType::TXT, ECS_ZJ));
        assert_negative(&m, ResponseCode::NoError, &format!("{name} TXT"));
    }
    // img.example.com itself exists (an empty non-terminal): NODATA, not the wildcard.
    let m = udp(s.udp, &q_ecs("img.example.com.", RecordType::A, ECS_ZJ));
    assert_negative(&m, ResponseCode::NoError, "img.example.com A");
}

#[test]
fn static_wildcard_answers_only_names_that_do_not_exist() {
    let s = Srv::start();
    for name in ["foo.static.example.com.", "a.b.static.example.com.", "*.static.example.com."] {
        for (proto, m) in both(&s, &q(name, RecordType::A)) {
            assert!(m.metadata.authoritative, "{name} {proto}");
            assert_eq!(rrs(&m.answers), [format!("{name} 3600 A 192.0.2.80")], "{name} {proto}");
        }
        // The wildcard has no AAAA: NODATA.
        assert_negative(&udp(s.udp, &q(name, RecordType::AAAA)), ResponseCode::NoError, &format!("{name} AAAA"));
    }
    // static.example.com exists (an empty non-terminal): NODATA, the wildcard is below it.
    assert_negative(&udp(s.udp, &q("static.example.com.", RecordType::A)), ResponseCode::NoError, "static A");
    // A wildcard answers only below its own parent, not elsewhere in the zone.
    assert_negative(&udp(s.udp, &q("foo.example.com.", RecordType::A)), ResponseCode::NXDomain, "foo A");
}

#[test]
fn existing_names_are_not_matched_by_a_wildcard() {
    let (s, _dir) = test_zone_server();
    let a = |n: &str| udp(s.udp, &q(n, RecordType::A));
    // Names that do not exist below wild.big.test: the wildcard.
    for name in ["anything.wild.big.test.", "a.b.wild.big.test."] {
        assert_eq!(rrs(&a(name).answers), [format!("{name} 120 A 192.0.2.99")], "{name}");
    }
    // real.wild exists with a TXT only: A there is NODATA, not the wildcard's A.
    let m = a("real.wild.big.test.");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "real.wild A answered {:?}", rrs(&m.answers));
    assert_eq!(rrs(&m.authorities), [BIG_SOA_NEG]);
    let m = udp(s.udp, &q("real.wild.big.test.", RecordType::TXT));
    assert_eq!(rrs(&m.answers), ["real.wild.big.test. 120 TXT \"real\""]);
    // Below an existing name the closest encloser is that name, which has no `*`: NXDOMAIN.
    let m = a("x.real.wild.big.test.");
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "x.real.wild A");
    assert!(m.answers.is_empty());
    // ent.wild exists only because deep.ent.wild does (an empty non-terminal):
    // NODATA, and the wildcard does not answer for it.
    let m = a("ent.wild.big.test.");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "ent.wild A");
    assert!(m.answers.is_empty(), "ent.wild A answered {:?}", rrs(&m.answers));
    assert_eq!(rrs(&a("deep.ent.wild.big.test.").answers), ["deep.ent.wild.big.test. 120 A 192.0.2.98"]);
    assert_eq!(a("x.ent.wild.big.test.").metadata.response_code, ResponseCode::NXDomain, "x.ent.wild A");
}

// ---------------------------------------------------------------- negative answers

#[test]
fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let s = Srv::start();
    // TTL min(3600, minimum 60) = 60.
    let cases: &[(&str, RecordType, ResponseCode)] = &[
        ("nope.example.com.", RecordType::A, ResponseCode::NXDomain),
        ("a.b.nope.example.com.", RecordType::AAAA, ResponseCode::NXDomain),
        ("x._udp.example.com.", RecordType::SRV, ResponseCode::NXDomain),
        ("nope.aliyundoc.com.example.com.", RecordType::A, ResponseCode::NXDomain),
        ("mail.example.com.", RecordType::AAAA, ResponseCode::NoError),
        ("mail.example.com.", RecordType::MX, ResponseCode::NoError),
        ("sip.example.com.", RecordType::TXT, ResponseCode::NoError),
        ("ns1.example.com.", RecordType::MX, ResponseCode::NoError),
        ("example.com.", RecordType::A, ResponseCode::NoError),
        ("example.com.", RecordType::SRV, ResponseCode::NoError),
        ("_sip._udp.example.com.", RecordType::A, ResponseCode::NoError),
        ("1.2.0.192.in-addr.example.com.", RecordType::A, ResponseCode::NoError),
    ];
    for (name, t, code) in cases {
        for (proto, m) in both(&s, &q(name, *t)) {
            assert_negative(&m, *code, &format!("{name} {t} over {proto}"));
        }
    }
}

#[test]
fn empty_non_terminals_are_nodata_not_nxdomain() {
    // RFC 8020: NXDOMAIN means nothing exists at or below the name.
    let s = Srv::start();
    for name in [
        "_udp.example.com.",          // only because of _sip._udp
        "aliyundoc.com.example.com.", // only because of the scheduled names below it
        "com.example.com.",
        "in-addr.example.com.", // only because of 1.2.0.192.in-addr
        "192.in-addr.example.com.",
        "2.0.192.in-addr.example.com.",
    ] {
        for t in [RecordType::A, RecordType::SRV, RecordType::TXT] {
            for (proto, m) in both(&s, &q(name, t)) {
                assert_negative(&m, ResponseCode::NoError, &format!("{name} {t} over {proto}"));
            }
        }
    }
}

#[test]
fn negative_ttl_is_the_smaller_of_soa_ttl_and_minimum() {
    // The test zone has ttl 120 and minimum 300: negative TTL 120.
    let (s, _dir) = test_zone_server();
    let m = udp(s.udp, &q("nope.big.test.", RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(rrs(&m.authorities), [BIG_SOA_NEG]);
    let m = udp(s.udp, &q("ns1.big.test.", RecordType::MX));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rrs(&m.authorities), [BIG_SOA_NEG]);
    // And the shipped zone beside it keeps its own: min(3600, 60) = 60.
    assert_negative(&udp(s.udp, &q("nope.example.com.", RecordType::A)), ResponseCode::NXDomain, "example.com");
}

#[test]
fn names_outside_every_zone_are_refused_without_aa() {
    let s = Srv::start();
    for (name, t) in [
        ("example.org.", RecordType::A),
        ("www.example.org.", RecordType::AAAA),
        ("notexample.com.", RecordType::A),
        ("example.com.evil.org.", RecordType::A),
        ("com.", RecordType::SOA),
        (".", RecordType::NS),
    ] {
        for (proto, m) in both(&s, &q(name, t)) {
            let what = format!("{name} {t} over {proto}");
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{what}");
            assert!(!m.metadata.authoritative, "{what}: AA set on REFUSED");
            assert!(m.answers.is_empty() && m.authorities.is_empty(), "{what}");
        }
    }
}

// ---------------------------------------------------------------- names: case, CNAME

#[test]
fn lookup_is_case_insensitive_and_the_question_is_echoed_as_asked() {
    let s = Srv::start();
    let cases: &[(&str, u16, &[u8], ResponseCode)] = &[
        ("MaIl.ExAmPlE.cOm", 1, &[192, 0, 2, 25], ResponseCode::NoError),
        ("FoO.StAtIc.EXAMPLE.com", 1, &[192, 0, 2, 80], ResponseCode::NoError),
        ("WWW.ALIYUNDOC.COM.EXAMPLE.COM", 1, &[], ResponseCode::NoError),
        ("NoPe.ExAmPlE.CoM", 1, &[], ResponseCode::NXDomain),
        ("mAiL.example.COM", 28, &[], ResponseCode::NoError),
    ];
    for (i, (name, qtype, want_a, code)) in cases.iter().enumerate() {
        let query = raw_query(0x4000 + i as u16, name, *qtype, Some((1232, 0, &[])));
        let qlen = query.len() - 12 - 11; // minus the header and the OPT
        for (proto, reply) in [("udp", udp_raw(s.udp, &query).expect("no UDP answer")), ("tcp", s.tcp.raw(&query))] {
            let what = format!("{name} over {proto}");
            assert_eq!(reply[12..12 + qlen], query[12..12 + qlen], "{what}: question not echoed byte for byte");
            let m = Message::from_vec(&reply).unwrap();
            assert_eq!(m.metadata.response_code, *code, "{what}");
            assert!(m.metadata.authoritative, "{what}");
            if *code == ResponseCode::NoError && !want_a.is_empty() {
                assert_eq!(m.answers.len(), 1, "{what}");
                assert_eq!(
                    m.answers[0].name.to_ascii().to_ascii_lowercase(),
                    format!("{}.", name.to_ascii_lowercase()),
                    "{what}"
                );
                match &m.answers[0].data {
                    RData::A(a) => assert_eq!(a.0.octets(), **want_a, "{what}"),
                    d => panic!("{what}: {d:?}"),
                }
            }
            if name.starts_with("WWW") {
                assert_eq!(m.answers.len(), 1, "{what}: scheduled name not answered");
            }
            if *qtype == 28 {
                assert!(m.answers.is_empty(), "{what}");
            }
        }
    }
}

#[test]
fn cname_is_followed_to_the_scheduled_name_in_our_zone_unless_asked_with_ecs() {
    let s = Srv::start();
    let cname = "www.example.com. 3600 CNAME www.aliyundoc.com.example.com.";
    // Without ECS the chain is followed (the resolver, 127.0.0.1, is not
    // located: any POP of the family will do).
    for (t, rtype) in [(RecordType::A, "A"), (RecordType::AAAA, "AAAA")] {
        for (proto, m) in both(&s, &q("www.example.com.", t)) {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{proto}");
            assert!(m.metadata.authoritative, "{proto}");
            let got = rrs(&m.answers);
            assert_eq!(got.len(), 2, "{proto}: {got:?}");
            assert_eq!(got[0], cname, "{proto}");
            assert!(got[1].starts_with(&format!("www.aliyundoc.com.example.com. 60 {rtype} ")), "{proto}: {got:?}");
        }
    }
    // With ECS, the CNAME alone and scope 0, so a cache keeps the alias
    // unscoped and asks for the tailored name itself (RFC 7871 §7.2.1).
    for ecs in [ECS_ZJ, "8.8.8.0/24"] {
        for (proto, m) in both(&s, &q_ecs("www.example.com.", RecordType::A, ecs)) {
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{proto}");
            assert_eq!(rrs(&m.answers), [cname], "{proto} {ecs}");
            assert!(m.authorities.is_empty(), "{proto} {ecs}");
            assert_eq!(ecs_of(&m).map(|(_, scope)| scope), Some(0), "{proto} {ecs}");
        }
    }
    // Followed to the scheduled name, where MX is NODATA: the CNAME and the SOA.
    let m = udp(s.udp, &q("www.example.com.", RecordType::MX));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rrs(&m.answers), [cname]);
    assert_eq!(rrs(&m.authorities), [SOA_NEG]);
}

// ---------------------------------------------------------------- EDNS

#[test]
fn edns_our_buffer_size_is_advertised_and_unknown_options_and_flags_are_not_echoed() {
    let s = Srv::start();
    for size in [512u16, 1232, 4096, 65535] {
        let reply = udp_raw(s.udp, &raw_query(7, "mail.example.com", 1, Some((size, 0, &[])))).unwrap();
        let r = parse_raw(&reply);
        let opt = r.opt.as_ref().unwrap_or_else(|| panic!("client size {size}: no OPT in the reply"));
        assert_eq!(opt.udp_size, 1232, "client size {size}");
        assert_eq!(opt.version, 0);
        assert_eq!(r.rcode(), 0);
        assert_eq!(r.counts[1], 1, "client size {size}: the A record");
    }
    // An unknown option (65001, local use) and an unknown OPT flag (the lowest Z bit).
    let unknown = [0xFD, 0xE9, 0, 3, 1, 2, 3];
    for (proto, reply) in [
        ("udp", udp_raw(s.udp, &raw_query_opt_flags(8, "mail.example.com", 1, 1232, 0x0001, &unknown)).unwrap()),
        ("tcp", s.tcp.raw(&raw_query_opt_flags(8, "mail.example.com", 1, 1232, 0x0001, &unknown))),
    ] {
        let r = parse_raw(&reply);
        assert_eq!(r.rcode(), 0, "{proto}");
        let opt = r.opt.as_ref().expect("no OPT");
        assert!(opt.options.is_empty(), "{proto}: options echoed: {:?}", opt.options);
        assert_eq!(opt.flags & 0x7FFF, 0, "{proto}: unknown OPT flags echoed");
        assert_eq!(r.counts[1], 1, "{proto}");
    }
    // No OPT in the query: none in the reply (RFC 6891 §7).
    let r = parse_raw(&udp_raw(s.udp, &raw_query(9, "mail.example.com", 1, None)).unwrap());
    assert!(r.opt.is_none(), "OPT in a reply to a query without one");
    assert_eq!(r.counts[3], 0);
    assert_eq!(r.counts[1], 1);
}

#[test]
fn edns_version_1_gets_badvers_with_an_opt() {
    let s = Srv::start();
    for version in [1u8, 2, 255] {
        let query = raw_query(0xBAD0 + version as u16, "mail.example.com", 1, Some((1232, version, &[])));
        for (proto, reply) in [("udp", udp_raw(s.udp, &query).expect("no UDP answer")), ("tcp", s.tcp.raw(&query))] {
            let what = format!("EDNS version {version} over {proto}");
            let r = parse_raw(&reply);
            assert_eq!(r.id, 0xBAD0 + version as u16, "{what}");
            assert!(r.qr(), "{what}");
            assert_eq!(r.flags & 0xF, 0, "{what}: header RCODE (low bits of BADVERS=16)");
            let opt = r.opt.as_ref().unwrap_or_else(|| panic!("{what}: BADVERS without an OPT"));
            assert_eq!(opt.ext_rcode, 1, "{what}: extended RCODE (high bits of BADVERS=16)");
            assert_eq!(r.rcode(), 16, "{what}");
            assert_eq!(opt.version, 0, "{what}: our version");
            assert_eq!(opt.udp_size, 1232, "{what}");
            assert_eq!(r.counts[1], 0, "{what}: answered anyway");
        }
    }
}

#[test]
fn big_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let (s, _dir) = test_zone_server();
    let many_a = |m: &Message| m.answers.iter().filter(|r| matches!(r.data, RData::A(_))).count();
    // 40 A records: about 680 bytes. Without EDNS the limit is 512: TC.
    let query = raw_query(0x5151, "many.big.test", 1, None);
    let reply = udp_raw(s.udp, &query).expect("no UDP answer");
    assert!(reply.len() <= 512, "UDP reply of {} bytes to a query without EDNS", reply.len());
    let r = parse_raw(&reply);
    assert!(r.tc(), "answer over 512 bytes without EDNS: TC not set");
    assert!(r.aa());
    assert_eq!(r.rcode(), 0);
    // The same over TCP: everything, no TC.
    let m = Message::from_vec(&s.tcp.raw(&query)).unwrap();
    assert!(!m.metadata.truncation, "TC over TCP");
    assert_eq!(many_a(&m), 40, "over TCP");
    // With EDNS 1232 it fits over UDP.
    let m = udp(s.udp, &q("many.big.test.", RecordType::A));
    assert!(!m.metadata.truncation, "680 bytes with EDNS 1232: TC");
    assert_eq!(many_a(&m), 40, "with EDNS 1232");
    // A client that says 512 in its OPT gets TC, and the OPT.
    let reply = udp_raw(s.udp, &raw_query(0x5152, "many.big.test", 1, Some((512, 0, &[])))).unwrap();
    assert!(reply.len() <= 512, "{} bytes to an EDNS 512 client", reply.len());
    let r = parse_raw(&reply);
    assert!(r.tc(), "EDNS 512 client: TC not set");
    assert!(r.opt.is_some(), "TC reply to an EDNS query without OPT");

    // A 1400-byte TXT: over our 1232 cap even when the client offers 4096.
    let reply = udp_raw(s.udp, &raw_query(0x5153, "longtxt.big.test", 16, Some((4096, 0, &[])))).unwrap();
    assert!(reply.len() <= 1232, "UDP reply of {} bytes over udp_payload 1232", reply.len());
    assert!(parse_raw(&reply).tc(), "1400-byte TXT over UDP: TC not set");
    let m = s.tcp.msg(&q("longtxt.big.test.", RecordType::TXT));
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 1);
    match &m.answers[0].data {
        RData::TXT(t) => {
            let lens: Vec<usize> = t.txt_data.iter().map(|s| s.len()).collect();
            assert_eq!(lens, [255, 255, 255, 255, 255, 125], "TXT split into 255-byte strings");
            let all: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
            assert_eq!(all, long_txt().into_bytes());
        }
        d => panic!("{d:?}"),
    }
}

// ---------------------------------------------------------------- header, opcodes, malformed

#[test]
fn rd_is_copied_and_ra_is_clear() {
    let s = Srv::start();
    for rd in [false, true] {
        let flags = if rd { 0x0100 } else { 0 };
        let query = with_flags(raw_query(0x2200, "mail.example.com", 1, Some((1232, 0, &[]))), flags);
        for (proto, reply) in [("udp", udp_raw(s.udp, &query).unwrap()), ("tcp", s.tcp.raw(&query))] {
            let r = parse_raw(&reply);
            assert!(r.qr(), "{proto}");
            assert_eq!(r.rd(), rd, "{proto}: RD not copied");
            assert!(!r.ra(), "{proto}: RA set by an authoritative-only server");
            assert!(r.aa(), "{proto}");
            assert_eq!(r.rcode(), 0, "{proto}");
            assert_eq!(r.counts[1], 1, "{proto}: RD must not change the answer");
        }
    }
    // RA clear on negative answers and refusals too.
    for name in ["nope.example.com", "example.org"] {
        let query = with_flags(raw_query(0x2201, name, 1, None), 0x0100);
        let r = parse_raw(&udp_raw(s.udp, &query).unwrap());
        assert!(r.rd() && !r.ra(), "{name}");
    }
}

#[test]
fn opcodes_other_than_query_are_notimp_and_notify_update_refused() {
    let s = Srv::start();
    for (opcode, want) in [(1u16, 4u16), (2, 4), (3, 4), (6, 4), (15, 4), (4, 5), (5, 5)] {
        let query = with_flags(raw_query(0x3300 + opcode, "example.com", 6, None), opcode << 11);
        for (proto, reply) in [("udp", udp_raw(s.udp, &query).expect("no UDP answer")), ("tcp", s.tcp.raw(&query))] {
            let what = format!("opcode {opcode} over {proto}");
            let r = parse_raw(&reply);
            assert_eq!(r.id, 0x3300 + opcode, "{what}");
            assert!(r.qr(), "{what}");
            assert_eq!(r.opcode(), opcode, "{what}: opcode not echoed");
            assert_eq!(r.rcode(), want, "{what}");
            assert_eq!(r.counts[1], 0, "{what}: answers");
        }
    }
}

/// `raw_query` with an OPT (version 0, no options) whose DO bit is set.
fn with_do(mut q: Vec<u8>) -> Vec<u8> {
    // The OPT is the last 11 bytes: root, TYPE, CLASS, ext RCODE, version, flags, RDLENGTH 0.
    let flags_at = q.len() - 4;
    q[flags_at] |= 0x80;
    q
}

#[test]
fn errors_to_edns_queries_carry_an_opt() {
    // RFC 6891 §6.1.1 and §7: a reply to a query with an OPT has one, the
    // errors included, so the client can tell a format error within EDNS
    // from a server without EDNS. A query without an OPT gets none back.
    let s = Srv::start();
    let edns = raw_query(0x3400, "example.com", 6, Some((1232, 0, &[])));
    let plain = raw_query(0x3401, "example.com", 6, None);
    let question_len = "example.com".len() + 2 + 4;
    let no_question = |q: &[u8]| {
        let mut v = q[..12].to_vec();
        v[5] = 0;
        v.extend_from_slice(&q[12 + question_len..]);
        v
    };
    let two_questions = |q: &[u8]| {
        let mut v = q[..12 + question_len].to_vec();
        v[5] = 2;
        v.extend_from_slice(&q[12..]);
        v
    };
    let opt = &edns[12 + question_len..];
    let mut two_opts = edns.clone();
    two_opts[11] = 2;
    two_opts.extend_from_slice(opt);
    let mut opt_in_answers = edns.clone();
    (opt_in_answers[7], opt_in_answers[11]) = (1, 0);
    let mut trailing = edns.clone();
    trailing.push(0);
    let mut owner_not_root = edns[..12 + question_len].to_vec();
    owner_not_root.extend_from_slice(b"\x03com\x00");
    owner_not_root.extend_from_slice(&opt[1..]);
    let cases: [(&str, Vec<u8>, Vec<u8>, u16); 9] = [
        ("opcode IQUERY", with_flags(edns.clone(), 1 << 11), with_flags(plain.clone(), 1 << 11), 4),
        ("opcode STATUS", with_flags(edns.clone(), 2 << 11), with_flags(plain.clone(), 2 << 11), 4),
        ("opcode NOTIFY", with_flags(edns.clone(), 4 << 11), with_flags(plain.clone(), 4 << 11), 5),
        ("QDCOUNT 0", no_question(&edns), no_question(&plain), 1),
        ("QDCOUNT 2", two_questions(&edns), two_questions(&plain), 1),
        ("two OPT records", two_opts, vec![], 1),
        ("OPT in the answer section", opt_in_answers, vec![], 1),
        ("a byte after the OPT", trailing, vec![], 1),
        ("OPT owner not the root", owner_not_root, vec![], 1),
    ];
    for (what, with, without, rcode) in cases {
        for (proto, reply) in [("udp", udp_raw(s.udp, &with).expect("no UDP answer")), ("tcp", s.tcp.raw(&with))] {
            let r = parse_raw(&reply);
            assert_eq!(r.rcode(), rcode, "{what} over {proto}");
            let o = r.opt.unwrap_or_else(|| panic!("{what} over {proto}: no OPT in the reply"));
            assert_eq!((o.version, o.udp_size), (0, 1232), "{what} over {proto}");
        }
        if !without.is_empty() {
            let r = parse_raw(&udp_raw(s.udp, &without).expect("no UDP answer"));
            assert_eq!(r.rcode(), rcode, "{what} without EDNS");
            assert!(r.opt.is_none(), "{what} without EDNS: an OPT in the reply");
        }
    }
}

#[test]
fn the_do_bit_is_copied_into_every_reply() {
    // RFC 3225 §3: "The DO bit of the query MUST be copied in the response."
    let s = Srv::start();
    let ecs = ecs_option(1, 24, 0, &[115, 236, 1]);
    let bad_ecs = ecs_option(1, 24, 8, &[115, 236, 1]);
    let cases: [(&str, Vec<u8>, u16); 6] = [
        ("an answer", raw_query(0x3500, "mail.example.com", 1, Some((1232, 0, &[]))), 0),
        ("a scheduled answer", raw_query(0x3501, "www.aliyundoc.com.example.com", 1, Some((1232, 0, &ecs))), 0),
        ("NXDOMAIN", raw_query(0x3502, "nope.example.com", 1, Some((1232, 0, &[]))), 3),
        ("REFUSED", raw_query(0x3503, "example.org", 1, Some((1232, 0, &[]))), 5),
        ("BADVERS", raw_query(0x3504, "example.com", 6, Some((1232, 1, &[]))), 16),
        ("FORMERR", raw_query(0x3505, "example.com", 6, Some((1232, 0, &bad_ecs))), 1),
    ];
    for (what, query, rcode) in cases {
        // The OPT follows the question; its flags are the last two bytes of its TTL.
        let opt_at = skip_name(&query, 12) + 4;
        let mut with = query.clone();
        with[opt_at + 7] |= 0x80;
        for (asked, q) in [(false, query), (true, with)] {
            let r = parse_raw(&udp_raw(s.udp, &q).expect("no UDP answer"));
            assert_eq!(r.rcode(), rcode, "{what}");
            let flags = r.opt.unwrap_or_else(|| panic!("{what}: no OPT")).flags;
            assert_eq!(flags, if asked { 0x8000 } else { 0 }, "{what}, DO {asked}");
        }
    }
    // The helper agrees for a query without options.
    let r = parse_raw(&s.tcp.raw(&with_do(raw_query(0x3506, "example.com", 6, Some((1232, 0, &[]))))));
    assert_eq!(r.opt.unwrap().flags, 0x8000, "over TCP");
}

#[test]
fn refusals_echo_the_client_subnet_with_scope_zero() {
    // RFC 7871 §7.2.1: an ECS option in the reply whether or not it was
    // needed for the answer, REFUSED included.
    let s = Srv::start();
    let ecs = ecs_option(1, 24, 0, &[115, 236, 1]);
    for (what, query) in [
        ("a name outside our zones", raw_query(0x3600, "example.org", 1, Some((1232, 0, &ecs)))),
        ("class CH", {
            let mut q = raw_query(0x3601, "example.com", 1, Some((1232, 0, &ecs)));
            q[12 + 13 + 3] = 3;
            q
        }),
    ] {
        let r = parse_raw(&udp_raw(s.udp, &query).expect("no UDP answer"));
        assert_eq!(r.rcode(), 5, "{what}");
        assert_eq!(r.ecs(), Some(&[0, 1, 24, 0, 115, 236, 1][..]), "{what}");
    }
}

#[test]
fn zone_transfers_are_refused() {
    let s = Srv::start();
    for (qtype, what) in [(252u16, "AXFR"), (251, "IXFR")] {
        let query = raw_query(0x4400 + qtype, "example.com", qtype, None);
        let r = parse_raw(&s.tcp.raw(&query));
        assert_eq!(r.rcode(), 5, "{what} over TCP");
        assert_eq!(r.counts[1], 0, "{what} over TCP: records sent");
        let r = parse_raw(&udp_raw(s.udp, &query).expect("no UDP answer"));
        assert_eq!(r.rcode(), 5, "{what} over UDP");
        assert_eq!(r.counts[1], 0, "{what} over UDP: records sent");
    }
}

#[test]
fn malformed_queries_get_formerr() {
    let s = Srv::start();
    let good = raw_query(0x6600, "mail.example.com", 1, None);
    // Two questions.
    let mut two = good.clone();
    two[5] = 2;
    two.extend_from_slice(&good[12..]);
    // The question cut inside a label, and cut before QCLASS.
    let mut cut_label = good[..12 + 7].to_vec();
    cut_label[1] = 1;
    let mut cut_class = good[..good.len() - 2].to_vec();
    cut_class[1] = 2;
    // ARCOUNT 1 with no record; a label running past the end.
    let mut missing_ar = good.clone();
    missing_ar[1] = 3;
    missing_ar[11] = 1;
    let mut long_label = good.clone();
    long_label[1] = 4;
    long_label[12] = 60;
    for (what, query) in [
        ("QDCOUNT 2", two),
        ("question cut inside a label", cut_label),
        ("question cut before QCLASS", cut_class),
        ("ARCOUNT 1 without a record", missing_ar),
        ("label past the end", long_label),
    ] {
        let id = be16(&query, 0);
        for (proto, reply) in [("udp", udp_raw(s.udp, &query).expect("no UDP answer")), ("tcp", s.tcp.raw(&query))] {
            let r = parse_raw(&reply);
            assert_eq!(r.id, id, "{what} over {proto}");
            assert!(r.qr(), "{what} over {proto}");
            assert_eq!(r.rcode(), 1, "{what} over {proto}: not FORMERR");
            assert_eq!(r.counts[1], 0, "{what} over {proto}");
        }
    }
}

#[test]
fn responses_and_datagrams_under_12_bytes_get_no_reply() {
    let s = Srv::start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // A response (QR set), then short datagrams, then a good query, all from one
    // socket: the server reads them in order (one 4-tuple, one worker), so if any
    // junk were answered its reply would arrive before the good one.
    let response = with_flags(raw_query(0x0BAD, "mail.example.com", 1, None), 0x8000);
    let response_aa = with_flags(raw_query(0x0BAE, "mail.example.com", 1, None), 0x8400);
    let junk: [&[u8]; 6] =
        [&response, &response_aa, &[], &[0x0B], &[0x0B, 0xAF, 0, 0], &[0x0B, 0xAF, 0, 0, 0, 1, 0, 0, 0, 0, 0]];
    for j in junk {
        sock.send_to(j, s.udp).unwrap();
    }
    let good = raw_query(0x600D, "mail.example.com", 1, None);
    sock.send_to(&good, s.udp).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("no answer to the good query");
    let r = parse_raw(&buf[..n]);
    assert_eq!(r.id, 0x600D, "a reply to junk (id {:#06x}) came first", r.id);
    // Over TCP a response gets no reply either, and the query after it on
    // the same connection is answered.
    use std::io::{Read, Write};
    let mut t = std::net::TcpStream::connect(s.server.tcp).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (response.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&response);
    framed.extend_from_slice(&(good.len() as u16).to_be_bytes());
    framed.extend_from_slice(&good);
    t.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    t.read_exact(&mut len).expect("TCP: the query after a response was not answered");
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    t.read_exact(&mut body).unwrap();
    assert_eq!(be16(&body, 0), 0x600D, "TCP: a response was answered");
}

// ---------------------------------------------------------------- the test zone

const BIG_SOA_NEG: &str = "big.test. 120 SOA ns1.big.test. hostmaster.big.test. 7 3600 600 1209600 300";

fn long_txt() -> String {
    (0..1400).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// The shipped zone plus `big.test`: 40 A records at one name, a 1400-byte TXT,
/// a wildcard beside existing names. ttl 120 < minimum 300.
fn test_zone_server() -> (Srv, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("zones/example.com.yaml"), dir.path().join("example.com.yaml")).unwrap();
    let many: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}")).collect();
    let zone = format!(
        r#"zone: big.test
soa: {{mname: ns1.big.test, rname: hostmaster.big.test, serial: 7, refresh: 3600, retry: 600, expire: 1209600, minimum: 300}}
ttl: 120
records:
  "@": {{NS: [ns1.big.test]}}
  ns1: {{A: [192.0.2.1]}}
  many: {{A: [{many}]}}
  longtxt: {{TXT: ["{txt}"]}}
  "*.wild": {{A: [192.0.2.99]}}
  real.wild: {{TXT: ["real"]}}
  deep.ent.wild: {{A: [192.0.2.98]}}
"#,
        many = many.join(", "),
        txt = long_txt(),
    );
    std::fs::write(dir.path().join("big.test.yaml"), zone).unwrap();
    let s = Srv::start_with(&Setup { zones: dir.path().to_path_buf(), ..Setup::default() });
    (s, dir)
}

// ---------------------------------------------------------------- glue, CNAME loops, ANY at an alias

/// `edge.test`: 13 name servers in the zone, each with A and AAAA glue (more
/// than 512 bytes with the glue), a CNAME loop, and an alias.
fn edge_zone_server() -> (Srv, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut zone = String::from(
        "zone: edge.test\n\
         soa: {mname: ns01.edge.test, rname: hostmaster.edge.test, serial: 1, refresh: 3600, retry: 600, expire: 1209600, minimum: 300}\n\
         ttl: 300\nrecords:\n",
    );
    let ns: Vec<String> = (1..=13).map(|i| format!("ns{i:02}.edge.test")).collect();
    zone += &format!("  \"@\": {{NS: [{}]}}\n", ns.join(", "));
    for i in 1..=13 {
        zone += &format!("  ns{i:02}: {{A: [192.0.2.{i}], AAAA: [\"2001:db8::{i}\"]}}\n");
    }
    zone += "  loop1: {CNAME: loop2.edge.test}\n  loop2: {CNAME: loop1.edge.test}\n  alias: {CNAME: ns01.edge.test}\n";
    std::fs::write(dir.path().join("edge.test.yaml"), zone).unwrap();
    let s = Srv::start_with(&Setup { zones: dir.path().to_path_buf(), ..Setup::default() });
    (s, dir)
}

#[test]
fn glue_that_does_not_fit_is_left_out_without_tc() {
    // RFC 2181 §9: TC only when a required RRset does not fit, not for
    // additional-section data; the glue RRsets that do not fit are omitted.
    let (s, _dir) = edge_zone_server();
    let edns = raw_query(0x3700, "edge.test", 2, Some((1232, 0, &[])));
    for (what, query, limit) in
        [("without EDNS", raw_query(0x3701, "edge.test", 2, None), 512), ("EDNS 1232", edns, 1232)]
    {
        let reply = udp_raw(s.udp, &query).expect("no UDP answer");
        let r = parse_raw(&reply);
        assert!(reply.len() <= limit, "{what}: {} bytes", reply.len());
        assert!(!r.tc(), "{what}: TC set for glue");
        assert_eq!(r.counts[1], 13, "{what}: the NS RRset");
        let glue = r.counts[3] - u16::from(r.opt.is_some());
        assert!((1..26).contains(&glue), "{what}: {glue} glue records");
    }
    // Over TCP all 26 glue records go.
    let m = s.tcp.msg(&q("edge.test.", RecordType::NS));
    assert_eq!(m.answers.len(), 13);
    assert_eq!(m.additionals.len(), 26);
    assert!(!m.metadata.truncation);
}

#[test]
fn a_cname_loop_gives_each_rrset_once() {
    // RFC 2181 §5.5: an RRset once per reply; RFC 1034 §3.6.2: loops end.
    let (s, _dir) = edge_zone_server();
    for (proto, m) in both(&s, &q("loop1.edge.test.", RecordType::A)) {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{proto}");
        assert_eq!(
            rrs(&m.answers),
            ["loop1.edge.test. 300 CNAME loop2.edge.test.", "loop2.edge.test. 300 CNAME loop1.edge.test."],
            "{proto}"
        );
    }
}

#[test]
fn any_at_an_alias_gets_the_cname_alone() {
    // RFC 1034 §3.6.2: "a type CNAME or * query should return just the CNAME".
    let (s, _dir) = edge_zone_server();
    for (proto, m) in both(&s, &q("alias.edge.test.", RecordType::ANY)) {
        assert_eq!(rrs(&m.answers), ["alias.edge.test. 300 CNAME ns01.edge.test."], "{proto}");
    }
    // Any other type follows it.
    let m = udp(s.udp, &q("alias.edge.test.", RecordType::A));
    assert_eq!(rrs(&m.answers), ["alias.edge.test. 300 CNAME ns01.edge.test.", "ns01.edge.test. 300 A 192.0.2.1"]);
}

#[test]
fn no_pop_of_the_family_is_nodata_with_scope_zero() {
    // Contract (scheduling 5, 6) and RFC 7871 §7.4: a negative answer is
    // the same for every client, so its scope is 0.
    let dir = tempfile::tempdir().unwrap();
    let pops = pops_without_ipv6(dir.path(), |_| true);
    let v4_only = std::fs::read_to_string(&pops).unwrap();
    assert!(!v4_only.contains("ipv6"), "{v4_only}");
    let s = Srv::start_with(&Setup { pops, ..Setup::default() });
    let m = udp(s.udp, &q_ecs("www.aliyundoc.com.example.com.", RecordType::AAAA, ECS_ZJ));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(rrs(&m.authorities), [SOA_NEG]);
    assert_eq!(ecs_of(&m), Some((24, 0)));
    // explain says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popdns"))
        .args(["explain", "www.aliyundoc.com.example.com", "--client", "192.0.2.1", "--ecs", ECS_ZJ])
        .args(["--type", "AAAA", "--json", "--server", &format!("http://{}", s.server.http.unwrap())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&v["answer"], &v["scope"]), (&serde_json::json!([]), &serde_json::json!(0)), "{v}");
    // A is still scheduled, and scoped.
    let m = udp(s.udp, &q_ecs("www.aliyundoc.com.example.com.", RecordType::A, ECS_ZJ));
    assert_eq!(addrs(&m), ["192.0.2.10"]);
    assert_eq!(ecs_of(&m), Some((24, 16)));
}
