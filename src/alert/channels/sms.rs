//! SMS through Aliyun, Tencent Cloud, or a generic templated HTTP gateway. SMS in China must use a
//! registered sign name (签名) and template: the message becomes template parameters, each
//! rendered from `params` (minijinja over the message fields: flow, node, error_kind, severity,
//! count, time, run_id, title), in the order written. `params` is a map (name → template) or a
//! list (templates by position); without it: `{flow, node, reason}`. Aliyun templates name their
//! variables (`${flow}`), so Aliyun takes the map and matches by name; Tencent templates number
//! theirs (`{1}`, `{2}`), so Tencent sends the values in the order written and ignores the names.
//!
//! Each number gets its own verdict: a retry goes only to the numbers not yet reached, and every
//! try counts toward `alerting.max_attempts`. SMS channels do not carry reports.
//!
//! **Aliyun** (`provider: aliyun`) — Dysmsapi 2017-05-25 `SendSms`, RPC style with signature v1:
//! `GET https://dysmsapi.aliyuncs.com/?AccessKeyId=…&Action=SendSms&Format=JSON&PhoneNumbers=…&RegionId=cn-hangzhou
//! &SignName=…&SignatureMethod=HMAC-SHA1&SignatureNonce=…&SignatureVersion=1.0&TemplateCode=…&TemplateParam={json}
//! &Timestamp=2026-01-01T00:00:00Z&Version=2017-05-25&Signature=…` where the canonical query is the
//! parameters sorted by name, each name and value percent-encoded (RFC 3986: `%20`, `%2A`, `~` kept),
//! StringToSign = `GET&%2F&` + percent-encode(canonical query), Signature =
//! base64(HMAC-SHA1(key = AccessKeySecret + "&", StringToSign)). Answer (HTTP 200 or 4xx):
//! `{"Code": "OK", "Message": "OK", "BizId": "…", "RequestId": "…"}`; errors put another `Code`:
//! `SignatureDoesNotMatch`, `InvalidAccessKeyId.NotFound`, `isv.BUSINESS_LIMIT_CONTROL` (the number's
//! minute/hour/day cap), `isv.AMOUNT_NOT_ENOUGH`. The answer has one `Code` for the whole request, so
//! flowguard sends one request per number to know which numbers were reached.
//!
//! **Tencent Cloud** (`provider: tencent`) — SMS 2021-01-11 `SendSms` with TC3-HMAC-SHA256:
//! `POST https://sms.tencentcloudapi.com/`, headers `Content-Type: application/json; charset=utf-8`,
//! `Host`, `X-TC-Action: SendSms`, `X-TC-Version: 2021-01-11`, `X-TC-Timestamp: {s}`, `X-TC-Region`,
//! `Authorization: TC3-HMAC-SHA256 Credential={SecretId}/{date}/sms/tc3_request, SignedHeaders=content-type;host, Signature={sig}`;
//! body `{"PhoneNumberSet": ["+86…"], "SmsSdkAppId": "…", "SignName": "…", "TemplateId": "…", "TemplateParamSet": ["…"]}`.
//! CanonicalRequest = `POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:{host}\n\ncontent-type;host\n{hex(sha256(body))}`;
//! StringToSign = `TC3-HMAC-SHA256\n{ts}\n{date}/sms/tc3_request\n{hex(sha256(CanonicalRequest))}`;
//! key = HMAC(HMAC(HMAC("TC3" + SecretKey, date), "sms"), "tc3_request"); sig = hex(HMAC(key, StringToSign)).
//! Answer (HTTP 200): `{"Response": {"SendStatusSet": [{"SerialNo": "…", "PhoneNumber": "+86…", "Fee": 1,
//! "SessionContext": "", "Code": "Ok", "Message": "send success", "IsoCode": "CN"}, …], "RequestId": "…"}}`,
//! one entry per number, each with its own `Code` (`LimitExceeded.PhoneNumberThirtySecondLimit`,
//! `…OneHourLimit`, `…DailyLimit`, `InvalidParameterValue.IncorrectPhoneNumber` …), or for the whole
//! request `{"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "…"}, "RequestId": "…"}}`
//! (`RequestLimitExceeded` is the API's own rate limit).
//!
//! **Generic HTTP** (`provider: http`) — `POST {endpoint}` with `body` (a JSON template whose strings
//! are rendered with `phones`, `sign_name`, `template_id`, `params`, `text`) or, without `body`,
//! `{"phones": […], "sign_name": …, "template_id": …, "params": {…}, "text": …}`. Any 2xx is success.

