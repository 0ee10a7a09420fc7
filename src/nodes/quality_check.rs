//! `quality_check`: checks a value (usually an llm node's JSON) and lists *every* violation:
//! required fields, length limits, sensitive words (Aho-Corasick over NFKC-normalised,
//! lower-cased text with spaces and separators removed, so `国 家 级` and `ＶＩＰ` are caught),
//! regex rules and a JSON Schema. Any violation fails the node with `quality_rejected`; the
//! violations are its output, so a repair can feed them back.
//!
//! ```yaml
//! - id: qc
//!   kind: quality_check
//!   target: "{{ nodes.script }}"
//!   required: [title, hook, body, hashtags]
//!   max_length: { title: 30, body: 600 }
//!   sensitive_words: sensitive_words.txt   # one word a line, relative to the flow file
//! ```

use super::{BuildCx, NodeError, NodeKind, Output, Raw, RunCx};
use crate::flow::Diagnostic;
use crate::flow::template::Tmpl;
use crate::vocab::ErrorKind;
use aho_corasick::AhoCorasick;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use unicode_normalization::UnicodeNormalization;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// The value to check, usually `"{{ nodes.script }}"`.
    target: String,
    /// Fields that must be present and non-empty.
    #[serde(default)]
    required: Vec<String>,
    /// Minimum length in characters, per field.
    #[serde(default)]
    min_length: BTreeMap<String, usize>,
    /// Maximum length in characters, per field.
    #[serde(default)]
    max_length: BTreeMap<String, usize>,
    /// A word-list file, one word a line (`#` starts a comment), relative to the flow file.
    sensitive_words: Option<String>,
    /// Words listed inline.
    #[serde(default)]
    words: Vec<String>,
    #[serde(default)]
    /// Regular-expression rules on fields of the target.
    rules: Vec<Rule>,
    /// A JSON Schema the target must satisfy.
    schema: Option<Json>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// The field of the target the rule looks at.
    field: String,
    /// A regular expression.
    pattern: String,
    /// true: the field must match; false (default): it must not.
    #[serde(default)]
    must_match: bool,
    /// The violation reported (default: names the field and pattern).
    message: Option<String>,
}

struct QualityCheck {
    target: Tmpl,
    required: Vec<String>,
    min_length: BTreeMap<String, usize>,
    max_length: BTreeMap<String, usize>,
    words: Vec<String>,
    matcher: Option<AhoCorasick>,
    rules: Vec<(Rule, regex::Regex)>,
    schema: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for QualityCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QualityCheck").field("required", &self.required).field("words", &self.words.len()).finish()
    }
}

/// NFKC, lower case, and without whitespace or common separators.
pub fn normalize(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '_' | '.' | '*' | '·' | '|' | '/' | '\\' | '\u{200b}'))
        .collect()
}

/// Largest word list read (a list of sensitive words is a few hundred KiB at most).
pub const MAX_WORD_LIST_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a word list: a regular file (not a device such as /dev/zero, a FIFO or a directory) of
/// at most [`MAX_WORD_LIST_BYTES`], read with that bound even if it grows meanwhile.
fn read_word_list(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let too_big = || format!("larger than {} MiB", MAX_WORD_LIST_BYTES / (1024 * 1024));
    if meta.len() > MAX_WORD_LIST_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_WORD_LIST_BYTES + 1).read_to_end(&mut bytes)).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_WORD_LIST_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        let ok = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = ok.iter().filter(|b| **b == b'\n').count() + 1;
        format!("not UTF-8 text (line {line})")
    })
}

pub fn build(raw: Raw<'_>, cx: &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic> {
    let p: Params = raw.parse()?;
    let target = cx.string("target", &p.target);
    let mut words = p.words.clone();
    if let Some(file) = &p.sensitive_words {
        let path = cx.base_dir.join(file);
        match read_word_list(&path) {
            Ok(text) => words.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned)),
            Err(e) => cx.error("sensitive_words", format!("cannot read word list {}: {e}", path.display())),
        }
    }
    let normalized: Vec<String> = words.iter().map(|w| normalize(w)).filter(|w| !w.is_empty()).collect();
    let matcher = if normalized.is_empty() {
        None
    } else {
        match AhoCorasick::builder().match_kind(aho_corasick::MatchKind::LeftmostLongest).build(&normalized) {
            Ok(m) => Some(m),
            Err(e) => {
                cx.error("sensitive_words", format!("cannot build the word matcher: {e}"));
                None
            }
        }
    };
    let mut rules = Vec::new();
    for r in p.rules {
        match regex::Regex::new(&r.pattern) {
            Ok(re) => rules.push((r, re)),
            Err(e) => cx.error("rules", format!("bad pattern `{}`: {e}", r.pattern)),
        }
    }
    let schema = match &p.schema {
        Some(s) => match jsonschema::validator_for(s) {
            Ok(v) => Some(v),
            Err(e) => {
                cx.error("schema", format!("invalid JSON Schema: {e}"));
                None
            }
        },
        None => None,
    };
    Ok(Arc::new(QualityCheck {
        target,
        required: p.required,
        min_length: p.min_length,
        max_length: p.max_length,
        words: normalized,
        matcher,
        rules,
        schema,
    }))
}

