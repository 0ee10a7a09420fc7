//! `flowguard serve` as a process: killed with SIGKILL mid-run and restarted (runs resume or end
//! `interrupted` as their flow says), reloaded with SIGHUP (a broken flow is refused and the
//! running version keeps going), stopped with SIGTERM.

use crate::serve::{OPERATE, READ, config};
use crate::support::{Project, spawn_serve};
use serde_json::Value;
use std::process::Child;
use std::time::Duration;

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(p: &Project) -> Server {
        flowguard::init_tls();
        let (child, base, lines) = spawn_serve(p);
        Server { child, base, http: reqwest::Client::new(), lines }
    }

    fn output(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(READ).send().await.expect("GET").json().await.expect("json")
    }

    async fn trigger(&self, flow: &str) -> String {
        crate::support::trigger(&self.base, flow, OPERATE).await
    }

    /// Polls until `pred` holds for the run.
    async fn wait(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            let run = self.get(&format!("/api/v1/runs/{id}")).await;
            if pred(&run) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {id} never got there: {}", self.get(&format!("/api/v1/runs/{id}")).await);
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill");
        assert!(ok.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn slow_flow(name: &str, on_interrupt: &str) -> String {
    format!(
        r#"
name: {name}
on_interrupt: {on_interrupt}
inputs: {{ topic: cats }}
nodes:
  - id: greet
    kind: template
    value: {{ topic: "{{{{ input.topic }}}}", n: 7 }}
  - id: think
    kind: llm
    model: slow
    prompt: "write about {{{{ nodes.greet.topic }}}} {{{{ nodes.greet.n }}}}"
  - id: done
    kind: template
    text: "{{{{ nodes.greet.topic }}}}: {{{{ nodes.think }}}}"
"#
    )
}

fn count(run: &Value, node: &str) -> usize {
    run["attempts"].as_array().map(|a| a.iter().filter(|x| x["node_id"] == node).count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_or_interrupts_runs_as_their_flow_says() {
    // A short lease: the restarted server takes the dead one's runs over once it expires.
    let p = Project::with_config(&config("").replace("storage:\n", "storage:\n  lease: 1s\n"));
    p.write("flows/resumable.yaml", &slow_flow("resumable", "resume"));
    p.write("flows/fragile.yaml", &slow_flow("fragile", "fail"));
    let mut s = Server::start(&p);
    let resumable = s.trigger("resumable").await;
    let fragile = s.trigger("fragile").await;
    for id in [&resumable, &fragile] {
        // The first node is recorded; the slow model is thinking.
        s.wait(id, |r| count(r, "greet") == 1).await;
    }
    s.child.kill().expect("SIGKILL");
    s.child.wait().expect("wait");
    drop(s);

    let s = Server::start(&p);
    let run = s.wait(&resumable, |r| r["status"] != "running").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(count(&run, "greet"), 1, "the completed node is not run again: {run}");
    assert_eq!((count(&run, "think"), count(&run, "done")), (1, 1));
    let done = run["attempts"].as_array().and_then(|a| a.iter().find(|x| x["node_id"] == "done")).expect("done");
    assert!(done["output"].as_str().unwrap_or("").starts_with("cats: "), "the resumed run sees the stored outputs: {done}");
    let run = s.get(&format!("/api/v1/runs/{fragile}")).await;
    assert_eq!((run["status"].as_str(), run["error_kind"].as_str()), (Some("interrupted"), Some("interrupted")), "{run}");
    let out = s.output().join("\n");
    assert!(out.contains(&format!("resumed run {resumable}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_broken_flow_and_keeps_the_running_version() {
    let p = Project::with_config(&config("  shutdown_grace: 100ms"));
    let v1 = "name: hello\nnodes:\n  - id: greet\n    kind: template\n    text: one\n";
    p.write("flows/hello.yaml", v1);
    p.write("flows/fragile.yaml", &slow_flow("fragile", "fail"));
    let mut s = Server::start(&p);
    let version = |v: &Value| v["version"].as_str().unwrap_or("").to_owned();
    let before = version(&s.get("/api/v1/flows/hello").await);

    p.write("flows/hello.yaml", "name: hello\nnodes:\n  - id: greet\n    kind: tempalte\n    text: two\n");
    s.signal("-HUP");
    let mut health = Value::Null;
    for _ in 0..500 {
        health = s.get("/api/v1/health").await;
        if !health["reload_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = health["reload_error"].as_str().unwrap_or("");
    assert!(err.contains("hello.yaml:4:") && err.contains("did you mean `template`"), "{health}");
    assert_eq!(version(&s.get("/api/v1/flows/hello").await), before, "the running version keeps going");
    let id = s.trigger("hello").await;
    let run = s.wait(&id, |r| r["status"] == "succeeded").await;
    assert_eq!(run["attempts"][0]["output"], "one");

    p.write("flows/hello.yaml", &v1.replace("one", "three"));
    s.signal("-HUP");
    for _ in 0..500 {
        if version(&s.get("/api/v1/flows/hello").await) != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(version(&s.get("/api/v1/flows/hello").await), before, "a valid version is taken");
    assert!(s.get("/api/v1/health").await["reload_error"].is_null());

    // SIGTERM mid-run: past the grace period the run is recorded interrupted, and the process exits 0.
    let slow = s.trigger("fragile").await;
    s.wait(&slow, |r| count(r, "greet") == 1).await;
    s.signal("-TERM");
    let status = s.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let (_, store) = flowguard::cli::open_store(&p.config()).await.expect("store");
    let run = store.get_run(&slow).await.expect("get").expect("run");
    assert_eq!(run.status, flowguard::vocab::RunStatus::Interrupted);
}
