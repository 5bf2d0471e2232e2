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

/// A temporary folder holding a copy of the shipped `file` (repo-relative)
/// under its base name; the folder, the copy's path and the shipped text.
fn shipped_copy(file: &str) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(std::path::Path::new(file).file_name().unwrap());
    let shipped = std::fs::read_to_string(repo().join(file)).unwrap();
    std::fs::write(&copy, &shipped).unwrap();
    (dir, copy, shipped)
}

/// Send one report (`ts` and the rest of its body: `fields`) as the first
/// test reporter, the server's first, and wait until it is accepted.
fn report_as_probe_a(s: &TestServer, fields: &str, deadline: Instant) {
    let (id, hex) = TEST_REPORTERS[0];
    let body = format!(r#"{{"ts": {}, {fields}}}"#, feed::now_ms());
    let datagram = feed::encode(id, &feed::decode_hex(hex).unwrap(), body.as_bytes());
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&datagram, s.feed.unwrap()).unwrap();
    let accepted = &s.handle.as_ref().unwrap().shared.feed_stats.accepted;
    while accepted.load(Ordering::Acquire) < 1 {
        assert!(Instant::now() < deadline, "the report was not accepted");
        std::thread::yield_now();
    }
}

/// Reload, then wait until the feed writer has published a table for the
/// new config (it remaps its data then).
fn reload_and_wait_for_the_writer(s: &TestServer, deadline: Instant) {
    let h = s.handle.as_ref().unwrap();
    let published = h.shared.feed_stats.published.load(Ordering::Acquire);
    h.reload(&s.config).unwrap();
    while h.shared.feed_stats.published.load(Ordering::Acquire) <= published {
        assert!(Instant::now() < deadline, "the writer did not publish after the reload");
        std::thread::yield_now();
    }
}

/// The POP lines of pops.yaml in reverse order: every POP index moves.
fn reversed_pops(shipped: &str) -> String {
    let mut lines: Vec<&str> = shipped.lines().filter(|l| l.starts_with("- ")).collect();
    lines.reverse();
    lines.join("\n") + "\n"
}

