//! Secrets (webhook tokens, signing secrets, SMTP password, SMS keys) never show: not in the
//! outbox, the delivery answers, errors, listings or `alerts test` — for every channel, whether
//! the secret came from `${ENV}` or was written in the file.

use crate::support::fake_bots::{self, FakeBots};
use crate::support::fake_feishu::{self, FakeFeishu};
use crate::support::{Project, stderr, stdout};

const SECRETS: &[&str] = &[
    fake_feishu::TOKEN,
    fake_feishu::SECRET,
    fake_bots::DING_TOKEN,
    fake_bots::DING_SECRET,
    fake_bots::WECOM_KEY,
    "hook-path-token-31d7c0",
    "webhook-hmac-secret-a1b2",
    "Bearer-gw-token-5e6f7a8b",
    "smtp-password-c0ffee",
    "ali-secret-f00dbabe",
    "tc-secret-k3y-0451",
];

fn config(feishu: &str, ding: &str, wecom_base: &str, dead: &str) -> String {
    format!(
        r#"storage:
  url: sqlite://fg.db
locale: en
channels:
  feishu:
    type: feishu
    webhook: "{feishu}"
    secret: ${{FEISHU_SECRET}}
    keyword: 告警
  feishu_down:
    type: feishu
    webhook: "{dead}/open-apis/bot/v2/hook/{ftok}"
    secret: {fsec}
  ding:
    type: dingtalk
    webhook: "{ding}"
    secret: {dsec}
    keyword: 告警
  wecom_bad:
    type: wecom
    key: {wkey}
    endpoint: "{dead}/cgi-bin/webhook/send"
  wecom:
    type: wecom
    key: ${{WECOM_KEY}}
    endpoint: "{wecom_base}"
  hook:
    type: webhook
    webhook: "{dead}/hooks/hook-path-token-31d7c0"
    secret: webhook-hmac-secret-a1b2
    headers: {{ Authorization: "Bearer Bearer-gw-token-5e6f7a8b" }}
  mail:
    type: email
    smtp_host: 127.0.0.1
    smtp_port: 1
    smtp_security: none
    username: ops
    password: ${{SMTP_PASSWORD}}
    from: fg@example.com
    to: [ops@example.com]
  ali:
    type: sms
    provider: aliyun
    endpoint: "{dead}/"
    access_key_id: LTAIkeyid0001
    access_key_secret: ali-secret-f00dbabe
    sign_name: x
    template_id: SMS_1
    phones: ["13800000000"]
  tc:
    type: sms
    provider: tencent
    endpoint: "{dead}/"
    access_key_id: AKIDsecretid01
    access_key_secret: ${{TC_KEY}}
    app_id: "1400000000"
    sign_name: x
    template_id: "1"
    phones: ["+8613800000000"]
  gw:
    type: sms
    provider: http
    endpoint: "{dead}/sms"
    headers: {{ X-Api-Token: "Bearer-gw-token-5e6f7a8b" }}
    phones: ["13800000000"]
alerting:
  max_attempts: 1
  delivery_budget: 0s
routes:
  - channels: [feishu, feishu_down, ding, wecom_bad, wecom, hook, mail, ali, tc, gw]
"#,
        ftok = fake_feishu::TOKEN,
        fsec = fake_feishu::SECRET,
        dsec = fake_bots::DING_SECRET,
        wkey = fake_bots::WECOM_KEY,
    )
}

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows the secret `{s}`:\n{text}");
    }
}

#[test]
fn no_channel_shows_a_secret_in_answers_errors_or_listings() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let feishu = rt.block_on(FakeFeishu::start());
    let bots = rt.block_on(FakeBots::start());
    // A port nothing listens on: errors there name the URL, token included, unless masked.
    let dead = format!("http://127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let p = Project::with_config(&config(&feishu.url, &bots.ding_url, &bots.wecom_base, &dead));
    p.write(
        "flows/broken.yaml",
        "name: broken\nnodes:\n  - id: publish\n    kind: http\n    endpoint: nowhere\n    path: /x\n    retry: { policy: none }\n",
    );
    let cfg = std::fs::read_to_string(p.config()).unwrap();
    std::fs::write(p.config(), cfg.replace("locale: en\n", &format!("locale: en\nendpoints:\n  nowhere:\n    base_url: {dead}\n")))
        .unwrap();
    let cmd = |args: &[&str]| {
        crate::support::bin()
            .current_dir(p.path())
            .env("FEISHU_SECRET", fake_feishu::SECRET)
            .env("WECOM_KEY", fake_bots::WECOM_KEY)
            .env("SMTP_PASSWORD", "smtp-password-c0ffee")
            .env("TC_KEY", "tc-secret-k3y-0451")
            .args(args)
            .output()
            .unwrap()
    };
    let mut outcomes = Vec::new();
    for ch in ["feishu", "feishu_down", "ding", "wecom_bad", "wecom", "hook", "mail", "ali", "tc", "gw"] {
        let o = cmd(&["alerts", "test", ch]);
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(all.contains("outcome:"), "{ch}: {all}");
        assert_clean(&format!("`alerts test {ch}`"), &all);
        outcomes.push((ch, o.status.code()));
    }
    // The reachable fakes accepted the signed test; the rest failed and said why, masked.
    assert!(
        outcomes.contains(&("feishu", Some(0))) && outcomes.contains(&("ding", Some(0))) && outcomes.contains(&("wecom", Some(0))),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&("feishu_down", Some(1))) && outcomes.contains(&("hook", Some(1))), "{outcomes:?}");

    let o = cmd(&["run", "broken"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert_clean("flowguard run", &format!("{}{}", stdout(&o), stderr(&o)));
    let o = cmd(&["alerts", "list", "--notifications", "--format", "json"]);
    let listing = stdout(&o);
    assert!(listing.contains("\"deliveries\""), "{listing}");
    assert!(listing.contains("\"dead\""), "some channels are down: {listing}");
    assert_clean("alerts list --notifications", &listing);
    let o = cmd(&["alerts", "list", "--notifications"]);
    assert_clean("alerts list table", &stdout(&o));
    let db = std::fs::read(p.path().join("fg.db")).unwrap_or_default();
    let wal = std::fs::read(p.path().join("fg.db-wal")).unwrap_or_default();
    let stored = String::from_utf8_lossy(&[db, wal].concat()).into_owned();
    assert_clean("the database", &stored);
    drop(rt);
}
