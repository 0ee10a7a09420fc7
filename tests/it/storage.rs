//! flowguard as a user runs it on MySQL/MariaDB and PostgreSQL (and SQLite): run, runs, show,
//! stats, check --db; a database that is unreachable, or goes away in the middle of a run.

use crate::support::db::{Kind, TestDb, backends};
use crate::support::proxy::Proxy;
use crate::support::{Project, stderr, stdout};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

const HELLO: &str = r#"name: hello
inputs:
  topic: 秋天露营
nodes:
  - id: topic
    kind: template
    text: "主题：{{ input.topic }} 🚀"
  - id: script
    kind: llm
    model: writer
    prompt: "为这个主题写一段口播脚本：{{ nodes.topic }}"
  - id: caption
    kind: template
    text: "{{ nodes.topic }} #抖音"
"#;

/// Five nodes; the second takes 1.5 s, the time a test has to pull the database away.
const SLOW: &str = r#"name: slow
nodes:
  - id: a
    kind: template
    text: "开始"
  - id: slow
    kind: llm
    model: slow_writer
    prompt: "写点什么：{{ nodes.a }}"
  - id: c
    kind: template
    text: "{{ nodes.a }} 继续"
  - id: d
    kind: llm
    model: writer
    prompt: "再写点：{{ nodes.c }}"
  - id: e
    kind: template
    text: "完成 ✅"
"#;

fn project(url: &str, storage_extra: &str) -> Project {
    let p = Project::with_config(&format!(
        "storage:\n  url: \"{url}\"\n{storage_extra}\
         models:\n  writer:\n    provider: simulated\n    simulate: {{ latency: 20ms }}\n  \
         slow_writer:\n    provider: simulated\n    simulate: {{ latency: 1500ms }}\n"
    ));
    p.write("flows/hello.yaml", HELLO);
    p.write("flows/slow.yaml", SLOW);
    p
}