use super::{Answer, Channel, ChannelParams, Ctx, Delivery, Message, Raw, b64, hex, hmac_sha256, judge_http, limits, post};
use crate::alert::config::ChannelConfig;
use crate::flow::diag::Diagnostics;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// `type: sms`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Which SMS service sends: `aliyun`, `tencent`, or `http` (a JSON gateway).
    pub provider: Provider,
    /// Aliyun AccessKey ID / Tencent SecretId.
    pub access_key_id: Option<String>,
    /// Aliyun AccessKey secret / Tencent SecretKey (a secret).
    pub access_key_secret: Option<String>,
    /// The registered sign name (签名).
    pub sign_name: Option<String>,
    /// The template: Aliyun TemplateCode, Tencent TemplateId.
    pub template_id: Option<String>,
    /// Tencent: the SmsSdkAppId.
    pub app_id: Option<String>,
    /// Tencent: the region (default ap-guangzhou).
    pub region: Option<String>,
    /// Phone numbers (+86…).
    pub phones: Vec<String>,
    /// Template parameters: a map (name → template) or a list (by position), in the order written.
    pub params: Option<TemplateParams>,
    /// The service's address instead of the provider's (a private gateway; tests). Required for `http`.
    pub endpoint: Option<String>,
    /// `http`: extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `http`: the JSON body, its strings templates over `phones`, `sign_name`, `template_id`, `params`, `text`, `title`.
    pub body: Option<Json>,
    /// `params` as (name, template) in the order written; names of a list are `1`, `2` ….
    #[serde(skip)]
    ordered: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aliyun,
    Tencent,
    /// A gateway that takes a JSON POST.
    Http,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Aliyun => "aliyun",
            Provider::Tencent => "tencent",
            Provider::Http => "http",
        }
    }
}

/// `params:` as written: a map (name → template) or a list (by position).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TemplateParams {
    Named(BTreeMap<String, String>),
    Positional(Vec<String>),
}

