//! The simulator: a model and HTTP endpoints that answer in-process, with configurable latency and
//! a fault rate per failure mode, deterministic under a seed. It is for drills and the demo, and it
//! says so: its model names start with `simulated:` and its answers carry `"simulated": true`.

use crate::clock::SharedClock;
use crate::config::ModelConfig;
use crate::model::{ChatReply, ChatRequest, ModelClient};
use crate::nodes::{Meta, NodeError};
use crate::vocab::ErrorKind;
use futures::future::BoxFuture;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub mod config;
pub use config::{EndpointFaults, ModelFaults, SimEndpointConfig, SimModelConfig};

/// Picks at most one fault per call: each `hit(rate)` claims the next `rate` of the unit interval,
/// so the rates of one draw add up and a seeded sequence of draws is reproducible.
struct FaultDraw {
    u: f64,
    acc: f64,
}

impl FaultDraw {
    fn new(u: f64) -> Self {
        FaultDraw { u, acc: 0.0 }
    }
    fn hit(&mut self, rate: f64) -> bool {
        let hit = self.u >= self.acc && self.u < self.acc + rate;
        self.acc += rate;
        hit
    }
}

/// The simulated time to answer; a hang lasts past any node's time limit.
async fn answer_time(clock: &SharedClock, latency: Duration, hang: bool) {
    if hang {
        clock.sleep(Duration::from_secs(3600)).await;
    }
    clock.sleep(latency).await;
}

/// Words the simulator slips in for `sensitive` faults: superlatives China's advertising law bans.
pub const BANNED_SAMPLES: &[&str] = &["国家级", "最佳", "第一品牌", "绝对有效"];

pub struct SimModel {
    name: String,
    latency: Duration,
    faults: ModelFaults,
    rng: Mutex<fastrand::Rng>,
}

impl SimModel {
    pub fn new(name: &str, cfg: &ModelConfig) -> Self {
        SimModel {
            name: name.to_owned(),
            latency: cfg.simulate.latency.get(),
            faults: cfg.simulate.faults.clone(),
            rng: Mutex::new(fastrand::Rng::with_seed(cfg.simulate.seed)),
        }
    }

    fn draw(&self) -> (f64, f64) {
        let mut rng = self.rng.lock().expect("sim rng");
        (rng.f64(), rng.f64())
    }

    async fn answer(&self, req: &ChatRequest, clock: &SharedClock) -> Result<ChatReply, NodeError> {
        let (u, v) = self.draw();
        let f = &self.faults;
        let model = format!("simulated:{}", self.name);
        let meta = |status: u16| Meta { model: Some(model.clone()), http_status: Some(status), ..Default::default() };
        let err = |kind: ErrorKind, status: u16, msg: &str| NodeError::new(kind, format!("[simulator] {msg}")).with_meta(meta(status));
        let mut draw = FaultDraw::new(u);
        let mut hit = |rate: f64| draw.hit(rate);
        answer_time(clock, self.latency, hit(f.timeout)).await;
        if hit(f.rate_limited) {
            let mut e = err(ErrorKind::RateLimited, 429, "HTTP 429: Rate limit reached for requests");
            e.retry_after = Some(Duration::from_secs(1));
            return Err(e);
        }
        if hit(f.auth) {
            return Err(err(ErrorKind::AuthExpired, 401, "HTTP 401, code invalid_api_key: Incorrect API key provided"));
        }
        if hit(f.quota) {
            return Err(err(ErrorKind::QuotaExhausted, 429, "HTTP 429, code insufficient_quota: You exceeded your current quota"));
        }
        if hit(f.server_error) {
            return Err(err(ErrorKind::Upstream5xx, 503, "HTTP 503: The server is overloaded"));
        }
        if hit(f.content_filter) {
            return Err(err(ErrorKind::ContentBlocked, 200, "the provider's content filter stopped the answer"));
        }
        if hit(f.empty) {
            return Err(err(ErrorKind::GenerationEmpty, 200, "the model returned empty content"));
        }
        if hit(f.length) {
            return Err(err(ErrorKind::GenerationMalformed, 200, "the answer was cut off (finish_reason=length)"));
        }
        let topic = topic_of(&req.prompt);
        let mut content = if hit(f.malformed) {
            format!("好的！下面是关于「{topic}」的脚本：标题是{topic}，然后……")
        } else {
            script(&topic, v)
        };
        let repairing = req.prompt.contains(crate::nodes::REPAIR_MARK_ZH) || req.prompt.contains(crate::nodes::REPAIR_MARK_EN);
        if hit(f.sensitive) && !repairing {
            let word = BANNED_SAMPLES[(v * BANNED_SAMPLES.len() as f64) as usize % BANNED_SAMPLES.len()];
            content = content.replace("亲测", word);
        }
        Ok(ChatReply {
            tokens_in: Some((req.prompt.chars().count() / 2) as i64 + 20),
            tokens_out: Some((content.chars().count() / 2) as i64),
            content,
            finish_reason: Some("stop".into()),
            model,
            status: 200,
        })
    }
}

impl ModelClient for SimModel {
    fn chat<'a>(&'a self, req: &'a ChatRequest, clock: &'a SharedClock) -> BoxFuture<'a, Result<ChatReply, NodeError>> {
        Box::pin(self.answer(req, clock))
    }
    fn label(&self) -> String {
        format!("simulated:{}", self.name)
    }
}

