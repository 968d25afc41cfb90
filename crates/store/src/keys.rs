//! How paths become table keys.
//!
//! A path's key is its bytes with every `/` replaced by `0x01`. `0x01` sorts below every
//! character a path component may hold (`-`, `.`, digits, letters), so byte order of keys is
//! the sorted depth-first order of the tree: `/a/x` < `/a/x/b` < `/a/x-y`, the order GETDIR and
//! WALK need. A directory's subtree is one contiguous key range (see [`child_prefix`]) and
//! directories need no rows of their own: a directory exists while a key lies under it.

/// The separator byte that stands for `/` in keys.
pub(crate) const SEP: u8 = 0x01;

/// The key of `path` (which must be a valid path).
pub fn path_key(path: &str) -> Vec<u8> {
    path.bytes()
        .map(|b| if b == b'/' { SEP } else { b })
        .collect()
}

/// The path of a key made by [`path_key`].
pub fn key_path(key: &[u8]) -> String {
    key.iter().map(|&b| path_byte(b) as char).collect()
}

/// The path byte a key byte stands for.
pub(crate) fn path_byte(b: u8) -> u8 {
    if b == SEP {
        b'/'
    } else {
        b
    }
}

/// The prefix shared by the keys of everything below directory `dir`.
pub fn child_prefix(dir: &str) -> Vec<u8> {
    if dir == "/" {
        return vec![SEP];
    }
    let mut k = path_key(dir);
    k.push(SEP);
    k
}

/// The first key after every key that starts with `prefix`, or `None` if there is none.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The first key after the subtree of the entry whose key is `entry` (and after the entry).
pub fn skip_subtree(entry: &[u8]) -> Vec<u8> {
    let mut k = entry.to_vec();
    k.push(SEP + 1);
    k
}

/// The name of the entry of a directory (whose [`child_prefix`] is `prefix`) that `key` lies in.
pub fn entry_name(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let rest = &key[prefix.len()..];
    let end = rest.iter().position(|&b| b == SEP).unwrap_or(rest.len());
    rest[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_depth_first_order() {
        let mut paths = vec![
            "/a/x-y", "/a/x/b", "/a/x", "/a", "/a.b", "/a/x.z", "/b", "/a-",
        ];
        paths.sort_by_key(|p| path_key(p));
        assert_eq!(
            paths,
            ["/a", "/a/x", "/a/x/b", "/a/x-y", "/a/x.z", "/a-", "/a.b", "/b"]
        );
        for p in paths {
            assert_eq!(key_path(&path_key(p)), p);
        }
    }

    #[test]
    fn prefixes_bound_subtrees() {
        let pre = child_prefix("/a");
        let end = prefix_end(&pre).unwrap();
        for inside in ["/a/b", "/a/b/c", "/a/-"] {
            let k = path_key(inside);
            assert!(k >= pre && k < end, "{inside}");
        }
        for outside in ["/a", "/a-b", "/b", "/"] {
            let k = path_key(outside);
            assert!(!(k >= pre && k < end), "{outside}");
        }
        assert_eq!(child_prefix("/"), vec![1]);
        let e = path_key("/a/x");
        assert_eq!(entry_name(&pre, &path_key("/a/x/y/z")), b"x");
        let skip = skip_subtree(&e);
        assert!(path_key("/a/x/zzz") < skip && skip < path_key("/a/x-"));
        assert_eq!(prefix_end(&[1, 255, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255]), None);
    }
}
