//! Turns a failed call into exactly one error kind, in DESIGN.md §4's order: first the provider's
//! own code in the body (OpenAI's `insufficient_quota` arrives as HTTP 429 but is
//! `quota_exhausted`), then the HTTP status, then the transport (connect, DNS, TLS, reset).

use crate::vocab::ErrorKind;
use serde_json::Value as Json;
use std::time::Duration;

/// Body codes that name the failure better than the status does. Matched against the
/// `error.code`, `error.type`, `code` and `type` fields, case-insensitively. Each provider's rows
/// come from its published error page (the README's "Provider answers" table lists them); an
/// answer whose code is not here is classified by its HTTP status, then by the transport.
const BODY_CODES: &[(&str, ErrorKind)] = &[
    // OpenAI (developers.openai.com/docs/guides/error-codes): quota and billing failures arrive
    // as HTTP 429, `type: insufficient_quota`, with the precise cause in `code`.
    ("insufficient_quota", ErrorKind::QuotaExhausted),
    ("credit_balance_exhausted", ErrorKind::QuotaExhausted),
    ("organization_spend_limit_exceeded", ErrorKind::QuotaExhausted),
    ("project_spend_limit_exceeded", ErrorKind::QuotaExhausted),
    ("organization_usage_limit_exceeded", ErrorKind::QuotaExhausted),
    ("billing_hard_limit_reached", ErrorKind::QuotaExhausted),
    ("insufficient_balance", ErrorKind::QuotaExhausted),
    ("invalid_api_key", ErrorKind::AuthExpired),
    ("invalid_authentication", ErrorKind::AuthExpired),
    ("authentication_error", ErrorKind::AuthExpired),
    ("content_filter", ErrorKind::ContentBlocked),
    ("content_policy_violation", ErrorKind::ContentBlocked),
    ("sensitive_content", ErrorKind::ContentBlocked),
    ("rate_limit_exceeded", ErrorKind::RateLimited),
    // DeepSeek (api-docs.deepseek.com/quick_start/error_codes) documents statuses only: 402
    // insufficient balance, 422, 429, 500, 503; its bodies carry no code of their own
    // (`code: invalid_request_error`), so the status decides.
    //
    // Moonshot / Kimi (platform.kimi.com/docs/api/errors): the cause is in `error.type`.
    // `exceeded_current_quota_error` arrives as 429 (arrears, suspended account, token quota);
    // the help centre says a 403 means insufficient balance but shows no body for it.
    ("exceeded_current_quota_error", ErrorKind::QuotaExhausted),
    ("rate_limit_reached_error", ErrorKind::RateLimited),
    ("engine_overloaded_error", ErrorKind::RateLimited),
    ("invalid_authentication_error", ErrorKind::AuthExpired),
    ("incorrect_api_key_error", ErrorKind::AuthExpired),
    // Volcengine Ark / Doubao (volcengine.com/docs/82379/1299023): the cause is in `error.code`,
    // `error.type` is the status's name (`Forbidden`, `BadRequest` …). `ModelLoadingError` is not
    // on the error-code pages that could be reached: it is left to its HTTP status.
    ("accountoverdue", ErrorKind::QuotaExhausted),
    ("accountoverdueerror", ErrorKind::QuotaExhausted),
    ("inputtextriskdetection", ErrorKind::ContentBlocked),
    ("outputtextriskdetection", ErrorKind::ContentBlocked),
    ("inputimageriskdetection", ErrorKind::ContentBlocked),
    ("outputimageriskdetection", ErrorKind::ContentBlocked),
    ("inputtextsensitivecontentdetected", ErrorKind::ContentBlocked),
    ("outputtextsensitivecontentdetected", ErrorKind::ContentBlocked),
    ("inputimagesensitivecontentdetected", ErrorKind::ContentBlocked),
    ("authenticationerror", ErrorKind::AuthExpired),
    // Alibaba DashScope, OpenAI-compatible mode (help.aliyun.com/zh/model-studio/error-code).
    ("arrearage", ErrorKind::QuotaExhausted),
    ("datainspectionfailed", ErrorKind::ContentBlocked),
    ("data_inspection_failed", ErrorKind::ContentBlocked),
    ("throttling", ErrorKind::RateLimited),
    ("invalidapikey", ErrorKind::AuthExpired),
    // Zhipu (docs.bigmodel.cn/cn/faq/api-code): 1113 arrears (HTTP 429), 1301 unsafe content,
    // 1302 concurrency and 1303 frequency limits.
    ("1113", ErrorKind::QuotaExhausted),
    ("1301", ErrorKind::ContentBlocked),
    ("1302", ErrorKind::RateLimited),
    ("1303", ErrorKind::RateLimited),
    // Publishing platforms: expired or invalid access tokens
    ("access_token_expired", ErrorKind::AuthExpired),
    ("access_token_invalid", ErrorKind::AuthExpired),
    ("token_expired", ErrorKind::AuthExpired),
    ("invalid_token", ErrorKind::AuthExpired),
    ("40001", ErrorKind::AuthExpired),
    ("42001", ErrorKind::AuthExpired),
];

