//! The only file that touches YAML.
//!
//! serde_yaml deserializes the values (and gives a line for syntax errors and
//! unknown keys); it keeps no spans for values, so a second pass with an event
//! parser (saphyr-parser) records the line of every key and sequence item. Semantic
//! errors found later (a duplicate id, a wrong address family) ask that index for
//! the line of the item they concern. The pass runs when the first line is
//! asked for: a valid file never needs it, and for a zone of a million names
//! it cost a third of the load time and 240 MB at the peak.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use saphyr_parser::{Event, Parser};
use serde::de::DeserializeOwned;

use super::error::ConfigError;

/// One step of a path into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Idx(usize),
}

/// Path from the document root to a node, e.g. `[Idx(3), Key("ipv4"), Idx(0)]`.
pub type YamlPath = Vec<Seg>;

/// Build a path from string keys and indices: `path!["records", "ns1", 0]`.
#[macro_export]
macro_rules! ypath {
    ($($s:expr),* $(,)?) => { [$($crate::config::yaml::IntoSeg::into_seg($s)),*] };
}

pub trait IntoSeg {
    fn into_seg(self) -> Seg;
}
impl IntoSeg for &str {
    fn into_seg(self) -> Seg {
        Seg::Key(self.to_string())
    }
}
impl IntoSeg for &String {
    fn into_seg(self) -> Seg {
        Seg::Key(self.clone())
    }
}
impl IntoSeg for String {
    fn into_seg(self) -> Seg {
        Seg::Key(self)
    }
}
impl IntoSeg for usize {
    fn into_seg(self) -> Seg {
        Seg::Idx(self)
    }
}

/// Line (1-based) of every key and sequence item in one YAML file, found
/// in its text when first asked for.
#[derive(Debug)]
pub struct LineIndex {
    text: String,
    lines: OnceLock<HashMap<YamlPath, usize>>,
}

impl LineIndex {
    fn new(text: String) -> LineIndex {
        LineIndex { text, lines: OnceLock::new() }
    }

    /// The line of `path`, or of its nearest ancestor that has one, or 1.
    pub fn line(&self, path: &[Seg]) -> usize {
        let lines = self.lines.get_or_init(|| LineIndex::build(&self.text));
        let mut p = path;
        loop {
            if let Some(l) = lines.get(p) {
                return *l;
            }
            match p.split_last() {
                Some((_, rest)) => p = rest,
                None => return 1,
            }
        }
    }

    /// Whether the text has been indexed (tests).
    #[cfg(test)]
    fn built(&self) -> bool {
        self.lines.get().is_some()
    }

