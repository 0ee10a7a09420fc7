//! The dashboard's words in its two languages. Names of the shared vocabulary (statuses, error
//! kinds, severities) are shown as they are everywhere else and are not translated.

use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const LANGS: &[&str] = &["zh-CN", "en"];

/// (key, en, zh-CN)
const STRINGS: &[(&str, &str, &str)] = &[
    ("abort", "Abort", "中止"),
    ("acknowledge", "Acknowledge", "确认"),
    ("acknowledged", "acknowledged", "已确认"),
    ("action_refused", "The action was refused", "操作被拒绝"),
    ("add_silence", "Add silence", "添加静默"),
    ("alerts", "Alerts", "告警"),
    ("all", "All", "全部"),
    ("answer", "Answer", "响应"),
    ("api_token", "API token", "API 令牌"),
    ("at", "At", "时间"),
    ("at_node", "at node", "于节点"),
    ("attempt", "Attempt", "尝试"),
    ("attempts", "Attempts", "尝试次数"),
    ("back_to_overview", "Back to the overview", "返回概览"),
    ("backup_model_runs", "On a backup model", "使用备用模型"),
    ("bad_action", "Unknown action", "未知操作"),
    ("bad_date", "Not a date", "日期无效"),
    ("bad_inputs", "The inputs are not a JSON object", "输入不是 JSON 对象"),
    ("bad_silence", "The silence is not valid", "静默规则无效"),
    ("bad_since", "Not a time", "时间无效"),
    ("bad_token", "This token is not valid, or it cannot read", "令牌无效或没有读取权限"),
    ("block", "Block", "阻断"),
    ("breakers", "Model breakers", "模型熔断"),
    ("blocked_flows", "Blocked flows", "已阻断的流程"),
    ("blocked_since", "Blocked since", "阻断于"),
    ("by", "by", "操作人"),
    ("canaries", "Canaries", "金丝雀"),
    ("channel", "Channel", "渠道"),
    ("confirm_abort", "Abort this run?", "确定中止这次运行？"),
    ("count", "Count", "次数"),
    ("created", "Created", "创建时间"),
    ("daily", "Daily", "日报"),
    ("done_abort", "The run was aborted.", "已中止运行。"),
    ("done_acked", "The alert is acknowledged.", "告警已确认。"),
    ("done_blocked", "The flow is blocked.", "流程已阻断。"),
    ("done_expired", "The silence has ended.", "静默已结束。"),
    ("done_not_blocked", "The flow was not blocked.", "流程未被阻断。"),
    (
        "done_not_started",
        "The run was not started (a run of this flow is going and its overlap policy skips).",
        "未启动运行（已有运行在进行，按重叠策略跳过）。",
    ),
    ("done_resolve", "The run is resolved by hand.", "已人工解决。"),
    ("done_retry", "Retrying: the run goes on.", "正在重试，运行继续。"),
    ("done_silenced", "The silence is added.", "静默已添加。"),
    ("done_skip", "Skipped with the given output: the run goes on.", "已用给定输出跳过，运行继续。"),
    ("done_unblocked", "The flow is unblocked.", "流程已解除阻断。"),
    ("duration", "Duration", "耗时"),
    ("ended", "ended", "结束"),
    ("error", "Error", "错误"),
    ("error_kind", "Error kind", "错误类型"),
    ("expire", "End now", "立即结束"),
    ("exporters", "Exporters", "日志导出"),
    ("failed", "Failed", "失败"),
    ("failed_attempts", "Failed attempts", "失败尝试"),
    ("failure_rate", "Failure rate", "失败率"),
    ("failures_by_kind", "Failures by error kind", "按错误类型的失败"),
    ("flow", "Flow", "流程"),
    ("flow_not_loaded", "This flow is not loaded (its runs come from elsewhere).", "该流程未加载（运行来自外部）。"),
    ("flows", "Flows", "流程"),
    (
        "forged",
        "Refused: the form did not come from this dashboard, or it is stale. Reload the page and try again.",
        "已拒绝：表单不是来自本面板或已过期，请刷新页面后重试。",
    ),
    ("input", "Input", "输入"),
    ("input_output", "Input and output", "输入与输出"),
    ("inputs", "Inputs", "输入"),
    ("inputs_json", "Inputs (JSON)", "输入（JSON）"),
    ("kind", "Kind", "类型"),
    ("labels", "Labels", "标签"),
    ("lag", "Not yet exported", "待导出"),
    ("last_24h", "Last 24 hours", "最近 24 小时"),
    ("last_7d", "Last 7 days", "最近 7 天"),
    ("last_seen", "Last seen", "最近发生"),
    ("manual_queue", "Waiting for a human", "人工处理队列"),
    ("manual_task", "Manual task", "人工任务"),
    ("matchers", "Matchers", "匹配条件"),
    ("message_and_deliveries", "Message and delivery attempts", "消息与投递记录"),
    ("model", "Model", "模型"),
    ("models", "Models", "模型"),
    ("next_fire", "next fire", "下次触发"),
    ("no_schedule", "No schedule", "无定时"),
    ("no_such_alert", "No open alert with this id", "没有这个未关闭的告警"),
    ("no_such_flow", "No such flow", "没有这个流程"),
    ("no_such_run", "No such run", "没有这次运行"),
    ("no_such_silence", "No active silence with this id", "没有这个生效中的静默"),
    ("node", "Node", "节点"),
    ("none", "None", "无"),
    ("not_blocked", "Not blocked", "未阻断"),
    ("not_sent", "not sent (rendered now)", "未发送（当前生成）"),
    ("notifications", "Notifications", "通知"),
    ("occurrences", "occurrences", "次发生"),
    ("older", "Older runs", "更早的运行"),
    ("open_alerts", "Open alerts", "未关闭告警"),
    ("other_language", "中文", "English"),
    ("outcome", "Outcome", "结果"),
    ("output", "Output", "输出"),
    ("overview", "Overview", "概览"),
    ("purpose", "Purpose", "用途"),
    ("rate_limited", "Too many attempts; wait a moment", "尝试过于频繁，请稍后"),
    ("read_only", "read only", "只读"),
    ("recent_runs", "Recent runs", "最近运行"),
    ("recovered", "Recovered", "已恢复"),
    ("recovered_share", "Recovered", "恢复占比"),
    ("report_day", "Day", "日期"),
    ("reports", "Reports", "报告"),
    ("resolve", "Resolve by hand", "人工解决"),
    ("retries", "Retries", "重试"),
    ("retry", "Retry", "重试"),
    ("retry_from", "From node", "从节点"),
    ("run", "Run", "运行"),
    ("runs", "Runs", "运行次数"),
    ("runs_failed", "Runs failed here", "在此失败的运行"),
    ("runs_over_time", "Runs and success rate over time", "运行次数与成功率趋势"),
    ("schedule", "Schedule", "定时"),
    ("sent", "Sent", "已发送"),
    ("session_expired", "Your session has ended: sign in again.", "会话已过期，请重新登录。"),
    ("severity", "Severity", "严重程度"),
    ("show", "Show", "查看"),
    ("sign_in", "Sign in", "登录"),
    (
        "sign_in_help",
        "Use an API token of this server (read: look; operate: also act).",
        "使用本服务的 API 令牌登录（read 只读，operate 可操作）。",
    ),
    ("sign_out", "Sign out", "退出"),
    ("silences", "Silences", "静默"),
    ("since", "Since", "起始"),
    ("skip", "Skip with this output", "以此输出跳过"),
    ("skip_output", "Output (JSON or text)", "输出（JSON 或文本）"),
    ("start_run", "Start a run", "启动运行"),
    ("started", "Started", "开始"),
    ("statistics", "Statistics", "统计"),
    ("status", "Status", "状态"),
    ("store_failed", "The database could not be read; try again shortly", "暂时无法读取数据库，请稍后再试"),
    ("succeeded", "Succeeded", "成功"),
    ("succeeded_or_recovered", "Succeeded or recovered", "成功或已恢复"),
    ("success_rate", "Success rate", "成功率"),
    ("then", "Then", "后续"),
    ("time_share", "Share of the time", "耗时占比"),
    ("top_failing_nodes", "Nodes that fail most", "失败最多的节点"),
    ("trigger", "Trigger", "触发方式"),
    ("unblock", "Unblock", "解除阻断"),
    ("until", "until", "直到"),
    ("waiting_manual", "Waiting for a human", "等待人工"),
    ("waterfall", "Node attempts over time", "节点尝试时间线"),
    ("weekly", "Weekly", "周报"),
    ("who", "Who", "操作人"),
    ("why", "Why", "原因"),
];

