//! Every YAML example in README.md and docs/*.md passes `flowguard check`, so the docs cannot
//! teach a spelling the product rejects.
//!
//! Convention: a YAML block's info string says what it is.
//! - ```` ```yaml config ```` — a `flowguard.yaml` (or a part of one): checked as the project's config.
//! - ```` ```yaml flow ```` — a flow file: checked in a project whose config is [`FLOW_PROJECT`]
//!   (models `writer` and `backup`, endpoints `publisher`, `kb` and `coze`, channel `ops_feishu`).
//!
//! A plain ```` ```yaml ```` block is an error here: say which it is. Every `${VAR}` is set to a
//! 32-character value (API tokens must be at least 16 characters).

use crate::support::{Project, stderr, stdout};
use std::path::Path;

const FLOW_PROJECT: &str = "\
models:
  writer: { provider: simulated, fallback: [backup] }
  backup: { provider: simulated }
endpoints:
  publisher: { simulate: {} }
  kb: { simulate: {} }
  coze: { base_url: https://api.coze.cn, headers: { Authorization: \"Bearer example-coze-token-0123456789\" } }
channels:
  ops_feishu: { type: console }
";

/// (file, line, info string, body) of every fenced block whose language is `yaml`.
fn yaml_blocks(file: &Path) -> Vec<(String, usize, String, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, String, String)> = None; // (line, indent, info, body)
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```")
                    && info.split_whitespace().next() == Some("yaml")
                {
                    open = Some((i + 1, indent, info.trim().to_owned(), String::new()));
                }
            }
            Some((start, ind, info, body)) => {
                if trimmed.starts_with("```") {
                    out.push((file.display().to_string(), *start, info.clone(), std::mem::take(body)));
                    open = None;
                } else {
                    body.push_str(line.get(*ind..).unwrap_or(line.trim_start()));
                    body.push('\n');
                }
            }
        }
    }
    out
}

fn env_vars(text: &str) -> Vec<String> {
    text.split("${").skip(1).filter_map(|r| r.split(['}', ':']).next()).map(str::to_owned).collect()
}

#[test]
fn every_yaml_example_in_the_docs_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut checked = 0;
    let mut failures = Vec::new();
    for (file, line, info, body) in files.iter().flat_map(|f| yaml_blocks(f)) {
        let role = info.split_whitespace().nth(1).unwrap_or("");
        let project = match role {
            "config" => Project::with_config(&body),
            "flow" => {
                let p = Project::with_config(FLOW_PROJECT);
                p.write("flows/example.yaml", &body);
                p
            }
            _ => {
                failures.push(format!("{file}:{line}: say what the block is: ```yaml config or ```yaml flow (got `{info}`)"));
                continue;
            }
        };
        let mut cmd = crate::support::bin();
        cmd.current_dir(project.path()).arg("check");
        for v in env_vars(&body) {
            // Webhook variables hold URLs in real use, and the channels check that they do.
            let value =
                if v.contains("WEBHOOK") { "https://hooks.example.com/0123456789abcdef" } else { "example-value-0123456789abcdef0" };
            cmd.env(v, value);
        }
        let o = cmd.output().expect("spawn flowguard");
        checked += 1;
        if !o.status.success() {
            failures.push(format!("{file}:{line} ({role}):\n{}{}", stdout(&o), stderr(&o)));
        }
    }
    assert!(failures.is_empty(), "{} of {checked} examples fail `check`:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 5, "only {checked} examples found: is the convention still used?");
}

