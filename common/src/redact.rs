//! Credentials in URLs never leave the process that holds them: status
//! reasons, events, log lines and webhook payloads quote git and registry
//! URLs (a failed fetch names its remote), and a URL like
//! `https://user:token@host/repo` carries its secret in plain. The text is
//! kept, the secret part of every URL in it is cut out.

use std::borrow::Cow;

/// `text` with the userinfo of every `scheme://userinfo@host` URL in it
/// removed when that userinfo can hold a secret: when it has a password
/// (`user:pass@`), or on `http`/`https`, where a lone user part is how
/// access tokens are passed (`https://<token>@host/repo`). A plain user
/// (`ssh://git@host/x`) and scp-style `user@host:path` carry no secret and
/// are kept as they are. Borrows when there is nothing to cut.
pub fn strip_url_credentials(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let authority_start = search + found + 3;
        let scheme = scheme_before(text, search + found);
        let authority_len = text[authority_start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`') || c.is_whitespace()
            })
            .unwrap_or(text.len() - authority_start);
        let authority = &text[authority_start..authority_start + authority_len];
        search = authority_start + authority_len;
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        let userinfo = &authority[..at];
        let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        if !(userinfo.contains(':') || (web && !userinfo.is_empty())) {
            continue;
        }
        let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
        buffer.push_str(&text[copied..authority_start]);
        copied = authority_start + at + 1;
    }
    match out {
        Some(mut buffer) => {
            buffer.push_str(&text[copied..]);
            Cow::Owned(buffer)
        }
        None => Cow::Borrowed(text),
    }
}

/// The URL scheme ending at `end` (the index of its `://`): the letters,
/// digits, `+`, `-` and `.` right before it.
fn scheme_before(text: &str, end: usize) -> &str {
    let start = text[..end]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |i| i + 1);
    &text[start..end]
}

/// Strips URL credentials from every string inside a JSON value (keys
/// included), in place: events and records are redacted as a whole, so
/// no field can be forgotten.
pub fn strip_json_credentials(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            if let Cow::Owned(clean) = strip_url_credentials(text) {
                *text = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_json_credentials),
        serde_json::Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|key| matches!(strip_url_credentials(key), Cow::Owned(_)))
                .cloned()
                .collect();
            for key in dirty {
                if let Some(inner) = map.remove(&key) {
                    map.insert(strip_url_credentials(&key).into_owned(), inner);
                }
            }
            map.values_mut().for_each(strip_json_credentials);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_cut_and_everything_else_kept() {
        let table = [
            ("https://u:p@h/x", "https://h/x"),
            ("ssh://git:secret@h/x", "ssh://h/x"),
            ("ssh://git@h/x", "ssh://git@h/x"),
            ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
            ("https://ghp_token@github.com/o/r", "https://github.com/o/r"),
            ("http://h/x", "http://h/x"),
            ("https://u:p@ss@h:8443/x?y#z", "https://h:8443/x?y#z"),
            ("https://u:p@h", "https://h"),
            (
                "fetch https://a:b@one/r failed; retry ssh://c:d@two/r then git+https://e:f@three",
                "fetch https://one/r failed; retry ssh://two/r then git+https://three",
            ),
            ("\"https://u:p@h/x\"", "\"https://h/x\""),
            ("mail bob@example.com", "mail bob@example.com"),
            ("no url at all", "no url at all"),
            ("://u:p@h", "://h"),
            ("", ""),
            ("https://", "https://"),
            ("https://@h/x", "https://@h/x"),
            ("https://ü:þ@h/é", "https://h/é"),
        ];
        for (input, want) in table {
            assert_eq!(strip_url_credentials(input), want, "input {input:?}");
        }
    }

    #[test]
    fn nothing_to_cut_borrows() {
        assert!(matches!(
            strip_url_credentials("ssh://git@h/x and https://h/y"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_strings_and_keys_are_cut_at_any_depth() {
        let mut value = serde_json::json!({
            "reason": "clone https://u:p@h/x: not found",
            "nested": [{"url": "ssh://g:s@h/y"}, 3, null],
            "https://k:v@h/": true,
        });
        strip_json_credentials(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "reason": "clone https://h/x: not found",
                "nested": [{"url": "ssh://h/y"}, 3, null],
                "https://h/": true,
            })
        );
    }
}