/// The words of a language (zh-CN for anything else).
pub fn strings(lang: &str) -> &'static BTreeMap<&'static str, &'static str> {
    static EN: OnceLock<BTreeMap<&str, &str>> = OnceLock::new();
    static ZH: OnceLock<BTreeMap<&str, &str>> = OnceLock::new();
    if lang == "en" {
        EN.get_or_init(|| STRINGS.iter().map(|(k, en, _)| (*k, *en)).collect())
    } else {
        ZH.get_or_init(|| STRINGS.iter().map(|(k, _, zh)| (*k, *zh)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every word a template or a handler asks for exists in both languages.
    #[test]
    fn every_key_used_is_translated() {
        let keys: std::collections::BTreeSet<&str> = STRINGS.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(keys.len(), STRINGS.len(), "a key is listed twice");
        let mut used = Vec::new();
        for (_, text) in super::super::TEMPLATES {
            for (i, _) in text.match_indices("tr.") {
                let key: String = text[i + 3..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                used.push(key);
            }
        }
        let code = [
            include_str!("session.rs"),
            include_str!("flow.rs"),
            include_str!("run.rs"),
            include_str!("alerts.rs"),
            include_str!("reports.rs"),
            include_str!("mod.rs"),
        ];
        let re = regex::Regex::new(r#"(?:message\(&s, &[a-z]+, StatusCode::[A-Z_]+, |error => |Err\()"([a-z_]+)""#).expect("regex");
        for text in code {
            used.extend(re.captures_iter(text).map(|c| c[1].to_owned()));
        }
        let done = regex::Regex::new(r#"done\([^;]*?"([a-z_]+)"\)"#).expect("regex");
        for text in code {
            used.extend(done.captures_iter(text).map(|c| format!("done_{}", &c[1])));
        }
        for a in ["retry", "skip", "resolve", "abort"] {
            used.push(format!("done_{a}"));
        }
        let missing: Vec<&String> = used.iter().filter(|k| !keys.contains(k.as_str())).collect();
        assert!(missing.is_empty(), "no words for {missing:?}");
        assert!(used.len() > 80, "the scan found the keys: {}", used.len());
    }
}
