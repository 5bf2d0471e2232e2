//! The route-quality feed, end to end: real datagrams to the real server's
//! feed port, answers checked over real DNS.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use popdns::quality::feed::{self, Drop};

const WWW: &str = "www.aliyundoc.com.example.com.";
/// China Telecom Zhejiang (demo DB: 115.236.0.0/16, AS4134).
const ZJ_CT: &str = "115.236.1.0/24";
const CN_ZJ_CT_1: &str = "192.0.2.10";
/// Next best for ZJ_CT when cn-zj-ct-1 is out: the multi-line POP in Wuhan
/// (about 570 km, no cross-ISP cost), ahead of cn-gd-ct-1 (about 1,000 km).
const CN_HB_BGP_1: &str = "192.0.2.40";
const DE_FRA_1: &str = "203.0.113.10";

fn key_of(reporter: &str) -> Vec<u8> {
    let hex = TEST_REPORTERS.iter().find(|(id, _)| *id == reporter).map(|(_, k)| k.to_string());
    let hex = hex.unwrap_or_else(|| reporter_key(reporter.trim_start_matches("probe-").parse().unwrap()));
    feed::decode_hex(&hex).unwrap()
}

/// Sends reports with rising timestamps.
struct Feeder {
    sock: UdpSocket,
    to: SocketAddr,
    ts: u64,
}

impl Feeder {
    fn new(s: &TestServer) -> Feeder {
        Feeder { sock: UdpSocket::bind("127.0.0.1:0").unwrap(), to: s.feed.unwrap(), ts: 0 }
    }
    fn next_ts(&mut self) -> u64 {
        self.ts = feed::now_ms().max(self.ts + 1);
        self.ts
    }
    /// Send `body` (JSON without ts) from `reporter`.
    fn send(&mut self, reporter: &str, body: &str) {
        let ts = self.next_ts();
        let body = format!("{{\"ts\": {ts}, {body}}}");
        self.raw(&feed::encode(reporter, &key_of(reporter), body.as_bytes()));
    }
    fn raw(&self, d: &[u8]) {
        self.sock.send_to(d, self.to).unwrap();
    }
}

/// Wait until the server has accepted `n` reports in total (the writer counts
/// after it publishes, so the next query sees the data). Bounded.
fn wait_accepted(s: &TestServer, n: u64) {
    let stats = &s.handle.as_ref().unwrap().shared.feed_stats;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.accepted.load(Ordering::Acquire) < n {
        assert!(Instant::now() < deadline, "server accepted {} of {n} reports", stats.accepted.load(Ordering::Acquire));
        std::thread::yield_now();
    }
}

fn wait_dropped(s: &TestServer, reason: Drop, n: u64) {
    let stats = &s.handle.as_ref().unwrap().shared.feed_stats;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.dropped(reason) < n {
        assert!(Instant::now() < deadline, "{} drops: {} of {n}", reason.as_str(), stats.dropped(reason));
        std::thread::yield_now();
    }
}

fn pop_state(id: &str, up: bool) -> String {
    format!("\"pops\": [{{\"id\": \"{id}\", \"up\": {up}}}]")
}

#[test]
fn down_moves_the_subnet_at_once_and_up_brings_it_back_after_up_after() {
    let s = TestServer::start();
    let mut f = Feeder::new(&s);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1]);

    let t0 = Instant::now();
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 1);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1], "the first query after the report moves");
    eprintln!("report -> changed answer: {:?}", t0.elapsed());

    // up_after = 2: one "up" is not enough, the second is.
    f.send("probe-a", &pop_state("cn-zj-ct-1", true));
    wait_accepted(&s, 2);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1]);
    f.send("probe-a", &pop_state("cn-zj-ct-1", true));
    wait_accepted(&s, 3);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1]);
}

