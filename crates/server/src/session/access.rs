//! Access rights and the secrets that grant them (doozer-protocol.md §2.8).
//!
//! The original's rules, kept exactly: a new connection is treated as if it had sent the
//! empty secret; ACCESS compares its value with the read-write secret first, then the
//! read-only one; an unset secret is the empty string. So with no secrets everybody may
//! read and write, with only the RW secret anonymous clients may read, and a failed ACCESS
//! keeps the rights the connection already had.

use doozer_proto::msg::Verb;

/// Environment variable holding the read-write secret.
pub const RW_SECRET_ENV: &str = "DOOZER_RWSECRET";
/// Environment variable holding the read-only secret.
pub const RO_SECRET_ENV: &str = "DOOZER_ROSECRET";

/// What a connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// May use GET, GETDIR, STAT, WALK and WAIT.
    pub read: bool,
    /// May use SET, DEL and NOP.
    pub write: bool,
}

impl Rights {
    /// No rights at all (REV, SELF and ACCESS still work).
    pub const NONE: Rights = Rights {
        read: false,
        write: false,
    };
    /// Read only.
    pub const READ: Rights = Rights {
        read: true,
        write: false,
    };
    /// Read and write.
    pub const ALL: Rights = Rights {
        read: true,
        write: true,
    };

    /// Both sets of rights: a granted right is never taken away again.
    pub fn union(self, other: Rights) -> Rights {
        Rights {
            read: self.read || other.read,
            write: self.write || other.write,
        }
    }

    /// Do these rights allow `verb`? REV, SELF and ACCESS need none; SET, DEL and NOP need
    /// write access; the rest need read access.
    pub fn allow(self, verb: Verb) -> bool {
        match verb {
            Verb::Rev | Verb::SelfId | Verb::Access => true,
            Verb::Set | Verb::Del | Verb::Nop => self.write,
            Verb::Get | Verb::Getdir | Verb::Stat | Verb::Walk | Verb::Wait => self.read,
        }
    }
}

/// The configured secrets. `None` behaves as the empty secret, as in the original.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// Grants read and write.
    pub rw: Option<Vec<u8>>,
    /// Grants read.
    pub ro: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    // Never print a secret, only whether it is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("rw", &self.rw.as_ref().map(|_| "<set>"))
            .field("ro", &self.ro.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Secrets {
    /// Reads `DOOZER_RWSECRET` and `DOOZER_ROSECRET`; an empty variable counts as unset.
    pub fn from_env() -> Secrets {
        let var = |k: &str| {
            std::env::var_os(k)
                .map(|v| v.into_encoded_bytes())
                .filter(|v| !v.is_empty())
        };
        Secrets {
            rw: var(RW_SECRET_ENV),
            ro: var(RO_SECRET_ENV),
        }
    }

    /// Rights a new connection starts with: those of the empty secret.
    pub fn initial(&self) -> Rights {
        self.grant(b"").unwrap_or(Rights::NONE)
    }

    /// The rights `pass` grants, RW secret first; `None` if it matches neither.
    pub fn grant(&self, pass: &[u8]) -> Option<Rights> {
        let rw = self.rw.as_deref().unwrap_or_default();
        let ro = self.ro.as_deref().unwrap_or_default();
        if secret_eq(pass, rw) {
            Some(Rights::ALL)
        } else if secret_eq(pass, ro) {
            Some(Rights::READ)
        } else {
            None
        }
    }
}

/// Compares without an early exit on the first differing byte, so the time taken does not
/// tell an attacker how much of a guess was right (the length still shows).
fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rw: Option<&str>, ro: Option<&str>) -> Secrets {
        Secrets {
            rw: rw.map(|x| x.as_bytes().to_vec()),
            ro: ro.map(|x| x.as_bytes().to_vec()),
        }
    }

    #[test]
    fn no_secrets_everyone_reads_and_writes() {
        let sec = s(None, None);
        assert_eq!(sec.initial(), Rights::ALL);
        assert_eq!(sec.grant(b""), Some(Rights::ALL));
        // The wire vector "access wrong secret": refused.
        assert_eq!(sec.grant(b"nope"), None);
    }

    #[test]
    fn only_rw_secret_gives_anonymous_read() {
        let sec = s(Some("rw"), None);
        assert_eq!(sec.initial(), Rights::READ);
        assert_eq!(sec.grant(b"rw"), Some(Rights::ALL));
        assert_eq!(sec.grant(b"r"), None);
        assert_eq!(sec.grant(b"rwx"), None);
    }

    #[test]
    fn only_ro_secret_gives_anonymous_everything() {
        let sec = s(None, Some("ro"));
        assert_eq!(sec.initial(), Rights::ALL);
        assert_eq!(sec.grant(b"ro"), Some(Rights::READ));
    }

    #[test]
    fn both_secrets_anonymous_gets_nothing() {
        let sec = s(Some("rw"), Some("ro"));
        assert_eq!(sec.initial(), Rights::NONE);
        assert_eq!(sec.grant(b"ro"), Some(Rights::READ));
        assert_eq!(sec.grant(b"rw"), Some(Rights::ALL));
        assert_eq!(sec.grant(b""), None);
    }

    #[test]
    fn rights_gate_verbs() {
        for v in Verb::ALL {
            let free = matches!(v, Verb::Rev | Verb::SelfId | Verb::Access);
            let write = matches!(v, Verb::Set | Verb::Del | Verb::Nop);
            assert_eq!(Rights::NONE.allow(*v), free, "{v}");
            assert_eq!(Rights::READ.allow(*v), !write, "{v}");
            assert!(Rights::ALL.allow(*v), "{v}");
        }
        assert_eq!(Rights::READ.union(Rights::NONE), Rights::READ);
        assert_eq!(Rights::NONE.union(Rights::ALL), Rights::ALL);
    }

    #[test]
    fn debug_hides_secrets() {
        let d = format!("{:?}", s(Some("hunter2"), None));
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("<set>"), "{d}");
    }
}