/// Families of codes named by their prefix: Ark's `SensitiveContentDetected.Violence`,
/// `RateLimitExceeded.EndpointRPMExceeded`; DashScope's `Throttling.RateQuota`.
const BODY_CODE_PREFIXES: &[(&str, ErrorKind)] = &[
    ("sensitivecontentdetected", ErrorKind::ContentBlocked),
    ("ratelimitexceeded.", ErrorKind::RateLimited),
    ("throttling.", ErrorKind::RateLimited),
];

fn body_code(body: &Json) -> Option<(ErrorKind, String)> {
    let err = body.get("error").unwrap_or(body);
    let fields = [err.get("code"), err.get("type"), body.get("code"), body.get("type"), body.get("error_code")];
    for v in fields.into_iter().flatten() {
        let code = match v {
            Json::String(s) => s.to_ascii_lowercase(),
            Json::Number(n) => n.to_string(),
            _ => continue,
        };
        if let Some((_, kind)) = BODY_CODES.iter().find(|(c, _)| *c == code) {
            return Some((*kind, code));
        }
        if let Some((_, kind)) = BODY_CODE_PREFIXES.iter().find(|(p, _)| code.starts_with(p)) {
            return Some((*kind, code));
        }
    }
    None
}

/// The human part of an error body: `error.message`, `message`, `msg`, or the start of the text.
pub fn body_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Json>(body) {
        let err = json.get("error").unwrap_or(&json);
        for k in ["message", "msg", "error_description", "errmsg"] {
            if let Some(m) = err.get(k).or_else(|| json.get(k)).and_then(|m| m.as_str()) {
                return m.to_owned();
            }
        }
        if let Some(s) = json.get("error").and_then(|e| e.as_str()) {
            return s.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

/// Classifies an HTTP answer that is not a success. `side_effect` nodes (publishing) report a
/// rejected request as `publish_failed`.
pub fn classify_status(status: u16, body: &[u8], side_effect: bool) -> (ErrorKind, String) {
    let message = body_message(body);
    if let Ok(json) = serde_json::from_slice::<Json>(body)
        && let Some((kind, code)) = body_code(&json)
    {
        return (kind, format!("HTTP {status}, code {code}: {message}"));
    }
    let kind = match status {
        401 => ErrorKind::AuthExpired,
        402 => ErrorKind::QuotaExhausted,
        408 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Upstream5xx,
        _ if side_effect => ErrorKind::PublishFailed,
        _ => ErrorKind::Upstream4xx,
    };
    (kind, format!("HTTP {status}: {message}"))
}

/// A body code in a successful (HTTP 200) answer, as some APIs answer errors.
pub fn classify_ok_body(body: &Json) -> Option<(ErrorKind, String)> {
    body_code(body).map(|(kind, code)| (kind, format!("code {code} in a 200 answer: {}", body_message(body.to_string().as_bytes()))))
}

/// Classifies a transport failure.
pub fn classify_transport(err: &reqwest::Error) -> (ErrorKind, String) {
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    // Never show a URL's query string: it may carry a token.
    let msg = strip_query(&msg);
    if err.is_timeout() { (ErrorKind::Timeout, msg) } else { (ErrorKind::Network, msg) }
}

fn strip_query(msg: &str) -> String {
    static QUERY: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"(https?://[^\s?)]+)\?[^\s)]*").expect("static regex"));
    QUERY.replace_all(msg, "$1?…").into_owned()
}

