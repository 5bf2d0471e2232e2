//! Reload (SIGHUP in `serve`): a valid config is swapped in whole, an invalid
//! one leaves the running snapshot serving, and route-quality data survives a
//! reload that moves POP indices.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use popdns::quality::feed;

const WWW: &str = "www.aliyundoc.com.example.com.";

#[test]
fn invalid_reload_keeps_old_answers_and_a_valid_one_applies() {
    let zones = tempfile::tempdir().unwrap();
    let zone_file = zones.path().join("example.com.yaml");
    let shipped = std::fs::read_to_string(repo().join("zones/example.com.yaml")).unwrap();
    std::fs::write(&zone_file, &shipped).unwrap();
    let s = TestServer::start_with(&Setup { zones: zones.path().to_path_buf(), ..Setup::default() });
    let h = s.handle.as_ref().unwrap();
    let mail = || addrs(&udp(s.udp, &query_msg("mail.example.com.", RecordType::A, None)));
    assert_eq!(mail(), ["192.0.2.25"]);

    // A broken zone file: the reload fails with its line, the old data serves.
    std::fs::write(&zone_file, shipped.replace("mail: {A: [192.0.2.25]}", "mail: {A: [2001:db8::25]}")).unwrap();
    let err = h.reload(&s.config).unwrap_err().to_string();
    assert!(err.contains("example.com.yaml:") && err.contains("IPv4"), "{err}");
    assert_eq!(mail(), ["192.0.2.25"]);

    // A valid change applies at once.
    std::fs::write(&zone_file, shipped.replace("mail: {A: [192.0.2.25]}", "mail: {A: [192.0.2.26]}")).unwrap();
    h.reload(&s.config).unwrap();
    assert_eq!(mail(), ["192.0.2.26"]);
}

#[test]
fn route_data_follows_its_pop_across_a_reload_that_reorders_pops() {
    let dir = tempfile::tempdir().unwrap();
    let pops = dir.path().join("pops.yaml");
    let shipped = std::fs::read_to_string(repo().join("pops.yaml")).unwrap();
    std::fs::write(&pops, &shipped).unwrap();
    let s = TestServer::start_with(&Setup { pops: pops.clone(), ..Setup::default() });
    let h = s.handle.as_ref().unwrap();
    let key = feed::decode_hex(TEST_REPORTERS[0].1).unwrap();
    let body = format!(
        r#"{{"ts": {}, "routes": [{{"pop": "de-fra-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 1, "loss": 0}},
        {{"pop": "cn-zj-ct-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 50, "loss": 0}}],
        "pops": [{{"id": "cn-sh-cu-1", "up": false}}]}}"#,
        feed::now_ms()
    );
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(&feed::encode(TEST_REPORTERS[0].0, &key, body.as_bytes()), s.feed.unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.shared.feed_stats.accepted.load(Ordering::Acquire) < 1 {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    assert_eq!(ask(s.udp, WWW, "115.236.1.0/24"), ["203.0.113.10"]);
    // Shanghai Unicom's own POP is down: its clients go elsewhere.
    let shanghai = ask(s.udp, WWW, "58.246.1.0/24");
    assert!(!shanghai.is_empty() && !shanghai.contains(&"192.0.2.21".to_string()), "{shanghai:?}");

    // Reverse the POP list: every index moves. The writer maps its data again.
    let mut lines: Vec<&str> = shipped.lines().filter(|l| l.starts_with("- ")).collect();
    lines.reverse();
    std::fs::write(&pops, lines.join("\n") + "\n").unwrap();
    let published = h.shared.feed_stats.published.load(Ordering::Acquire);
    h.reload(&s.config).unwrap();
    while h.shared.feed_stats.published.load(Ordering::Acquire) <= published {
        assert!(Instant::now() < deadline, "the writer republished after the reload");
        std::thread::yield_now();
    }
    assert_eq!(ask(s.udp, WWW, "115.236.1.0/24"), ["203.0.113.10"], "still de-fra-1, at its new index");
    assert_eq!(ask(s.udp, WWW, "58.246.1.0/24"), shanghai, "cn-sh-cu-1 still down, at its new index");
}

#[test]
fn a_reload_reuses_the_compiled_databases_unless_their_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    std::fs::copy(repo().join("geo/demo-city.mmdb"), &city).unwrap();
    let s = TestServer::start_with(&Setup { city: city.clone(), ..Setup::default() });
    let h = s.handle.as_ref().unwrap();
    let before = h.shared.snapshot.load_full();

    h.reload(&s.config).unwrap();
    let same = h.shared.snapshot.load_full();
    assert!(same.generation > before.generation, "a new generation");
    assert!(std::sync::Arc::ptr_eq(&before.geo, &same.geo), "unchanged files: the cell table is reused");

    // A rebuilt database (one more network): compiled again, and it answers.
    let csv = std::fs::read_to_string(repo().join("geo/demo-city.csv")).unwrap()
        + "198.18.0.0/15,DE,HE,EU,50.1155,8.6842,Frankfurt am Main\n";
    let csv_path = dir.path().join("city.csv");
    std::fs::write(&csv_path, csv).unwrap();
    // Replaced the way operators must (write, then rename): the old file stays mapped.
    let tmp = dir.path().join("city.mmdb.new");
    std::fs::write(&tmp, popdns::geo::build::city_db(&csv_path).unwrap()).unwrap();
    std::fs::rename(&tmp, &city).unwrap();
    h.reload(&s.config).unwrap();
    let after = h.shared.snapshot.load_full();
    assert!(!std::sync::Arc::ptr_eq(&same.geo, &after.geo), "changed file: compiled again");
    assert_eq!(ask(s.udp, WWW, "198.18.1.0/24"), ["203.0.113.10"], "the new network is in Frankfurt");
}
