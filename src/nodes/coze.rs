//! `coze`: runs a Coze workflow through the Coze Open API and waits for its result.
//!
//! `POST {base_url}/v1/workflow/run` with `workflow_id` and `parameters`. A synchronous run answers
//! with the result; an asynchronous one (`async: true`, for workflows longer than the API's
//! synchronous limit) answers with an `execute_id`, whose run history is then polled — `GET
//! /v1/workflows/{workflow_id}/run_histories/{execute_id}` on coze.cn / coze.com, `GET
//! /v1/workflow/get_run_history` on a self-hosted Coze Studio — until it is `Success` or `Fail`,
//! or the node's `timeout` ends the attempt.
//!
//! Coze answers most errors with HTTP 200 and a non-zero `code` in the body; both the status and
//! the code are classified. The attempt records the run's `execute_id`, `debug_url` and token
//! usage (in its output, or its input when it timed out while polling).
//!
//! ```yaml
//! - id: storyboard
//!   kind: coze
//!   endpoint: coze           # base_url and the token (a `${COZE_API_TOKEN}` header) in flowguard.yaml
//!   workflow_id: "7428912345678901234"
//!   parameters: { topic: "{{ nodes.topic.topic }}" }
//!   async: true
//!   timeout: 10m
//! ```

use super::{BuildCx, Endpoint, Meta, NodeError, NodeKind, Output, Raw, RunCx};
use crate::classify::{classify_reported, classify_status, classify_transport, retry_after};
use crate::config::HumanDuration;
use crate::flow::Diagnostic;
use crate::flow::template::JsonTmpl;
use crate::vocab::ErrorKind;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    /// An endpoint named in the config: its `base_url` is the Coze API (`https://api.coze.cn`,
    /// `https://api.coze.com`, or a self-hosted Coze Studio) and its `headers` (e.g.
    /// `Authorization: "Bearer ${COZE_API_TOKEN}"`) or `auth` carry the token.
    endpoint: String,
    /// The workflow's ID (the number at the end of its page's URL).
    workflow_id: String,
    /// The workflow's input parameters (a mapping; strings are templates).
    parameters: Option<Json>,
    /// Run asynchronously and poll the run history until the run ends or the node's `timeout`.
    #[serde(default, rename = "async")]
    is_async: bool,
    /// Time between two polls of an asynchronous run.
    #[serde(default = "default_poll")]
    poll_interval: HumanDuration,
    /// The agent (bot) to run the workflow for, when the workflow needs one.
    bot_id: Option<String>,
    /// The app (project) the workflow belongs to, for workflows of an app.
    app_id: Option<String>,
    /// The endpoint is a self-hosted Coze Studio (its run history is read from
    /// `GET /v1/workflow/get_run_history`).
    #[serde(default)]
    coze_studio: bool,
}

fn default_poll() -> HumanDuration {
    HumanDuration::secs(2)
}

#[derive(Debug)]
struct Coze {
    endpoint: Arc<Endpoint>,
    base_url: String,
    workflow_id: String,
    parameters: Option<JsonTmpl>,
    is_async: bool,
    poll_interval: std::time::Duration,
    bot_id: Option<String>,
    app_id: Option<String>,
    coze_studio: bool,
}

