//! Writes small MaxMind DB files from readable CSV: the recipe for the demo
//! databases shipped in `geo/` (`popdns geo-build`) and for test fixtures.
//!
//! Location CSV: `network,country,region,continent,latitude,longitude,city`
//! ASN CSV: `network,asn,organization`. Lines starting with `#` and blank lines
//! are skipped; the first non-comment line is a header.

use std::path::Path;

use ipnet::IpNet;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file}:{line}: {message}")]
    Row { file: String, line: usize, message: String },
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("writing MaxMind DB: {0}")]
    Write(#[from] mmdb_writer::Error),
}

#[derive(Serialize)]
struct Names {
    en: String,
}
#[derive(Serialize)]
struct Country {
    iso_code: String,
    names: Names,
}
#[derive(Serialize)]
struct Code {
    code: String,
}
#[derive(Serialize)]
struct Iso {
    iso_code: String,
}
#[derive(Serialize)]
struct Loc {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}
#[derive(Serialize)]
struct City {
    names: Names,
}
#[derive(Serialize)]
struct CityRecord {
    continent: Code,
    country: Country,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<Iso>,
    location: Loc,
    city: City,
}
#[derive(Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
    autonomous_system_organization: String,
}

/// Rows of a CSV file: (line number, fields), header and comments skipped.
fn rows(file: &Path) -> Result<Vec<(usize, Vec<String>)>, BuildError> {
    let text = std::fs::read_to_string(file).map_err(|e| BuildError::Io(file.display().to_string(), e))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .skip(1)
        .map(|(i, l)| (i + 1, l.split(',').map(|f| f.trim().to_string()).collect()))
        .collect())
}

fn row_err(file: &Path, line: usize, message: impl Into<String>) -> BuildError {
    BuildError::Row { file: file.display().to_string(), line, message: message.into() }
}

/// City-layout database from the location CSV.
pub fn city_db(csv: &Path) -> Result<Vec<u8>, BuildError> {
    let mut w = mmdb_writer::Writer::new("popdns-demo-City");
    for (line, f) in rows(csv)? {
        if f.len() != 7 {
            return Err(row_err(csv, line, format!("expected 7 fields, found {}", f.len())));
        }
        let net: IpNet = f[0].parse().map_err(|_| row_err(csv, line, format!("bad network `{}`", f[0])))?;
        let num = |s: &str| s.parse::<f64>().map_err(|_| row_err(csv, line, format!("bad number `{s}`")));
        let rec = CityRecord {
            continent: Code { code: f[3].clone() },
            country: Country { iso_code: f[1].clone(), names: Names { en: f[1].clone() } },
            subdivisions: if f[2].is_empty() { vec![] } else { vec![Iso { iso_code: f[2].clone() }] },
            location: Loc { latitude: num(&f[4])?, longitude: num(&f[5])?, accuracy_radius: 50 },
            city: City { names: Names { en: f[6].clone() } },
        };
        w.insert(net, &rec)?;
    }
    Ok(w.to_bytes()?)
}

/// ASN-layout database from the ASN CSV.
pub fn asn_db(csv: &Path) -> Result<Vec<u8>, BuildError> {
    let mut w = mmdb_writer::Writer::new("popdns-demo-ASN");
    for (line, f) in rows(csv)? {
        if f.len() != 3 {
            return Err(row_err(csv, line, format!("expected 3 fields, found {}", f.len())));
        }
        let net: IpNet = f[0].parse().map_err(|_| row_err(csv, line, format!("bad network `{}`", f[0])))?;
        let asn = f[1].parse().map_err(|_| row_err(csv, line, format!("bad ASN `{}`", f[1])))?;
        w.insert(net, &AsnRecord { autonomous_system_number: asn, autonomous_system_organization: f[2].clone() })?;
    }
    Ok(w.to_bytes()?)
}

/// Build both databases and write them atomically (temp file + rename, so a
/// running server's mapping of the old file stays valid).
pub fn build_files(city_csv: &Path, asn_csv: &Path, city_out: &Path, asn_out: &Path) -> Result<(), BuildError> {
    write_atomic(city_out, &city_db(city_csv)?)?;
    write_atomic(asn_out, &asn_db(asn_csv)?)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let tmp = path.with_extension("mmdb.tmp");
    let io = |e| BuildError::Io(path.display().to_string(), e);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
