//! Template comparison, in the shape of Mobingi's compare endpoint.
//!
//! Paths are slash-separated keys. Array elements are named by their 1-based
//! position (`configurations/1/provision/volume_type`); configurations are
//! matched by `flag`, so reordering them is not a change. In `edited`, the
//! position is left out when the array holds a single element on both sides
//! (`configurations/provision/instance_type`), as in the reference's own
//! example; with more elements it stays, so paths never collide.
//!
//! An empty section is written as `[]` and a non-empty one as an object, as
//! the reference does (its PHP origin shows through here; clients written
//! against it expect exactly this).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value};

/// One section of a diff: path to value (or to `{oldvalue, newvalue}`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Section(pub Map<String, Value>);

impl Serialize for Section {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            return serializer.collect_seq(std::iter::empty::<()>());
        }
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// What changed from a source template to a target.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Diff {
    pub new: Section,
    pub removed: Section,
    pub edited: Section,
}

/// Compares two template bodies.
pub fn diff(source: &Value, target: &Value) -> Diff {
    let mut out = Diff::default();
    walk(&mut out, "", "", source, target);
    out
}

fn join(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_owned()
    } else {
        format!("{prefix}/{segment}")
    }
}

/// Walks both values. `full` is the path with every array position, used
/// for `new` and `removed`; `short` leaves out positions of single-element
/// arrays, used for `edited`.
fn walk(out: &mut Diff, full: &str, short: &str, source: &Value, target: &Value) {
    match (source, target) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                match b.get(key) {
                    Some(new) => walk(out, &join(full, key), &join(short, key), old, new),
                    None => {
                        out.removed.0.insert(join(full, key), old.clone());
                    }
                }
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    out.new.0.insert(join(full, key), new.clone());
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => arrays(out, full, short, a, b),
        (old, new) if old != new => {
            out.edited
                .0
                .insert(short.to_owned(), json!({"oldvalue": old, "newvalue": new}));
        }
        _ => {}
    }
}

/// The `flag` of an array element, when every element has a distinct one.
fn flags(items: &[Value]) -> Option<Vec<&str>> {
    let flags: Vec<&str> = items
        .iter()
        .map(|item| item.get("flag").and_then(Value::as_str))
        .collect::<Option<_>>()?;
    let mut sorted = flags.clone();
    sorted.sort_unstable();
    sorted.dedup();
    (sorted.len() == flags.len()).then_some(flags)
}

fn arrays(out: &mut Diff, full: &str, short: &str, a: &[Value], b: &[Value]) {
    let single = a.len() == 1 && b.len() == 1;
    let position = |i: usize| (i + 1).to_string();
    let short_at = |i: usize| {
        if single {
            short.to_owned()
        } else {
            join(short, &position(i))
        }
    };
    // Pairs of (source index, target index) that describe the same element.
    let pairs: Vec<(Option<usize>, Option<usize>)> = match (flags(a), flags(b)) {
        (Some(fa), Some(fb)) => {
            let mut pairs: Vec<_> = fa
                .iter()
                .enumerate()
                .map(|(i, flag)| (Some(i), fb.iter().position(|f| f == flag)))
                .collect();
            pairs.extend(
                fb.iter()
                    .enumerate()
                    .filter(|(_, flag)| !fa.contains(flag))
                    .map(|(j, _)| (None, Some(j))),
            );
            pairs
        }
        _ => (0..a.len().max(b.len()))
            .map(|i| ((i < a.len()).then_some(i), (i < b.len()).then_some(i)))
            .collect(),
    };
    for pair in pairs {
        match pair {
            (Some(i), Some(j)) => walk(out, &join(full, &position(i)), &short_at(i), &a[i], &b[j]),
            (Some(i), None) => {
                out.removed.0.insert(join(full, &position(i)), a[i].clone());
            }
            (None, Some(j)) => {
                out.new.0.insert(join(full, &position(j)), b[j].clone());
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request and response of the reference's compare example.
    #[test]
    fn the_reference_example_comes_out_as_documented() {
        let source = json!({
            "version": "2017-03-03",
            "label": "template version label #1",
            "description": "This template creates a sample stack with EC2 instance on AWS",
            "vendor": {"aws": {"cred": "AKIAJ...DZLA", "region": "ap-northeast-1"}},
            "configurations": [{"role": "web", "flag": "Web01", "provision": {
                "image": "${computed}", "instance_type": "t2.micro", "volume_type": "${computed}",
                "instance_count": 1, "keypair": true}}]
        });
        let target = json!({
            "version": "2017-03-03",
            "label": "template version label #2",
            "description": "This template creates a sample stack with EC2 instance on AWS",
            "vendor": {"aws": {"cred": "AKIAJ...DZLA", "region": "ap-northeast-1"}},
            "configurations": [{"role": "web", "flag": "Web01", "provision": {
                "image": "${computed}", "instance_type": "m3.medium",
                "instance_count": 2, "keypair": true}}]
        });
        let got = serde_json::to_value(diff(&source, &target)).expect("serialize");
        let want: Value = serde_json::from_str(
            r#"{
                "new": [],
                "removed": {"configurations\/1\/provision\/volume_type": "${computed}"},
                "edited": {
                    "label": {"oldvalue": "template version label #1", "newvalue": "template version label #2"},
                    "configurations\/provision\/instance_type": {"oldvalue": "t2.micro", "newvalue": "m3.medium"},
                    "configurations\/provision\/instance_count": {"oldvalue": 1, "newvalue": 2}
                }
            }"#,
        )
        .expect("reference json");
        assert_eq!(got, want);
        // Key order as in the reference, too.
        let edited: Vec<&String> = got["edited"].as_object().expect("object").keys().collect();
        assert_eq!(
            edited,
            [
                "label",
                "configurations/provision/instance_type",
                "configurations/provision/instance_count"
            ]
        );
    }

    #[test]
    fn configurations_are_matched_by_flag_and_positions_kept_when_several() {
        let source = json!({"configurations": [
            {"flag": "a", "provision": {"instance_count": 1}},
            {"flag": "b", "provision": {"instance_count": 1}}
        ]});
        let target = json!({"configurations": [
            {"flag": "c", "provision": {"instance_count": 1}},
            {"flag": "b", "provision": {"instance_count": 3}}
        ]});
        let got = diff(&source, &target);
        assert_eq!(
            got.removed.0.keys().collect::<Vec<_>>(),
            ["configurations/1"]
        );
        assert_eq!(got.new.0.keys().collect::<Vec<_>>(), ["configurations/1"]);
        assert_eq!(
            got.edited.0.keys().collect::<Vec<_>>(),
            ["configurations/2/provision/instance_count"]
        );
        assert_eq!(diff(&source, &source), Diff::default());
        assert_eq!(
            serde_json::to_string(&Diff::default()).expect("json"),
            r#"{"new":[],"removed":[],"edited":{}}"#.replace("{}", "[]")
        );
    }
}