pub fn parse(raw: &Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics> {
    let mut p: Params = raw.parse()?;
    let mut problems = Vec::new();
    if p.phones.is_empty() {
        problems.push(raw.problem("phones", "an `sms` channel needs at least one number in `phones`"));
    }
    let need = |field: &str, v: bool, problems: &mut Vec<_>| {
        if !v {
            problems.push(raw.problem(field, format!("provider `{}` needs `{field}`", p.provider.name())));
        }
    };
    match p.provider {
        Provider::Aliyun | Provider::Tencent => {
            need("access_key_id", p.access_key_id.is_some(), &mut problems);
            need("access_key_secret", p.access_key_secret.is_some(), &mut problems);
            need("template_id", p.template_id.is_some(), &mut problems);
            need("sign_name", p.sign_name.is_some(), &mut problems);
            if p.provider == Provider::Tencent {
                need("app_id", p.app_id.is_some(), &mut problems);
            }
        }
        Provider::Http => need("endpoint", p.endpoint.is_some(), &mut problems),
    }
    p.ordered = match &p.params {
        None => {
            vec![("flow".into(), "{{ flow }}".into()), ("node".into(), "{{ node }}".into()), ("reason".into(), "{{ error_kind }}".into())]
        }
        Some(TemplateParams::Named(m)) => {
            raw.key_order("params").into_iter().filter_map(|k| Some((k.clone(), m.get(&k)?.clone()))).collect()
        }
        Some(TemplateParams::Positional(v)) => v.iter().enumerate().map(|(i, t)| ((i + 1).to_string(), t.clone())).collect(),
    };
    if p.provider == Provider::Aliyun && matches!(p.params, Some(TemplateParams::Positional(_))) {
        problems.push(raw.problem("params", "Aliyun templates name their variables (`${flow}`): write `params` as a map, name → template"));
    }
    let env = minijinja::Environment::new();
    for (name, t) in &p.ordered {
        if let Err(e) = env.template_from_str(t) {
            problems.push(raw.problem("params", format!("parameter `{name}`: {e}")));
        }
    }
    if problems.is_empty() { Ok(Arc::new(p)) } else { Err(Diagnostics(problems)) }
}

impl ChannelParams for Params {
    fn build(&self, _name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
        let endpoint = self.endpoint.clone().unwrap_or_else(|| match self.provider {
            Provider::Aliyun => "https://dysmsapi.aliyuncs.com/".into(),
            Provider::Tencent => "https://sms.tencentcloudapi.com/".into(),
            Provider::Http => String::new(),
        });
        Ok(Arc::new(Sms {
            provider: self.provider,
            endpoint,
            key_id: self.access_key_id.clone().unwrap_or_default(),
            key_secret: self.access_key_secret.clone().unwrap_or_default(),
            sign_name: self.sign_name.clone().unwrap_or_default(),
            template_id: self.template_id.clone().unwrap_or_default(),
            app_id: self.app_id.clone().unwrap_or_default(),
            region: self.region.clone().unwrap_or_else(|| "ap-guangzhou".into()),
            phones: self.phones.clone(),
            params: self.ordered.clone(),
            positional: matches!(self.params, Some(TemplateParams::Positional(_))),
            headers: self.headers.clone(),
            body: self.body.clone(),
            limits: limits(c, &[]),
            timeout: super::timeout(c),
            cx: cx.clone(),
        }))
    }

    fn carries_reports(&self) -> bool {
        false
    }
}

struct Sms {
    provider: Provider,
    endpoint: String,
    key_id: String,
    key_secret: String,
    sign_name: String,
    template_id: String,
    app_id: String,
    region: String,
    phones: Vec<String>,
    params: Vec<(String, String)>,
    positional: bool,
    headers: BTreeMap<String, String>,
    body: Option<Json>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

/// RFC 3986 percent-encoding as Aliyun's signature v1 wants it.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Aliyun signature of sorted parameters (without `Signature`).
pub fn aliyun_signature(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    let canonical = params.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect::<Vec<_>>().join("&");
    let to_sign = format!("{method}&{}&{}", pct("/"), pct(&canonical));
    let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(format!("{secret}&").as_bytes()).expect("any key length");
    m.update(to_sign.as_bytes());
    b64(&m.finalize().into_bytes())
}

/// The TC3-HMAC-SHA256 signature of a Tencent Cloud request.
pub fn tc3_signature(secret_key: &str, host: &str, service: &str, ts: i64, body: &str) -> String {
    let date = jiff::Timestamp::from_second(ts).map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or_default();
    let canonical = format!(
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:{host}\n\ncontent-type;host\n{}",
        hex(&sha2::Sha256::digest(body.as_bytes()))
    );
    let to_sign = format!("TC3-HMAC-SHA256\n{ts}\n{date}/{service}/tc3_request\n{}", hex(&sha2::Sha256::digest(canonical.as_bytes())));
    let k_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&k_date, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"tc3_request");
    hex(&hmac_sha256(&k_signing, to_sign.as_bytes()))
}

impl Sms {
    /// The parameters rendered over the message, in the order written.
    fn rendered_params(&self, msg: &Message) -> Result<Vec<(String, String)>, String> {
        let env = minijinja::Environment::new();
        let mut out = Vec::new();
        for (k, t) in &self.params {
            let v = env.render_str(t, &msg.fields).map_err(|e| format!("SMS parameter `{k}`: {e}"))?;
            // SMS template variables are short; providers reject long ones.
            out.push((k.clone(), super::cut(&v, 60, "…")));
        }
        Ok(out)
    }

    /// Aliyun answers once per request: one request per number tells which numbers were reached.
    async fn aliyun(&self, phones: &[String], params: &[(String, String)]) -> (Delivery, Option<Vec<String>>) {
        let named: serde_json::Map<String, Json> = params.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect();
        let mut fates = Fates::default();
        for (i, phone) in phones.iter().enumerate() {
            let d = self.aliyun_one(phone, &named).await;
            // The number's own cap or a bad number; anything else holds for every number.
            let code = aliyun_code(&d);
            let per_number = code == "isv.BUSINESS_LIMIT_CONTROL" || code.starts_with("isv.MOBILE");
            fates.answers.push(d.answer().to_owned());
            fates.status = d.status();
            match d {
                Delivery::Sent { .. } => fates.sent.push(phone.clone()),
                d if per_number => fates.missed.push((phone.clone(), d)),
                d => {
                    // Signature, account or network trouble: the same for every number; stop here.
                    fates.missed.push((phone.clone(), d));
                    fates.unsent.extend(phones[i + 1..].iter().cloned());
                    break;
                }
            }
        }
        fates.verdict("Aliyun")
    }

    async fn aliyun_one(&self, phone: &str, params: &serde_json::Map<String, Json>) -> Delivery {
        let now = jiff::Timestamp::now();
        let mut q: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in [
            ("AccessKeyId", self.key_id.clone()),
            ("Action", "SendSms".into()),
            ("Format", "JSON".into()),
            ("PhoneNumbers", phone.to_owned()),
            ("RegionId", "cn-hangzhou".into()),
            ("SignName", self.sign_name.clone()),
            ("SignatureMethod", "HMAC-SHA1".into()),
            ("SignatureNonce", uuid::Uuid::now_v7().to_string()),
            ("SignatureVersion", "1.0".into()),
            ("TemplateCode", self.template_id.clone()),
            ("TemplateParam", serde_json::to_string(params).unwrap_or_default()),
            ("Timestamp", now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("Version", "2017-05-25".into()),
        ] {
            q.insert(k.into(), v);
        }
        let sig = aliyun_signature("GET", &q, &self.key_secret);
        let query = q.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect::<Vec<_>>().join("&");
        let url = format!("{}?Signature={}&{query}", self.endpoint, pct(&sig));
        match post(self.cx.http.get(url).timeout(self.timeout), &self.cx.redactor).await {
            Ok(a) => judge_aliyun(a),
            Err(d) => d,
        }
    }

    async fn tencent(&self, phones: &[String], params: &[(String, String)]) -> (Delivery, Option<Vec<String>>) {
        let host = url::Url::parse(&self.endpoint)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                })
            })
            .unwrap_or_default();
        let body = json!({
            "PhoneNumberSet": phones,
            "SmsSdkAppId": self.app_id,
            "SignName": self.sign_name,
            "TemplateId": self.template_id,
            // Tencent templates number their slots: the values go in the order written.
            "TemplateParamSet": params.iter().map(|(_, v)| v).collect::<Vec<_>>(),
        })
        .to_string();
        let ts = jiff::Timestamp::now().as_second();
        let date = jiff::Timestamp::from_second(ts).map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or_default();
        let sig = tc3_signature(&self.key_secret, &host, "sms", ts, &body);
        let auth =
            format!("TC3-HMAC-SHA256 Credential={}/{date}/sms/tc3_request, SignedHeaders=content-type;host, Signature={sig}", self.key_id);
        let req = self
            .cx
            .http
            .post(&self.endpoint)
            .timeout(self.timeout)
            .header("content-type", "application/json; charset=utf-8")
            .header("host", &host)
            .header("x-tc-action", "SendSms")
            .header("x-tc-version", "2021-01-11")
            .header("x-tc-timestamp", ts.to_string())
            .header("x-tc-region", &self.region)
            .header("authorization", auth)
            .body(body);
        match post(req, &self.cx.redactor).await {
            Ok(a) => judge_tencent(a, phones),
            Err(d) => (d, None),
        }
    }

    async fn http(&self, msg: &Message, phones: &[String], params: &[(String, String)]) -> Delivery {
        let params: Json = if self.positional {
            Json::Array(params.iter().map(|(_, v)| Json::String(v.clone())).collect())
        } else {
            Json::Object(params.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect())
        };
        let ctx = json!({"phones": phones, "sign_name": self.sign_name, "template_id": self.template_id, "params": params, "text": msg.text, "title": msg.title});
        let body = match &self.body {
            Some(t) => match render_json(t, &ctx) {
                Ok(b) => b,
                Err(e) => return Delivery::Failed { status: None, answer: String::new(), error: e },
            },
            None => ctx,
        };
        let mut req = self.cx.http.post(&self.endpoint).timeout(self.timeout).json(&body);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        match post(req, &self.cx.redactor).await {
            Ok(a) => judge_http(a),
            Err(d) => d,
        }
    }
}