fn all(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

backends! {
    async fn cli_run_runs_show_stats_check(db: TestDb) {
        let p = project(db.url(), "");
        let o = p.run(&["check", "--db"]);
        assert_eq!(o.status.code(), Some(0), "{}", all(&o));
        let name = match db.kind {
            Kind::Sqlite => "SQLite",
            Kind::MySql => "MySQL/MariaDB",
            Kind::Postgres => "PostgreSQL",
        };
        assert!(stdout(&o).contains(&format!("ok  database: {name}")), "{}", stdout(&o));

        let run = p.json(&["run", "hello", "-i", "topic=打工人早餐 🍳"]);
        assert_eq!(run["status"], "succeeded", "{run}");
        let id = run["run_id"].as_str().expect("run id").to_owned();
        assert!(run["outputs"]["caption"].as_str().unwrap_or_default().contains("打工人早餐 🍳"), "{run}");

        let runs = p.json(&["runs"]);
        assert_eq!(runs[0]["id"], id.as_str(), "{runs}");
        assert_eq!(runs[0]["flow"], "hello");
        assert_eq!(runs[0]["inputs"]["topic"], "打工人早餐 🍳", "{runs}");
        let failed = p.json(&["runs", "--status", "failed"]);
        assert_eq!(failed.as_array().map(Vec::len), Some(0), "{failed}");

        let show = p.json(&["show", &id[..13]]);
        assert_eq!(show["run"]["id"], id.as_str());
        let nodes: Vec<&str> = show["attempts"].as_array().expect("attempts").iter().filter_map(|a| a["node_id"].as_str()).collect();
        assert_eq!(nodes, ["topic", "script", "caption"]);
        assert!(show["attempts"][0]["output"].as_str().unwrap_or_default().contains("🚀"), "{show}");

        let stats = p.json(&["stats"]);
        let flow = &stats["flows"][0];
        assert_eq!((flow["flow"].as_str(), flow["runs"].as_u64(), flow["succeeded"].as_u64()), (Some("hello"), Some(1), Some(1)), "{stats}");
    }

    networked async fn check_db_reports_a_newer_schema(db: TestDb) {
        let p = project(db.url(), "");
        assert_eq!(p.run(&["check", "--db"]).status.code(), Some(0));
        let s = db.open().await;
        s.pool().exec("INSERT INTO flowguard_migrations (version, applied_at) VALUES (99, 0)", &[]).await.expect("insert version");
        s.close().await;
        let o = p.run(&["check", "--db"]);
        assert_eq!(o.status.code(), Some(1), "{}", all(&o));
        let e = stderr(&o);
        assert!(e.contains("schema version 99") && e.contains("upgrade flowguard") && e.contains("127.0.0.1"), "{e}");
    }

    networked async fn check_db_shows_the_servers_answer_without_the_password(db: TestDb) {
        // Right server, wrong credentials (MySQL) or a database that does not exist (PostgreSQL
        // trusts local connections): the server's own answer, and no password.
        let mut u = url::Url::parse(db.url()).expect("url");
        u.set_password(Some("s3cret-Pa55")).expect("password");
        if db.kind == Kind::Postgres {
            u.set_path("/no_such_db_for_flowguard");
        }
        let p = project(u.as_str(), "  connect_timeout: 5s\n");
        let o = p.run(&["check", "--db"]);
        assert_eq!(o.status.code(), Some(1), "{}", all(&o));
        let e = stderr(&o);
        assert!(!all(&o).contains("s3cret-Pa55"), "the password leaked: {e}");
        assert!(!e.contains("panicked"), "{e}");
        match db.kind {
            Kind::MySql => assert!(e.contains("MySQL/MariaDB") && e.contains("1045") && e.contains("Access denied"), "{e}"),
            _ => assert!(e.contains("PostgreSQL") && e.contains("3D000") && e.contains("does not exist"), "{e}"),
        }
    }

    networked async fn a_killed_connection_mid_run_loses_nothing(db: TestDb) {
        let p = project(db.url(), "  write_patience: 30s\n");
        let child = spawn_run(&p, "slow");
        // Node `a` is recorded and `slow` is in flight: kill every flowguard session.
        wait_for(&db, "SELECT COUNT(*) FROM node_attempts", 1).await;
        let killed = db.kill_connections().await;
        assert!(killed >= 1, "flowguard held no connection to kill");
        // And again while `d` runs.
        wait_for(&db, "SELECT COUNT(*) FROM node_attempts", 3).await;
        db.kill_connections().await;
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "{}", all(&o));
        assert!(!stderr(&o).contains("panicked"));
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").await, 1);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM node_attempts").await, 5);
        assert_eq!(db.query_i64("SELECT COUNT(DISTINCT seq) FROM node_attempts").await, 5, "no attempt written twice");
    }

    networked async fn a_short_outage_is_waited_out(db: TestDb) {
        let proxy = Proxy::start(&host_port(db.url()));
        let p = project(&proxy.url(db.url()), "  write_patience: 60s\n");
        let child = spawn_run(&p, "slow");
        wait_for(&db, "SELECT COUNT(*) FROM node_attempts", 1).await;
        proxy.cut();
        // `slow` finishes about 1.5 s later and its write meets the outage: once the write has been
        // turned away and tried again, the database comes back.
        proxy.until_refused(2).await;
        proxy.restore();
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "{}", all(&o));
        assert!(stderr(&o).contains("retrying"), "the write was retried: {}", stderr(&o));
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").await, 1);
        assert_eq!(db.query_i64("SELECT COUNT(*) FROM node_attempts").await, 5);
        assert_eq!(db.query_i64("SELECT COUNT(DISTINCT seq) FROM node_attempts").await, 5, "no attempt written twice");
    }

    networked async fn an_outage_longer_than_the_patience_fails_the_run(db: TestDb) {
        // The server goes down for good.
        outage_beyond_patience(&db, Proxy::cut, "").await;
    }

    networked async fn a_partition_longer_than_the_patience_fails_the_run(db: TestDb) {
        // Nothing answers and nothing closes: the patience still bounds the wait.
        outage_beyond_patience(&db, Proxy::hang, "the database stopped answering").await;
    }
}

async fn outage_beyond_patience(db: &TestDb, fault: fn(&Proxy), says: &str) {
    let proxy = Proxy::start(&host_port(db.url()));
    let mut u = url::Url::parse(&proxy.url(db.url())).expect("url");
    if db.kind == Kind::Postgres {
        // PostgreSQL trusts local connections, so a password in the URL is accepted and ignored:
        // it must still never be printed.
        u.set_password(Some("pw-NOT-in-output")).expect("password");
    }
    let p = project(u.as_str(), "  write_patience: 1s\n");
    let child = spawn_run(&p, "slow");
    wait_for(db, "SELECT COUNT(*) FROM node_attempts", 1).await;
    fault(&proxy);
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(1), "{}", all(&o));
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    assert!(!all(&o).contains("pw-NOT-in-output"), "{e}");
    // The outage starts while `slow` runs (on a loaded machine, possibly a little later).
    let failed_at = e.split("ended failed at `").nth(1).and_then(|r| r.split('`').next()).unwrap_or_else(|| panic!("{e}")).to_owned();
    assert!(e.contains(&format!("ended failed at `{failed_at}` with internal")), "{e}");
    assert!(e.contains("did not accept the write within 1s (storage.write_patience)") && e.contains(says), "{e}");
    proxy.restore();
    // What was committed before the outage is intact; the run row still says `running`
    // (its end could not be written) and is swept up as interrupted later.
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM node_attempts WHERE node_id = 'a'").await, 1);
    assert_eq!(db.query_i64(&format!("SELECT COUNT(*) FROM node_attempts WHERE node_id = '{failed_at}'")).await, 0);
    let order = ["a", "slow", "c", "d", "e"];
    let before = order.iter().position(|n| *n == failed_at).expect("a node of the flow") as i64;
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM node_attempts").await, before, "every attempt before `{failed_at}` is kept");
    assert_eq!(db.query_i64("SELECT COUNT(*) FROM runs WHERE status = 'running'").await, 1);
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    for (url, backend) in [
        ("mysql://flowguard:hunter2-secret@127.0.0.1:1/flowguard", "MySQL/MariaDB"),
        ("postgres://flowguard:hunter2-secret@127.0.0.1:1/flowguard", "PostgreSQL"),
    ] {
        let p = project(url, "  connect_timeout: 3s\n");
        for args in [&["check", "--db"][..], &["run", "hello"], &["runs"]] {
            let o = p.run(args);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {}", all(&o));
            let e = stderr(&o);
            assert!(e.contains(&format!("cannot open the {backend} database at 127.0.0.1:1/flowguard")), "{args:?}: {e}");
            assert!(e.to_lowercase().contains("connection refused"), "{args:?}: {e}");
            assert!(!all(&o).contains("hunter2-secret"), "{args:?}: the password leaked: {e}");
            assert!(!e.contains("panicked"), "{e}");
        }
    }
}

