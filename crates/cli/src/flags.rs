//! The global flag set, parsed the way Go's `flag` package parsed the original's: single or
//! double dash, `-f value` or `-f=value`, stopping at the first non-flag argument or `--`.
//! The same set is parsed again on the arguments after the command, so
//! `doozer wait -r 5 /x` and `doozer -r 5 wait /x` mean the same.
//!
//! Why not clap: scripts written for the Go original must keep working byte for byte, and
//! clap cannot parse that syntax identically. Go's `flag` takes long names after a single
//! dash (`-json`, `-tls-ca`, `-value-size`, as well as `--json`), which clap has no mode
//! for; it stops at the first non-flag word, so `doozer del /x -1` passes `-1` as an
//! argument and `doozer set /x 5 -r 3` is a wrong argument count, where clap would take
//! `-1`/`-r 3` as flags; and the original's flag errors, usage layout (`PrintDefaults`) and
//! exit status 2 are part of the contract. The parser is small and fully tested below.

use std::fmt::Write as _;
use std::time::Duration;

/// The default `-a`, used when `DOOZER_URI` is unset.
pub const DEFAULT_URI: &str = "doozer:?ca=127.0.0.1:8046";

/// Every flag's value.
#[derive(Debug, Clone)]
pub struct Flags {
    /// `-a`: cluster URI.
    pub uri: String,
    /// `-b`: DzNS boot URI.
    pub boot_uri: String,
    /// `-r`: revision for find, wait, watch, ls, snapshot save (-1 = current).
    pub rev: i64,
    /// `-t`: wait timeout (zero = none).
    pub timeout: Duration,
    /// `-h`.
    pub help: bool,
    /// `-v`.
    pub version: bool,
    /// `-json`: machine-readable output.
    pub json: bool,
    /// `-tls-ca`: CA file; turns TLS on.
    pub tls_ca: String,
    /// `-tls-cert`: client certificate file.
    pub tls_cert: String,
    /// `-tls-key`: client key file.
    pub tls_key: String,
    /// `-clients`: bench connections.
    pub clients: i64,
    /// `-duration`: bench run time (when `-ops` is 0).
    pub duration: Duration,
    /// `-ops`: bench operation count (0 = run for `-duration`).
    pub ops: i64,
    /// `-value-size`: bench value bytes.
    pub value_size: i64,
    /// `-keys`: bench key space.
    pub keys: i64,
}

