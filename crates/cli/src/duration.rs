//! Go's `time.ParseDuration` syntax, which the original `-t` flag used: `1m30s`, `300ms`,
//! `1.5h`, `0`.

use std::time::Duration;

/// Parses a Go duration. Negative durations are rejected (a negative timeout means nothing).
pub fn parse(s: &str) -> Option<Duration> {
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_ns += value * scale;
        rest = tail;
    }
    if total_ns > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_ns.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("2us"), Some(Duration::from_micros(2)));
        assert_eq!(parse("2µs"), Some(Duration::from_micros(2)));
        assert_eq!(parse("10ns"), Some(Duration::from_nanos(10)));
        for bad in ["", "1", "s", "1x", "-1s", "1..5s", ".s", "1s2"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
