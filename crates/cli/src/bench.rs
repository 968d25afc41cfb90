//! `doozer bench`: a closed-loop load generator with latency percentiles.
//!
//! Each of `-clients` tasks has its own connection and keeps one request in flight. The run
//! ends after `-ops` operations in total, or after `-duration`. Latencies go into one
//! hdrhistogram per task (microseconds), merged at the end.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use doozer_client::Client;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;

use crate::flags::Flags;
use crate::output::{json_line, out};
use crate::run::{dial, Fail};

/// Highest latency the histograms track exactly (60 s, in µs); longer ones saturate.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Where bench keys live.
const ROOT: &str = "/bench";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Set,
    Get,
    Mixed,
    Watch,
}

/// When the run stops.
struct Budget {
    ops: u64,
    until: Instant,
    issued: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
}

impl Budget {
    /// Claims one more operation, or says the run is over.
    fn take(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if self.ops > 0 {
            self.issued.fetch_add(1, Ordering::Relaxed) < self.ops
        } else {
            Instant::now() < self.until
        }
    }
}

/// Per-task results.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            errors: 0,
            first_error: None,
        }
    }
    fn record(&mut self, d: Duration) {
        self.hist.saturating_record((d.as_micros() as u64).max(1));
    }
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
    fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

fn positive(name: &str, v: i64) -> Result<u64, Fail> {
    u64::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| Fail::Msg(format!("bench: -{name} must be positive, got {v}")))
}

pub async fn run(f: &Flags, mode: &str) -> Result<(), Fail> {
    let mode = match mode {
        "set" => Mode::Set,
        "get" => Mode::Get,
        "mixed" => Mode::Mixed,
        "watch" => Mode::Watch,
        other => {
            return Err(Fail::Msg(format!(
                "bench: unknown workload {other:?} (want set, get, mixed or watch)"
            )))
        }
    };
    let clients = positive("clients", f.clients)?;
    let keys = positive("keys", f.keys)?;
    let value_size = usize::try_from(f.value_size).map_err(|_| {
        Fail::Msg(format!(
            "bench: -value-size must be >= 0, got {}",
            f.value_size
        ))
    })?;
    let ops = u64::try_from(f.ops).map_err(|_| Fail::Msg("bench: -ops must be >= 0".into()))?;
    if ops == 0 && f.duration.is_zero() {
        return Err(Fail::Msg("bench: give -ops or a non-zero -duration".into()));
    }
    let value = Bytes::from(vec![b'x'; value_size]);

    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(dial(f).await?);
    }
    if mode == Mode::Get || mode == Mode::Mixed {
        populate(&conns[0], keys, &value).await?;
    }

    let budget = Arc::new(Budget {
        ops,
        until: Instant::now() + f.duration,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let bar = progress(&budget, f.duration);
    let start = Instant::now();
    let (tally, ops_done, extra) = if mode == Mode::Watch {
        watch_run(conns, keys, value_size, budget.clone()).await?
    } else {
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|c| tokio::spawn(client_loop(c, mode, keys, value.clone(), budget.clone())))
            .collect();
        let mut total = Tally::new();
        for t in tasks {
            total.merge(t.await.map_err(|e| Fail::Msg(format!("bench task: {e}")))?);
        }
        (total, budget.done.load(Ordering::Relaxed), None)
    };
    let secs = start.elapsed().as_secs_f64();
    budget.stop.store(true, Ordering::Relaxed);
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    report(f, mode, clients, value_size, ops_done, secs, &tally, extra)?;
    if let Some(e) = &tally.first_error {
        eprintln!("bench: {} errors; first: {e}", tally.errors);
    }
    Ok(())
}

