//! A Jepsen-style harness for doozer-rs: real `doozerd` processes, real sockets, real
//! disks, faults injected from outside, every operation recorded and checked.
//!
//! The parts, in the order a run uses them:
//! * [`cluster`]: starts `doozerd` nodes on 127.0.0.1, kills, restarts and pauses them;
//! * [`proxy`]: the TCP proxies every peer link goes through, and the faults on them;
//! * [`nemesis`]: the fault families and the seeded schedule;
//! * [`workload`]: the clients (`register`, `set`, `watch`) and the [`history`] they record;
//! * [`linearizability`], [`set_checker`], [`watch_checker`]: the checkers;
//! * [`run`]: one whole run; [`report`]: `report.txt` and `report.html`.
//!
//! The checkers work on any history, e.g. one read back from `history.jsonl`:
//!
//! ```
//! use doozer_jepsen::history::{Op, OpKind};
//! use doozer_jepsen::linearizability::{check, CheckOptions};
//!
//! let op = |client, op, value: Option<&str>, call, ret| Op {
//!     client, op, key: "/jepsen/r/0".into(), value: value.map(Into::into),
//!     expect: None, ok: Some(true), call, ret: Some(ret),
//! };
//! // Client 1 writes "a"; after that write returned, client 2 still reads nothing.
//! let history = [
//!     op(1, OpKind::Write, Some("a"), 0, 10),
//!     op(2, OpKind::Read, None, 20, 30),
//! ];
//! let report = check(&history, CheckOptions::default());
//! assert!(!report.is_linearizable());
//! assert_eq!(report.first_anomaly(&history).unwrap().op_index, 1);
//! ```

#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

pub mod cluster;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod run;
pub mod set_checker;
pub mod watch_checker;
pub mod workload;

/// Finds the `doozerd` binary of this workspace from the running executable's location
/// (`$DOOZERD` wins if set). With `same_profile`, the binary next to the running one's
/// profile directory comes first (what tests want: `cargo test` builds debug binaries);
/// otherwise `target/release/doozerd`, then `target/debug/doozerd`.
pub fn find_doozerd(same_profile: bool) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DOOZERD") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1) {
        if same_profile {
            candidates.push(dir.join("doozerd"));
        }
        if dir.file_name().is_some_and(|n| n == "target") {
            candidates.push(dir.join("release").join("doozerd"));
            candidates.push(dir.join("debug").join("doozerd"));
            break;
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        candidates.push(t.join("release").join("doozerd"));
        candidates.push(t.join("debug").join("doozerd"));
    }
    candidates.into_iter().find(|c| c.is_file())
}

/// Parses `60s`, `2m`, `1.5s`, `500ms`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 2m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }
}
