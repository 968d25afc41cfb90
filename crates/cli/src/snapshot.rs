//! `snapshot save FILE` and `snapshot restore FILE`.
//!
//! Format (JSON lines): a header `{"doozer_snapshot":1,"rev":R,"files":N}`, then one
//! `{"path":P,"rev":r,"value":BASE64}` per file, in walk order, all read at revision R, so
//! the backup is consistent: exactly the tree as it was at R.
//!
//! Restore writes the files (outside `/ctl`, which belongs to the cluster it runs on) with
//! create-only SETs. The cluster gives them new revisions: a client cannot choose the
//! revision of a write. Keeping revision numbers needs the server to install the snapshot
//! itself when the cluster is created.

use std::io::{BufRead, BufReader, Write};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::flags::Flags;
use crate::output::{json_line, out};
use crate::run::{dial, rev_or_current, Fail};

/// Format version written in the header.
const FORMAT: i64 = 1;
/// Restore SETs in flight at once.
const RESTORE_WINDOW: usize = 64;

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

pub async fn run(f: &Flags, action: &str, file: &str) -> Result<(), Fail> {
    match action {
        "save" => save(f, file).await,
        "restore" => restore(f, file).await,
        other => Err(Fail::Msg(format!(
            "snapshot: unknown action {other:?} (want save or restore)"
        ))),
    }
}

async fn save(f: &Flags, file: &str) -> Result<(), Fail> {
    let c = dial(f).await?;
    let rev = rev_or_current(&c, f).await?;
    let files = c.walk_all("/**", Some(rev)).await?;
    let mut text = String::new();
    text.push_str(
        &json!({ "doozer_snapshot": FORMAT, "rev": rev, "files": files.len() }).to_string(),
    );
    text.push('\n');
    for e in &files {
        let line = json!({
            "path": e.path,
            "rev": e.rev,
            "value": data_encoding::BASE64.encode(&e.value),
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    if file == "-" {
        out(text.as_bytes())?;
        return Ok(());
    }
    // Write beside the target and rename, so a crash never leaves a half-written backup
    // under the real name.
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
    let bad = |line: usize, why: &str| Fail::Msg(format!("snapshot: {file}:{line}: {why}"));
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(file).map_err(|e| Fail::Msg(format!("snapshot: {file}: {e}")))?,
        ))
    };
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
    let count = header.get("files").and_then(Value::as_u64);
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
            .ok_or_else(|| bad(n, "no rev"))?;
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
    if let Some(count) = count {
        if count != files.len() as u64 {
            return Err(Fail::Msg(format!(
                "snapshot: {file}: truncated: header says {count} files, found {}",
                files.len()
            )));
        }
    }
    Ok((rev, files))
}

async fn restore(f: &Flags, file: &str) -> Result<(), Fail> {
    let (rev, files) = load(file)?;
    let c = dial(f).await?;
    let todo: Vec<SnapFile> = files
        .into_iter()
        .filter(|s| s.path != "/ctl" && !s.path.starts_with("/ctl/"))
        .collect();
    let total = todo.len();
    let results: Vec<_> = futures::stream::iter(todo.into_iter().map(|s| {
        let c = c.clone();
        async move { (c.set(&s.path, 0, s.value.clone()).await, s.path) }
    }))
    .buffer_unordered(RESTORE_WINDOW)
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
            "snapshot restore: {failed} of {total} files not restored"
        )));
    }
    if f.json {
        json_line(&json!({ "file": file, "snapshot_rev": rev, "files": total }))?;
    } else {
        eprintln!("restored {total} files from rev {rev} (new revisions; /ctl skipped)");
    }
    Ok(())
}
