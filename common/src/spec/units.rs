//! Durations and sizes as operators write them, bounded before conversion.

use super::fields::kind;
use serde_json::Value;
use std::time::Duration;

/// A duration: seconds as a number, or `"30s"`, `"2m"`, `"500ms"`, `"1h"`,
/// within `min..=max`. The bound is checked on the number of seconds
/// before any conversion, so no input reaches a panicking constructor.
pub(crate) fn duration(value: &Value, min: Duration, max: Duration) -> Result<Duration, String> {
    let bad = || "is not a duration (seconds, or like \"30s\", \"2m\", \"500ms\")".to_owned();
    let secs = match value {
        Value::Number(number) => number.as_f64().ok_or_else(bad)?,
        Value::String(text) if text.len() <= 64 => {
            let text = text.trim();
            let split = text
                .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: f64 = number.trim().parse().map_err(|_| bad())?;
            let factor = match unit {
                "" | "s" => 1.0,
                "ms" => 0.001,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            number * factor
        }
        Value::String(_) => return Err(bad()),
        other => return Err(format!("must be a duration, not {}", kind(other))),
    };
    if !secs.is_finite() {
        return Err(bad());
    }
    if secs < min.as_secs_f64() || secs > max.as_secs_f64() {
        return Err(format!("must be from {} to {}", show(min), show(max)));
    }
    Duration::try_from_secs_f64(secs.max(0.0)).map_err(|_| bad())
}

/// A duration as a person reads it.
fn show(duration: Duration) -> String {
    if duration.subsec_millis() != 0 || duration.is_zero() {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs())
    }
}

/// A size in bytes: a whole number, or `"256m"`, `"1g"`, `"512k"` (binary
/// units), within `min..=max`.
pub(crate) fn size(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    let bad = || "is not a size (bytes, or like \"256m\", \"1g\")".to_owned();
    let bytes = match value {
        Value::Number(number) => number.as_u64().ok_or_else(bad)?,
        Value::String(text) if text.len() <= 64 => {
            let text = text.trim().to_ascii_lowercase();
            let text = text.trim_end_matches('b').trim_end_matches('i');
            let split = text
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap_or(text.len());
            let (number, unit) = text.split_at(split);
            let number: u64 = number.trim().parse().map_err(|_| bad())?;
            let factor: u64 = match unit {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(bad()),
            };
            number.checked_mul(factor).ok_or_else(bad)?
        }
        Value::String(_) => return Err(bad()),
        other => return Err(format!("must be a size, not {}", kind(other))),
    };
    if bytes < min {
        return Err(format!("{bytes} bytes is below the minimum of {min}"));
    }
    if bytes > max {
        return Err(format!("{bytes} bytes is above the maximum of {max}"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        let max = Duration::from_secs(600);
        for (value, want) in [
            (json!(10), Some(Duration::from_secs(10))),
            (json!(0.5), Some(Duration::from_millis(500))),
            (json!("30s"), Some(Duration::from_secs(30))),
            (json!("2m"), Some(Duration::from_secs(120))),
            (json!("500ms"), Some(Duration::from_millis(500))),
            (json!(" 1e2 s"), Some(Duration::from_secs(100))),
            (json!("1h"), None),
            (json!(1e20), None),
            (json!("1e20s"), None),
            (json!(-1), None),
            (json!("NaN"), None),
            (json!("inf"), None),
            (json!("10x"), None),
            (json!(true), None),
            (json!(""), None),
        ] {
            assert_eq!(duration(&value, Duration::ZERO, max).ok(), want, "{value}");
        }
    }

    #[test]
    fn sizes() {
        for (value, want) in [
            (json!("256m"), Some(256 << 20)),
            (json!("1GiB"), Some(1 << 30)),
            (json!(8_000_000), Some(8_000_000)),
            (json!("1k"), None),
            (json!("99999999999999999t"), None),
            (json!(1.5), None),
            (json!(-5), None),
            (json!("5p"), None),
        ] {
            assert_eq!(size(&value, 6 << 20, 1 << 42).ok(), want, "{value}");
        }
    }
}
