//! The reports: `report.txt` (what ran, faults, op counts, latencies, verdict per checker)
//! and `report.html` (the same, plus a timeline of operations and faults and a latency
//! plot, as inline SVG, with the first anomaly highlighted).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;

use crate::history::{Op, OpKind};
use crate::linearizability::KeyVerdict;
use crate::proxy::ProxyStats;
use crate::run::{Collected, RunConfig, Verdicts};
use crate::workload::FINAL_CLIENT_BASE;

/// A snapshot of the proxies' counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyCounts {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections whose dialer was not identified.
    pub unidentified: u64,
    /// Connections closed unserved because their dialer was gone.
    pub gone: u64,
    /// Bytes forwarded.
    pub forwarded_bytes: u64,
    /// Bytes black-holed.
    pub dropped_bytes: u64,
    /// Connections cut.
    pub cut: u64,
}

impl ProxyCounts {
    /// Reads the counters.
    pub fn of(s: &ProxyStats) -> ProxyCounts {
        ProxyCounts {
            accepted: s.accepted.load(Ordering::Relaxed),
            unidentified: s.unidentified.load(Ordering::Relaxed),
            gone: s.gone.load(Ordering::Relaxed),
            forwarded_bytes: s.forwarded_bytes.load(Ordering::Relaxed),
            dropped_bytes: s.dropped_bytes.load(Ordering::Relaxed),
            cut: s.cut.load(Ordering::Relaxed),
        }
    }
}

/// What a report is made from.
pub struct Context<'a> {
    /// The run's configuration.
    pub cfg: &'a RunConfig,
    /// What it collected.
    pub collected: &'a Collected,
    /// The verdicts.
    pub verdicts: &'a Verdicts,
    /// Proxy counters.
    pub proxy: ProxyCounts,
}

fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

fn kind_name(k: OpKind) -> &'static str {
    match k {
        OpKind::Read => "read",
        OpKind::Write => "write",
        OpKind::Cas => "cas",
    }
}

fn describe(op: &Op) -> String {
    let ok = match op.ok {
        Some(true) => "ok",
        Some(false) => "fail",
        None => "unknown",
    };
    let ret = op.ret.map_or("∞".to_string(), secs);
    match op.op {
        OpKind::Cas => format!(
            "client {} cas {} {:?} -> {:?} {ok} [{} .. {ret}]",
            op.client,
            op.key,
            op.expect,
            op.value,
            secs(op.call)
        ),
        k => format!(
            "client {} {} {} {:?} {ok} [{} .. {ret}]",
            op.client,
            kind_name(k),
            op.key,
            op.value,
            secs(op.call)
        ),
    }
}

/// The lines describing the checkers' verdicts, and the index of the first anomalous op.
fn verdict_lines(ctx: &Context<'_>) -> (Vec<String>, Option<(usize, Vec<usize>)>) {
    let h = &ctx.collected.history;
    let mut out = Vec::new();
    let mut anomaly = None;
    if let Some(l) = &ctx.verdicts.linear {
        out.push(format!(
            "linearizability: {}",
            if l.is_linearizable() { "PASS" } else { "FAIL" }
        ));
        for k in &l.keys {
            let v = match &k.verdict {
                KeyVerdict::Linearizable => "linearizable".to_string(),
                KeyVerdict::NotLinearizable(a) => format!(
                    "NOT linearizable: after {} ops linearized (register = {:?}) no order \
                     explains {}",
                    a.linearized,
                    a.state,
                    h.get(a.op_index).map(describe).unwrap_or_default()
                ),
                KeyVerdict::Unknown { reason } => format!("UNKNOWN: {reason}"),
            };
            out.push(format!(
                "  {}: {} ops, {} searched, {} states: {v}",
                k.key, k.ops, k.searched, k.states
            ));
        }
        if let Some(a) = l.first_anomaly(h) {
            out.push(format!("  first anomaly: {}", describe(&h[a.op_index])));
            for p in &a.recent {
                out.push(format!("    linearized before it: {}", describe(&h[*p])));
            }
            for p in a.pending.iter().filter(|p| **p != a.op_index).take(12) {
                out.push(format!("    concurrent: {}", describe(&h[*p])));
            }
            anomaly = Some((a.op_index, a.pending.clone()));
        }
    }
    if let Some(s) = &ctx.verdicts.set {
        out.push(format!(
            "set: {} — {} adds attempted, {} acknowledged, {} unknown ({} of them present), {} final reads",
            if s.passed() { "PASS" } else { "FAIL" },
            s.attempted,
            s.acked,
            s.unknown,
            s.unknown_present,
            s.reads
        ));
        for (what, list) in [
            ("lost acknowledged add", &s.lost),
            ("never attempted but present", &s.unexpected),
            ("failed add present", &s.failed_present),
        ] {
            for (el, reader) in list.iter().take(20) {
                out.push(format!("  {what}: {el} (read by client {reader})"));
            }
            if list.len() > 20 {
                out.push(format!("  ... {} more {what}", list.len() - 20));
            }
        }
        for c in &s.disagreeing_reads {
            out.push(format!("  final read of client {c} differs from the first"));
        }
    }
    if let Some(w) = &ctx.verdicts.watch {
        out.push(format!(
            "watch: {} — {} committed events, {} watchers, {} events seen",
            if w.passed() { "PASS" } else { "FAIL" },
            w.reference_events,
            w.watchers,
            w.seen_events
        ));
        for (who, p) in &w.problems {
            match who {
                Some(_) => out.push(format!("  watcher {p}")),
                None => out.push(format!("  committed history: {p}")),
            }
        }
        if let Some(data) = &ctx.collected.watch {
            for n in &data.reference_notes {
                out.push(format!("  note: {n}"));
            }
        }
    }
    for p in &ctx.verdicts.problems {
        out.push(format!("problem: {p}"));
    }
    (out, anomaly)
}

