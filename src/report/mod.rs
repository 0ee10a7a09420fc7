//! Reports: the daily report (success rate, average duration, top failing nodes, failure causes,
//! day-over-day change), the weekly failure analysis (cause distribution, slowest nodes, retry hot
//! spots, suggestions from the rules in [`weekly_suggestions`]), their renderings (Feishu card,
//! Markdown, HTML + text, JSON), when they are due, and retention. Figures come from
//! [`crate::stats`], which reads rollups only.
//!
//! Delivery is behind [`ReportSink`]: the CLI's `--send` prints; the alert channels implement it.

pub mod config;
pub mod outbox;
pub mod render;
pub mod schedule;

pub use config::ReportsConfig;
pub use render::Rendered;
pub use schedule::{Kind, Period};

use crate::config::Config;
use crate::flow::Flow;
use crate::stats::{self, NodeRef, Stats};
use crate::store::Store;
use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where rendered reports go. Channels (Feishu, email, …) implement it; each takes the rendering
/// it speaks (`feishu_card`, `html` + `text`, `markdown`).
pub trait ReportSink: Send + Sync {
    fn send<'a>(&'a self, report: &'a Rendered) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Prints the Markdown rendering to stdout (`flowguard report … --send` until channels exist).
pub struct StdoutSink;

impl ReportSink for StdoutSink {
    fn send<'a>(&'a self, r: &'a Rendered) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            println!("{}", r.markdown);
            Ok(())
        })
    }
}

/// What building a report needs.
#[derive(Clone)]
pub struct ReportCtx {
    pub store: Store,
    pub cfg: ReportsConfig,
    pub tz: jiff::tz::TimeZone,
    pub tz_name: String,
    pub locale: String,
    /// Each node's time limit, from the loaded flows: (flow, node) → limit.
    pub limits: BTreeMap<(String, String), Duration>,
}

impl ReportCtx {
    pub fn new(store: Store, config: &Config, flows: &BTreeMap<String, Arc<Flow>>) -> ReportCtx {
        let limits = flows.values().flat_map(|f| f.nodes.iter().map(move |n| ((f.name.clone(), n.id.clone()), n.timeout))).collect();
        ReportCtx {
            store,
            cfg: config.reports.clone(),
            tz: config.time_zone(),
            tz_name: config.timezone.clone(),
            locale: config.locale.clone(),
            limits,
        }
    }
}

/// A share of failures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cause {
    pub error_kind: String,
    pub count: u64,
    pub share: f64,
}

/// A node by its share of its flow's time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeLine {
    pub flow: String,
    pub node: String,
    pub attempts: u64,
    pub time_share: Option<f64>,
    pub avg_ms: Option<f64>,
    pub p95_ms: Option<i64>,
    pub retries: u64,
    pub retry_rate: Option<f64>,
}

/// An optimisation suggestion: which rule, about what, and the figures it rests on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suggestion {
    /// `timeout_near_limit`, `dominant_node`, `retry_hot_spot`, `dominant_error_kind`,
    /// `model_failure_doubled`, `success_rate_fell`.
    pub rule: &'static str,
    pub flow: Option<String>,
    pub subject: String,
    pub figures: BTreeMap<&'static str, f64>,
    /// The advice, in the configured language, citing the figures.
    pub text: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub kind: Kind,
    pub period: Period,
    pub timezone: String,
    pub locale: String,
    pub generated_at_ms: i64,
    /// The period's statistics, with the change against the period before.
    pub stats: Stats,
    pub top_failing_nodes: Vec<NodeRef>,
    /// Error kinds of the runs that did not succeed.
    pub causes: Vec<Cause>,
    /// Error kinds of every failed attempt, recovered ones included.
    pub attempt_causes: Vec<Cause>,
    /// Weekly: nodes by share of their flow's time.
    pub slowest_nodes: Vec<NodeLine>,
    /// Weekly: nodes by retries.
    pub retry_hot_spots: Vec<NodeLine>,
    pub suggestions: Vec<Suggestion>,
}

fn causes(counts: &BTreeMap<String, u64>) -> Vec<Cause> {
    let total: u64 = counts.values().sum();
    let mut v: Vec<Cause> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| Cause { error_kind: k.clone(), count: *n, share: *n as f64 / total.max(1) as f64 })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error_kind.cmp(&b.error_kind)));
    v
}

