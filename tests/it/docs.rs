//! Every YAML example in README.md and docs/*.md passes `flowguard check`, so the docs cannot
//! teach a spelling the product rejects.
//!
//! Convention: a YAML block's info string says what it is.
//! - ```` ```yaml config ```` — a `flowguard.yaml` (or a part of one): checked as the project's config.
//! - ```` ```yaml flow ```` — a flow file: checked in a project whose config is [`FLOW_PROJECT`]
//!   (models `writer` and `backup`, endpoints `publisher` and `kb`, channel `ops_feishu`).
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