pub fn build(raw: Raw<'_>, cx: &mut BuildCx<'_>) -> Result<Arc<dyn NodeKind>, Diagnostic> {
    let p: Params = raw.parse()?;
    let endpoint = match cx.registry.endpoints.get(&p.endpoint) {
        Some(e) => e.clone(),
        None => {
            let hint = crate::flow::suggest(&p.endpoint, cx.registry.endpoints.keys().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            cx.error("endpoint", format!("unknown endpoint `{}`{hint}", p.endpoint));
            Arc::new(Endpoint { base_url: None, auth: None, headers: Default::default(), simulate: None })
        }
    };
    let base_url = endpoint.base_url.clone().unwrap_or_default().trim_end_matches('/').to_owned();
    if cx.registry.endpoints.contains_key(&p.endpoint) {
        if base_url.is_empty() {
            cx.error("endpoint", format!("endpoint `{}` needs a `base_url` (e.g. https://api.coze.cn)", p.endpoint));
        }
        let has_token = endpoint.auth.is_some() || endpoint.headers.keys().any(|k| k.eq_ignore_ascii_case("authorization"));
        if !has_token {
            cx.error(
                "endpoint",
                format!("endpoint `{}` sends no token: add `headers: {{ Authorization: \"Bearer ${{COZE_API_TOKEN}}\" }}`", p.endpoint),
            );
        }
    }
    if p.workflow_id.trim().is_empty() {
        cx.error("workflow_id", "a coze node needs the `workflow_id` of the workflow to run");
    }
    if let Some(params) = &p.parameters
        && !params.is_object()
    {
        cx.error("parameters", "`parameters` is a mapping of the workflow's input names to values");
    }
    if p.poll_interval.get().is_zero() {
        cx.error("poll_interval", "must be longer than 0s");
    }
    let parameters = p.parameters.as_ref().map(|v| cx.json("parameters", v));
    Ok(Arc::new(Coze {
        endpoint,
        base_url,
        workflow_id: p.workflow_id,
        parameters,
        is_async: p.is_async,
        poll_interval: p.poll_interval.get(),
        bot_id: p.bot_id,
        app_id: p.app_id,
        coze_studio: p.coze_studio,
    }))
}

/// Coze's own codes, from the answers of coze.cn / coze.com and the OpenAPI handlers of Coze
/// Studio (`backend/types/errno`). Coze's public error-code page could not be reached; codes not
/// listed here are classified by their message, then as a rejected request.
const CODES: &[(i64, ErrorKind)] = &[
    // coze.cn answers an invalid or expired token with HTTP 401 and `code: 4100`
    // ("authentication is invalid"); Coze Studio with HTTP 200 and 700012006.
    (4100, ErrorKind::AuthExpired),
    (700012006, ErrorKind::AuthExpired),
    // Coze Studio: a missing or invalid parameter.
    (4000, ErrorKind::Upstream4xx),
    // Coze Studio: the workflow ran past its own time limit.
    (6023, ErrorKind::Timeout),
    // Coze Studio: the workflow is not published; it asks a question (interrupts), which this API
    // cannot answer.
    (6031, ErrorKind::Upstream4xx),
    (6039, ErrorKind::Upstream4xx),
];

fn code_kind(code: i64, message: &str, status: u16) -> ErrorKind {
    if let Some((_, kind)) = CODES.iter().find(|(c, _)| *c == code) {
        return *kind;
    }
    if status >= 400 {
        return classify_status(status, message.as_bytes(), false).0;
    }
    classify_reported(None, message).unwrap_or(ErrorKind::Upstream4xx)
}

/// A number or a numeric string (Coze Studio sends 64-bit IDs and codes as either).
fn as_i64(v: Option<&Json>) -> Option<i64> {
    match v? {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_id(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A workflow's output: usually a JSON document in a string (the run history sometimes wraps it
/// once more as `{"Output": "<json>"}`); otherwise the text itself.
fn parse_output(text: &str) -> Json {
    let v = serde_json::from_str::<Json>(text).unwrap_or_else(|_| Json::String(text.to_owned()));
    if let Some(inner) = v.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("Output")).and_then(Json::as_str) {
        return serde_json::from_str(inner).unwrap_or_else(|_| Json::String(inner.to_owned()));
    }
    v
}

/// Token usage as Coze reports it: `usage: {input_count, output_count, token_count}` (coze.cn,
/// coze.com) or `token` (Coze Studio).
fn usage(v: &Json) -> (Option<Json>, Option<i64>, Option<i64>) {
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        return (Some(u.clone()), as_i64(u.get("input_count")), as_i64(u.get("output_count")));
    }
    (as_i64(v.get("token")).map(|t| json!({ "token_count": t })), None, None)
}

/// What is known about a run once it started, kept with the attempt whatever its outcome.
#[derive(Default, Clone)]
struct RunRef {
    execute_id: Option<String>,
    debug_url: Option<String>,
}

impl RunRef {
    fn read(v: &Json) -> RunRef {
        RunRef { execute_id: as_id(v.get("execute_id")), debug_url: v.get("debug_url").and_then(Json::as_str).map(str::to_owned) }
    }
    fn merge(&mut self, other: RunRef) {
        if other.execute_id.is_some() {
            self.execute_id = other.execute_id;
        }
        if other.debug_url.is_some() {
            self.debug_url = other.debug_url;
        }
    }
    fn json(&self) -> Json {
        json!({ "execute_id": self.execute_id, "debug_url": self.debug_url })
    }
}

struct Answer {
    status: u16,
    body: Json,
}

impl Coze {
    /// One call to the Coze API: the transport, then the status, then Coze's `code`.
    async fn call(&self, cx: &RunCx<'_>, rb: reqwest::RequestBuilder, run: &RunRef) -> Result<Answer, NodeError> {
        let mut rb = rb;
        for (k, v) in &self.endpoint.headers {
            rb = rb.header(k, v);
        }
        if let Some(auth) = &self.endpoint.auth {
            rb = rb.bearer_auth(auth.token(&cx.reg.http, cx.clock, false).await?);
        }
        let fail = |kind: ErrorKind, msg: String, status: Option<u16>, extra: Json| {
            let mut out = run.json();
            if let (Some(o), Json::Object(e)) = (out.as_object_mut(), extra) {
                o.extend(e);
            }
            let mut e = NodeError::new(kind, msg).with_meta(Meta { http_status: status, ..Default::default() });
            e.output = Some(out);
            e
        };
        let resp = rb.send().await.map_err(|e| {
            let (kind, msg) = classify_transport(&e);
            fail(kind, msg, None, Json::Null)
        })?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let bytes = crate::net::read_limited(resp, crate::net::MAX_BODY)
            .await
            .map_err(|m| fail(ErrorKind::Upstream5xx, m, Some(status), Json::Null))?;
        let body: Option<Json> = serde_json::from_slice(&bytes).ok();
        let code = body.as_ref().and_then(|b| as_i64(b.get("code")));
        let msg = body.as_ref().and_then(|b| b.get("msg")).and_then(Json::as_str).unwrap_or_default().to_owned();
        if let Some(code) = code.filter(|c| *c != 0) {
            let kind = code_kind(code, &msg, status);
            let mut e = fail(kind, format!("Coze answered code {code}: {msg}"), Some(status), json!({ "code": code, "msg": msg }));
            e.retry_after = wait;
            if let Some(o) = e.output.as_mut().and_then(Json::as_object_mut)
                && let Some(url) = body.as_ref().and_then(|b| b.get("debug_url")).filter(|u| u.is_string())
            {
                o.insert("debug_url".into(), url.clone());
            }
            return Err(e);
        }
        if !(200..300).contains(&status) {
            let (kind, m) = classify_status(status, &bytes, false);
            let mut e = fail(kind, m, Some(status), Json::Null);
            e.retry_after = wait;
            return Err(e);
        }
        match body {
            Some(body) => Ok(Answer { status, body }),
            None => Err(fail(ErrorKind::Upstream5xx, "Coze's answer is not JSON".into(), Some(status), Json::Null)),
        }
    }

    fn history_request(&self, cx: &RunCx<'_>, execute_id: &str) -> reqwest::RequestBuilder {
        if self.coze_studio {
            let base = format!("{}/v1/workflow/get_run_history", self.base_url);
            let params = [("workflow_id", self.workflow_id.as_str()), ("execute_id", execute_id)];
            match reqwest::Url::parse_with_params(&base, params) {
                Ok(url) => cx.reg.http.get(url),
                Err(_) => cx.reg.http.get(base),
            }
        } else {
            cx.reg.http.get(format!("{}/v1/workflows/{}/run_histories/{}", self.base_url, self.workflow_id, execute_id))
        }
    }

    /// Polls an asynchronous run until it ends. Polls that fail for a passing reason (network,
    /// 5xx, rate limit) are tried again at the next interval: the run itself is not restarted.
    async fn poll(&self, cx: &RunCx<'_>, run: &mut RunRef) -> Result<(Json, u16), NodeError> {
        let Some(execute_id) = run.execute_id.clone() else {
            return Err(NodeError::new(ErrorKind::Upstream5xx, "Coze started an asynchronous run without an execute_id"));
        };
        loop {
            cx.clock.sleep(self.poll_interval).await;
            let answer = match self.call(cx, self.history_request(cx, &execute_id), run).await {
                Ok(a) => a,
                Err(e) if matches!(e.kind, ErrorKind::Network | ErrorKind::Upstream5xx | ErrorKind::RateLimited) => {
                    tracing::debug!(execute_id, error = %e.message, "polling a Coze run failed; polling again");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(history) = answer.body.get("data").and_then(|d| d.get(0)).cloned() else {
                return Err(NodeError::new(ErrorKind::Upstream5xx, format!("Coze has no run history for execute_id {execute_id}")));
            };
            run.merge(RunRef::read(&history));
            match history.get("execute_status").and_then(Json::as_str).unwrap_or_default() {
                "Running" => continue,
                "Success" => return Ok((history, answer.status)),
                other => {
                    let code = as_i64(history.get("error_code")).unwrap_or_default();
                    let msg = history
                        .get("error_message")
                        .or_else(|| history.get("error_msg"))
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    // A run that failed inside Coze (a node of the workflow failed) may pass on retry.
                    let kind = CODES
                        .iter()
                        .find(|(c, _)| *c == code)
                        .map(|(_, k)| *k)
                        .or_else(|| classify_reported(None, &msg))
                        .unwrap_or(ErrorKind::Upstream5xx);
                    let mut out = run.json();
                    if let Some(o) = out.as_object_mut() {
                        o.insert("execute_status".into(), json!(other));
                        o.insert("code".into(), json!(code));
                        o.insert("msg".into(), json!(msg));
                    }
                    let mut e = NodeError::new(kind, format!("the Coze run ended {other} (code {code}): {msg}"))
                        .with_meta(Meta { http_status: Some(answer.status), ..Default::default() });
                    e.output = Some(out);
                    return Err(e);
                }
            }
        }
    }
}

impl NodeKind for Coze {
    fn failure_kinds(&self, side_effect: bool) -> Vec<ErrorKind> {
        let mut kinds = super::remote_failure_kinds(side_effect);
        if !kinds.contains(&ErrorKind::Timeout) {
            kinds.push(ErrorKind::Timeout);
        }
        kinds
    }

    fn run<'a>(&'a self, cx: &'a RunCx<'a>) -> BoxFuture<'a, Result<Output, NodeError>> {
        Box::pin(async move {
            let parameters = match &self.parameters {
                Some(p) => cx.json(p)?,
                None => json!({}),
            };
            let mut body = json!({ "workflow_id": self.workflow_id, "parameters": parameters });
            if self.is_async {
                body["is_async"] = json!(true);
            }
            if let Some(b) = &self.bot_id {
                body["bot_id"] = json!(b);
            }
            if let Some(a) = &self.app_id {
                body["app_id"] = json!(a);
            }
            let mut run = RunRef::default();
            let rb = cx.reg.http.post(format!("{}/v1/workflow/run", self.base_url)).json(&body);
            let started = self.call(cx, rb, &run).await?;
            run.merge(RunRef::read(&started.body));
            let (result, status) = if self.is_async {
                // Kept with the attempt even if the node's timeout cuts the polling short.
                cx.record(&run.json());
                self.poll(cx, &mut run).await?
            } else {
                (started.body, started.status)
            };
            let text = result.get("data").or_else(|| result.get("output")).and_then(Json::as_str).unwrap_or_default();
            let (usage, tokens_in, tokens_out) = usage(&result);
            let value = json!({
                "output": parse_output(text),
                "execute_id": run.execute_id,
                "debug_url": run.debug_url,
                "usage": usage,
            });
            Ok(Output { value, next: None, meta: Meta { tokens_in, tokens_out, http_status: Some(status), ..Default::default() } })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_unwrapped() {
        assert_eq!(parse_output(r#"{"title":"露营"}"#)["title"], "露营");
        assert_eq!(parse_output(r#"{"Output":"{\"title\":\"露营\"}"}"#)["title"], "露营");
        assert_eq!(parse_output("plain text"), Json::String("plain text".into()));
    }

    #[test]
    fn codes_are_classified() {
        assert_eq!(code_kind(4100, "authentication is invalid", 401), ErrorKind::AuthExpired);
        assert_eq!(code_kind(6023, "workflow timeout", 200), ErrorKind::Timeout);
        assert_eq!(code_kind(999, "", 429), ErrorKind::RateLimited);
        assert_eq!(code_kind(999, "something odd", 200), ErrorKind::Upstream4xx);
    }
}