#[test]
fn invalid_reload_keeps_old_answers_and_a_valid_one_applies() {
    let (zones, zone_file, shipped) = shipped_copy("zones/example.com.yaml");
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
    let (_dir, pops, shipped) = shipped_copy("pops.yaml");
    let s = TestServer::start_with(&Setup { pops: pops.clone(), ..Setup::default() });
    let deadline = Instant::now() + Duration::from_secs(5);
    report_as_probe_a(
        &s,
        r#""routes": [{"pop": "de-fra-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 1, "loss": 0},
        {"pop": "cn-zj-ct-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 50, "loss": 0}],
        "pops": [{"id": "cn-sh-cu-1", "up": false}]"#,
        deadline,
    );
    assert_eq!(ask(s.udp, WWW, "115.236.1.0/24"), ["203.0.113.10"]);
    // Shanghai Unicom's own POP is down: its clients go elsewhere.
    let shanghai = ask(s.udp, WWW, "58.246.1.0/24");
    assert!(!shanghai.is_empty() && !shanghai.contains(&"192.0.2.21".to_string()), "{shanghai:?}");

    // Reverse the POP list: every index moves. The writer maps its data again.
    std::fs::write(&pops, reversed_pops(&shipped)).unwrap();
    reload_and_wait_for_the_writer(&s, deadline);
    assert_eq!(ask(s.udp, WWW, "115.236.1.0/24"), ["203.0.113.10"], "still de-fra-1, at its new index");
    assert_eq!(ask(s.udp, WWW, "58.246.1.0/24"), shanghai, "cn-sh-cu-1 still down, at its new index");
}

#[test]
fn until_the_writer_remaps_queries_read_the_table_of_the_config_before() {
    // Between a reload and the feed writer's first publish for the new
    // config (up to its 5 ms publish gap), the table in place is indexed by
    // the replaced config's POP ids. The new snapshot translates them, so a
    // POP reported down stays down and measured routes still count in that
    // window, with every POP index moved.
    use popdns::pops::{Family, Health};
    use popdns::quality::{GroupKey, PopState, Quality, Route};
    use popdns::scheduler::{self, Client};

    let (dir, pops_file, shipped) = shipped_copy("pops.yaml");
    let config = Setup { pops: pops_file.clone(), ..Setup::default() }.write(dir.path());
    let a = popdns::config::load(&config).unwrap();
    let id = |snap: &popdns::config::Snapshot, pop: &str| snap.pops.find(pop).unwrap().0 as usize;

    // A's table: cn-zj-ct-1 down; one with de-fra-1 measured at 1 ms for ZJ Telecom too.
    let mut states = vec![PopState::default(); a.pops.len()];
    states[id(&a, "cn-zj-ct-1")].health = Health::Down;
    let down = Quality { generation: 1, config_generation: a.generation, pops: states.clone(), ..Default::default() };
    let mut row = vec![None; a.pops.len()];
    row[id(&a, "de-fra-1")] = Some(Route { rtt_ms: 1.0, loss: 0.0 });
    let mut routes = popdns::quality::table::RouteRows::default();
    routes.insert(GroupKey::parse("CN-ZJ/chinatelecom", &a.isps).unwrap(), row.into());
    let measured = Quality { generation: 2, config_generation: a.generation, pops: states, routes };

    // B: the same POPs in reverse order.
    std::fs::write(&pops_file, reversed_pops(&shipped)).unwrap();
    let b = popdns::config::load_after(&config, Some(&a)).unwrap();
    assert_ne!(id(&a, "cn-zj-ct-1"), id(&b, "cn-zj-ct-1"));

    let answer = |snap: &popdns::config::Snapshot, table: &Quality| {
        let client = Client::from_ecs(snap, "115.236.1.0".parse().unwrap(), 24);
        let name = snap.zones.sched(snap.zones.find_scheduled("www.aliyundoc.com.example.com").unwrap());
        let d = scheduler::decide(snap, table, &client, name, Family::V4, &mut Vec::new());
        d.pops().iter().map(|p| snap.pops.get(*p).id.clone()).collect::<Vec<_>>()
    };
    let fresh = Quality { config_generation: b.generation, ..Default::default() };
    assert_eq!(answer(&b, &fresh), ["cn-zj-ct-1"], "with no data the ZJ Telecom client gets its own POP");
    assert_eq!(answer(&a, &down), ["cn-hb-bgp-1"], "cn-zj-ct-1 down: the next nearest");
    assert_eq!(answer(&b, &down), ["cn-hb-bgp-1"], "B reads A's table: cn-zj-ct-1 is still down");
    assert_eq!(answer(&a, &measured), ["de-fra-1"]);
    assert_eq!(answer(&b, &measured), ["de-fra-1"], "B reads A's route rows at the moved indices");
    // A table two configs old is not read: its ids are not known.
    let c = popdns::config::load_after(&config, Some(&b)).unwrap();
    assert_eq!(answer(&c, &down), ["cn-zj-ct-1"]);
}

#[test]
fn a_reload_that_revokes_a_key_ends_what_its_reporter_said() {
    let s = TestServer::start();
    let id = TEST_REPORTERS[0].0;
    let deadline = Instant::now() + Duration::from_secs(5);
    report_as_probe_a(
        &s,
        r#""pops": [{"id": "cn-zj-ct-1", "up": false}],
        "routes": [{"pop": "de-fra-1", "group": "CN-ZJ/chinatelecom", "rtt_ms": 1, "loss": 0}]"#,
        deadline,
    );
    assert_eq!(ask(s.udp, WWW, "115.236.1.0/24"), ["203.0.113.10"], "de-fra-1, measured at 1 ms");

    // The key is taken out: at the reload, what its reporter said ends.
    let keys_file = s.config.parent().unwrap().join("feed-keys.yaml");
    let keys = std::fs::read_to_string(&keys_file).unwrap();
    let kept: String = keys.lines().filter(|l| !l.starts_with(&format!("{id}:"))).map(|l| format!("{l}\n")).collect();
    assert!(kept.len() < keys.len() && !kept.is_empty());
    std::fs::write(&keys_file, kept).unwrap();
    reload_and_wait_for_the_writer(&s, deadline);
    assert_eq!(ask(s.udp, WWW, "115.236.1.0/24"), ["192.0.2.10"], "cn-zj-ct-1 again: no data from the revoked key");
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

    // A copy renamed over it with the size and mtime of the file it
    // replaces (as cp -p or rsync -t keep them): another file, so compiled
    // again, though size and mtime say nothing changed.
    let mtime = std::fs::metadata(&city).unwrap().modified().unwrap();
    let tmp = dir.path().join("city.mmdb.same");
    std::fs::copy(&city, &tmp).unwrap();
    std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
    std::fs::rename(&tmp, &city).unwrap();
    h.reload(&s.config).unwrap();
    let copied = h.shared.snapshot.load_full();
    assert!(!std::sync::Arc::ptr_eq(&after.geo, &copied.geo), "same size and mtime, new file: compiled again");
}
