//! Email over SMTP (lettre): `starttls` (default, port 587; a server that does not offer STARTTLS
//! is refused, never written to in clear), `tls` (implicit TLS, port 465) or `none` (a local relay).
//! The message is multipart/alternative (plain text and HTML) with the headers RFC 5322 asks for:
//! From, To, Subject, Date and a `Message-ID` whose domain is the From address's.
//!
//! Answer: the SMTP server's final reply to DATA, e.g. `250 OK queued as …`. 4xx replies and
//! connection failures are retried; 5xx replies (bad recipient, auth refused) and configuration
//! errors (no STARTTLS) fail for good.

use super::{Channel, ChannelParams, Ctx, Delivery, Message, Raw, link};
use crate::alert::config::ChannelConfig;
use crate::flow::diag::Diagnostics;
use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// `type: email`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The SMTP server.
    pub smtp_host: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    pub smtp_port: Option<u16>,
    /// How the connection is protected.
    #[serde(default)]
    pub smtp_security: Security,
    /// The SMTP login; unset: no authentication.
    pub username: Option<String>,
    /// The SMTP password (a secret).
    pub password: Option<String>,
    /// The sender, e.g. `flowguard <fg@example.com>`; its domain names the Message-ID.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// `smtp_security:` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which the server must offer.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

pub fn parse(raw: &Raw<'_>) -> Result<Arc<dyn ChannelParams>, Diagnostics> {
    let p: Params = raw.parse()?;
    let mut problems = Vec::new();
    if let Err(e) = p.from.parse::<Mailbox>() {
        problems.push(raw.problem("from", format!("bad address `{}`: {e}", p.from)));
    }
    for t in &p.to {
        if let Err(e) = t.parse::<Mailbox>() {
            problems.push(raw.problem("to", format!("bad address `{t}`: {e}")));
        }
    }
    if p.to.is_empty() {
        problems.push(raw.problem("to", "an `email` channel needs at least one address in `to`"));
    }
    if problems.is_empty() { Ok(Arc::new(p)) } else { Err(Diagnostics(problems)) }
}

impl ChannelParams for Params {
    fn build(&self, name: &str, c: &ChannelConfig, cx: &Ctx) -> anyhow::Result<Arc<dyn Channel>> {
        let host = &self.smtp_host;
        let mut b = match self.smtp_security {
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
        };
        if let Some(p) = self.smtp_port {
            b = b.port(p);
        }
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            b = b.credentials(Credentials::new(u.clone(), p.clone()));
        }
        b = b.timeout(Some(super::timeout(c)));
        let parse = |s: &str| s.parse::<Mailbox>().map_err(|e| anyhow::anyhow!("channel `{name}`: bad address `{s}`: {e}"));
        Ok(Arc::new(Email {
            transport: b.build(),
            from: parse(&self.from)?,
            to: self.to.iter().map(|t| parse(t)).collect::<Result<_, _>>()?,
            security: self.smtp_security,
            password: self.password.clone(),
            run_url: c.run_url.clone(),
            cx: cx.clone(),
        }))
    }
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    security: Security,
    password: Option<String>,
    run_url: Option<String>,
    cx: Ctx,
}

/// A Message-ID (RFC 5322 §3.6.4): unique left part, the sender's domain on the right.
pub fn message_id(from: &Mailbox) -> String {
    format!("<{}@{}>", uuid::Uuid::now_v7().simple(), from.email.domain())
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
            let mut b =
                lettre::Message::builder().from(self.from.clone()).subject(msg.title.clone()).message_id(Some(message_id(&self.from)));
            for t in &self.to {
                b = b.to(t.clone());
            }
            let mut plain = msg.text.clone();
            if let Some(l) = &link {
                plain.push_str(&format!("\n{l}\n"));
            }
            let body = msg.html.clone().unwrap_or_else(|| html(msg, link.as_deref()));
            let email = match b.multipart(MultiPart::alternative_plain_html(plain, body)) {
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
                    if e.is_client() && self.security == Security::Starttls {
                        // Retrying cannot make the server offer STARTTLS: a configuration error.
                        let error = red.redact(&format!(
                            "SMTP: the server does not offer STARTTLS, which `smtp_security: starttls` (the default) requires; \
                             use `tls` for implicit TLS (port 465), or `none` only for a local relay ({e})"
                        ));
                        return Delivery::Failed { status: None, answer: String::new(), error };
                    }
                    let error = red.redact(&format!("SMTP: {e}"));
                    if e.is_permanent() || e.is_client() {
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
