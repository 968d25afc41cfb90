//! `doozer:` URIs (doozer-protocol.md §4): `doozer:?ca=host:port&ca=...&sk=secret&cn=name`.
//!
//! * The URI must start exactly with `doozer:?`; the rest is a URL query string
//!   (`&`-separated `key=value` pairs, `%XX` escapes, `+` for space), in any order.
//! * `ca` (repeatable): a cluster address. Unlike the Go client we default the port to
//!   [`DEFAULT_PORT`] when it is absent (`ca=127.0.0.1` means `127.0.0.1:8046`), a deliberate
//!   improvement the original's docs promised but its client never did.
//! * `sk`: the secret to present with ACCESS after connecting.
//! * `cn`: the cluster name.
//! * Other parameters (such as the documented but never implemented `un`) are ignored, as
//!   the Go client ignored them. For a repeated `sk` or `cn` the first wins, as in Go.
//! * A URI with neither `ca` nor `cn` is invalid.
//!
//! Every error displays as `invalid uri: <reason>`.
//!
//! ```
//! use doozer_proto::uri::DoozerUri;
//! let u = DoozerUri::parse("doozer:?ca=10.0.0.1:8041&ca=db2&sk=s%20cret&cn=prod").unwrap();
//! assert_eq!(u.addrs, ["10.0.0.1:8041", "db2:8046"]);
//! assert_eq!(u.secret.as_deref(), Some("s cret"));
//! assert_eq!(u.cluster.as_deref(), Some("prod"));
//! assert_eq!(DoozerUri::parse("ca=x").unwrap_err().to_string(),
//!            "invalid uri: must start with \"doozer:?\"");
//! ```

use std::fmt;
use std::str::FromStr;

/// Port used when a `ca` address has none.
pub const DEFAULT_PORT: u16 = 8046;

/// The URI clients use when given none (the Go CLI's default).
pub const DEFAULT_URI: &str = "doozer:?ca=127.0.0.1:8046";

/// The required prefix.
const PREFIX: &str = "doozer:?";

/// Why a URI or address was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Does not start with `doozer:?`.
    #[error("invalid uri: must start with \"doozer:?\"")]
    Scheme,
    /// A `%` not followed by two hex digits, or escapes that decode to invalid UTF-8.
    #[error("invalid uri: bad escape in {0:?}")]
    Escape(String),
    /// A `ca` value that is not `host`, `host:port`, `[v6]` or `[v6]:port`.
    #[error("invalid uri: bad address {addr:?}: {reason}")]
    Addr {
        /// The address as given (decoded).
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Neither `ca` nor `cn` given (or no address given to [`DoozerUri::from_addrs`]).
    #[error("invalid uri: no ca or cn parameter")]
    NoAddress,
}

/// A parsed `doozer:` URI.
///
/// `Display` writes it back as a URI, secret included; `Debug` hides the secret so the value
/// can be logged.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DoozerUri {
    /// Cluster addresses, each `host:port` (or `[v6]:port`), in the order given.
    pub addrs: Vec<String>,
    /// The `sk` secret.
    pub secret: Option<String>,
    /// The `cn` cluster name.
    pub cluster: Option<String>,
}

impl DoozerUri {
    /// Parses a `doozer:?...` URI (see the module docs).
    pub fn parse(uri: &str) -> Result<DoozerUri, UriError> {
        let query = uri.strip_prefix(PREFIX).ok_or(UriError::Scheme)?;
        let mut out = DoozerUri::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = unescape(key)?;
            match key.as_str() {
                "ca" => out.addrs.push(normalize_addr(&unescape(value)?)?),
                "sk" if out.secret.is_none() => out.secret = Some(unescape(value)?),
                "cn" if out.cluster.is_none() => out.cluster = Some(unescape(value)?),
                _ => {}
            }
        }
        if out.addrs.is_empty() && out.cluster.is_none() {
            return Err(UriError::NoAddress);
        }
        Ok(out)
    }

    /// A URI for these addresses, with the same address rules as `ca` (port defaults to
    /// [`DEFAULT_PORT`]). At least one address is required.
    ///
    /// ```
    /// use doozer_proto::uri::DoozerUri;
    /// let u = DoozerUri::from_addrs(["127.0.0.1:8041", "::1"]).unwrap();
    /// assert_eq!(u.to_string(), "doozer:?ca=127.0.0.1:8041&ca=[::1]:8046");
    /// ```
    pub fn from_addrs<I, S>(addrs: I) -> Result<DoozerUri, UriError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let addrs = addrs
            .into_iter()
            .map(|a| normalize_addr(a.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(UriError::NoAddress);
        }
        Ok(DoozerUri {
            addrs,
            secret: None,
            cluster: None,
        })
    }

    /// Sets the secret.
    pub fn with_secret(mut self, secret: impl Into<String>) -> DoozerUri {
        self.secret = Some(secret.into());
        self
    }

    /// Sets the cluster name.
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> DoozerUri {
        self.cluster = Some(cluster.into());
        self
    }
}

