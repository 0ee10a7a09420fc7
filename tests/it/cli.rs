//! The binary as a user runs it: every command, its output and its exit code.

use crate::support::{Project, bin, run_in, stderr, stdout};
use std::time::{Duration, Instant};

const QUICK_CONFIG: &str = "models:\n  m:\n    provider: simulated\n    simulate: { latency: 5ms }\n";

fn quick_project(flow: &str) -> Project {
    let p = Project::with_config(QUICK_CONFIG);
    p.write("flows/f.yaml", flow);
    p
}

const OK_FLOW: &str = "name: f\ninputs: { topic: 露营 }\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: 'Topic: {{ input.topic }}'\n    json: true\n  - id: t\n    kind: template\n    text: '{{ nodes.s.title }}'\n";

#[test]
fn init_writes_a_project_that_checks_and_runs() {
    let p = Project::starter();
    let o = p.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("douyin_script"));
    let again = p.run(&["init", "."]);
    assert_eq!(again.status.code(), Some(2), "init must not overwrite: {}", stderr(&again));
}

#[test]
fn run_prints_progress_and_exits_0_then_runs_show_and_stats_read_it_back() {
    let p = quick_project(OK_FLOW);
    let o = p.run(&["run", "f", "--input", "topic=海边"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("✓ s") && out.contains("✓ t") && out.contains("succeeded"), "{out}");

    let runs = p.json(&["runs"]);
    let run = &runs.as_array().unwrap()[0];
    assert_eq!((run["flow"].as_str(), run["status"].as_str(), run["trigger"].as_str()), (Some("f"), Some("succeeded"), Some("cli")));
    assert_eq!(run["inputs"]["topic"], "海边", "inputs are an object: {run}");
    let id = run["id"].as_str().unwrap();

    let shown = p.json(&["show", &id[..20]]);
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["model"], "simulated:m");
    assert!(attempts[1]["output"].as_str().unwrap().contains("海边"));
    let table = p.run(&["show", id]);
    assert!(stdout(&table).contains("NODE") && stdout(&table).contains("simulated:m"));

    let stats = p.json(&["stats", "--since", "1h"]);
    let flow = &stats["flows"][0];
    assert_eq!((flow["runs"].as_u64(), flow["success_rate"].as_f64()), (Some(1), Some(1.0)));
    assert_eq!(flow["nodes"].as_array().unwrap().len(), 2);
    let table = p.run(&["stats"]);
    assert!(stdout(&table).contains("TIME SHARE"), "{}", stdout(&table));
}

