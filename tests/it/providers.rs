//! Each provider's documented error answers, served exactly as its error page shows them
//! (status, body, headers), classified through a real `llm` node run. The README's "Provider
//! answers" table is this list.

use crate::support::fake_provider::{FakeProvider, KEY, Raw};
use crate::support::harness::harness;
use flowguard::vocab::{ErrorKind, RunStatus};

fn config(base_url: &str) -> String {
    format!("models:\n  m:\n    provider: openai\n    base_url: {base_url}\n    model: some-model\n    api_key: {KEY}\n")
}

const FLOW: &str = "name: f\nnodes:\n  - id: s\n    kind: llm\n    model: m\n    prompt: hi\n    retry: { policy: none }\n";

/// Runs the one-node flow against a provider answering `answer`; returns the recorded kind.
async fn kind_of(answer: Raw) -> ErrorKind {
    let status = answer.status;
    let fake = FakeProvider::start(answer).await;
    let h = harness(&config(&fake.base_url), FLOW).await;
    let o = h.run().await;
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(fake.calls(), 1, "one call, no retry");
    let a = h.attempts(&o.run_id).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].http_status, Some(i64::from(status)));
    let kind = o.error_kind.expect("a kind");
    assert_eq!(a[0].error_kind.as_deref(), Some(kind.as_str()));
    kind
}