/// Reports that arrive while the writer waits out its publish gap (5 ms after
/// a publish) are not watched for, so nothing wakes the writer for them: it
/// must take them when the gap ends, not at the next datagram or its longest
/// sleep (1 s).
#[test]
fn reports_landing_in_the_publish_gap_are_published_when_it_ends() {
    let s = TestServer::start();
    let mut f = Feeder::new(&s);
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 1);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1]);
    // Straight after a publish: inside the gap. Two of three reporters say up.
    let sent = Instant::now();
    f.send("probe-b", &pop_state("cn-zj-ct-1", true));
    f.send("probe-c", &pop_state("cn-zj-ct-1", true));
    let stats = &s.handle.as_ref().unwrap().shared.feed_stats;
    while stats.accepted.load(Ordering::Acquire) < 3 {
        assert!(sent.elapsed() < Duration::from_millis(500), "reports sent in the gap still unpublished");
        std::thread::yield_now();
    }
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1], "one of three down is not down");
    eprintln!("reports in the gap -> published: {:?}", sent.elapsed());
}

#[test]
fn hysteresis_needs_down_after_consecutive_reports() {
    let s = TestServer::start_with(&Setup { feed_extra: "  down_after: 3\n".into(), ..Setup::default() });
    let mut f = Feeder::new(&s);
    f.send("probe-a", &pop_state("cn-zj-ct-1", true)); // first report: view up at once
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 3);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1], "two of three downs: still up");
    f.send("probe-a", &pop_state("cn-zj-ct-1", true)); // breaks the streak
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 6);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1], "the streak restarted");
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 7);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1], "three consecutive downs");
}

#[test]
fn quorum_one_of_three_changes_nothing_two_of_three_does() {
    let s = TestServer::start();
    let mut f = Feeder::new(&s);
    for r in ["probe-a", "probe-b", "probe-c"] {
        f.send(r, &pop_state("cn-zj-ct-1", true));
    }
    wait_accepted(&s, 3);
    // down_after = 2: each reporter's view flips after two downs.
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 5);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1], "one broken probe must not take a POP out");
    f.send("probe-b", &pop_state("cn-zj-ct-1", false));
    f.send("probe-b", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 7);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1], "two of three: down");
}

#[test]
fn stale_reports_expire_back_to_the_default_health() {
    let stale = Duration::from_millis(800);
    let s = TestServer::start_with(&Setup { feed_extra: "  stale_after: 800ms\n".into(), ..Setup::default() });
    let mut f = Feeder::new(&s);
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 1);
    let accepted_at = Instant::now();
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1]);
    // No further report: the view expires and the POP returns to `up` (its default).
    let deadline = accepted_at + stale + Duration::from_secs(3);
    loop {
        let a = ask(s.udp, WWW, ZJ_CT);
        if a == [CN_ZJ_CT_1] {
            break;
        }
        assert!(Instant::now() < deadline, "still {a:?} long after stale_after");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        accepted_at.elapsed() >= stale - Duration::from_millis(50),
        "expired too early: {:?}",
        accepted_at.elapsed()
    );
}

#[test]
fn a_fast_route_moves_that_group_and_only_that_group() {
    let s = TestServer::start();
    let mut f = Feeder::new(&s);
    let unicom_bj = "123.125.1.0/24";
    let telecom_sc = "118.112.1.0/24";
    let before_bj = ask(s.udp, WWW, unicom_bj);
    let before_sc = ask(s.udp, WWW, telecom_sc);
    f.send(
        "probe-a",
        r#""routes": [{"pop": "de-fra-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 1.0, "loss": 0.0},
                      {"pop": "cn-zj-ct-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 50.0, "loss": 0.0}]"#,
    );
    wait_accepted(&s, 1);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [DE_FRA_1]);
    assert_eq!(ask(s.udp, WWW, unicom_bj), before_bj);
    assert_eq!(ask(s.udp, WWW, telecom_sc), before_sc);
    // Loss counts: 10% loss is 50 ms at loss_ms 500.
    f.send(
        "probe-a",
        r#""routes": [{"pop": "de-fra-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 1.0, "loss": 0.2},
                      {"pop": "cn-zj-ct-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 50.0, "loss": 0.0}]"#,
    );
    wait_accepted(&s, 2);
    assert_eq!(
        ask(s.udp, WWW, ZJ_CT),
        [CN_HB_BGP_1],
        "de-fra-1 at 101 ms, cn-zj-ct-1 at 50 ms, cn-hb-bgp-1 estimated 11 ms"
    );
}

#[test]
fn an_overloaded_pop_is_avoided_unless_it_is_the_only_one() {
    let zones = tempfile::tempdir().unwrap();
    let zone = std::fs::read_to_string(repo().join("zones/example.com.yaml")).unwrap()
        + "  only-zj:\n    pops: [cn-zj-ct-1]\n";
    std::fs::write(zones.path().join("example.com.yaml"), zone).unwrap();
    let s = TestServer::start_with(&Setup { zones: zones.path().to_path_buf(), ..Setup::default() });
    let mut f = Feeder::new(&s);
    f.send("probe-a", r#""pops": [{"id": "cn-zj-ct-1", "load": 0.97}]"#);
    wait_accepted(&s, 1);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1], "overloaded: avoided");
    assert_eq!(ask(s.udp, "only-zj.example.com.", ZJ_CT), [CN_ZJ_CT_1], "the only one left: used");
    f.send("probe-a", r#""pops": [{"id": "cn-zj-ct-1", "load": 0.5}]"#);
    wait_accepted(&s, 2);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1], "0.5 load is 15 ms of penalty: 15.1 ms loses to 11.4 ms");
    f.send("probe-a", r#""pops": [{"id": "cn-zj-ct-1", "load": 0.1}]"#);
    wait_accepted(&s, 3);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1], "0.1 load is 3 ms of penalty: still the best");
}

