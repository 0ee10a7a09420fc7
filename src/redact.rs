//! Secrets never leave the process: every value that came from an environment variable in the
//! config, and every credential-looking header, is replaced by `***` before anything is written
//! to the store, a log line, an error or an answer.

use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

pub const MASK: &str = "***";

/// Header names whose values are credentials.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || n.contains("api-key")
        || n.contains("token")
        || n.contains("secret")
}

impl Redactor {
    /// Registers a secret; values shorter than 4 characters are ignored (they would mask ordinary text).
    pub fn add(&self, secret: &str) {
        if secret.len() >= 4 {
            let mut s = self.secrets.write().expect("redactor lock");
            if !s.iter().any(|x| x == secret) {
                s.push(secret.to_owned());
                // Longest first, so a secret that contains another is masked whole.
                s.sort_by_key(|x| std::cmp::Reverse(x.len()));
            }
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.read().expect("redactor lock");
        let mut out = text.to_owned();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        mask_bearer(&out)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.read().map(|s| s.is_empty()).unwrap_or(true)
    }
}

/// Masks `Bearer xxx` tokens and `sk-…` style keys even when they were not declared as secrets.
fn mask_bearer(text: &str) -> String {
    if !text.contains("Bearer ") && !text.contains("sk-") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("Bearer ").map(|i| (i, 7)).into_iter().chain(rest.find("sk-").map(|i| (i, 3))).min_by_key(|x| x.0) {
        let (start, skip) = i;
        out.push_str(&rest[..start + skip]);
        let after = &rest[start + skip..];
        let end = after.find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',').unwrap_or(after.len());
        if end >= 8 {
            out.push_str(MASK);
        } else {
            out.push_str(&after[..end]);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_declared_secrets_and_bearer_tokens() {
        let r = Redactor::default();
        r.add("hunter2-secret");
        let s = r.redact("key=hunter2-secret auth: Bearer abcdefghijkl, sk-0123456789abcdef end");
        assert_eq!(s, "key=*** auth: Bearer ***, sk-*** end");
        assert!(!s.contains("hunter2"));
    }
}
