//! Writing results: raw bytes exactly as the original printed them, or JSON lines.

use std::io::Write;

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// `value` as JSON: `"value"` when it is UTF-8, else `"value_base64"`.
pub fn with_value(mut obj: Map<String, Value>, value: &Bytes) -> Value {
    match std::str::from_utf8(value) {
        Ok(s) => obj.insert("value".into(), json!(s)),
        Err(_) => obj.insert(
            "value_base64".into(),
            json!(data_encoding::BASE64.encode(value)),
        ),
    };
    Value::Object(obj)
}

/// Writes `bytes` to stdout and flushes (each record must reach a pipe at once).
pub fn out(bytes: &[u8]) -> std::io::Result<()> {
    let mut so = std::io::stdout().lock();
    so.write_all(bytes)?;
    so.flush()
}

/// Writes one JSON value and a newline to stdout.
pub fn json_line(v: &Value) -> std::io::Result<()> {
    let mut s = v.to_string();
    s.push('\n');
    out(s.as_bytes())
}
