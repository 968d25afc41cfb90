//! Argument handling and the classic commands.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use doozer_client::{Client, ClientError, ClientOptions, ErrCode, Event, TlsOptions};
use futures::StreamExt;
use serde_json::{json, Map};

use crate::commands::{self, Cmd};
use crate::flags::{self, FlagError, Flags};
use crate::output::{json_line, out, with_value};

/// Version printed by `-v`: the original's, since scripts compare it.
const VERSION: &str = "0.9.0";

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Fail {
    /// A client error, printed as `Error: <e>`.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// Any other error, printed as `Error: <msg>`.
    #[error("{0}")]
    Msg(String),
    /// Already reported; exit with this code.
    #[error("exit {0}")]
    Exit(i32),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        Fail::Msg(e.to_string())
    }
}

/// Runs the CLI; returns the exit status.
pub fn main(argv0: &str, args: Vec<String>) -> i32 {
    let mut f = Flags::from_env(
        std::env::var("DOOZER_URI").ok(),
        std::env::var("DOOZER_BOOT_URI").ok(),
    );
    let usage = || eprint!("{}", commands::usage(argv0));
    let rest = match flags::parse(&mut f, &args) {
        Ok(r) => r,
        Err(e) => return flag_error(e, &usage),
    };
    if f.help {
        usage();
        return 0;
    }
    if f.version {
        println!("doozer {VERSION}");
        return 0;
    }
    let Some(name) = rest.first() else {
        eprintln!("{argv0}: missing command");
        usage();
        return 127;
    };
    let Some(cmd) = commands::find(name) else {
        eprintln!("Unknown command: {name}");
        usage();
        return 127;
    };
    let args = match flags::parse(&mut f, &rest[1..]) {
        Ok(r) => r,
        Err(e) => return flag_error(e, &usage),
    };
    if f.help {
        print!("{}", commands::help(argv0, cmd));
        return 0;
    }
    if args.len() != cmd.nargs {
        eprintln!("{}: wrong number of arguments", cmd.name);
        print!("{}", commands::help(argv0, cmd));
        return 127;
    }
    if cmd.name == "help" {
        let Some(target) = commands::find(&args[0]) else {
            eprintln!("Unknown command: {}", args[0]);
            usage();
            return 127;
        };
        print!("{}", commands::help(argv0, target));
        return 0;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(if cmd.name == "bench" { 4 } else { 1 })
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return 2;
        }
    };
    match rt.block_on(execute(cmd, &args, &f)) {
        Ok(()) => 0,
        Err(Fail::Exit(code)) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            match e {
                Fail::Client(c) if c.is_rev_mismatch() => 1,
                _ => 2,
            }
        }
    }
}

/// Go's `flag` with ExitOnError: message, usage, exit 2 (`-help` prints usage, exit 0).
fn flag_error(e: FlagError, usage: &dyn Fn()) -> i32 {
    if matches!(&e, FlagError::Unknown(n) if n == "help") {
        usage();
        return 0;
    }
    eprintln!("{e}");
    usage();
    2
}

async fn execute(cmd: &Cmd, args: &[String], f: &Flags) -> Result<(), Fail> {
    match cmd.name {
        "get" => get(f, &args[0]).await,
        "set" => set(f, &args[0], &args[1]).await,
        "add" => set(f, &args[0], "0").await,
        "del" => {
            let rev = atoi(&args[1])?;
            dial(f).await?.del(&args[0], rev).await?;
            Ok(())
        }
        "touch" => {
            let c = dial(f).await?;
            let (body, rev) = c.get(&args[0], None).await?;
            c.set(&args[0], rev, body).await?;
            Ok(())
        }
        "stat" => stat(f, &args[0]).await,
        "rev" => {
            let rev = dial(f).await?.rev().await?;
            if f.json {
                json_line(&json!({ "rev": rev }))?;
            } else {
                out(format!("{rev}\n").as_bytes())?;
            }
            Ok(())
        }
        "self" => {
            let id = dial(f).await?.self_id().await?;
            if f.json {
                json_line(&json!({ "id": id }))?;
            } else {
                out(id.as_bytes())?;
            }
            Ok(())
        }
        "nop" => Ok(dial(f).await?.nop().await?),
        "find" => find(f, &args[0]).await,
        "ls" => ls(f, &args[0]).await,
        "wait" => wait(f, &args[0]).await,
        "watch" => watch(f, &args[0]).await,
        "snapshot" => crate::snapshot::run(f, &args[0], &args[1]).await,
        "bench" => crate::bench::run(f, &args[0]).await,
        other => Err(Fail::Msg(format!("command {other} not implemented"))),
    }
}