impl FromStr for DoozerUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<DoozerUri, UriError> {
        DoozerUri::parse(s)
    }
}

impl fmt::Display for DoozerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        let mut sep = "";
        let params = self
            .addrs
            .iter()
            .map(|a| ("ca", a))
            .chain(self.cluster.iter().map(|c| ("cn", c)))
            .chain(self.secret.iter().map(|s| ("sk", s)));
        for (key, value) in params {
            write!(f, "{sep}{key}=")?;
            write_escaped(f, value)?;
            sep = "&";
        }
        Ok(())
    }
}

impl fmt::Debug for DoozerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoozerUri")
            .field("addrs", &self.addrs)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// Writes `s` for a query value: unreserved characters, `:` and `[ ]` (for addresses) as they
/// are, everything else `%XX`.
fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b) {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

/// Decodes a query key or value like Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte,
/// and a malformed escape is an error. (The `percent-encoding` crates accept malformed
/// escapes silently; we want the strict behaviour, so this is written out.)
fn unescape(s: &str) -> Result<String, UriError> {
    let bad = || UriError::Escape(s.to_owned());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hi = (hex[0] as char).to_digit(16).ok_or_else(bad)?;
                let lo = (hex[1] as char).to_digit(16).ok_or_else(bad)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// `host` → `host:8046`, `host:port` checked, bare IPv6 `::1` → `[::1]:8046`.
fn normalize_addr(addr: &str) -> Result<String, UriError> {
    let err = |reason| UriError::Addr {
        addr: addr.to_owned(),
        reason,
    };
    if addr.is_empty() {
        return Err(err("empty"));
    }
    if addr
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/?#@&=".contains(c))
    {
        return Err(err("not a host or host:port"));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| err("unclosed '['"))?;
        if !is_ipv6(host) {
            return Err(err("bad IPv6 host"));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| err("junk after ']'"))?),
        };
        (format!("[{host}]"), port)
    } else if addr.contains(['[', ']']) {
        return Err(err("stray bracket"));
    } else {
        match addr.matches(':').count() {
            0 => (addr.to_owned(), None),
            1 => {
                let (host, port) = addr.split_once(':').unwrap_or((addr, ""));
                if host.is_empty() {
                    return Err(err("empty host"));
                }
                (host.to_owned(), Some(port))
            }
            // Several colons and no brackets: a bare IPv6 address, which cannot carry a port.
            _ if is_ipv6(addr) => (format!("[{addr}]"), None),
            _ => return Err(err("too many ':' (IPv6 needs [brackets] to carry a port)")),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse() {
            Ok(0) | Err(_) => return Err(err("port out of range")),
            Ok(n) => n,
        },
        Some(_) => return Err(err("bad port")),
    };
    Ok(format!("{host}:{port}"))
}

