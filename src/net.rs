//! Reading HTTP answers safely: bodies are capped, so a runaway upstream cannot exhaust memory.

/// Largest body flowguard reads from an upstream answer.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// Reads the whole body, failing with a clear message past `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if let Some(len) = resp.content_length()
        && len as usize > limit
    {
        return Err(format!("answer body of {len} bytes is larger than the {limit}-byte limit"));
    }
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(format!("answer body is larger than the {limit}-byte limit"));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf),
            Err(e) => return Err(format!("reading the answer failed: {e}")),
        }
    }
}