/// Connects as `-a`, `-b` and the TLS flags say.
pub async fn dial(f: &Flags) -> Result<Client, Fail> {
    let mut opts = ClientOptions::default();
    if !f.tls_ca.is_empty() {
        opts.tls = Some(TlsOptions {
            ca_file: f.tls_ca.clone().into(),
            cert_file: (!f.tls_cert.is_empty()).then(|| f.tls_cert.clone().into()),
            key_file: (!f.tls_key.is_empty()).then(|| f.tls_key.clone().into()),
            server_name: None,
        });
    } else if !f.tls_cert.is_empty() || !f.tls_key.is_empty() {
        return Err(Fail::Msg(
            "tls: -tls-cert and -tls-key need -tls-ca".to_owned(),
        ));
    }
    Ok(Client::connect_boot(&f.uri, &f.boot_uri, opts).await?)
}

/// The original's `mustAtoi64`, with Go's error text.
fn atoi(s: &str) -> Result<i64, Fail> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<i64>() {
        Ok(n) if ok => Ok(n),
        _ if ok => Err(Fail::Msg(format!(
            "strconv.ParseInt: parsing {s:?}: value out of range"
        ))),
        _ => Err(Fail::Msg(format!(
            "strconv.ParseInt: parsing {s:?}: invalid syntax"
        ))),
    }
}

/// `-r`, or the current revision when it is -1.
pub async fn rev_or_current(c: &Client, f: &Flags) -> Result<i64, Fail> {
    if f.rev == -1 {
        Ok(c.rev().await?)
    } else {
        Ok(f.rev)
    }
}

async fn get(f: &Flags, path: &str) -> Result<(), Fail> {
    let (body, rev) = dial(f).await?.get(path, None).await?;
    if f.json {
        let mut m = Map::new();
        m.insert("path".into(), json!(path));
        m.insert("rev".into(), json!(rev));
        json_line(&with_value(m, &body))?;
    } else {
        out(&body)?;
    }
    Ok(())
}

async fn set(f: &Flags, path: &str, rev: &str) -> Result<(), Fail> {
    let rev = atoi(rev)?;
    // Dial before reading stdin, as the original did: a dead cluster fails fast.
    let c = dial(f).await?;
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    let new_rev = c.set(path, rev, Bytes::from(body)).await?;
    if f.json {
        json_line(&json!({ "rev": new_rev }))?;
    } else {
        out(format!("{new_rev}\n").as_bytes())?;
    }
    Ok(())
}

async fn stat(f: &Flags, path: &str) -> Result<(), Fail> {
    let st = dial(f).await?.stat(path, None).await?;
    if !st.exists() {
        eprintln!("No such file or directory: {path}");
        return Err(Fail::Exit(2));
    }
    if f.json {
        json_line(&json!({ "path": path, "rev": st.rev, "len": st.len, "dir": st.is_dir() }))?;
    } else if st.is_dir() {
        out(format!("d {}\n", st.len).as_bytes())?;
    } else {
        out(format!("{} {}\n", st.rev, st.len).as_bytes())?;
    }
    Ok(())
}

