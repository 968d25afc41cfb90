//! Doozer globs, as used by WAIT and WALK (doozer-protocol.md §2.5).
//!
//! A glob is a path that may also contain `*` and `?`:
//!
//! * `?` matches one character other than `/`;
//! * `*` matches zero or more characters other than `/`;
//! * `**` matches zero or more characters of any kind, including `/`;
//! * `***` is `**` followed by `*` (runs of stars are read two at a time, left to right);
//! * every other character is literal, matching is case-sensitive and anchored at both ends.
//!
//! So `/**` matches every path including `/` (where nop events live), and `/a/**` matches
//! everything under `/a` but not `/a` itself.
//!
//! The original translated globs to regular expressions. We match with a hand-written
//! dynamic program instead: O(len(glob) × len(path)) time and O(len(path)) space whatever the
//! pattern, so a hostile glob such as `/*a*a*a*a*b` cannot make matching exponential.

use std::fmt;

use crate::msg::{ErrCode, ToErrCode};
use crate::path;

/// A glob that failed to compile. Its Display text is what the server sends as `err_detail`
/// (with [`ErrCode::Other`]), exactly as the original did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob pattern: {pattern}")]
pub struct GlobError {
    /// The rejected pattern.
    pub pattern: String,
    /// Why it was rejected (the path-grammar rule it breaks).
    pub reason: path::PathError,
}

impl ToErrCode for GlobError {
    fn err_code(&self) -> ErrCode {
        ErrCode::Other
    }
    fn err_detail(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// One element of a compiled glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A literal byte (always ASCII: the grammar admits nothing else).
    Lit(u8),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    AnyStar,
}

/// A compiled glob.
///
/// ```
/// use doozer_proto::glob::Glob;
/// let g = Glob::new("/ctl/node/*/addr").unwrap();
/// assert!(g.matches("/ctl/node/ABC/addr"));
/// assert!(!g.matches("/ctl/node/A/B/addr"));
/// assert!(Glob::new("/**").unwrap().matches("/"));
/// assert_eq!(Glob::new("/v/[").unwrap_err().to_string(), "invalid glob pattern: /v/[");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`. It must match the path grammar of [`crate::path`] with `*` and `?`
    /// added as component characters, and be at most [`path::MAX_PATH`] bytes long.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        path::check(pattern, |b| b == b'*' || b == b'?').map_err(|reason| GlobError {
            pattern: pattern.to_owned(),
            reason,
        })?;
        let bytes = pattern.as_bytes();
        let mut tokens = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'*' if bytes.get(i + 1) == Some(&b'*') => {
                    tokens.push(Token::AnyStar);
                    i += 2;
                }
                b'*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                b => {
                    tokens.push(Token::Lit(b));
                    i += 1;
                }
            }
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The literal part before the first wildcard: every matching path starts with it.
    /// Useful to prune a tree walk. `/a/b*` → `/a/b`, `/**` → `/`, `/x` → `/x`.
    pub fn literal_prefix(&self) -> &str {
        let end = self.pattern.find(['*', '?']).unwrap_or(self.pattern.len());
        &self.pattern[..end]
    }

    /// Does the glob match all of `path`?
    ///
    /// Any string is accepted, valid path or not; `?` and `*` count Unicode characters.
    pub fn matches(&self, path: &str) -> bool {
        // Cheap rejections first: most events a watcher sees are outside its prefix.
        let prefix = self.literal_prefix();
        if !path.starts_with(prefix) {
            return false;
        }
        if prefix.len() == self.pattern.len() {
            return path.len() == prefix.len();
        }
        if path.is_ascii() {
            self.matches_units(path.as_bytes())
        } else {
            // Rare (no valid path is non-ASCII): match on chars so `?` eats a whole character.
            let chars: Vec<char> = path.chars().collect();
            self.matches_units(&chars)
        }
    }

    /// Could some path strictly below the directory `dir` match? A tree walk can skip `dir`'s
    /// subtree when this is false. Never false when a path below `dir` matches (it may be true
    /// when none exists in the tree).
    ///
    /// ```
    /// use doozer_proto::glob::Glob;
    /// let g = Glob::new("/ctl/node/*/addr").unwrap();
    /// assert!(g.may_match_below("/ctl"));
    /// assert!(g.may_match_below("/ctl/node/X"));
    /// assert!(!g.may_match_below("/ctl/node/X/addr"));
    /// assert!(!g.may_match_below("/v"));
    /// assert!(Glob::new("/**").unwrap().may_match_below("/"));
    /// ```
    pub fn may_match_below(&self, dir: &str) -> bool {
        let mut states = vec![false; self.tokens.len() + 1];
        states[0] = true;
        self.close(&mut states);
        let feed = |c: char, states: &mut Vec<bool>| {
            let mut next = vec![false; states.len()];
            for (i, &tok) in self.tokens.iter().enumerate() {
                if !states[i] {
                    continue;
                }
                match tok {
                    Token::Lit(l) if c == l as char => next[i + 1] = true,
                    Token::One if c != '/' => next[i + 1] = true,
                    Token::Star if c != '/' => next[i] = true,
                    Token::AnyStar => next[i] = true,
                    _ => {}
                }
            }
            self.close(&mut next);
            *states = next;
        };
        for c in dir.chars() {
            feed(c, &mut states);
        }
        if !dir.ends_with('/') {
            feed('/', &mut states);
        }
        // Any remaining token sequence can be completed by some text (literals as written,
        // `?` by any letter, stars by nothing), so a live state means some path below matches.
        // The one exception is the end state itself: it needs no more text, but "below" does.
        states[..self.tokens.len()].contains(&true)
    }

    /// Adds the states reachable by letting `*`/`**` match nothing.
    fn close(&self, states: &mut [bool]) {
        for (i, &tok) in self.tokens.iter().enumerate() {
            if states[i] && matches!(tok, Token::Star | Token::AnyStar) {
                states[i + 1] = true;
            }
        }
    }

    /// The matcher. `reach[j]` says whether the tokens seen so far can match exactly the first
    /// `j` units of `text`; each token turns one such row into the next, so the whole match is
    /// one pass per token over the text.
    fn matches_units<U: Unit>(&self, text: &[U]) -> bool {
        let n = text.len();
        let mut reach = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        reach[0] = true;
        for &tok in &self.tokens {
            match tok {
                Token::Lit(c) => {
                    next[0] = false;
                    for j in 0..n {
                        next[j + 1] = reach[j] && text[j].is_byte(c);
                    }
                }
                Token::One => {
                    next[0] = false;
                    for j in 0..n {
                        next[j + 1] = reach[j] && !text[j].is_byte(b'/');
                    }
                }
                Token::Star => {
                    next[0] = reach[0];
                    for j in 0..n {
                        next[j + 1] = reach[j + 1] || (next[j] && !text[j].is_byte(b'/'));
                    }
                }
                Token::AnyStar => {
                    next[0] = reach[0];
                    for j in 0..n {
                        next[j + 1] = reach[j + 1] || next[j];
                    }
                }
            }
            std::mem::swap(&mut reach, &mut next);
            if !reach.contains(&true) {
                return false;
            }
        }
        reach[n]
    }
}

