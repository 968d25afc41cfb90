//! `snapshot save FILE`, `snapshot restore FILE` and `snapshot import FILE`.
//!
//! Format (JSON lines): a header `{"doozer_snapshot":1,"rev":R,"files":N}`, then one
//! `{"path":P,"rev":r,"value":BASE64}` per file, sorted by path. Every read is made at
//! revision R (a tree walk with STAT, GETDIR and GET at R), so the backup is consistent:
//! exactly the tree as it was at R, whatever happens to the cluster meanwhile.
//!
//! `restore` keeps every revision number, using only the client protocol: revisions are
//! one global sequence and every write, NOP included, takes the next one. So on a cluster
//! whose revision is still below the snapshot's lowest file revision, NOPs fill each gap up
//! to `rev - 1` and a create-only SET then lands exactly at `rev`; NOPs finally bring the
//! cluster to R. Nothing else may write meanwhile: a SET that lands elsewhere stops the
//! restore with an error naming the file. `/ctl` belongs to the cluster it runs on and is
//! never restored. `import` writes the files with new revisions, into any cluster.

use std::io::{BufRead, BufReader, Write};

use bytes::Bytes;
use doozer_client::Client;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::flags::Flags;
use crate::output::{json_line, out};
use crate::run::{dial, rev_or_current, Fail};

/// Format version written in the header.
const FORMAT: i64 = 1;
/// Requests in flight at once during a save or restore.
const WINDOW: usize = 64;

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapFile {
    /// Path.
    pub path: String,
    /// Its rev at the snapshot's revision.
    pub rev: i64,
    /// Its body.
    pub value: Bytes,
}

/// Runs `snapshot <action> <file>`.
pub async fn run(f: &Flags, action: &str, file: &str) -> Result<(), Fail> {
    match action {
        "save" => save(f, file).await,
        "restore" => restore(f, file).await,
        "import" => import(f, file).await,
        other => Err(Fail::Msg(format!(
            "snapshot: unknown action {other:?} (want save, restore or import)"
        ))),
    }
}

fn is_ctl(path: &str) -> bool {
    path == "/ctl" || path.starts_with("/ctl/")
}

/// Every file of the tree at `rev`, sorted by path: directories are listed level by level
/// (GETDIRs pipelined), then the files are read (GETs pipelined), all at `rev`.
pub async fn files_at(c: &Client, rev: i64) -> Result<Vec<SnapFile>, Fail> {
    let mut dirs = vec!["/".to_owned()];
    let mut file_paths = Vec::new();
    while !dirs.is_empty() {
        let listings: Vec<_> = futures::stream::iter(dirs.drain(..).map(|d| {
            let c = c.clone();
            async move {
                let names = c.getdir_all(&d, Some(rev)).await;
                (d, names)
            }
        }))
        .buffered(WINDOW)
        .collect()
        .await;
        let mut children = Vec::new();
        for (d, names) in listings {
            for n in names? {
                children.push(doozer_proto::path::join(&d, &n));
            }
        }
        let stats: Vec<_> = futures::stream::iter(children.into_iter().map(|p| {
            let c = c.clone();
            async move {
                let st = c.stat(&p, Some(rev)).await;
                (p, st)
            }
        }))
        .buffered(WINDOW)
        .collect()
        .await;
        for (p, st) in stats {
            let st = st?;
            if st.is_dir() {
                dirs.push(p);
            } else if st.exists() {
                file_paths.push(p);
            }
        }
    }
    file_paths.sort_unstable();
    let files: Vec<_> = futures::stream::iter(file_paths.into_iter().map(|p| {
        let c = c.clone();
        async move {
            let got = c.get(&p, Some(rev)).await;
            (p, got)
        }
    }))
    .buffered(WINDOW)
    .collect()
    .await;
    files
        .into_iter()
        .map(|(path, got)| {
            let (value, rev) = got?;
            Ok(SnapFile { path, rev, value })
        })
        .collect()
}

