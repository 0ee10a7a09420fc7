//! The store on SQLite, MySQL/MariaDB and PostgreSQL: the same records and queries on each.

use crate::support::db::{TestDb, backends};
use flowguard::store::{
    Arg, AttemptRecord, Backend, IngestWrite, LeaseLost, LeaseSettings, RunEnd, RunFilter, RunRecord, Stmt, Store, StoreOptions, Ty,
};
use flowguard::vocab::{AttemptStatus, RunStatus};
use std::borrow::Cow;
use std::time::Duration;

pub fn run(id: &str, flow: &str, started_at: i64) -> RunRecord {
    RunRecord {
        id: id.into(),
        flow: flow.into(),
        flow_hash: "abc123".into(),
        trigger: "cli".into(),
        status: RunStatus::Running,
        canary: false,
        inputs: Some(r#"{"category":"生活技巧"}"#.into()),
        started_at,
        ended_at: None,
        duration_ms: None,
        failed_node: None,
        error_kind: None,
        error_message: None,
        severity: None,
    }
}

pub fn attempt(run_id: &str, node: &str, seq: i64, started_at: i64) -> AttemptRecord {
    AttemptRecord {
        run_id: run_id.into(),
        flow: "f".into(),
        node_id: node.into(),
        kind: "llm".into(),
        seq,
        attempt: 1,
        iteration: None,
        status: AttemptStatus::Succeeded,
        started_at,
        ended_at: started_at + 120,
        duration_ms: 120,
        input_bytes: 10,
        output_bytes: 20,
        input: Some("in".into()),
        output: Some("out".into()),
        retried: false,
        action: Some("continue".into()),
        error_kind: None,
        error_message: None,
        model: Some("simulated:writer".into()),
        tokens_in: Some(11),
        tokens_out: Some(22),
        http_status: Some(200),
        cost_nanos: None,
        currency: None,
    }
}

fn failed_end(at: i64) -> RunEnd {
    RunEnd {
        status: Some(RunStatus::Failed),
        ended_at: at,
        duration_ms: 500,
        failed_node: Some("publish".into()),
        error_kind: Some("publish_failed".into()),
        error_message: Some("the platform said no".into()),
        severity: Some("medium".into()),
    }
}

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

backends! {
    async fn runs_and_attempts_round_trip(db: TestDb) {
        let store = db.open().await;
        let r = run("r1", "f", 1_000);
        store.insert_run(&r).await.unwrap();
        assert_eq!(store.get_run("r1").await.unwrap(), Some(r.clone()));
        let mut a1 = attempt("r1", "script", 1, 1_010);
        a1.status = AttemptStatus::Failed;
        a1.retried = true;
        a1.action = Some("retry".into());
        a1.error_kind = Some("generation_malformed".into());
        a1.error_message = Some("not JSON".into());
        a1.iteration = Some(3);
        store.insert_attempt(&a1).await.unwrap();
        let a2 = attempt("r1", "script", 2, 1_200);
        let a3 = attempt("r1", "publish", 3, 1_400);
        store.finish_run("r1", &failed_end(1_500), &[a2.clone(), a3.clone()]).await.unwrap();

        let got = store.get_run("r1").await.unwrap().unwrap();
        assert_eq!(got.status, RunStatus::Failed);
        assert_eq!((got.ended_at, got.duration_ms), (Some(1_500), Some(500)));
        assert_eq!(got.failed_node.as_deref(), Some("publish"));
        assert_eq!(got.error_kind.as_deref(), Some("publish_failed"));
        assert_eq!(got.severity.as_deref(), Some("medium"));
        assert_eq!(store.attempts("r1").await.unwrap(), vec![a1, a2, a3]);
        assert_eq!(store.get_run("nope").await.unwrap(), None);
        store.close().await;
    }

    async fn list_runs_filters(db: TestDb) {
        let store = db.open().await;
        for (id, flow, at) in [("a1", "alpha", 100), ("a2", "alpha", 200), ("b1", "beta", 300), ("a3", "alpha", 400)] {
            store.insert_run(&run(id, flow, at)).await.unwrap();
        }
        let mut canary = run("c1", "alpha", 500);
        canary.canary = true;
        store.insert_run(&canary).await.unwrap();
        store.finish_run("a2", &failed_end(250), &[]).await.unwrap();

        let all = store.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(ids(&all), ["a3", "b1", "a2", "a1"], "newest first, canaries excluded");
        let with_canary = store.list_runs(&RunFilter { include_canary: true, ..Default::default() }).await.unwrap();
        assert_eq!(ids(&with_canary), ["c1", "a3", "b1", "a2", "a1"]);
        assert!(with_canary[0].canary);
        let alpha = store.list_runs(&RunFilter { flow: Some("alpha".into()), ..Default::default() }).await.unwrap();
        assert_eq!(ids(&alpha), ["a3", "a2", "a1"]);
        let failed = store.list_runs(&RunFilter { status: Some(RunStatus::Failed), ..Default::default() }).await.unwrap();
        assert_eq!(ids(&failed), ["a2"]);
        let window = store.list_runs(&RunFilter { since_ms: Some(200), until_ms: Some(400), ..Default::default() }).await.unwrap();
        assert_eq!(ids(&window), ["b1", "a2"], "since inclusive, until exclusive");
        let limited = store.list_runs(&RunFilter { limit: Some(2), ..Default::default() }).await.unwrap();
        assert_eq!(ids(&limited), ["a3", "b1"]);
        let zero = store.list_runs(&RunFilter { limit: Some(0), ..Default::default() }).await.unwrap();
        assert!(zero.is_empty());
        store.close().await;
    }

    async fn find_runs_by_prefix(db: TestDb) {
        let store = db.open().await;
        for (id, at) in [("0190aaaa-1", 1), ("0190aaab-2", 2), ("0190bbbb-3", 3)] {
            store.insert_run(&run(id, "f", at)).await.unwrap();
        }
        assert_eq!(ids(&store.find_runs("0190aaa").await.unwrap()), ["0190aaab-2", "0190aaaa-1"]);
        assert_eq!(ids(&store.find_runs("0190b").await.unwrap()), ["0190bbbb-3"]);
        assert!(store.find_runs("zz").await.unwrap().is_empty());
        store.close().await;
    }

    async fn attempts_between_a_window(db: TestDb) {
        let store = db.open().await;
        store.insert_run(&run("early", "f", 100)).await.unwrap();
        store.insert_run(&run("in1", "f", 1_000)).await.unwrap();
        store.insert_run(&run("in2", "g", 1_500)).await.unwrap();
        let mut c = run("canary", "f", 1_200);
        c.canary = true;
        store.insert_run(&c).await.unwrap();
        for (r, n) in [("early", 1), ("in1", 2), ("in2", 1), ("canary", 1)] {
            for seq in 1..=n {
                store.insert_attempt(&attempt(r, "n", seq, 1)).await.unwrap();
            }
        }
        let got = store.attempts_between(None, 1_000, 2_000).await.unwrap();
        let keys: Vec<(&str, i64)> = got.iter().map(|a| (a.run_id.as_str(), a.seq)).collect();
        assert_eq!(keys, [("in1", 1), ("in1", 2), ("in2", 1)]);
        assert!(got.iter().all(|a| a.input.is_none() && a.output.is_none()), "payloads are left out");
        assert_eq!(got[0].tokens_in, Some(11));
        let only_g = store.attempts_between(Some("g"), 0, 10_000).await.unwrap();
        assert_eq!(only_g.len(), 1);
        assert_eq!(only_g[0].run_id, "in2");
        store.close().await;
    }

    async fn interrupt_stale_marks_only_old_running_runs(db: TestDb) {
        let store = db.open().await;
        store.insert_run(&run("old", "f", 1_000)).await.unwrap();
        store.insert_run(&run("old_other_flow", "g", 1_000)).await.unwrap();
        store.insert_run(&run("young", "f", 9_000)).await.unwrap();
        store.insert_run(&run("done", "f", 1_000)).await.unwrap();
        store.finish_run("done", &failed_end(2_000), &[]).await.unwrap();

        let hit = store.interrupt_stale(5_000, 10_000, Some("f")).await.unwrap();
        assert_eq!(hit, ["old"]);
        let old = store.get_run("old").await.unwrap().unwrap();
        assert_eq!(old.status, RunStatus::Interrupted);
        assert_eq!(old.error_kind.as_deref(), Some("interrupted"));
        assert_eq!(old.duration_ms, Some(9_000));
        assert_eq!(store.get_run("young").await.unwrap().unwrap().status, RunStatus::Running);
        assert_eq!(store.get_run("done").await.unwrap().unwrap().status, RunStatus::Failed);
        assert_eq!(store.interrupt_stale(5_000, 10_000, None).await.unwrap(), ["old_other_flow"]);
        store.close().await;
    }

    async fn nulls_round_trip(db: TestDb) {
        let store = db.open().await;
        let mut r = run("n", "f", 1);
        r.inputs = None;
        store.insert_run(&r).await.unwrap();
        let mut a = attempt("n", "x", 1, 1);
        (a.input, a.output, a.action, a.model, a.tokens_in, a.tokens_out, a.http_status, a.iteration) =
            (None, None, None, None, None, None, None, None);
        store.insert_attempt(&a).await.unwrap();
        let mut empty = attempt("n", "y", 2, 2);
        (empty.input, empty.output) = (Some(String::new()), Some(String::new()));
        store.insert_attempt(&empty).await.unwrap();
        assert_eq!(store.get_run("n").await.unwrap().unwrap().inputs, None);
        let got = store.attempts("n").await.unwrap();
        assert_eq!(got, vec![a, empty.clone()]);
        assert_eq!(got[1].output.as_deref(), Some(""), "an empty string is not NULL");
        store.close().await;
    }

    async fn non_ascii_round_trips(db: TestDb) {
        let store = db.open().await;
        // Simplified and traditional Chinese, a supplementary-plane CJK character, emoji (4-byte
        // UTF-8, which MySQL's 3-byte `utf8` would reject), a ZWJ sequence and combining marks.
        let text = "抖音脚本：秋天露营装备清单 · 繁體中文測試 · 𠮷野家 · 🚀🔥👨‍👩‍👧 · e\u{301} · 한국어 · العربية";
        let mut r = run("u", "流程_抖音", 1);
        r.inputs = Some(text.into());
        r.error_message = Some(text.into());
        store.insert_run(&r).await.unwrap();
        let mut a = attempt("u", "生成脚本", 1, 1);
        a.input = Some(text.repeat(50));
        a.output = Some(format!("{{\"title\":\"{text}\"}}"));
        a.error_message = Some("敏感词：国家级 🚫".into());
        store.insert_attempt(&a).await.unwrap();
        assert_eq!(store.get_run("u").await.unwrap().unwrap(), r);
        assert_eq!(store.attempts("u").await.unwrap(), vec![a]);
        assert_eq!(store.list_runs(&RunFilter { flow: Some("流程_抖音".into()), ..Default::default() }).await.unwrap().len(), 1);
        if store.backend() == Backend::MySql {
            assert_mysql_is_utf8mb4(&store, &db.name).await;
        }
        store.close().await;
    }

    async fn migrations_apply_twice_and_from_concurrent_opens(db: TestDb) {
        // Several processes starting at once on an empty database.
        let opens = (0..4).map(|_| db.open());
        let stores: Vec<Store> = futures::future::join_all(opens).await;
        stores[0].insert_run(&run("m", "f", 1)).await.unwrap();
        for s in &stores {
            assert!(s.get_run("m").await.unwrap().is_some());
        }
        let versions = stores[0].pool().fetch("SELECT version FROM flowguard_migrations ORDER BY version", &[], &[Ty::I64]).await.unwrap();
        let mut distinct = versions.clone();
        distinct.dedup();
        assert!(versions.len() >= 2 && distinct == versions, "each version is recorded once: {versions:?}");
        for s in stores {
            s.close().await;
        }
        // And again on a database that already has the schema: nothing lost.
        let again = db.open().await;
        assert!(again.get_run("m").await.unwrap().is_some());
        again.close().await;
    }

    async fn an_upgrade_keeps_when_each_external_run_was_last_heard_from(db: TestDb) {
        // Schema 19 kept no `runs.last_event_at`: the sweep for silent runs read every event.
        let store = db.open().await;
        let x = RunRecord { trigger: "external".into(), ..run("x1", "f", 1_000) };
        for (event, at) in [("e1", 2_000), ("e2", 7_000)] {
            let w = IngestWrite { events: vec![(event.into(), "x1".into())], runs: vec![x.clone()], ..Default::default() };
            store.apply_ingest(&w, at).await.unwrap();
        }
        let back_to_19: &[&str] = match store.backend() {
            Backend::Sqlite => &[
                "ALTER TABLE runs DROP COLUMN last_event_at",
                "CREATE TABLE events19 (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, received_at INTEGER NOT NULL)",
                "INSERT INTO events19 SELECT id, run_id, received_at FROM ingest_events",
                "DROP TABLE ingest_events",
                "ALTER TABLE events19 RENAME TO ingest_events",
                "CREATE INDEX ingest_events_run ON ingest_events (run_id, received_at)",
            ],
            _ => &["ALTER TABLE runs DROP COLUMN last_event_at", "CREATE INDEX ingest_events_run ON ingest_events (run_id, received_at)"],
        };
        // On one connection (SQLite: in one transaction), as a migration runs.
        store
            .pool()
            .with_migration_lock(async |c| {
                for sql in back_to_19.iter().chain(&["DELETE FROM flowguard_migrations WHERE version = 20"]) {
                    c.exec(sql, &[]).await.map_err(|e| anyhow::anyhow!("{sql}: {e}"))?;
                }
                Ok(())
            })
            .await
            .unwrap();
        store.close().await;
        let store = db.open().await;
        let s = &store;
        let silent = |cutoff| async move { s.silent_external_runs(cutoff).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>() };
        assert!(silent(5_000).await.is_empty(), "heard from at 7 000");
        assert_eq!(silent(8_000).await, ["x1"]);
        let mut known: Vec<String> = store.known_events(&["e1".into(), "e2".into(), "e3".into()]).await.unwrap().into_iter().collect();
        known.sort();
        assert_eq!(known, ["e1", "e2"], "event ids kept through the upgrade");
        store.close().await;
    }

    async fn retention_forgets_the_event_ids_of_the_runs_it_deletes(db: TestDb) {
        // Event ids are kept so a resent event is known; once its run is deleted, its ids go too.
        let store = db.open().await;
        let ended = |id: &str| RunRecord {
            trigger: "external".into(),
            status: RunStatus::Succeeded,
            ended_at: Some(1_500),
            duration_ms: Some(500),
            ..run(id, "f", 1_000)
        };
        // Old and ended; old but still running (kept); old and ended, but its events came after
        // the cutoff (the run goes, its ids stay until they are as old).
        let runs = [(ended("gone"), 2_000), (run("going", "f", 1_000), 2_000), (ended("late"), 9_000)];
        for (r, at) in runs {
            // More events than a batch of the prune, to walk past one.
            let events = (0..7).map(|i| (format!("{}-{i}", r.id), r.id.clone())).collect();
            let runs = vec![RunRecord { trigger: "external".into(), ..r }];
            store.apply_ingest(&IngestWrite { events, runs, ..Default::default() }, at).await.unwrap();
        }
        let pruned = store.prune_raw(5_000, Some(5_000), 3).await.unwrap();
        assert_eq!((pruned.runs, pruned.event_ids), (2, 7), "{pruned:?}");
        let ids: Vec<String> = ["gone", "going", "late"].iter().flat_map(|r| (0..7).map(move |i| format!("{r}-{i}"))).collect();
        let mut known: Vec<String> = store.known_events(&ids).await.unwrap().into_iter().collect();
        known.sort();
        let kept: Vec<String> = ids.iter().filter(|i| !i.starts_with("gone")).cloned().collect();
        assert_eq!(known, kept);
        store.close().await;
    }

    async fn a_newer_schema_is_refused(db: TestDb) {
        let store = db.open().await;
        store.pool().exec("INSERT INTO flowguard_migrations (version, applied_at) VALUES (?, ?)", &[99i64.into(), 0i64.into()]).await.unwrap();
        store.close().await;
        let err = Store::open(db.url(), 2, std::time::Duration::from_secs(1)).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("schema version 99") && text.contains("upgrade flowguard"), "{text}");
    }

    async fn a_rejected_write_fails_alone(db: TestDb) {
        let store = db.open().await;
        // Group commit: a statement the database rejects must not fail the writes committed with it.
        let bad = vec![(std::borrow::Cow::Borrowed("INSERT INTO no_such_table (x) VALUES (1)"), vec![])];
        let fine = run("fine", "f", 2);
        let (bad, good) = tokio::join!(store.write(bad), store.insert_run(&fine));
        let err = bad.unwrap_err().to_string();
        assert!(err.contains("refused the write") && err.contains("no_such_table"), "{err}");
        good.unwrap();
        assert!(store.get_run("fine").await.unwrap().is_some());
        store.close().await;
    }

    // Writes that share group commits fail alone: one refused by its run's fencing guard (another
    // process took the run over) and one the database rejects; every other write commits.
    async fn a_stale_and_a_rejected_write_fail_alone_among_many(db: TestDb) {
        let lease = LeaseSettings { length: Duration::from_millis(1), heartbeat: Duration::from_secs(3600) };
        let a = db.open_with(&StoreOptions { write_patience: Duration::from_secs(5), lease, ..Default::default() }).await;
        let b = db.open().await;
        a.insert_run(&run("taken", "f", 1)).await.unwrap();
        let kept: Vec<String> = (0..40).map(|i| format!("kept{i}")).collect();
        for id in &kept {
            a.insert_run(&run(id, "f", 1)).await.unwrap();
        }
        // `taken`'s lease (1 ms) runs out and the other store takes the run over.
        while b.take_over("taken", "running").await.unwrap().is_none() {}
        let stale = attempt("taken", "n", 1, 1);
        let attempts: Vec<AttemptRecord> = kept.iter().map(|id| attempt(id, "n", 1, 1)).collect();
        let bad: Vec<Stmt> = vec![(Cow::Borrowed("INSERT INTO no_such_table (x) VALUES (?)"), vec![Arg::from(1i64)])];
        // Sent together, so that the writer finds them waiting side by side.
        let mut writes: Vec<std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + '_>>> =
            attempts.iter().map(|r| Box::pin(a.record_attempt(r, Some("\"out\""))) as _).collect();
        writes.insert(20, Box::pin(a.record_attempt(&stale, Some("\"stale\""))));
        writes.insert(21, Box::pin(a.write(bad)));
        let mut results = futures::future::join_all(writes).await;
        let bad = results.remove(21).unwrap_err();
        let stale = results.remove(20).unwrap_err();
        assert!(stale.downcast_ref::<LeaseLost>().is_some(), "{stale:#}");
        assert!(format!("{bad:#}").contains("no_such_table"), "{bad:#}");
        for r in results {
            r.unwrap();
        }
        for id in &kept {
            assert_eq!(b.attempts(id).await.unwrap().len(), 1, "{id}");
            assert_eq!(b.outputs(id).await.unwrap().get("n").map(String::as_str), Some("\"out\""), "{id}");
        }
        assert!(b.attempts("taken").await.unwrap().is_empty());
        assert!(b.outputs("taken").await.unwrap().is_empty());
        a.close().await;
        b.close().await;
    }

    // Records sent together share group commits: on MySQL/PostgreSQL rows of one table travel as
    // one statement (on PostgreSQL one array per column, NULLs and all) and rollup rows of one key
    // fold into one.
    async fn records_sharing_a_commit_round_trip_and_count_once(db: TestDb) {
        let store = db.open().await;
        let ids: Vec<String> = (0..30).map(|i| format!("b{i}")).collect();
        let all = |rs: Vec<anyhow::Result<()>>| rs.into_iter().for_each(|r| r.unwrap());
        let runs: Vec<RunRecord> = ids.iter().map(|id| run(id, "批量", 1_000)).collect();
        all(futures::future::join_all(runs.iter().map(|r| store.insert_run(r))).await);
        let attempts: Vec<AttemptRecord> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut a = attempt(id, "生成", 1, 1_000);
                a.flow = "批量".into();
                if i % 2 == 0 {
                    (a.input, a.output, a.model, a.tokens_in, a.http_status) = (None, Some("脚本 🚀".into()), None, None, None);
                }
                a
            })
            .collect();
        all(futures::future::join_all(attempts.iter().map(|a| store.record_attempt(a, Some("\"出\"")))).await);
        let end = failed_end(2_000);
        all(futures::future::join_all(ids.iter().zip(&attempts).map(|(id, a)| store.finish_run(id, &end, std::slice::from_ref(a)))).await);
        for (id, a) in ids.iter().zip(&attempts) {
            assert_eq!(store.attempts(id).await.unwrap(), vec![a.clone()], "{id}");
            assert_eq!(store.outputs(id).await.unwrap().get("生成").map(String::as_str), Some("\"出\""), "{id}");
        }
        let w = store.rollup_window(Some("批量"), 0, 1 << 50, false).await.unwrap();
        assert_eq!(w.runs, vec![("批量".to_owned(), false, "failed".to_owned(), [30, 0, 30, 30 * 500])]);
        let attempts_counted: i64 = w.nodes.iter().map(|n| n.4[0]).sum();
        assert_eq!(attempts_counted, 30);
        assert_eq!(w.run_errors, vec![("批量".to_owned(), "publish".to_owned(), "publish_failed".to_owned(), 30)]);
        store.close().await;
    }

    // What the writer sends for rows gathered into one statement (on PostgreSQL, one array per
    // column) runs on each backend and leaves what the statements one by one would: NULLs, quotes
    // and non-ASCII kept, upsert rows of one key folded (replaced, added, first kept), UPDATEs of
    // one shape by key gathered (MySQL/PostgreSQL) and kept in order with what touches their rows.
    async fn merged_rows_leave_what_the_statements_one_by_one_would(db: TestDb) {
        let store = db.open().await;
        let backend = store.backend();
        let (text, tail) = match backend {
            Backend::MySql => ("VARCHAR(64)", "ON DUPLICATE KEY UPDATE s = VALUES(s), n = n + VALUES(n)"),
            _ => ("TEXT", "ON CONFLICT (k) DO UPDATE SET s = excluded.s, n = merge_probe.n + excluded.n"),
        };
        store.pool().exec(&format!("CREATE TABLE merge_probe (k BIGINT PRIMARY KEY, first {text}, s {text}, n BIGINT)"), &[]).await.unwrap();
        let ins = |k: i64, s: Option<&str>, n: i64| -> Stmt {
            let sql = format!("INSERT INTO merge_probe (k, first, s, n) VALUES (?, ?, ?, ?) {tail}");
            (Cow::Owned(sql), vec![k.into(), s.into(), s.into(), n.into()])
        };
        let set = |k: i64, s: &str, n: i64| -> Stmt {
            (Cow::Borrowed("UPDATE merge_probe SET s = ?, n = ? WHERE k = ?"), vec![s.into(), n.into(), k.into()])
        };
        let mark = |k: i64| -> Stmt { (Cow::Borrowed("UPDATE merge_probe SET first = 'z' WHERE k = ? AND n > 0"), vec![k.into()]) };
        let quoted = "it's \"q\" \\";
        let stmts = vec![
            ins(1, Some("秋天 🚀"), 5),
            ins(2, None, 0),
            ins(3, Some(quoted), -1),
            ins(1, Some("again"), 7),
            ins(2, Some("后"), 2),
            set(3, "改", 9),
            set(1, "一", 1),
            mark(1),
            mark(2),
            set(2, "二", 20),
        ];
        let merged = flowguard::store::merge_writes(stmts, backend);
        let want_stmts = match backend {
            Backend::Postgres | Backend::MySql => 4,
            // SQLite: as they come (inline on the writer's thread, nothing to save).
            Backend::Sqlite => 10,
        };
        assert_eq!(merged.len(), want_stmts, "{:#?}", merged.iter().map(|m| &m.0).collect::<Vec<_>>());
        store.pool().exec_batch(&merged).await.unwrap();
        let got = store.pool().fetch("SELECT k, first, s, n FROM merge_probe ORDER BY k", &[], &[Ty::I64, Ty::Str, Ty::Str, Ty::I64]).await.unwrap();
        let got: Vec<(i64, Option<String>, Option<String>, i64)> =
            got.iter().map(|r| (r[0].i64().unwrap(), r[1].str(), r[2].str(), r[3].i64().unwrap())).collect();
        let want = [(1, Some("z"), Some("一"), 1), (2, Some("z"), Some("二"), 20), (3, Some(quoted), Some("改"), 9)];
        let want: Vec<(i64, Option<String>, Option<String>, i64)> =
            want.iter().map(|(k, f, s, n)| (*k, f.map(str::to_owned), s.map(str::to_owned), *n)).collect();
        assert_eq!(got, want);
        store.close().await;
    }

    // PostgreSQL plans each execution of a prepared statement for the tables as they are (a plan
    // kept from a new database's empty tables would scan them whole), unless the URL says otherwise.
    async fn postgres_plans_each_execution_unless_the_url_says_otherwise(db: TestDb) {
        let probe = db.open().await;
        let postgres = probe.backend() == Backend::Postgres;
        probe.close().await;
        if !postgres {
            return;
        }
        let mode = |url: String| async move {
            let store = Store::open(&url, 2, Duration::from_secs(5)).await.unwrap();
            let got = store.pool().fetch("SHOW plan_cache_mode", &[], &[Ty::Str]).await.unwrap()[0][0].str();
            store.close().await;
            got
        };
        assert_eq!(mode(db.url().to_owned()).await.as_deref(), Some("force_custom_plan"));
        let sep = if db.url().contains('?') { '&' } else { '?' };
        let theirs = format!("{}{sep}options=-c%20plan_cache_mode%3Dforce_generic_plan", db.url());
        assert_eq!(mode(theirs).await.as_deref(), Some("force_generic_plan"));
    }

    async fn writes_are_idempotent(db: TestDb) {
        // A batch retried after its COMMIT went through unacknowledged must not double anything.
        let store = db.open().await;
        let r = run("i", "f", 1);
        let a = attempt("i", "n", 1, 1);
        for _ in 0..2 {
            store.insert_run(&r).await.unwrap();
            store.insert_attempt(&a).await.unwrap();
            store.finish_run("i", &failed_end(9), std::slice::from_ref(&a)).await.unwrap();
        }
        assert_eq!(store.attempts("i").await.unwrap(), vec![a]);
        assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap().len(), 1);
        assert_eq!(store.get_run("i").await.unwrap().unwrap().status, RunStatus::Failed);
        store.close().await;
    }
}

