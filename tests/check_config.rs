//! `popdns check` (contract.md, "Command line"): the real binary on the shipped
//! config, and on copies with one mistake each: exit 1 and `file:line: message`
//! naming the file and line of the mistake.

mod common;
use common::{real_geo, repo};

use std::path::{Path, PathBuf};
use std::process::Command;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(config: &Path) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_popdns"))
        .args(["check", "-c"])
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .expect("run popdns");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("`{needle}` not in the text")) + 1
}

/// A copy of the shipped configuration in a temporary folder, the geo paths
/// made absolute (pointing at the repo's demo databases).
struct Copy {
    dir: tempfile::TempDir,
}

impl Copy {
    fn new() -> Copy {
        let dir = tempfile::tempdir().unwrap();
        let r = repo();
        let main = std::fs::read_to_string(r.join("popdns.yaml")).unwrap();
        let geo = r.join("geo").canonicalize().unwrap();
        let main = main
            .replace("geo/demo-city.mmdb", &geo.join("demo-city.mmdb").display().to_string())
            .replace("geo/demo-asn.mmdb", &geo.join("demo-asn.mmdb").display().to_string());
        assert!(main.contains(&geo.display().to_string()), "the shipped popdns.yaml no longer names geo/demo-*.mmdb");
        std::fs::write(dir.path().join("popdns.yaml"), main).unwrap();
        for f in ["pops.yaml", "feed-keys.yaml"] {
            std::fs::copy(r.join(f), dir.path().join(f)).unwrap();
        }
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::copy(r.join("zones/example.com.yaml"), dir.path().join("zones/example.com.yaml")).unwrap();
        Copy { dir }
    }
    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }
    /// Replace `from` (which must occur) by `to` in `file`; the new text.
    fn edit(&self, file: &str, from: &str, to: &str) -> String {
        let text = self.read(file);
        assert!(text.contains(from), "`{from}` not in {file}");
        let text = text.replacen(from, to, 1);
        std::fs::write(self.path(file), &text).unwrap();
        text
    }
    fn append(&self, file: &str, more: &str) -> String {
        let mut text = self.read(file);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(more);
        std::fs::write(self.path(file), &text).unwrap();
        text
    }
    fn check(&self) -> Outcome {
        check(&self.path("popdns.yaml"))
    }
}

/// Exit 1, and stderr names `file:line:` followed (on the same line) by `message`.
fn assert_error(c: &Copy, file: &str, line: usize, message: &str) {
    let out = c.check();
    let at = format!("{}:{}: ", c.path(file).display(), line);
    assert_eq!(out.code, Some(1), "exit code; stderr:\n{}", out.stderr);
    let hit = out.stderr.lines().find(|l| l.contains(&at));
    let hit = hit.unwrap_or_else(|| panic!("stderr does not name `{at}`; stderr:\n{}", out.stderr));
    assert!(hit.contains(message), "`{at}` found, but not `{message}`: {hit}");
}

