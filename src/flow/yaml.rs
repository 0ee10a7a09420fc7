//! A YAML document as a tree that remembers where every value stands (line and column), so that
//! errors found after parsing (an unknown node, a bad duration) still point into the file.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::fmt;

/// 1-based line and column; 0 when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A value and where it stands.
#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub value: Yaml,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The position of a map key (better than its value's for "unknown field" errors).
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        match &self.value {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(k, _)| k.pos),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Follows a path of map keys and sequence indexes; returns the deepest node reached.
    pub fn locate<'a>(&'a self, path: &[PathSeg]) -> &'a Node {
        let mut cur = self;
        for seg in path {
            let next = match (seg, &cur.value) {
                (PathSeg::Key(k), Yaml::Map(_)) => cur.get(k),
                (PathSeg::Index(i), Yaml::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        cur
    }

    pub fn to_json(&self) -> Value {
        match &self.value {
            Yaml::Null => Value::Null,
            Yaml::Bool(b) => Value::Bool(*b),
            Yaml::Int(i) => Value::from(*i),
            Yaml::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            Yaml::Str(s) => Value::String(s.clone()),
            Yaml::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Yaml::Map(entries) => Value::Object(entries.iter().map(|(k, v)| (k.key_string(), v.to_json())).collect()),
        }
    }

    fn key_string(&self) -> String {
        match &self.value {
            Yaml::Str(s) => s.clone(),
            Yaml::Int(i) => i.to_string(),
            Yaml::Bool(b) => b.to_string(),
            Yaml::Float(f) => f.to_string(),
            Yaml::Null => "null".into(),
            _ => "<complex key>".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Parses YAML text. A syntax error comes with where it is (so it prints as `file:line:col: …`
/// like every other error) and serde-saphyr's message without its own position.
pub fn parse(text: &str) -> Result<Node, (Pos, String)> {
    // YAML 1.2 booleans only: `n`, `no`, `on` stay strings (a key `n:` is not `false`).
    let opts = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options::<Spanned<Yaml>>(text, opts).map(spanned_node).map_err(|e| {
        let pos = e.location().map(|l| Pos { line: l.line(), col: l.column() }).unwrap_or_default();
        let mut msg = e.without_snippet().to_string();
        // The position is in `pos`; drop the message's own "at line X, column Y".
        if let Some(i) = msg.rfind(" at line ").filter(|i| msg[*i..].contains("column")) {
            msg.truncate(i);
        }
        (pos, format!("YAML syntax: {msg}"))
    })
}

/// Bytes read from a file as text; where they are not UTF-8, the line and column of the first
/// bad byte.
pub fn decode(bytes: Vec<u8>) -> Result<String, (Pos, String)> {
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line_start = good.iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let col = String::from_utf8_lossy(&good[line_start..]).chars().count() as u64 + 1;
        let byte = e.as_bytes().get(good.len()).copied().unwrap_or(0);
        (Pos { line, col }, format!("not UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"))
    })
}

fn spanned_node(s: Spanned<Yaml>) -> Node {
    Node { pos: Pos { line: s.referenced.line(), col: s.referenced.column() }, value: s.value }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Yaml, E> {
        Ok(i64::try_from(v).map(Yaml::Int).unwrap_or(Yaml::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Yaml>>()? {
            items.push(spanned_node(item));
        }
        Ok(Yaml::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Spanned<Yaml>, Spanned<Yaml>>()? {
            entries.push((spanned_node(k), spanned_node(v)));
        }
        Ok(Yaml::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive() {
        let doc = parse("name: a\nnodes:\n  - id: x\n    kind: llm\n").unwrap();
        let nodes = doc.get("nodes").unwrap();
        let first = doc.locate(&[PathSeg::Key("nodes".into()), PathSeg::Index(0), PathSeg::Key("kind".into())]);
        assert_eq!(first.as_str(), Some("llm"));
        assert_eq!((first.pos.line, first.pos.col), (4, 11));
        assert!(matches!(nodes.value, Yaml::Seq(_)));
        assert_eq!(doc.to_json()["nodes"][0]["id"], "x");
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let doc = parse("n: no\nyes: on\nt: true\n").unwrap().to_json();
        assert_eq!(doc, serde_json::json!({"n": "no", "yes": "on", "t": true}));
    }

    #[test]
    fn syntax_error_names_line() {
        let (pos, msg) = parse("a: b\nc: [1\n").unwrap_err();
        assert!(pos.line >= 2, "{pos} {msg}");
        assert!(!msg.contains(" at line "), "{msg}");
        let (pos, msg) = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(pos.line, 2, "{msg}");
    }

    #[test]
    fn bad_utf8_has_a_position() {
        let (pos, msg) = decode(b"name: a\nx: \xc3\xa9\xff\n".to_vec()).unwrap_err();
        assert_eq!((pos.line, pos.col), (2, 5), "{msg}");
        assert!(msg.contains("0xff"), "{msg}");
    }
}