/// Words in a failure message that name its kind, for failures reported by a flow that runs
/// elsewhere without an `error_kind` (Coze, Dify and n8n pass on the message of the call that
/// failed: Node's `ECONNREFUSED`, `timeout of 10000ms exceeded`, `Request failed with status code
/// 429` …). Checked in order; the first match wins.
const MESSAGE_WORDS: &[(&[&str], ErrorKind)] = &[
    (&["insufficient_quota", "quota", "insufficient balance", "余额不足", "欠费", "arrears"], ErrorKind::QuotaExhausted),
    (&["rate limit", "too many requests", "status code 429", "限流", "频率"], ErrorKind::RateLimited),
    (
        &[
            "unauthorized",
            "status code 401",
            "invalid api key",
            "incorrect api key",
            "invalid_api_key",
            "token expired",
            "expired token",
            "access token",
            "鉴权",
            "令牌",
        ],
        ErrorKind::AuthExpired,
    ),
    (&["timed out", "timeout", "time out", "etimedout", "超时"], ErrorKind::Timeout),
    (
        &[
            "econnrefused",
            "econnreset",
            "enotfound",
            "eai_again",
            "socket hang up",
            "connection refused",
            "connection reset",
            "dns",
            "network",
            "网络",
        ],
        ErrorKind::Network,
    ),
    (&["content filter", "content_filter", "sensitive", "敏感"], ErrorKind::ContentBlocked),
    (
        &["status code 5", "internal server error", "bad gateway", "service unavailable", "gateway timeout", "服务不可用"],
        ErrorKind::Upstream5xx,
    ),
    (&["status code 4", "bad request", "not found", "forbidden"], ErrorKind::Upstream4xx),
];

/// The kind of a failure reported with only an HTTP status and/or a message, classified as a
/// native failure is: a body code in the message, then the status, then the message's words.
/// None when nothing names it.
pub fn classify_reported(http_status: Option<i64>, message: &str) -> Option<ErrorKind> {
    if let Ok(json) = serde_json::from_str::<Json>(message)
        && let Some((kind, _)) = body_code(&json)
    {
        return Some(kind);
    }
    if let Some(status) = http_status.and_then(|s| u16::try_from(s).ok()).filter(|s| *s >= 400) {
        return Some(classify_status(status, message.as_bytes(), false).0);
    }
    let lower = message.to_lowercase();
    MESSAGE_WORDS.iter().find(|(words, _)| words.iter().any(|w| lower.contains(w))).map(|(_, kind)| *kind)
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<f64>().ok().filter(|s| *s >= 0.0 && *s < 3600.0).map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_code_beats_status() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(classify_status(429, body, false).0, ErrorKind::QuotaExhausted);
        assert_eq!(classify_status(429, br#"{"error":{"message":"slow down"}}"#, false).0, ErrorKind::RateLimited);
        assert_eq!(classify_status(429, br#"{"error":{"code":"1302","message":"concurrency"}}"#, false).0, ErrorKind::RateLimited);
        assert_eq!(classify_status(400, br#"{"error":{"code":"1301","message":"unsafe"}}"#, false).0, ErrorKind::ContentBlocked);
        assert_eq!(classify_status(403, br#"{"error":{"code":"AccountOverdue"}}"#, false).0, ErrorKind::QuotaExhausted);
    }

    #[test]
    fn status_then_side_effect() {
        assert_eq!(classify_status(401, b"", false).0, ErrorKind::AuthExpired);
        assert_eq!(classify_status(402, b"", false).0, ErrorKind::QuotaExhausted);
        assert_eq!(classify_status(503, b"<html>", false).0, ErrorKind::Upstream5xx);
        assert_eq!(classify_status(404, b"", false).0, ErrorKind::Upstream4xx);
        assert_eq!(
            classify_status(422, br#"{"message":"title too long"}"#, true),
            (ErrorKind::PublishFailed, "HTTP 422: title too long".into())
        );
    }

    #[test]
    fn reported_failures_are_classified_from_status_and_message() {
        assert_eq!(classify_reported(Some(503), "upstream said no"), Some(ErrorKind::Upstream5xx));
        assert_eq!(classify_reported(None, "timeout of 10000ms exceeded"), Some(ErrorKind::Timeout));
        assert_eq!(classify_reported(None, "Request failed with status code 429"), Some(ErrorKind::RateLimited));
        assert_eq!(classify_reported(None, "connect ECONNREFUSED 10.0.0.1:443"), Some(ErrorKind::Network));
        assert_eq!(classify_reported(None, r#"{"error":{"code":"insufficient_quota"}}"#), Some(ErrorKind::QuotaExhausted));
        assert_eq!(classify_reported(None, "Incorrect API key provided"), Some(ErrorKind::AuthExpired));
        assert_eq!(classify_reported(None, "the script was not good"), None);
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }

    #[test]
    fn query_strings_are_hidden() {
        assert_eq!(
            strip_query("error sending request for url (http://h/x?access_token=abc)"),
            "error sending request for url (http://h/x?…)"
        );
    }
}
