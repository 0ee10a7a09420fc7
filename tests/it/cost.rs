//! Tokens and cost: each priced model call's cost is recorded on its attempt, summed per run
//! (`show`, the API), per flow and window (`stats`) and per day in the daily report.

use crate::support::db::{TestDb, backends};
use crate::support::fake_openai::{FakeOpenAi, KEY, Reply};
use flowguard::clock::{SharedClock, TestClock};
use flowguard::config::Config;
use flowguard::engine::{Engine, RunRequest};
use flowguard::nodes::Registry;
use flowguard::report::{self, ReportCtx, ReportsConfig, schedule};
use flowguard::vocab::RunStatus;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

// 2026-11-27 10:00 in Shanghai.
const T0: i64 = 1_795_744_800_000;

backends! {
    async fn each_call_is_priced_and_summed_per_run_per_flow_and_per_day(db: TestDb) {
        // The fake answers with usage 12 prompt + 34 completion tokens; the first call fails (no usage).
        let fake = FakeOpenAi::start(vec![Reply::Error(500, None, None), Reply::Content(r#"{"a":1}"#.into())]).await;
        let yaml = format!(
            "timezone: Asia/Shanghai\nmodels:\n  m:\n    provider: openai\n    base_url: {}\n    model: fake-model\n    api_key: {KEY}\n    price: {{ currency: CNY, prompt: 2, completion: 8 }}\n",
            fake.base_url
        );
        let cfg = Config::parse(Path::new("flowguard.yaml"), &yaml, Path::new("/tmp"), &|_| None).unwrap_or_else(|d| panic!("{d}"));
        let reg = Arc::new(Registry::from_config(&cfg).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.yaml");
        std::fs::write(&path, "name: f\nnodes:\n  - id: w\n    kind: llm\n    model: m\n    prompt: x\n    json: true\n").unwrap();
        let flow = Arc::new(flowguard::flow::load(&path, &reg).unwrap());
        let clock: SharedClock = Arc::new(TestClock::new(T0));
        let store = db.open().await;
        let engine = Engine::new(store.clone(), reg, clock, 65536);
        let mut ids = Vec::new();
        for _ in 0..2 {
            let o = engine.run(RunRequest { flow: flow.clone(), inputs: Default::default(), trigger: "test".into(), canary: false }).await.unwrap();
            assert!(o.status.is_success(), "{o:?}");
            ids.push(o.run_id);
        }
        // 12 × ¥2/M + 34 × ¥8/M = ¥0.000296 a call.
        let first = store.attempts(&ids[0]).await.unwrap();
        assert_eq!(first.iter().map(|a| a.cost_nanos).collect::<Vec<_>>(), vec![None, Some(296_000)]);
        assert_eq!(first[1].currency.as_deref(), Some("CNY"));
        let run_cost = flowguard::stats::run_cost(&first);
        assert_eq!((run_cost.len(), run_cost[0].nanos, run_cost[0].tokens_in, run_cost[0].tokens_out), (1, 296_000, 12, 34));
        assert_eq!(flowguard::stats::cost_text(&run_cost), "0.000296 CNY");
        assert_eq!(engine.store.get_run(&ids[1]).await.unwrap().unwrap().status, RunStatus::Succeeded);

        // Per flow and window, from the rollups.
        let s = flowguard::stats::collect(&store, None, T0 - 3_600_000, T0 + 3_600_000).await.unwrap();
        let f = s.flows.iter().find(|f| f.flow == "f").unwrap();
        assert_eq!((f.cost[0].currency.as_str(), f.cost[0].nanos, f.cost[0].tokens_in), ("CNY", 592_000, 24));
        assert_eq!(s.total.cost, f.cost);

        // The daily report: cost of the day, and per flow.
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let ctx = ReportCtx { store: store.clone(), cfg: ReportsConfig::default(), tz: tz.clone(), tz_name: "Asia/Shanghai".into(), locale: "en".into(), limits: BTreeMap::new() };
        let (rep, rendered) = report::generate(&ctx, &schedule::day("2026-11-27".parse().unwrap(), &tz), T0).await.unwrap();
        assert_eq!(rep.stats.total.cost[0].nanos, 592_000);
        assert!(rendered.markdown.contains("Model cost of the day: 0.000592 CNY"), "{}", rendered.markdown);
        assert!(rendered.markdown.contains("Model cost per flow"), "{}", rendered.markdown);
    }
}
