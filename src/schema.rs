//! JSON Schemas of `flowguard.yaml` and of a flow file, and `docs/reference.md` rendered from
//! them. Both come from the types the parser fills (their doc comments are the descriptions), so
//! the reference and the editor schema cannot drift from what `check` accepts.

use serde_json::{Value, json};
use std::fmt::Write;

/// Schemas with every type inline: one self-contained document, easy to merge and to render.
pub fn generator() -> schemars::SchemaGenerator {
    schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator()
}

/// The schema of `flowguard.yaml`.
pub fn config() -> Value {
    let mut g = generator();
    let mut v = g.root_schema_for::<crate::config::Config>().to_value();
    v["title"] = "flowguard.yaml".into();
    // A channel's own fields depend on its `type:`; the config type reads them through the registry.
    v["properties"]["channels"]["additionalProperties"] = crate::alert::channels::json_schema(&mut g);
    v
}

/// The schema of a flow file; each node is its common fields plus its kind's.
pub fn flow() -> Value {
    crate::flow::json_schema(&mut generator())
}

/// `docs/reference.md`.
pub fn reference() -> String {
    let mut out = String::from(
        "# Reference\n\n\
         Every field of `flowguard.yaml` and of a flow file. Generated from the types the parser uses \
         (`flowguard schema reference`); a test keeps this file equal to what is generated. For editors, \
         `flowguard schema config` and `flowguard schema flow` print the JSON Schemas.\n\n\
         Durations are written `500ms`, `30s`, `5m`, `4h`, `90d`; crons have 5 fields (or 6 with seconds \
         first) in the config's `timezone`; `${VAR}` in the config takes a value from the environment.\n\n\
         ## flowguard.yaml\n\n",
    );
    let cfg = config();
    for (name, prop) in props(&cfg) {
        let _ = writeln!(out, "### `{name}`\n");
        if let Some(d) = description(prop) {
            let _ = writeln!(out, "{d}\n");
        }
        if name == "channels" {
            channels(&mut out, prop);
        } else {
            table(&mut out, name, &with_default(prop, &cfg["default"], name));
        }
    }
    out.push_str("## Flow files\n\nOne YAML file per flow in `flows_dir`.\n\n");
    let flow = flow();
    let mut top = flow.clone();
    top["properties"]["nodes"] = json!({"type": "array", "description": "The nodes, run in file order (see below)."});
    table(&mut out, "", &top);
    let kinds = flow["properties"]["nodes"]["items"]["oneOf"].as_array().cloned().unwrap_or_default();
    if let Some(first) = kinds.first() {
        out.push_str("### Fields every node has\n\n");
        let mut common = first.clone();
        let names: Vec<&str> = crate::nodes::KINDS.iter().map(|(n, _, _)| *n).collect();
        common["properties"]["kind"] = json!({"enum": names, "description": "The node kind; its own fields follow."});
        let own: Vec<String> =
            first["x-kind-fields"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        if let Some(p) = common["properties"].as_object_mut() {
            p.retain(|k, _| !own.contains(k));
        }
        table(&mut out, "", &common);
    }
    for k in &kinds {
        let kind = k["properties"]["kind"]["const"].as_str().unwrap_or("");
        let _ = writeln!(out, "### `kind: {kind}`\n");
        let mut own = k.clone();
        let fields: Vec<String> =
            k["x-kind-fields"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        if let Some(p) = own["properties"].as_object_mut() {
            p.retain(|f, _| fields.contains(f));
        }
        table(&mut out, "", &own);
    }
    out.push_str("## Error kinds\n\nEvery failure gets exactly one (DESIGN.md §4); `retry.on`, `policy` keys, `expect[].kind` and `routes[].match.error_kind` take these names.\n\n| kind | severity if not recovered | meaning |\n|---|---|---|\n");
    for k in crate::vocab::ErrorKind::ALL {
        let _ = writeln!(out, "| `{k}` | {} | {} |", k.default_severity(), cell(k.describe()));
    }
    out
}

/// The fields every channel has, then one section per channel type with its own fields.
fn channels(out: &mut String, prop: &Value) {
    let types = unwrap(prop)["additionalProperties"]["oneOf"].as_array().cloned().unwrap_or_default();
    let own = |t: &Value| -> Vec<String> {
        t["x-type-fields"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    if let Some(first) = types.first() {
        let mut common = first.clone();
        let names: Vec<&str> = crate::alert::channels::TYPES.iter().map(|(n, _, _)| *n).collect();
        common["properties"]["type"] = json!({"enum": names, "description": "The channel type; its own fields follow."});
        let fields = own(first);
        if let Some(p) = common["properties"].as_object_mut() {
            p.retain(|k, _| !fields.contains(k));
        }
        table(out, "channels.<name>", &common);
    }
    for t in &types {
        let _ = writeln!(out, "### `type: {}`\n", t["title"].as_str().unwrap_or(""));
        let fields = own(t);
        if fields.is_empty() {
            out.push_str("No fields of its own.\n\n");
            continue;
        }
        let mut mine = t.clone();
        if let Some(p) = mine["properties"].as_object_mut() {
            p.retain(|f, _| fields.contains(f));
        }
        table(out, "channels.<name>", &mine);
    }
}

/// A map keyed by error kind (a policy table) is one entry per kind: shown once, as `<error_kind>`.
fn keyed_by_error_kind(v: &Value) -> Option<&Value> {
    let p = v["properties"].as_object()?;
    let all = crate::vocab::ErrorKind::NAMES;
    (p.len() == all.len() && all.iter().all(|k| p.contains_key(*k))).then(|| &p[all[0]])
}

/// A top-level field with the default the whole config's default gives it.
fn with_default(prop: &Value, defaults: &Value, name: &str) -> Value {
    let mut p = prop.clone();
    if p["default"].is_null() && !defaults[name].is_null() {
        p["default"] = defaults[name].clone();
    }
    p
}

fn props(v: &Value) -> Vec<(&str, &Value)> {
    v["properties"].as_object().map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect()).unwrap_or_default()
}

/// The schema without its `null` alternative (an optional field).
fn unwrap(v: &Value) -> &Value {
    if let Some(alts) = v["anyOf"].as_array().or(v["oneOf"].as_array()) {
        let non_null: Vec<&Value> = alts.iter().filter(|a| a["type"] != "null").collect();
        if non_null.len() == 1 {
            return non_null[0];
        }
    }
    v
}

fn description(v: &Value) -> Option<String> {
    v["description"]
        .as_str()
        .or(unwrap(v)["description"].as_str())
        .map(|d| d.split("\n\n").map(|p| p.replace('\n', " ")).collect::<Vec<_>>().join(" "))
}

fn type_of(v: &Value) -> String {
    let v = unwrap(v);
    if let Some(t) = v["title"].as_str().filter(|t| ["duration", "cron"].contains(t)) {
        return t.into();
    }
    if v["enum"].as_array().is_some_and(|e| {
        e.len() == crate::vocab::ErrorKind::NAMES.len() && e.iter().zip(crate::vocab::ErrorKind::NAMES).all(|(a, b)| a == b)
    }) {
        return "error kind (see below)".into();
    }
    if let Some(e) = v["enum"].as_array() {
        return e.iter().filter_map(|x| x.as_str()).map(|x| format!("`{x}`")).collect::<Vec<_>>().join(" \\| ");
    }
    if let Some(c) = v["const"].as_str() {
        return format!("`{c}`");
    }
    // An enum whose variants are documented: one `const` per variant.
    if let Some(alts) = v["oneOf"].as_array().or(v["anyOf"].as_array())
        && alts.iter().all(|a| a["const"].is_string() || a["enum"].is_array())
    {
        let names = alts.iter().flat_map(|a| a["enum"].as_array().cloned().unwrap_or_else(|| vec![a["const"].clone()]));
        return names.filter_map(|x| x.as_str().map(|x| format!("`{x}`"))).collect::<Vec<_>>().join(" \\| ");
    }
    let t: Vec<&str> = match &v["type"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str()).filter(|x| *x != "null").collect(),
        _ => vec![],
    };
    match t.first().copied() {
        Some("array") => format!("list of {}", type_of(&v["items"])),
        Some("object") if v["additionalProperties"].is_object() => format!("map of name → {}", type_of(&v["additionalProperties"])),
        Some(t) => t.to_owned(),
        None if v["anyOf"].is_array() || v["oneOf"].is_array() => "see description".into(),
        None => "any".into(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// One row per field, nested objects, maps and lists of objects flattened with their path.
fn table(out: &mut String, path: &str, v: &Value) {
    let v = unwrap(v);
    let mut rows = String::new();
    if v["additionalProperties"]["properties"].is_object() {
        rows_of(&format!("{path}.<name>"), &v["additionalProperties"], &mut rows);
    } else if unwrap(&v["items"])["properties"].is_object() {
        rows_of(&format!("{path}[]"), &v["items"], &mut rows);
    } else {
        rows_of(path, v, &mut rows);
    }
    if rows.is_empty() {
        let default =
            if v["default"].is_null() { String::new() } else { format!("; default `{}`", v["default"].to_string().trim_matches('"')) };
        let _ = writeln!(out, "Type: {}{default}.\n", type_of(v));
        return;
    }
    out.push_str("| field | type | default | description |\n|---|---|---|---|\n");
    out.push_str(&rows);
    out.push('\n');
}

fn rows_of(path: &str, v: &Value, rows: &mut String) {
    let v = unwrap(v);
    let required: Vec<&str> = v["required"].as_array().into_iter().flatten().filter_map(|x| x.as_str()).collect();
    for (name, p) in props(v) {
        let full = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
        let default = match &p["default"] {
            Value::Null if required.contains(&name) => "required".to_owned(),
            Value::Null => String::new(),
            d => format!("`{}`", cell(&d.to_string().trim_matches('"').replace("\\\"", "\""))),
        };
        let _ = writeln!(rows, "| `{full}` | {} | {default} | {} |", type_of(p), cell(&description(p).unwrap_or_default()));
        let inner = unwrap(p);
        if let Some(first) = keyed_by_error_kind(inner) {
            rows_of(&format!("{full}.<error_kind>"), first, rows);
        } else if inner["properties"].is_object() {
            rows_of(&full, inner, rows);
        } else if inner["additionalProperties"]["properties"].is_object() {
            rows_of(&format!("{full}.<name>"), &inner["additionalProperties"], rows);
        } else if unwrap(&inner["items"])["properties"].is_object() {
            rows_of(&format!("{full}[]"), &inner["items"], rows);
        }
    }
}
