//! The shipped `popdns.yaml` rewritten for a server run in process by the
//! examples: ephemeral ports, absolute paths to the repo's files, the feed
//! keys in `dir/keys.yaml`, no rate limit per reporter. `pops` replaces the
//! repo's inventory when given; `edits` are further (text, replacement)
//! pairs. Returns the path of the config written into `dir`.

use std::path::{Path, PathBuf};

pub fn write(dir: &Path, pops: Option<&Path>, edits: &[(&str, String)]) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pops = pops.map_or_else(|| repo.join("pops.yaml"), Path::to_path_buf);
    let mut cfg = std::fs::read_to_string(repo.join("popdns.yaml"))
        .unwrap()
        .replace("\"127.0.0.1:5300\", \"[::1]:5300\"", "\"127.0.0.1:0\"")
        .replace("127.0.0.1:5301", "127.0.0.1:0")
        .replace("127.0.0.1:8053", "127.0.0.1:0")
        .replace("keys: feed-keys.yaml", &format!("keys: {}", dir.join("keys.yaml").display()))
        .replace("max_reports_per_second: 100", "max_reports_per_second: 0")
        .replace("geo/demo", &format!("{}/geo/demo", repo.display()))
        .replace("pops: pops.yaml", &format!("pops: {}", pops.display()))
        .replace("zones: zones/", &format!("zones: {}/zones/", repo.display()));
    for (from, to) in edits {
        cfg = cfg.replace(from, to);
    }
    let path = dir.join("popdns.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}
