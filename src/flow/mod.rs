//! Flow files: the YAML a user writes, parsed into a checked [`Flow`] whose templates are compiled
//! and whose node kinds are built. Every problem is collected, with file:line:column and field.

pub mod diag;
pub mod retry;
pub mod schedule;
pub mod template;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics, dotted, from_tree, from_tree_all, suggest};
pub use retry::{RetryPolicy, RetrySpec};

use crate::config::HumanDuration;
use crate::engine::expect::{Expect, ExpectSpec};
use crate::engine::policy::{self, OnError, Policy, PolicyTable};
use crate::nodes::{self, BuildCx, NodeKind};
use crate::vocab::{ErrorKind, Severity};
use serde::Deserialize;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use template::{Templates, Tmpl};
use yaml::{Node, PathSeg, Pos};

/// A loaded, checked flow.
#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    /// First 16 hex digits of the SHA-256 of the file: which version of the flow a run ran.
    pub hash: String,
    pub timeout: Option<Duration>,
    pub latency_warning: Option<Duration>,
    /// Default values of the run inputs.
    pub inputs: serde_json::Map<String, Json>,
    pub nodes: Vec<NodeSpec>,
    pub templates: Templates,
    /// Error kind → severity and action, over the built-in table.
    pub policy: PolicyTable,
    /// A passing canary run lifts a block of this flow.
    pub unblock_on_canary: bool,
    /// Schedule, canary, interrupt policy and concurrency, for `flowguard serve`.
    pub serve: schedule::ServeSpec,
}

impl Flow {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }
}

/// One node of a flow, with its guards.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: String,
    pub kind: String,
    pub pos: Pos,
    pub timeout: Duration,
    pub retry: Option<RetryPolicy>,
    /// The node changes the world (publishing): a timeout is retried only when `idempotent`.
    pub side_effect: bool,
    /// Its target honours the idempotency key flowguard sends.
    pub idempotent: bool,
    /// Run the node once per item of this list.
    pub foreach: Option<Tmpl>,
    pub max_iterations: usize,
    /// Jump to this node when this one finishes (forward only).
    pub next: Option<String>,
    /// What to do when the node fails for good.
    pub on_error: Option<OnError>,
    /// Per-node overrides of the flow's policy table.
    pub policy: PolicyTable,
    pub expect: Vec<Expect>,
    /// The default value a `fallback` uses (the seed's "default template").
    pub default: Option<template::JsonTmpl>,
    /// The earlier nodes whose outputs this node reads (a quality check's repair target).
    pub reads: Vec<String>,
    pub node: Arc<dyn NodeKind>,
}

/// Fields every node has; the rest belong to its kind.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CommonFields {
    /// A unique name in the flow: letters, digits and `_`; later nodes read this node's output as `nodes.<id>`.
    id: String,
    /// The node kind; its own fields follow.
    kind: String,
    /// What the node is for (shown nowhere else; for readers of the file).
    #[serde(default)]
    description: Option<String>,
    /// Time limit of one attempt (default `defaults.node_timeout`); past it the attempt fails with `timeout`.
    timeout: Option<HumanDuration>,
    /// How failed attempts are retried; without it the built-in table decides per error kind (DESIGN.md §4).
    retry: Option<RetrySpec>,
    /// The node changes the world (publishing): after a timeout it is retried only if `idempotent`, else the failure is `publish_ambiguous`.
    #[serde(default)]
    side_effect: bool,
    /// Its target honours the idempotency key flowguard sends, so a timed-out attempt may be retried.
    #[serde(default)]
    idempotent: bool,
    /// Run the node once per item of this list (a template); inside, `item` and `index` are set.
    foreach: Option<String>,
    /// Cap on `foreach` items (default 100); more fail the node with `loop_limit`.
    max_iterations: Option<usize>,
    /// Jump to this node when this one finishes (forward only).
    next: Option<String>,
    /// What to do when the node fails for good (retries exhausted): `abort`, `manual`, `block`, `fallback_model`,
    /// or a mapping `{ action: fallback, value: … }`, `{ action: goto, node: catch_node }`, `{ action: repair, target: node, max: 2 }`;
    /// `on: [error kinds]` limits it to those kinds. Unset: the policy table decides.
    on_error: Option<Json>,
    /// Per error kind: `severity` and `action` for this node, over the flow's `policy` and the built-in table.
    #[serde(default)]
    policy: BTreeMap<ErrorKind, PolicySpec>,
    /// Checks on a successful output that turn a useless answer into a classified failure.
    #[serde(default)]
    expect: Vec<ExpectSpec>,
    /// The node's default value (the seed's "default template"), used when it fails with `data_empty`; strings are templates.
    default: Option<Json>,
}