/// Every config and flow field has its own doc comment (not only its type's).
#[test]
fn every_config_and_flow_field_is_documented() {
    fn walk(path: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        let v = unwrap(v);
        for (name, p) in v["properties"].as_object().into_iter().flatten() {
            let full = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            let d = p["description"].as_str().or(unwrap(p)["description"].as_str()).unwrap_or("");
            if d.is_empty() || d.starts_with("A duration: ") || d.starts_with("A cron expression in") {
                out.push(full.clone());
            }
            walk(&full, p, out);
        }
        match v["additionalProperties"]["oneOf"].as_array() {
            Some(types) => types.iter().for_each(|t| walk(&format!("{path}.<name>"), t, out)),
            None if v["additionalProperties"].is_object() => walk(&format!("{path}.<name>"), &v["additionalProperties"], out),
            None => {}
        }
        match v["items"]["oneOf"].as_array() {
            Some(kinds) => kinds.iter().for_each(|k| walk(&format!("{path}[]"), k, out)),
            None if v["items"].is_object() => walk(&format!("{path}[]"), &v["items"], out),
            None => {}
        }
    }
    fn unwrap(v: &serde_json::Value) -> &serde_json::Value {
        match v["anyOf"].as_array().map(|a| a.iter().filter(|x| x["type"] != "null").collect::<Vec<_>>()) {
            Some(alts) if alts.len() == 1 => alts[0],
            _ => v,
        }
    }
    let mut missing = Vec::new();
    walk("", &flowguard::schema::config(), &mut missing);
    let mut in_flow = Vec::new();
    walk("", &flowguard::schema::flow(), &mut in_flow);
    missing.extend(in_flow.into_iter().map(|f| format!("flow: {f}")));
    assert!(missing.is_empty(), "fields without a doc comment:\n{}", missing.join("\n"));
}

/// docs/reference.md is what `flowguard schema reference` generates from the types. To update it:
/// `FLOWGUARD_BLESS=1 cargo nextest run -E 'test(/reference_md/)'` (or `flowguard schema reference > docs/reference.md`).
#[test]
fn reference_md_is_generated_from_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
    let generated = flowguard::schema::reference();
    if std::env::var_os("FLOWGUARD_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    // Each channel type's own fields come from its file's `Params`.
    for section in ["### `type: email`", "`channels.<name>.smtp_security`", "### `type: sms`", "`channels.<name>.phones`"] {
        assert!(generated.contains(section), "the reference lacks {section}");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/reference.md is out of date: regenerate it with `flowguard schema reference > docs/reference.md`"
    );
}

/// The JSON Schemas editors get accept every example of the docs, and reject a misspelt field.
#[test]
fn the_editor_schemas_accept_the_doc_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = jsonschema::validator_for(&flowguard::schema::config()).expect("config schema");
    let flow = jsonschema::validator_for(&flowguard::schema::flow()).expect("flow schema");
    let mut files = vec![root.join("README.md")];
    files.extend(
        std::fs::read_dir(root.join("docs"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    let mut failures = Vec::new();
    for (file, line, info, body) in files.iter().flat_map(|f| yaml_blocks(f)) {
        let v = flowguard::flow::yaml::parse(&body).unwrap().to_json();
        let validator = if info.ends_with("flow") { &flow } else { &config };
        for e in validator.iter_errors(&v) {
            failures.push(format!("{file}:{line}: {e} at {}", e.instance_path()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let bad = flowguard::flow::yaml::parse("storage:\n  urll: x\n").unwrap().to_json();
    assert!(!config.is_valid(&bad));
    let bad = flowguard::flow::yaml::parse("channels:\n  m: { type: email, smtp_host: h, from: a@b.c, to: [x@y.z], smtp_securty: tls }\n")
        .unwrap()
        .to_json();
    assert!(!config.is_valid(&bad), "a misspelt channel field passes the schema");
    let good =
        flowguard::flow::yaml::parse("channels:\n  m: { type: email, smtp_host: h, from: a@b.c, to: [x@y.z], smtp_security: tls }\n")
            .unwrap()
            .to_json();
    assert!(config.is_valid(&good), "a correct channel fails the schema");
    let bad = flowguard::flow::yaml::parse("name: f\nnodes:\n  - { id: a, kind: llm, promt: x }\n").unwrap().to_json();
    assert!(!flow.is_valid(&bad));
}
