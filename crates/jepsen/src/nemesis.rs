//! The nemesis: which faults to inject, a seeded schedule of them, and how each is applied
//! to and lifted from a [`Cluster`].
//!
//! The schedule alternates quiet periods and faults: after a quiet start, each step picks a
//! fault from the enabled families, holds it for 2–6 s, lifts it (healing the network,
//! continuing paused nodes, restarting killed ones) and waits 1–3 s. Which nodes a fault
//! hits is drawn from the same seeded RNG when it starts, except the leader, which is
//! whoever the nodes' logs say leads at that moment.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::cluster::{Cluster, ClusterError};
use crate::proxy::LinkFault;

/// A family of faults, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Network partitions: halves, an isolated minority node, an isolated leader, a bridge,
    /// and one-way blocks.
    Partition,
    /// Added latency on links.
    Slow,
    /// Links that keep losing their connections.
    Lossy,
    /// `kill -9` of a random node or of the leader, restarted when the fault lifts.
    Kill,
    /// SIGSTOP of a random node or of the leader, SIGCONT when the fault lifts.
    Pause,
    /// Every node restarted (SIGTERM, restart, wait for it) one after the other.
    Restart,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 6] = [
        Family::Partition,
        Family::Slow,
        Family::Lossy,
        Family::Kill,
        Family::Pause,
        Family::Restart,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Partition => "partition",
            Family::Slow => "slow",
            Family::Lossy => "lossy",
            Family::Kill => "kill",
            Family::Pause => "pause",
            Family::Restart => "restart",
        }
    }
}

/// A `--nemesis` list that names an unknown fault.
#[derive(Debug, thiserror::Error)]
#[error("unknown nemesis {0:?} (known: partition, slow, lossy, kill, pause, restart, all, none)")]
pub struct UnknownNemesis(pub String);

