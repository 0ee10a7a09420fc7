//! Fake Aliyun Dysmsapi (`GET /?Action=SendSms…`, signature v1 HMAC-SHA1) and Tencent Cloud SMS
//! (`POST /`, TC3-HMAC-SHA256) that recompute the signature from what they receive, as the real
//! services do, and answer with their real codes (`SignatureDoesNotMatch`,
//! `AuthFailure.SignatureFailure`, `OK` / `Ok`). Per-number answers can be scripted: Tencent gives
//! each number its own entry in `SendStatusSet`; Aliyun answers one `Code` for the request.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const ALI_KEY_ID: &str = "LTAI5tAliKeyId0001";
pub const ALI_SECRET: &str = "aliyun-access-secret-9f8e7d";
pub const TC_ID: &str = "AKIDtencentSecretId0001";
pub const TC_KEY: &str = "tencent-secret-key-4c3b2a";

#[derive(Default)]
struct Inner {
    aliyun: Mutex<Vec<BTreeMap<String, String>>>,
    tencent: Mutex<Vec<Value>>,
    /// Codes the next requests answer for a number, in turn (then `Ok`).
    codes: Mutex<BTreeMap<String, Vec<String>>>,
}

/// The services' own messages for the codes tests script.
fn message_of(code: &str) -> &'static str {
    match code {
        "LimitExceeded.PhoneNumberThirtySecondLimit" => {
            "the number of SMS messages sent to the same mobile number within 30 seconds exceeds the upper limit"
        }
        "LimitExceeded.PhoneNumberDailyLimit" => {
            "the number of SMS messages sent to the same mobile number on the same day exceeds the upper limit"
        }
        "InvalidParameterValue.IncorrectPhoneNumber" => "incorrect mobile number format",
        "isv.BUSINESS_LIMIT_CONTROL" => "触发号码分钟级流控Permits:1",
        "isv.MOBILE_NUMBER_ILLEGAL" => "非法手机号",
        _ => "error",
    }
}

#[derive(Clone)]
pub struct FakeSms {
    pub aliyun_url: String,
    pub tencent_url: String,
    inner: Arc<Inner>,
}

impl FakeSms {
    pub async fn start() -> FakeSms {
        let inner = Arc::new(Inner::default());
        let ali = Router::new().route("/", get(aliyun)).with_state(inner.clone());
        let tc = Router::new().route("/", post(tencent)).with_state(inner.clone());
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l1, ali).await.ok() });
        tokio::spawn(async move { axum::serve(l2, tc).await.ok() });
        FakeSms { aliyun_url: format!("http://{a1}/"), tencent_url: format!("http://{a2}/"), inner }
    }

    pub fn aliyun(&self) -> Vec<BTreeMap<String, String>> {
        self.inner.aliyun.lock().unwrap().clone()
    }
    pub fn tencent(&self) -> Vec<Value> {
        self.inner.tencent.lock().unwrap().clone()
    }
    /// The next requests to `phone` answer these codes, one per request, then `Ok`.
    pub fn script(&self, phone: &str, codes: &[&str]) {
        self.inner.codes.lock().unwrap().insert(phone.to_owned(), codes.iter().map(|c| c.to_string()).collect());
    }
}