fn latency_lines(h: &[Op]) -> Vec<String> {
    let mut by: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
    for op in h
        .iter()
        .filter(|o| o.ok == Some(true) && o.client < FINAL_CLIENT_BASE)
    {
        if let Some(l) = op.latency_ns() {
            let hist = by
                .entry(kind_name(op.op))
                .or_insert_with(|| Histogram::new(3).expect("valid sigfig"));
            let _ = hist.record(l.max(1) / 1000);
        }
    }
    by.iter()
        .map(|(k, hist)| {
            let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
            format!(
                "  {k:5}: n={} p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
                hist.len(),
                ms(0.5),
                ms(0.9),
                ms(0.99),
                hist.max() as f64 / 1000.0
            )
        })
        .collect()
}

fn count_lines(h: &[Op]) -> Vec<String> {
    let mut counts: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for op in h {
        let c = counts.entry(kind_name(op.op)).or_default();
        c[match op.ok {
            Some(true) => 0,
            Some(false) => 1,
            None => 2,
        }] += 1;
    }
    let mut out = vec![format!("  total: {}", h.len())];
    for (k, [ok, fail, unknown]) in counts {
        out.push(format!(
            "  {k:5}: {ok} ok, {fail} failed, {unknown} unknown"
        ));
    }
    out
}

