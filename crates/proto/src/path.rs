//! Doozer paths: validation and splitting.
//!
//! A valid path matches `^/$` or `^(/[a-zA-Z0-9.\-]+)+$` (doozer-protocol.md §2.1): it starts
//! with `/`, has no empty component and no trailing `/`, and its components use only ASCII
//! letters, digits, `.` and `-`. We add a length limit, [`MAX_PATH`], which the original
//! lacked (it had an accidental one from its 3000-byte UDP datagrams).
//!
//! The helpers [`parent`], [`basename`], [`components`] and [`join`] assume a valid path; given
//! anything else they return something harmless and never panic.

use crate::msg::{ErrCode, ToErrCode};

/// Longest accepted path, in bytes.
pub const MAX_PATH: usize = 4096;

/// Why a path is invalid. Every variant maps to [`ErrCode::BadPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The empty string (the original crashed on it in GET and GETDIR).
    #[error("bad path: empty")]
    Empty,
    /// Longer than [`MAX_PATH`] bytes.
    #[error("bad path: {len} bytes, the limit is {MAX_PATH}")]
    TooLong {
        /// Length of the rejected path in bytes.
        len: usize,
    },
    /// Does not start with `/`.
    #[error("bad path: must start with '/'")]
    NotAbsolute,
    /// Has `//` or a trailing `/` (only the root may end in `/`).
    #[error("bad path: empty component at byte {offset}")]
    EmptyComponent {
        /// Byte offset of the empty component.
        offset: usize,
    },
    /// A character other than ASCII letters, digits, `.`, `-` and the `/` separator.
    #[error("bad path: character {ch:?} at byte {offset} is not allowed")]
    BadChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the path.
        offset: usize,
    },
}

impl ToErrCode for PathError {
    fn err_code(&self) -> ErrCode {
        ErrCode::BadPath
    }
}

/// Is `b` allowed inside a path component?
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// Checks `path` against the Doozer path grammar, with extra component bytes allowed by
/// `extra` (the glob grammar adds `*` and `?`). Shared by [`validate`] and `Glob::new`.
pub(crate) fn check(path: &str, extra: impl Fn(u8) -> bool) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return Err(PathError::Empty);
    }
    if bytes.len() > MAX_PATH {
        return Err(PathError::TooLong { len: bytes.len() });
    }
    if bytes[0] != b'/' {
        return Err(PathError::NotAbsolute);
    }
    if bytes.len() == 1 {
        return Ok(()); // the root
    }
    let mut prev_slash = false;
    for (offset, &b) in bytes.iter().enumerate() {
        if b == b'/' {
            if prev_slash {
                return Err(PathError::EmptyComponent { offset });
            }
            prev_slash = true;
        } else if is_name_byte(b) || extra(b) {
            prev_slash = false;
        } else {
            // Report the whole (possibly multi-byte) character, not a stray byte.
            let ch = path[offset..].chars().next().unwrap_or('\u{fffd}');
            return Err(PathError::BadChar { ch, offset });
        }
    }
    if prev_slash {
        return Err(PathError::EmptyComponent {
            offset: bytes.len(),
        });
    }
    Ok(())
}

/// Checks that `path` is a valid Doozer path (see the module docs).
///
/// ```
/// use doozer_proto::path::{validate, PathError};
/// assert!(validate("/").is_ok());
/// assert!(validate("/ctl/node/ABC/addr").is_ok());
/// assert!(matches!(validate("/a_b"), Err(PathError::BadChar { ch: '_', .. })));
/// assert!(matches!(validate("/a/"), Err(PathError::EmptyComponent { .. })));
/// ```
pub fn validate(path: &str) -> Result<(), PathError> {
    check(path, |_| false)
}

/// Is `path` valid? Shorthand for `validate(path).is_ok()`.
pub fn is_valid(path: &str) -> bool {
    validate(path).is_ok()
}

