//! Renderings of a report: Markdown, plain text and HTML (email), a Feishu interactive card and
//! JSON. All are built from one list of sections, so they say the same thing.

use super::{Kind, Report};
use crate::human::ms;
use serde::Serialize;
use serde_json::{Value as Json, json};

/// A report ready for channels; each channel takes the form it speaks.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rendered {
    pub title: String,
    pub markdown: String,
    pub text: String,
    pub html: String,
    /// The full body for a Feishu bot webhook (`msg_type: interactive`), under 20 KB.
    pub feishu_card: Json,
    /// The report itself.
    pub json: Json,
}

struct Section {
    heading: String,
    lines: Vec<String>,
    table: Option<(Vec<String>, Vec<Vec<String>>)>,
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

fn signed_pts(v: Option<f64>) -> String {
    v.map(|v| format!("{v:+.1}")).unwrap_or_else(|| "-".into())
}

fn signed_ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 0.0 => format!("+{}", ms(Some(v.round() as i64))),
        Some(v) => format!("-{}", ms(Some(-v.round() as i64))),
        None => "-".into(),
    }
}

fn sections(r: &Report) -> (String, Vec<Section>) {
    let en = r.locale == "en";
    let t = |zh: &str, e: &str| if en { e.to_owned() } else { zh.to_owned() };
    let s = &r.stats.total;
    let title = match (r.kind, en) {
        (Kind::Daily, false) => format!("flowguard 日报 {}", r.period.key),
        (Kind::Daily, true) => format!("flowguard daily report {}", r.period.key),
        (Kind::Weekly, false) => format!("flowguard 周报 {} 至 {}", r.period.first_day, r.period.last_day),
        (Kind::Weekly, true) => format!("flowguard weekly report {} to {}", r.period.first_day, r.period.last_day),
    };
    let prev = if r.kind == Kind::Daily { t("较前一日", "vs the day before") } else { t("较上周", "vs the week before") };
    let mut out = Vec::new();
    let mut summary = Vec::new();
    if s.runs == 0 && s.refused == 0 {
        summary.push(t("本期没有运行记录。", "No runs in this period."));
    } else {
        summary.push(format!(
            "{}: {} ({} {} / {} {})",
            t("成功率", "Success rate"),
            pct(s.success_rate),
            s.succeeded + s.recovered,
            t("成功", "succeeded"),
            s.runs,
            t("次运行", "runs")
        ));
        summary.push(format!("{}: {}", t("其中自动恢复", "Recovered (retry, repair or backup model)"), pct(s.recovered_rate)));
        summary.push(format!(
            "{}: {} (p50 {}, p95 {}, p99 {})",
            t("平均耗时", "Average duration"),
            ms(s.duration.avg_ms.map(|v| v.round() as i64)),
            ms(s.duration.p50_ms),
            ms(s.duration.p95_ms),
            ms(s.duration.p99_ms)
        ));
        summary.push(format!(
            "{}: {} {}, {} {}, {} {}, {} {}",
            t("结果", "Outcomes"),
            t("失败", "failed"),
            s.failed,
            t("超时", "timed out"),
            s.timed_out,
            t("待人工", "waiting for a human"),
            s.waiting_manual,
            t("被拒绝(流程阻断)", "refused (flow blocked)"),
            s.refused
        ));
        summary.push(format!("{}: {}", t("使用备用模型的运行", "Runs on a backup model"), s.backup_model_runs));
        if !s.cost.is_empty() {
            let label = if r.kind == Kind::Daily {
                t("当日模型费用", "Model cost of the day")
            } else {
                t("本周模型费用", "Model cost of the week")
            };
            summary.push(format!("{label}: {}", crate::stats::cost_text(&s.cost)));
        }
    }
    summary.push(format!("{}: {}", t("当前待人工处理", "Waiting for a human now"), s.pending_manual));
    if r.stats.canary_runs > 0 {
        summary.push(format!("{}: {}", t("巡检(canary)运行，未计入", "Canary runs, not counted"), r.stats.canary_runs));
    }
    if let Some(c) = &s.change {
        summary.push(format!(
            "{prev}: {} {} {}, {} {}, {} {}",
            t("运行", "runs"),
            if c.runs >= 0 { format!("+{}", c.runs) } else { c.runs.to_string() },
            if en { "" } else { "次" },
            t("成功率(百分点)", "success rate (points)"),
            signed_pts(c.success_rate_pts),
            t("平均耗时", "average duration"),
            signed_ms(c.avg_ms)
        ));
    }
    out.push(Section { heading: t("概览", "Summary"), lines: summary, table: None });

    let cost_rows: Vec<Vec<String>> = r
        .stats
        .flows
        .iter()
        .filter(|f| !f.cost.is_empty())
        .map(|f| {
            let tokens: i64 = f.cost.iter().map(|c| c.tokens_in + c.tokens_out).sum();
            vec![f.flow.clone(), crate::stats::cost_text(&f.cost), tokens.to_string()]
        })
        .collect();
    if !cost_rows.is_empty() {
        out.push(Section {
            heading: t("各流程模型费用", "Model cost per flow"),
            lines: Vec::new(),
            table: Some((vec![t("流程", "Flow"), t("费用", "Cost"), t("Token 数", "Tokens")], cost_rows)),
        });
    }

    let top = r.top_failing_nodes.iter().map(|n| {
        let kinds = n.failures_by_kind.iter().map(|(k, c)| format!("{k} {c}")).collect::<Vec<_>>().join(", ");
        vec![format!("{}/{}", n.flow, n.node), n.failed_attempts.to_string(), n.runs_failed.to_string(), kinds]
    });
    let rows: Vec<Vec<String>> = top.collect();
    out.push(Section {
        heading: format!("{} Top {}", t("失败次数最多的节点", "Nodes with the most failures"), r.top_failing_nodes.len()),
        lines: if rows.is_empty() { vec![t("没有失败。", "No failures.")] } else { Vec::new() },
        table: (!rows.is_empty()).then(|| {
            (
                vec![
                    t("节点", "Node"),
                    t("失败次数", "Failed attempts"),
                    t("导致运行失败", "Runs failed here"),
                    t("错误类型", "Error kinds"),
                ],
                rows,
            )
        }),
    });
    let cause_rows: Vec<Vec<String>> =
        r.causes.iter().map(|c| vec![c.error_kind.clone(), c.count.to_string(), pct(Some(c.share))]).collect();
    out.push(Section {
        heading: t("失败原因分布（未成功的运行）", "Failure causes (runs that did not succeed)"),
        lines: if cause_rows.is_empty() { vec![t("无。", "None.")] } else { Vec::new() },
        table: (!cause_rows.is_empty()).then(|| (vec![t("错误类型", "Error kind"), t("次数", "Runs"), t("占比", "Share")], cause_rows)),
    });
    if r.kind == Kind::Weekly {
        let rows: Vec<Vec<String>> =
            r.attempt_causes.iter().map(|c| vec![c.error_kind.clone(), c.count.to_string(), pct(Some(c.share))]).collect();
        if !rows.is_empty() {
            out.push(Section {
                heading: t("失败原因分布（全部失败尝试，含已恢复）", "Failure causes (every failed attempt, recovered included)"),
                lines: Vec::new(),
                table: Some((vec![t("错误类型", "Error kind"), t("次数", "Attempts"), t("占比", "Share")], rows)),
            });
        }
        let node_rows = |v: &[super::NodeLine]| -> Vec<Vec<String>> {
            v.iter()
                .map(|n| {
                    vec![
                        format!("{}/{}", n.flow, n.node),
                        pct(n.time_share),
                        ms(n.avg_ms.map(|v| v.round() as i64)),
                        ms(n.p95_ms),
                        format!("{} ({})", n.retries, pct(n.retry_rate)),
                    ]
                })
                .collect()
        };
        let head = || vec![t("节点", "Node"), t("耗时占比", "Time share"), t("平均", "Avg"), "p95".into(), t("重试(率)", "Retries (rate)")];
        if !r.slowest_nodes.is_empty() {
            out.push(Section {
                heading: t("最慢的节点（按耗时占比）", "Slowest nodes (share of time)"),
                lines: Vec::new(),
                table: Some((head(), node_rows(&r.slowest_nodes))),
            });
        }
        if !r.retry_hot_spots.is_empty() {
            out.push(Section {
                heading: t("重试热点", "Retry hot spots"),
                lines: Vec::new(),
                table: Some((head(), node_rows(&r.retry_hot_spots))),
            });
        }
        out.push(Section {
            heading: t("优化建议", "Suggestions"),
            lines: if r.suggestions.is_empty() {
                vec![t("本周数据没有触发任何规则。", "No rule fired on this week's data.")]
            } else {
                r.suggestions.iter().map(|s| s.text.clone()).collect()
            },
            table: None,
        });
    }
    (title, out)
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Renders a report every way.
pub fn render(r: &Report, tz: &jiff::tz::TimeZone) -> Rendered {
    let (title, secs) = sections(r);
    let en = r.locale == "en";
    let footer = format!("{} {} ({})", if en { "Generated" } else { "生成于" }, crate::human::time(r.generated_at_ms, tz), r.timezone);
    let mut md = format!("# {title}\n\n");
    let mut text = format!("{title}\n{}\n\n", "=".repeat(title.chars().count().min(60)));
    let mut html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{0}</title></head><body style=\"font-family:sans-serif\"><h1>{0}</h1>",
        html_escape(&title)
    );
    let mut card_md: Vec<String> = Vec::new();
    for s in &secs {
        md.push_str(&format!("## {}\n\n", s.heading));
        text.push_str(&format!("{}\n", s.heading));
        html.push_str(&format!("<h2>{}</h2>", html_escape(&s.heading)));
        let mut card = format!("**{}**\n", s.heading);
        if !s.lines.is_empty() {
            html.push_str("<ul>");
            for l in &s.lines {
                md.push_str(&format!("- {l}\n"));
                text.push_str(&format!("  - {l}\n"));
                html.push_str(&format!("<li>{}</li>", html_escape(l)));
                card.push_str(&format!("- {l}\n"));
            }
            html.push_str("</ul>");
            md.push('\n');
        }
        if let Some((head, rows)) = &s.table {
            md.push_str(&format!(
                "| {} |\n|{}\n",
                head.iter().map(|h| md_cell(h)).collect::<Vec<_>>().join(" | "),
                " --- |".repeat(head.len())
            ));
            html.push_str("<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr>");
            for h in head {
                html.push_str(&format!("<th>{}</th>", html_escape(h)));
            }
            html.push_str("</tr>");
            for row in rows {
                md.push_str(&format!("| {} |\n", row.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")));
                text.push_str(&format!("  - {}\n", row.join("  ")));
                card.push_str(&format!("- {}\n", row.join(" · ")));
                html.push_str("<tr>");
                for c in row {
                    html.push_str(&format!("<td>{}</td>", html_escape(c)));
                }
                html.push_str("</tr>");
            }
            html.push_str("</table>");
            md.push('\n');
        }
        text.push('\n');
        card_md.push(card);
    }
    md.push_str(&format!("_{footer}_\n"));
    text.push_str(&format!("{footer}\n"));
    html.push_str(&format!("<p><small>{}</small></p></body></html>", html_escape(&footer)));
    let feishu_card = feishu_card(&title, &card_md, &footer, r);
    Rendered { title, markdown: md, text, html, feishu_card, json: serde_json::to_value(r).unwrap_or(Json::Null) }
}

/// Feishu bots take at most 20 KB per message: sections are dropped from the end to fit.
const FEISHU_MAX: usize = 19 * 1024;

fn feishu_card(title: &str, sections: &[String], footer: &str, r: &Report) -> Json {
    let rate = r.stats.total.success_rate;
    let template = match rate {
        None => "grey",
        Some(v) if v >= 0.95 => "green",
        Some(v) if v >= 0.8 => "orange",
        Some(_) => "red",
    };
    let mut keep = sections.len();
    loop {
        let mut elements: Vec<Json> = Vec::new();
        for (i, s) in sections[..keep].iter().enumerate() {
            if i > 0 {
                elements.push(json!({"tag": "hr"}));
            }
            elements.push(json!({"tag": "div", "text": {"tag": "lark_md", "content": s}}));
        }
        if keep < sections.len() {
            elements.push(json!({"tag": "div", "text": {"tag": "lark_md", "content": "…"}}));
        }
        elements.push(json!({"tag": "note", "elements": [{"tag": "plain_text", "content": footer}]}));
        let card = json!({
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": true},
                "header": {"title": {"tag": "plain_text", "content": title}, "template": template},
                "elements": elements,
            }
        });
        if keep == 0 || card.to_string().len() <= FEISHU_MAX {
            return card;
        }
        keep -= 1;
    }
}