impl Flags {
    /// Defaults, with `-a` and `-b` taken from `DOOZER_URI` / `DOOZER_BOOT_URI` when set.
    pub fn from_env(uri: Option<String>, boot_uri: Option<String>) -> Flags {
        Flags {
            uri: uri
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_URI.to_owned()),
            boot_uri: boot_uri.unwrap_or_default(),
            rev: -1,
            timeout: Duration::ZERO,
            help: false,
            version: false,
            json: false,
            tls_ca: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            clients: 10,
            duration: Duration::from_secs(10),
            ops: 0,
            value_size: 100,
            keys: 1000,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Dur,
    Bool,
}

struct Def {
    name: &'static str,
    kind: Kind,
    usage: &'static str,
    /// Shown as `(default ...)` when not the zero value, as Go does.
    default: &'static str,
}

/// Sorted by name, as Go prints them.
const DEFS: &[Def] = &[
    Def {
        name: "a",
        kind: Kind::Str,
        usage: "the cluster uri",
        default: "\"doozer:?ca=127.0.0.1:8046\"",
    },
    Def {
        name: "b",
        kind: Kind::Str,
        usage: "the DzNS uri",
        default: "",
    },
    Def {
        name: "clients",
        kind: Kind::Int,
        usage: "bench: number of client connections",
        default: "10",
    },
    Def {
        name: "duration",
        kind: Kind::Dur,
        usage: "bench: how long to run (unless -ops is given)",
        default: "10s",
    },
    Def {
        name: "h",
        kind: Kind::Bool,
        usage: "show help",
        default: "",
    },
    Def {
        name: "json",
        kind: Kind::Bool,
        usage: "print results as JSON",
        default: "",
    },
    Def {
        name: "keys",
        kind: Kind::Int,
        usage: "bench: number of distinct keys",
        default: "1000",
    },
    Def {
        name: "ops",
        kind: Kind::Int,
        usage: "bench: total operations (0: run for -duration)",
        default: "",
    },
    Def {
        name: "r",
        kind: Kind::Int,
        usage: "request rev",
        default: "-1",
    },
    Def {
        name: "t",
        kind: Kind::Dur,
        usage: "wait timeout",
        default: "",
    },
    Def {
        name: "tls-ca",
        kind: Kind::Str,
        usage: "CA certificate file (PEM); enables TLS",
        default: "",
    },
    Def {
        name: "tls-cert",
        kind: Kind::Str,
        usage: "client certificate file (PEM)",
        default: "",
    },
    Def {
        name: "tls-key",
        kind: Kind::Str,
        usage: "client private key file (PEM)",
        default: "",
    },
    Def {
        name: "v",
        kind: Kind::Bool,
        usage: "print version string",
        default: "",
    },
    Def {
        name: "value-size",
        kind: Kind::Int,
        usage: "bench: value size in bytes",
        default: "100",
    },
];

/// A flag error; `Display` is Go's wording.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    /// `-x` where no flag x exists.
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    /// `-a` as the last argument.
    #[error("flag needs an argument: -{0}")]
    NeedsArg(String),
    /// `-r x`.
    #[error("invalid value {value:?} for flag -{name}: parse error")]
    BadValue {
        /// Flag name.
        name: String,
        /// The value given.
        value: String,
    },
    /// `-h=maybe`.
    #[error("invalid boolean value {value:?} for -{name}: parse error")]
    BadBool {
        /// Flag name.
        name: String,
        /// The value given.
        value: String,
    },
    /// `---x`, `-=x`.
    #[error("bad flag syntax: {0}")]
    Syntax(String),
}

