//! The recorded history: one [`Op`] per completed operation, stored as JSON lines.
//!
//! The file format is the public contract of the harness (issue 6), so that any other checker
//! can read it: one object per line,
//! `{"client":int,"op":"read"|"write"|"cas","key":str,"value":str|null,"expect":str|null,
//! "ok":true|false|null,"call":int_ns,"return":int_ns|null}`.
//! `ok: null` with `return: null` is an operation whose outcome is unknown (a write that
//! timed out or lost its connection): it may or may not have taken effect.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Read the key; `value` is what came back (`null`: the key was missing).
    Read,
    /// Wrote `value` unconditionally.
    Write,
    /// Compare-and-set: wrote `value` if the key held `expect` (`null`: if it was missing).
    Cas,
}

/// One operation of the history, exactly as a line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Which client ran it.
    pub client: u64,
    /// What it did.
    pub op: OpKind,
    /// The key (a doozer path).
    pub key: String,
    /// Value written, or value a read returned (`None`: missing, or unknown for a failed read).
    pub value: Option<String>,
    /// The value a CAS compared against (`None`: the key had to be missing).
    pub expect: Option<String>,
    /// `Some(true)`: took effect; `Some(false)`: certainly did not; `None`: unknown.
    pub ok: Option<bool>,
    /// When it was invoked, in nanoseconds since the start of the run.
    pub call: u64,
    /// When its answer came, in nanoseconds since the start of the run; `None` when unknown.
    #[serde(rename = "return")]
    pub ret: Option<u64>,
}

impl Op {
    /// Is the outcome of this operation unknown?
    pub fn is_indeterminate(&self) -> bool {
        self.ok.is_none()
    }

    /// Latency in nanoseconds, for operations that returned.
    pub fn latency_ns(&self) -> Option<u64> {
        self.ret.map(|r| r.saturating_sub(self.call))
    }
}

/// Why a history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be opened, read or written.
    #[error("history {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid operation.
    #[error("history line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Writes `ops` as JSON lines to `w`.
pub fn write_jsonl(ops: &[Op], mut w: impl Write) -> std::io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut w, op)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads JSON lines (blank lines are skipped). A line that is not a valid [`Op`], or an op
/// whose `return` is before its `call`, or that has `ok` without `return`, is an error.
pub fn read_jsonl(r: impl BufRead) -> Result<Vec<Op>, HistoryError> {
    let mut ops = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.map_err(|e| HistoryError::Parse {
            line: i + 1,
            reason: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line).map_err(|e| HistoryError::Parse {
            line: i + 1,
            reason: e.to_string(),
        })?;
        match (op.ok, op.ret) {
            (Some(_), None) => {
                return Err(HistoryError::Parse {
                    line: i + 1,
                    reason: "ok is known but return is null".into(),
                })
            }
            (_, Some(r)) if r < op.call => {
                return Err(HistoryError::Parse {
                    line: i + 1,
                    reason: format!("return {r} is before call {}", op.call),
                })
            }
            _ => {}
        }
        ops.push(op);
    }
    Ok(ops)
}

/// Writes `ops` to the file at `path` (replacing it).
pub fn save(ops: &[Op], path: &Path) -> Result<(), HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::create(path).map_err(io)?;
    write_jsonl(ops, std::io::BufWriter::new(f)).map_err(io)
}

/// Reads the history file at `path`.
pub fn load(path: &Path) -> Result<Vec<Op>, HistoryError> {
    let f = std::fs::File::open(path).map_err(|source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    })?;
    read_jsonl(std::io::BufReader::new(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_exactly_the_issue_schema() {
        let op = Op {
            client: 3,
            op: OpKind::Cas,
            key: "/r/1".into(),
            value: Some("b".into()),
            expect: None,
            ok: None,
            call: 10,
            ret: None,
        };
        let mut out = Vec::new();
        write_jsonl(std::slice::from_ref(&op), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "{\"client\":3,\"op\":\"cas\",\"key\":\"/r/1\",\"value\":\"b\",\"expect\":null,\
             \"ok\":null,\"call\":10,\"return\":null}\n"
        );
        assert_eq!(read_jsonl(&out[..]).unwrap(), vec![op]);
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        let e = read_jsonl(&b"{\"client\":1}\n"[..]).unwrap_err();
        assert!(matches!(e, HistoryError::Parse { line: 1, .. }), "{e}");
        let e = read_jsonl(
            &b"\n{\"client\":1,\"op\":\"read\",\"key\":\"k\",\"value\":null,\"expect\":null,\"ok\":true,\"call\":5,\"return\":4}\n"[..],
        )
        .unwrap_err();
        assert!(matches!(e, HistoryError::Parse { line: 2, .. }), "{e}");
        let e = read_jsonl(
            &b"{\"client\":1,\"op\":\"read\",\"key\":\"k\",\"value\":null,\"expect\":null,\"ok\":true,\"call\":5,\"return\":null}"[..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("return is null"), "{e}");
    }
}
