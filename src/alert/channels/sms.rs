//! SMS through Aliyun, Tencent Cloud, or a generic templated HTTP gateway. SMS in China must use a
//! registered sign name (签名) and template: the message becomes template parameters, each
//! rendered from `params` (minijinja over the message fields: flow, node, error_kind, severity,
//! count, time, run_id, title). Without `params`: `{flow, node, reason}`.
//!
//! **Aliyun** (`provider: aliyun`) — Dysmsapi 2017-05-25 `SendSms`, RPC style with signature v1:
//! `GET https://dysmsapi.aliyuncs.com/?AccessKeyId=…&Action=SendSms&Format=JSON&PhoneNumbers=…&RegionId=cn-hangzhou
//! &SignName=…&SignatureMethod=HMAC-SHA1&SignatureNonce=…&SignatureVersion=1.0&TemplateCode=…&TemplateParam={json}
//! &Timestamp=2026-01-01T00:00:00Z&Version=2017-05-25&Signature=…` where the canonical query is the
//! parameters sorted by name, each name and value percent-encoded (RFC 3986: `%20`, `%2A`, `~` kept),
//! StringToSign = `GET&%2F&` + percent-encode(canonical query), Signature =
//! base64(HMAC-SHA1(key = AccessKeySecret + "&", StringToSign)). Answer (HTTP 200 or 4xx):
//! `{"Code": "OK", "Message": "OK", "BizId": "…", "RequestId": "…"}`; errors put another `Code`:
//! `SignatureDoesNotMatch`, `InvalidAccessKeyId.NotFound`, `isv.BUSINESS_LIMIT_CONTROL` (rate), `isv.AMOUNT_NOT_ENOUGH`.
//!
//! **Tencent Cloud** (`provider: tencent`) — SMS 2021-01-11 `SendSms` with TC3-HMAC-SHA256:
//! `POST https://sms.tencentcloudapi.com/`, headers `Content-Type: application/json; charset=utf-8`,
//! `Host`, `X-TC-Action: SendSms`, `X-TC-Version: 2021-01-11`, `X-TC-Timestamp: {s}`, `X-TC-Region`,
//! `Authorization: TC3-HMAC-SHA256 Credential={SecretId}/{date}/sms/tc3_request, SignedHeaders=content-type;host, Signature={sig}`;
//! body `{"PhoneNumberSet": ["+86…"], "SmsSdkAppId": "…", "SignName": "…", "TemplateId": "…", "TemplateParamSet": ["…"]}`.
//! CanonicalRequest = `POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:{host}\n\ncontent-type;host\n{hex(sha256(body))}`;
//! StringToSign = `TC3-HMAC-SHA256\n{ts}\n{date}/sms/tc3_request\n{hex(sha256(CanonicalRequest))}`;
//! key = HMAC(HMAC(HMAC("TC3" + SecretKey, date), "sms"), "tc3_request"); sig = hex(HMAC(key, StringToSign)).
//! Answer (HTTP 200): `{"Response": {"SendStatusSet": [{"PhoneNumber": "+86…", "Code": "Ok", "Message": "send success", …}], "RequestId": "…"}}`
//! or `{"Response": {"Error": {"Code": "AuthFailure.SignatureFailure", "Message": "…"}, "RequestId": "…"}}`;
//! `RequestLimitExceeded` / `LimitExceeded.*` are rate limits. Template parameters go in the order of their names.
//!
//! **Generic HTTP** (`provider: http`) — `POST {endpoint}` with `body` (a JSON template whose strings
//! are rendered with `phones`, `sign_name`, `template_id`, `params`, `text`) or, without `body`,
//! `{"phones": […], "sign_name": …, "template_id": …, "params": {…}, "text": …}`. Any 2xx is success.

use super::{Answer, Channel, Ctx, Delivery, Message, b64, hex, hmac_sha256, judge_http, limits, post};
use crate::alert::config::ChannelConfig;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

struct Sms {
    provider: String,
    endpoint: String,
    key_id: String,
    key_secret: String,
    sign_name: String,
    template_id: String,
    app_id: String,
    region: String,
    phones: Vec<String>,
    params: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Option<Json>,
    limits: Vec<(u32, Duration)>,
    timeout: Duration,
    cx: Ctx,
}