#[test]
fn the_shipped_config_is_accepted_with_the_demo_key_warning() {
    let config = repo().join("popdns.yaml");
    let out = check(&config);
    assert_eq!(out.code, Some(0), "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.trim().is_empty(), "no summary on stdout");
    let keys = std::fs::read_to_string(repo().join("feed-keys.yaml")).unwrap();
    let line = line_of(&keys, "demo-probe:");
    let want = format!("feed-keys.yaml:{line}: warning:");
    assert!(out.stderr.contains(&want), "no `{want}` on stderr:\n{}", out.stderr);
    // The copy every other test starts from is valid too.
    let c = Copy::new();
    let out = c.check();
    assert_eq!(out.code, Some(0), "the copied config fails:\n{}", out.stderr);
    assert!(out.stderr.contains(&format!("{}:{line}: warning:", c.path("feed-keys.yaml").display())), "{}", out.stderr);
}

#[test]
fn a_wildcard_dns_address_is_warned_about() {
    let c = Copy::new();
    let text = c.edit("popdns.yaml", "\"127.0.0.1:5300\", ", "\"0.0.0.0:5300\", ");
    let out = c.check();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let want = format!(
        "{}:{}: warning: `0.0.0.0:5300` is a wildcard address",
        c.path("popdns.yaml").display(),
        line_of(&text, "0.0.0.0")
    );
    assert!(out.stderr.contains(&want), "no `{want}` on stderr:\n{}", out.stderr);
    assert!(!Copy::new().check().stderr.contains("wildcard"), "the shipped addresses are warned about");
}

#[test]
fn ns_mx_and_srv_targets_must_not_be_aliases() {
    // RFC 2181 §10.3: www.example.com is a CNAME in the shipped zone.
    for (from, to, tname) in [
        ("MX: [\"10 mail.example.com\"]", "MX: [\"10 www.example.com\"]", "MX"),
        ("NS: [ns1.example.com, ns2.example.com]", "NS: [ns1.example.com, www.example.com]", "NS"),
        ("SRV: [\"10 5 5060 sip.example.com\"]", "SRV: [\"10 5 5060 www.example.com\"]", "SRV"),
    ] {
        let c = Copy::new();
        let text = c.edit("zones/example.com.yaml", from, to);
        let message = format!("{tname} target `www.example.com.` is an alias");
        assert_error(&c, "zones/example.com.yaml", line_of(&text, to), &message);
    }
}

#[test]
fn reporter_ids_are_listed_once_and_secrets_are_not_shared() {
    let k1 = "00112233445566778899aabbccddeeff";
    let k2 = "ffeeddccbbaa99887766554433221100";
    for (keys, message) in [
        (format!("a: \"{k1}\"\nb: \"{k2}\"\na: \"{k2}\"\n"), "reporter id `a` is listed twice"),
        (format!("a: \"{k1}\"\nb: \"{k2}\"\nc: \"{k1}\"\n"), "reporters `a` and `c` share a secret"),
        // Hex case does not make two secrets.
        (format!("a: \"{k1}\"\nc: \"{}\"\n", k1.to_uppercase()), "reporters `a` and `c` share a secret"),
    ] {
        let c = Copy::new();
        std::fs::write(c.path("feed-keys.yaml"), &keys).unwrap();
        let out = c.check();
        assert_eq!(out.code, Some(1), "{keys}: {}", out.stderr);
        let at = format!("{}:", c.path("feed-keys.yaml").display());
        assert!(out.stderr.lines().any(|l| l.contains(&at) && l.contains(message)), "{keys}: {}", out.stderr);
    }
    let c = Copy::new();
    std::fs::write(c.path("feed-keys.yaml"), format!("a: \"{k1}\"\nb: \"{k2}\"\n")).unwrap();
    assert_eq!(c.check().code, Some(0));
}

#[test]
fn max_datagram_outside_what_a_datagram_can_be_is_an_error() {
    for n in ["10", "127", "65508", "100000"] {
        let c = Copy::new();
        let text = c.append("popdns.yaml", "");
        let text = if text.contains("  max_datagram:") {
            let from = text.lines().find(|l| l.starts_with("  max_datagram:")).unwrap().to_string();
            c.edit("popdns.yaml", &from, &format!("  max_datagram: {n}"))
        } else {
            c.edit("popdns.yaml", "feed:\n", &format!("feed:\n  max_datagram: {n}\n"))
        };
        assert_error(&c, "popdns.yaml", line_of(&text, "max_datagram"), "is not 128..65507");
    }
}

#[test]
fn max_skew_longer_than_stale_after_is_warned_about() {
    let c = Copy::new();
    let text = c.read("popdns.yaml");
    let from = text.lines().find(|l| l.trim_start().starts_with("max_skew:")).unwrap().to_string();
    let text = c.edit("popdns.yaml", &from, "  max_skew: 90s");
    let out = c.check();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let want =
        format!("{}:{}: warning: `max_skew` is longer", c.path("popdns.yaml").display(), line_of(&text, "max_skew"));
    assert!(out.stderr.contains(&want), "no `{want}` on stderr:\n{}", out.stderr);
    assert!(!Copy::new().check().stderr.contains("max_skew"), "the shipped values are warned about");
}

#[test]
fn check_into_a_closed_pipe_ends_quietly() {
    // `popdns check | head -0`: the reader is gone before the first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_popdns"))
        .args(["check", "-c"])
        .arg(repo().join("popdns.yaml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert!(out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE), "{:?}: {err}", out.status);
}

#[test]
fn a_sighup_while_the_server_starts_does_not_stop_it() {
    // A deploy may push a config and signal a server that is still loading:
    // with the real databases, loading takes a second or more.
    let Some((city, asn)) = real_geo() else { return };
    let c = Copy::new();
    let geo = repo().join("geo").canonicalize().unwrap();
    c.edit("popdns.yaml", &geo.join("demo-city.mmdb").display().to_string(), &city.display().to_string());
    c.edit("popdns.yaml", &geo.join("demo-asn.mmdb").display().to_string(), &asn.display().to_string());
    let text = c.read("popdns.yaml");
    let listen = text.lines().find(|l| l.trim_start().starts_with("dns:")).unwrap().to_string();
    c.edit("popdns.yaml", &listen, "  dns: [\"127.0.0.1:0\"]");
    for key in ["feed:", "http:"] {
        let line = c.read("popdns.yaml").lines().find(|l| l.starts_with(&format!("  {key}"))).unwrap().to_string();
        c.edit("popdns.yaml", &line, &format!("  {key} \"127.0.0.1:0\""));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popdns"));
    cmd.args(["serve", "-c"]).arg(c.path("popdns.yaml"));
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    // The server starts with SIGHUP's default action, whatever this test
    // runner was started with (a child inherits an ignored signal).
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let sighup_in = |field: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mask = status.lines().find_map(|l| l.strip_prefix(field)).map(str::trim).unwrap_or("0");
        u64::from_str_radix(mask, 16).unwrap_or(0) & (1 << (libc::SIGHUP - 1)) != 0
    };
    // From when the server has set SIGHUP aside (/proc shows it ignored;
    // before that the process is still being exec'd, not the window in
    // question) through the load, until its reload handler is in place.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !sighup_in("SigIgn:") {
        assert!(std::time::Instant::now() < deadline, "SIGHUP never set aside during start-up");
        assert!(child.try_wait().unwrap().is_none(), "the server ended before loading");
    }
    let mut sent = 0;
    while !sighup_in("SigCgt:") {
        assert!(std::time::Instant::now() < deadline, "no SIGHUP handler after 30 s");
        // SAFETY: signals our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        sent += 1;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(sent > 10, "only {sent} signals during the load");
    let alive = child.try_wait().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(alive.is_none(), "the server ended on a SIGHUP: {alive:?}\n{err}");
    assert_eq!(out.status.code(), Some(0), "{:?}\n{err}", out.status);
}

#[test]
fn a_config_file_that_is_not_a_regular_file_is_refused_at_once() {
    // A FIFO would block the load (a reload, and shutdown with it) until
    // something wrote to it; /dev/zero would be read until memory ran out.
    for special in ["fifo", "/dev/zero"] {
        let c = Copy::new();
        let pops = c.path("pops.yaml");
        std::fs::remove_file(&pops).unwrap();
        if special == "fifo" {
            let path = std::ffi::CString::new(pops.to_str().unwrap()).unwrap();
            // SAFETY: a valid C string; creates a FIFO in our temporary folder.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        } else {
            std::os::unix::fs::symlink(special, &pops).unwrap();
        }
        // Under `timeout`: a load that blocks fails the test (exit 124), not hangs it.
        let out = Command::new("timeout")
            .args(["20", env!("CARGO_BIN_EXE_popdns"), "check", "-c"])
            .arg(c.path("popdns.yaml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{special}: {err}");
        assert!(err.contains("not a regular file"), "{special}: {err}");
    }
}

#[test]
fn configs_that_could_never_answer_or_never_keep_feed_data_are_errors() {
    // No edge POP with an address: every scheduled name would be NODATA.
    for pops in
        ["[]\n", "# nothing\n", "- {id: l2, country: CN, coords: [31.2, 121.5], ipv4: [192.0.2.9], tier: regional}\n"]
    {
        let c = Copy::new();
        std::fs::write(c.path("pops.yaml"), pops).unwrap();
        let out = c.check();
        assert_eq!(out.code, Some(1), "{pops}: {}", out.stderr);
        assert!(out.stderr.contains("no edge POP with an address"), "{pops}: {}", out.stderr);
    }
    // An empty RRset.
    let c = Copy::new();
    let text = c.edit("zones/example.com.yaml", "mail: {A: [192.0.2.25]}", "mail: {A: []}");
    assert_error(&c, "zones/example.com.yaml", line_of(&text, "mail: {A: []}"), "`A` needs at least one value");
    // Feed durations of 0.
    for key in ["stale_after", "max_skew"] {
        let c = Copy::new();
        let from =
            c.read("popdns.yaml").lines().find(|l| l.trim_start().starts_with(&format!("{key}:"))).unwrap().to_string();
        let text = c.edit("popdns.yaml", &from, &format!("  {key}: 0s"));
        assert_error(&c, "popdns.yaml", line_of(&text, &format!("{key}: 0s")), "must be longer than 0");
    }
}

#[test]
fn yaml_aliases_that_expand_beyond_a_bound_are_refused() {
    // Each level holds ten of the one below: l5 stands for over a million
    // nodes, so its aliases pass the bound.
    let mut zone = String::from(
        "zone: example.com\nsoa: {mname: ns1.example.com, rname: h.example.com, serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 1}\nrecords:\n",
    );
    zone += "  l0: {TXT: &l0 [a, a, a, a, a, a, a, a, a, a]}\n";
    for i in 1..=5 {
        let p = i - 1;
        zone +=
            &format!("  l{i}: {{TXT: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]}}\n");
    }
    let c = Copy::new();
    std::fs::write(c.path("zones/example.com.yaml"), &zone).unwrap();
    assert_error(&c, "zones/example.com.yaml", line_of(&zone, "  l5:"), "YAML aliases here expand to more than");
    // An anchor used a few times, as for a shared POP list, is fine.
    let c = Copy::new();
    c.append(
        "zones/example.com.yaml",
        "  shared-a:\n    pops: &two [cn-zj-ct-1, cn-hb-bgp-1]\n  shared-b:\n    pops: *two\n",
    );
    let out = c.check();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn flow_collections_nested_past_a_bound_are_refused_at_once() {
    // The YAML parser's time grows with the square of the depth.
    let c = Copy::new();
    let text = c.append("popdns.yaml", &format!("x: {}{}\n", "[".repeat(5000), "]".repeat(5000)));
    assert_error(&c, "popdns.yaml", line_of(&text, "x: [["), "nested deeper than 256");
    // Brackets in quoted strings and comments do not count.
    let c = Copy::new();
    let deep = "[".repeat(300);
    c.edit(
        "zones/example.com.yaml",
        "records:\n",
        &format!("records:\n  quoted: {{TXT: [\"{deep}\", '{deep}']}}  # {deep}\n"),
    );
    let out = c.check();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn a_name_type_or_isp_written_twice_is_an_error() {
    let z = "zones/example.com.yaml";
    for (file, from, to, needle, message) in [
        // The same key twice, and the same name spelled two ways.
        (
            z,
            "  mail: {A: [192.0.2.25]}\n",
            "  mail: {A: [192.0.2.25]}\n  mail: {A: [192.0.2.26]}\n",
            "192.0.2.26",
            "`mail` is listed twice",
        ),
        (
            z,
            "  mail: {A: [192.0.2.25]}\n",
            "  mail: {A: [192.0.2.25]}\n  MAIL: {A: [192.0.2.26]}\n",
            "MAIL",
            "`MAIL` is listed twice",
        ),
        (
            z,
            "  mail: {A: [192.0.2.25]}\n",
            "  mail: {A: [192.0.2.25]}\n  mail.example.com.: {AAAA: [\"2001:db8::25\"]}\n",
            "mail.example.com.",
            "is listed twice",
        ),
        (
            z,
            "  mail: {A: [192.0.2.25]}\n",
            "  mail: {A: [192.0.2.25], A: [192.0.2.26]}\n",
            "192.0.2.26",
            "is listed twice",
        ),
        (
            z,
            "    coverage: mainland\n",
            "    coverage: mainland\n  CN.aliyundoc.com:\n",
            "CN.aliyundoc",
            "`CN.aliyundoc.com` is listed twice",
        ),
        (
            "popdns.yaml",
            "  chinamobile: [",
            "  chinatelecom: [64496]\n  chinamobile: [",
            "64496",
            "ISP `chinatelecom` is listed twice",
        ),
    ] {
        let c = Copy::new();
        let text = c.edit(file, from, to);
        let out = c.check();
        assert_eq!(out.code, Some(1), "{to}: {}", out.stderr);
        let at = format!("{}:", c.path(file).display());
        assert!(out.stderr.lines().any(|l| l.contains(&at) && l.contains(message)), "{to}: {}", out.stderr);
        assert!(text.contains(needle));
    }
}

#[test]
fn unknown_key_in_popdns_yaml() {
    let c = Copy::new();
    let text = c.edit("popdns.yaml", "  km_per_ms: 50\n", "  km_per_ms: 50\n  km_per_hour: 3\n");
    assert_error(&c, "popdns.yaml", line_of(&text, "km_per_hour"), "unknown key `km_per_hour`");
    let c = Copy::new();
    let text = c.append("popdns.yaml", "colour: blue\n");
    assert_error(&c, "popdns.yaml", line_of(&text, "colour: blue"), "unknown key `colour`");
}

#[test]
fn unknown_key_in_pops_yaml() {
    let c = Copy::new();
    let text = c.edit("pops.yaml", "capacity: 100, tier: edge}", "capacity: 100, tier: edge, colour: red}");
    assert_error(&c, "pops.yaml", line_of(&text, "colour: red"), "unknown key `colour`");
}

#[test]
fn unknown_key_in_a_zone_file() {
    let c = Copy::new();
    let f = "zones/example.com.yaml";
    let text = c.edit(f, "    coverage: mainland\n", "    coverage: mainland\n    covrage: global\n");
    assert_error(&c, f, line_of(&text, "covrage"), "unknown key `covrage`");
    let c = Copy::new();
    let text = c.edit(f, "ttl: 3600\n", "ttl: 3600\nrecrods: {}\n");
    assert_error(&c, f, line_of(&text, "recrods"), "unknown key `recrods`");
}

#[test]
fn duplicate_pop_id() {
    let c = Copy::new();
    let line = line_of(&c.read("pops.yaml"), "id: sg-sin-1");
    c.edit("pops.yaml", "id: sg-sin-1", "id: hk-hkg-1");
    assert_error(&c, "pops.yaml", line, "duplicate POP id `hk-hkg-1`");
}

#[test]
fn scheduled_name_referencing_an_unknown_pop() {
    let c = Copy::new();
    let f = "zones/example.com.yaml";
    let text = c.edit(
        f,
        "    coverage: mainland\n",
        "    coverage: mainland\n    pops:\n      - cn-zj-ct-1\n      - cn-nowhere-9\n",
    );
    assert_error(&c, f, line_of(&text, "cn-nowhere-9"), "unknown POP `cn-nowhere-9`");
}

#[test]
fn address_of_the_wrong_family() {
    let c = Copy::new();
    let text = c.append(
        "pops.yaml",
        "- id: test-1\n  country: DE\n  coords: [50.0, 8.0]\n  ipv4:\n    - 203.0.113.99\n    - \"2001:db8::99\"\n",
    );
    assert_error(&c, "pops.yaml", line_of(&text, "\"2001:db8::99\""), "wrong family");
    let c = Copy::new();
    let text = c.append(
        "pops.yaml",
        "- id: test-1\n  country: DE\n  coords: [50.0, 8.0]\n  ipv4: [203.0.113.99]\n  ipv6:\n    - 203.0.113.98\n",
    );
    assert_error(&c, "pops.yaml", line_of(&text, "- 203.0.113.98"), "wrong family");
}

#[test]
fn coordinates_out_of_range() {
    let c = Copy::new();
    let text = c.append("pops.yaml", "- id: test-1\n  country: DE\n  ipv4: [203.0.113.99]\n  coords: [95.0, 8.0]\n");
    assert_error(&c, "pops.yaml", line_of(&text, "[95.0, 8.0]"), "out of range");
    let c = Copy::new();
    let text = c.edit("pops.yaml", "coords: [51.51, -0.13]", "coords: [51.51, -181.0]");
    assert_error(&c, "pops.yaml", line_of(&text, "-181.0"), "out of range");
}

#[test]
fn record_outside_its_zone() {
    let c = Copy::new();
    let f = "zones/example.com.yaml";
    let text =
        c.edit(f, "  mail: {A: [192.0.2.25]}\n", "  mail: {A: [192.0.2.25]}\n  \"x.other.org.\": {A: [192.0.2.1]}\n");
    assert_error(&c, f, line_of(&text, "x.other.org."), "outside zone");
}

#[test]
fn cname_beside_other_data() {
    let c = Copy::new();
    let f = "zones/example.com.yaml";
    let text = c.edit(
        f,
        "  mail: {A: [192.0.2.25]}\n",
        "  mail: {A: [192.0.2.25]}\n  alias:\n    CNAME: mail.example.com\n    TXT: [\"hello\"]\n",
    );
    assert_error(&c, f, line_of(&text, "  alias:"), "CNAME");
}

#[test]
fn unknown_isp() {
    let c = Copy::new();
    let text = c.append(
        "pops.yaml",
        "- id: test-1\n  country: CN\n  coords: [36.65, 117.12]\n  isp: chinabroadnet\n  ipv4: [192.0.2.99]\n",
    );
    assert_error(&c, "pops.yaml", line_of(&text, "chinabroadnet"), "unknown ISP `chinabroadnet`");
}

/// Errors that point at another zone file's `zone` key name its line (found
/// only when such an error is reported: lines are not indexed otherwise).
#[test]
fn a_zone_defined_twice_or_inside_another_names_both_files() {
    let c = Copy::new();
    let first = line_of(&c.read("zones/example.com.yaml"), "zone: example.com");
    let soa = "soa: {mname: ns1.example.com, rname: hostmaster.example.com, serial: 1, refresh: 3600, retry: 600, \
               expire: 1209600, minimum: 60}\nttl: 60\n";
    std::fs::write(c.path("zones/zz.yaml"), format!("# again\n\nzone: example.com\n{soa}")).unwrap();
    let at = c.path("zones/example.com.yaml").display().to_string();
    assert_error(&c, "zones/zz.yaml", 3, &format!("zone `example.com` is already defined in {at}:{first}"));

    // A zone at a name the parent zone has data for: the parent's data there
    // could never be answered, and the error points at the parent's `zone` key.
    let c = Copy::new();
    std::fs::write(c.path("zones/zz.yaml"), format!("zone: ns1.example.com\n{soa}")).unwrap();
    assert_error(&c, "zones/example.com.yaml", first, "lies in zone `ns1.example.com.`, which is configured too");
}