/// A unit of text the matcher walks over: a byte of an ASCII string or a `char`.
trait Unit: Copy {
    fn is_byte(self, b: u8) -> bool;
}

impl Unit for u8 {
    fn is_byte(self, b: u8) -> bool {
        self == b
    }
}

impl Unit for char {
    fn is_byte(self, b: u8) -> bool {
        self == b as char
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl std::str::FromStr for Glob {
    type Err = GlobError;
    fn from_str(s: &str) -> Result<Glob, GlobError> {
        Glob::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        Glob::new(glob)
            .unwrap_or_else(|e| panic!("{glob}: {e}"))
            .matches(path)
    }

    #[test]
    fn literal_globs_match_only_themselves() {
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
        assert!(m("/a/b", "/a/b"));
        assert!(!m("/a/b", "/a/b/c"));
        assert!(!m("/a/b", "/a"));
        assert!(!m("/a/b", "/a/bc"));
        assert!(!m("/a/b", "/x/a/b"));
        assert!(!m("/a", ""));
        // Case-sensitive.
        assert!(!m("/A", "/a"));
        assert!(!m("/a", "/A"));
        // '.' and '-' are literal (the original escaped them for its regex).
        assert!(m("/a.b", "/a.b"));
        assert!(!m("/a.b", "/axb"));
        assert!(m("/a-b", "/a-b"));
    }

    #[test]
    fn question_mark_is_one_non_slash_char() {
        assert!(m("/?", "/a"));
        assert!(!m("/?", "/"));
        assert!(!m("/?", "/ab"));
        assert!(m("/a?c", "/abc"));
        assert!(!m("/a?c", "/a/c"));
        assert!(!m("/a?c", "/ac"));
        assert!(m("/??", "/ab"));
        assert!(!m("/??", "/a"));
        // A whole Unicode character counts as one.
        assert!(m("/?", "/é"));
        assert!(m("/a?", "/a€"));
    }

    #[test]
    fn star_is_zero_or_more_non_slash_chars() {
        assert!(m("/*", "/"));
        assert!(m("/*", "/a"));
        assert!(m("/*", "/abc"));
        assert!(!m("/*", "/a/b"));
        assert!(m("/a*", "/a"));
        assert!(m("/a*", "/abc"));
        assert!(!m("/a*", "/b"));
        assert!(m("/*/c", "/ab/c"));
        assert!(m("/*/c", "//c"));
        assert!(!m("/*/c", "/a/b/c"));
        assert!(m("/a/*", "/a/b"));
        assert!(m("/a/*", "/a/"));
        assert!(!m("/a/*", "/a"));
        assert!(!m("/a/*", "/a/b/c"));
        assert!(m("/*b*", "/abc"));
        assert!(m("/*b*", "/b"));
        assert!(!m("/*b*", "/ac"));
        assert!(m("/v/*", "/v/a"));
        assert!(m("/ctl/node/*/addr", "/ctl/node/X/addr"));
        assert!(!m("/ctl/node/*/addr", "/ctl/node/X/Y/addr"));
    }

    #[test]
    fn double_star_crosses_slashes() {
        assert!(m("/**", "/"));
        assert!(m("/**", "/a"));
        assert!(m("/**", "/a/b/c"));
        assert!(m("/a/**", "/a/b"));
        assert!(m("/a/**", "/a/b/c"));
        assert!(m("/a/**", "/a/"));
        assert!(!m("/a/**", "/a"));
        assert!(!m("/a/**", "/ab"));
        assert!(!m("/a/**", "/b/a/c"));
        assert!(m("/a**", "/a"));
        assert!(m("/a**", "/ab/c"));
        assert!(m("/**/c", "/c/c"));
        assert!(m("/**/c", "//c"));
        assert!(m("/**/c", "/a/b/c"));
        assert!(!m("/**/c", "/c"));
        assert!(!m("/**/c", "/a/b/cd"));
        assert!(m("/**c", "/c"));
        assert!(m("/**c", "/a/b/c"));
        assert!(m("/a/**/z", "/a/b/c/z"));
        assert!(!m("/a/**/z", "/a/z"));
        assert!(m("/v/**", "/v/a"));
    }

    #[test]
    fn triple_star_is_double_then_single() {
        // `***` = `**` then `*`: crosses slashes like `**` alone.
        assert!(m("/***", "/"));
        assert!(m("/***", "/a/b"));
        assert!(m("/a***", "/a"));
        assert!(m("/***x", "/a/bx"));
        // `****` = `**` `**`.
        assert!(m("/****", "/a/b/c"));
        let g = Glob::new("/a/***").unwrap();
        assert_eq!(
            g.tokens[g.tokens.len() - 2..],
            [Token::AnyStar, Token::Star]
        );
        let g = Glob::new("/*****").unwrap();
        assert_eq!(g.tokens[1..], [Token::AnyStar, Token::AnyStar, Token::Star]);
    }

    #[test]
    fn mixed_wildcards() {
        assert!(m("/?*", "/a"));
        assert!(!m("/?*", "/"));
        assert!(m("/*?", "/ab"));
        assert!(m("/**?", "/a/b"));
        assert!(!m("/**?", "/a/"));
        assert!(m("/?/**", "/a/b"));
        assert!(!m("/?/**", "/ab/c"));
    }

    #[test]
    fn matches_any_string_without_panicking() {
        let g = Glob::new("/**").unwrap();
        assert!(!g.matches(""));
        assert!(!g.matches("a/b"));
        assert!(g.matches("/a_b")); // not a valid path, but the glob says yes: fine
        assert!(!Glob::new("/*").unwrap().matches("/é/"));
    }

    #[test]
    fn invalid_globs_are_rejected() {
        for bad in [
            "", "a", "*", "/v/[", "/a{b,c}", "/a/", "//", "/a b", "/a_b", "/a\\*", "/é",
        ] {
            let err = Glob::new(bad).unwrap_err();
            assert_eq!(err.pattern, bad);
            assert_eq!(err.to_string(), format!("invalid glob pattern: {bad}"));
            assert_eq!(err.err_code(), ErrCode::Other);
            assert_eq!(err.err_detail().unwrap(), err.to_string());
        }
        let long = format!("/{}", "*".repeat(path::MAX_PATH));
        assert!(matches!(
            Glob::new(&long).unwrap_err().reason,
            path::PathError::TooLong { .. }
        ));
        for good in ["/", "/*", "/**", "/?", "/a/*/b?", "/***", "/a.b-c/**"] {
            assert_eq!(Glob::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn may_match_below_agrees_with_brute_force() {
        let alpha = ["a", "b", "/", "*", "?"];
        let mut globs = Vec::new();
        for n in 0..=3u32 {
            for code in 0..alpha.len().pow(n) {
                let mut c = code;
                let mut g = String::from("/");
                for _ in 0..n {
                    g.push_str(alpha[c % alpha.len()]);
                    c /= alpha.len();
                }
                if let Ok(g) = Glob::new(&g) {
                    globs.push(g);
                }
            }
        }
        let mut exts: Vec<String> = vec![String::new()];
        let mut frontier = exts.clone();
        for _ in 0..5 {
            frontier = frontier
                .iter()
                .flat_map(|e| ["a", "b", "/"].map(|c| format!("{e}{c}")))
                .collect();
            exts.extend(frontier.iter().cloned());
        }
        let dirs = ["/", "/a", "/b", "/a/b", "/ab", "/a/a", "/b/a/b"];
        let mut trues = 0;
        for g in &globs {
            for dir in dirs {
                let base = if dir == "/" {
                    String::from("/")
                } else {
                    format!("{dir}/")
                };
                let brute = exts
                    .iter()
                    .any(|e| !e.is_empty() && g.matches(&format!("{base}{e}")));
                assert_eq!(g.may_match_below(dir), brute, "glob {g} dir {dir}");
                trues += brute as usize;
            }
        }
        assert!(trues > 100 && trues < globs.len() * dirs.len(), "{trues}");
    }

    #[test]
    fn literal_prefix() {
        assert_eq!(Glob::new("/a/b*").unwrap().literal_prefix(), "/a/b");
        assert_eq!(Glob::new("/**").unwrap().literal_prefix(), "/");
        assert_eq!(Glob::new("/x/y").unwrap().literal_prefix(), "/x/y");
        assert_eq!(Glob::new("/a?/c").unwrap().literal_prefix(), "/a");
    }

    #[test]
    fn pathological_glob_is_fast() {
        // Exponential for a naive backtracker: many stars and a text that almost matches.
        let glob = format!("/{}b", "a*".repeat(40));
        let text = format!("/{}", "a".repeat(4000));
        assert!(!m(&glob, &text));
        let glob = format!("/{}", "**a".repeat(60));
        assert!(!m(&glob, &format!("/{}", "a/".repeat(1000))));
        assert!(m(&glob, &format!("/{}", "a".repeat(60))));
    }

    /// The obvious exponential backtracker, as an oracle for the DP.
    fn naive(t: &[Token], s: &[u8]) -> bool {
        match t.split_first() {
            None => s.is_empty(),
            Some((Token::Lit(c), rest)) => s.first() == Some(c) && naive(rest, &s[1..]),
            Some((Token::One, rest)) => {
                matches!(s.first(), Some(&b) if b != b'/') && naive(rest, &s[1..])
            }
            Some((Token::Star, rest)) => (0..=s.len())
                .take_while(|&k| k == 0 || s[k - 1] != b'/')
                .any(|k| naive(rest, &s[k..])),
            Some((Token::AnyStar, rest)) => (0..=s.len()).any(|k| naive(rest, &s[k..])),
        }
    }

    #[test]
    fn agrees_with_backtracking_oracle() {
        // Exhaustive over short globs and paths from a small alphabet.
        let glob_alpha = ["a", "b", "/", "*", "?"];
        let path_alpha = [b'a', b'b', b'/'];
        let mut globs = vec![String::from("/")];
        for len in 1..=4 {
            let mut idx = vec![0usize; len];
            loop {
                let g: String = std::iter::once("/")
                    .chain(idx.iter().map(|&i| glob_alpha[i]))
                    .collect();
                if Glob::new(&g).is_ok() {
                    globs.push(g);
                }
                let mut k = 0;
                while k < len {
                    idx[k] += 1;
                    if idx[k] < glob_alpha.len() {
                        break;
                    }
                    idx[k] = 0;
                    k += 1;
                }
                if k == len {
                    break;
                }
            }
        }
        let mut paths: Vec<Vec<u8>> = vec![vec![]];
        for _ in 0..5 {
            let mut more = Vec::new();
            for p in &paths {
                for &c in &path_alpha {
                    let mut q = p.clone();
                    q.push(c);
                    more.push(q);
                }
            }
            paths.extend(more);
            paths.sort();
            paths.dedup();
        }
        let mut checked = 0;
        for g in &globs {
            let glob = Glob::new(g).unwrap();
            for p in &paths {
                let s = std::str::from_utf8(p).unwrap();
                assert_eq!(
                    glob.matches(s),
                    naive(&glob.tokens, p),
                    "glob {g} path {s:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }
}