/// Parses `partition,kill,pause`, `all` or `none` into a sorted, deduplicated list.
pub fn parse_families(s: &str) -> Result<Vec<Family>, UnknownNemesis> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "all" => out.extend(Family::ALL),
            "none" => {}
            p => out.push(
                *Family::ALL
                    .iter()
                    .find(|f| f.name() == p)
                    .ok_or_else(|| UnknownNemesis(p.to_string()))?,
            ),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One step of the schedule: wait `quiet`, inject a fault of `family`, hold it `hold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Quiet time before the fault.
    pub quiet: Duration,
    /// The fault family.
    pub family: Family,
    /// How long the fault is held.
    pub hold: Duration,
}

/// The schedule for a run of `total` (faults stop 3 s before the end, leaving time to
/// heal), drawn from `rng`. Empty when no family is enabled.
pub fn schedule(families: &[Family], total: Duration, rng: &mut ChaCha8Rng) -> Vec<Step> {
    let mut steps = Vec::new();
    if families.is_empty() {
        return steps;
    }
    let end = total.saturating_sub(Duration::from_secs(3));
    let mut t = Duration::from_millis(rng.gen_range(1500..3000));
    loop {
        let quiet = if steps.is_empty() {
            t
        } else {
            Duration::from_millis(rng.gen_range(1000..3000))
        };
        let family = *families.choose(rng).expect("not empty");
        let start = if steps.is_empty() { t } else { t + quiet };
        // The last fault is cut short to fit, unless too little time is left for one.
        let hold = Duration::from_millis(rng.gen_range(2000..6000)).min(end.saturating_sub(start));
        if hold < Duration::from_millis(1500) {
            break;
        }
        t = start + hold;
        steps.push(Step {
            quiet,
            family,
            hold,
        });
    }
    steps
}

/// A fault as applied, for the report and for lifting it.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// The family name.
    pub family: &'static str,
    /// What exactly was done, e.g. `partition [0] | [1 2] (isolated leader)`.
    pub what: String,
    /// Start, in ns since the run started.
    pub start: u64,
    /// End, in ns since the run started (filled when lifted).
    pub end: Option<u64>,
    /// Nodes to restart or continue when the fault lifts.
    #[serde(skip)]
    pub(crate) undo: Undo,
}

#[derive(Debug, Clone, Default)]
pub(crate) enum Undo {
    #[default]
    Heal,
    Restart(usize),
    Resume(usize),
    Nothing,
}

/// The leader with probability `p_leader` (when known), else a random node; and whether
/// it is the leader.
fn pick_node(c: &Cluster, rng: &mut ChaCha8Rng, p_leader: f64) -> (usize, bool) {
    if rng.gen_bool(p_leader) {
        if let Some(l) = c.leader() {
            return (l, true);
        }
    }
    (rng.gen_range(0..c.len()), false)
}

fn list(nodes: &[usize]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
    format!("[{}]", v.join(" "))
}

/// Applies a fault of `family` now. `at_ns` is the current run time.
pub async fn inject(
    c: &mut Cluster,
    family: Family,
    rng: &mut ChaCha8Rng,
    at_ns: u64,
) -> Result<Fault, ClusterError> {
    let n = c.len();
    let mut nodes: Vec<usize> = (0..n).collect();
    nodes.shuffle(rng);
    let (what, undo) = match family {
        Family::Partition => match rng.gen_range(0..5) {
            0 => {
                let (a, b) = nodes.split_at(n / 2);
                c.net().partition(a, b);
                (format!("halves {} | {}", list(a), list(b)), Undo::Heal)
            }
            1 => {
                let (a, b) = nodes.split_at(1);
                c.net().partition(a, b);
                (
                    format!("isolated node {} | {}", list(a), list(b)),
                    Undo::Heal,
                )
            }
            2 => {
                let (l, known) = pick_node(c, rng, 1.0);
                let rest: Vec<usize> = (0..n).filter(|&x| x != l).collect();
                c.net().partition(&[l], &rest);
                let tag = if known {
                    "leader"
                } else {
                    "node (leader unknown)"
                };
                (format!("isolated {tag} n{l} | {}", list(&rest)), Undo::Heal)
            }
            3 => {
                // Two sides that only the bridge node connects.
                let bridge = nodes[0];
                let rest = &nodes[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                c.net().partition(a, b);
                (
                    format!("bridge n{bridge} between {} and {}", list(a), list(b)),
                    Undo::Heal,
                )
            }
            _ => {
                // One node's outbound links blocked: the others stop hearing it, it still
                // hears them. Usually the leader, which then cannot reach its followers.
                let (x, known) = pick_node(c, rng, 0.6);
                for y in (0..n).filter(|&y| y != x) {
                    c.net().update(x, y, |f| f.blocked = true);
                }
                let tag = if known { "leader " } else { "" };
                (format!("one-way: {tag}n{x} -> others blocked"), Undo::Heal)
            }
        },
        Family::Slow => {
            let mut desc = Vec::new();
            for x in 0..n {
                for y in (0..n).filter(|&y| y != x) {
                    let ms = rng.gen_range(10..250);
                    c.net().set(
                        x,
                        y,
                        LinkFault {
                            delay: Duration::from_millis(ms),
                            ..LinkFault::default()
                        },
                    );
                    desc.push(ms);
                }
            }
            let max = desc.iter().max().copied().unwrap_or(0);
            (format!("slow links: 10..{max} ms per chunk"), Undo::Heal)
        }
        Family::Lossy => {
            let p = rng.gen_range(0.02..0.2);
            let victims = &nodes[..n.div_ceil(2)];
            for &x in victims {
                for y in (0..n).filter(|&y| y != x) {
                    c.net().set(
                        x,
                        y,
                        LinkFault {
                            loss: p,
                            ..LinkFault::default()
                        },
                    );
                    c.net().set(
                        y,
                        x,
                        LinkFault {
                            loss: p,
                            ..LinkFault::default()
                        },
                    );
                }
            }
            (
                format!("lossy links of {} (p={p:.2} per chunk)", list(victims)),
                Undo::Heal,
            )
        }
        Family::Kill => {
            let (x, known) = pick_node(c, rng, 0.5);
            c.kill(x).await;
            let tag = if known { "leader " } else { "" };
            (format!("kill -9 {tag}n{x}"), Undo::Restart(x))
        }
        Family::Pause => {
            let (x, known) = pick_node(c, rng, 0.5);
            c.pause(x);
            let tag = if known { "leader " } else { "" };
            (format!("SIGSTOP {tag}n{x}"), Undo::Resume(x))
        }
        Family::Restart => {
            // Rolling restart, done in full right here, one node at a time: a graceful
            // stop (SIGTERM, SIGKILL after 5 s), a restart, and a moment to settle.
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let mut forced = Vec::new();
            for &x in &order {
                if !c.terminate(x, Duration::from_secs(5)).await {
                    forced.push(x);
                }
                c.restart(x).await?;
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            let note = if forced.is_empty() {
                String::new()
            } else {
                format!(" ({} ignored SIGTERM and were killed)", list(&forced))
            };
            (
                format!("rolling restart {}{note}", list(&order)),
                Undo::Nothing,
            )
        }
    };
    tracing::info!(family = family.name(), %what, "fault");
    Ok(Fault {
        family: family.name(),
        what,
        start: at_ns,
        end: None,
        undo,
    })
}

/// Lifts `fault`.
pub async fn lift(c: &mut Cluster, fault: &mut Fault, at_ns: u64) -> Result<(), ClusterError> {
    match fault.undo {
        Undo::Heal => c.net().heal(),
        Undo::Restart(x) => c.restart(x).await?,
        Undo::Resume(x) => c.resume(x),
        Undo::Nothing => {}
    }
    fault.end = Some(at_ns);
    tracing::info!(what = %fault.what, "fault lifted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn families_parse() {
        assert_eq!(
            parse_families("partition,kill,pause").unwrap(),
            [Family::Partition, Family::Kill, Family::Pause]
        );
        assert_eq!(parse_families("all").unwrap(), Family::ALL);
        assert_eq!(parse_families("kill,all,kill").unwrap(), Family::ALL);
        assert!(parse_families("none").unwrap().is_empty());
        assert!(parse_families("partition,flood").is_err());
    }

    #[test]
    fn schedule_is_seeded_and_fits_the_run() {
        let fams = [Family::Partition, Family::Kill];
        let total = Duration::from_secs(60);
        let a = schedule(&fams, total, &mut ChaCha8Rng::seed_from_u64(7));
        let b = schedule(&fams, total, &mut ChaCha8Rng::seed_from_u64(7));
        let c = schedule(&fams, total, &mut ChaCha8Rng::seed_from_u64(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() >= 5, "{a:?}");
        let used: Duration = a.iter().map(|s| s.quiet + s.hold).sum();
        assert!(used <= total - Duration::from_secs(3), "{used:?}");
        assert!(a.iter().all(|s| fams.contains(&s.family)));
        assert!(schedule(&[], total, &mut ChaCha8Rng::seed_from_u64(7)).is_empty());
    }
}
