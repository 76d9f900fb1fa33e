//! The ALM template: validation, lookups, and comparison.
//!
//! Templates are kept as JSON values, not parsed into fixed structs, because
//! unknown fields must survive a round trip: operators put their own keys in
//! templates and expect to read them back.

pub mod diff;
pub mod validate;

use serde_json::{Map, Value};

/// The placeholder Mobingi uses for values the platform fills in.
pub const COMPUTED: &str = "${computed}";

/// A body's configurations (none when it has no such array).
pub fn configurations(body: &Value) -> &[Value] {
    body.get("configurations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The configuration with this `flag`, if any.
pub fn configuration<'a>(body: &'a Value, flag: &str) -> Option<&'a Map<String, Value>> {
    body.get("configurations")?
        .as_array()?
        .iter()
        .filter_map(Value::as_object)
        .find(|config| config.get("flag").and_then(Value::as_str) == Some(flag))
}

/// The `instance_count` of `flag` in a template body, or (no flag) the sum
/// over its configurations; `None` for an unknown flag.
pub fn instance_count(body: &Value, flag: Option<&str>) -> Option<usize> {
    let count = |config: &Map<String, Value>| {
        config
            .get("provision")
            .and_then(|p| p.get("instance_count"))
            .and_then(Value::as_u64)
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    };
    match flag {
        Some(flag) => configuration(body, flag).map(count),
        None => Some(
            body.get("configurations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(count)
                .fold(0usize, usize::saturating_add),
        ),
    }
}

/// Replaces the `vendor` section of an update with the stack's own: a
/// stack's cloud vendor cannot change after creation.
pub fn keep_vendor(body: &mut Value, vendor: Option<&Value>) {
    if let Some(object) = body.as_object_mut() {
        match vendor {
            Some(vendor) => {
                object.insert("vendor".into(), vendor.clone());
            }
            None => {
                object.shift_remove("vendor");
            }
        }
    }
}