/// Pre-order walk at one revision, directories included. Errors go to stderr and do not
/// change the exit status, as in the original.
async fn find(f: &Flags, root: &str) -> Result<(), Fail> {
    let c = dial(f).await?;
    let rev = rev_or_current(&c, f).await?;
    let st = match c.stat(root, Some(rev)).await {
        Ok(st) => st,
        Err(e) => {
            eprintln!("{e}");
            return Ok(());
        }
    };
    if !st.exists() {
        eprintln!("{}", ErrCode::NoEnt);
        return Ok(());
    }
    // A stack of (path, stat), children pushed in reverse so they pop in sorted order.
    let mut stack = vec![(root.to_owned(), st)];
    while let Some((path, st)) = stack.pop() {
        if f.json {
            json_line(&json!({ "path": path, "dir": st.is_dir(), "rev": st.rev, "len": st.len }))?;
        } else {
            out(format!("{path}\n").as_bytes())?;
        }
        if !st.is_dir() {
            continue;
        }
        let names = match c.getdir_all(&path, Some(rev)).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("{e}");
                continue;
            }
        };
        let children: Vec<String> = names
            .iter()
            .map(|n| doozer_proto::path::join(&path, n))
            .collect();
        let stats = futures::future::join_all(children.iter().map(|p| c.stat(p, Some(rev)))).await;
        for (p, st) in children.into_iter().zip(stats).rev() {
            match st {
                Ok(st) => stack.push((p, st)),
                Err(e) => eprintln!("{e}"),
            }
        }
    }
    Ok(())
}

async fn ls(f: &Flags, path: &str) -> Result<(), Fail> {
    let c = dial(f).await?;
    let rev = (f.rev != -1).then_some(f.rev);
    let names = c.getdir_all(path, rev).await?;
    if f.json {
        json_line(&json!({ "path": path, "entries": names }))?;
    } else {
        let mut s = String::new();
        for n in names {
            s.push_str(&n);
            s.push('\n');
        }
        out(s.as_bytes())?;
    }
    Ok(())
}

/// `<path> <rev> <set|del> <len>\n<body>\n`, or one JSON line.
fn print_event(f: &Flags, ev: &Event) -> Result<(), Fail> {
    if f.json {
        let mut m = Map::new();
        m.insert("path".into(), json!(ev.path));
        m.insert("rev".into(), json!(ev.rev));
        let kind = if ev.is_nop() { "nop" } else { ev.kind() };
        m.insert("kind".into(), json!(kind));
        m.insert("len".into(), json!(ev.value.len()));
        json_line(&with_value(m, &ev.value))?;
    } else {
        let mut rec =
            format!("{} {} {} {}\n", ev.path, ev.rev, ev.kind(), ev.value.len()).into_bytes();
        rec.extend_from_slice(&ev.value);
        rec.push(b'\n');
        out(&rec)?;
    }
    Ok(())
}

async fn wait(f: &Flags, glob: &str) -> Result<(), Fail> {
    let c = dial(f).await?;
    let rev = rev_or_current(&c, f).await?;
    let t = (f.timeout > Duration::ZERO).then_some(f.timeout);
    let ev = match c.with_timeout(t).wait(glob, rev).await {
        Ok(ev) => ev,
        Err(ClientError::Timeout(_)) => return Err(Fail::Msg("wait timeout".into())),
        Err(e) => return Err(e.into()),
    };
    print_event(f, &ev)
}

async fn watch(f: &Flags, glob: &str) -> Result<(), Fail> {
    let c = dial(f).await?;
    let rev = rev_or_current(&c, f).await?;
    let mut events = c.watch(glob, rev);
    while let Some(ev) = events.next().await {
        print_event(f, &ev?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_uses_gos_messages() {
        assert_eq!(atoi("-1").unwrap(), -1);
        assert_eq!(atoi("42").unwrap(), 42);
        assert_eq!(
            atoi("abc").unwrap_err().to_string(),
            "strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            atoi("99999999999999999999").unwrap_err().to_string(),
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range"
        );
    }
}