/// An IPv6 address, optionally with a `%zone` suffix (which std's parser does not take).
fn is_ipv6(host: &str) -> bool {
    let (ip, zone) = host.split_once('%').unwrap_or((host, "x"));
    !zone.is_empty() && ip.parse::<std::net::Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_parameters() {
        let u = DoozerUri::parse("doozer:?ca=127.0.0.1:8046").unwrap();
        assert_eq!(u.addrs, ["127.0.0.1:8046"]);
        assert_eq!((u.secret, u.cluster), (None, None));

        let u = DoozerUri::parse("doozer:?cn=prod&ca=a:1&sk=k&ca=b:2&un=XYZ&ca=c").unwrap();
        assert_eq!(u.addrs, ["a:1", "b:2", "c:8046"]);
        assert_eq!(u.secret.as_deref(), Some("k"));
        assert_eq!(u.cluster.as_deref(), Some("prod"));
        assert_eq!(
            DEFAULT_URI.parse::<DoozerUri>().unwrap().addrs,
            ["127.0.0.1:8046"]
        );
    }

    #[test]
    fn cluster_name_alone_is_enough() {
        let u = DoozerUri::parse("doozer:?cn=local").unwrap();
        assert!(u.addrs.is_empty());
        assert_eq!(u.cluster.as_deref(), Some("local"));
    }

    #[test]
    fn first_secret_and_cluster_win() {
        let u = DoozerUri::parse("doozer:?ca=a&sk=one&sk=two&cn=x&cn=y").unwrap();
        assert_eq!(u.secret.as_deref(), Some("one"));
        assert_eq!(u.cluster.as_deref(), Some("x"));
    }

    #[test]
    fn percent_decoding() {
        let u = DoozerUri::parse("doozer:?ca=h%3A9&sk=a%2Bb+c%26d%3d%C3%A9&%63n=n").unwrap();
        assert_eq!(u.addrs, ["h:9"]);
        assert_eq!(u.secret.as_deref(), Some("a+b c&d=é"));
        assert_eq!(u.cluster.as_deref(), Some("n"));
        // Empty values and pairs are fine.
        let u = DoozerUri::parse("doozer:?&ca=h&&sk=&").unwrap();
        assert_eq!(u.secret.as_deref(), Some(""));
        for bad in [
            "doozer:?ca=h&sk=%",
            "doozer:?ca=h&sk=%4",
            "doozer:?ca=h&sk=%zz",
            "doozer:?ca=h&sk=%ff",
        ] {
            assert!(
                matches!(DoozerUri::parse(bad), Err(UriError::Escape(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_bad_uris() {
        for (bad, want) in [
            ("", UriError::Scheme),
            ("doozer:", UriError::Scheme),
            ("doozer?:ca=a:1", UriError::Scheme), // the man page's typo
            ("DOOZER:?ca=a:1", UriError::Scheme),
            ("127.0.0.1:8046", UriError::Scheme),
            ("doozer:?", UriError::NoAddress),
            ("doozer:?sk=x", UriError::NoAddress),
            ("doozer:?un=x&foo=bar", UriError::NoAddress),
        ] {
            assert_eq!(DoozerUri::parse(bad), Err(want), "{bad:?}");
        }
        let e = DoozerUri::parse("doozer:?ca=").unwrap_err();
        assert!(matches!(
            e,
            UriError::Addr {
                reason: "empty",
                ..
            }
        ));
        for e in [
            UriError::Scheme,
            UriError::NoAddress,
            UriError::Escape("%".into()),
            e,
        ] {
            assert!(e.to_string().starts_with("invalid uri"), "{e}");
        }
    }

    #[test]
    fn address_rules() {
        let ok = |a: &str| normalize_addr(a).unwrap_or_else(|e| panic!("{a}: {e}"));
        assert_eq!(ok("host"), "host:8046");
        assert_eq!(ok("host:1"), "host:1");
        assert_eq!(ok("10.1.2.3:65535"), "10.1.2.3:65535");
        assert_eq!(ok("[::1]"), "[::1]:8046");
        assert_eq!(ok("[::1]:8041"), "[::1]:8041");
        assert_eq!(ok("::1"), "[::1]:8046");
        assert_eq!(ok("fe80::1%eth0"), "[fe80::1%eth0]:8046");
        assert_eq!(ok("my-host.example_1"), "my-host.example_1:8046");
        for bad in [
            "", ":8046", "h:", "h:0", "h:65536", "h:-1", "h:+1", "h:8a", "[::1", "[]:1", "[::1]x",
            "[::1]:", "a]b", "[host]:1", "1:2:3", "::1%", "h /x", "h/x", "user@h:1", "h:1:",
            "[[::1]]",
        ] {
            assert!(normalize_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn from_addrs_and_display_round_trip() {
        assert_eq!(
            DoozerUri::from_addrs(Vec::<String>::new()),
            Err(UriError::NoAddress)
        );
        assert!(DoozerUri::from_addrs(["ok:1", "bad:x"]).is_err());
        let u = DoozerUri::from_addrs(["a:1", "b"])
            .unwrap()
            .with_secret("p&s=w rd/é")
            .with_cluster("prod");
        let s = u.to_string();
        assert_eq!(
            s,
            "doozer:?ca=a:1&ca=b:8046&cn=prod&sk=p%26s%3Dw%20rd%2F%C3%A9"
        );
        assert_eq!(DoozerUri::parse(&s).unwrap(), u);
        let v6 = DoozerUri::from_addrs(["[::1]:9"]).unwrap();
        assert_eq!(DoozerUri::parse(&v6.to_string()).unwrap(), v6);
    }

    #[test]
    fn debug_hides_the_secret() {
        let u = DoozerUri::parse("doozer:?ca=a&sk=hunter2").unwrap();
        let d = format!("{u:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("<redacted>") && d.contains("a:8046"), "{d}");
    }
}