impl Inner {
    fn next_code(&self, phone: &str) -> Option<String> {
        let mut codes = self.codes.lock().unwrap();
        let q = codes.get_mut(phone)?;
        if q.is_empty() { None } else { Some(q.remove(0)) }
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

async fn aliyun(State(s): State<Arc<Inner>>, RawQuery(q): RawQuery) -> Response {
    let mut params: BTreeMap<String, String> = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect();
    let given = params.remove("Signature").unwrap_or_default();
    let request_id = "0A1B2C3D-FAKE";
    if params.get("AccessKeyId").map(String::as_str) != Some(ALI_KEY_ID) {
        return axum::Json(
            json!({"RequestId": request_id, "Code": "InvalidAccessKeyId.NotFound", "Message": "Specified access key is not found."}),
        )
        .into_response();
    }
    let canonical = params.iter().map(|(k, v)| format!("{}={}", pct(k), pct(v))).collect::<Vec<_>>().join("&");
    let to_sign = format!("GET&%2F&{}", pct(&canonical));
    let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(format!("{ALI_SECRET}&").as_bytes()).unwrap();
    m.update(to_sign.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
    if given != want {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"RequestId": request_id, "Code": "SignatureDoesNotMatch", "Message": format!("Specified signature is not matched with our calculation. server string to sign is:{to_sign}")})),
        )
            .into_response();
    }
    if params.get("Action").map(String::as_str) != Some("SendSms") || !params.contains_key("TemplateParam") {
        return axum::Json(json!({"RequestId": request_id, "Code": "MissingParameter", "Message": "missing"})).into_response();
    }
    // One Code for the whole request: a number that cannot be sent to fails it.
    let phones: Vec<String> = params.get("PhoneNumbers").map(|p| p.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let failed = phones.iter().find_map(|p| s.next_code(p));
    s.aliyun.lock().unwrap().push(params);
    if let Some(code) = failed {
        return axum::Json(json!({"RequestId": request_id, "Code": code, "Message": message_of(&code)})).into_response();
    }
    axum::Json(json!({"RequestId": request_id, "Code": "OK", "Message": "OK", "BizId": "900619746936498440^0"})).into_response()
}

fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn tencent(State(s): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let fail = |code: &str, msg: &str| {
        axum::Json(json!({"Response": {"Error": {"Code": code, "Message": msg}, "RequestId": "fake-req-1"}})).into_response()
    };
    let auth = h("authorization");
    let ts = h("x-tc-timestamp");
    let Some(rest) = auth.strip_prefix("TC3-HMAC-SHA256 Credential=") else {
        return fail("AuthFailure.SignatureFailure", "bad Authorization");
    };
    let cred = rest.split(',').next().unwrap_or("");
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() != 4 || parts[0] != TC_ID {
        return fail("AuthFailure.SecretIdNotFound", "The SecretId is not found");
    }
    let date = parts[1];
    let canonical = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\ncontent-type;host\n{}",
        h("content-type"),
        h("host"),
        hex(&sha2::Sha256::digest(body.as_bytes()))
    );
    let to_sign = format!("TC3-HMAC-SHA256\n{ts}\n{date}/sms/tc3_request\n{}", hex(&sha2::Sha256::digest(canonical.as_bytes())));
    let k = hmac256(&hmac256(&hmac256(format!("TC3{TC_KEY}").as_bytes(), date.as_bytes()), b"sms"), b"tc3_request");
    let want = hex(&hmac256(&k, to_sign.as_bytes()));
    if !auth.ends_with(&format!("Signature={want}")) || h("x-tc-action") != "SendSms" {
        return fail(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated. Please check your signature is correct.",
        );
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let phones: Vec<String> = v["PhoneNumberSet"].as_array().into_iter().flatten().filter_map(|p| p.as_str().map(str::to_owned)).collect();
    s.tencent.lock().unwrap().push(v);
    let set: Vec<Value> = phones
        .iter()
        .map(|p| match s.next_code(p) {
            Some(code) => json!({"SerialNo": "", "PhoneNumber": p, "Fee": 0, "SessionContext": "", "Code": code, "Message": message_of(&code), "IsoCode": "CN"}),
            None => json!({"SerialNo": "5000:1045710669157053657849499619", "PhoneNumber": p, "Fee": 1, "SessionContext": "", "Code": "Ok", "Message": "send success", "IsoCode": "CN"}),
        })
        .collect();
    axum::Json(json!({"Response": {"SendStatusSet": set, "RequestId": "a0aabda6-cf91-4f3e-a81f-9198114a2279"}})).into_response()
}