/// Who was reached and who was not, across one send.
#[derive(Default)]
struct Fates {
    sent: Vec<String>,
    /// Numbers tried and not reached, each with its verdict.
    missed: Vec<(String, Delivery)>,
    /// Numbers not tried (a failure that holds for all of them came first).
    unsent: Vec<String>,
    answers: Vec<String>,
    /// The HTTP status of the last answer.
    status: Option<u16>,
}

impl Fates {
    /// One verdict for the send and, when some numbers have it, the numbers still owed it.
    fn verdict(self, who: &str) -> (Delivery, Option<Vec<String>>) {
        let answer = self.answers.join("\n");
        if self.missed.is_empty() && self.unsent.is_empty() {
            return (Delivery::Sent { status: self.status, answer }, None);
        }
        let mut owed: Vec<String> = self.missed.iter().map(|(p, _)| p.clone()).collect();
        owed.extend(self.unsent.iter().cloned());
        let mut error = self.missed.iter().map(|(p, d)| format!("{p}: {}", d.error().unwrap_or_default())).collect::<Vec<_>>().join("; ");
        if !self.sent.is_empty() {
            error = format!("{who}: sent to {} of {} numbers; {error}", self.sent.len(), self.sent.len() + owed.len());
        }
        // The most hopeful verdict among the numbers decides whether the send is tried again.
        let pick = |f: fn(&Delivery) -> bool| self.missed.iter().map(|(_, d)| d).find(|d| f(d)).cloned();
        let verdict = pick(|d| matches!(d, Delivery::RateLimited { .. }))
            .map(|d| match d {
                Delivery::RateLimited { status, retry_after, .. } => Delivery::RateLimited { status, retry_after, answer: answer.clone() },
                d => d,
            })
            .or_else(|| {
                pick(|d| matches!(d, Delivery::Retry { .. })).map(|d| Delivery::Retry {
                    status: d.status(),
                    error: error.clone(),
                    answer: answer.clone(),
                })
            })
            .unwrap_or_else(|| Delivery::Failed { status: self.missed.first().and_then(|(_, d)| d.status()), error, answer });
        let owed = if self.sent.is_empty() { None } else { Some(owed) };
        (verdict, owed)
    }
}