/// A row of a policy table as written.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    /// Severity when the run does not recover: `low`, `medium` or `high`.
    severity: Option<Severity>,
    /// What to do when a node fails with this kind (written as `on_error`).
    action: Option<Json>,
}

const COMMON: &[&str] = &[
    "id",
    "kind",
    "description",
    "timeout",
    "retry",
    "side_effect",
    "idempotent",
    "foreach",
    "max_iterations",
    "next",
    "on_error",
    "policy",
    "expect",
    "default",
];

fn build_policy(specs: &BTreeMap<ErrorKind, PolicySpec>, t: &mut template::TemplateBuilder) -> Result<PolicyTable, String> {
    specs
        .iter()
        .map(|(kind, p)| {
            let action = match &p.action {
                Some(a) => Some(policy::parse_action(a, t).map_err(|m| format!("{kind}: {m}"))?.action),
                None => None,
            };
            Ok((*kind, Policy { severity: p.severity, action }))
        })
        .collect()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FlowFields {
    /// The flow's name: letters, digits, `_` and `-`; unique across `flows_dir`.
    name: String,
    /// What the flow does.
    #[serde(default)]
    description: String,
    /// Limit of the whole run; past it the run ends `timed_out` (`flow_timeout`).
    timeout: Option<HumanDuration>,
    /// Warn (an alert) while the run is still going past this; shorter than `timeout`.
    latency_warning: Option<HumanDuration>,
    /// Default values of the run inputs (`input.<name>` in templates); `flowguard run -i key=value` overrides.
    #[serde(default)]
    inputs: serde_json::Map<String, Json>,
    /// Per error kind: `severity` and `action` for every node of the flow, over the built-in table.
    #[serde(default)]
    policy: BTreeMap<ErrorKind, PolicySpec>,
    /// A passing canary run lifts a block of this flow.
    #[serde(default)]
    unblock_on_canary: bool,
    /// The nodes, run in file order.
    nodes: Vec<Json>,
    /// Run the flow on a cron schedule under `flowguard serve`.
    schedule: Option<schedule::ScheduleFields>,
    /// Health-check runs on a schedule under `flowguard serve`: allowed through a block, counted apart, and a failure alerts.
    canary: Option<schedule::CanaryFields>,
    /// What `serve` does at start with a run of this flow left `running` by a process that died: `fail` (mark it `interrupted`, the default) or `resume` (go on from the last completed node when every output it needs was stored whole).
    #[serde(default)]
    on_interrupt: schedule::OnInterrupt,
    /// Runs of this flow at once, from every trigger (at least 1); more wait in the queue. Unset: no limit.
    concurrency: Option<usize>,
}

/// Most nodes a flow may have (a bigger flow is a generated mistake, and every node costs a
/// record and a line of every report).
pub const MAX_NODES: usize = 1000;
/// Largest flow file read.
pub const MAX_FLOW_BYTES: u64 = 1024 * 1024;

/// Loads and checks one flow file. `cx` carries what the config declares (models, endpoints).
pub fn load(file: &Path, cx: &nodes::Registry) -> Result<Flow, Diagnostics> {
    let meta = std::fs::metadata(file).map_err(|e| one(file, Pos::default(), "", format!("cannot read: {e}")))?;
    if !meta.is_file() || meta.len() > MAX_FLOW_BYTES {
        return Err(one(file, Pos::default(), "", format!("not a regular file of at most {} KiB", MAX_FLOW_BYTES / 1024)));
    }
    let text = std::fs::read(file).map_err(|e| one(file, Pos::default(), "", format!("cannot read: {e}")))?;
    let text = yaml::decode(text).map_err(|(pos, m)| one(file, pos, "", m))?;
    parse(file, &text, cx)
}

fn one(file: &Path, pos: Pos, field: &str, message: String) -> Diagnostics {
    let mut d = Diagnostics::default();
    d.push(file, pos, field, message);
    d
}

/// A variable a template reads: (field, its position, the variable).
type Located = (String, Pos, String);

/// Parses and checks flow text; `file` names it in errors.
pub fn parse(file: &Path, text: &str, reg: &nodes::Registry) -> Result<Flow, Diagnostics> {
    let tree = yaml::parse(text).map_err(|(pos, m)| one(file, pos, "", m))?;
    let (top, errors) = from_tree_all::<FlowFields>(&tree, file, &[], &[]);
    let mut diags = Diagnostics(errors);
    let Some(top) = top else { return Err(diags) };
    let hash = hex16(&Sha256::digest(text.as_bytes()));
    let key = |k: &str| vec![PathSeg::Key(k.into())];
    if top.nodes.len() > MAX_NODES {
        let pos = tree.key_pos("nodes").unwrap_or_default();
        return Err(one(file, pos, "nodes", format!("{} nodes; a flow has at most {MAX_NODES}", top.nodes.len())));
    }

    let timeout = top.timeout.map(HumanDuration::get);
    let latency_warning = top.latency_warning.map(HumanDuration::get);
    if let (Some(w), Some(t)) = (latency_warning, timeout)
        && w >= t
    {
        diags.push(file, tree.locate(&key("latency_warning")).pos, "latency_warning", "must be shorter than the run `timeout`");
    }
    if !is_ident(&top.name) {
        diags.push(
            file,
            tree.locate(&key("name")).pos,
            "name",
            format!("`{}` is not a valid flow name (letters, digits, `_` and `-`)", top.name),
        );
    }

    let nodes_tree = tree.get("nodes");
    let mut builder = template::TemplateBuilder::new();
    let mut specs: Vec<NodeSpec> = Vec::new();
    // (node index, [(field, position, variable read)])
    let mut refs: Vec<(usize, Vec<Located>)> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let base_dir = file.parent().unwrap_or(Path::new("."));

    for (i, _) in top.nodes.iter().enumerate() {
        let Some(node_tree) = nodes_tree.map(|n| n.locate(&[PathSeg::Index(i)])) else { continue };
        let prefix = vec![PathSeg::Key("nodes".into()), PathSeg::Index(i)];
        let field_of = |k: &str| format!("{}.{k}", dotted(&prefix, &[]));
        let pos_of = |k: &str| node_tree.get(k).map(|n| n.pos).unwrap_or(node_tree.pos);

        // Split the node's fields into the common ones and its kind's parameters.
        let yaml::Yaml::Map(entries) = &node_tree.value else {
            diags.push(file, node_tree.pos, dotted(&prefix, &[]), "a node must be a mapping with `id` and `kind`");
            continue;
        };
        let mut common_tree = node_tree.clone();
        let mut params_tree = node_tree.clone();
        common_tree.value =
            yaml::Yaml::Map(entries.iter().filter(|(k, _)| k.as_str().is_some_and(|k| COMMON.contains(&k))).cloned().collect());
        params_tree.value =
            yaml::Yaml::Map(entries.iter().filter(|(k, _)| !k.as_str().is_some_and(|k| COMMON.contains(&k))).cloned().collect());

        let (common, errors) = from_tree_all::<CommonFields>(&common_tree, file, &prefix, &[]);
        diags.0.extend(errors);
        let Some(common) = common else { continue };
        if !is_ident(&common.id) || common.id.contains('-') {
            diags.push(
                file,
                pos_of("id"),
                field_of("id"),
                format!("`{}` is not a valid node id (letters, digits and `_`, not starting with a digit)", common.id),
            );
        }
        if let Some(first) = seen.insert(common.id.clone(), i) {
            diags.push(file, pos_of("id"), field_of("id"), format!("duplicate node id `{}` (first used by nodes[{first}])", common.id));
        }
        let Some(factory) = reg.kind(&common.kind) else {
            let hint = suggest(&common.kind, reg.kind_names()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            diags.push(
                file,
                pos_of("kind"),
                field_of("kind"),
                format!("unknown node kind `{}`{hint}; known kinds: {}", common.kind, reg.kind_names().collect::<Vec<_>>().join(", ")),
            );
            continue;
        };

        let mark = builder.mark();
        let mut cx = BuildCx { templates: &mut builder, registry: reg, base_dir, errors: Vec::new() };
        let raw = nodes::Raw { tree: &params_tree, file, prefix: &prefix, common: COMMON };
        let node = match factory(raw, &mut cx) {
            Ok(n) => Some(n),
            Err(d) => {
                diags.0.push(d);
                None
            }
        };
        for (field, msg) in std::mem::take(&mut cx.errors) {
            diags.push(file, pos_of(&field), field_of(&field), msg);
        }

        let node_timeout = common.timeout.map_or(reg.default_node_timeout, HumanDuration::get);
        let retry = match &common.retry {
            Some(spec) => spec.build().map_err(|m| diags.push(file, pos_of("retry"), field_of("retry"), m)).ok(),
            None => None,
        };
        builder.field = "foreach".into();
        let foreach = match &common.foreach {
            Some(s) => builder.string(s).map_err(|m| diags.push(file, pos_of("foreach"), field_of("foreach"), m)).ok(),
            None => None,
        };
        builder.field = "on_error".into();
        let on_error = match &common.on_error {
            Some(v) => {
                policy::parse_action(v, &mut builder).map_err(|m| diags.push(file, pos_of("on_error"), field_of("on_error"), m)).ok()
            }
            None => None,
        };
        let node_policy = build_policy(&common.policy, &mut builder).unwrap_or_else(|m| {
            diags.push(file, pos_of("policy"), field_of("policy"), m);
            PolicyTable::new()
        });
        let mut expect = Vec::new();
        for spec in &common.expect {
            match spec.build(&mut builder) {
                Ok(e) => expect.push(e),
                Err(m) => diags.push(file, pos_of("expect"), field_of("expect"), m),
            }
        }
        builder.field = "default".into();
        let default = match &common.default {
            Some(v) => builder.json(v).map_err(|m| diags.push(file, pos_of("default"), field_of("default"), m)).ok(),
            None => None,
        };
        if common.idempotent && !common.side_effect {
            diags.push(file, pos_of("idempotent"), field_of("idempotent"), "`idempotent` only applies to a node with `side_effect: true`");
        }
        let located = builder.references_since(mark).into_iter().map(|(f, v)| (field_of(&f), pos_of(&f), v)).collect::<Vec<_>>();
        let mut reads: Vec<String> = Vec::new();
        for (_, _, var) in &located {
            if let Some(target) = var.strip_prefix("nodes.").map(|r| r.split('.').next().unwrap_or(r).to_owned())
                && !reads.contains(&target)
            {
                reads.push(target);
            }
        }
        refs.push((i, located));
        let _ = common.description;
        if let Some(node) = node {
            specs.push(NodeSpec {
                id: common.id,
                kind: common.kind,
                pos: node_tree.pos,
                timeout: node_timeout,
                retry,
                side_effect: common.side_effect,
                idempotent: common.idempotent,
                foreach,
                max_iterations: common.max_iterations.unwrap_or(100),
                next: common.next,
                on_error,
                policy: node_policy,
                expect,
                default,
                reads,
                node,
            });
        }
    }
    if top.nodes.is_empty() {
        diags.push(file, tree.locate(&key("nodes")).pos, "nodes", "a flow needs at least one node");
    }

    // References between nodes: templates may read only earlier nodes; jumps go forward only.
    let order: HashMap<&str, usize> =
        top.nodes.iter().enumerate().filter_map(|(i, n)| n.get("id").and_then(|v| v.as_str()).map(|id| (id, i))).collect();
    for (i, vars) in &refs {
        for (field, pos, var) in vars {
            let (field, pos) = (field.clone(), *pos);
            let mut parts = var.split('.');
            let root = parts.next().unwrap_or("");
            if !template::ROOTS.contains(&root)
                && !["range", "dict", "namespace", "debug", "loop", "self", "true", "false", "none"].contains(&root)
            {
                let hint = suggest(root, template::ROOTS.iter().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                diags.push(
                    file,
                    pos,
                    field,
                    format!("template uses unknown variable `{root}`{hint}; available: {}", template::ROOTS.join(", ")),
                );
                continue;
            }
            if root != "nodes" {
                continue;
            }
            let Some(target) = parts.next() else { continue };
            match order.get(target) {
                None => {
                    let hint = suggest(target, order.keys().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                    diags.push(file, pos, field, format!("template refers to unknown node `{target}`{hint}"));
                }
                Some(j) if j >= i => {
                    diags.push(file, pos, field, format!("template refers to node `{target}`, which does not run before this one"))
                }
                _ => {}
            }
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        let here = order.get(spec.id.as_str()).copied().unwrap_or(i);
        for (what, target) in spec.node.jumps().into_iter().map(|t| ("branch", t)).chain(spec.next.iter().map(|t| ("next", t.clone()))) {
            match order.get(target.as_str()) {
                None => {
                    let hint = suggest(&target, order.keys().copied()).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                    diags.push(file, spec.pos, format!("nodes[{here}].{what}"), format!("jump to unknown node `{target}`{hint}"));
                }
                Some(j) if *j <= here => diags.push(
                    file,
                    spec.pos,
                    format!("nodes[{here}].{what}"),
                    format!("jump back to `{target}` would make a cycle; jumps go forward (use `foreach` or `retry` to repeat)"),
                ),
                _ => {}
            }
        }
    }

    let flow_policy = build_policy(&top.policy, &mut builder).unwrap_or_else(|m| {
        diags.push(file, tree.locate(&key("policy")).pos, "policy", m);
        PolicyTable::new()
    });
    for (i, spec) in specs.iter().enumerate() {
        let here = order.get(spec.id.as_str()).copied().unwrap_or(i);
        let actions = spec
            .on_error
            .iter()
            .map(|o| ("on_error", &o.action))
            .chain(spec.policy.values().filter_map(|p| p.action.as_ref()).map(|a| ("policy", a)));
        for (field, action) in actions {
            let field = format!("nodes[{here}].{field}");
            match action {
                policy::Action::Goto(target) => match order.get(target.as_str()) {
                    None => diags.push(file, spec.pos, &field, format!("goto: unknown node `{target}`")),
                    Some(j) if *j <= here => {
                        diags.push(file, spec.pos, &field, format!("goto `{target}`: a catch node must come after the node it catches"))
                    }
                    _ => {}
                },
                policy::Action::Repair { target: Some(target), .. } => match order.get(target.as_str()) {
                    None => diags.push(file, spec.pos, &field, format!("repair: unknown node `{target}`")),
                    Some(j) if *j > here => {
                        diags.push(file, spec.pos, &field, format!("repair `{target}`: the node to re-run must come before this one"))
                    }
                    _ => {}
                },
                policy::Action::Repair { target: None, .. } if spec.reads.is_empty() => {
                    diags.push(file, spec.pos, &field, "repair: this node reads no earlier node; name the node to re-run with `target`")
                }
                _ => {}
            }
        }
    }
    for (kind, p) in &flow_policy {
        if let Some(policy::Action::Goto(_) | policy::Action::Repair { target: Some(_), .. }) = &p.action {
            diags.push(
                file,
                tree.locate(&key("policy")).pos,
                format!("policy.{kind}"),
                "`goto` and `repair` with a target belong on a node's `on_error`, not the flow's policy",
            );
        }
    }

    let serve = serve_spec(&top, file, &tree, &mut diags);
    let templates = builder.finish();
    diags.into_result(Flow {
        name: top.name,
        description: top.description,
        file: file.to_path_buf(),
        hash,
        timeout,
        latency_warning,
        inputs: top.inputs,
        nodes: specs,
        templates,
        policy: flow_policy,
        unblock_on_canary: top.unblock_on_canary,
        serve,
    })
}

fn serve_spec(top: &FlowFields, file: &Path, tree: &Node, diags: &mut Diagnostics) -> schedule::ServeSpec {
    let pos = |k: &[&str]| tree.locate(&k.iter().map(|k| PathSeg::Key((*k).into())).collect::<Vec<_>>()).pos;
    let schedule = top.schedule.as_ref().map(|s| schedule::Schedule {
        cron: s.cron.get().clone(),
        overlap: s.overlap,
        catch_up: s.catch_up,
        inputs: s.inputs.clone(),
    });
    let canary = top.canary.as_ref().map(|c| schedule::Canary { cron: c.cron.get().clone(), inputs: c.inputs.clone() });
    if top.concurrency == Some(0) {
        diags.push(file, pos(&["concurrency"]), "concurrency", "must be at least 1 (leave it out for no limit)");
    }
    schedule::ServeSpec { schedule, canary, on_interrupt: top.on_interrupt, concurrency: top.concurrency }
}

/// The JSON Schema of a flow file: the flow's fields, and each node as the fields every node has
/// plus its kind's own (listed in `x-kind-fields`), told apart by `kind`.
pub fn json_schema(g: &mut schemars::SchemaGenerator) -> Json {
    let mut root = g.root_schema_for::<FlowFields>().to_value();
    root["title"] = "flowguard flow".into();
    let common = g.subschema_for::<CommonFields>().to_value();
    let kinds: Vec<Json> = nodes::KINDS
        .iter()
        .map(|(name, _, params)| {
            let own = params(g).to_value();
            let mut node = common.clone();
            let fields: Vec<Json> =
                own["properties"].as_object().map(|p| p.keys().map(|k| Json::from(k.as_str())).collect()).unwrap_or_default();
            if let (Some(dst), Some(src)) = (node["properties"].as_object_mut(), own["properties"].as_object()) {
                dst.extend(src.clone());
                dst.insert("kind".into(), serde_json::json!({"const": name, "description": "The node kind."}));
            }
            let mut required: Vec<Json> = node["required"].as_array().cloned().unwrap_or_default();
            required.extend(own["required"].as_array().cloned().unwrap_or_default());
            node["required"] = required.into();
            node["title"] = (*name).into();
            node["x-kind-fields"] = fields.into();
            node
        })
        .collect();
    root["properties"]["nodes"]["items"] = serde_json::json!({ "oneOf": kinds });
    root
}

pub fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') && !s.starts_with(|c: char| c.is_ascii_digit())
}

pub fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Every flow file of a directory, by flow name. Problems of all files are collected together.
pub fn load_dir(dir: &Path, reg: &nodes::Registry) -> Result<BTreeMap<String, Arc<Flow>>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut flows = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return Err(one(dir, Pos::default(), "", format!("cannot read the flows directory: {e}"))),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    for f in files {
        match load(&f, reg) {
            Ok(flow) => {
                if let Some(prev) = flows.get(&flow.name).map(|p: &Arc<Flow>| p.file.clone()) {
                    diags.push(&f, Pos::default(), "name", format!("flow name `{}` is also used by {}", flow.name, prev.display()));
                } else {
                    flows.insert(flow.name.clone(), Arc::new(flow));
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    diags.into_result(flows)
}