    fn build(text: &str) -> HashMap<YamlPath, usize> {
        enum Frame {
            Map { key: Option<String> },
            Seq { next: usize },
        }
        let mut idx: HashMap<YamlPath, usize> = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut path: YamlPath = Vec::new();
        let mut parser = Parser::new_from_str(text);
        // Called when a value (scalar or collection start) appears: push its segment.
        // Returns whether a segment was pushed (false at the document root).
        fn enter(stack: &mut [Frame], path: &mut YamlPath, idx: &mut HashMap<YamlPath, usize>, line: usize) -> bool {
            match stack.last_mut() {
                Some(Frame::Map { key }) => match key.take() {
                    Some(k) => {
                        path.push(Seg::Key(k));
                        true
                    }
                    None => false,
                },
                Some(Frame::Seq { next }) => {
                    path.push(Seg::Idx(*next));
                    *next += 1;
                    idx.entry(path.clone()).or_insert(line);
                    true
                }
                None => false,
            }
        }
        let mut pushed: Vec<bool> = Vec::new();
        while let Some(Ok((ev, span))) = parser.next_event() {
            let line = span.start.line();
            match ev {
                Event::Scalar(v, ..) => {
                    // A scalar in key position of a map names the next value.
                    if let Some(Frame::Map { key }) = stack.last_mut()
                        && key.is_none()
                    {
                        let k = v.to_string();
                        let mut p = path.clone();
                        p.push(Seg::Key(k.clone()));
                        idx.entry(p).or_insert(line);
                        *key = Some(k);
                        continue;
                    }
                    if enter(&mut stack, &mut path, &mut idx, line) {
                        path.pop();
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let p = enter(&mut stack, &mut path, &mut idx, line);
                    pushed.push(p);
                    stack.push(if matches!(ev, Event::MappingStart(..)) {
                        Frame::Map { key: None }
                    } else {
                        Frame::Seq { next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    if pushed.pop() == Some(true) {
                        path.pop();
                    }
                }
                Event::Alias(_) if enter(&mut stack, &mut path, &mut idx, line) => {
                    path.pop();
                }
                _ => {}
            }
        }
        idx
    }
}

/// A YAML mapping read as its entries in order, duplicates kept: a map type
/// would keep the last of two equal keys without a word, and for some files
/// (reporter keys) a key written twice is an operator's mistake to report.
#[derive(Debug)]
pub struct Entries<V>(pub Vec<(String, V)>);

impl<V> Default for Entries<V> {
    fn default() -> Self {
        Entries(Vec::new())
    }
}

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Entries<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    v.push(entry);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A parsed YAML file: its typed value and the line of each of its items.
pub struct Doc<T> {
    pub value: T,
    pub lines: LineIndex,
}

/// Read and deserialize one YAML file. Syntax errors and unknown keys come back
/// with the file and line where serde_yaml found them.
pub fn load<T: DeserializeOwned>(file: &Path) -> Result<Doc<T>, ConfigError> {
    let text = read(file)?;
    shallow_flow(file, &text)?;
    bounded_aliases(file, &text)?;
    parse(file, text)
}

/// Deepest nesting of flow collections (`[...]`, `{...}`) read. The YAML
/// parser takes time quadratic in it (100k levels in a 200 KB file: 35 s,
/// with a reload and shutdown waiting), and no config nests more than a few.
const MAX_FLOW_DEPTH: usize = 256;

/// Refuse flow collections nested deeper than `MAX_FLOW_DEPTH`, from a scan
/// of the bytes that skips quoted strings and comments.
fn shallow_flow(file: &Path, text: &str) -> Result<(), ConfigError> {
    let (mut depth, mut line) = (0usize, 1usize);
    let (mut quote, mut comment, mut prev) = (None::<u8>, false, b'\n');
    for &b in text.as_bytes() {
        if b == b'\n' {
            line += 1;
            comment = false;
        }
        match (quote, comment) {
            (_, true) => {}
            (Some(q), _) => quote = (b != q).then_some(q),
            (None, false) => match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' if prev.is_ascii_whitespace() => comment = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        let msg = format!("`[` and `{{` nested deeper than {MAX_FLOW_DEPTH}");
                        return Err(ConfigError::new(file, line, msg));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = b;
    }
    Ok(())
}

/// Nodes that aliases may add to a document, all told. Anchors and aliases
/// are fine for repeating a POP list; nested they double at each level (a
/// "billion laughs"), and serde_yaml expands every one: a 0.5 MB zone file
/// took all the memory of the server that reloaded it.
const MAX_ALIASED_NODES: u64 = 1_000_000;

/// Refuse a file whose aliases would expand to more than
/// `MAX_ALIASED_NODES` nodes, before serde_yaml expands them. Only files
/// with an anchor (`&`) are scanned, so large plain zones pay nothing.
fn bounded_aliases(file: &Path, text: &str) -> Result<(), ConfigError> {
    if !text.contains('&') {
        return Ok(());
    }
    let mut size: HashMap<usize, u64> = HashMap::new(); // anchor id -> nodes it stands for
    let mut open: Vec<(usize, u64)> = Vec::new(); // collections: (anchor id, nodes before it)
    let (mut nodes, mut aliased) = (0u64, 0u64);
    let mut parser = Parser::new_from_str(text);
    while let Some(Ok((ev, span))) = parser.next_event() {
        match ev {
            Event::Scalar(_, _, anchor, _) => {
                nodes += 1;
                if anchor > 0 {
                    size.insert(anchor, 1);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, nodes));
                nodes += 1;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, before)) = open.pop()
                    && anchor > 0
                {
                    size.insert(anchor, nodes - before);
                }
            }
            Event::Alias(anchor) => {
                let n = size.get(&anchor).copied().unwrap_or(1);
                (nodes, aliased) = (nodes + n, aliased + n);
                if aliased > MAX_ALIASED_NODES {
                    let msg =
                        format!("YAML aliases here expand to more than {MAX_ALIASED_NODES} nodes; write the data out");
                    return Err(ConfigError::new(file, span.start.line(), msg));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Largest config file read: a zone of a million names is about 25 MB.
const MAX_FILE: u64 = 256 << 20;

/// A regular file of at most `MAX_FILE` bytes, as UTF-8. A FIFO would block
/// the load (and with it a reload and shutdown) until someone writes to it,
/// and `/dev/zero` would be read until memory ran out.
fn read(file: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let err = |m: String| ConfigError::new(file, 0, m);
    // Looked at before opening: opening a FIFO already blocks.
    let meta = std::fs::metadata(file).map_err(|e| err(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    if meta.len() > MAX_FILE {
        return Err(err(format!("{} bytes: config files are read up to {MAX_FILE}", meta.len())));
    }
    let f = std::fs::File::open(file).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut text = String::new();
    f.take(MAX_FILE + 1).read_to_string(&mut text).map_err(|e| err(format!("cannot read: {e}")))?;
    Ok(text)
}

/// Deserialize YAML text that came from `file` (kept to find lines in).
pub fn parse<T: DeserializeOwned>(file: &Path, text: String) -> Result<Doc<T>, ConfigError> {
    let value: T = serde_yaml::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(1);
        ConfigError::new(file, line, serde_message(&e))
    })?;
    Ok(Doc { value, lines: LineIndex::new(text) })
}

/// serde_yaml's message without its trailing " at line N column M", with serde's
/// "unknown field" said the way the contract says it.
fn serde_message(e: &serde_yaml::Error) -> String {
    let mut msg = e.to_string();
    if let Some(pos) = msg.rfind(" at line ") {
        msg.truncate(pos);
    }
    msg.replace("unknown field", "unknown key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_and_items() {
        let text = "a: 1\nb:\n  - x\n  - {id: y, z: [1, 2]}\nc:\n  d: e\n";
        let idx = LineIndex::new(text.into());
        assert!(!idx.built(), "indexed before a line was asked for");
        assert_eq!(idx.line(&ypath!["a"]), 1);
        assert!(idx.built());
        assert_eq!(idx.line(&ypath!["b", 0]), 3);
        assert_eq!(idx.line(&ypath!["b", 1]), 4);
        assert_eq!(idx.line(&ypath!["b", 1, "id"]), 4);
        assert_eq!(idx.line(&ypath!["c", "d"]), 6);
        assert_eq!(idx.line(&ypath!["c", "nope", 7]), 5);
    }

    #[test]
    fn unknown_key_names_its_line() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let err = parse::<T>(Path::new("x.yaml"), "a: 1\nbogus: 2\n".into()).err().unwrap();
        assert_eq!(err.line, 2);
        assert!(err.to_string().starts_with("x.yaml:2: unknown key `bogus`"), "{err}");
    }
}