fn node_lines(s: &Stats) -> Vec<NodeLine> {
    s.flows
        .iter()
        .flat_map(|f| {
            f.nodes.iter().map(|n| NodeLine {
                flow: f.flow.clone(),
                node: n.node.clone(),
                attempts: n.attempts,
                time_share: n.time_share,
                avg_ms: n.duration.avg_ms,
                p95_ms: n.duration.p95_ms,
                retries: n.retries,
                retry_rate: n.retry_rate,
            })
        })
        .collect()
}

/// Builds the report of a period (daily or weekly).
pub async fn build(ctx: &ReportCtx, period: &Period, now_ms: i64) -> anyhow::Result<Report> {
    let (s, prev) = stats::collect_with_previous(&ctx.store, None, period.since_ms, period.until_ms).await?;
    let mut attempt_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for f in &s.flows {
        for n in &f.nodes {
            for (k, c) in &n.failures_by_kind {
                *attempt_kinds.entry(k.clone()).or_default() += c;
            }
        }
    }
    let top_n = if period.kind == Kind::Daily { ctx.cfg.top } else { ctx.cfg.top.max(5) };
    let mut report = Report {
        kind: period.kind,
        period: period.clone(),
        timezone: ctx.tz_name.clone(),
        locale: ctx.locale.clone(),
        generated_at_ms: now_ms,
        top_failing_nodes: s.top_failing_nodes.iter().take(top_n).cloned().collect(),
        causes: causes(&s.total.failures_by_kind),
        attempt_causes: causes(&attempt_kinds),
        slowest_nodes: Vec::new(),
        retry_hot_spots: Vec::new(),
        suggestions: Vec::new(),
        stats: s,
    };
    if period.kind == Kind::Weekly {
        let mut slow = node_lines(&report.stats);
        slow.sort_by(|a, b| b.time_share.partial_cmp(&a.time_share).unwrap_or(std::cmp::Ordering::Equal));
        report.slowest_nodes = slow.into_iter().take(5).collect();
        let mut hot: Vec<NodeLine> = node_lines(&report.stats).into_iter().filter(|n| n.retries > 0).collect();
        hot.sort_by(|a, b| b.retries.cmp(&a.retries).then_with(|| (&a.flow, &a.node).cmp(&(&b.flow, &b.node))));
        report.retry_hot_spots = hot.into_iter().take(5).collect();
        report.suggestions = weekly_suggestions(&report.stats, &prev, &ctx.cfg.rules, &ctx.limits, ctx.locale == "en");
    }
    Ok(report)
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// The suggestion rules, each with its threshold from `reports.rules`:
/// - `timeout_near_limit`: a node's timeout rate > `timeout_rate` while its p95 is within
///   `timeout_p95_margin` of its time limit → raise the limit or change model.
/// - `dominant_node`: one node > `node_time_share` of its flow's node time → speed it up first.
/// - `retry_hot_spot`: a node's retries / attempts > `retry_rate` → fix the cause, retries cost time.
/// - `dominant_error_kind`: one error kind > `error_kind_share` of failed runs → address that cause.
/// - `model_failure_doubled`: a model's attempt failure rate ≥ `model_failure_growth` × last week's.
/// - `success_rate_fell`: a flow's success rate fell more than `success_drop_pts` points.
///
/// Nodes, models and flows with fewer than `min_samples` attempts or runs are not judged.
pub fn weekly_suggestions(
    s: &Stats,
    prev: &Stats,
    r: &config::Rules,
    limits: &BTreeMap<(String, String), Duration>,
    en: bool,
) -> Vec<Suggestion> {
    let mut out = Vec::new();
    let t = |zh: String, e: String| if en { e } else { zh };
    for f in &s.flows {
        for n in f.nodes.iter().filter(|n| n.attempts >= r.min_samples) {
            let limit = limits.get(&(f.flow.clone(), n.node.clone())).map(|d| d.as_millis() as i64);
            if let (Some(rate), Some(p95), Some(limit)) = (n.timeout_rate, n.duration.p95_ms, limit)
                && rate > r.timeout_rate
                && p95 as f64 >= (1.0 - r.timeout_p95_margin) * limit as f64
            {
                out.push(Suggestion {
                    rule: "timeout_near_limit",
                    flow: Some(f.flow.clone()),
                    subject: n.node.clone(),
                    figures: BTreeMap::from([("timeout_rate", rate), ("p95_ms", p95 as f64), ("limit_ms", limit as f64)]),
                    text: t(
                        format!("节点 {}/{} 超时率 {}，p95 {} ms 已接近时限 {} ms：放宽时限或换更快的模型。", f.flow, n.node, pct(rate), p95, limit),
                        format!(
                            "Node {}/{} timed out in {} of attempts and its p95 ({} ms) is within {} of its {} ms limit: raise the limit or switch to a faster model.",
                            f.flow,
                            n.node,
                            pct(rate),
                            p95,
                            pct(r.timeout_p95_margin),
                            limit
                        ),
                    ),
                });
            }
            if let Some(share) = n.time_share.filter(|v| *v > r.node_time_share) {
                out.push(Suggestion {
                    rule: "dominant_node",
                    flow: Some(f.flow.clone()),
                    subject: n.node.clone(),
                    figures: BTreeMap::from([("time_share", share), ("avg_ms", n.duration.avg_ms.unwrap_or(0.0))]),
                    text: t(
                        format!("节点 {}/{} 占该流程节点总耗时的 {}：优先优化它（缓存、并行或更快的模型）。", f.flow, n.node, pct(share)),
                        format!(
                            "Node {}/{} takes {} of the flow's node time: speed it up first (cache, parallelise or use a faster model).",
                            f.flow,
                            n.node,
                            pct(share)
                        ),
                    ),
                });
            }
            if let Some(rate) = n.retry_rate.filter(|v| *v > r.retry_rate) {
                out.push(Suggestion {
                    rule: "retry_hot_spot",
                    flow: Some(f.flow.clone()),
                    subject: n.node.clone(),
                    figures: BTreeMap::from([("retry_rate", rate), ("retries", n.retries as f64), ("attempts", n.attempts as f64)]),
                    text: t(
                        format!(
                            "节点 {}/{} 重试率 {}（{} 次重试 / {} 次尝试）：先解决失败原因，重试在消耗时间和额度。",
                            f.flow,
                            n.node,
                            pct(rate),
                            n.retries,
                            n.attempts
                        ),
                        format!(
                            "Node {}/{} retried {} of its attempts ({} retries of {}): fix the cause, retries cost time and quota.",
                            f.flow,
                            n.node,
                            pct(rate),
                            n.retries,
                            n.attempts
                        ),
                    ),
                });
            }
        }
        if let Some(c) = &f.change
            && f.runs >= r.min_samples
            && c.prev_runs >= r.min_samples
            && let Some(pts) = c.success_rate_pts.filter(|p| *p < -r.success_drop_pts)
        {
            let (now, before) = (f.success_rate.unwrap_or(0.0), c.prev_success_rate.unwrap_or(0.0));
            out.push(Suggestion {
                rule: "success_rate_fell",
                flow: Some(f.flow.clone()),
                subject: f.flow.clone(),
                figures: BTreeMap::from([("success_rate", now), ("prev_success_rate", before), ("change_pts", pts)]),
                text: t(
                    format!("流程 {} 成功率从 {} 降到 {}（{:.1} 个百分点）：查看本周新增的失败原因。", f.flow, pct(before), pct(now), pts),
                    format!(
                        "Flow {}'s success rate fell from {} to {} ({:.1} points): look at this week's new failure causes.",
                        f.flow,
                        pct(before),
                        pct(now),
                        pts
                    ),
                ),
            });
        }
    }
    let failures: u64 = s.total.failures_by_kind.values().sum();
    if failures >= r.min_samples.div_ceil(4).max(1) {
        for c in causes(&s.total.failures_by_kind).into_iter().filter(|c| c.share > r.error_kind_share) {
            out.push(Suggestion {
                rule: "dominant_error_kind",
                flow: None,
                subject: c.error_kind.clone(),
                figures: BTreeMap::from([("share", c.share), ("runs", c.count as f64), ("failed_runs", failures as f64)]),
                text: t(
                    format!("{} 导致了 {} 的失败运行（{} / {}）：优先处理这一类错误。", c.error_kind, pct(c.share), c.count, failures),
                    format!(
                        "{} caused {} of failed runs ({} of {}): address this cause first.",
                        c.error_kind,
                        pct(c.share),
                        c.count,
                        failures
                    ),
                ),
            });
        }
    }
    for m in s.models.iter().filter(|m| m.attempts >= r.min_samples) {
        let Some(before) = prev.models.iter().find(|p| p.model == m.model && p.attempts >= r.min_samples) else { continue };
        if let (Some(now), Some(was)) = (m.failure_rate, before.failure_rate)
            && was > 0.0
            && now >= r.model_failure_growth * was
        {
            out.push(Suggestion {
                rule: "model_failure_doubled",
                flow: None,
                subject: m.model.clone(),
                figures: BTreeMap::from([("failure_rate", now), ("prev_failure_rate", was)]),
                text: t(
                    format!("模型 {} 的失败率从上周的 {} 升到 {}：检查额度与服务状态，考虑把备用模型提前。", m.model, pct(was), pct(now)),
                    format!(
                        "Model {}'s failure rate rose from {} last week to {}: check its quota and status, consider putting its fallback first.",
                        m.model,
                        pct(was),
                        pct(now)
                    ),
                ),
            });
        }
    }
    out
}

/// Builds, renders and stores the report of a period; returns it and its renderings.
pub async fn generate(ctx: &ReportCtx, period: &Period, now_ms: i64) -> anyhow::Result<(Report, Rendered)> {
    let report = build(ctx, period, now_ms).await?;
    let rendered = render::render(&report, &ctx.tz);
    let body = serde_json::to_string(&report)?;
    ctx.store.save_report(period.kind.as_str(), &period.key, period.since_ms, period.until_ms, now_ms, &body, &rendered.markdown).await?;
    Ok((report, rendered))
}

/// Sends a generated report once across processes: claims it, sends, marks it sent. Returns
/// false when another process holds or has sent it.
pub async fn deliver(ctx: &ReportCtx, period: &Period, rendered: &Rendered, sink: &dyn ReportSink, now_ms: i64) -> anyhow::Result<bool> {
    const LEASE_MS: i64 = 10 * 60 * 1000;
    if !ctx.store.claim_report(period.kind.as_str(), &period.key, now_ms, LEASE_MS).await? {
        return Ok(false);
    }
    sink.send(rendered).await?;
    ctx.store.mark_report_sent(period.kind.as_str(), &period.key, now_ms).await?;
    Ok(true)
}

/// The scheduler's step: sends every report that is due (see [`schedule::due`]) and returns the
/// periods sent. Call it at start and at [`schedule::next_fire`]; calling it more often is harmless.
pub async fn send_due(ctx: &ReportCtx, sink: &dyn ReportSink, now_ms: i64) -> anyhow::Result<Vec<Period>> {
    let mut sent = Vec::new();
    for kind in [Kind::Daily, Kind::Weekly] {
        if let Some(p) = schedule::due(&ctx.store, &ctx.cfg, kind, &ctx.tz, now_ms).await? {
            let (_, rendered) = generate(ctx, &p, now_ms).await?;
            if deliver(ctx, &p, &rendered, sink, now_ms).await? {
                sent.push(p);
            }
        }
    }
    Ok(sent)
}

/// Applies `reports.retention`: prunes raw node attempts (and run rows, with the ids of their
/// ingested events) older than configured; rollups stay.
pub async fn prune(ctx: &ReportCtx, now_ms: i64) -> anyhow::Result<crate::store::rollups::Pruned> {
    let age = |v: &Option<crate::config::HumanDuration>| v.map(|d| now_ms.saturating_sub(d.as_ms()));
    let (attempts, runs) = (age(&ctx.cfg.retention.node_attempts), age(&ctx.cfg.retention.runs));
    let attempts = match (attempts, runs) {
        (Some(a), Some(r)) => a.max(r),
        (Some(a), None) => a,
        (None, Some(r)) => r,
        (None, None) => return Ok(Default::default()),
    };
    ctx.store.prune_raw(attempts, runs, 500).await
}