fn field_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Array(items) => items.iter().map(field_text).collect::<Vec<_>>().join(" "),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn field<'v>(target: &'v Json, name: &str) -> Option<&'v Json> {
    name.split('.').try_fold(target, |v, k| v.get(k))
}

impl QualityCheck {
    /// Every violation of `target`, in a stable order.
    fn violations(&self, target: &Json) -> Vec<Json> {
        let mut out = Vec::new();
        let mut push = |field: &str, rule: &str, message: String| out.push(json!({"field": field, "rule": rule, "message": message}));
        for name in &self.required {
            let missing = match field(target, name) {
                None | Some(Json::Null) => true,
                Some(v) => field_text(v).trim().is_empty(),
            };
            if missing {
                push(name, "required", format!("required field `{name}` is missing or empty"));
            }
        }
        for (name, min) in &self.min_length {
            let len = field(target, name).map(|v| field_text(v).chars().count()).unwrap_or(0);
            if len < *min {
                push(name, "min_length", format!("`{name}` has {len} characters, fewer than {min}"));
            }
        }
        for (name, max) in &self.max_length {
            let len = field(target, name).map(|v| field_text(v).chars().count()).unwrap_or(0);
            if len > *max {
                push(name, "max_length", format!("`{name}` has {len} characters, more than {max}"));
            }
        }
        if let Some(m) = &self.matcher {
            let fields: Vec<(String, String)> = match target {
                Json::Object(map) => map.iter().map(|(k, v)| (k.clone(), field_text(v))).collect(),
                other => vec![(String::new(), field_text(other))],
            };
            for (name, text) in fields {
                let norm = normalize(&text);
                let mut found: Vec<&str> = m.find_iter(&norm).map(|hit| self.words[hit.pattern().as_usize()].as_str()).collect();
                found.dedup();
                for w in found {
                    push(&name, "sensitive_word", format!("`{name}` contains the sensitive word `{w}`"));
                }
            }
        }
        for (rule, re) in &self.rules {
            let text = field(target, &rule.field).map(field_text).unwrap_or_default();
            if re.is_match(&text) != rule.must_match {
                let msg = rule.message.clone().unwrap_or_else(|| {
                    if rule.must_match {
                        format!("`{}` does not match /{}/", rule.field, rule.pattern)
                    } else {
                        format!("`{}` matches /{}/", rule.field, rule.pattern)
                    }
                });
                push(&rule.field, "rule", msg);
            }
        }
        if let Some(schema) = &self.schema {
            for e in schema.iter_errors(target) {
                push(&e.instance_path().to_string(), "schema", e.to_string());
            }
        }
        out
    }
}

impl NodeKind for QualityCheck {
    fn pure(&self) -> bool {
        true
    }

    fn failure_kinds(&self, _side_effect: bool) -> Vec<ErrorKind> {
        vec![ErrorKind::QualityRejected]
    }

    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>> {
        Box::pin(async move {
            let target = cx.value(&self.target)?;
            let violations = self.violations(&target);
            if violations.is_empty() {
                return Ok(Output { value: json!({"passed": true, "violations": []}), ..Default::default() });
            }
            let summary = violations.iter().filter_map(|v| v["message"].as_str()).collect::<Vec<_>>().join("; ");
            let mut e = NodeError::new(ErrorKind::QualityRejected, format!("{} violation(s): {summary}", violations.len()));
            e.output = Some(json!({"passed": false, "violations": violations}));
            Err(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_catches_spaced_and_fullwidth_words() {
        assert_eq!(normalize("国 家 级"), "国家级");
        assert_eq!(normalize("ＶＩＰ"), "vip");
        assert_eq!(normalize("最-佳"), "最佳");
    }
}
