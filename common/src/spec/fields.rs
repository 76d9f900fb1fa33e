//! Reading JSON values with problems collected, not returned one at a time.

use super::Problem;
use serde_json::{Map, Value};

/// Collects every problem found in a section, each with its pointer.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub problems: Vec<Problem>,
}

impl Checker {
    /// Records a problem at `path`.
    pub fn report(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// The value of `result`, or `None` after reporting its error at `path`.
    pub fn take<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|err| self.report(path, err)).ok()
    }

    /// `key` of `object` parsed by `parse` (absent or null: `None`).
    pub fn optional<T>(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let value = get(object, key)?;
        self.take(&format!("{path}/{}", segment(key)), parse(value))
    }

    /// `key` of `object` as a list of at most `max` items, each parsed by
    /// `parse` and reported at its own index.
    pub fn list<T>(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
        max: usize,
        mut parse: impl FnMut(&Value) -> Result<T, String>,
    ) -> Vec<T> {
        let path = format!("{path}/{}", segment(key));
        let Some(value) = get(object, key) else {
            return Vec::new();
        };
        let Some(items) = self.take(&path, array(value, max)) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| self.take(&format!("{path}/{index}"), parse(item)))
            .collect()
    }
}

/// `key` of `object`; a JSON `null` counts as absent.
pub(crate) fn get<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// The JSON type name of a value, for messages (never the value itself,
/// which may be a secret).
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 6901 escaping of one pointer segment.
pub fn segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A string of at most `max` characters (what JSON Schema's `maxLength`
/// counts, so the API document states the bound exactly) without NUL.
pub(crate) fn string(value: &Value, max: usize) -> Result<&str, String> {
    let Value::String(text) = value else {
        return Err(format!("must be a string, not {}", kind(value)));
    };
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if text.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    Ok(text)
}

/// A string without whitespace or control characters.
pub(crate) fn token(value: &Value, max: usize) -> Result<&str, String> {
    let text = string(value, max)?;
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(text)
}

/// A boolean.
pub(crate) fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("must be a boolean, not {}", kind(value)))
}

/// A whole number in `min..=max`.
pub(crate) fn integer(value: &Value, min: u64, max: u64) -> Result<u64, String> {
    value
        .as_u64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("must be a whole number from {min} to {max}"))
}

/// An array of at most `max` items.
pub(crate) fn array(value: &Value, max: usize) -> Result<&Vec<Value>, String> {
    let Value::Array(items) = value else {
        return Err(format!("must be an array, not {}", kind(value)));
    };
    if items.len() > max {
        return Err(format!("must hold at most {max} items"));
    }
    Ok(items)
}

/// An object of at most `max` members.
pub(crate) fn object(value: &Value, max: usize) -> Result<&Map<String, Value>, String> {
    let Value::Object(members) = value else {
        return Err(format!("must be an object, not {}", kind(value)));
    };
    if members.len() > max {
        return Err(format!("must hold at most {max} members"));
    }
    Ok(members)
}

/// Words given as a list or as one string split on whitespace
/// (`"httpd -f -p 80"`).
pub(crate) fn words(value: &Value) -> Result<Vec<String>, String> {
    let words: Vec<String> = match value {
        Value::String(_) => string(value, super::limits::ENV_VALUE_LEN)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        Value::Array(_) => array(value, super::limits::WORD_COUNT)?
            .iter()
            .enumerate()
            .map(|(index, word)| {
                string(word, super::limits::TEXT_LEN)
                    .map(str::to_owned)
                    .map_err(|err| format!("word {index} {err}"))
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "must be a string or a list of strings, not {}",
                kind(other)
            ))
        }
    };
    if words.len() > super::limits::WORD_COUNT {
        return Err(format!(
            "must hold at most {} words",
            super::limits::WORD_COUNT
        ));
    }
    Ok(words)
}
