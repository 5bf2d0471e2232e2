//! The shipped POPs and zone with the real databases in ../shared/geo (see its
//! README). Skips loudly outside CI when they are absent; fails under CI.
//!
//! What the databases say (city.mmdb record / asn.mmdb record), and the POP the
//! contract's estimate gives (km / 50 + 40 when a single-ISP POP is not the
//! client's ISP; POPs within spread_ms 5 of the best share):
//! - 115.236.1.0: CN-ZJ Hangzhou, record 115.236.1.0/24; AS4134 (chinatelecom)
//!   115.236.0.0/20 -> cn-zj-ct-1, scope 24 (the narrower of the two records)
//! - 123.125.1.0: CN-BJ Beijing, 123.125.0.0/23; AS4808 (chinaunicom) -> cn-bj-cu-1, scope 23
//! - 8.8.8.0: US-CA Mountain View, 8.8.8.0/24; AS15169 -> us-west-1, scope 24
//! - 2.16.1.0: DE Frankfurt am Main, 2.16.1.0/24; AS20940 -> de-fra-1 (uk-lon-1 is
//!   12.8 ms further), scope 24
//! - 114.114.114.0: CN-SD (Jinan), 114.114.112.0/21; AS21859, ISP other -> the
//!   multi-line cn-hb-bgp-1 (14.4 ms) or cn-sn-bgp-1 (15.7), scope 21
//! - 1.2.4.0: CN-BJ, 1.2.4.0/24; AS24406, ISP other -> cn-sn-bgp-1 (17.6) or
//!   cn-hb-bgp-1 (20.8), scope 24
//! - 58.246.1.0: CN-SH, 58.246.1.0/24; AS17621 (chinaunicom) -> cn-sh-cu-1, scope 24
//! - 2001:4860:4860::: CA-QC Montreal, 2001:4860:4840::/42; AS15169 -> us-east-1, scope 42

mod common;
use common::*;

use hickory_proto::rr::RecordType;

#[test]
fn real_databases_put_clients_on_sensible_pops() {
    let Some((city, asn)) = real_geo() else { return };
    let s = TestServer::start_with(&Setup { city, asn, ..Setup::default() });
    let www = "www.aliyundoc.com.example.com.";
    let cases: &[(&str, RecordType, &[&str], u8)] = &[
        ("115.236.1.0/24", RecordType::A, &["192.0.2.10"], 24),
        ("123.125.1.0/24", RecordType::A, &["192.0.2.20"], 23),
        ("8.8.8.0/24", RecordType::A, &["203.0.113.40"], 24),
        ("2.16.1.0/24", RecordType::A, &["203.0.113.10"], 24),
        ("114.114.114.0/24", RecordType::A, &["192.0.2.40", "192.0.2.41"], 21),
        ("1.2.4.0/24", RecordType::A, &["192.0.2.40", "192.0.2.41"], 24),
        ("58.246.1.0/24", RecordType::A, &["192.0.2.21"], 24),
        ("115.236.1.0/24", RecordType::AAAA, &["2001:db8:10::1"], 24),
        ("2001:4860:4860::/56", RecordType::AAAA, &["2001:db8:230::1"], 42),
    ];
    for (ecs, t, allowed, scope) in cases {
        let m = udp(s.udp, &query_msg(www, *t, Some(ecs)));
        let got = addrs(&m);
        assert_eq!(got.len(), 1, "{ecs} {t}: {got:?}");
        assert!(allowed.contains(&got[0].as_str()), "{ecs} {t}: got {}, expected one of {allowed:?}", got[0]);
        let src = ecs.split('/').nth(1).unwrap().parse::<u8>().unwrap();
        assert_eq!(ecs_of(&m), Some((src, *scope)), "{ecs} {t}: (source, scope)");
    }
    // Coverage with the real data: mainland-only and outside-the-mainland names.
    let cn = ask(s.udp, "cn.aliyundoc.com.example.com.", "8.8.8.0/24");
    assert!(cn.len() == 1 && cn[0].starts_with("192.0.2."), "mainland name for a US client: {cn:?}");
    let mut intl = ask(s.udp, "intl.aliyundoc.com.example.com.", "115.236.1.0/24");
    intl.sort();
    // From Hangzhou: hk-hkg-1 (about 21 ms) and jp-tyo-1 (about 38 ms).
    assert_eq!(intl, ["198.51.100.10", "198.51.100.20"], "intl for a Zhejiang client");
}