/// Parses flags from the front of `args` into `flags`; returns the remaining arguments.
pub fn parse(flags: &mut Flags, args: &[String]) -> Result<Vec<String>, FlagError> {
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        if s.len() < 2 || !s.starts_with('-') {
            break;
        }
        let mut name = &s[1..];
        if let Some(n) = name.strip_prefix('-') {
            if n.is_empty() {
                i += 1; // "--" ends the flags and is consumed.
                break;
            }
            name = n;
        }
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(FlagError::Syntax(s.clone()));
        }
        i += 1;
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (name, None),
        };
        let def = DEFS
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| FlagError::Unknown(name.to_owned()))?;
        if def.kind == Kind::Bool {
            let v = match inline.as_deref() {
                None => true,
                Some(v) => parse_bool(v).ok_or_else(|| FlagError::BadBool {
                    name: name.to_owned(),
                    value: v.to_owned(),
                })?,
            };
            match name {
                "h" => flags.help = v,
                "v" => flags.version = v,
                _ => flags.json = v,
            }
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let Some(v) = args.get(i) else {
                    return Err(FlagError::NeedsArg(name.to_owned()));
                };
                i += 1;
                v.clone()
            }
        };
        let bad = || FlagError::BadValue {
            name: name.to_owned(),
            value: value.clone(),
        };
        match def.kind {
            Kind::Str => {
                let slot = match name {
                    "a" => &mut flags.uri,
                    "b" => &mut flags.boot_uri,
                    "tls-ca" => &mut flags.tls_ca,
                    "tls-cert" => &mut flags.tls_cert,
                    _ => &mut flags.tls_key,
                };
                *slot = value.clone();
            }
            Kind::Int => {
                let n = parse_int(&value).ok_or_else(bad)?;
                match name {
                    "r" => flags.rev = n,
                    "clients" => flags.clients = n,
                    "ops" => flags.ops = n,
                    "value-size" => flags.value_size = n,
                    _ => flags.keys = n,
                }
            }
            Kind::Dur => {
                let d = crate::duration::parse(&value).ok_or_else(bad)?;
                match name {
                    "t" => flags.timeout = d,
                    _ => flags.duration = d,
                }
            }
            Kind::Bool => unreachable!("handled above"),
        }
    }
    Ok(args[i..].to_vec())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` for the common forms (decimal, with sign).
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The flag list in Go's `PrintDefaults` format.
pub fn defaults_text() -> String {
    let mut out = String::new();
    for d in DEFS {
        let mut line = format!("  -{}", d.name);
        match d.kind {
            Kind::Str => line.push_str(" string"),
            Kind::Int => line.push_str(" int"),
            Kind::Dur => line.push_str(" duration"),
            Kind::Bool => {}
        }
        // Go: names of one letter (and no type) share the line with the usage.
        if line.len() <= 4 {
            line.push('\t');
        } else {
            line.push_str("\n    \t");
        }
        line.push_str(d.usage);
        if !d.default.is_empty() {
            let _ = write!(line, " (default {})", d.default);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_style_parsing() {
        let mut f = Flags::from_env(None, None);
        let rest = parse(
            &mut f,
            &args(&["-r", "5", "--t=1s", "-json", "wait", "-r", "7"]),
        )
        .unwrap();
        assert_eq!(rest, ["wait", "-r", "7"]);
        assert_eq!(
            (f.rev, f.timeout, f.json),
            (5, Duration::from_secs(1), true)
        );
        let rest = parse(&mut f, &rest[1..]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(f.rev, 7);
        let rest = parse(&mut f, &args(&["--", "-x"])).unwrap();
        assert_eq!(rest, ["-x"]);
        let rest = parse(&mut f, &args(&["-", "x"])).unwrap();
        assert_eq!(rest, ["-", "x"]);
        assert_eq!(
            parse(&mut f, &args(&["-r", "-1"])).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(f.rev, -1);
    }

    #[test]
    fn errors_use_gos_words() {
        let mut f = Flags::from_env(None, None);
        let e = |a: &[&str], f: &mut Flags| parse(f, &args(a)).unwrap_err().to_string();
        assert_eq!(e(&["-x"], &mut f), "flag provided but not defined: -x");
        assert_eq!(e(&["-a"], &mut f), "flag needs an argument: -a");
        assert_eq!(
            e(&["-r", "x"], &mut f),
            "invalid value \"x\" for flag -r: parse error"
        );
        assert_eq!(
            e(&["-t", "5"], &mut f),
            "invalid value \"5\" for flag -t: parse error"
        );
        assert_eq!(
            e(&["-h=maybe"], &mut f),
            "invalid boolean value \"maybe\" for -h: parse error"
        );
        assert_eq!(e(&["---a"], &mut f), "bad flag syntax: ---a");
    }

    #[test]
    fn env_defaults() {
        assert_eq!(Flags::from_env(None, None).uri, DEFAULT_URI);
        assert_eq!(Flags::from_env(Some(String::new()), None).uri, DEFAULT_URI);
        assert_eq!(
            Flags::from_env(Some("doozer:?ca=x:1".into()), None).uri,
            "doozer:?ca=x:1"
        );
    }

    #[test]
    fn defaults_text_is_gos_layout() {
        let t = defaults_text();
        assert!(
            t.starts_with(
                "  -a string\n    \tthe cluster uri (default \"doozer:?ca=127.0.0.1:8046\")\n"
            ),
            "{t}"
        );
        assert!(t.contains("\n  -h\tshow help\n"), "{t}");
        assert!(
            t.contains("\n  -r int\n    \trequest rev (default -1)\n"),
            "{t}"
        );
        assert!(t.contains("\n  -t duration\n    \twait timeout\n"), "{t}");
    }
}
