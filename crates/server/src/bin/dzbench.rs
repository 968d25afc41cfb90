//! `dzbench`: SET throughput and latency against a running cluster, over raw Doozer frames.
//!
//! `dzbench --addr A --addr B --clients 64 --secs 10 --size 100` runs two phases:
//! one client doing sequential sets (median and tail latency), then `--clients` concurrent
//! clients, spread over the addresses round-robin, each with one set outstanding
//! (throughput). `scripts/bench.sh` starts a 3-node cluster and runs it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use doozer_proto::codec::ClientCodec;
use doozer_proto::msg::{Request, Verb};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Benchmark SETs against a doozer cluster.
#[derive(Parser, Debug)]
struct Args {
    /// Node address (repeatable; clients are spread over them).
    #[arg(long = "addr", required = true)]
    addrs: Vec<String>,
    /// Concurrent clients in the throughput phase.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Seconds of the one-client phase, if not `--secs`.
    #[arg(long)]
    single_secs: Option<u64>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Print the concurrent phase's rate every this many seconds (0: only the total), to
    /// see whether a long run slows down as it goes, with the window's slowest set and the
    /// UTC time it was sent (to find its cause in the nodes' logs).
    #[arg(long, default_value_t = 0)]
    every: u64,
}

type Conn = Framed<TcpStream, ClientCodec>;

async fn connect(addr: &str) -> Result<Conn, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(Framed::new(s, ClientCodec::new()))
}

/// The slowest acknowledged set of the current window: its latency in µs, and when it was
/// sent.
#[derive(Default)]
struct Slowest {
    us: AtomicU64,
    sent: Mutex<Option<SystemTime>>,
}

impl Slowest {
    fn note(&self, us: u64, sent: SystemTime) {
        // Only a new maximum takes the lock.
        if self.us.fetch_max(us, Ordering::Relaxed) < us {
            let mut s = self.sent.lock().expect("slowest lock");
            if self.us.load(Ordering::Relaxed) == us {
                *s = Some(sent);
            }
        }
    }

    /// The window's slowest set, and a new window.
    fn take(&self) -> (u64, Option<SystemTime>) {
        let mut s = self.sent.lock().expect("slowest lock");
        (self.us.swap(0, Ordering::Relaxed), s.take())
    }
}

/// `HH:MM:SS.mmm` in UTC.
fn utc(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()) % 86_400_000;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Runs sets for `d`, counting each acknowledged one in `done`; returns (ok count, error
/// count, latency histogram in µs).
async fn client(
    addr: String,
    id: usize,
    d: Duration,
    size: usize,
    done: Arc<AtomicU64>,
    slowest: Arc<Slowest>,
) -> Result<(u64, u64, Histogram<u64>), String> {
    let mut c = connect(&addr).await?;
    let value = bytes::Bytes::from(vec![b'x'; size]);
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ok, mut errs) = (0, 0);
    let end = Instant::now() + d;
    let mut i: i32 = 0;
    while Instant::now() < end {
        i = i.wrapping_add(1);
        let req = Request::new(Verb::Set)
            .with_tag(i)
            .with_path(format!("/bench/c{id}/k{}", i % 1000))
            .with_rev(-1)
            .with_value(value.clone());
        let t = Instant::now();
        let sent = SystemTime::now();
        c.send(req).await.map_err(|e| e.to_string())?;
        let resp = match c.next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection closed".into()),
        };
        let us = t.elapsed().as_micros() as u64;
        if resp.is_err() {
            errs += 1;
        } else {
            ok += 1;
            done.fetch_add(1, Ordering::Relaxed);
            slowest.note(us, sent);
            let _ = h.record(us.max(1));
        }
    }
    Ok((ok, errs, h))
}

fn report(name: &str, ok: u64, errs: u64, h: &Histogram<u64>, d: Duration) {
    println!(
        "{name}: {ok} sets ok, {errs} errors in {:.1}s = {:.0} sets/s; latency µs p50 {} p90 {} p99 {} max {}",
        d.as_secs_f64(),
        ok as f64 / d.as_secs_f64(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max()
    );
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let a = Args::parse();
    let d = Duration::from_secs(a.secs);

    let t = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let single = a.single_secs.map_or(d, Duration::from_secs);
    let slowest = Arc::new(Slowest::default());
    let (ok, errs, h) = client(
        a.addrs[0].clone(),
        0,
        single,
        a.size,
        done.clone(),
        slowest.clone(),
    )
    .await?;
    slowest.take();
    report("1 client", ok, errs, &h, t.elapsed());

    // Tells a wrapper (scripts/bench.sh) when to start measuring the concurrent phase.
    println!("starting {} clients", a.clients);
    let t = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let addr = a.addrs[i % a.addrs.len()].clone();
        tasks.push(tokio::spawn(client(
            addr,
            i + 1,
            d,
            a.size,
            done.clone(),
            slowest.clone(),
        )));
    }
    let ticker = (a.every > 0).then(|| {
        let done = done.clone();
        let slowest = slowest.clone();
        let every = Duration::from_secs(a.every);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let mut last = 0;
            loop {
                tick.tick().await;
                let now = done.load(Ordering::Relaxed);
                let (max, sent) = slowest.take();
                println!(
                    "  at {:>4.0}s: {:.0} sets/s; slowest {:.1} ms, sent at {} UTC",
                    t.elapsed().as_secs_f64(),
                    (now - last) as f64 / every.as_secs_f64(),
                    max as f64 / 1000.0,
                    sent.map_or_else(|| "-".into(), utc)
                );
                last = now;
            }
        })
    });
    let mut total =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let (mut ok, mut errs) = (0, 0);
    for t in tasks {
        let (o, e, h) = t.await.map_err(|e| e.to_string())??;
        ok += o;
        errs += e;
        total.add(&h).map_err(|e| e.to_string())?;
    }
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    report(
        &format!("{} clients", a.clients),
        ok,
        errs,
        &total,
        t.elapsed(),
    );
    Ok(())
}
