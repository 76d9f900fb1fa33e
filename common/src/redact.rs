//! Removing secrets from text that leaves the process: status reasons,
//! events, webhook payloads and log lines may quote a URL (a git remote, a
//! registry), and a URL may carry credentials (`https://user:pass@host/`,
//! or a token as the user part). Those never get out.

use std::borrow::Cow;

/// Characters that end a URL's authority (where userinfo would be).
fn ends_authority(c: char) -> bool {
    matches!(
        c,
        '/' | '?' | '#' | '\'' | '"' | '`' | '<' | '>' | ',' | ';' | '(' | ')' | '[' | ']'
    ) || c.is_whitespace()
}

/// Characters a URL scheme is made of.
fn is_scheme_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
}

/// `text` with the userinfo (`user:pass@`, `token@`) removed from every
/// URL in it (`scheme://userinfo@host...` becomes `scheme://host...`).
/// Text without such a URL comes back borrowed.
pub fn strip_url_credentials(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let marker = search + found;
        let authority = marker + 3;
        search = authority;
        let has_scheme = text[..marker]
            .chars()
            .next_back()
            .is_some_and(is_scheme_char);
        if !has_scheme {
            continue;
        }
        let end = text[authority..]
            .find(ends_authority)
            .map_or(text.len(), |at| authority + at);
        let Some(at) = text[authority..end].rfind('@') else {
            continue;
        };
        let buffer = out.get_or_insert_with(|| String::with_capacity(text.len()));
        buffer.push_str(&text[copied..authority]);
        copied = authority + at + 1;
        search = copied;
    }
    match out {
        Some(mut buffer) => {
            buffer.push_str(&text[copied..]);
            Cow::Owned(buffer)
        }
        None => Cow::Borrowed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_removed_from_every_url() {
        let table = [
            ("", ""),
            ("no url here", "no url here"),
            ("https://host/repo.git", "https://host/repo.git"),
            ("https://user:pass@host/repo.git", "https://host/repo.git"),
            ("https://ghp_token@github.com/o/r", "https://github.com/o/r"),
            (
                "fatal: unable to access 'https://u:p@git.example/r/': 403",
                "fatal: unable to access 'https://git.example/r/': 403",
            ),
            (
                "a http://a:b@one/x and ssh://git:c@two:22/y",
                "a http://one/x and ssh://two:22/y",
            ),
            ("https://u:p@host", "https://host"),
            ("https://u:p@host?q=1", "https://host?q=1"),
            ("https://u:p@w@rd@host/x", "https://host/x"),
            ("\"https://u:p@host\"", "\"https://host\""),
            ("(https://u:p@host)", "(https://host)"),
            (
                "https://host/path@not-userinfo",
                "https://host/path@not-userinfo",
            ),
            ("mail me@example.com", "mail me@example.com"),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            ("://u:p@host", "://u:p@host"),
            ("x://", "x://"),
            ("https://ü:pä@höst/ü", "https://höst/ü"),
        ];
        for (input, expected) in table {
            assert_eq!(strip_url_credentials(input), expected, "{input:?}");
        }
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(
            strip_url_credentials("https://host/repo"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            strip_url_credentials("https://a:b@host/repo"),
            Cow::Owned(_)
        ));
    }
}