fn render_json(t: &Json, ctx: &Json) -> Result<Json, String> {
    Ok(match t {
        Json::String(s) => Json::String(
            minijinja::Environment::new()
                .render_str(s, minijinja::Value::from(minijinja::value::Serde(ctx)))
                .map_err(|e| format!("SMS body: {e}"))?,
        ),
        Json::Array(a) => Json::Array(a.iter().map(|v| render_json(v, ctx)).collect::<Result<_, _>>()?),
        Json::Object(o) => Json::Object(o.iter().map(|(k, v)| Ok((k.clone(), render_json(v, ctx)?))).collect::<Result<_, String>>()?),
        other => other.clone(),
    })
}

fn aliyun_code(d: &Delivery) -> String {
    let v: Json = serde_json::from_str(d.answer()).unwrap_or(Json::Null);
    v.get("Code").and_then(Json::as_str).unwrap_or("").to_owned()
}

fn judge_aliyun(a: Answer) -> Delivery {
    let status = Some(a.status);
    let v: Json = serde_json::from_str(&a.body).unwrap_or(Json::Null);
    let code = v.get("Code").and_then(Json::as_str).unwrap_or("").to_owned();
    let msg = v.get("Message").and_then(Json::as_str).unwrap_or("").to_owned();
    match code.as_str() {
        "OK" => Delivery::Sent { status, answer: a.body },
        // The API's own request rate: the whole channel waits.
        "Throttling.User" | "Throttling" => {
            Delivery::RateLimited { status, retry_after: a.retry_after.or(Some(Duration::from_secs(60))), answer: a.body }
        }
        // The number's own minute/hour cap: try that number again later (each try counts).
        "isv.BUSINESS_LIMIT_CONTROL" => Delivery::Retry { status, error: format!("Aliyun {code}: {msg}"), answer: a.body },
        "" if a.status >= 500 || a.status == 429 => judge_http(a),
        "" => Delivery::Retry { status, error: format!("HTTP {} without a Code", a.status), answer: a.body },
        c if c.starts_with("isp.") || c.starts_with("ServiceUnavailable") || c.starts_with("InternalError") => {
            Delivery::Retry { status, error: format!("Aliyun {c}: {msg}"), answer: a.body }
        }
        c => Delivery::Failed { status, error: format!("Aliyun {c}: {msg}"), answer: a.body },
    }
}