#[test]
fn check_without_db_does_not_touch_the_database() {
    let p = project("postgres://flowguard@127.0.0.1:1/flowguard", "");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let config = p.config();
    let o = crate::support::run_in(elsewhere.path(), &["--config", config.to_str().expect("utf-8 path"), "check"]);
    assert_eq!(o.status.code(), Some(0), "{}", all(&o));
}

backends! {
    networked async fn tls_settings_in_the_url(db: TestDb) {
        match db.kind {
            Kind::Postgres => {
                // The server has TLS (Debian's default snakeoil certificate): rustls must speak it.
                let url = format!("{}?sslmode=require", db.url());
                let store = flowguard::store::Store::open(&url, 2, Duration::from_secs(1)).await.expect("TLS connection");
                let ssl = store
                    .pool()
                    .fetch("SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[], &[flowguard::store::Ty::I64])
                    .await
                    .expect("pg_stat_ssl");
                assert_eq!(ssl[0][0].i64(), Some(1), "the session is encrypted");
                store.close().await;
                // Verifying against a CA that did not sign the server's certificate fails, clearly.
                let url = format!("{}?sslmode=verify-full&sslrootcert={}", db.url(), test_ca().display());
                let e = format!("{:#}", flowguard::store::Store::open(&url, 2, Duration::from_secs(1)).await.unwrap_err());
                assert!(e.contains("cannot open the PostgreSQL database") && e.to_lowercase().contains("certificate"), "{e}");
            }
            _ => {
                let have_ssl = db.query_i64("SELECT CASE WHEN @@have_ssl = 'YES' THEN 1 ELSE 0 END").await == 1;
                let url = format!("{}?ssl-mode=REQUIRED", db.url());
                let r = flowguard::store::Store::open(&url, 2, Duration::from_secs(1)).await;
                if have_ssl {
                    r.expect("TLS connection").close().await;
                } else {
                    let e = format!("{:#}", r.unwrap_err());
                    assert!(e.contains("cannot open the MySQL/MariaDB database") && e.to_lowercase().contains("tls"), "{e}");
                }
                let preferred = format!("{}?ssl-mode=PREFERRED", db.url());
                flowguard::store::Store::open(&preferred, 2, Duration::from_secs(1)).await.expect("PREFERRED connects").close().await;
            }
        }
    }
}

/// A self-signed CA of our own (not the server's).
fn test_ca() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fg_ca_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ca.pem");
    std::fs::write(&path, TEST_CA_PEM).expect("write ca");
    path
}

const TEST_CA_PEM: &str = include_str!("support/test_ca.pem");

fn spawn_run(p: &Project, flow: &str) -> Child {
    crate::support::bin()
        .current_dir(p.path())
        .args(["run", flow, "--format", "json"])
        .env("FLOWGUARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowguard run")
}

/// Waits (polling, up to a minute) until `sql` counts at least `n`.
async fn wait_for(db: &TestDb, sql: &str, n: i64) {
    let start = Instant::now();
    loop {
        // Fails until the run's process has created the tables.
        if db_count(db, sql).await.is_some_and(|c| c >= n) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "gave up waiting for {sql} >= {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn db_count(db: &TestDb, sql: &str) -> Option<i64> {
    let db_url = db.url().to_owned();
    let sql = sql.to_owned();
    let kind = db.kind;
    let r: Result<i64, sqlx::Error> = async {
        use sqlx::Connection;
        match kind {
            Kind::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&db_url).await?;
                let v = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await;
                let _ = c.close().await;
                v
            }
            _ => {
                let mut c = sqlx::PgConnection::connect(&db_url).await?;
                let v = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut c).await;
                let _ = c.close().await;
                v
            }
        }
    }
    .await;
    r.ok()
}

fn host_port(url: &str) -> String {
    let u = url::Url::parse(url).expect("url");
    format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port().unwrap_or(3306))
}
