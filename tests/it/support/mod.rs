//! Shared test helpers: the built binary, throwaway projects, and fake servers that speak the
//! real protocols of services we cannot reach.

pub mod db;
pub mod fake_bots;
pub mod fake_coze;
pub mod fake_es;
pub mod fake_feishu;
pub mod fake_feishu_open;
#[allow(dead_code)] // the fake provider's tests arrive with the LLM work
pub mod fake_openai;
pub mod fake_otlp;
pub mod fake_provider;
pub mod fake_publisher;
pub mod fake_sms;
pub mod fake_smtp;
pub mod harness;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

/// The single number `sql` selects (0 for NULL).
pub async fn count(store: &flowguard::store::Store, sql: &str) -> i64 {
    store.pool().fetch(sql, &[], &[flowguard::store::Ty::I64]).await.expect(sql).first().and_then(|r| r[0].i64()).unwrap_or(0)
}

/// The flowguard binary built for this test run.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowguard"));
    c.env_remove("FLOWGUARD_CONFIG").env("NO_COLOR", "1");
    c
}

/// Runs the binary with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).output().expect("spawn flowguard")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A project directory with a config and flows, deleted when dropped.
pub struct Project {
    pub dir: TempDir,
}

impl Project {
    /// The starter project `flowguard init` writes.
    pub fn starter() -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = run_in(dir.path(), &["init", "."]);
        assert!(o.status.success(), "init failed: {}", stderr(&o));
        Project { dir }
    }

    /// An empty project with this config text.
    pub fn with_config(config: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("flows")).expect("flows dir");
        std::fs::write(dir.path().join("flowguard.yaml"), config).expect("write config");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("flowguard.yaml")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run_in(self.path(), args)
    }

    /// `flowguard --format json …` parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--format", "json"]);
        let o = self.run(&all);
        assert!(o.status.success(), "{args:?} failed: {}{}", stdout(&o), stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", stdout(&o)))
    }
}

/// Starts `flowguard serve` on a free port in the project; returns the process, the base URL it
/// printed first, and the rest of its stdout, line by line.
pub fn spawn_serve(p: &Project) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = bin()
        .current_dir(p.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("FLOWGUARD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn serve");
    let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = lines.recv_timeout(std::time::Duration::from_secs(60)).expect("serve prints its URL");
    let base = first.split_whitespace().find(|w| w.starts_with("http://")).expect("a URL").trim_end_matches('/').to_owned();
    (child, base, lines)
}

/// Triggers a run of `flow` through the API of the server at `base` (`POST /api/v1/flows/F/runs`
/// with an operate `token`); its run id.
pub async fn trigger(base: &str, flow: &str, token: &str) -> String {
    flowguard::init_tls();
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/flows/{flow}/runs"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    r["run_id"].as_str().unwrap_or_else(|| panic!("no run id: {r}")).to_owned()
}
