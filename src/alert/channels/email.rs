//! Email over SMTP (lettre): `starttls` (default, port 587), `tls` (implicit TLS, port 465) or
//! `none` (a local relay). The message is multipart/alternative: plain text and HTML.
//!
//! Answer: the SMTP server's final reply to DATA, e.g. `250 OK queued as …`. 4xx replies and
//! connection failures are retried; 5xx replies (bad recipient, auth refused) fail for good.

use super::{Channel, Ctx, Delivery, Message, link};
use crate::alert::config::ChannelConfig;
use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    password: Option<String>,
    run_url: Option<String>,
    cx: Ctx,
}

pub fn build(name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
    let host = c.smtp_host.clone().unwrap_or_default();
    let security = c.smtp_security.as_deref().unwrap_or("starttls");
    let mut b = match security {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)?,
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host),
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)?,
    };
    if let Some(p) = c.smtp_port {
        b = b.port(p);
    }
    if let (Some(u), Some(p)) = (&c.username, &c.password) {
        b = b.credentials(Credentials::new(u.clone(), p.clone()));
    }
    b = b.timeout(Some(super::timeout(c)));
    let parse = |s: &str| s.parse::<Mailbox>().map_err(|e| anyhow::anyhow!("channel `{name}`: bad address `{s}`: {e}"));
    Ok(Arc::new(Email {
        transport: b.build(),
        from: parse(c.from.as_deref().unwrap_or(""))?,
        to: c.to.iter().map(|t| parse(t)).collect::<Result<_, _>>()?,
        password: c.password.clone(),
        run_url: c.run_url.clone(),
        cx: cx.clone(),
    }))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn html(msg: &Message, link: Option<&str>) -> String {
    let colour = match (msg.purpose.as_str(), msg.severity.as_str()) {
        ("resolved", _) => "#2e7d32",
        (_, "high") => "#c62828",
        (_, "medium") => "#ef6c00",
        _ => "#1565c0",
    };
    let mut h = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h2 style=\"color:{colour}\">{}</h2><pre style=\"font-size:14px\">{}</pre>",
        html_escape(&msg.title),
        html_escape(&msg.text)
    );
    if let Some(l) = link {
        h.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>", html_escape(l)));
    }
    h.push_str("</body></html>");
    h
}

impl Channel for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Delivery> {
        Box::pin(async move {
            let link = link(msg, self.run_url.as_deref());
            let mut b = lettre::Message::builder().from(self.from.clone()).subject(msg.title.clone());
            for t in &self.to {
                b = b.to(t.clone());
            }
            let mut plain = msg.text.clone();
            if let Some(l) = &link {
                plain.push_str(&format!("\n{l}\n"));
            }
            let email = match b.multipart(MultiPart::alternative_plain_html(plain, html(msg, link.as_deref()))) {
                Ok(e) => e,
                Err(e) => return Delivery::Failed { status: None, answer: String::new(), error: format!("cannot build the email: {e}") },
            };
            let red = &self.cx.redactor;
            match self.transport.send(email).await {
                Ok(r) => {
                    let answer = format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" "));
                    Delivery::Sent { status: None, answer: red.redact(&answer) }
                }
                Err(e) => {
                    let error = red.redact(&format!("SMTP: {e}"));
                    if e.is_permanent() {
                        Delivery::Failed { status: None, answer: String::new(), error }
                    } else {
                        Delivery::Retry { status: None, answer: String::new(), error }
                    }
                }
            }
        })
    }

    fn rate_limits(&self) -> Vec<(u32, Duration)> {
        Vec::new()
    }

    fn secrets(&self) -> Vec<String> {
        self.password.iter().cloned().collect()
    }
}