/// `report.txt`.
pub fn text(ctx: &Context<'_>) -> String {
    let cfg = ctx.cfg;
    let s = &cfg.spec;
    let mut t = String::new();
    let fams: Vec<&str> = cfg.nemesis.iter().map(|f| f.name()).collect();
    let _ = writeln!(t, "doozer-jepsen run");
    let _ = writeln!(
        t,
        "workload {} | nodes {} | clients {} | time {:?} | seed {} | nemesis {} | unsafe-local-reads {}",
        s.workload.name(),
        cfg.nodes,
        s.clients,
        s.time,
        s.seed,
        if fams.is_empty() { "none".to_string() } else { fams.join(",") },
        cfg.unsafe_local_reads
    );
    let _ = writeln!(t, "doozerd {}", cfg.doozerd.display());
    let _ = writeln!(t, "\nfaults ({}):", ctx.collected.faults.len());
    for f in &ctx.collected.faults {
        let _ = writeln!(
            t,
            "  {} .. {}  {}: {}",
            secs(f.start),
            f.end.map_or("end".into(), secs),
            f.family,
            f.what
        );
    }
    let p = ctx.proxy;
    let _ = writeln!(
        t,
        "proxies: {} connections ({} unidentified, {} from gone dialers), {} cut, {} bytes forwarded, {} black-holed",
        p.accepted, p.unidentified, p.gone, p.cut, p.forwarded_bytes, p.dropped_bytes
    );
    let _ = writeln!(t, "\noperations:");
    for l in count_lines(&ctx.collected.history) {
        let _ = writeln!(t, "{l}");
    }
    let _ = writeln!(
        t,
        "latency of successful operations (final reads excluded):"
    );
    for l in latency_lines(&ctx.collected.history) {
        let _ = writeln!(t, "{l}");
    }
    let _ = writeln!(
        t,
        "\nchecks ({:.3}s):",
        ctx.verdicts.check_time.as_secs_f64()
    );
    let (lines, _) = verdict_lines(ctx);
    for l in lines {
        let _ = writeln!(t, "{l}");
    }
    let _ = writeln!(
        t,
        "\nVERDICT: {}",
        if ctx.verdicts.passed() {
            "PASS"
        } else {
            "FAIL"
        }
    );
    t
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Most operations drawn on the timeline; beyond that, a regular sample (the anomaly and
/// the operations concurrent with it are always drawn).
const MAX_DRAWN: usize = 20_000;

/// `report.html`.
pub fn html(ctx: &Context<'_>) -> String {
    let h = &ctx.collected.history;
    let (lines, anomaly) = verdict_lines(ctx);
    let end_ns = h
        .iter()
        .map(|o| o.ret.unwrap_or(o.call))
        .chain(ctx.collected.faults.iter().filter_map(|f| f.end))
        .max()
        .unwrap_or(1)
        .max(1);
    let width = 1200.0;
    let left = 60.0;
    let x = |ns: u64| left + (ns as f64 / end_ns as f64) * (width - left - 10.0);
    let mut clients: Vec<u64> = h.iter().map(|o| o.client).collect();
    clients.sort();
    clients.dedup();
    let row_h = 14.0;
    let top = 20.0;
    let tl_h = top + row_h * clients.len() as f64 + 20.0;
    let row = |c: u64| top + row_h * clients.binary_search(&c).unwrap_or(0) as f64;

    let mut s = String::new();
    let passed = ctx.verdicts.passed();
    let _ = write!(
        s,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>doozer-jepsen report</title>\
         <style>body{{font-family:sans-serif;margin:20px}} pre{{background:#f6f6f6;padding:8px}}\
         .pass{{color:#080}} .fail{{color:#c00}} svg{{border:1px solid #ccc}}</style></head><body>\
         <h1>doozer-jepsen: <span class=\"{}\">{}</span></h1>",
        if passed { "pass" } else { "fail" },
        if passed { "PASS" } else { "FAIL" }
    );
    let _ = write!(s, "<pre>{}</pre>", esc(&text(ctx)));
    if let Some((i, _)) = &anomaly {
        let _ = write!(
            s,
            "<p class=\"fail\"><b>First anomaly</b> (red, circled on the timeline): {}</p>",
            esc(&describe(&h[*i]))
        );
    }
    for l in lines
        .iter()
        .filter(|l| l.starts_with("  watcher") || l.contains("lost"))
    {
        let _ = write!(s, "<p class=\"fail\">{}</p>", esc(l));
    }

    // Timeline.
    let _ = write!(
        s,
        "<h2>Timeline</h2><p>One row per client; bars span call to return (green ok, grey \
         failed, orange unknown: drawn to the end); shaded bands are faults.</p>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{tl_h}\">"
    );
    fault_bands(&mut s, ctx, &x, tl_h);
    for c in &clients {
        let _ = write!(
            s,
            "<text x=\"2\" y=\"{}\" font-size=\"10\">c{c}</text>",
            row(*c) + 10.0
        );
    }
    let highlighted: Vec<usize> = anomaly
        .as_ref()
        .map(|(i, p)| std::iter::once(*i).chain(p.iter().copied()).collect())
        .unwrap_or_default();
    let stride = h.len().div_ceil(MAX_DRAWN).max(1);
    for (i, op) in h.iter().enumerate() {
        let hl = highlighted.contains(&i);
        if i % stride != 0 && !hl {
            continue;
        }
        let x1 = x(op.call);
        let x2 = x(op.ret.unwrap_or(end_ns)).max(x1 + 1.0);
        let color = match (op.ok, op.op) {
            (Some(true), OpKind::Read) => "#4a4",
            (Some(true), OpKind::Write) => "#2a7",
            (Some(true), OpKind::Cas) => "#6b3",
            (Some(false), _) => "#bbb",
            (None, _) => "#f90",
        };
        let stroke = if anomaly.as_ref().is_some_and(|(a, _)| *a == i) {
            " stroke=\"#d00\" stroke-width=\"3\""
        } else if hl {
            " stroke=\"#d00\" stroke-width=\"1\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\"{stroke}><title>{}</title></rect>",
            row(op.client) + 2.0,
            x2 - x1,
            row_h - 4.0,
            esc(&describe(op))
        );
    }
    if let Some((i, _)) = &anomaly {
        let op = &h[*i];
        let cx = (x(op.call) + x(op.ret.unwrap_or(end_ns))) / 2.0;
        let _ = write!(
            s,
            "<circle cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"12\" fill=\"none\" stroke=\"#d00\" stroke-width=\"2\"/>",
            row(op.client) + row_h / 2.0
        );
    }
    axis(&mut s, end_ns, &x, tl_h - 4.0);
    s.push_str("</svg>");

    // Latency over time: p50 and max per time bucket, log scale.
    let plot_h = 260.0;
    let buckets = 200usize;
    let mut per: Vec<Vec<u64>> = vec![Vec::new(); buckets];
    for op in h
        .iter()
        .filter(|o| o.ok == Some(true) && o.client < FINAL_CLIENT_BASE)
    {
        if let Some(l) = op.latency_ns() {
            let b = ((op.call as f64 / end_ns as f64) * buckets as f64) as usize;
            per[b.min(buckets - 1)].push(l);
        }
    }
    let max_ns = per
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1_000_000);
    let (lo, hi) = (1e5f64.log10(), (max_ns as f64).log10());
    let y = |ns: u64| {
        let v = (ns.max(100_000) as f64).log10();
        plot_h - 20.0 - (v - lo) / (hi - lo).max(1e-9) * (plot_h - 40.0)
    };
    let _ = write!(
        s,
        "<h2>Latency</h2><p>Successful operations, per {:.2}s bucket: median (blue) and max \
         (red), log scale from 0.1 ms to {:.0} ms.</p>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{plot_h}\">",
        end_ns as f64 / 1e9 / buckets as f64,
        max_ns as f64 / 1e6
    );
    fault_bands(&mut s, ctx, &x, plot_h);
    for (q, color) in [(0.5, "#36c"), (1.0, "#c33")] {
        let mut pts = String::new();
        for (b, v) in per.iter_mut().enumerate() {
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            let val = v[((v.len() - 1) as f64 * q) as usize];
            let bx = x(((b as f64 + 0.5) / buckets as f64 * end_ns as f64) as u64);
            let _ = write!(pts, "{bx:.1},{:.1} ", y(val));
        }
        let _ = write!(
            s,
            "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>"
        );
    }
    for ms in [1u64, 10, 100, 1000, 10_000] {
        let ns = ms * 1_000_000;
        if ns <= max_ns {
            let _ = write!(
                s,
                "<text x=\"2\" y=\"{:.1}\" font-size=\"10\">{ms}ms</text>\
                 <line x1=\"{left}\" x2=\"{width}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
                y(ns) + 3.0,
                y(ns),
                y(ns)
            );
        }
    }
    axis(&mut s, end_ns, &x, plot_h - 4.0);
    s.push_str("</svg></body></html>\n");
    s
}

fn fault_bands(s: &mut String, ctx: &Context<'_>, x: &impl Fn(u64) -> f64, h: f64) {
    for (i, f) in ctx.collected.faults.iter().enumerate() {
        let x1 = x(f.start);
        let x2 = x(f.end.unwrap_or(f.start)).max(x1 + 2.0);
        let color = match f.family {
            "partition" => "#fdd",
            "kill" | "restart" => "#ddf",
            "pause" => "#ffd",
            _ => "#dfd",
        };
        let _ = write!(
            s,
            "<rect x=\"{x1:.1}\" y=\"0\" width=\"{:.1}\" height=\"{h}\" fill=\"{color}\" opacity=\"0.7\"><title>{}</title></rect>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"9\" fill=\"#666\">{}</text>",
            x2 - x1,
            esc(&format!("{}: {}", f.family, f.what)),
            x1 + 2.0,
            10 + (i % 2) * 9,
            esc(f.family)
        );
    }
}

fn axis(s: &mut String, end_ns: u64, x: &impl Fn(u64) -> f64, y: f64) {
    let step_s = ((end_ns as f64 / 1e9) / 10.0).ceil().max(1.0) as u64;
    let mut t = 0;
    while t * 1_000_000_000 <= end_ns {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{y}\" font-size=\"9\">{t}s</text>",
            x(t * 1_000_000_000)
        );
        t += step_s;
    }
}