/// Writes every key once so reads find data.
async fn populate(c: &Client, keys: u64, value: &Bytes) -> Result<(), Fail> {
    let results: Vec<_> = futures::stream::iter((0..keys).map(|k| {
        let c = c.clone();
        let v = value.clone();
        async move { c.set(&format!("{ROOT}/k{k}"), -1, v).await }
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    for r in results {
        r?;
    }
    Ok(())
}

async fn client_loop(c: Client, mode: Mode, keys: u64, value: Bytes, budget: Arc<Budget>) -> Tally {
    let mut t = Tally::new();
    while budget.take() {
        let (key, write) = {
            let mut rng = rand::thread_rng();
            let key = format!("{ROOT}/k{}", rng.gen_range(0..keys));
            let write = match mode {
                Mode::Set => true,
                Mode::Get => false,
                _ => rng.gen_range(0..10) == 0,
            };
            (key, write)
        };
        let t0 = Instant::now();
        let res = if write {
            c.set(&key, -1, value.clone()).await.map(drop)
        } else {
            c.get(&key, None).await.map(drop)
        };
        match res {
            Ok(()) => t.record(t0.elapsed()),
            Err(e) => t.error(e),
        }
        budget.done.fetch_add(1, Ordering::Relaxed);
    }
    t
}

/// Watch fan-out: every client watches `/bench/**`; the first also writes. Each value
/// carries its send time, so each watcher measures write-to-delivery latency.
async fn watch_run(
    conns: Vec<Client>,
    keys: u64,
    value_size: usize,
    budget: Arc<Budget>,
) -> Result<(Tally, u64, Option<u64>), Fail> {
    let base = Instant::now();
    let writer = conns[0].clone();
    let from = writer.rev().await? + 1;
    let glob = format!("{ROOT}/**");
    let last_rev = Arc::new(AtomicU64::new(u64::MAX));
    let mut watchers = Vec::new();
    let end_key = format!("{ROOT}/end");
    for c in &conns {
        let mut w = c.watch(&glob, from);
        let last_rev = last_rev.clone();
        let end_key = end_key.clone();
        watchers.push(tokio::spawn(async move {
            let mut t = Tally::new();
            let mut seen = 0u64;
            while let Some(ev) = w.next().await {
                match ev {
                    Ok(ev) => {
                        // The closing write carries no timestamp.
                        if ev.path == end_key {
                            break;
                        }
                        seen += 1;
                        if ev.value.len() >= 8 {
                            let sent =
                                u64::from_be_bytes(ev.value[..8].try_into().unwrap_or_default());
                            let now = base.elapsed().as_nanos() as u64;
                            t.record(Duration::from_nanos(now.saturating_sub(sent)));
                        }
                        if ev.rev as u64 >= last_rev.load(Ordering::Acquire) {
                            break;
                        }
                    }
                    Err(e) => {
                        t.error(e);
                        break;
                    }
                }
            }
            (t, seen)
        }));
    }
    let mut wt = Tally::new();
    let mut last = 0i64;
    while budget.take() {
        let mut v = vec![b'x'; value_size.max(8)];
        v[..8].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
        let key = format!("{ROOT}/k{}", rand::thread_rng().gen_range(0..keys));
        let t0 = Instant::now();
        match writer.set(&key, -1, v).await {
            Ok(r) => {
                wt.record(t0.elapsed());
                last = last.max(r);
            }
            Err(e) => wt.error(e),
        }
        budget.done.fetch_add(1, Ordering::Relaxed);
    }
    last_rev.store(last.max(0) as u64, Ordering::Release);
    // Wake watchers that are already past the last write: one more event they will see.
    let _ = writer.set(&end_key, -1, Bytes::new()).await;
    let mut total = Tally::new();
    let mut deliveries = 0;
    for w in watchers {
        match tokio::time::timeout(Duration::from_secs(30), w).await {
            Ok(Ok((t, seen))) => {
                total.merge(t);
                deliveries += seen;
            }
            Ok(Err(e)) => total.error(format!("watcher task: {e}")),
            Err(_) => total.error("watcher did not catch up within 30s"),
        }
    }
    if wt.errors > 0 {
        total.errors += wt.errors;
        total.first_error = total.first_error.or(wt.first_error);
    }
    Ok((total, budget.done.load(Ordering::Relaxed), Some(deliveries)))
}

/// A progress bar on stderr when it is a terminal, updated by a ticker task.
fn progress(
    budget: &Arc<Budget>,
    duration: Duration,
) -> Option<(indicatif::ProgressBar, tokio::task::JoinHandle<()>)> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let by_ops = budget.ops > 0;
    let len = if by_ops {
        budget.ops
    } else {
        duration.as_millis() as u64
    };
    let bar = indicatif::ProgressBar::new(len);
    let template = if by_ops {
        "{bar:40} {pos}/{len} ops {per_sec} eta {eta}"
    } else {
        "{bar:40} {elapsed}/{duration} {msg}"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let b = bar.clone();
    let budget = budget.clone();
    let start = Instant::now();
    let ticker = tokio::spawn(async move {
        loop {
            let done = budget.done.load(Ordering::Relaxed);
            if by_ops {
                b.set_position(done.min(len));
            } else {
                b.set_position((start.elapsed().as_millis() as u64).min(len));
                b.set_message(format!("{done} ops"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Some((bar, ticker))
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

#[allow(clippy::too_many_arguments)]
fn report(
    f: &Flags,
    mode: Mode,
    clients: u64,
    value_size: usize,
    ops: u64,
    secs: f64,
    t: &Tally,
    deliveries: Option<u64>,
) -> Result<(), Fail> {
    let h = &t.hist;
    let q = |p: f64| h.value_at_quantile(p);
    let rate = ops as f64 / secs.max(1e-9);
    let name = format!("{mode:?}").to_lowercase();
    if f.json {
        json_line(&json!({
            "workload": name, "clients": clients, "value_size": value_size,
            "ops": ops, "errors": t.errors, "seconds": secs, "ops_per_sec": rate,
            "deliveries": deliveries,
            "latency_ms": {
                "p50": q(0.5) as f64 / 1000.0, "p90": q(0.9) as f64 / 1000.0,
                "p99": q(0.99) as f64 / 1000.0, "p99.9": q(0.999) as f64 / 1000.0,
                "max": h.max() as f64 / 1000.0,
            },
        }))?;
        return Ok(());
    }
    // Latency is per request; for watch, from a write's start to each watcher's delivery.
    let what = if deliveries.is_some() {
        "write-to-delivery latency, ms"
    } else {
        "latency, ms"
    };
    let mut s = format!(
        "{:<8} {:>7} {:>6} {:>10} {:>7} {:>8} {:>10} | {what}\n",
        "workload", "clients", "bytes", "ops", "errors", "seconds", "ops/s"
    );
    s.push_str(&format!(
        "{:<8} {:>7} {:>6} {:>10} {:>7} {:>8} {:>10} | {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "", "", "", "", "", "", "", "p50", "p90", "p99", "p99.9", "max"
    ));
    s.push_str(&format!(
        "{:<8} {:>7} {:>6} {:>10} {:>7} {:>8.2} {:>10.1} | {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        name,
        clients,
        value_size,
        ops,
        t.errors,
        secs,
        rate,
        ms(q(0.5)),
        ms(q(0.9)),
        ms(q(0.99)),
        ms(q(0.999)),
        ms(h.max()),
    ));
    if let Some(d) = deliveries {
        s.push_str(&format!(
            "{d} deliveries to {clients} watchers ({:.1}/s)\n",
            d as f64 / secs.max(1e-9)
        ));
    }
    out(s.as_bytes())?;
    Ok(())
}