/// The connection speaks utf8mb4 and every flowguard table stores it.
async fn assert_mysql_is_utf8mb4(store: &Store, db: &str) {
    let pool = store.pool();
    let vars = pool
        .fetch("SELECT @@character_set_client, @@character_set_connection, @@character_set_results", &[], &[Ty::Str, Ty::Str, Ty::Str])
        .await
        .unwrap();
    for v in &vars[0] {
        assert_eq!(v.str().as_deref(), Some("utf8mb4"), "connection charsets: {vars:?}");
    }
    let tables = pool
        .fetch(
            "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            &[db.into()],
            &[Ty::Str, Ty::Str],
        )
        .await
        .unwrap();
    assert!(tables.len() >= 2, "{tables:?}");
    for t in &tables {
        let name = t[0].str().unwrap_or_default();
        if name == "flowguard_migrations" {
            continue;
        }
        assert!(t[1].str().unwrap_or_default().starts_with("utf8mb4"), "table {name} is {:?}", t[1]);
    }
}

backends! {
    async fn kept_outputs_are_replaced_when_a_node_runs_again(db: TestDb) {
        let store = db.open().await;
        store.insert_run(&run("k1", "f", 1_000)).await.unwrap();
        store.record_attempt(&attempt("k1", "script", 1, 1_010), Some(r#"{"title":"第一版"}"#)).await.unwrap();
        store.record_attempt(&attempt("k1", "qc", 2, 1_020), Some(r#"{"passed":false}"#)).await.unwrap();
        // A repair re-runs the script: its kept output is replaced, not doubled.
        store.record_attempt(&attempt("k1", "script", 3, 1_030), Some(r#"{"title":"修正版 ✅"}"#)).await.unwrap();
        let kept = store.outputs("k1").await.unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept["script"], r#"{"title":"修正版 ✅"}"#);
        assert_eq!(store.max_seq("k1").await.unwrap(), 3);
    }
}

// The engine's block check reads all blocks at once and keeps them a second: a block or unblock
// made through the same store is seen at once, one made by another process within the second.
backends! {
    async fn the_engines_block_check_sees_its_own_blocks_at_once_and_others_soon(db: TestDb) {
        use flowguard::store::FlowBlock;
        let (here, there) = (db.open().await, db.open().await);
        let block = |by: &str| FlowBlock { flow: "f".into(), blocked_at: 1, run_id: None, reason: Some("r".into()), blocked_by: by.into() };
        assert!(here.flow_block_cached("f").await.unwrap().is_none());
        here.block_flow(&block("here")).await.unwrap();
        assert_eq!(here.flow_block_cached("f").await.unwrap().map(|b| b.blocked_by).as_deref(), Some("here"), "own block seen at once");
        assert!(here.unblock_flow("f", "here", None, 2).await.unwrap());
        assert!(here.flow_block_cached("f").await.unwrap().is_none(), "own unblock seen at once");
        there.block_flow(&block("there")).await.unwrap();
        let start = std::time::Instant::now();
        while here.flow_block_cached("f").await.unwrap().is_none() {
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "another process's block is never seen");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        here.close().await;
        there.close().await;
    }
}

/// A SQLite transaction (`Tx`: alerts, breakers) runs its statements inline on the calling thread,
/// but its `BEGIN` must still wait for another connection's write lock, and off the runtime: here
/// the runtime has one thread, and the holder lets go only after the waiting task has started.
#[tokio::test]
async fn a_sqlite_transaction_waits_for_another_connections_write_lock_without_blocking_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let holder = flowguard::store::Pool::connect(&url, &Default::default()).await.expect("pool");
    holder.exec_script("CREATE TABLE t (x INTEGER)").await.expect("table");
    let waiter = flowguard::store::Pool::connect(&url, &Default::default()).await.expect("pool");
    let held = holder.begin().await.expect("the write lock");
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _ = started_tx.send(());
        let mut tx = waiter.begin().await?;
        tx.exec("INSERT INTO t (x) VALUES (?)", &[7i64.into()]).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(waiter)
    });
    started.await.expect("the task started");
    // Let the task reach its BEGIN and find the lock taken.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    drop(held);
    let waiter = task.await.expect("task").expect("the transaction waited for the lock, then committed");
    let rows = waiter.fetch("SELECT x FROM t", &[], &[flowguard::store::Ty::I64]).await.expect("rows");
    assert_eq!(rows, vec![vec![flowguard::store::Val::I64(Some(7))]]);
}