#[test]
fn outside_coverage_a_pop_reported_down_loses_to_one_that_is_up() {
    // Mainland POPs without IPv6: AAAA of a mainland-only name always falls
    // to the last step, any edge POP of the family. There too the healthiest
    // come first: with hk-hkg-1 and jp-tyo-1 (the nearest) reported down, a
    // POP that is up answers, not a down one.
    let dir = tempfile::tempdir().unwrap();
    let pops = pops_without_ipv6(dir.path(), |l| l.contains("country: CN"));
    let s = TestServer::start_with(&Setup { pops, ..Setup::default() });
    let cn = "cn.aliyundoc.com.example.com.";
    let aaaa = |s: &TestServer| addrs(&udp(s.udp, &query_msg(cn, RecordType::AAAA, Some(ZJ_CT))));
    assert_eq!(aaaa(&s), ["2001:db8:100::1"], "hk-hkg-1, the nearest POP with IPv6");
    let mut f = Feeder::new(&s);
    f.send("probe-a", r#""pops": [{"id": "hk-hkg-1", "up": false}, {"id": "jp-tyo-1", "up": false}]"#);
    wait_accepted(&s, 1);
    let got = aaaa(&s);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!["2001:db8:100::1", "2001:db8:120::1"].contains(&got[0].as_str()), "a POP reported down: {got:?}");
    // With every edge POP down, the ladder still answers (health relaxed).
    let outside = "hk-hkg-1 jp-tyo-1 sg-sin-1 in-bom-1 de-fra-1 uk-lon-1 us-east-1 us-west-1 br-sao-1 au-syd-1";
    let all: Vec<String> = outside.split(' ').map(|id| format!(r#"{{"id": "{id}", "up": false}}"#)).collect();
    f.send("probe-a", &format!(r#""pops": [{}]"#, all.join(", ")));
    wait_accepted(&s, 2);
    assert_eq!(aaaa(&s), ["2001:db8:100::1"], "all down: the nearest again");
}

#[test]
fn every_bad_datagram_is_dropped_whole_and_counted_by_reason() {
    let s = TestServer::start();
    let mut f = Feeder::new(&s);
    let key = key_of("probe-a");
    let stats = &s.handle.as_ref().unwrap().shared.feed_stats;
    let published = || stats.published.load(Ordering::Acquire);
    let start_gen = published();
    let down = |ts: u64| format!(r#"{{"ts": {ts}, "pops": [{{"id": "cn-zj-ct-1", "up": false}}]}}"#);
    let signed = |body: &[u8]| feed::encode("probe-a", &key, body);

    // A valid report first, so replay has something to replay.
    let ts0 = f.next_ts();
    let valid0 = signed(format!(r#"{{"ts": {ts0}, "pops": [{{"id": "cn-zj-ct-1", "up": true}}]}}"#).as_bytes());
    f.raw(&valid0);
    wait_accepted(&s, 1);
    let after_valid = published();
    assert!(after_valid > start_gen);

    let now = f.next_ts();
    let mut bad_mac = signed(down(now).as_bytes());
    let last = bad_mac.len() - 2;
    bad_mac[last] ^= 1; // body changed after signing
    let cases: Vec<(Drop, Vec<u8>)> = vec![
        (Drop::Oversize, signed(format!(r#"{{"ts": {now}, "pad": "{}"}}"#, "x".repeat(9000)).as_bytes())),
        (Drop::Malformed, b"popdns1 probe-a".to_vec()),
        (Drop::Malformed, b"garbage without a header line".to_vec()),
        (Drop::Malformed, signed(b"\xff\xfe not utf-8")),
        (Drop::Malformed, signed(b"{\"ts\": 1, ")),
        (Drop::UnknownReporter, feed::encode("probe-zz", &key, down(now).as_bytes())),
        (Drop::BadMac, bad_mac),
        (Drop::BadMac, feed::encode("probe-a", &key_of("probe-b"), down(now).as_bytes())),
        (Drop::Replay, valid0.clone()),
        (Drop::Replay, signed(down(ts0 - 1).as_bytes())),
        (Drop::Skew, signed(down(now + 120_000).as_bytes())),
        (Drop::Invalid, signed(br#"{"pops": [{"id": "cn-zj-ct-1", "up": false}]}"#)),
        (
            Drop::Invalid,
            signed(format!(r#"{{"ts": {now}, "pops": [{{"id": "no-such-pop", "up": false}}]}}"#).as_bytes()),
        ),
        (
            Drop::Invalid,
            signed(format!(r#"{{"ts": {now}, "pops": [{{"id": "cn-zj-ct-1", "load": 1.5}}]}}"#).as_bytes()),
        ),
        (Drop::Invalid, signed(format!(r#"{{"ts": {now}, "pops": [{{"id": "cn-zj-ct-1", "up": "no"}}]}}"#).as_bytes())),
        (
            Drop::Invalid,
            signed(
                format!(
                    r#"{{"ts": {now}, "routes": [{{"pop": "de-fra-1", "group": "cn-zj", "rtt_ms": 1, "loss": 0}}]}}"#
                )
                .as_bytes(),
            ),
        ),
        (
            Drop::Invalid,
            signed(
                format!(r#"{{"ts": {now}, "routes": [{{"pop": "de-fra-1", "group": "*", "rtt_ms": -1, "loss": 0}}]}}"#)
                    .as_bytes(),
            ),
        ),
        (
            Drop::Invalid,
            signed(
                format!(
                    r#"{{"ts": {now}, "routes": [{{"pop": "de-fra-1", "group": "*", "rtt_ms": 1, "loss": 1.5}}]}}"#
                )
                .as_bytes(),
            ),
        ),
        // Groups of well-formed names that no place in the location database
        // has: no client could be in them, and inventing them would grow the
        // writer's tables without bound.
        (
            Drop::Invalid,
            signed(
                format!(r#"{{"ts": {now}, "routes": [{{"pop": "de-fra-1", "group": "ZZ-ZZZ", "rtt_ms": 1, "loss": 0}}]}}"#)
                    .as_bytes(),
            ),
        ),
        (
            Drop::Invalid,
            signed(
                format!(r#"{{"ts": {now}, "routes": [{{"pop": "de-fra-1", "group": "QQ/other", "rtt_ms": 1, "loss": 0}}]}}"#)
                    .as_bytes(),
            ),
        ),
        // One POP twice: it would count as two reports in a row.
        (
            Drop::Invalid,
            signed(
                format!(
                    r#"{{"ts": {now}, "pops": [{{"id": "cn-zj-ct-1", "up": false}}, {{"id": "cn-zj-ct-1", "up": false}}]}}"#
                )
                .as_bytes(),
            ),
        ),
        // Half valid: one good POP entry and one bad one. Nothing of it may apply.
        (
            Drop::Invalid,
            signed(
                format!(
                    r#"{{"ts": {now}, "pops": [{{"id": "cn-zj-ct-1", "up": false}}, {{"id": "nope", "up": false}}]}}"#
                )
                .as_bytes(),
            ),
        ),
    ];
    let mut expected = [0u64; 8];
    for (reason, d) in &cases {
        f.raw(d);
        expected[*reason as usize] += 1;
        wait_dropped(&s, *reason, expected[*reason as usize]);
    }
    assert_eq!(stats.accepted.load(Ordering::Acquire), 1, "nothing bad was accepted");
    assert_eq!(published(), after_valid, "no bad datagram published a table");
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_ZJ_CT_1], "nothing bad changed an answer");

    // The listener is alive and a valid report still applies (first down flips
    // nothing: down_after 2 after a first report).
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    f.send("probe-a", &pop_state("cn-zj-ct-1", false));
    wait_accepted(&s, 3);
    assert_eq!(ask(s.udp, WWW, ZJ_CT), [CN_HB_BGP_1]);
}

#[test]
fn rate_limit_drops_reports_beyond_the_reporter_budget() {
    let s = TestServer::start_with(&Setup { feed_extra: "  max_reports_per_second: 5\n".into(), ..Setup::default() });
    let mut f = Feeder::new(&s);
    for _ in 0..10 {
        f.send("probe-a", r#""pops": [{"id": "de-fra-1", "load": 0.1}]"#);
    }
    wait_dropped(&s, Drop::Rate, 1);
    let stats = &s.handle.as_ref().unwrap().shared.feed_stats;
    wait_accepted(&s, 5);
    let accepted = stats.accepted.load(Ordering::Acquire);
    assert!((5..=6).contains(&accepted), "accepted {accepted} of a burst of 10 at 5/s");
}

#[test]
fn popdns_feed_and_explain_server_round_trip() {
    let s = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("probe-a.key");
    std::fs::write(&key, format!("{}\n", TEST_REPORTERS[0].1)).unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(
        &report,
        r#"{"pops": [{"id": "cn-zj-ct-1", "up": false}],
            "routes": [{"pop": "cn-hb-bgp-1", "group": "CN-ZJ", "rtt_ms": 7.5, "loss": 0.01}]}"#,
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_popdns");
    let st = std::process::Command::new(bin)
        .args(["feed", "--to", &s.feed.unwrap().to_string(), "--reporter", "probe-a", "--key"])
        .arg(&key)
        .arg(&report)
        .status()
        .unwrap();
    assert!(st.success());
    wait_accepted(&s, 1);
    let out = std::process::Command::new(bin)
        .args(["explain", WWW, "--client", "192.0.2.1", "--ecs", ZJ_CT, "--json", "--server"])
        .arg(format!("http://{}", s.http.unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cand = |id: &str| v["candidates"].as_array().unwrap().iter().find(|c| c["pop"] == id).unwrap().clone();
    assert_eq!(cand("cn-zj-ct-1")["health"], "down");
    assert_eq!(cand("cn-zj-ct-1")["removed_by"], "health");
    assert_eq!(cand("cn-hb-bgp-1")["group"], "CN-ZJ");
    assert_eq!(cand("cn-hb-bgp-1")["estimated"], false);
    assert_eq!(cand("cn-hb-bgp-1")["rtt_ms"], 7.5);
    assert_eq!(cand("de-fra-1")["health"], "unknown");
    assert_eq!(v["pops"], serde_json::json!(["cn-hb-bgp-1"]));
    assert_eq!(v["answer"], serde_json::json!([CN_HB_BGP_1]));
    assert_eq!(v["client"]["source"], "ecs");
    assert_eq!(v["scope"], 16);
}

#[test]
fn popdns_feed_refuses_what_every_server_would_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (good, short) = (dir.path().join("good.key"), dir.path().join("short.key"));
    std::fs::write(&good, format!("{}\n", TEST_REPORTERS[0].1)).unwrap();
    std::fs::write(&short, "0011\n").unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(&report, r#"{"pops": [{"id": "cn-zj-ct-1", "up": true}]}"#).unwrap();
    for (reporter, key, message) in [
        ("probe a", &good, "must match [A-Za-z0-9._-]+"),
        ("", &good, "must match [A-Za-z0-9._-]+"),
        ("probe-a", &short, "shorter than 16 bytes"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_popdns"))
            .args(["feed", "--to", "127.0.0.1:9", "--reporter", reporter, "--key"])
            .arg(key)
            .arg(&report)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{reporter:?}: {err}");
        assert!(err.contains(message), "{reporter:?}: {err}");
    }
}

#[test]
fn a_thousand_reports_a_second_while_queries_run_never_half_applied() {
    // One fast reporter flips between two complete states; 19 others add load
    // reports. State X: de-fra-1 1 ms, us-west-1 100 ms; state Y: the reverse;
    // cn-zj-ct-1 at 50 ms in both. A half-applied report would leave both at
    // 1 ms or both at 100 ms, and then a third POP (cn-hb-bgp-1, estimated
    // 11 ms) or a spread would show up.
    let s = TestServer::start_with(&Setup {
        feed_extra: "  max_reports_per_second: 2000\n".into(),
        extra_reporters: 19,
        ..Setup::default()
    });
    let feed_to = s.feed.unwrap();
    let dns = s.udp;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let sender = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let keys: Vec<Vec<u8>> = (0..19).map(|i| feed::decode_hex(&reporter_key(i)).unwrap()).collect();
        let main_key = key_of("probe-a");
        let mut ts = [0u64; 20];
        let mut sent = 0u64;
        let started = Instant::now();
        // 1,000 reports/s for 3 s: the fast reporter half, the rest spread over 19.
        while started.elapsed() < Duration::from_secs(3) {
            let due = (started.elapsed().as_secs_f64() * 1000.0) as u64;
            while sent < due {
                let i = if sent.is_multiple_of(2) { 19 } else { (sent / 2 % 19) as usize };
                ts[i] = feed::now_ms().max(ts[i] + 1);
                let d = if i == 19 {
                    let (fra, usw) = if (sent / 2).is_multiple_of(2) { (1.0, 100.0) } else { (100.0, 1.0) };
                    let body = format!(
                        r#"{{"ts": {}, "routes": [{{"pop": "de-fra-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": {fra}, "loss": 0}},
                        {{"pop": "us-west-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": {usw}, "loss": 0}},
                        {{"pop": "cn-zj-ct-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 50, "loss": 0}}]}}"#,
                        ts[i]
                    );
                    feed::encode("probe-a", &main_key, body.as_bytes())
                } else {
                    let body = format!(
                        r#"{{"ts": {}, "pops": [{{"id": "jp-tyo-1", "up": true, "load": 0.{}}}]}}"#,
                        ts[i],
                        sent % 9
                    );
                    feed::encode(&format!("probe-{i}"), &keys[i], body.as_bytes())
                };
                sock.send_to(&d, feed_to).unwrap();
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        stop2.store(true, Ordering::Relaxed);
        sent
    });
    let mut answered = 0u64;
    let mut seen = std::collections::BTreeMap::new();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(10) {
        let m = udp(dns, &query_msg(WWW, hickory_proto::rr::RecordType::A, Some(ZJ_CT)));
        let a = addrs(&m);
        assert_eq!(a.len(), 1, "{m:?}");
        *seen.entry(a[0].clone()).or_insert(0u64) += 1;
        answered += 1;
    }
    let sent = sender.join().unwrap();
    eprintln!("sent {sent} reports, answered {answered} queries: {seen:?}");
    let stats = &s.handle.as_ref().unwrap().shared.feed_stats;
    let accepted = stats.accepted.load(Ordering::Acquire);
    let dropped = stats.dropped_total();
    assert!(sent >= 2900, "the sender kept up: {sent}");
    assert_eq!(dropped, 0, "no report was dropped");
    assert!(accepted >= sent * 9 / 10, "accepted {accepted} of {sent} (socket buffer overflow?)");
    assert!(answered > 100, "queries ran: {answered}");
    for a in seen.keys() {
        assert!(a == DE_FRA_1 || a == "203.0.113.40" || a == CN_ZJ_CT_1, "answer {a} from no complete state");
    }
}