/// The directory holding `path`: `/a/b` → `/a`, `/a` → `/`, `/` → `None`.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" || path.is_empty() {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of `path`: `/a/b` → `b`; the root `/` gives `""`.
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The components of `path`, root first: `/a/b` → `["a", "b"]`; the root has none.
pub fn components(path: &str) -> impl Iterator<Item = &str> + '_ {
    path.split('/').filter(|c| !c.is_empty())
}

/// `dir` joined with one more component `name`: (`/`, `a`) → `/a`, (`/a`, `b`) → `/a/b`.
///
/// Does not validate; call [`validate`] on the result if the parts came from outside.
pub fn join(dir: &str, name: &str) -> String {
    let mut s = String::with_capacity(dir.len() + 1 + name.len());
    s.push_str(dir);
    if !dir.ends_with('/') {
        s.push('/');
    }
    s.push_str(name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_paths() {
        for p in [
            "/",
            "/a",
            "/ctl",
            "/ctl/node/HZAVFJHCLRH5WCUT/addr",
            "/a.b-c/D9",
            "/...",
            "/-",
            "/a/b/c/d/e/f",
        ] {
            assert_eq!(validate(p), Ok(()), "{p}");
            assert!(is_valid(p));
        }
    }

    #[test]
    fn rejects_invalid_paths() {
        assert_eq!(validate(""), Err(PathError::Empty));
        assert_eq!(validate("a"), Err(PathError::NotAbsolute));
        assert_eq!(validate("ctl/name"), Err(PathError::NotAbsolute));
        assert_eq!(validate("//"), Err(PathError::EmptyComponent { offset: 1 }));
        assert_eq!(
            validate("/a//b"),
            Err(PathError::EmptyComponent { offset: 3 })
        );
        assert_eq!(
            validate("/a/"),
            Err(PathError::EmptyComponent { offset: 3 })
        );
        assert_eq!(
            validate("/a_b"),
            Err(PathError::BadChar { ch: '_', offset: 2 })
        );
        assert_eq!(
            validate("/a b"),
            Err(PathError::BadChar { ch: ' ', offset: 2 })
        );
        assert_eq!(
            validate("/a=b"),
            Err(PathError::BadChar { ch: '=', offset: 2 })
        );
        assert_eq!(
            validate("/é"),
            Err(PathError::BadChar {
                ch: 'é', offset: 1
            })
        );
        // Glob characters are not path characters.
        assert!(matches!(
            validate("/a/*"),
            Err(PathError::BadChar { ch: '*', .. })
        ));
        assert!(matches!(
            validate("/a?"),
            Err(PathError::BadChar { ch: '?', .. })
        ));
        assert!(validate("/a\0").is_err());
        assert!(validate("/a\n").is_err());
    }

    #[test]
    fn enforces_max_length() {
        let ok = format!("/{}", "a".repeat(MAX_PATH - 1));
        assert_eq!(ok.len(), MAX_PATH);
        assert_eq!(validate(&ok), Ok(()));
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert_eq!(
            validate(&long),
            Err(PathError::TooLong { len: MAX_PATH + 1 })
        );
    }

    #[test]
    fn errors_map_to_bad_path() {
        assert_eq!(PathError::Empty.err_code(), ErrCode::BadPath);
        assert_eq!(
            validate("/a_b").unwrap_err().to_string(),
            "bad path: character '_' at byte 2 is not allowed"
        );
    }

    #[test]
    fn parent_basename_components() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent(""), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a/b/c"), Some("/a/b"));
        assert_eq!(basename("/"), "");
        assert_eq!(basename("/a"), "a");
        assert_eq!(basename("/a/b.c"), "b.c");
        assert_eq!(components("/").count(), 0);
        assert_eq!(components("/a/b/c").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        // Walking up with parent() always ends at the root.
        let mut p = "/x/y/z";
        let mut seen = vec![p];
        while let Some(up) = parent(p) {
            seen.push(up);
            p = up;
        }
        assert_eq!(seen, ["/x/y/z", "/x/y", "/x", "/"]);
    }
}