async fn check(cases: Vec<(&str, Raw, ErrorKind)>) {
    let mut wrong = Vec::new();
    for (name, answer, want) in cases {
        let got = kind_of(answer).await;
        if got != want {
            wrong.push(format!("{name}: got {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn openai_answers() {
    use ErrorKind::*;
    check(vec![
        (
            "429 insufficient_quota",
            Raw::json(429, r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#),
            QuotaExhausted,
        ),
        (
            "429 project_spend_limit_exceeded",
            Raw::json(429, r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"project_spend_limit_exceeded"}}"#),
            QuotaExhausted,
        ),
        (
            "429 rate limit reached",
            Raw::json(429, r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#)
                .with_header("x-ratelimit-limit-requests", "60")
                .with_header("x-ratelimit-remaining-requests", "0")
                .with_header("x-ratelimit-reset-requests", "1s"),
            RateLimited,
        ),
        (
            "401 invalid authentication",
            Raw::json(401, r#"{"error":{"message":"Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#),
            AuthExpired,
        ),
        (
            "403 country not supported",
            Raw::json(403, r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#),
            Upstream4xx,
        ),
        (
            "500 server error",
            Raw::json(500, r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#),
            Upstream5xx,
        ),
        (
            "503 engine overloaded",
            Raw::json(503, r#"{"error":{"message":"The engine is currently overloaded, please try again later","type":"server_error","param":null,"code":null}}"#),
            Upstream5xx,
        ),
    ])
    .await;
}

#[tokio::test]
async fn deepseek_answers() {
    use ErrorKind::*;
    // DeepSeek's page documents statuses; its bodies name no cause of their own.
    check(vec![
        (
            "402 insufficient balance",
            Raw::json(
                402,
                r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#,
            ),
            QuotaExhausted,
        ),
        (
            "422 invalid parameters",
            Raw::json(
                422,
                r#"{"error":{"message":"Invalid Parameters","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}"#,
            ),
            Upstream4xx,
        ),
        (
            "429 rate limit reached",
            Raw::json(
                429,
                r#"{"error":{"message":"Rate Limit Reached","type":"rate_limit_error","param":null,"code":"rate_limit_error"}}"#,
            ),
            RateLimited,
        ),
        (
            "500 server error",
            Raw::json(500, r#"{"error":{"message":"Server Error","type":"server_error","param":null,"code":"server_error"}}"#),
            Upstream5xx,
        ),
        (
            "503 server overloaded",
            Raw::json(503, r#"{"error":{"message":"Server Overloaded","type":"server_error","param":null,"code":"server_error"}}"#),
            Upstream5xx,
        ),
    ])
    .await;
}

#[tokio::test]
async fn volcengine_ark_answers() {
    use ErrorKind::*;
    check(vec![
        (
            "403 AccountOverdueError",
            Raw::json(403, r#"{"error":{"code":"AccountOverdueError","message":"The request failed because your account has an overdue balance. Request ID: 021718067849031cc3b0e1a8d2d7d2e5c8b7e5d1e3f5a7b9c1d3e5","param":"","type":"Forbidden"}}"#),
            QuotaExhausted,
        ),
        (
            "400 InputTextRiskDetection",
            Raw::json(400, r#"{"error":{"code":"InputTextRiskDetection","message":"The request could not be processed because the input text includes sensitive content that violates ContentSecurityDetection.ARKRequest ID: 0217;CSDRequestId: 20250101;Label: 1;SubLabel: 2","param":"","type":"BadRequest"}}"#),
            ContentBlocked,
        ),
        (
            "400 OutputTextRiskDetection",
            Raw::json(400, r#"{"error":{"code":"OutputTextRiskDetection","message":"The request could not be processed because the output text includes sensitive content that violates ContentSecurityDetection.ARKRequest ID: 0217;CSDRequestId: 20250101;Label: 1;SubLabel: 2","param":"","type":"BadRequest"}}"#),
            ContentBlocked,
        ),
        (
            "400 SensitiveContentDetected.Violence",
            Raw::json(400, r#"{"error":{"code":"SensitiveContentDetected.Violence","message":"The request failed because the input text may contain violence information.","param":"","type":"BadRequest"}}"#),
            ContentBlocked,
        ),
        (
            "401 AuthenticationError",
            Raw::json(401, r#"{"error":{"code":"AuthenticationError","message":"The API key or AK/SK in the request is missing or invalid. Request ID: 0217","param":"","type":"Unauthorized"}}"#),
            AuthExpired,
        ),
        (
            "429 RateLimitExceeded.EndpointRPMExceeded",
            Raw::json(429, r#"{"error":{"code":"RateLimitExceeded.EndpointRPMExceeded","message":"The Requests Per Minute (RPM) limit of the associated endpoint for your account has been exceeded. Request ID: 0217","param":"","type":"TooManyRequests"}}"#),
            RateLimited,
        ),
        (
            "404 InvalidEndpointOrModel.NotFound",
            Raw::json(404, r#"{"error":{"code":"InvalidEndpointOrModel.NotFound","message":"The model or endpoint some-model does not exist or you do not have access to it.","param":"","type":"NotFound"}}"#),
            Upstream4xx,
        ),
    ])
    .await;
}

#[tokio::test]
async fn dashscope_compatible_mode_answers() {
    use ErrorKind::*;
    check(vec![
        (
            "400 data_inspection_failed",
            Raw::json(400, r#"{"error":{"code":"data_inspection_failed","param":null,"message":"Input data may contain inappropriate content.","type":"data_inspection_failed"},"id":"chatcmpl-1","request_id":"649b2bbc-c541-9e16-9845-db7fe4fe5b2d"}"#),
            ContentBlocked,
        ),
        (
            "400 Arrearage",
            Raw::json(400, r#"{"error":{"code":"Arrearage","param":null,"message":"Access denied, please make sure your account is in good standing.","type":"Arrearage"},"request_id":"649b2bbc-c541-9e16-9845-db7fe4fe5b2d"}"#),
            QuotaExhausted,
        ),
        (
            "429 Throttling.RateQuota",
            Raw::json(429, r#"{"error":{"code":"Throttling.RateQuota","param":null,"message":"Requests rate limit exceeded, please try again later.","type":"Throttling.RateQuota"},"request_id":"649b2bbc-c541-9e16-9845-db7fe4fe5b2d"}"#),
            RateLimited,
        ),
        (
            "429 insufficient_quota",
            Raw::json(429, r#"{"error":{"code":"insufficient_quota","param":null,"message":"Free allocated quota exceeded.","type":"insufficient_quota"},"request_id":"649b2bbc-c541-9e16-9845-db7fe4fe5b2d"}"#),
            QuotaExhausted,
        ),
        (
            "401 invalid_api_key",
            Raw::json(401, r#"{"error":{"code":"invalid_api_key","param":null,"message":"Incorrect API key provided. ","type":"invalid_request_error"},"request_id":"649b2bbc-c541-9e16-9845-db7fe4fe5b2d"}"#),
            AuthExpired,
        ),
    ])
    .await;
}

#[tokio::test]
async fn moonshot_answers() {
    use ErrorKind::*;
    check(vec![
        (
            "429 exceeded_current_quota_error",
            Raw::json(429, r#"{"error":{"message":"Your account org-446a70bb2cc542e3960c0b7f05e4e0e1 <ak-f817m9q3k3wi11gjwbgi> is suspended due to insufficient balance, please recharge your account or check your plan and billing details","type":"exceeded_current_quota_error"}}"#),
            QuotaExhausted,
        ),
        (
            "403 insufficient balance",
            Raw::json(403, r#"{"error":{"message":"Your account org-446a70bb2cc542e3960c0b7f05e4e0e1 <ak-f817m9q3k3wi11gjwbgi> is suspended due to insufficient balance, please recharge your account or check your plan and billing details","type":"exceeded_current_quota_error"}}"#),
            QuotaExhausted,
        ),
        (
            "429 rate_limit_reached_error",
            Raw::json(429, r#"{"error":{"message":"Your account org-446a70bb2cc542e3960c0b7f05e4e0e1 <ak-f817m9q3k3wi11gjwbgi> request reached max request: 3, please try again after 1 seconds","type":"rate_limit_reached_error"}}"#),
            RateLimited,
        ),
        (
            "400 content_filter",
            Raw::json(400, r#"{"error":{"type":"content_filter","message":"The request was rejected because it was considered high risk"}}"#),
            ContentBlocked,
        ),
        (
            "401 invalid_authentication_error",
            Raw::json(401, r#"{"error":{"type":"invalid_authentication_error","message":"Invalid Authentication"}}"#),
            AuthExpired,
        ),
    ])
    .await;
}

#[tokio::test]
async fn zhipu_answers() {
    use ErrorKind::*;
    check(vec![
        ("429 1113", Raw::json(429, r#"{"error":{"code":"1113","message":"您的账户已欠费，请充值后重试"}}"#), QuotaExhausted),
        (
            "400 1301",
            Raw::json(400, r#"{"error":{"code":"1301","message":"系统检测到输入或生成内容可能包含不安全或敏感内容，请您避免输入易产生敏感内容的提示语，感谢您的配合"}}"#),
            ContentBlocked,
        ),
        ("429 1302", Raw::json(429, r#"{"error":{"code":"1302","message":"您当前使用该API的并发数过高，请降低并发，或联系客服增加限额"}}"#), RateLimited),
        ("429 1303", Raw::json(429, r#"{"error":{"code":"1303","message":"您当前使用该API的频率过高，请降低频率，或联系客服增加限额"}}"#), RateLimited),
    ])
    .await;
}

fn completion(choices: &str) -> Raw {
    Raw::json(
        200,
        &format!(
            r#"{{"id":"c1","object":"chat.completion","model":"some-model","choices":{choices},"usage":{{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}}}"#
        ),
    )
}

#[tokio::test]
async fn finish_reasons_and_empty_choices() {
    use ErrorKind::*;
    check(vec![
        (
            "finish_reason length",
            completion(r#"[{"index":0,"message":{"role":"assistant","content":"标题：露营"},"finish_reason":"length"}]"#),
            GenerationMalformed,
        ),
        (
            "finish_reason content_filter",
            completion(r#"[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"content_filter"}]"#),
            ContentBlocked,
        ),
        (
            "finish_reason sensitive (Zhipu)",
            completion(r#"[{"index":0,"message":{"role":"assistant","content":""},"finish_reason":"sensitive"}]"#),
            ContentBlocked,
        ),
        ("no choices", completion("[]"), GenerationEmpty),
    ])
    .await;
}

#[tokio::test]
async fn unknown_codes_fall_back_to_the_status() {
    use ErrorKind::*;
    check(vec![
        (
            "503 unknown code",
            Raw::json(503, r#"{"error":{"code":"SomethingNew","message":"try later","type":"ServiceUnavailable"}}"#),
            Upstream5xx,
        ),
        ("429 unknown code", Raw::json(429, r#"{"error":{"code":"SomethingNew","message":"slow down"}}"#), RateLimited),
        (
            "400 not JSON",
            Raw { status: 400, headers: vec![("content-type", "text/html")], body: "<html>400 Bad Request</html>".into() },
            Upstream4xx,
        ),
    ])
    .await;
}