/// The topic of a prompt: the text after `主题:`/`主题：`/`Topic:` on its line, else the prompt's start.
fn topic_of(prompt: &str) -> String {
    for line in prompt.lines() {
        for tag in ["主题：", "主题:", "Topic:", "topic:"] {
            if let Some(rest) = line.split_once(tag).map(|(_, r)| r.trim())
                && !rest.is_empty()
            {
                return rest.chars().take(40).collect();
            }
        }
    }
    prompt.chars().take(20).collect()
}

fn script(topic: &str, v: f64) -> String {
    let hooks = ["别划走！", "三秒告诉你", "90% 的人都不知道", "看完你就懂了"];
    let hook = hooks[(v * hooks.len() as f64) as usize % hooks.len()];
    json!({
        "title": format!("{topic}｜一分钟讲清楚"),
        "hook": format!("{hook}{topic}的关键就一点。"),
        "body": format!("今天聊聊{topic}。第一步，先想清楚为什么；第二步，准备好需要的东西；第三步，动手做并记录结果。亲测这样做省时又省心，评论区告诉我你的做法。"),
        "hashtags": ["#干货分享", format!("#{}", topic.chars().filter(|c| !c.is_whitespace()).collect::<String>()), "#抖音小技巧"],
        "simulated": true,
    })
    .to_string()
}

/// One simulated answer: status, body, and Retry-After.
pub struct SimAnswer {
    pub status: u16,
    pub body: Json,
    pub retry_after: Option<Duration>,
}

#[derive(Debug)]
pub struct SimEndpoint {
    name: String,
    cfg: SimEndpointConfig,
    latency: Duration,
    state: Mutex<(fastrand::Rng, u64, HashMap<String, Json>)>,
}

impl SimEndpoint {
    pub fn new(name: &str, cfg: SimEndpointConfig) -> Self {
        let latency = cfg.latency.get();
        let rng = fastrand::Rng::with_seed(cfg.seed);
        SimEndpoint { name: name.to_owned(), cfg, latency, state: Mutex::new((rng, 0, HashMap::new())) }
    }

    /// Answers a request. A repeated idempotency key gets the first answer again, as a target
    /// that honours idempotency keys does.
    pub async fn call(&self, body: &Json, idempotency_key: Option<&str>, clock: &SharedClock) -> SimAnswer {
        let (u, n, replay) = {
            let mut st = self.state.lock().expect("sim state");
            st.1 += 1;
            let replay = idempotency_key.and_then(|k| st.2.get(k).cloned());
            (st.0.f64(), st.1, replay)
        };
        let f = &self.cfg.faults;
        let mut draw = FaultDraw::new(u);
        let mut hit = |rate: f64| draw.hit(rate);
        answer_time(clock, self.latency, hit(f.timeout)).await;
        if let Some(body) = replay {
            return SimAnswer { status: 200, body, retry_after: None };
        }
        let fail = |status: u16, body: Json| SimAnswer { status, body, retry_after: None };
        if hit(f.rate_limited) {
            return SimAnswer {
                status: 429,
                body: json!({"message": "[simulator] too many requests"}),
                retry_after: Some(Duration::from_secs(1)),
            };
        }
        if hit(f.server_error) {
            return fail(503, json!({"message": "[simulator] service unavailable"}));
        }
        if hit(f.auth) {
            return fail(401, json!({"code": "access_token_expired", "message": "[simulator] access token expired"}));
        }
        if hit(f.rejected) {
            return fail(422, json!({"message": "[simulator] content rejected: title too long for the platform"}));
        }
        if hit(f.empty) {
            return SimAnswer { status: 200, body: self.cfg.empty_body.clone().unwrap_or(json!({})), retry_after: None };
        }
        let answer = match &self.cfg.body {
            Some(b) => b.clone(),
            None => {
                json!({"id": format!("sim-{}-{n}", self.name), "status": "published", "simulated": true, "received_bytes": body.to_string().len()})
            }
        };
        if let Some(k) = idempotency_key {
            self.state.lock().expect("sim state").2.insert(k.to_owned(), answer.clone());
        }
        SimAnswer { status: 200, body: answer, retry_after: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TestClock;
    use std::sync::Arc;

    fn model(faults: ModelFaults, seed: u64) -> SimModel {
        let cfg: ModelConfig = serde_json::from_value(json!({"provider": "simulated"})).unwrap();
        let mut m = SimModel::new("writer", &cfg);
        m.faults = faults;
        m.rng = Mutex::new(fastrand::Rng::with_seed(seed));
        m
    }

    #[tokio::test]
    async fn same_seed_same_answers() {
        let clock: SharedClock = Arc::new(TestClock::new(0));
        let faults = ModelFaults { empty: 0.3, malformed: 0.3, ..Default::default() };
        let req = ChatRequest { prompt: "主题: 露营".into(), ..Default::default() };
        let (a, b) = (model(faults.clone(), 7), model(faults, 7));
        for _ in 0..20 {
            let (x, y) = (a.answer(&req, &clock).await, b.answer(&req, &clock).await);
            assert_eq!(
                format!("{:?}", x.map(|r| r.content).map_err(|e| e.kind)),
                format!("{:?}", y.map(|r| r.content).map_err(|e| e.kind))
            );
        }
    }

    #[tokio::test]
    async fn clean_answers_are_json_scripts_about_the_topic() {
        let clock: SharedClock = Arc::new(TestClock::new(0));
        let reply = model(ModelFaults::default(), 1)
            .answer(&ChatRequest { prompt: "写一个脚本\n主题: 露营".into(), ..Default::default() }, &clock)
            .await
            .unwrap();
        let v: Json = serde_json::from_str(&reply.content).unwrap();
        assert!(v["title"].as_str().unwrap().contains("露营"));
        assert_eq!(v["simulated"], true);
        assert!(reply.model.starts_with("simulated:"));
    }
}