/// The snapshot text: header line, then one line per file.
pub fn encode(rev: i64, files: &[SnapFile]) -> String {
    let mut text =
        json!({ "doozer_snapshot": FORMAT, "rev": rev, "files": files.len() }).to_string();
    text.push('\n');
    for e in files {
        let line = json!({
            "path": e.path,
            "rev": e.rev,
            "value": data_encoding::BASE64.encode(&e.value),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

async fn save(f: &Flags, file: &str) -> Result<(), Fail> {
    let c = dial(f).await?;
    let rev = rev_or_current(&c, f).await?;
    let files = files_at(&c, rev).await?;
    let text = encode(rev, &files);
    if file == "-" {
        out(text.as_bytes())?;
        return Ok(());
    }
    // Write beside the target, sync, and rename, so a crash never leaves a half-written
    // backup under the real name.
    let tmp = format!("{file}.tmp");
    {
        let mut w =
            std::fs::File::create(&tmp).map_err(|e| Fail::Msg(format!("snapshot: {tmp}: {e}")))?;
        w.write_all(text.as_bytes())
            .and_then(|()| w.sync_all())
            .map_err(|e| Fail::Msg(format!("snapshot: {tmp}: {e}")))?;
    }
    std::fs::rename(&tmp, file).map_err(|e| Fail::Msg(format!("snapshot: {file}: {e}")))?;
    if f.json {
        json_line(&json!({ "file": file, "rev": rev, "files": files.len() }))?;
    } else {
        eprintln!("saved {} files at rev {rev} to {file}", files.len());
    }
    Ok(())
}

/// Reads and checks a snapshot file. Returns its revision and files.
pub fn load(file: &str) -> Result<(i64, Vec<SnapFile>), Fail> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(file).map_err(|e| Fail::Msg(format!("snapshot: {file}: {e}")))?,
        ))
    };
    parse(file, reader)
}

/// Parses snapshot text from `reader`; `name` is used in error messages.
pub fn parse(name: &str, reader: impl BufRead) -> Result<(i64, Vec<SnapFile>), Fail> {
    let bad = |line: usize, why: &str| Fail::Msg(format!("snapshot: {name}:{line}: {why}"));
    let mut lines = reader.lines().enumerate();
    let (_, header) = lines.next().ok_or_else(|| bad(1, "empty file"))?;
    let header: Value = serde_json::from_str(&header?).map_err(|e| bad(1, &e.to_string()))?;
    if header.get("doozer_snapshot").and_then(Value::as_i64) != Some(FORMAT) {
        return Err(bad(1, "not a doozer snapshot (format 1)"));
    }
    let rev = header
        .get("rev")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad(1, "header has no rev"))?;
    let count = header
        .get("files")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad(1, "header has no file count"))?;
    let mut files = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(n, &e.to_string()))?;
        let path = v
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(n, "no path"))?;
        doozer_proto::path::validate(path).map_err(|e| bad(n, &e.to_string()))?;
        let frev = v
            .get("rev")
            .and_then(Value::as_i64)
            .filter(|&r| r > 0 && r <= rev)
            .ok_or_else(|| bad(n, "no rev, or a rev outside 1..=the snapshot's"))?;
        let value = v
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(n, "no value"))?;
        let value = data_encoding::BASE64
            .decode(value.as_bytes())
            .map_err(|e| bad(n, &format!("value: {e}")))?;
        files.push(SnapFile {
            path: path.to_owned(),
            rev: frev,
            value: value.into(),
        });
    }
    if count != files.len() as u64 {
        return Err(Fail::Msg(format!(
            "snapshot: {name}: truncated: header says {count} files, found {}",
            files.len()
        )));
    }
    Ok((rev, files))
}