#[test]
fn a_failed_run_exits_1_and_says_why() {
    let p = Project::with_config("models:\n  m:\n    provider: simulated\n    simulate: { latency: 1ms, faults: { quota: 1.0 } }\n");
    p.write("flows/f.yaml", "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: x\n");
    let o = p.run(&["run", "f"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("failed at `s`: quota_exhausted (severity high)"), "{out}");
    let failed = p.json(&["runs", "--status", "failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let none = p.json(&["runs", "--status", "succeeded"]);
    assert!(none.as_array().unwrap().is_empty());
    let o = p.run(&["run", "f", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["status"].as_str(), j["error_kind"].as_str()), (Some("failed"), Some("quota_exhausted")));
}

#[test]
fn usage_and_input_errors_exit_2() {
    let p = quick_project(OK_FLOW);
    let o = p.run(&["run", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no flow named `nope`"), "{}", stderr(&o));
    let o = p.run(&["run", "f", "--input", "novalue"]);
    assert_eq!(o.status.code(), Some(2));
    p.write("bad.json", "[1, 2]");
    let o = p.run(&["run", "f", "--input-json", "bad.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("must be a JSON object"));
    let o = p.run(&["runs", "--status", "succeded"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean `succeeded`"), "{}", stderr(&o));
    let o = p.run(&["runs", "--since", "yesterday-ish"]);
    assert_eq!(o.status.code(), Some(2));
    let o = p.run(&["show", "no-such-run"]);
    assert_eq!(o.status.code(), Some(2));
    let o = p.run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let empty = tempfile::tempdir().unwrap();
    let o = run_in(empty.path(), &["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("flowguard init"), "{}", stderr(&o));
}

#[test]
fn check_reports_every_problem_with_file_line_and_column() {
    let p = Project::with_config(QUICK_CONFIG);
    p.write(
        "flows/broken.yaml",
        "name: broken\ntimeout: soon\nnodes:\n  - id: a\n    kind: lm\n  - id: b\n    kind: llm\n    model: mm\n    prompt: '{{ nodes.c.text }}'\n    retyr: {}\n  - id: c\n    kind: template\n    text: '{{ nodes.zz }}'\n    next: a\n",
    );
    p.write("flows/syntax.yaml", "name: s\nnodes: [\n");
    let o = p.run(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for expected in [
        "broken.yaml:2:10: timeout: bad duration `soon`",
        "broken.yaml:5:11: nodes[0].kind: unknown node kind `lm` (did you mean `llm`?)",
        "broken.yaml:10:5: nodes[1].retyr: unknown field `retyr` (did you mean `retry`?)",
        "syntax.yaml:2:8: YAML syntax: unclosed bracket",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    // Fix the unknown field; the semantic problems then all show at once.
    p.write(
        "flows/broken.yaml",
        "name: broken\nnodes:\n  - id: a\n    kind: template\n    text: x\n  - id: b\n    kind: llm\n    model: mm\n    prompt: '{{ nodes.c.text }}'\n  - id: c\n    kind: template\n    text: '{{ nodes.zz }} {{ inptu.x }}'\n    next: a\n",
    );
    std::fs::remove_file(p.path().join("flows/syntax.yaml")).unwrap();
    let err = stderr(&p.run(&["check"]));
    for expected in [
        "broken.yaml:8:12: nodes[1].model: unknown model `mm` (did you mean `m`?)",
        "broken.yaml:9:13: nodes[1].prompt: template refers to node `c`, which does not run before this one",
        "broken.yaml:12:11: nodes[2].text: template refers to unknown node `zz`",
        "template uses unknown variable `inptu` (did you mean `input`?)",
        "nodes[2].next: jump back to `a` would make a cycle",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}

#[test]
fn a_non_utf8_flow_and_a_bad_config_are_clear_errors() {
    let p = Project::with_config(QUICK_CONFIG);
    std::fs::write(p.path().join("flows/bin.yaml"), [0x6e, 0x61, 0xff, 0xfe]).unwrap();
    let o = p.run(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bin.yaml:1:3: not UTF-8 text"), "{}", stderr(&o));
    let p =
        Project::with_config("storage:\n  url: sqlite://x.db\nmodels:\n  m:\n    provider: openai\n    api_key: ${FG_TEST_MISSING_KEY}\n");
    let o = p.run(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("flowguard.yaml:6:14: environment variable `FG_TEST_MISSING_KEY` is not set"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_database_is_a_clear_error_without_the_password() {
    let p = Project::with_config("storage:\n  url: mysql://fg:hunter2pass@127.0.0.1:1/flowguard\n");
    p.write("flows/f.yaml", "name: f\nnodes:\n  - id: t\n    kind: template\n    text: x\n");
    let o = p.run(&["run", "f"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("cannot open the MySQL/MariaDB database at 127.0.0.1:1/flowguard"), "{err}");
    assert!(!err.contains("hunter2pass"), "{err}");
}

#[test]
fn demo_runs_a_bounded_batch_and_prints_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin().current_dir(dir.path()).args(["demo", "--dir", "d", "--runs", "6", "--concurrency", "3", "--no-serve"]).output().unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("[  6/6]") && out.contains("flow douyin_script: 6 runs"), "{out}");
    assert!(dir.path().join("d/flowguard.db").exists());
    let o = run_in(&dir.path().join("d"), &["runs", "--format", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 6);
}

#[test]
fn a_killed_run_keeps_its_finished_nodes() {
    let p = Project::with_config(
        "models:\n  fast:\n    provider: simulated\n    simulate: { latency: 1ms }\n  slow:\n    provider: simulated\n    simulate: { latency: 600s }\n",
    );
    p.write(
        "flows/f.yaml",
        "name: f\nnodes:\n  - id: one\n    kind: llm\n    model: fast\n    prompt: a\n  - id: two\n    kind: template\n    text: '{{ nodes.one }}'\n  - id: three\n    kind: llm\n    model: slow\n    prompt: b\n    timeout: 900s\n",
    );
    let mut child = bin().current_dir(p.path()).args(["run", "f"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempts = 0;
    while Instant::now() < deadline {
        let o = p.run(&["runs", "--format", "json"]);
        if let Some(id) = serde_json::from_slice::<serde_json::Value>(&o.stdout).ok().and_then(|v| v[0]["id"].as_str().map(str::to_owned)) {
            let shown = p.json(&["show", &id]);
            attempts = shown["attempts"].as_array().map(|a| a.len()).unwrap_or(0);
            if attempts >= 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(attempts, 2, "the first two nodes are recorded before the kill");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let runs = p.json(&["runs"]);
    let run = &runs[0];
    assert_eq!(run["status"], "running", "nothing marked it finished");
    let shown = p.json(&["show", run["id"].as_str().unwrap()]);
    let nodes: Vec<&str> = shown["attempts"].as_array().unwrap().iter().map(|a| a["node_id"].as_str().unwrap()).collect();
    assert_eq!(nodes, vec!["one", "two"]);
    assert_eq!(shown["attempts"][0]["status"], "succeeded");
}

#[test]
fn report_send_goes_through_the_outbox_to_the_channels() {
    let p = quick_project(OK_FLOW);
    std::fs::write(p.config(), format!("{QUICK_CONFIG}channels:\n  terminal:\n    type: console\nreports:\n  channels: [terminal]\n"))
        .unwrap();
    assert_eq!(p.run(&["run", "f"]).status.code(), Some(0));
    let today = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap()).date().to_string();
    let o = p.run(&["report", "daily", "--date", &today, "--send"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let title = format!("flowguard 日报 {today}");
    assert!(stdout(&o).contains(&title), "the console channel printed the report `{title}`: {}", stdout(&o));
    let listed = p.json(&["alerts", "list", "--notifications"]);
    let text = listed.to_string();
    assert!(text.contains("report") && text.contains("sent"), "the report went through the outbox: {text}");
}

#[tokio::test]
async fn an_alert_a_dead_process_owed_is_raised_by_the_next_one() {
    let p = quick_project(OK_FLOW);
    assert_eq!(p.run(&["run", "f"]).status.code(), Some(0));
    // A run that ended failed two minutes ago, whose process died before recording its alert.
    let store = flowguard::store::Store::open(
        &format!("sqlite://{}", p.path().join("flowguard.db").display()),
        2,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    let mut r = store.list_runs(&Default::default()).await.unwrap().remove(0);
    r.id = "orphan-run".into();
    // Another flow: `f` succeeded after this failure, and a later success wins over it.
    r.flow = "g".into();
    r.status = flowguard::vocab::RunStatus::Failed;
    r.started_at = now - 130_000;
    r.ended_at = Some(now - 120_000);
    r.failed_node = Some("s".into());
    r.error_kind = Some("quota_exhausted".into());
    r.severity = Some("high".into());
    store.insert_run(&r).await.unwrap();
    store.close().await;
    assert!(!p.json(&["alerts", "list"]).to_string().contains("orphan-run"));
    assert_eq!(p.run(&["run", "f"]).status.code(), Some(0));
    let alerts = p.json(&["alerts", "list"]).to_string();
    assert!(alerts.contains("quota_exhausted"), "the next process raised the owed alert: {alerts}");
    // Raised once: a third process finds nothing owed.
    assert_eq!(p.run(&["run", "f"]).status.code(), Some(0));
    let occurrences = p.json(&["alerts", "list"]).as_array().unwrap().iter().filter(|a| a.to_string().contains("quota_exhausted")).count();
    assert_eq!(occurrences, 1);
}

/// `flowguard alerts list --notifications | head -1`: the reader is gone before the command
/// writes; it ends quietly (no panic, no exit 101), as `cat` does.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let p = quick_project(OK_FLOW);
    for args in [&["alerts", "list", "--notifications"][..], &["runs"][..], &["check"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = bin().current_dir(p.path()).args(args).stdout(writer).output().unwrap();
        assert!(!stderr(&o).contains("panicked") && o.status.code() != Some(101), "{args:?}: {:?} {}", o.status, stderr(&o));
    }
}

/// `serve`'s log on a pipe carries no colour codes; `--log-format json` writes one JSON object a line.
#[test]
fn serve_logs_plain_text_on_a_pipe_and_json_on_request() {
    use std::io::{BufRead, BufReader, Read};
    let p = quick_project(OK_FLOW);
    for json in [false, true] {
        let mut cmd = bin();
        cmd.current_dir(p.path()).env_remove("NO_COLOR").env("FLOWGUARD_LOG", "info").args(["serve", "--listen", "127.0.0.1:0"]);
        if json {
            cmd.args(["--log-format", "json"]);
        }
        let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        assert!(first.contains("http://"), "{first}");
        let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        out.read_to_string(&mut first).unwrap();
        child.wait().unwrap();
        assert!(log.contains("shutting down"), "{log}");
        assert!(!log.contains('\u{1b}'), "no colour codes on a pipe: {log:?}");
        if json {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                assert!(v["level"].is_string() && v["fields"]["message"].is_string(), "{v}");
            }
        }
    }
}

/// `-i key=text` is text whatever it looks like; `-i key:=json` is JSON, and bad JSON there is a
/// usage error rather than a silent guess.
#[test]
fn inputs_are_text_unless_written_as_json() {
    let p = quick_project(OK_FLOW);
    let o = p.run(&["run", "f", "-i", "topic=[[x]]", "-i", "n=3", "-i", "tags:=[\"a\",\"b\"]", "-i", "count:=3"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let inputs = &p.json(&["runs"])[0]["inputs"];
    assert_eq!(inputs["topic"], "[[x]]", "{inputs}");
    assert_eq!(inputs["n"], "3", "{inputs}");
    assert_eq!(inputs["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(inputs["count"], 3);
    let o = p.run(&["run", "f", "-i", "tags:=[a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not JSON"), "{}", stderr(&o));
}

/// Read-only commands need the database, not the server's tokens or the channels' webhooks:
/// `${…}` is resolved only in the sections a command uses. `check` still wants them all.
#[test]
fn read_only_commands_do_not_need_the_servers_secrets() {
    let p = Project::with_config(&format!(
        "{QUICK_CONFIG}server:\n  tokens:\n    - {{ name: coze, token: \"${{FLOWGUARD_INGEST_TOKEN}}\", scopes: [ingest] }}\nchannels:\n  ops:\n    type: feishu\n    webhook: ${{FEISHU_WEBHOOK}}\n"
    ));
    p.write("flows/f.yaml", OK_FLOW);
    for args in [&["runs"][..], &["stats"], &["alerts", "list"], &["manual", "list"], &["silences", "list"], &["flow", "blocks"]] {
        let o = p.run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    let o = p.run(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("FLOWGUARD_INGEST_TOKEN"), "{}", stderr(&o));
}