pub fn build(_name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
    let provider = c.provider.clone().unwrap_or_default();
    let endpoint = c.endpoint.clone().unwrap_or_else(|| match provider.as_str() {
        "aliyun" => "https://dysmsapi.aliyuncs.com/".into(),
        "tencent" => "https://sms.tencentcloudapi.com/".into(),
        _ => String::new(),
    });
    let mut params = c.params.clone();
    if params.is_empty() {
        params.insert("flow".into(), "{{ flow }}".into());
        params.insert("node".into(), "{{ node }}".into());
        params.insert("reason".into(), "{{ error_kind }}".into());
    }
    Ok(Arc::new(Sms {
        provider,
        endpoint,
        key_id: c.access_key_id.clone().unwrap_or_default(),
        key_secret: c.access_key_secret.clone().unwrap_or_default(),
        sign_name: c.sign_name.clone().unwrap_or_default(),
        template_id: c.template_id.clone().unwrap_or_default(),
        app_id: c.app_id.clone().unwrap_or_default(),
        region: c.region.clone().unwrap_or_else(|| "ap-guangzhou".into()),
        phones: c.phones.clone(),
        params,
        headers: c.headers.clone(),
        body: c.body.clone(),
        limits: limits(c, &[]),
        timeout: super::timeout(c),
        cx: cx.clone(),
    }))
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
    fn rendered_params(&self, msg: &Message) -> Result<BTreeMap<String, String>, String> {
        let env = minijinja::Environment::new();
        let mut out = BTreeMap::new();
        for (k, t) in &self.params {
            let v = env.render_str(t, &msg.fields).map_err(|e| format!("SMS parameter `{k}`: {e}"))?;
            // SMS template variables are short; providers reject long ones.
            out.insert(k.clone(), super::cut(&v, 60, "…"));
        }
        Ok(out)
    }

    async fn aliyun(&self, params: BTreeMap<String, String>) -> Delivery {
        let now = jiff::Timestamp::now();
        let mut q: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in [
            ("AccessKeyId", self.key_id.clone()),
            ("Action", "SendSms".into()),
            ("Format", "JSON".into()),
            ("PhoneNumbers", self.phones.join(",")),
            ("RegionId", "cn-hangzhou".into()),
            ("SignName", self.sign_name.clone()),
            ("SignatureMethod", "HMAC-SHA1".into()),
            ("SignatureNonce", uuid::Uuid::now_v7().to_string()),
            ("SignatureVersion", "1.0".into()),
            ("TemplateCode", self.template_id.clone()),
            ("TemplateParam", serde_json::to_string(&params).unwrap_or_default()),
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

    async fn tencent(&self, params: BTreeMap<String, String>) -> Delivery {
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
            "PhoneNumberSet": self.phones,
            "SmsSdkAppId": self.app_id,
            "SignName": self.sign_name,
            "TemplateId": self.template_id,
            "TemplateParamSet": params.values().collect::<Vec<_>>(),
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
            Ok(a) => judge_tencent(a),
            Err(d) => d,
        }
    }

    async fn http(&self, msg: &Message, params: BTreeMap<String, String>) -> Delivery {
        let ctx = json!({"phones": self.phones, "sign_name": self.sign_name, "template_id": self.template_id, "params": params, "text": msg.text, "title": msg.title});
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

fn judge_aliyun(a: Answer) -> Delivery {
    let status = Some(a.status);
    let v: Json = serde_json::from_str(&a.body).unwrap_or(Json::Null);
    let code = v.get("Code").and_then(Json::as_str).unwrap_or("").to_owned();
    let msg = v.get("Message").and_then(Json::as_str).unwrap_or("").to_owned();
    match code.as_str() {
        "OK" => Delivery::Sent { status, answer: a.body },
        "isv.BUSINESS_LIMIT_CONTROL" | "Throttling.User" | "Throttling" => {
            Delivery::RateLimited { status, retry_after: a.retry_after.or(Some(Duration::from_secs(60))), answer: a.body }
        }
        "" if a.status >= 500 || a.status == 429 => judge_http(a),
        "" => Delivery::Retry { status, error: format!("HTTP {} without a Code", a.status), answer: a.body },
        c if c.starts_with("isp.") || c.starts_with("ServiceUnavailable") || c.starts_with("InternalError") => {
            Delivery::Retry { status, error: format!("Aliyun {c}: {msg}"), answer: a.body }
        }
        c => Delivery::Failed { status, error: format!("Aliyun {c}: {msg}"), answer: a.body },
    }
}

fn judge_tencent(a: Answer) -> Delivery {
    let status = Some(a.status);
    let v: Json = serde_json::from_str(&a.body).unwrap_or(Json::Null);
    let r = &v["Response"];
    let rate = |c: &str| c == "RequestLimitExceeded" || c.starts_with("LimitExceeded");
    if let Some(code) = r["Error"]["Code"].as_str() {
        let msg = r["Error"]["Message"].as_str().unwrap_or("");
        if rate(code) {
            return Delivery::RateLimited { status, retry_after: a.retry_after.or(Some(Duration::from_secs(60))), answer: a.body };
        }
        let error = format!("Tencent {code}: {msg}");
        return if code.starts_with("InternalError") || code.starts_with("FailedOperation.") && code.contains("Timeout") {
            Delivery::Retry { status, error, answer: a.body }
        } else {
            Delivery::Failed { status, error, answer: a.body }
        };
    }
    match r["SendStatusSet"].as_array() {
        Some(set) if !set.is_empty() => {
            let bad: Vec<&Json> = set.iter().filter(|s| s["Code"].as_str() != Some("Ok")).collect();
            match bad.first() {
                None => Delivery::Sent { status, answer: a.body },
                Some(s) if rate(s["Code"].as_str().unwrap_or("")) => {
                    Delivery::RateLimited { status, retry_after: Some(Duration::from_secs(60)), answer: a.body }
                }
                Some(s) => Delivery::Failed {
                    status,
                    error: format!("Tencent {}: {}", s["Code"].as_str().unwrap_or(""), s["Message"].as_str().unwrap_or("")),
                    answer: a.body,
                },
            }
        }
        _ if a.status >= 500 || a.status == 429 => judge_http(a),
        _ => Delivery::Retry { status, error: "no SendStatusSet in the answer".into(), answer: a.body },
    }
}

impl Channel for Sms {
    fn kind(&self) -> &'static str {
        "sms"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let params = match self.rendered_params(msg) {
                Ok(p) => p,
                Err(e) => return Delivery::Failed { status: None, answer: String::new(), error: e },
            };
            match self.provider.as_str() {
                "aliyun" => self.aliyun(params).await,
                "tencent" => self.tencent(params).await,
                _ => self.http(msg, params).await,
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
