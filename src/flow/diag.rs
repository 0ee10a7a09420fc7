//! Errors found in a flow or config file, each pointing at file:line:column and the field.

use super::yaml::{Node, PathSeg, Pos, Yaml};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Pos,
    /// Dotted path of the field, e.g. `nodes[2].retry.max_attempts`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.pos.line > 0 {
            write!(f, ":{}", self.pos)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All the problems of one or more files, reported together.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, file: &Path, pos: Pos, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Diagnostic { file: file.to_path_buf(), pos, field: field.into(), message: message.into() });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0)
    }
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate to `word`, when one is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, c)| *score > 0.8 || strsim::levenshtein(word, c) <= (word.chars().count() / 3).max(1))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Deserializes a subtree; an error points at the field where it broke.
pub fn from_tree<T: DeserializeOwned>(tree: &Node, file: &Path, prefix: &[PathSeg], known: &[&str]) -> Result<T, Diagnostic> {
    deserialize_at(tree, file, prefix, known).map_err(|(d, _)| d)
}

/// Like [`from_tree`], but goes on past a bad field: the field is left out and the rest read
/// again, so every bad field is reported at once. `None` when a required field was bad.
pub fn from_tree_all<T: DeserializeOwned>(tree: &Node, file: &Path, prefix: &[PathSeg], known: &[&str]) -> (Option<T>, Vec<Diagnostic>) {
    let mut tree = tree.clone();
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut left_out: Vec<(Vec<PathSeg>, String)> = Vec::new();
    loop {
        let (d, mut path) = match deserialize_at::<T>(&tree, file, prefix, known) {
            Ok(v) => return (Some(v), diags),
            Err(e) => e,
        };
        if let Some(field) = d.message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            // A required field this loop left out is already reported as bad.
            if !left_out.iter().any(|(p, k)| *p == path && k == field) {
                diags.push(d);
            }
            return (None, diags);
        }
        diags.push(d);
        // Leave out the innermost map entry on the path (list items keep their indices).
        while !matches!(path.last(), Some(PathSeg::Key(_)) | None) {
            path.pop();
        }
        let Some(PathSeg::Key(key)) = path.pop() else { return (None, diags) };
        let Some(Yaml::Map(entries)) = locate_mut(&mut tree, &path).map(|n| &mut n.value) else { return (None, diags) };
        let before = entries.len();
        entries.retain(|(k, _)| k.as_str() != Some(key.as_str()));
        if entries.len() == before || diags.len() > 50 {
            return (None, diags);
        }
        left_out.push((path, key));
    }
}

fn locate_mut<'a>(node: &'a mut Node, path: &[PathSeg]) -> Option<&'a mut Node> {
    let mut cur = node;
    for seg in path {
        cur = match (seg, &mut cur.value) {
            (PathSeg::Key(k), Yaml::Map(entries)) => {
                entries.iter_mut().find(|(key, _)| key.as_str() == Some(k.as_str())).map(|(_, v)| v)?
            }
            (PathSeg::Index(i), Yaml::Seq(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn deserialize_at<T: DeserializeOwned>(
    tree: &Node,
    file: &Path,
    prefix: &[PathSeg],
    known: &[&str],
) -> Result<T, (Diagnostic, Vec<PathSeg>)> {
    let json = tree.to_json();
    serde_path_to_error::deserialize::<_, T>(json).map_err(|e| {
        let mut path: Vec<PathSeg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(PathSeg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = e.into_inner().to_string();
        // serde names an unknown field in the message, not in the path.
        let mut message = inner.clone();
        if let Some(field) = inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            if path.last() == Some(&PathSeg::Key(field.to_owned())) {
                path.pop();
            }
            let parent = tree.locate(&path);
            let pos = parent.key_pos(field).unwrap_or(parent.pos);
            let expected = inner.split("expected one of ").nth(1).unwrap_or("");
            let mut candidates: Vec<&str> = expected.split(", ").map(|c| c.trim_matches('`')).collect();
            candidates.extend_from_slice(known);
            message = format!("unknown field `{field}`");
            if let Some(s) = suggest(field, candidates.iter().copied()) {
                message.push_str(&format!(" (did you mean `{s}`?)"));
            }
            path.push(PathSeg::Key(field.to_owned()));
            return (Diagnostic { file: file.into(), pos, field: dotted(prefix, &path), message }, path);
        }
        if let Some(variant) = inner.strip_prefix("unknown variant `").and_then(|r| r.split('`').next()) {
            let expected = inner.split("expected one of ").nth(1).unwrap_or("");
            if let Some(s) = suggest(variant, expected.split(", ").map(|c| c.trim_matches('`'))) {
                message.push_str(&format!(" (did you mean `{s}`?)"));
            }
        }
        (Diagnostic { file: file.into(), pos: tree.locate(&path).pos, field: dotted(prefix, &path), message }, path)
    })
}

pub fn dotted(prefix: &[PathSeg], path: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in prefix.iter().chain(path) {
        match seg {
            PathSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}