/// Sends `n` NOPs, `WINDOW` at a time.
async fn nops(c: &Client, n: i64) -> Result<(), Fail> {
    let mut results = futures::stream::iter((0..n).map(|_| c.nop())).buffer_unordered(WINDOW);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

async fn restore(f: &Flags, file: &str) -> Result<(), Fail> {
    let (snap_rev, files) = load(file)?;
    let mut todo: Vec<SnapFile> = files.into_iter().filter(|s| !is_ctl(&s.path)).collect();
    todo.sort_by_key(|s| s.rev);
    if let Some(w) = todo.windows(2).find(|w| w[0].rev == w[1].rev) {
        return Err(Fail::Msg(format!(
            "snapshot: {file}: {} and {} have the same rev {}",
            w[0].path, w[1].path, w[0].rev
        )));
    }
    let c = dial(f).await?;
    let (mut restored, mut skipped) = (0usize, 0usize);
    for s in &todo {
        let cur = c.rev().await?;
        if cur >= s.rev {
            // Already there from an earlier, interrupted run? Then go on; else give up.
            let (value, rev) = c.get(&s.path, None).await?;
            if rev == s.rev && value == s.value {
                skipped += 1;
                continue;
            }
            return Err(Fail::Msg(format!(
                "snapshot restore: cannot keep revisions: the cluster is at rev {cur}, \
                 past rev {} of {}; restore into a new cluster before writing to it \
                 (or use snapshot import)",
                s.rev, s.path
            )));
        }
        nops(&c, s.rev - 1 - cur).await?;
        let got = c.set(&s.path, 0, s.value.clone()).await?;
        if got != s.rev {
            return Err(Fail::Msg(format!(
                "snapshot restore: {} landed at rev {got}, not {}: something else wrote to \
                 the cluster during the restore",
                s.path, s.rev
            )));
        }
        restored += 1;
    }
    let cur = c.rev().await?;
    if cur < snap_rev {
        nops(&c, snap_rev - cur).await?;
    }
    let end = c.rev().await?;
    if f.json {
        json_line(&json!({
            "file": file, "snapshot_rev": snap_rev, "rev": end,
            "restored": restored, "already_present": skipped,
        }))?;
    } else {
        eprintln!(
            "restored {restored} files at their revisions ({skipped} already present); \
             the cluster is at rev {end} (snapshot rev {snap_rev}); /ctl skipped"
        );
    }
    Ok(())
}

async fn import(f: &Flags, file: &str) -> Result<(), Fail> {
    let (rev, files) = load(file)?;
    let c = dial(f).await?;
    let todo: Vec<SnapFile> = files.into_iter().filter(|s| !is_ctl(&s.path)).collect();
    let total = todo.len();
    let results: Vec<_> = futures::stream::iter(todo.into_iter().map(|s| {
        let c = c.clone();
        async move { (c.set(&s.path, 0, s.value.clone()).await, s.path) }
    }))
    .buffer_unordered(WINDOW)
    .collect()
    .await;
    let mut failed = 0;
    for (res, path) in &results {
        if let Err(e) = res {
            failed += 1;
            eprintln!("{path}: {e}");
        }
    }
    if failed > 0 {
        return Err(Fail::Msg(format!(
            "snapshot import: {failed} of {total} files not imported"
        )));
    }
    if f.json {
        json_line(&json!({ "file": file, "snapshot_rev": rev, "files": total }))?;
    } else {
        eprintln!("imported {total} files from rev {rev} (new revisions; /ctl skipped)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_round_trips() {
        let files = vec![
            SnapFile {
                path: "/a".into(),
                rev: 3,
                value: Bytes::from_static(b"x\n\0\xff"),
            },
            SnapFile {
                path: "/b/c".into(),
                rev: 7,
                value: Bytes::new(),
            },
        ];
        let text = encode(9, &files);
        assert!(text.starts_with("{\"doozer_snapshot\":1,\"files\":2,\"rev\":9}\n"));
        let (rev, back) = parse("t", text.as_bytes()).unwrap();
        assert_eq!((rev, back), (9, files));
    }

    #[test]
    fn damaged_snapshots_are_refused_with_the_line() {
        let err = |t: &str| parse("t", t.as_bytes()).unwrap_err().to_string();
        assert_eq!(err(""), "snapshot: t:1: empty file");
        assert_eq!(
            err("{}\n"),
            "snapshot: t:1: not a doozer snapshot (format 1)"
        );
        let head = "{\"doozer_snapshot\":1,\"rev\":5,\"files\":1}\n";
        assert_eq!(
            err(head),
            "snapshot: t: truncated: header says 1 files, found 0"
        );
        assert_eq!(
            err(&format!(
                "{head}{{\"path\":\"a\",\"rev\":1,\"value\":\"\"}}\n"
            )),
            "snapshot: t:2: bad path: must start with '/'"
        );
        assert_eq!(
            err(&format!(
                "{head}{{\"path\":\"/a\",\"rev\":6,\"value\":\"\"}}\n"
            )),
            "snapshot: t:2: no rev, or a rev outside 1..=the snapshot's"
        );
        assert!(err(&format!(
            "{head}{{\"path\":\"/a\",\"rev\":1,\"value\":\"!\"}}\n"
        ))
        .starts_with("snapshot: t:2: value: "));
    }
}