/// Tencent's per-number codes: worth another try later, or not.
fn tencent_number_retry(code: &str) -> bool {
    matches!(code, "LimitExceeded.PhoneNumberThirtySecondLimit" | "LimitExceeded.PhoneNumberOneHourLimit")
        || code.starts_with("InternalError")
        || code.starts_with("FailedOperation.") && code.contains("Timeout")
}

fn judge_tencent(a: Answer, phones: &[String]) -> (Delivery, Option<Vec<String>>) {
    let status = Some(a.status);
    let v: Json = serde_json::from_str(&a.body).unwrap_or(Json::Null);
    let r = &v["Response"];
    if let Some(code) = r["Error"]["Code"].as_str() {
        let msg = r["Error"]["Message"].as_str().unwrap_or("");
        if code == "RequestLimitExceeded" {
            return (Delivery::RateLimited { status, retry_after: a.retry_after.or(Some(Duration::from_secs(60))), answer: a.body }, None);
        }
        let error = format!("Tencent {code}: {msg}");
        let d = if tencent_number_retry(code) {
            Delivery::Retry { status, error, answer: a.body }
        } else {
            Delivery::Failed { status, error, answer: a.body }
        };
        return (d, None);
    }
    let Some(set) = r["SendStatusSet"].as_array().filter(|s| !s.is_empty()) else {
        return if a.status >= 500 || a.status == 429 {
            (judge_http(a), None)
        } else {
            (Delivery::Retry { status, error: "no SendStatusSet in the answer".into(), answer: a.body }, None)
        };
    };
    let mut fates = Fates { answers: vec![a.body.clone()], status, ..Default::default() };
    for s in set {
        let phone = s["PhoneNumber"].as_str().unwrap_or("").to_owned();
        let code = s["Code"].as_str().unwrap_or("");
        if code == "Ok" {
            fates.sent.push(phone);
            continue;
        }
        let error = format!("Tencent {code}: {}", s["Message"].as_str().unwrap_or(""));
        let d = if tencent_number_retry(code) {
            Delivery::Retry { status, error, answer: String::new() }
        } else {
            Delivery::Failed { status, error, answer: String::new() }
        };
        fates.missed.push((phone, d));
    }
    // Numbers the answer does not mention were not reached.
    let named: Vec<String> = fates.sent.iter().chain(fates.missed.iter().map(|(p, _)| p)).cloned().collect();
    fates.unsent = phones.iter().filter(|p| !named.contains(p)).cloned().collect();
    fates.verdict("Tencent")
}

impl Channel for Sms {
    fn kind(&self) -> &'static str {
        "sms"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move { self.send_partial(msg).await.0 })
    }

    fn send_partial<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, (Delivery, Option<Vec<String>>)> {
        Box::pin(async move {
            let params = match self.rendered_params(msg) {
                Ok(p) => p,
                Err(e) => return (Delivery::Failed { status: None, answer: String::new(), error: e }, None),
            };
            // After a partial delivery only the numbers still owed the message are tried.
            let phones = msg.recipients.clone().unwrap_or_else(|| self.phones.clone());
            match self.provider {
                Provider::Aliyun => self.aliyun(&phones, &params).await,
                Provider::Tencent => self.tencent(&phones, &params).await,
                Provider::Http => (self.http(msg, &phones, &params).await, None),
            }
        })
    }

    fn rate_limits(&self) -> Vec<(u32, Duration)> {
        self.limits.clone()
    }

    fn secrets(&self) -> Vec<String> {
        let mut s = vec![self.key_secret.clone(), self.key_id.clone()];
        s.extend(self.headers.iter().filter(|(k, _)| crate::redact::is_secret_header(k)).map(|(_, v)| v.clone()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliyun_percent_encoding_follows_rfc3986() {
        assert_eq!(pct("a b*~/"), "a%20b%2A~%2F");
        assert_eq!(pct("签"), "%E7%AD%BE");
    }

    #[test]
    fn tencent_signature_is_stable_and_depends_on_the_body() {
        let a = tc3_signature("key", "sms.tencentcloudapi.com", "sms", 1_551_113_065, "{}");
        let b = tc3_signature("key", "sms.tencentcloudapi.com", "sms", 1_551_113_065, "{\"a\":1}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
