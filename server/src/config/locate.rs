//! Where a key, or an entry of an array, sits in the configuration text.
//!
//! Errors found while a value is parsed carry their span from toml. Checks that run after
//! parsing (one key against another, against the host) see only the typed values, so they name a
//! key path and this module finds its line: the document is parsed once more into a tree that
//! keeps nothing but spans.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A TOML value reduced to where its parts are.
#[derive(Debug)]
enum Node {
    Table(BTreeMap<String, Located>),
    Array(Vec<Located>),
    Leaf,
}

/// A node and its span; None where toml has none (a table made by dotted keys).
#[derive(Debug)]
struct Located {
    span: Option<Range<usize>>,
    node: Node,
}

// toml hands out spans through serde_spanned's protocol: a struct of this name and fields, which
// it answers with a map of start, end and value. `toml::Spanned` itself cannot be used: it fails
// on a table without a span, and then no line at all would be known. The tests fail if a toml
// upgrade changes the protocol.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const START: &str = "$__serde_spanned_private_start";
const END: &str = "$__serde_spanned_private_end";
const VALUE: &str = "$__serde_spanned_private_value";

impl<'de> Deserialize<'de> for Located {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, &[START, END, VALUE], LocatedVisitor)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    /// The rest of a table whose first key was already read.
    fn table<'de, A: MapAccess<'de>>(first: Option<String>, mut map: A) -> Result<Node, A::Error> {
        let mut keys = BTreeMap::new();
        let mut key = first;
        while let Some(k) = key {
            keys.insert(k, map.next_value::<Located>()?);
            key = map.next_key::<String>()?;
        }
        Ok(Node::Table(keys))
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<Located>()? {
            entries.push(entry);
        }
        Ok(Node::Array(entries))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let first = map.next_key::<String>()?;
        Self::table(first, map)
    }
}

struct LocatedVisitor;

impl LocatedVisitor {
    fn bare<E>(node: Result<Node, E>) -> Result<Located, E> {
        node.map(|node| Located { span: None, node })
    }
}

impl<'de> Visitor<'de> for LocatedVisitor {
    type Value = Located;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Located, E> {
        Self::bare(NodeVisitor.visit_bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Located, E> {
        Self::bare(NodeVisitor.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Located, E> {
        Self::bare(NodeVisitor.visit_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Located, E> {
        Self::bare(NodeVisitor.visit_f64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Located, E> {
        Self::bare(NodeVisitor.visit_str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Located, A::Error> {
        Self::bare(NodeVisitor.visit_seq(seq))
    }
    /// Either the span protocol's start, end and value, or (no span) the table itself.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Located, A::Error> {
        let first = map.next_key::<String>()?;
        if first.as_deref() != Some(START) {
            return Self::bare(NodeVisitor::table(first, map));
        }
        let start: usize = map.next_value()?;
        let mut end = start;
        let mut node = Node::Leaf;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                END => end = map.next_value()?,
                _ => node = map.next_value::<Node>()?,
            }
        }
        Ok(Located { span: Some(start..end), node })
    }
}

/// The spans of a document's keys and array entries.
#[derive(Debug)]
pub(super) struct Spans {
    root: Option<Node>,
}

impl Spans {
    /// Never fails: a text that does not parse has no spans (its parse error has its own).
    pub(super) fn of(text: &str) -> Self {
        Self { root: Node::deserialize(toml::Deserializer::new(text)).ok() }
    }

    /// The span of the value at the dotted `path` (like "server.listen"), or of its entry `entry`
    /// when it is an array. Where that is not in the text (a missing key, too few entries), the
    /// nearest thing above it that is: the key itself, else its table's header. None only when
    /// not even the first key of the path is there.
    pub(super) fn find(&self, path: &str, entry: Option<usize>) -> Option<Range<usize>> {
        let Some(Node::Table(root)) = self.root.as_ref() else { return None };
        let mut table = root;
        // The spans met on the way down, the nearest last.
        let mut best: Option<Range<usize>> = None;
        for key in path.split('.') {
            let Some(value) = table.get(key) else { break };
            best = value.span.clone().or(best);
            match &value.node {
                Node::Table(inner) => table = inner,
                Node::Array(entries) => {
                    let at = entry.and_then(|i| entries.get(i)).and_then(|e| e.span.clone());
                    return at.or(best);
                }
                Node::Leaf => break,
            }
        }
        best
    }

    /// Whether the dotted `path` is written in the text (a default never is).
    pub(super) fn has(&self, path: &str) -> bool {
        let mut node = self.root.as_ref();
        for key in path.split('.') {
            node = match node {
                Some(Node::Table(t)) => t.get(key).map(|l| &l.node),
                _ => None,
            };
        }
        node.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, span: Option<Range<usize>>) -> usize {
        super::super::line_of(text, span.expect("found").start)
    }

    const TEXT: &str =
        "# comment\n[server]\nlisten = [\n  \"a\",\n  \"b\",\n]\nport = 124\n\n[clock]\nsource = \"local\"\n";

    #[test]
    fn keys_entries_and_missing_keys_have_lines() {
        let s = Spans::of(TEXT);
        assert_eq!(line(TEXT, s.find("server.listen", None)), 3);
        assert_eq!(line(TEXT, s.find("server.listen", Some(1))), 5, "the entry's own line");
        assert_eq!(line(TEXT, s.find("server.listen", Some(7))), 3, "no such entry: the array");
        assert_eq!(line(TEXT, s.find("server.port", None)), 7);
        assert_eq!(line(TEXT, s.find("clock.source", None)), 10);
        assert_eq!(line(TEXT, s.find("server.interface", None)), 2, "missing: its table's header");
        assert_eq!(s.find("log.level", None), None);
        assert!(s.has("server.port") && !s.has("server.queues") && !s.has("log"));
    }

    #[test]
    fn dotted_keys_and_inline_tables_are_found() {
        let text = "server.listen = [\"a\"]\nclock = { source = \"local\" }\n";
        let s = Spans::of(text);
        assert_eq!(line(text, s.find("server.listen", Some(0))), 1);
        assert_eq!(line(text, s.find("clock.source", None)), 2);
        assert!(Spans::of("[server\n").find("server", None).is_none());
    }
}
